"""Pairing inefficiency Delta_E = E_DT / E_OT - 1 (paper Sec. 3.1, Eq. 4-6; properties in App. C, Lemma C.2).

Problem: N teacher samples t_i = Phi_K(z_i) and N student samples s_i = G(z_i) from the same seeds z_i,
(N, ...) numpy or JAX arrays, flattened per sample, squared Euclidean cost.

    E_DT = (1/N) sum_i ||t_i - s_i||^2                        (Eq. 5, the distillation / DT pairing)
    E_OT = min over permutations pi of (1/N) sum_i ||t_i - s_pi(i)||^2   (Eq. 4 for the empirical measures)

Solvers (`method`): "exact" (linear assignment, scipy; see `assignment`) or "sinkhorn" (ott-jax entropic OT,
online for large N; see `sinkhorn`). Both work under `jax.jit`; under jit only shapes and dtypes are
validated, and NaN or inf anywhere in the samples makes E_DT, E_OT and Delta_E NaN (eagerly it is a ValueError).

Differentiability: E_DT (`e_dt`) is differentiable in both arguments; E_OT and Delta_E are not (the exact
solver is a host callback, and the Sinkhorn result is post-processed with the discrete DT-pairing cap).

E_OT = 0: Delta_E is 0.0 when E_DT = 0 too (the student reproduces the teacher samples and the pairing:
perfect copying) and +inf when E_OT = 0 < E_DT (the student reproduces the samples, but not the pairing).
Delta_E >= 0 always: the DT pairing is a feasible coupling, so E_OT is capped at E_DT (exact: the identity is
a permutation; Sinkhorn: its primal can exceed E_DT through the entropic bias when copying is near perfect).

Scale: Delta_E is computed on the samples rescaled by a power of two (`_checks.unit_scale`), so it is exact at any
magnitude the dtype can hold (float32 samples at 1e-20 or 1e15); E_DT and E_OT are returned in the input's units
(concrete inputs: float64 where the scale is not 1; traced float32: they underflow or overflow where a squared
distance leaves float32's range, Delta_E does not).

Return types: concrete inputs give float64 numpy scalars (exact method) or float32 numpy scalars (Sinkhorn,
computed in float32 unless inputs are float64 with x64 enabled); traced inputs give JAX arrays.
"""
from __future__ import annotations

import math
import warnings
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import scipy.stats

from dmdjax.metrics import _checks, assignment, costs, sinkhorn

METHODS = ("exact", "sinkhorn")


class TransportEnergies(NamedTuple):
    """Result of `transport_energies` (scalars unless noted).

    e_dt, e_ot: Eq. 5 and Eq. 4 (Sinkhorn: min(<P, C>, E_DT)); delta_e: Eq. 6;
    assignment: (N,) int, the student index matched to teacher i (exact: the optimal permutation; Sinkhorn:
    argmax_j P_ij, not necessarily a permutation) -- the red boxes of Fig. 3;
    marginal_error: L1 marginal residual of the Sinkhorn plan (0 for exact); converged: residual < threshold;
    n_iterations: Sinkhorn iterations (0 for exact); epsilon: final entropic regularisation in cost units
    (0 for exact); bias_bound: a-posteriori bound on the entropic excess, so that (at convergence)
    e_ot - bias_bound <= exact E_OT <= e_ot (0 for exact).
    """
    e_dt: object
    e_ot: object
    delta_e: object
    assignment: object
    marginal_error: object
    converged: object
    n_iterations: object
    epsilon: object
    bias_bound: object


def _delta(e_dt, e_ot, xp):
    """Eq. 6 with the E_OT = 0 convention of the module docstring; NaN when an energy is not finite (NaN or inf
    in the samples), so that bad input never reads as copying."""
    safe = xp.where(e_ot > 0, e_ot, 1.0)
    zero_case = xp.where(e_dt > 0, xp.inf, 0.0)
    delta = xp.where(e_ot > 0, xp.maximum(e_dt / safe - 1.0, 0.0), zero_case)
    return xp.where(xp.isfinite(e_dt) & xp.isfinite(e_ot), delta, xp.nan)


