"""Held-out quality: Frechet distance (closed forms), the cached digit classifier, held-out EDM loss and fit."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg
import scipy.stats

from dmdjax import classifier, diffusion, quality
from dmdjax.metrics.frechet import frechet_distance, frechet_distance_from_stats


def test_frechet_distance_matches_closed_forms():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(6, 6)), rng.normal(size=(6, 6))
    ca, cb, ma, mb = a @ a.T, b @ b.T, rng.normal(size=6), rng.normal(size=6)
    scipy_fd = np.sum((ma - mb) ** 2) + np.trace(ca + cb - 2 * scipy.linalg.sqrtm(ca @ cb).real)
    assert frechet_distance_from_stats(ma, ca, mb, cb) == pytest.approx(scipy_fd, rel=1e-9)
    x = rng.normal(size=(500, 6)) @ a
    assert frechet_distance(x, x) == pytest.approx(0.0, abs=1e-8)
    shift = np.array([3.0, 0, 0, 0, 0, 0])                    # a shift adds exactly ||shift||^2
    assert frechet_distance(x, x + shift) == pytest.approx(9.0, rel=1e-9)
    # Gaussians: FD of large samples -> W2^2 between N(0, I) and N(0, 4 I) in d = 3, i.e. 3 * (2 - 1)^2 = 3
    g = rng.normal(size=(200_000, 3))
    assert frechet_distance(g, 2 * rng.normal(size=(200_000, 3))) == pytest.approx(3.0, rel=0.02)
    with pytest.raises(ValueError, match="non-finite"):
        frechet_distance(np.full((4, 2), np.nan), x[:4, :2])


def _halves(n=96, r=8):
    """Two classes anyone can tell apart: the bright half is left (label 0) or right (label 1)."""
    labels = np.arange(n) % 2
    x = -np.ones((n, r, r, 1), np.float32)
    for i, y in enumerate(labels):
        x[i, :, (r // 2) * y:(r // 2) * (y + 1)] = 1.0
    return x + 0.1 * np.random.default_rng(1).normal(size=x.shape).astype(np.float32), labels


def test_classifier_cache_reused_and_corrupt_cache_retrained(tmp_path, monkeypatch):
    x, y = _halves()
    cfg = classifier.ClassifierConfig(steps=30, batch=16, width=4, feature_dim=8, num_classes=2)
    first = classifier.load_or_train("toy", x[:64], y[:64], x[64:], y[64:], cfg, cache_dir=tmp_path)
    assert first.trained and first.path.exists() and first.test_accuracy == 1.0
    feats = classifier.features(first, x)
    assert feats.shape == (96, 8)

    def no_training(*args, **kwargs):
        raise AssertionError("retrained although the cache is valid")

    real_train = classifier.train
    monkeypatch.setattr(classifier, "train", no_training)
    again = classifier.load_or_train("toy", x[:64], y[:64], x[64:], y[64:], cfg, cache_dir=tmp_path)
    assert not again.trained and again.test_accuracy == first.test_accuracy
    np.testing.assert_array_equal(classifier.features(again, x), feats)
    monkeypatch.setattr(classifier, "train", real_train)

    blob = first.path.read_bytes()
    for damaged in (blob[:len(blob) // 2], blob[:-10] + bytes(10)):    # truncated; corrupt payload
        first.path.write_bytes(damaged)
        with pytest.warns(RuntimeWarning, match="unusable"):
            redone = classifier.load_or_train("toy", x[:64], y[:64], x[64:], y[64:], cfg, cache_dir=tmp_path)
        assert redone.trained        # same seed: the same network again
        np.testing.assert_array_equal(classifier.features(redone, x), feats)
    assert not classifier.load_or_train("toy", x[:64], y[:64], x[64:], y[64:], cfg, cache_dir=tmp_path).trained
    other_seed = classifier.cache_path("toy", classifier.ClassifierConfig(seed=1), x[:64], y[:64], x[64:], y[64:],
                                       tmp_path)[0]
    assert other_seed != first.path and not list(tmp_path.rglob("*.tmp"))


class _Fixed:
    """A stand-in Denoiser: D(x; sigma) = scale * x (scale 0: predicts zero; scale 1: returns the noisy input)."""
    def __init__(self, scale):
        self.scale = scale

    def apply(self, variables, x, sigma, labels=None):
        return self.scale * x


def test_heldout_edm_loss_and_fit_against_direct_computation():
    sig = quality.sigma_grid(8)
    np.testing.assert_allclose(scipy.stats.norm.cdf((np.log(sig) - diffusion.P_MEAN) / diffusion.P_STD),
                               (np.arange(8) + 0.5) / 8, atol=1e-12)
    x = jnp.tanh(jax.random.normal(jax.random.PRNGKey(0), (10, 4, 4, 1)))
    zero = quality.heldout_edm_loss(_Fixed(0.0), {}, x, batch=3)
    expect = diffusion.loss_weight(sig) * float(jnp.mean(x ** 2))      # ||0 - x||^2 whatever the noise
    np.testing.assert_allclose(zero["loss_per_sigma"], expect, rtol=1e-5)
    assert zero["loss"] == pytest.approx(float(np.mean(expect)), rel=1e-5)
    ident = quality.heldout_edm_loss(_Fixed(1.0), {}, x, seed=3, batch=4)   # error = sigma * eps
    eps = [jax.random.normal(jax.random.fold_in(jax.random.PRNGKey(3), j), x.shape) for j in range(8)]
    np.testing.assert_allclose(ident["loss_per_sigma"], [diffusion.loss_weight(s) * s ** 2 * float(jnp.mean(e ** 2))
                                                         for s, e in zip(sig, eps)], rtol=1e-4)
    assert quality.heldout_edm_loss(_Fixed(1.0), {}, x, seed=3)["loss"] == ident["loss"]   # deterministic

    rng = np.random.default_rng(0)
    test = rng.normal(size=(20, 4, 4, 1))
    fit = quality.heldout_fit(test[::-1], test, test + 0.5)            # same set, shuffled; shifted floor
    assert fit["w2_test"] == pytest.approx(0.0, abs=1e-9) and fit["w2_train_floor"] == pytest.approx(2.0)
    with pytest.raises(ValueError, match="test and reference"):
        quality.heldout_fit(test, test[:5], test)
