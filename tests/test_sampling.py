"""Phi_K against EDM's Heun recursion and the exact ODE solution for Gaussian data (analytic denoiser)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dmdjax import diffusion, sampling

pytestmark = pytest.mark.minver   # the whole file runs at the minimum versions too (.ci/run)

MU, S = 0.7, 0.5   # data N(MU, S^2 I)


def gaussian_denoiser(x, sigma, labels=None):
    s2 = diffusion.expand(jnp.asarray(sigma), x) ** 2
    return (S ** 2 * x + s2 * MU) / (S ** 2 + s2)


def exact_flow(x_start, sigma_start, sigma_end):
    """Probability-flow ODE solution for Gaussian data: x - MU scales with sqrt(S^2 + sigma^2)."""
    return MU + (x_start - MU) * np.sqrt(S ** 2 + sigma_end ** 2) / np.sqrt(S ** 2 + sigma_start ** 2)


def edm_heun_reference(z, k):
    """EDM's edm_sampler (generate.py) with S_churn = 0, in float64 numpy, following its loop literally."""
    t = np.append(diffusion.karras_sigmas(k), 0.0)
    x = z.astype(np.float64) * t[0]
    den = lambda x, s: (S ** 2 * x + s ** 2 * MU) / (S ** 2 + s ** 2)
    for i in range(k):
        d = (x - den(x, t[i])) / t[i]
        x_next = x + (t[i + 1] - t[i]) * d
        if i < k - 1:
            d_prime = (x_next - den(x_next, t[i + 1])) / t[i + 1]
            x_next = x + (t[i + 1] - t[i]) * (0.5 * d + 0.5 * d_prime)
        x = x_next
    return x


@pytest.fixture(scope="module")
def z():
    return np.asarray(jax.random.normal(jax.random.PRNGKey(0), (64, 3)))


@pytest.mark.parametrize("k", [1, 2, 8, 32])
def test_matches_edm_heun_recursion(z, k):
    ref = edm_heun_reference(z, k)
    # float32 vs float64: agree to ~1e-5 of the output's scale (K = 2 takes one huge step from 80 * z)
    np.testing.assert_allclose(sampling.phi_k(gaussian_denoiser, z, k), ref, rtol=0, atol=2e-5 * np.abs(ref).max())


def test_phi_1_is_one_denoiser_call_at_sigma_max(z):
    calls = []

    def counting(x, sigma, labels=None):
        calls.append(sigma)
        return gaussian_denoiser(x, sigma)

    out = sampling.phi_k(counting, z, 1)
    assert len(calls) == 1
    np.testing.assert_array_equal(out, gaussian_denoiser(80.0 * jnp.asarray(z), jnp.full((64,), 80.0)))


@pytest.mark.parametrize("k", [1, 4, 8])
def test_network_evaluations(z, k):
    calls = []
    with jax.disable_jit():   # run the scan as a Python loop so that every evaluation is counted
        sampling.phi_k(lambda x, s, y=None: calls.append(float(s[0])) or gaussian_denoiser(x, s), z, k)
    assert len(calls) == 2 * k - 1
    assert calls[0] == 80.0 and calls[-1] == pytest.approx(diffusion.karras_sigmas(k)[-1])


def test_second_order_convergence(z):
    # Reference: exact flow from 80 to sigma_{K-1} = 0.002, then the same final Euler step (= D(x; 0.002)).
    errors, ks = [], [4, 8, 16, 32]
    for k in ks:
        x_end = exact_flow(80.0 * z.astype(np.float64), 80.0, diffusion.SIGMA_MIN)
        exact = (S ** 2 * x_end + diffusion.SIGMA_MIN ** 2 * MU) / (S ** 2 + diffusion.SIGMA_MIN ** 2)
        errors.append(np.max(np.abs(edm_heun_reference(z, k) - exact)))
    slope = np.polyfit(np.log(np.array(ks) - 1.0), np.log(errors), 1)[0]
    assert errors[-1] < errors[0] / 30
    assert slope < -1.8, f"Heun should converge at second order, got slope {slope:.2f} ({errors})"
    # and the jitted float32 sampler reaches the same accuracy at K = 32
    np.testing.assert_allclose(sampling.phi_k(gaussian_denoiser, z, 32), exact, atol=errors[-1] + 1e-4)


