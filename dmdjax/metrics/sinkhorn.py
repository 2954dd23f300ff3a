"""Entropic solvers for E_OT (Eq. 4): ott-jax Sinkhorn on a point cloud, and an online variant for large N.

Both return the primal cost <P, C> of the entropic plan P (never the regularised objective).

Epsilon schedule. What matters is eps relative to the scale of the *optimal* costs, not of the whole cost
matrix (in the copying regime E_OT can be 100x below the mean cost). The target is relative to the lower bound

    L = max(mean_i min_j C_ij, mean_j min_i C_ij) <= E_OT:

eps = epsilon * L (default 3e-3), annealed geometrically from epsilon_start * L (default 1.0) by `decay`
(default 0.85) per iteration, with over-relaxation `momentum` (default 1.5), until the L1 marginal error is
below `threshold` (default 1e-3). Relative to L, the solver is exactly scale invariant, like Delta_E (C.2).

Bias and its bound. For uniform weights and N = M every coupling has KL(P | a x b) <= log N, and P_eps
minimises <P, C> + eps KL(P | a x b), so at convergence

    0 <= <P_eps, C> - E_OT <= eps * (H(P_eps) - log N)        (H: entropy of the plan),

an a-posteriori bound computed from the plan (`bias_bound`). If it exceeds `bias_tol` * <P, C> (default
1e-3), eps is lowered and the solve continues from the current potentials (the accuracy against the exact
E_OT, measured by the tests and benchmarks/metrics.py, is in docs/performance.md). The returned plan has one
marginal exact and the other within `threshold`; that residual can move <P, C> slightly below E_OT
(observed: > -2e-5 relative). Low-dimensional data (the 4-D toys: E_OT ~ 1/N of the cost range) would need
1e4-1e5 iterations: Sinkhorn then stops at `max_iterations` with converged = False; use the exact solver there.

Dense mode: ott-jax `Sinkhorn` on the PointCloud's squared-Euclidean cost, materialised once as an ott
`Geometry` (a PointCloud inside ott's while loop re-evaluates its cost every inner block: ~3x slower on CPU).

Online mode (`batch_size`, or N^2 * 4 bytes > max_cost_bytes): the N x N cost is never stored; every pass
over it is a blocked GEMM over `batch_size` teacher rows. At d = 1024 one pass is 2 N^2 d FLOP, 0.8 TFLOP at
N = 20,000 (~10 s on 2 CPU cores), so the hundreds of iterations Sinkhorn needs cannot each be a pass. Instead:
  1. one nearest-neighbour pass keeps, for every teacher, its `n_candidates` nearest students and, for every
     student, its n_candidates / 2 nearest teachers (best 2 per row block), and gives L exactly;
  2. Sinkhorn (same schedule) runs on the sparse support {DT pairs (i, i)} + candidates (cheap: segment
     log-sum-exps over ~1.5 N n_candidates edges; the DT pairs keep the support feasible);
  3. a dense pass performs one exact Sinkhorn row update over the full online cost from those potentials
     and measures the resulting plan: the squared norms are folded into the potentials (u = f - |x|^2,
     v = g - |y|^2, so the kernel needs only the GEMM's 2<x, y>), and the plan's primal, entropy, column
     error and column sums (for the g update) all come from the same GEMM block;
  4. if the column error exceeds `threshold` or the bias bound exceeds bias_tol (then with a smaller eps),
     the rows' candidates are re-ranked by the pass's reduced costs (the active set), the sparse problem is
     re-solved warm, and another pass follows (<= max_passes).
Memory is O(N d + batch_size N + N n_candidates): ~1.1 GiB peak RSS at N = 20,000, d = 1024 (inputs 156 MiB,
JAX runtime ~330 MiB) against 1.5 GiB for the dense cost matrix alone.
"""
from __future__ import annotations

import functools
import math
import warnings
from typing import NamedTuple

import jax
import jax.numpy as jnp

from dmdjax.metrics import costs

with warnings.catch_warnings():  # ott-jax imports JAXopt, which warns that it is deprecated
    warnings.simplefilter("ignore", DeprecationWarning)
    from ott.geometry import epsilon_scheduler, geometry, pointcloud
    from ott.problems.linear import linear_problem
    from ott.solvers.linear import acceleration
    from ott.solvers.linear import sinkhorn as ott_sinkhorn


