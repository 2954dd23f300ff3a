"""dmdjax: EDM teachers, one-step DMD students and copying metrics in JAX/Flax.

Reimplements "Why Are DMD Students Lazy? Understanding the Copying Behavior in Few-Step Distillation".
Data flow: data -> nets (Denoiser) -> teacher -> sampling (phi_k) -> distill (DMD) -> metrics -> figures.
"""
__version__ = "0.1.0"
