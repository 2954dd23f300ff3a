"""Sample statistics against the training set (paper Sec. 4.1.2 / Fig. 12 and Sec. 4.2.1 / Fig. 5).

    r(y)     = ||y - x^1(y)|| / ||y - x^2(y)||    nearest / second-nearest training point (Sec. 4.1.2; <= 1,
                                                  memorized if r < r_thres, e.g. 1/3; Fig. 12's caption
                                                  writes the reciprocal)
    D(z)     = mean_{x in train} ||Phi_K(z) - x|| (Fig. 5, horizontal axis)
    delta(z) = ||G(z) - Phi_K(z)|| - ||Phi_1(z) - Phi_K(z)||  (Fig. 5, vertical axis)
    partial_correlation(x, y, control)          corr(x, y) with a linear effect of `control` removed from both
                                                (Fig. 5: D(z) vs delta(z) given ||Phi_1(z) - Phi_K(z)||)

Training sets are processed in blocks of `batch_size` rows (lax.scan), so memory is O(N * batch_size) beyond
the inputs. All functions are jittable; concrete inputs return numpy arrays.
"""
from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from dmdjax.metrics import _checks, costs


class MemorizationRatio(NamedTuple):
    """ratio: (N,) r(y); indices: (N, 2) training indices of x^1, x^2; distances: (N, 2) their distances."""
    ratio: object
    indices: object
    distances: object


def _prepare(samples, train, names=("samples", "train")):
    y = _checks.as_samples(samples, names[0])
    x = _checks.as_samples(train, names[1])
    _checks.as_same_dim(y, x, *names)
    traced = _checks.is_traced(y, x)
    dtype = jnp.promote_types(jnp.result_type(y.dtype, x.dtype), jnp.float32)
    return jnp.asarray(y, dtype), jnp.asarray(x, dtype), traced


