"""Copying metrics (dmdjax.metrics) against independent computations: brute force over all permutations, scipy's
assignment on a float64 cost built by direct differences, numpy brute-force neighbours and eigen-decomposition PCA.
Speed targets live in benchmarks/metrics.py, not here."""
import itertools
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment

from dmdjax import metrics


# ---------------------------------------------------------------------------------------------------- data

def clustered_pairs(n, d=64, shuffle=0.3, noise=0.3, seed=0):
    """Image-like teacher samples in clusters; student = teacher + noise with a fraction of pairs shuffled."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((5, d)) * 3
    t = centers[rng.integers(0, 5, n)] + rng.standard_normal((n, d))
    s = t + noise * rng.standard_normal((n, d))
    idx = rng.choice(n, int(shuffle * n), replace=False)
    s[idx] = s[rng.permutation(idx)]
    return t.astype(np.float32), s.astype(np.float32)


def manifold_pairs(n, d=128, latent=8, seed=0):
    """Independent draws of a curved low-dimensional manifold (strong remapping, hard for Sinkhorn)."""
    rng = np.random.default_rng(seed)
    w1 = rng.standard_normal((latent, 64)) / np.sqrt(latent)
    w2 = rng.standard_normal((64, d)) / 8
    f = lambda z: np.tanh(np.tanh(1.5 * z @ w1) @ w2 * 1.5)
    draw = lambda: f(rng.standard_normal((n, latent))).astype(np.float32)
    return draw(), draw()


def reference_energies(t, s):
    """Independent E_DT, E_OT: float64 cost by direct differences, scipy assignment."""
    t, s = (np.asarray(a, np.float64).reshape(len(a), -1) for a in (t, s))
    cost = ((t[:, None, :] - s[None, :, :]) ** 2).sum(-1)
    r, c = linear_sum_assignment(cost)
    return cost[np.arange(len(t)), np.arange(len(t))].mean(), cost[r, c].mean(), cost


# ---------------------------------------------------------------------------------------------------- Delta_E

def test_exact_matches_brute_force_over_all_permutations():
    rng = np.random.default_rng(1)
    for trial in range(3):
        t = rng.standard_normal((6, 2, 3))                     # (N, ...) flattened per sample
        s = t + rng.standard_normal((6, 2, 3))
        cost = ((t.reshape(6, 1, -1) - s.reshape(1, 6, -1)) ** 2).sum(-1)
        best = min(cost[np.arange(6), list(p)].mean() for p in itertools.permutations(range(6)))
        res = metrics.transport_energies(t, s)
        assert res.e_ot == pytest.approx(best, rel=1e-12)
        assert res.e_dt == pytest.approx(np.trace(cost) / 6, rel=1e-12)
        assert sorted(res.assignment) == list(range(6))
        assert cost[np.arange(6), res.assignment].mean() == pytest.approx(best, rel=1e-12)
        assert res.delta_e == pytest.approx(np.trace(cost) / 6 / best - 1, rel=1e-10)


@pytest.mark.minver
def test_exact_matches_scipy_on_partly_shuffled_pairs():
    t, s = clustered_pairs(300, shuffle=0.3)
    e_dt, e_ot, cost = reference_energies(t, s)
    res = metrics.transport_energies(t, s)
    assert e_ot < e_dt                                             # the shuffle makes the DT pairing suboptimal
    assert res.e_dt == pytest.approx(e_dt, rel=1e-12)
    assert res.e_ot == pytest.approx(e_ot, rel=1e-9)
    assert res.delta_e == pytest.approx(e_dt / e_ot - 1, rel=1e-8)
    assert np.array_equal(np.sort(res.assignment), np.arange(300))
    assert cost[np.arange(300), res.assignment].mean() == pytest.approx(e_ot, rel=1e-9)
    assert metrics.pairing_inefficiency(t, s) == res.delta_e
    assert metrics.e_ot(t, s) == res.e_ot and metrics.e_dt(t, s) == pytest.approx(e_dt, rel=1e-12)


def test_delta_e_nonnegative_and_scale_invariant():
    rng = np.random.default_rng(2)
    cases = [clustered_pairs(120, shuffle=0.0, noise=0.05, seed=3),     # near-perfect copying: E_OT = E_DT
             clustered_pairs(120, shuffle=0.5, seed=4), manifold_pairs(120, seed=5),
             tuple(rng.standard_normal((2, 40, 3)).astype(np.float32))]
    for t, s in cases:
        base = metrics.pairing_inefficiency(t, s)
        base_sk = float(metrics.pairing_inefficiency(t, s, method="sinkhorn"))
        assert base >= 0 and base_sk >= 0
        for c in (1e-3, 7.5, 1e4):
            assert metrics.pairing_inefficiency(c * t, c * s) == pytest.approx(base, rel=1e-6, abs=1e-9)
            sk = float(metrics.pairing_inefficiency(c * t, c * s, method="sinkhorn"))
            assert sk == pytest.approx(base_sk, rel=1e-3, abs=1e-4)   # float32 round-off only
    t, s = cases[0]
    assert metrics.pairing_inefficiency(t, s) == 0.0            # identity is optimal -> exactly 0, never negative


def test_e_ot_zero_conventions():
    rng = np.random.default_rng(3)
    t = rng.standard_normal((40, 5)).astype(np.float32)
    perm = rng.permutation(40)
    for kw in ({"method": "exact"}, {"method": "sinkhorn"}, {"method": "sinkhorn", "batch_size": 16}):
        same = metrics.transport_energies(t, t, **kw)
        assert float(same.e_ot) == 0.0 and float(same.delta_e) == 0.0        # perfect copying
        shuffled = metrics.transport_energies(t, t[perm], **kw)
        assert float(shuffled.e_ot) == 0.0 and float(shuffled.e_dt) > 0
        assert np.isposinf(shuffled.delta_e)                                   # samples copied, pairing not
        assert np.array_equal(np.asarray(t[perm][shuffled.assignment]), t)


@pytest.mark.minver
@pytest.mark.parametrize("data", ["clustered", "manifold"])
def test_sinkhorn_within_1e3_of_exact_and_biased_upwards(data):
    t, s = clustered_pairs(400, shuffle=0.5, seed=6) if data == "clustered" else manifold_pairs(400, seed=7)
    e_dt, e_ot, cost = reference_energies(t, s)
    for kw in ({}, {"batch_size": 96}):                           # ott dense, and online with a padded last block
        res = metrics.transport_energies(t, s, method="sinkhorn", **kw)
        assert bool(res.converged) and float(res.marginal_error) < 1e-3
        rel = (float(res.e_ot) - e_ot) / e_ot
        assert abs(rel) < 1e-3, (kw, rel)
        assert rel > -1e-4, (kw, rel)             # entropic primal >= exact, up to the marginal residual
        assert float(res.e_ot) - float(res.bias_bound) <= e_ot * (1 + 1e-4)    # the reported bracket holds
        assert float(res.bias_bound) <= 1e-3 * float(res.e_ot)
        assert float(res.delta_e) == pytest.approx(e_dt / e_ot - 1, rel=2e-3)
        if data == "clustered":                       # unambiguous optimum: the plan's row modes recover it
            _, col = linear_sum_assignment(cost)
            assert np.mean(np.asarray(res.assignment) == col) > 0.99


def test_sinkhorn_lowers_epsilon_until_the_bias_bound_is_met():
    rng = np.random.default_rng(14)          # independent high-dimensional clouds: many near-ties, large bias
    t, s = rng.standard_normal((2, 300, 512)).astype(np.float32)
    _, exact, _ = reference_energies(t, s)
    loose = metrics.transport_energies(t, s, method="sinkhorn", bias_tol=1.0)      # no refinement
    tight = metrics.transport_energies(t, s, method="sinkhorn")
    assert float(loose.bias_bound) > 1e-3 * float(loose.e_ot)                     # refinement was needed ...
    assert float(tight.bias_bound) <= 1e-3 * float(tight.e_ot) and tight.epsilon < loose.epsilon
    assert float(tight.e_ot) - exact < 0.5 * (float(loose.e_ot) - exact)          # ... and it helped
    for r in (loose, tight):
        assert float(r.e_ot) - float(r.bias_bound) <= exact <= float(r.e_ot) * (1 + 1e-5)


def test_sinkhorn_warns_when_not_converged_on_low_dimensional_data():
    rng = np.random.default_rng(13)                 # 4-D toy-like: E_OT << cost range, Sinkhorn crawls
    t, s = rng.uniform(-2, 2, (300, 4)).astype(np.float32), rng.uniform(-2, 2, (300, 4)).astype(np.float32)
    with pytest.warns(RuntimeWarning, match="did not converge"):
        res = metrics.transport_energies(t, s, method="sinkhorn", max_iterations=100)
    assert not res.converged and float(res.marginal_error) > 1e-3


def test_online_matches_dense_on_nontrivial_blocks():
    t, s = manifold_pairs(250, d=64, seed=8)
    dense = metrics.transport_energies(t, s, method="sinkhorn")
    for bs in (32, 250):                              # 8 blocks with a padded last one; a single block
        online = metrics.transport_energies(t, s, method="sinkhorn", batch_size=bs, n_candidates=8)
        assert float(online.e_ot) == pytest.approx(float(dense.e_ot), rel=1e-3)
        assert float(online.marginal_error) < 1e-3


@pytest.mark.minver
def test_jit_compatible_both_methods():
    t, s = clustered_pairs(60, d=16, seed=9)
    for method in ("exact", "sinkhorn"):
        eager = metrics.transport_energies(t, s, method=method)
        jitted = jax.jit(lambda a, b: metrics.transport_energies(a, b, method=method))(jnp.asarray(t), jnp.asarray(s))
        assert isinstance(jitted.delta_e, jax.Array) and jitted.delta_e.shape == ()
        assert float(jitted.delta_e) == pytest.approx(float(eager.delta_e), rel=1e-4)
        assert np.array_equal(np.asarray(jitted.assignment), np.asarray(eager.assignment))
        f = jax.jit(lambda a, b: metrics.pairing_inefficiency(a, b, method=method))
        assert float(f(jnp.asarray(t), jnp.asarray(s))) == pytest.approx(float(eager.delta_e), rel=1e-4)
    batched = jax.vmap(lambda a, b: metrics.pairing_inefficiency(a, b))(jnp.stack([t, s]), jnp.stack([s, t]))
    assert np.allclose(batched, metrics.pairing_inefficiency(t, s), rtol=1e-5)


def test_validation_errors_name_problem_and_fix():
    good = np.zeros((4, 3), np.float32) + np.arange(3)
    bad = [((good, good[:3]), "same shape"), ((good[:1], good[:1]), "at least 2"),
           ((np.where(np.eye(4, 3) > 0, np.nan, good), good), "NaN or inf"),
           ((good, np.full((4, 3), np.inf, np.float32)), "NaN or inf"),
           ((np.zeros((0, 3)), np.zeros((0, 3))), "empty"), ((np.zeros((4, 0)), np.zeros((4, 0))), "empty"),
           ((good.astype(np.int32), good.astype(np.int32)), "astype"), ((good > 0, good > 0), "integer/bool"),
           ((good + 0j, good + 0j), "complex"), ((np.float32(1.0), np.float32(1.0)), "scalar")]
    for method in ("exact", "sinkhorn"):
        for (t, s), msg in bad:
            with pytest.raises(ValueError, match=msg):
                metrics.pairing_inefficiency(t, s, method=method)
    with pytest.raises(ValueError, match="method"):
        metrics.pairing_inefficiency(good, good, method="emd")
    with pytest.raises(ValueError, match="same shape"):           # shapes are still checked under jit
        jax.jit(lambda a, b: metrics.pairing_inefficiency(a, b))(jnp.zeros((4, 3)), jnp.zeros((5, 3)))
    with pytest.raises(ValueError, match="integer"):
        jax.jit(lambda a: metrics.pairing_inefficiency(a, a))(jnp.zeros((4, 3), jnp.int32))
    with pytest.raises(ValueError, match="features"):
        metrics.memorization_ratio(np.ones((3, 4)), np.ones((10, 5)))
    with pytest.raises(ValueError, match="NaN"):
        metrics.mean_train_distance(np.ones((3, 4)), np.full((10, 4), np.nan))


def test_ci_standard_error_tracks_spread_over_fresh_seeds():
    centers = np.random.default_rng(0).standard_normal((5, 64)) * 3           # one fixed population

    def draw(seed, n=80):
        rng = np.random.default_rng(seed)
        t = centers[rng.integers(0, 5, n)] + rng.standard_normal((n, 64))
        s = t + rng.standard_normal((n, 64))
        remap = rng.random(n) < 0.3                                             # these seeds are remapped
        s[remap] = centers[rng.integers(0, 5, remap.sum())] + rng.standard_normal((remap.sum(), 64))
        return t, s

    t, s = draw(0)
    ci = metrics.pairing_inefficiency_ci(t, s, n_resamples=60, seed=1)
    assert ci.estimate == metrics.pairing_inefficiency(t, s) and ci.replicates.shape == (60,)
    assert ci.low < ci.estimate < ci.high
    fresh = np.std([metrics.pairing_inefficiency(*draw(k)) for k in range(1, 61)], ddof=1)
    assert 0.5 < ci.std_error / fresh < 2.0, (ci.std_error, fresh)      # SE ~ true sampling spread at this N
    assert np.array_equal(ci.replicates, metrics.pairing_inefficiency_ci(t, s, n_resamples=60, seed=1).replicates)
    with pytest.raises(ValueError, match="jit"):
        jax.jit(lambda a, b: metrics.pairing_inefficiency_ci(a, b).estimate)(jnp.asarray(t), jnp.asarray(s))


# ---------------------------------------------------------------------------------------------------- Sec. 4

@pytest.mark.minver
def test_memorization_ratio_matches_numpy_brute_force():
    rng = np.random.default_rng(10)
    train = rng.standard_normal((1500, 6, 6)).astype(np.float32) + 20.0    # large offset: tests cancellation
    samples = rng.standard_normal((40, 6, 6)).astype(np.float32) + 20.0
    samples[:5] = train[[3, 700, 1499, 12, 512]] + 1e-3 * rng.standard_normal((5, 6, 6)).astype(np.float32)
    samples[5] = train[9]                                                       # exact copy: r = 0
    res = metrics.memorization_ratio(samples, train, batch_size=256)           # 1500 = 5 * 256 + 220: padding
    d = np.sqrt(((samples.reshape(40, 1, -1).astype(np.float64) - train.reshape(1, 1500, -1)) ** 2).sum(-1))
    order = np.argsort(d, axis=1)[:, :2]
    ref_d = np.take_along_axis(d, order, axis=1)
    assert np.array_equal(res.indices, order)
    assert np.allclose(res.distances, ref_d, rtol=1e-4, atol=1e-5)
    assert np.allclose(res.ratio, ref_d[:, 0] / ref_d[:, 1], rtol=1e-3, atol=1e-6)
    assert np.all(res.ratio[:5] < 0.01) and res.ratio[5] == 0.0 and np.all(res.ratio[6:] > 0.3)
    jitted = jax.jit(lambda a, b: metrics.memorization_ratio(a, b, batch_size=256))(samples, train)
    assert np.array_equal(np.asarray(jitted.indices), res.indices)


def test_mean_train_distance_and_displacement_match_numpy():
    rng = np.random.default_rng(11)
    train = rng.standard_normal((700, 20)).astype(np.float32)
    y = rng.standard_normal((30, 4, 5)).astype(np.float32) * 2
    ref = np.sqrt(((y.reshape(30, 1, -1).astype(np.float64) - train[None]) ** 2).sum(-1)).mean(1)
    assert np.allclose(metrics.mean_train_distance(y, train, batch_size=128), ref, rtol=1e-5)
    assert np.allclose(jax.jit(metrics.mean_train_distance)(y, train), ref, rtol=1e-5)
    g, p1, pk = rng.standard_normal((3, 30, 4, 5))
    delta = metrics.relative_displacement(g, p1, pk)
    ref = np.linalg.norm((g - pk).reshape(30, -1), axis=1) - np.linalg.norm((p1 - pk).reshape(30, -1), axis=1)
    assert np.allclose(delta, ref, rtol=1e-12)
    assert np.allclose(jax.jit(metrics.relative_displacement)(g, p1, pk), ref, rtol=1e-5)
    with pytest.raises(ValueError, match="one shape"):
        metrics.relative_displacement(g, p1, pk[:10])


def test_pca_projection_matches_covariance_eigenvectors():
    rng = np.random.default_rng(12)
    ref = rng.standard_normal((500, 8)) @ np.diag([5, 3, 1, 1, 1, 0.5, 0.5, 0.1]) + 4.0
    other = rng.standard_normal((60, 8))
    p_ref, p_other = metrics.pca_projection(ref, other, n_components=2)
    w, v = np.linalg.eigh(np.cov(ref.T))
    comps = v[:, ::-1][:, :2]
    for k in range(2):                                            # equal up to the (fixed) sign of each component
        sign = np.sign(p_ref[:, k] @ ((ref - ref.mean(0)) @ comps[:, k]))
        assert np.allclose(p_ref[:, k], sign * (ref - ref.mean(0)) @ comps[:, k], atol=1e-8)
        assert np.allclose(p_other[:, k], sign * (other - ref.mean(0)) @ comps[:, k], atol=1e-8)
    assert np.var(p_ref[:, 0]) > np.var(p_ref[:, 1])
    flipped = metrics.pca_projection(-ref + 0.0, n_components=2)[0]   # sign convention: reproducible projections
    assert np.allclose(np.abs(flipped), np.abs(p_ref), atol=1e-8)
    jitted = jax.jit(lambda a, b: metrics.pca_projection(a, b))(ref.astype(np.float32), other.astype(np.float32))
    assert np.allclose(jitted[1], p_other, atol=1e-3)
    with pytest.raises(ValueError, match="n_components"):
        metrics.pca_projection(ref, n_components=9)


def test_import_is_quiet():
    out = subprocess.run([sys.executable, "-W", "default", "-c", "import dmdjax.metrics"], capture_output=True,
                         text=True, check=True)
    assert out.stdout == "" and "JAXopt" not in out.stderr and "Warning" not in out.stderr, out.stderr


@pytest.mark.parametrize("method", ["exact", "sinkhorn"])
def test_delta_e_and_kappa_do_not_depend_on_the_scale(method):
    """A remapping student (true Delta_E ~ 19) in float32 at scales 1e-20 .. 1e19, eagerly and under jit: the
    same Delta_E and kappa to 1e-3 (Lemma C.2); squared distances at 1e-20 underflow, at 1e19 overflow, float32."""
    import jax
    from dmdjax.metrics import copying_index, pairing_inefficiency
    rng = np.random.default_rng(0)
    t = rng.normal(size=(48, 16)).astype(np.float32)
    s = t[rng.permutation(48)] + np.float32(0.3) * rng.normal(size=(48, 16)).astype(np.float32)
    ref_d, ref_k = float(pairing_inefficiency(t, s, method=method)), float(copying_index(t, s, method=method).kappa)
    assert ref_d > 1.0
    jd = jax.jit(lambda a, b: pairing_inefficiency(a, b, method=method))
    jk = jax.jit(lambda a, b: copying_index(a, b, method=method).kappa)
    for scale in (1e-20, 1e-10, 1e5, 1e15, 1e19):
        a, b = t * np.float32(scale), s * np.float32(scale)
        got = [float(pairing_inefficiency(a, b, method=method)), float(jd(a, b)),
               float(copying_index(a, b, method=method).kappa), float(jk(a, b))]
        np.testing.assert_allclose(got, [ref_d, ref_d, ref_k, ref_k], rtol=1e-3, err_msg=f"scale {scale}")
    energies = copying_index(t * np.float32(1e-20), s * np.float32(1e-20), method=method)
    assert float(energies.e_dt) == pytest.approx(float(copying_index(t, s, method=method).e_dt) * 1e-40, rel=1e-3)


def test_samples_below_the_dtypes_range_are_refused():
    from dmdjax.metrics import pairing_inefficiency
    t = np.random.default_rng(0).normal(size=(8, 4)).astype(np.float32)
    with pytest.raises(ValueError, match="smallest normal float32"):
        pairing_inefficiency(t * np.float32(1e-40), t[::-1] * np.float32(1e-40))
    assert float(pairing_inefficiency(t.astype(np.float64) * 1e-40, t[::-1].astype(np.float64) * 1e-40)) > 0
