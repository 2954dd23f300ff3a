"""Exact solver: E_OT between two N-point clouds as a linear assignment problem (Eq. 4 for empirical measures).

With N equal-weight points per side the optimal coupling is a permutation (Birkhoff), so
E_OT = min_pi (1/N) sum_i ||t_i - s_pi(i)||^2, solved by scipy's `linear_sum_assignment` (LAPJV) on the
squared-Euclidean cost matrix. Under `jax.jit` the solver runs through `jax.pure_callback`.

Accuracy: the cost matrix is built by BLAS in the input precision (float32 for float32/16 inputs) on centred
data; it only selects the permutation. E_DT and E_OT are then recomputed in float64 from direct differences of
the paired rows, so the energies carry no cancellation error. The identity (the DT pairing) is itself a
permutation: if rounding in the cost matrix made the chosen permutation no better than it, the identity is
returned, which guarantees E_OT <= E_DT and hence Delta_E >= 0 exactly.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from scipy.optimize import linear_sum_assignment

from dmdjax.metrics import costs


def exact_np(teacher: np.ndarray, student: np.ndarray):
    """(N, D) x (N, D) numpy -> e_dt, e_ot (float64) and the assignment pi (N,): student index of teacher i."""
    work = np.float64 if teacher.dtype == np.float64 or student.dtype == np.float64 else np.float32
    t64, s64 = costs.center_pair(np.asarray(teacher, np.float64), np.asarray(student, np.float64))
    n = t64.shape[0]
    e_dt = float(np.mean(costs.paired_sq_dists(t64, s64)))
    cost = costs.sq_euclidean_cost(t64.astype(work, copy=False), s64.astype(work, copy=False))
    _, col = linear_sum_assignment(cost)
    e_ot = float(np.mean(costs.paired_sq_dists(t64, s64[col])))
    if e_ot >= e_dt:  # the identity is optimal (up to rounding): keep the DT pairing itself
        col, e_ot = np.arange(n), e_dt
    return e_dt, e_ot, col


def exact(teacher, student):
    """(N, D) x (N, D) -> (e_dt, e_ot, assignment). numpy in: float64 numpy scalars out; traced in: pure_callback
    with results in JAX's default float dtype (float32 unless x64 is enabled) and an int32 assignment; NaN
    energies and an assignment of -1 when the traced samples contain NaN or inf."""
    if not isinstance(teacher, jax.core.Tracer) and not isinstance(student, jax.core.Tracer):
        e_dt, e_ot, col = exact_np(np.asarray(teacher), np.asarray(student))
        return np.float64(e_dt), np.float64(e_ot), col
    n = teacher.shape[0]
    fdt = jnp.zeros(()).dtype
    shapes = (jax.ShapeDtypeStruct((), fdt), jax.ShapeDtypeStruct((), fdt), jax.ShapeDtypeStruct((n,), jnp.int32))

    def callback(t, s):
        t, s = np.asarray(t), np.asarray(s)
        if not (np.all(np.isfinite(t)) and np.all(np.isfinite(s))):   # NaN out, not an opaque callback error
            return np.asarray(np.nan, fdt), np.asarray(np.nan, fdt), np.full((n,), -1, np.int32)
        e_dt, e_ot, col = exact_np(t, s)
        return np.asarray(e_dt, fdt), np.asarray(e_ot, fdt), np.asarray(col, np.int32)

    return jax.pure_callback(callback, shapes, teacher, student, vmap_method="sequential")