def _train_blocks(x, batch_size):
    """(M, D) -> blocks (nb, B, D), squared norms (nb, B), validity (nb, B) and block offsets (nb,)."""
    m = x.shape[0]
    b = min(batch_size, m)
    nb = -(-m // b)
    pad = nb * b - m
    xp = jnp.concatenate([x, jnp.zeros((pad, x.shape[1]), x.dtype)]) if pad else x
    valid = jnp.arange(nb * b) < m
    return (xp.reshape(nb, b, -1), costs.sq_norms(xp).reshape(nb, b), valid.reshape(nb, b),
            jnp.arange(nb, dtype=jnp.int32) * b)


@partial(jax.jit, static_argnames=("n_candidates", "batch_size"))
def _memorization(y, x, n_candidates, batch_size):
    mu = x.mean(axis=0)
    yc, xc = y - mu, x - mu
    xb, xnb, validb, bases = _train_blocks(xc, batch_size)
    k = min(n_candidates, x.shape[0])

    def body(carry, inp):
        best_v, best_i = carry
        xblk, xn_blk, valid, base = inp
        score = jnp.where(valid[None, :], 2.0 * (yc @ xblk.T) - xn_blk[None, :], -jnp.inf)  # max = nearest
        v, i = jax.lax.top_k(score, min(k, score.shape[1]))
        allv = jnp.concatenate([best_v, v], axis=1)
        alli = jnp.concatenate([best_i, i.astype(jnp.int32) + base], axis=1)
        v, pos = jax.lax.top_k(allv, k)
        return (v, jnp.take_along_axis(alli, pos, axis=1)), None

    init = (jnp.full((y.shape[0], k), -jnp.inf, y.dtype), jnp.zeros((y.shape[0], k), jnp.int32))
    (_, cand), _ = jax.lax.scan(body, init, (xb, xnb, validb, bases))
    # Exact distances of the candidates by direct differences (the expansion above only ranks them).
    d = jnp.sqrt(((yc[:, None, :] - xc[cand]) ** 2).sum(axis=-1))          # (N, k)
    order = jnp.argsort(d, axis=1)[:, :2]
    d2 = jnp.take_along_axis(d, order, axis=1)
    idx = jnp.take_along_axis(cand, order, axis=1)
    ratio = jnp.where(d2[:, 1] > 0, d2[:, 0] / jnp.where(d2[:, 1] > 0, d2[:, 1], 1.0), 0.0)
    return MemorizationRatio(ratio=ratio, indices=idx, distances=d2)


def memorization_ratio(samples, train, *, n_candidates: int = 8, batch_size: int = 4096) -> MemorizationRatio:
    """r(y) = ||y - x^1|| / ||y - x^2|| (Sec. 4.1.2, Fig. 12) for samples (N, ...) against train (M, ...), M >= 2.

    Neighbours are ranked with a blocked GEMM over `batch_size` training rows, keeping `n_candidates` per
    sample, whose distances are then recomputed exactly by direct differences (so near-duplicates, where
    r is small and matters, carry no cancellation error). r = 0 when y coincides with a training point.
    Returns MemorizationRatio(ratio (N,), indices (N, 2), distances (N, 2)).
    """
    if n_candidates < 2:
        raise ValueError(f"n_candidates must be >= 2 (nearest and second nearest), got {n_candidates}")
    y, x, traced = _prepare(samples, train)
    if x.shape[0] < 2:
        raise ValueError(f"train needs at least 2 samples for a second-nearest neighbour, got {x.shape[0]}")
    out = _memorization(y, x, int(n_candidates), int(batch_size))
    return out if traced else MemorizationRatio(*(np.asarray(a) for a in jax.device_get(out)))


@partial(jax.jit, static_argnames=("batch_size",))
def _mean_distance(y, x, batch_size):
    mu = x.mean(axis=0)
    yc, xc = y - mu, x - mu
    yn = costs.sq_norms(yc)
    xb, xnb, validb, _ = _train_blocks(xc, batch_size)

    def body(acc, inp):
        xblk, xn_blk, valid = inp
        d2 = yn[:, None] + xn_blk[None, :] - 2.0 * (yc @ xblk.T)
        dist = jnp.where(valid[None, :], jnp.sqrt(jnp.maximum(d2, 0.0)), 0.0)
        return acc + dist.sum(axis=1), None

    total, _ = jax.lax.scan(body, jnp.zeros((y.shape[0],), y.dtype), (xb, xnb, validb))
    return total / x.shape[0]


def mean_train_distance(samples, train, *, batch_size: int = 4096):
    """D(z) = mean over training points x of ||y - x|| (Fig. 5) for samples y = Phi_K(z) (N, ...) -> (N,)."""
    y, x, traced = _prepare(samples, train)
    out = _mean_distance(y, x, int(batch_size))
    return out if traced else np.asarray(out)


def relative_displacement(student, teacher_1, teacher_k):
    """delta(z) = ||G(z) - Phi_K(z)|| - ||Phi_1(z) - Phi_K(z)|| (Fig. 5), three paired (N, ...) arrays -> (N,).

    Negative values: the student moved towards the multi-step target beyond the teacher's one-step sample.
    """
    shapes = {np.shape(student), np.shape(teacher_1), np.shape(teacher_k)}
    if len(shapes) != 1:
        raise ValueError(f"student, teacher_1 and teacher_k must be paired samples of one shape (N, ...), got "
                         f"{np.shape(student)}, {np.shape(teacher_1)}, {np.shape(teacher_k)}")
    g = _checks.as_samples(student, "student")
    p1 = _checks.as_samples(teacher_1, "teacher_1")
    pk = _checks.as_samples(teacher_k, "teacher_k")
    if _checks.is_traced(g, p1, pk):
        dtype = jnp.promote_types(jnp.result_type(g.dtype, p1.dtype, pk.dtype), jnp.float32)
        g, p1, pk = (jnp.asarray(a, dtype) for a in (g, p1, pk))
        return jnp.sqrt(costs.paired_sq_dists(g, pk)) - jnp.sqrt(costs.paired_sq_dists(p1, pk))
    g, p1, pk = (np.asarray(a, np.float64) for a in (g, p1, pk))
    return np.sqrt(costs.paired_sq_dists(g, pk)) - np.sqrt(costs.paired_sq_dists(p1, pk))


def partial_correlation(x, y, control) -> float:
    """Partial correlation of x and y given `control` (three (N,) arrays, N >= 3): the Pearson correlation of
    the residuals of x and y after a least-squares fit a + b * control; equal to
    (r_xy - r_xc r_yc) / sqrt((1 - r_xc^2) (1 - r_yc^2)).

    Fig. 5: delta(z) scales with ||Phi_1(z) - Phi_K(z)||, which grows with D(z) by construction; the partial
    correlation given that distance is what is left of corr(D(z), delta(z)) beyond it. Returns NaN when x or y
    has no variation left after removing the control (e.g. constant, or an exact linear function of it). A
    constant control removes nothing: the result is corr(x, y).
    """
    x, y, c = (np.asarray(a, np.float64).reshape(-1) for a in (x, y, control))
    if not len(x) == len(y) == len(c) or len(x) < 3:
        raise ValueError(f"x, y and control must be (N,) arrays of one length N >= 3, got {len(x)}, {len(y)}, "
                         f"{len(c)}")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y)) and np.all(np.isfinite(c))):
        raise ValueError("x, y and control must be finite (NaN or inf found)")
    x, y, c = x - x.mean(), y - y.mean(), c - c.mean()
    cc = float(c @ c)
    # Residuals of the regression on the control, then their correlation (no cancellation when |r_xc| ~ 1).
    rx = x - (x @ c / cc) * c if cc > 0 else x
    ry = y - (y @ c / cc) * c if cc > 0 else y
    sx, sy = float(np.sqrt(rx @ rx)), float(np.sqrt(ry @ ry))
    tol = 1e-12
    if sx <= tol * max(float(np.sqrt(x @ x)), 1e-300) or sy <= tol * max(float(np.sqrt(y @ y)), 1e-300):
        return float("nan")
    return float(np.clip(rx @ ry / (sx * sy), -1.0, 1.0))
