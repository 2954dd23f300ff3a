"""Geometry: squared Euclidean costs between flattened sample sets (the cost of Eq. 4-5).

All costs are translation invariant, so both clouds are first centred on their common mean; this keeps the
norms small and the expansion ||x||^2 + ||y||^2 - 2 <x, y> accurate in float32.
"""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np


def center_pair(x, y):
    """Subtract the common mean (mean(x) + mean(y)) / 2 from both (N, D) / (M, D) sets (numpy or JAX)."""
    mu = 0.5 * (x.mean(axis=0) + y.mean(axis=0))
    return x - mu, y - mu


def sq_norms(x):
    """(N, D) -> (N,) squared Euclidean norms."""
    return (x * x).sum(axis=1)


def sq_euclidean_cost(x, y):
    """C_ij = ||x_i - y_j||^2, (N, D) x (M, D) -> (N, M), clamped at 0. Works on numpy (BLAS) or JAX arrays."""
    if isinstance(x, np.ndarray) and isinstance(y, np.ndarray):
        c = sq_norms(x)[:, None] + sq_norms(y)[None, :] - 2.0 * (x @ y.T)
        return np.maximum(c, 0.0, out=c)
    c = sq_norms(x)[:, None] + sq_norms(y)[None, :] - 2.0 * (x @ y.T)
    return jnp.maximum(c, 0.0)


def paired_sq_dists(x, y):
    """||x_i - y_i||^2 for paired rows, (N, D) x (N, D) -> (N,), by direct differences (no cancellation)."""
    d = x - y
    return (d * d).sum(axis=1)


def sum_accurate(v):
    """Sum of a JAX array accurate to ~1e-7 relative in float32: a two-level (blocked) reduction."""
    v = jnp.ravel(v)
    n = v.shape[0]
    block = max(1, int(np.sqrt(n)))
    pad = (-n) % block
    v = jnp.pad(v, (0, pad)).reshape(-1, block)
    return v.sum(axis=1).sum()