class SinkhornResult(NamedTuple):
    """primal: <P, C>; assignment: argmax_j P_ij (N,); marginal_error: L1 error of P's inexact marginal;
    converged: marginal_error < threshold; n_iterations: Sinkhorn iterations (online: sparse + dense passes);
    epsilon: the final epsilon in cost units; lower_bound: L above; nearest: argmin_j C_ij (N,);
    bias_bound: eps * (H(P) - log N) >= <P, C> - E_OT at convergence (cost units)."""
    primal: jax.Array
    assignment: jax.Array
    marginal_error: jax.Array
    converged: jax.Array
    n_iterations: jax.Array
    epsilon: jax.Array
    lower_bound: jax.Array
    nearest: jax.Array
    bias_bound: jax.Array


def _schedule(epsilon: float, epsilon_start: float, decay: float):
    """Static annealing: init multiplier of the target epsilon and the iterations needed to reach it."""
    if not (epsilon > 0 and epsilon_start > 0 and 0 < decay <= 1):
        raise ValueError(f"need epsilon > 0, epsilon_start > 0 and 0 < decay <= 1, got {epsilon}, {epsilon_start}, "
                         f"{decay}")
    init = max(epsilon_start / epsilon, 1.0)
    n_anneal = 0 if init == 1.0 or decay == 1.0 else int(math.ceil(math.log(init) / math.log(1.0 / decay)))
    return init, n_anneal


def _cost_unit(lower_bound, mean_cost):
    """L if positive; else (every teacher coincides with some student) a tiny positive unit."""
    tiny = jnp.finfo(jnp.float32).tiny
    return jnp.where(lower_bound > 0, lower_bound, jnp.maximum(mean_cost * 1e-6, tiny))


def _work_dtype(x):
    return jnp.float64 if x.dtype == jnp.float64 else jnp.float32


def _entropy_bound(plan_entropy, eps, n):
    """A-posteriori bound on the entropic bias <P_eps, C> - E_OT <= eps * (H(P_eps) - log N) for uniform
    weights and N = M: the optimal coupling has KL(P* | a x b) <= log N and P_eps minimises <P, C> + eps KL."""
    return jnp.maximum(eps * (plan_entropy - math.log(n)), 0.0)


def _next_epsilon(eps, bound, primal, bias_tol):
    """Shrink eps towards bias_tol: the bound falls at least linearly with eps (the excess entropy falls too)."""
    return eps * jnp.clip(0.8 * bias_tol * primal / jnp.maximum(bound, 1e-30), 0.25, 0.9)


