"""Input validation shared by the metrics: every public function accepts (N, ...) numpy or JAX arrays.

Concrete inputs are checked fully (shape, dtype, emptiness, NaN/inf). Under `jax.jit` (tracer inputs) only
shapes and dtypes can be checked; values are data, so NaN/inf in traced inputs propagate to the result.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

_FIX_DTYPE = "cast it first, e.g. x.astype(np.float32)"


def is_traced(*arrays) -> bool:
    """True if any argument is a JAX tracer (we are inside jit/vmap/grad and values are unknown)."""
    return any(isinstance(a, jax.core.Tracer) for a in arrays)


def as_samples(x, name: str, *, min_n: int = 1):
    """Validate and flatten `x` (N, ...) to (N, D). Returns a numpy array (concrete) or a JAX array (traced).

    Raises ValueError naming the problem and the fix for: non-array/object input, 0-d input, empty arrays
    (N = 0 or D = 0), fewer than `min_n` samples, integer/bool/complex dtypes and, for concrete inputs only,
    NaN or inf entries.
    """
    traced = is_traced(x)
    if not traced:
        if isinstance(x, jax.Array):
            x = np.asarray(x)
        else:
            try:
                x = np.asarray(x)
            except Exception as err:  # ragged lists and the like
                raise ValueError(f"{name} could not be converted to an array ({err}); pass an (N, ...) array") from err
    dtype = np.dtype(x.dtype)
    if dtype == np.bool_ or jnp.issubdtype(dtype, np.integer):
        raise ValueError(f"{name} has integer/bool dtype {dtype}; the metrics need real floating samples: {_FIX_DTYPE}")
    if jnp.issubdtype(dtype, np.complexfloating):
        raise ValueError(f"{name} has complex dtype {dtype}; squared Euclidean costs are defined for real samples: "
                         "pass x.real (or stack real and imaginary parts as features) as float32/float64")
    if not jnp.issubdtype(dtype, np.floating):
        raise ValueError(f"{name} has non-numeric dtype {dtype}; {_FIX_DTYPE}")
    if x.ndim == 0:
        raise ValueError(f"{name} is a scalar; pass samples shaped (N, ...) with the sample axis first")
    n = x.shape[0]
    if x.size == 0:
        raise ValueError(f"{name} is empty (shape {tuple(x.shape)}); pass at least {max(min_n, 1)} non-empty samples "
                         "shaped (N, ...)")
    if n < min_n:
        raise ValueError(f"{name} has N = {n} samples but at least {min_n} are needed (shape {tuple(x.shape)}); "
                         "pass more samples along the first axis")
    x = x.reshape(n, -1)
    if not traced and not np.all(np.isfinite(x)):
        bad = int(np.sum(~np.isfinite(x).all(axis=1)))
        raise ValueError(f"{name} contains NaN or inf in {bad} of {n} samples; drop or fix those samples "
                         "(e.g. x[np.isfinite(x.reshape(len(x), -1)).all(1)])")
    return x


def as_pair(teacher, student, *, min_n: int = 2):
    """Validate paired samples: same shape (N, ...), N >= min_n. Returns both flattened to (N, D)."""
    t_shape, s_shape = np.shape(teacher), np.shape(student)
    if tuple(t_shape) != tuple(s_shape):
        raise ValueError(f"teacher and student must be paired samples of the same shape (N, ...), got "
                         f"{tuple(t_shape)} and {tuple(s_shape)}; pair sample i of both sets from the same seed z_i")
    return as_samples(teacher, "teacher", min_n=min_n), as_samples(student, "student", min_n=min_n)


def as_same_dim(x, reference, x_name: str, ref_name: str):
    """Check that two already-flattened sample sets share the feature dimension D."""
    if x.shape[1] != reference.shape[1]:
        raise ValueError(f"{x_name} has {x.shape[1]} features per sample but {ref_name} has {reference.shape[1]}; "
                         "both must have the same per-sample shape")


def unit_scale(t, s):
    """(t / c, s / c, c^2) for (N, D) samples, c the power of two nearest max_i |x_i - mean| over both sets.

    Delta_E and kappa are ratios of energies (scale invariant, Lemma C.2), so the metrics compute them on unit-scale
    samples: squared distances of samples at 1e-20 or 1e19 neither underflow nor overflow in float32. A power of
    two is exact: at ordinary scales the metrics' results are bitwise those of the unscaled samples. c^2 (float64
    for concrete inputs) converts energies back to the input's units. Concrete samples whose scale is below the
    dtype's smallest normal number raise ValueError; traced ones keep c = 1 there.
    """
    if is_traced(t, s):
        dtype = jnp.promote_types(jnp.promote_types(t.dtype, s.dtype), jnp.float32)
        t, s = t.astype(dtype), s.astype(dtype)
        mu = 0.5 * (t.mean(0) + s.mean(0))
        spread = jnp.maximum(jnp.max(jnp.abs(t - mu)), jnp.max(jnp.abs(s - mu)))
        ok = jnp.isfinite(spread) & (spread >= jnp.finfo(dtype).tiny)
        c = jnp.where(ok, jnp.exp2(jnp.round(jnp.log2(jnp.where(ok, spread, 1.0)))), 1.0).astype(dtype)
        return t / c, s / c, c * c
    dtype = np.promote_types(np.promote_types(t.dtype, s.dtype), np.float32)
    t, s = np.asarray(t, dtype), np.asarray(s, dtype)
    mu = 0.5 * (t.mean(0, dtype=np.float64) + s.mean(0, dtype=np.float64))
    spread = max(float(np.max(np.abs(t - mu))), float(np.max(np.abs(s - mu))))
    if spread == 0.0:
        return t, s, 1.0
    if spread < np.finfo(dtype).tiny:
        raise ValueError(f"the samples spread over {spread:.3g}, below the smallest normal {dtype} number "
                         f"({np.finfo(dtype).tiny:.3g}): their distances cannot be computed; multiply both sets by "
                         f"one constant first (Delta_E and kappa are scale invariant) or pass float64")
    c = math.ldexp(1.0, round(math.log2(spread)))
    return t / dtype.type(c), s / dtype.type(c), c * c