def transport_energies(teacher, student, *, method: str = "exact", epsilon: float = 3e-3,
                       epsilon_start: float = 1.0, decay: float = 0.85, momentum: float = 1.5,
                       threshold: float = 1e-3, bias_tol: float = 1e-3, max_iterations: int = 2000,
                       batch_size: int | None = None, max_cost_bytes: int = 2 ** 24, n_candidates: int = 32,
                       max_passes: int = 3) -> TransportEnergies:
    """E_DT, E_OT, Delta_E and the OT assignment for paired samples (N, ...) x (N, ...), N >= 2 (Eq. 4-6).

    method="exact": optimal permutation by linear assignment (O(N^3) worst case; timings in docs/performance.md);
        E_OT and E_DT in float64. Sinkhorn options ignored.
    method="sinkhorn": entropic OT, primal cost <P, C> (see `dmdjax.metrics.sinkhorn` for the schedule and its
        bias bound).
        `epsilon`: target regularisation relative to the lower bound L = max(mean_i min_j C_ij,
            mean_j min_i C_ij) <= E_OT, reached from `epsilon_start` * L by the factor `decay` per iteration,
            with over-relaxation `momentum`.
        `threshold`: stop when the L1 marginal error is below it (or after `max_iterations`; concrete inputs
            then warn, and `converged` is False).
        `bias_tol`: if the a-posteriori bias bound eps * (H(P) - log N) exceeds bias_tol * <P, C>, epsilon is
            lowered and the solve continues warm (reported as `bias_bound`).
        Storage: with N^2 * 4 bytes <= `max_cost_bytes` (default 16 MiB: N <= 2048) and `batch_size` None,
            ott-jax Sinkhorn on a PointCloud with the N x N cost stored; otherwise the online path: row blocks
            of `batch_size` (default 512), sparse Sinkhorn on `n_candidates` neighbours per teacher, at most
            `max_passes` dense passes. On CPU the online path is the faster one from N ~ 1000 (dense iterations
            cost N^2 exp each); raise `max_cost_bytes` to keep ott's dense solver for larger N (e.g. on GPU).
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    t, s = _checks.as_pair(teacher, student, min_n=2)
    traced = _checks.is_traced(t, s)
    t, s, c2 = _checks.unit_scale(t, s)          # solved at unit scale; energies returned in the input's units
    if method == "exact":
        e_dt, e_ot, col = assignment.exact(t, s)
        xp = jnp if traced else np
        zero = xp.zeros((), e_dt.dtype)
        return TransportEnergies(e_dt=(e_dt * c2)[()], e_ot=(e_ot * c2)[()], delta_e=_delta(e_dt, e_ot, xp)[()],
                                 assignment=col, marginal_error=zero, converged=xp.asarray(True),
                                 n_iterations=xp.asarray(0), epsilon=zero, bias_bound=zero)
    n = t.shape[0]
    online = batch_size is not None or n * n * 4 > max_cost_bytes
    opts = dict(epsilon=float(epsilon), epsilon_start=float(epsilon_start), decay=float(decay),
                momentum=float(momentum), threshold=float(threshold), bias_tol=float(bias_tol),
                max_iterations=int(max_iterations))
    if online:
        opts.update(batch_size=int(batch_size or 512), n_candidates=int(n_candidates), max_passes=int(max_passes))
    result = _sinkhorn_energies(jnp.asarray(t), jnp.asarray(s), online=online, **opts)
    energies = ("e_dt", "e_ot", "epsilon", "bias_bound")
    if traced:
        result = result._replace(**{k: getattr(result, k) * c2.astype(result.e_dt.dtype) for k in energies})
    else:
        result = TransportEnergies(*(np.asarray(r)[()] for r in jax.device_get(result)))
        if c2 != 1.0:    # back to the input's units, in float64 (float32 may not hold them)
            result = result._replace(**{k: np.float64(getattr(result, k)) * c2 for k in energies})
        if not result.converged:
            warnings.warn(f"Sinkhorn did not converge (marginal error {float(result.marginal_error):.2g} > "
                          f"threshold {threshold:g}); its E_OT is unreliable. Raise max_iterations, or use "
                          "method='exact' (low-dimensional data converge very slowly).", RuntimeWarning,
                          stacklevel=2)
    return result


def _sinkhorn_energies_impl(t, s, *, online, **opts) -> TransportEnergies:
    solve = sinkhorn.sinkhorn_online if online else sinkhorn.sinkhorn_dense
    res = solve(t, s, **opts)
    n, dtype = t.shape[0], res.primal.dtype
    t, s = t.astype(dtype), s.astype(dtype)
    e_dt = costs.sum_accurate(costs.paired_sq_dists(t, s)) / n
    # E_OT = 0 exactly when the nearest-neighbour map is a permutation reaching every student at distance 0
    # (an exact certificate; the entropic primal alone would return a tiny positive number).
    finite = jnp.all(jnp.isfinite(t)) & jnp.all(jnp.isfinite(s))
    e_dt = jnp.where(finite, e_dt, jnp.nan)
    hits = jnp.zeros((n,), jnp.int32).at[res.nearest].add(1)
    zero_ot = jnp.all(hits == 1) & jnp.all(costs.paired_sq_dists(t, s[res.nearest]) == 0)
    use_dt = res.primal >= e_dt  # the DT pairing is feasible: never report an E_OT above E_DT
    e_ot = jnp.where(finite, jnp.where(zero_ot, 0.0, jnp.where(use_dt, e_dt, res.primal)), jnp.nan)
    assign = jnp.where(zero_ot, res.nearest, jnp.where(use_dt, jnp.arange(n, dtype=jnp.int32), res.assignment))
    return TransportEnergies(e_dt=e_dt, e_ot=e_ot, delta_e=_delta(e_dt, e_ot, jnp), assignment=assign,
                             marginal_error=res.marginal_error, converged=res.converged,
                             n_iterations=res.n_iterations, epsilon=res.epsilon,
                             bias_bound=jnp.where(zero_ot, 0.0, res.bias_bound))


_sinkhorn_energies = jax.jit(_sinkhorn_energies_impl, static_argnames=(
    "online", "epsilon", "epsilon_start", "decay", "momentum", "threshold", "bias_tol", "max_iterations",
    "batch_size", "n_candidates", "max_passes"))


def pairing_inefficiency(teacher, student, *, method: str = "exact", **options):
    """Delta_E = E_DT / E_OT - 1 (Eq. 6) for paired samples (N, ...) x (N, ...); a scalar >= 0.

    Args:
      teacher, student: (N, ...) numpy or JAX float arrays, sample i of both from the same seed z_i; N >= 2.
      method: "exact" (linear assignment) or "sinkhorn" (ott-jax entropic OT).
      **options: Sinkhorn settings, see `transport_energies`.

    Returns:
      Concrete inputs: a numpy scalar (float64 for "exact", float32 for "sinkhorn"); +inf when E_OT = 0 < E_DT.
      Traced inputs (under jit): a 0-d JAX array, NaN if the samples contain NaN or inf. Not differentiable
      (see the module docstring). Scale invariant (Lemma C.2).

    Raises:
      ValueError (concrete inputs): shapes differ, N < 2, non-float dtype, NaN or inf in the samples.
    """
    return transport_energies(teacher, student, method=method, **options).delta_e


def e_dt(teacher, student):
    """E_DT = (1/N) sum_i ||t_i - s_i||^2 (Eq. 5) for paired samples (N, ...), accumulated in float64."""
    t, s = _checks.as_pair(teacher, student, min_n=1)
    if _checks.is_traced(t, s):
        dtype = jnp.promote_types(t.dtype, jnp.float32)
        return costs.sum_accurate(costs.paired_sq_dists(t.astype(dtype), s.astype(dtype))) / t.shape[0]
    return np.float64(np.mean(costs.paired_sq_dists(np.asarray(t, np.float64), np.asarray(s, np.float64))))


def e_ot(teacher, student, *, method: str = "exact", **options):
    """E_OT (Eq. 4) between the empirical measures of (N, ...) x (N, ...) samples; see `transport_energies`."""
    return transport_energies(teacher, student, method=method, **options).e_ot


class PairingCI(NamedTuple):
    """Uncertainty of an estimate on N paired samples: the estimate, its standard error, the normal interval
    [low, high] at `level`, the (n_resamples,) half-sample replicates, and how many of them are NaN or inf.

    With any non-finite replicate the spread is unknown: std_error and low are NaN and high is +inf (an infinite
    replicate) or NaN; nothing is dropped."""
    estimate: float
    std_error: float
    low: float
    high: float
    level: float
    replicates: np.ndarray
    n_nonfinite: int = 0


def pairing_inefficiency_ci(teacher, student, *, n_resamples: int = 100, level: float = 0.95, seed: int = 0,
                            method: str = "exact", **options) -> PairingCI:
    """Standard error and interval for the N-sample estimator Delta_E^(N) (Sec. 3.1) by half-sampling.

    Method: delete-d jackknife with d = N/2 (Shao & Wu 1989). Each replicate draws m = N // 2 of the N seeds
    without replacement, keeping pairs (t_i, s_i) together, and recomputes E_DT and the full E_OT on them;
    SE = sqrt(m / (N - m) * Var(replicates)), interval = estimate -/+ z_{(1+level)/2} SE (low clipped at 0).

    Why not the percentile bootstrap: resampling seeds with replacement drops ~37% of the seeds, so a teacher
    sample loses the student sample it would be transported to; bootstrap E_OT is biased upwards and its
    percentile interval can miss the estimate entirely (seen on clustered data). Half-samples contain no
    duplicates; only their spread is used. Its accuracy against the true spread over fresh draws is recorded in
    docs/design.md; in d = 2 it underestimates, so treat it as approximate there.
    Not covered: the finite-N bias (E_OT^(N) decreases with N, so Delta_E^(N) drifts with N, often by more
    than the SE); compare estimates at the same N (the paper uses N = 1000).
    Cost: n_resamples solves at N/2. Concrete inputs only. Non-finite replicates: see `PairingCI`.
    """
    t, s = _checks.as_pair(teacher, student, min_n=4)
    stat = lambda a, b: (float(pairing_inefficiency(a, b, method=method, **options)),)
    return half_sample_ci(stat, t, s, n_resamples=n_resamples, level=level, seed=seed, lower=(0.0,),
                          name="pairing_inefficiency_ci")[0]


def half_sample_ci(stat, t, s, *, n_resamples: int, level: float, seed: int, lower=(), name: str):
    """Half-sample (delete-N/2 jackknife) intervals for every statistic of `stat(t, s) -> tuple of floats` on
    paired (N, D) samples; returns one `PairingCI` per statistic, in order. `lower[i]` (None: no bound) clips
    statistic i's low bound; statistics past the end of `lower` are not clipped."""
    if _checks.is_traced(t, s):
        raise ValueError(f"{name} resamples with numpy and cannot run under jax.jit; call it on concrete arrays")
    if not (0 < level < 1) or n_resamples < 2:
        raise ValueError(f"need 0 < level < 1 and n_resamples >= 2, got level={level}, n_resamples={n_resamples}")
    t, s = np.asarray(t), np.asarray(s)
    estimates = stat(t, s)
    rng = np.random.default_rng(seed)
    n = t.shape[0]
    m = n // 2
    reps = np.empty((n_resamples, len(estimates)))
    for b in range(n_resamples):
        idx = rng.choice(n, m, replace=False)
        reps[b] = stat(t[idx], s[idx])
    z = float(scipy.stats.norm.ppf(0.5 + level / 2))
    out = []
    for i, (estimate, r) in enumerate(zip(estimates, reps.T)):
        bad = int(np.sum(~np.isfinite(r)))
        if bad or not np.isfinite(estimate):
            se, low, high = math.nan, math.nan, (math.inf if np.any(np.isposinf(r)) or estimate == math.inf
                                                 else math.nan)
        else:
            se = float(np.sqrt(m / (n - m) * np.var(r, ddof=1)))
            low, high = estimate - z * se, estimate + z * se
            if i < len(lower) and lower[i] is not None:
                low = max(low, lower[i])
        out.append(PairingCI(estimate=float(estimate), std_error=se, low=low, high=high, level=level,
                             replicates=r.copy(), n_nonfinite=bad))
    return out