def sinkhorn_dense(teacher, student, *, epsilon: float, epsilon_start: float, decay: float, threshold: float,
                   max_iterations: int, momentum: float, bias_tol: float, max_rounds: int = 4,
                   inner_iterations: int = 10) -> SinkhornResult:
    """ott-jax Sinkhorn on the PointCloud(teacher, student) cost with the annealed epsilon above. (N, D) x (M, D).

    Stores the (N, M) cost and plan. The plan out.matrix has exact column marginals (ott ends on a g update).
    If the entropic bias bound exceeds bias_tol * <P, C>, epsilon is lowered and ott continues from the
    current potentials (at most `max_rounds` solves).
    """
    init, n_anneal = _schedule(epsilon, epsilon_start, decay)
    n = teacher.shape[0]
    dtype = _work_dtype(teacher)
    x, y = costs.center_pair(teacher.astype(dtype), student.astype(dtype))
    cost = pointcloud.PointCloud(x, y).cost_matrix
    lower = jnp.maximum(cost.min(axis=1).mean(), cost.min(axis=0).mean())
    unit = _cost_unit(lower, cost.mean())
    # The point cloud's cost, materialised once: a PointCloud geometry inside ott's while loop re-evaluates its
    # cost matrix every inner block, which made dense Sinkhorn ~3x slower per iteration on CPU.
    prob = lambda eps: linear_problem.LinearProblem(geometry.Geometry(cost_matrix=cost, epsilon=eps))
    mom = acceleration.Momentum(value=momentum, inner_iterations=inner_iterations)
    # ott computes the error only at iterations >= min_iterations that end an inner block; this value makes the
    # first check land right after annealing (a multiple of inner_iterations would make ott stop on an inf error).
    min_it = min(inner_iterations * int(math.ceil((n_anneal + 1) / inner_iterations)) - 1, max_iterations)
    first = ott_sinkhorn.Sinkhorn(threshold=threshold, max_iterations=max_iterations, min_iterations=min_it,
                                  inner_iterations=inner_iterations, momentum=mom)
    again = ott_sinkhorn.Sinkhorn(threshold=threshold, max_iterations=max_iterations, inner_iterations=inner_iterations,
                                  momentum=mom)

    def measure(out, eps):
        plan = out.matrix
        primal = costs.sum_accurate((plan * cost).sum(axis=1))
        entropy = -costs.sum_accurate((plan * jnp.log(jnp.where(plan > 0, plan, 1.0))).sum(axis=1))
        return dict(f=out.f, g=out.g, eps=jnp.asarray(eps, dtype), primal=primal,
                    bound=_entropy_bound(entropy, eps, n), err=jnp.abs(plan.sum(axis=1) - 1.0 / n).sum(),
                    assignment=jnp.argmax(plan, axis=1).astype(jnp.int32), converged=out.converged,
                    its=out.n_iters)

    state = measure(first(prob(epsilon_scheduler.Epsilon(epsilon * unit, init=init, decay=decay))), epsilon * unit)

    def cond(st):
        k, r = st
        return (k < max_rounds) & r["converged"] & (r["bound"] > bias_tol * r["primal"])

    def body(st):
        k, r = st
        eps = _next_epsilon(r["eps"], r["bound"], r["primal"], bias_tol)
        new = measure(again(prob(eps), init=(r["f"], r["g"])), eps)
        return k + 1, {**new, "its": r["its"] + new["its"]}

    _, r = jax.lax.while_loop(cond, body, (jnp.int32(1), state))
    return SinkhornResult(primal=r["primal"], assignment=r["assignment"], marginal_error=r["err"],
                          converged=r["converged"], n_iterations=r["its"], epsilon=r["eps"], lower_bound=lower,
                          nearest=cost.argmin(axis=1).astype(jnp.int32), bias_bound=r["bound"])


# ----------------------------------------------------------------------------------------------------------
# Online mode: sparse (active-set) Sinkhorn on candidate pairs, certified and refined by dense online passes.

class _Candidates(NamedTuple):
    """Candidate pairs from one blocked pass: for every row its k best columns, for every column its best
    rows (up to `per_block` per row block, k_col kept), with their costs (+inf where missing)."""
    row_idx: jax.Array   # (N, k_row) int32 column indices
    row_cost: jax.Array  # (N, k_row)
    col_idx: jax.Array   # (M, k_col) int32 row indices
    col_cost: jax.Array  # (M, k_col)


