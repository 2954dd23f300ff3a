"""The EDM diffusion core (Karras et al. 2022), as used by the paper (Sec. 2.1, App. D).

Variance-exploding noise, x_sigma = x + sigma * eps, with sigma(t) = t. All functions are pure and work on
jax or numpy arrays. Constants follow EDM / DMD2 (REFERENCE.md sections 1.3, 2.1, 2.2).
"""
from __future__ import annotations

import inspect

import jax
import jax.numpy as jnp
import numpy as np

SIGMA_DATA = 0.5
SIGMA_MIN = 0.002
SIGMA_MAX = 80.0
RHO = 7.0
P_MEAN, P_STD = -1.2, 1.2        # EDM training: ln sigma ~ N(P_MEAN, P_STD^2)
NUM_TRAIN_TIMESTEPS = 1000       # DMD2's sigma table size
DM_MIN_INDEX, DM_MAX_INDEX = 20, 980   # DM loss draws table indices from [2%, 98%], inclusive


def precond(sigma, sigma_data: float = SIGMA_DATA):
    """EDM preconditioning coefficients (c_skip, c_out, c_in, c_noise) for noise level `sigma` (any shape).

    D(x; sigma) = c_skip x + c_out F(c_in x, c_noise); c_noise = ln(sigma) / 4.
    """
    sigma = jnp.asarray(sigma, jnp.float32)
    sd2 = sigma_data ** 2
    c_skip = sd2 / (sigma ** 2 + sd2)
    c_out = sigma * sigma_data / jnp.sqrt(sigma ** 2 + sd2)
    c_in = 1.0 / jnp.sqrt(sigma ** 2 + sd2)
    c_noise = jnp.log(sigma) / 4.0
    return c_skip, c_out, c_in, c_noise


def loss_weight(sigma, sigma_data: float = SIGMA_DATA):
    """EDM loss weight lambda(sigma) = (sigma^2 + sigma_data^2) / (sigma sigma_data)^2 (= 1/sigma^2 + 1/sigma_data^2)."""
    return (sigma ** 2 + sigma_data ** 2) / (sigma * sigma_data) ** 2


def karras_sigmas(n: int, sigma_min: float = SIGMA_MIN, sigma_max: float = SIGMA_MAX, rho: float = RHO) -> np.ndarray:
    """Karras schedule, decreasing: sigma_i = (smax^(1/rho) + i/(n-1) (smin^(1/rho) - smax^(1/rho)))^rho, i < n.

    Returns float64 numpy, shape (n,). n = 1 gives [sigma_max] (EDM's formula is 0/0 there).
    """
    if n < 1:
        raise ValueError(f"karras_sigmas needs n >= 1, got {n}")
    ramp = np.linspace(0.0, 1.0, n) if n > 1 else np.zeros(1)
    hi, lo = sigma_max ** (1.0 / rho), sigma_min ** (1.0 / rho)
    return (hi + ramp * (lo - hi)) ** rho


def sigma_table(n: int = NUM_TRAIN_TIMESTEPS) -> np.ndarray:
    """DMD2's training sigma table, increasing: index 0 -> 0.002, index n-1 -> 80. float32, shape (n,)."""
    return karras_sigmas(n)[::-1].astype(np.float32).copy()


def sample_train_sigma(key, batch: int):
    """EDM training noise levels: ln sigma ~ N(-1.2, 1.2^2). Shape (batch,)."""
    return jnp.exp(P_MEAN + P_STD * jax.random.normal(key, (batch,)))


def expand(sigma, x):
    """Reshape per-sample `sigma` (batch,) so that it broadcasts against x (batch, ...)."""
    return jnp.reshape(sigma, (-1,) + (1,) * (x.ndim - 1))


def denoise(denoise_fn, x, sigma, labels=None):
    """D(x; sigma[, labels]): `denoise_fn(x, sigma, labels)` when there are labels; without, `denoise_fn(x, sigma)`
    if the function can be called so, else `denoise_fn(x, sigma, None)`.

    So an unconditional user's denoiser needs no labels argument. x: (B, ...), sigma: (B,). Returns D, like x.
    """
    if labels is not None:
        return denoise_fn(x, sigma, labels)
    try:
        inspect.signature(denoise_fn).bind(x, sigma)
    except TypeError:            # a required third (labels) argument
        return denoise_fn(x, sigma, None)
    except ValueError:           # no introspectable signature (some builtins): call it as documented
        pass
    return denoise_fn(x, sigma)


def edm_loss(denoise_fn, x, key, labels=None):
    """EDM denoising loss (REFERENCE 2.2), mean over batch and elements.

    denoise_fn(x_noisy, sigma) -> D, or denoise_fn(x_noisy, sigma, labels) when labels are given; x: (B, ...)
    clean data. Returns a scalar.
    """
    k_sigma, k_noise = jax.random.split(key)
    sigma = sample_train_sigma(k_sigma, x.shape[0])
    s = expand(sigma, x)
    noisy = x + s * jax.random.normal(k_noise, x.shape, x.dtype)
    d = denoise(denoise_fn, noisy, sigma, labels)
    return jnp.mean(loss_weight(s) * (d - x) ** 2)


def score(denoised, x, sigma):
    """Tweedie: the score grad_x log p_sigma(x) = (D(x; sigma) - x) / sigma^2, sigma shaped (batch,)."""
    return (denoised - x) / expand(sigma, x) ** 2
