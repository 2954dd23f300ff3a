import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dmdjax import diffusion
from dmdjax.nets import MLP, Denoiser

pytestmark = pytest.mark.minver   # the whole file runs at the minimum versions too (.ci/run)


def test_preconditioning_constants_at_sigma_max():
    c_skip, c_out, c_in, c_noise = (float(c) for c in diffusion.precond(80.0))
    assert c_skip == pytest.approx(3.906e-5, rel=1e-3)
    assert c_out == pytest.approx(0.49999, abs=1e-5)
    assert c_in == pytest.approx(0.0125, rel=1e-3)
    assert c_noise == pytest.approx(1.0955, abs=1e-4)


def test_preconditioning_identities():
    sigma = np.geomspace(0.002, 80, 17)
    c_skip, c_out, c_in, _ = (np.asarray(c, np.float64) for c in diffusion.precond(sigma))
    np.testing.assert_allclose(c_in ** 2 * (sigma ** 2 + 0.25), 1.0, rtol=1e-5)     # unit-variance input
    np.testing.assert_allclose(c_out ** 2, sigma ** 2 * c_skip, rtol=1e-5)             # c_out^2 = sigma^2 c_skip
    np.testing.assert_allclose(diffusion.loss_weight(sigma), 1 / sigma ** 2 + 1 / 0.25, rtol=1e-12)


def test_sigma_table_entries():
    t = diffusion.sigma_table(1000)
    assert t.shape == (1000,) and np.all(np.diff(t) > 0)
    assert t[0] == pytest.approx(0.002, rel=1e-6) and t[999] == pytest.approx(80.0, rel=1e-6)
    assert t[20] == pytest.approx(0.0032316, rel=1e-4)
    assert t[500] == pytest.approx(2.5265, rel=1e-4)
    assert t[980] == pytest.approx(72.054, rel=1e-4)


def test_karras_sampler_grid_k8():
    np.testing.assert_allclose(diffusion.karras_sigmas(8),
                               [80, 34.992, 13.699, 4.637, 1.287, 0.2675, 0.0352, 0.002], rtol=2e-3)
    assert list(diffusion.karras_sigmas(1)) == [80.0]
    with pytest.raises(ValueError):
        diffusion.karras_sigmas(0)


def test_training_sigma_distribution():
    s = np.asarray(diffusion.sample_train_sigma(jax.random.PRNGKey(0), 200_000))
    assert np.mean(np.log(s)) == pytest.approx(-1.2, abs=0.01)
    assert np.std(np.log(s)) == pytest.approx(1.2, abs=0.01)


def test_tweedie_score_of_gaussian():
    # data N(0, s^2 I): p_sigma = N(0, (s^2 + sigma^2) I), score = -x / (s^2 + sigma^2)
    s2, sigma = 0.3, jnp.array([0.5, 2.0])
    x = jax.random.normal(jax.random.PRNGKey(1), (2, 3))
    denoised = s2 / (s2 + sigma[:, None] ** 2) * x
    np.testing.assert_allclose(diffusion.score(denoised, x, sigma), -x / (s2 + sigma[:, None] ** 2), rtol=1e-5)


def test_denoiser_applies_preconditioning():
    model = Denoiser(MLP(features=(8,)))
    x = jax.random.normal(jax.random.PRNGKey(0), (3, 4))
    sigma = jnp.array([0.01, 1.0, 80.0])
    params = model.init(jax.random.PRNGKey(1), x, sigma)["params"]
    c_skip, c_out, c_in, c_noise = diffusion.precond(sigma[:, None])
    f = MLP(features=(8,)).apply({"params": params["net"]}, c_in * x, c_noise[:, 0])
    np.testing.assert_allclose(model.apply({"params": params}, x, sigma), c_skip * x + c_out * f, rtol=1e-5, atol=1e-6)


def test_edm_loss_weighting_matches_manual():
    key = jax.random.PRNGKey(3)
    x = jax.random.normal(jax.random.PRNGKey(4), (5, 2))
    zero = lambda x_noisy, sigma, labels: jnp.zeros_like(x_noisy)   # D = 0 -> loss = mean(lambda x^2)
    k_sigma, _ = jax.random.split(key)
    sigma = diffusion.sample_train_sigma(k_sigma, 5)
    expected = jnp.mean(diffusion.loss_weight(sigma)[:, None] * x ** 2)
    np.testing.assert_allclose(diffusion.edm_loss(zero, x, key), expected, rtol=1e-5)
