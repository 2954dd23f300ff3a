"""The calibrated copying index (dmdjax.metrics.copying) and bad input under jit, against independent
computations: scipy's cdist and linear_sum_assignment, and an average over random permutations."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment
from scipy.spatial.distance import cdist

from dmdjax import metrics


def shrunk_pairs(n=200, d=64, scale=0.05, remap=False, seed=0):
    """Teacher ~ N(0, I); a student collapsed to `scale` of the spread that keeps (or permutes) the pairs."""
    rng = np.random.default_rng(seed)
    t = rng.standard_normal((n, d))
    s = scale * (t[rng.permutation(n)] if remap else t) + 0.01 * scale * rng.standard_normal((n, d))
    return t.astype(np.float32), s.astype(np.float32)


def brute_index(t, s):
    c = cdist(t.astype(np.float64), s.astype(np.float64), "sqeuclidean")
    rows, cols = linear_sum_assignment(c)
    e_ot, e_dt, e_null = c[rows, cols].mean(), np.trace(c) / len(t), c.mean()
    return e_dt / e_ot - 1, e_null / e_ot - 1, (e_dt / e_ot - 1) / (e_null / e_ot - 1)


@pytest.mark.parametrize("remap", [False, True])
def test_index_matches_brute_force_and_random_pairings(remap):
    t, s = shrunk_pairs(remap=remap)
    res = metrics.copying_index(t, s)
    delta_e, delta_null, kappa = brute_index(t, s)
    assert np.isclose(res.delta_e, delta_e, rtol=1e-6) and np.isclose(res.delta_e_null, delta_null, rtol=1e-6)
    assert np.isclose(res.kappa, kappa, rtol=1e-6) and bool(res.reliable)
    # delta_e_null is the mean Delta_E of uniformly random pairings (the closed form needs no sampling)
    rng = np.random.default_rng(1)
    sampled = np.mean([metrics.e_dt(t, s[rng.permutation(len(s))]) for _ in range(400)]) / res.e_ot - 1
    assert abs(sampled - res.delta_e_null) < 0.02 * res.delta_e_null
    # a collapsed student: Delta_E alone is small either way, kappa tells them apart
    assert res.delta_e < 0.2
    if remap:
        assert 0.85 < res.kappa < 1.15
    else:
        assert res.kappa < 0.02


@pytest.mark.parametrize("method", ["exact", "sinkhorn"])
def test_index_under_jit_matches_eager(method):
    t, s = shrunk_pairs(n=120, d=16, scale=0.3, remap=True, seed=3)
    s[:60] = 0.3 * t[:60]                                  # half copied, half remapped: kappa ~ 1/2
    eager = metrics.copying_index(t, s, method=method)
    jitted = jax.jit(lambda a, b: metrics.copying_index(a, b, method=method))(jnp.asarray(t), jnp.asarray(s))
    for name in ("delta_e", "delta_e_null", "kappa"):
        assert np.isclose(float(getattr(jitted, name)), float(getattr(eager, name)), rtol=2e-3), name
    exact = metrics.copying_index(t, s)
    assert abs(float(eager.kappa) - float(exact.kappa)) < 0.05
    assert 0.3 < float(exact.kappa) < 0.7


def test_collapsed_to_a_point_is_flagged_not_a_number():
    t, _ = shrunk_pairs(n=50, d=8)
    s = np.tile(t.mean(0, keepdims=True), (50, 1)) + 1e-4 * np.random.default_rng(2).standard_normal((50, 8))
    res = metrics.copying_index(t, s.astype(np.float32))
    assert res.delta_e_null < metrics.copying.MIN_NULL and not bool(res.reliable)
    point = metrics.copying_index(t, np.tile(t[:1], (50, 1)))          # every student sample identical
    assert np.isnan(point.kappa) and not bool(point.reliable)


def test_permuted_copy_has_infinite_delta_e_but_finite_kappa():
    t, _ = shrunk_pairs(n=30, d=4)
    s = t[np.roll(np.arange(30), 1)]                       # the same set, every pair moved: E_OT = 0 < E_DT
    res = metrics.copying_index(t, s)
    assert np.isinf(res.delta_e) and np.isinf(res.delta_e_null)
    assert np.isclose(res.kappa, metrics.e_dt(t, s) / metrics.e_null(t, s))


@pytest.mark.parametrize("method", ["exact", "sinkhorn"])
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nonfinite_samples_give_nan_under_jit(method, bad):
    t, s = shrunk_pairs(n=40, d=8, scale=1.0)
    s[3, 2] = bad
    with pytest.raises(ValueError, match="NaN or inf"):
        metrics.pairing_inefficiency(t, s, method=method)
    jit = lambda f: jax.jit(f)(jnp.asarray(t), jnp.asarray(s))
    assert np.isnan(jit(lambda a, b: metrics.pairing_inefficiency(a, b, method=method)))
    te = jit(lambda a, b: metrics.transport_energies(a, b, method=method))
    assert np.isnan(te.e_dt) and np.isnan(te.e_ot) and np.isnan(te.delta_e)
    res = jit(lambda a, b: metrics.copying_index(a, b, method=method))
    assert np.isnan(res.kappa) and np.isnan(res.delta_e) and not bool(res.reliable)


def test_ci_reports_nonfinite_replicates_instead_of_dropping_them():
    rng = np.random.default_rng(0)
    t = rng.standard_normal((8, 3))
    s = t.copy()
    s[[0, 1]] = s[[1, 0]]                                   # half-samples holding seeds 0 and 1 only: E_OT = 0 < E_DT
    ci = metrics.pairing_inefficiency_ci(t, s, n_resamples=200, seed=0)
    assert ci.n_nonfinite == int(np.sum(~np.isfinite(ci.replicates))) > 0
    assert np.isnan(ci.std_error) and np.isnan(ci.low) and ci.high == np.inf
    whole = metrics.pairing_inefficiency_ci(t, t[np.roll(np.arange(8), 1)], n_resamples=20)
    assert whole.estimate == np.inf and np.isnan(whole.std_error) and whole.high == np.inf


def test_copying_index_ci_brackets_and_separates_copying_from_remapping():
    t, s_copy = shrunk_pairs(n=200, d=32, scale=0.1, seed=4)
    _, s_remap = shrunk_pairs(n=200, d=32, scale=0.1, remap=True, seed=4)
    copy = metrics.copying_index_ci(t, s_copy, n_resamples=30, seed=0)
    remap = metrics.copying_index_ci(t, s_remap, n_resamples=30, seed=0)
    for ci in (copy, remap):
        assert ci.kappa.estimate == pytest.approx(float(ci.index.kappa))
        assert ci.kappa.low <= ci.kappa.estimate <= ci.kappa.high and ci.kappa.n_nonfinite == 0
        assert ci.delta_e.low <= ci.delta_e.estimate <= ci.delta_e.high and ci.kappa.replicates.shape == (30,)
    assert copy.kappa.high < remap.kappa.low and remap.kappa.low < remap.kappa.high   # they tell the two apart
    again = metrics.copying_index_ci(t, s_remap, n_resamples=30, seed=0)
    assert np.array_equal(again.kappa.replicates, remap.kappa.replicates)