def test_sampler_grid_and_errors():
    np.testing.assert_allclose(sampling.sampler_sigmas(8)[[0, 7, 8]], [80.0, 0.002, 0.0])
    with pytest.raises(ValueError, match="k >= 1"):
        sampling.phi_k(gaussian_denoiser, np.zeros((2, 2)), 0)


def test_trailing_shape_and_jit(z):
    imgs = jax.random.normal(jax.random.PRNGKey(1), (4, 5, 5, 2))
    out = jax.jit(lambda n: sampling.phi_k(gaussian_denoiser, n, 8))(imgs)
    assert out.shape == imgs.shape and out.dtype == jnp.float32


def test_user_denoisers_need_no_labels_argument():
    """phi_k, edm_loss, dm_gradient and fake_score_loss call fn(x, sigma) without labels, fn(x, sigma, y) with;
    fn(x, sigma, labels) with a required labels argument still works without labels (gets None)."""
    from dmdjax import distill
    x = jax.random.normal(jax.random.PRNGKey(0), (4, 3))
    sigma, eps = jnp.full((4,), 0.5), jax.random.normal(jax.random.PRNGKey(1), (4, 3))
    two = lambda x, sigma: gaussian_denoiser(x, sigma)            # an unconditional user's denoiser
    seen = []

    def three(x, sigma, labels):                                  # a conditional one: must receive the labels
        seen.append(labels)
        return gaussian_denoiser(x, sigma) + jnp.sum(labels, -1, keepdims=True)

    y = jnp.ones((4, 2))
    shifted = lambda x, sigma, labels=None: gaussian_denoiser(x, sigma) + 2.0
    calls = [
        lambda fn, y: sampling.phi_k(fn, x, 3, y),
        lambda fn, y: diffusion.edm_loss(fn, x, jax.random.PRNGKey(2), y),
        lambda fn, y: distill.dm_gradient(fn, shifted if y is not None else gaussian_denoiser, x, sigma, eps, y),
        lambda fn, y: distill.fake_score_loss(fn, x, sigma, eps, y),
    ]
    for call in calls:
        np.testing.assert_allclose(call(two, None), call(gaussian_denoiser, None), rtol=1e-6)
        seen.clear()
        np.testing.assert_allclose(call(three, y), call(shifted, y), rtol=1e-5)
        assert seen and all(s is y for s in seen)
    required = lambda x, sigma, labels: gaussian_denoiser(x, sigma) + (labels is None)
    for call in calls:
        np.testing.assert_allclose(call(required, None), call(lambda x, s: gaussian_denoiser(x, s) + 1.0, None),
                                   rtol=1e-6)


X64 = """
import json, jax, numpy as np
from tests.test_sampling import edm_heun_reference, gaussian_denoiser
from dmdjax import sampling
assert jax.config.jax_enable_x64
z = np.random.default_rng(0).normal(size=(64, 3))
out = {}
for k in (2, 8):
    ref = edm_heun_reference(z, k)
    x64, x32 = sampling.phi_k(gaussian_denoiser, z, k), sampling.phi_k(gaussian_denoiser, z.astype(np.float32), k)
    out[k] = {"dtypes": [str(x64.dtype), str(x32.dtype)], "err64": float(np.abs(np.asarray(x64) - ref).max()),
              "err32": float(np.abs(np.asarray(x32, np.float64) - ref).max())}
print("RESULT" + json.dumps(out))
"""


def test_float64_noise_integrates_in_float64_as_edm_does():
    """Under jax_enable_x64, float64 noise gives a float64 Phi_K integrated in float64 (EDM's edm_sampler), the
    same analytic denoiser on both paths: float64 matches EDM's float64 recursion to rounding, float32 does not."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, "-c", X64], capture_output=True, text=True, timeout=120, cwd=root,
                          env=dict(os.environ, JAX_ENABLE_X64="1", JAX_PLATFORMS="cpu", PYTHONPATH=str(root)))
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.split("RESULT", 1)[1])
    for k, r in out.items():
        assert r["dtypes"] == ["float64", "float32"], k
        assert r["err64"] < 1e-9 < r["err32"], (k, r)