def _row_blocks(x, batch_size: int, fill=0.0):
    """(N, ...) -> (ceil(N / B), B, ...) padded with `fill`."""
    n = x.shape[0]
    nb = -(-n // batch_size)
    pad = nb * batch_size - n
    x = jnp.concatenate([x, jnp.full((pad,) + x.shape[1:], fill, x.dtype)]) if pad else x
    return x.reshape((nb, batch_size) + x.shape[1:])


def _blocked_pass(xb, xnb, logab, ub, v, y, yn, eps, *, k_row: int, k_col: int, per_block: int, sinkhorn: bool):
    """One pass over the cost C_ij = |x_i|^2 + |y_j|^2 - 2<x_i, y_j> in row blocks (one GEMM per block).

    Potentials are folded: u = f - |x|^2, v = g - |y|^2, so the log-plan is (u_i + v_j + 2<x_i, y_j>) / eps.
    Returns row candidates ranked by that reduced score (top k_row per row). Without `sinkhorn` (the
    nearest-neighbour pass) also column candidates: the best `per_block` rows per block by u_i + 2<x_i, y_j>,
    k_col kept. With `sinkhorn`, one Sinkhorn iteration instead: u_new by the exact row update, the plan
    P = (u_new, v) (rows exact), its primal <P, C>, entropy, column L1 error and row argmax, the row L1 error
    of the previous plan (u, v), and v_new by the column update from u_new.
    """
    m = y.shape[0]
    batch = xb.shape[1]

    def body(carry, inp):
        colmass, cval, cidx = carry
        xblk, xn_blk, la, u_old, base = inp
        s2 = 2.0 * (xblk @ y.T)                                          # (B, M), the only O(B M D) step
        cblk = xn_blk[:, None] + yn[None, :] - s2
        r_score = v[None, :] + s2                                        # rows: reduced score up to a row constant
        # (Only the indices of top_k are used: slicing its outputs makes XLA:CPU fall back to a slow sort.)
        ri = jax.lax.top_k(r_score, k_row)[1]
        out = {"ri": ri.astype(jnp.int32), "rc": jnp.take_along_axis(cblk, ri, axis=1)}
        if sinkhorn:
            z = r_score / eps
            rmax = z.max(axis=1)
            e = jnp.exp(z - rmax[:, None])
            rs = e.sum(axis=1)
            lse = rmax + jnp.log(rs)
            u_new = eps * (la - lse)
            w = e * (jnp.exp(la) / rs)[:, None]                          # rows of P (padded rows: 0)
            # entropy of P: log P_ij = z_ij - lse_i + log a_i, written with z - rmax to avoid cancellation
            logs = jnp.where(jnp.isfinite(la), jnp.exp(la) * (jnp.log(rs) - la), 0.0)
            out.update(u=u_new, amax=jnp.argmax(z, axis=1).astype(jnp.int32),
                       primal=(w * jnp.maximum(cblk, 0.0)).sum(axis=1).sum(),
                       entropy=(logs - (w * (z - rmax[:, None])).sum(axis=1)).sum(),
                       row_err=jnp.abs(jnp.exp(u_old / eps + lse) - jnp.exp(la)).sum())
            colmass = colmass + w.sum(axis=0)
        else:
            c_score = jnp.where(jnp.isfinite(la)[:, None], u_old[:, None] + s2, -jnp.inf)  # never padded rows
            bv, bi = jax.lax.top_k(c_score.T, per_block)                 # (M, per_block)
            cval, pos = jax.lax.top_k(jnp.concatenate([cval, bv], axis=1), k_col)
            cidx = jnp.take_along_axis(jnp.concatenate([cidx, base + bi.astype(jnp.int32)], axis=1), pos, axis=1)
        return (colmass, cval, cidx), out

    nb = xb.shape[0]
    bases = jnp.arange(nb, dtype=jnp.int32) * batch
    dt = y.dtype
    init = (jnp.zeros((m,), dt), jnp.full((m, k_col), -jnp.inf, dt), jnp.zeros((m, k_col), jnp.int32))
    (colmass, cval, cidx), out = jax.lax.scan(body, init, (xb, xnb, logab, ub, bases))
    n_pad = nb * batch
    row_idx, row_cost = out["ri"].reshape(n_pad, k_row), out["rc"].reshape(n_pad, k_row)
    if not sinkhorn:
        # Column candidate costs: C_ij = |x_i|^2 + |y_j|^2 - (score - u_i).
        xn_all, u_all = xnb.reshape(n_pad), ub.reshape(n_pad)
        c_cost = jnp.where(jnp.isfinite(cval), xn_all[cidx] + yn[:, None] - (cval - u_all[cidx]), jnp.inf)
        return _Candidates(row_idx, row_cost, cidx, c_cost)
    # Column update from u_new without a second exp: the column sums of P = (u_new, v) give
    # LSE_i((u_new_i + 2<x_i, y_j>) / eps) = log colmass_j - v_j / eps. (It only warm-starts the sparse
    # re-solve; an empty column gets a bounded step instead of +inf.)
    tiny = jnp.finfo(dt).tiny
    v_new = v + eps * (-jnp.log(float(m)) - jnp.log(jnp.maximum(colmass, tiny)))
    return (row_idx, row_cost), dict(u=out["u"], v=v_new, primal=out["primal"].sum(),
                                     col_err=jnp.abs(colmass - 1.0 / m).sum(), row_err=out["row_err"].sum(),
                                     amax=out["amax"].reshape(n_pad), entropy=out["entropy"].sum())


def _edges(n: int, m: int, diag_cost, *cands: _Candidates):
    """Union of the DT pairs (i, i) and candidate sets as edge lists sorted by (row, col); duplicates get cost
    +inf (no mass). Static size n + sum over sets of (n k_row + m k_col)."""
    d = jnp.arange(min(n, m), dtype=jnp.int32)
    rows, cols, cst = [d], [d], [diag_cost]
    for c in cands:
        k_row, k_col = c.row_idx.shape[1], c.col_idx.shape[1]
        rows += [jnp.repeat(jnp.arange(n, dtype=jnp.int32), k_row), c.col_idx.reshape(-1)]
        cols += [c.row_idx[:n].reshape(-1), jnp.repeat(jnp.arange(m, dtype=jnp.int32), k_col)]
        cst += [c.row_cost[:n].reshape(-1), c.col_cost.reshape(-1)]
    rows, cols, cst = jnp.concatenate(rows), jnp.concatenate(cols), jnp.maximum(jnp.concatenate(cst), 0.0)
    order = jnp.lexsort((cols, rows))  # stable: the first listed copy of a pair is kept
    rows, cols, cst = rows[order], cols[order], cst[order]
    dup = jnp.concatenate([jnp.zeros((1,), bool), (rows[1:] == rows[:-1]) & (cols[1:] == cols[:-1])])
    return rows, cols, jnp.where(dup, jnp.inf, cst)


def _segment_lse(z, seg, num):
    mx = jax.ops.segment_max(z, seg, num_segments=num, indices_are_sorted=True)
    mx = jnp.where(jnp.isfinite(mx), mx, 0.0)
    ssum = jax.ops.segment_sum(jnp.exp(z - mx[seg]), seg, num_segments=num, indices_are_sorted=True)
    return mx + jnp.log(ssum)


def _sparse_sinkhorn(rows, cols, cst, n, m, f, g, start_it, *, eps, init, decay, n_anneal, threshold,
                     max_iterations, momentum, inner_iterations=10):
    """Log-domain Sinkhorn with over-relaxation `momentum` on a sparse support (edges sorted by row, +inf = no
    edge), epsilon annealed from init * eps from iteration `start_it`. Returns (f, g, iterations run)."""
    loga, logb = -jnp.log(float(n)), -jnp.log(float(m))
    by_col = jnp.lexsort((rows, cols))
    rows_c, cols_c, cst_c = rows[by_col], cols[by_col], cst[by_col]

    def one(it, fg):
        f, g = fg
        e = eps * jnp.maximum(init * decay ** it.astype(cst.dtype), 1.0)
        f_new = e * (loga - _segment_lse((g[cols] - cst) / e, rows, n))
        f = jnp.where(jnp.isfinite(f), (1 - momentum) * f + momentum * f_new, f_new)
        g_new = e * (logb - _segment_lse((f[rows_c] - cst_c) / e, cols_c, m))
        g = jnp.where(jnp.isfinite(g), (1 - momentum) * g + momentum * g_new, g_new)
        return f, g

    def row_error(f, g):
        mass = jax.ops.segment_sum(jnp.exp((f[rows] + g[cols] - cst) / eps), rows, num_segments=n,
                                   indices_are_sorted=True)
        return jnp.abs(mass - 1.0 / n).sum()

    def cond(state):
        it, _, _, err = state
        return (it - start_it < max_iterations) & ((it < n_anneal) | ~(err <= threshold))

    def body(state):
        it, f, g, _ = state
        f, g = jax.lax.fori_loop(it, it + inner_iterations, one, (f, g))
        it = it + inner_iterations
        return it, f, g, jnp.where(it > n_anneal, row_error(f, g), jnp.inf)

    it, f, g, _ = jax.lax.while_loop(cond, body, (start_it, f, g, jnp.asarray(jnp.inf, cst.dtype)))
    return f, g, it - start_it


def sinkhorn_online(teacher, student, *, epsilon: float, epsilon_start: float, decay: float, threshold: float,
                    max_iterations: int, momentum: float, bias_tol: float, batch_size: int, n_candidates: int = 32,
                    max_passes: int = 3, sparse_threshold: float | None = None) -> SinkhornResult:
    """Online Sinkhorn (module docstring): (N, D) x (M, D) in O(N D + batch_size M + N n_candidates) memory."""
    init, n_anneal = _schedule(epsilon, epsilon_start, decay)
    sparse_threshold = threshold if sparse_threshold is None else sparse_threshold
    n, m = teacher.shape[0], student.shape[0]
    batch_size = min(batch_size, n)
    k_row, k_col, per_block = min(n_candidates, m), min(n_candidates // 2, n), min(2, batch_size)
    dtype = _work_dtype(teacher)
    x, y = costs.center_pair(teacher.astype(dtype), student.astype(dtype))
    xn, yn = costs.sq_norms(x), costs.sq_norms(y)
    xb, xnb = _row_blocks(x, batch_size), _row_blocks(xn, batch_size)
    logab = _row_blocks(jnp.full((n,), -jnp.log(float(n)), dtype), batch_size, fill=-jnp.inf)
    blocks = functools.partial(_blocked_pass, xb, xnb, logab, y=y, yn=yn, k_row=k_row, k_col=k_col,
                               per_block=per_block)

    # 1. Nearest-neighbour candidates (potentials f = g = 0) and the lower bound L from the exact minima.
    cand0 = blocks(-xnb, -yn, eps=1.0, sinkhorn=False)
    lower = jnp.maximum(jnp.maximum(cand0.row_cost[:n, 0], 0.0).mean(), jnp.maximum(cand0.col_cost[:, 0], 0.0).mean())
    eps0 = epsilon * _cost_unit(lower, jnp.maximum(cand0.row_cost[:n].mean(), lower))
    diag_cost = costs.paired_sq_dists(x[: min(n, m)], y[: min(n, m)])
    sparse = functools.partial(_sparse_sinkhorn, n=n, m=m, init=init, decay=decay, n_anneal=n_anneal,
                               threshold=sparse_threshold, max_iterations=max_iterations, momentum=momentum)

    # 2. Annealed sparse Sinkhorn on the DT pairs + candidates (the DT pairs keep the support feasible, N = M).
    rows, cols, cst = _edges(n, m, diag_cost, cand0)
    f, g, its = sparse(rows, cols, cst, f=jnp.zeros((n,), dtype), g=jnp.zeros((m,), dtype), start_it=jnp.int32(0),
                       eps=eps0)

    # 3. Dense passes. After a pass whose column error exceeds `threshold`, or whose entropic bias bound exceeds
    #    bias_tol * primal (then with a smaller epsilon), re-solve the sparse problem warm on the candidates
    #    ranked by the pass's own potentials (the active set), and pass again.
    def unfinished(res, eps):
        return ~(res["col_err"] <= threshold) | (_entropy_bound(res["entropy"], eps, n) > bias_tol * res["primal"])

    def cond(state):
        p, _, _, _, eps, res = state
        return (p < max_passes) & ((p == 0) | unfinished(res, eps))

    def body(state):
        p, f, g, its, eps, _ = state
        cand, res = blocks(_row_blocks(f, batch_size, fill=-jnp.inf) - xnb, g - yn, eps=eps, sinkhorn=True)

        def refine(_):  # rows re-ranked by the pass's potentials; columns keep their nearest rows
            bound = _entropy_bound(res["entropy"], eps, n)
            new_eps = jnp.where(bound > bias_tol * res["primal"], _next_epsilon(eps, bound, res["primal"], bias_tol),
                                eps)
            r, c, w = _edges(n, m, diag_cost, cand0._replace(row_idx=cand[0], row_cost=cand[1]))
            f2, g2, extra = sparse(r, c, w, f=res["u"].reshape(-1)[:n] + xn, g=res["v"] + yn,
                                   start_it=jnp.int32(n_anneal), eps=new_eps)
            return f2, g2, extra, new_eps

        more = (p + 1 < max_passes) & unfinished(res, eps)
        f, g, extra, new_eps = jax.lax.cond(more, refine, lambda _: (f, g, jnp.int32(0), eps), None)
        return p + 1, f, g, its + extra, new_eps, {**res, "eps": eps}

    z = jnp.zeros((), dtype)
    res0 = dict(u=jnp.zeros(xnb.shape, dtype), v=jnp.zeros((m,), dtype), primal=z, col_err=jnp.asarray(jnp.inf, dtype),
                row_err=z, amax=jnp.zeros((xnb.size,), jnp.int32), entropy=z, eps=eps0)
    passes, _, _, its, _, res = jax.lax.while_loop(cond, body, (jnp.int32(0), f, g, its, eps0, res0))
    return SinkhornResult(primal=res["primal"], assignment=res["amax"][:n], marginal_error=res["col_err"],
                          converged=res["col_err"] <= threshold, n_iterations=its + passes, epsilon=res["eps"],
                          lower_bound=lower, nearest=cand0.row_idx[:n, 0],
                          bias_bound=_entropy_bound(res["entropy"], res["eps"], n))
