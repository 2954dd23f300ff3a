"""A calibrated copying index: Delta_E against the Delta_E of a uniformly random pairing of the same two sets.

Delta_E alone cannot tell copying from collapse: for a student shrunk towards the data mean every pairing costs
about the same, so E_DT ~ E_OT and Delta_E ~ 0 whatever the pairing. The index compares Delta_E with what a
pairing that keeps nothing would give, on the same samples:

    E_null       = (1/N^2) sum_{i,j} ||t_i - s_j||^2            (expected E_DT of a uniformly random pairing)
    Delta_E_null = E_null / E_OT - 1                              (its pairing inefficiency; exact, no sampling)
    kappa        = Delta_E / Delta_E_null = (E_DT - E_OT) / (E_null - E_OT)

kappa = 0: the student keeps every teacher pair (copying); kappa ~ 1: no better than a random pairing
(remapping); kappa > 1: worse than random. E_OT <= E_null always (the uniform coupling is feasible), so kappa is
defined whenever the student is not a single point; it is reported as unreliable when Delta_E_null < `min_null`:
then the whole spread between the best and a random pairing is under `min_null` of E_OT, the size of the
finite-N and entropic biases of E_OT, and kappa's numerator and denominator are both mostly those biases.
`copying_index_ci` gives half-sample intervals for Delta_E and kappa.
"""
from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp
import numpy as np

from dmdjax.metrics import _checks, transport

__all__ = ["CopyingIndex", "CopyingIndexCI", "copying_index", "copying_index_ci", "e_null"]

MIN_NULL = 0.01


class CopyingIndex(NamedTuple):
    """Result of `copying_index` (0-d arrays; numpy for concrete inputs, JAX under jit).

    delta_e: Eq. 6; delta_e_null: E_null / E_OT - 1; kappa: delta_e / delta_e_null; reliable: bool,
    delta_e_null >= min_null and kappa finite; e_dt, e_ot: Eq. 5, Eq. 4; e_null: mean squared distance over all
    N^2 teacher-student pairs.
    """
    delta_e: object
    delta_e_null: object
    kappa: object
    reliable: object
    e_dt: object
    e_ot: object
    e_null: object


class CopyingIndexCI(NamedTuple):
    """Half-sample intervals (`transport.PairingCI`) for Delta_E and kappa, and the point estimate on all N."""
    delta_e: transport.PairingCI
    kappa: transport.PairingCI
    index: CopyingIndex


def e_null(teacher, student):
    """E_null = (1/N^2) sum_{i,j} ||t_i - s_j||^2 for (N, ...) x (N, ...) samples, in closed form:
    mean ||t - t_bar||^2 + mean ||s - s_bar||^2 + ||t_bar - s_bar||^2 (float64 for concrete inputs)."""
    t, s = _checks.as_pair(teacher, student, min_n=1)
    xp = jnp if _checks.is_traced(t, s) else np
    if xp is np:
        t, s = np.asarray(t, np.float64), np.asarray(s, np.float64)
    else:
        dtype = jnp.promote_types(t.dtype, jnp.float32)
        t, s = t.astype(dtype), s.astype(dtype)
    mt, ms = t.mean(0), s.mean(0)
    return (xp.sum((t - mt) ** 2) / t.shape[0] + xp.sum((s - ms) ** 2) / s.shape[0] + xp.sum((mt - ms) ** 2))[()]


def copying_index(teacher, student, *, method: str = "exact", min_null: float = MIN_NULL,
                  **options) -> CopyingIndex:
    """Delta_E, its random-pairing baseline Delta_E_null and kappa = Delta_E / Delta_E_null (module docstring).

    Args:
      teacher, student: (N, ...) numpy or JAX float arrays, sample i of both from the same seed z_i; N >= 2.
        Jittable; under jit NaN or inf in the samples gives NaN everywhere and reliable = False.
      method: "exact" or "sinkhorn" (E_OT's solver, as in `pairing_inefficiency`).
      min_null: kappa is flagged unreliable below this Delta_E_null.
      **options: Sinkhorn settings (`transport_energies`).

    Returns:
      A `CopyingIndex`. E_OT = 0 < E_null gives Delta_E_null = inf and a finite kappa = E_DT / E_null.
    """
    t, s = _checks.as_pair(teacher, student, min_n=2)
    t, s, c2 = _checks.unit_scale(t, s)          # kappa is a ratio: computed at unit scale (any magnitude)
    te = transport.transport_energies(t, s, method=method, **options)
    xp = jnp if _checks.is_traced(t, s) else np
    null = e_null(t, s)
    e_dt, e_ot = te.e_dt, xp.asarray(te.e_ot, null.dtype)
    gap = null - e_ot
    delta_null = xp.where(e_ot > 0, gap / xp.where(e_ot > 0, e_ot, 1.0), xp.where(gap > 0, xp.inf, 0.0))
    kappa = xp.where(gap > 0, (e_dt - e_ot) / xp.where(gap > 0, gap, 1.0), xp.nan)
    finite = xp.isfinite(e_dt) & xp.isfinite(e_ot) & xp.isfinite(null)
    delta_null, kappa = xp.where(finite, delta_null, xp.nan), xp.where(finite, kappa, xp.nan)
    reliable = finite & (delta_null >= min_null) & xp.isfinite(kappa)
    if xp is np:        # energies in the input's units, float64
        e_dt, e_ot, null = (np.float64(e) * c2 for e in (e_dt, te.e_ot, null))
    else:
        e_dt, e_ot, null = (e * c2.astype(e.dtype) for e in (e_dt, te.e_ot, null))
    return CopyingIndex(delta_e=te.delta_e, delta_e_null=delta_null[()], kappa=kappa[()], reliable=reliable[()],
                        e_dt=e_dt, e_ot=e_ot, e_null=null)


def copying_index_ci(teacher, student, *, n_resamples: int = 100, level: float = 0.95, seed: int = 0,
                     method: str = "exact", min_null: float = MIN_NULL, **options) -> CopyingIndexCI:
    """Half-sample intervals for Delta_E and kappa (the method of `pairing_inefficiency_ci`: each replicate
    recomputes both on N/2 of the N pairs). Concrete inputs only; cost: n_resamples solves at N/2.

    Returns:
      A `CopyingIndexCI`; a replicate whose kappa is undefined (a half-sample collapsed to a point) counts as
      non-finite and makes that interval NaN (see `PairingCI`).
    """
    t, s = _checks.as_pair(teacher, student, min_n=4)
    if _checks.is_traced(t, s):
        raise ValueError("copying_index_ci resamples with numpy and cannot run under jax.jit; call it on concrete "
                         "arrays")
    index = copying_index(t, s, method=method, min_null=min_null, **options)

    def stat(a, b):
        r = copying_index(a, b, method=method, min_null=min_null, **options)
        return float(r.delta_e), float(r.kappa)

    d_ci, k_ci = transport.half_sample_ci(stat, t, s, n_resamples=n_resamples, level=level, seed=seed,
                                          lower=(0.0, None), name="copying_index_ci")   # Delta_E >= 0
    return CopyingIndexCI(delta_e=d_ci, kappa=k_ci, index=index)
