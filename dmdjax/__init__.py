"""dmdjax: EDM teachers, one-step DMD students and copying metrics in JAX/Flax.

Reimplements "Why Are DMD Students Lazy? Understanding the Copying Behavior in Few-Step Distillation".
Data flow: data -> nets (Denoiser) -> teacher -> sampling (phi_k) -> distill (DMD) -> metrics -> figures.
"""
import warnings as _warnings

# ott-jax imports JAXopt, which warns on import that it is deprecated; keep user output readable.
_warnings.filterwarnings("ignore", message=".*JAXopt.*", category=DeprecationWarning)
_warnings.filterwarnings("ignore", module="jaxopt")

__version__ = "0.1.0"
