"""One sampler for every teacher: EDM's deterministic Heun sampler Phi_K (REFERENCE 2.4, paper Sec. 3, Fig. 1).

Phi_K(z) integrates the probability-flow ODE (Eq. 1) from sigma_max = 80 to 0 in K steps on the Karras grid:
Heun (second order) on steps 0..K-2, plain Euler on the last step 0.002 -> 0, i.e. 2K - 1 network evaluations.
The last Euler step to sigma = 0 equals D(x; sigma_{K-1}) exactly, which is how it is computed here, so
Phi_1(z) = D(80 z; 80) bit for bit: the DMD generator at initialisation.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from dmdjax import diffusion


def sampler_sigmas(k: int) -> np.ndarray:
    """t_0 = 80 > ... > t_{K-1} = 0.002 (Karras, rho 7), then t_K = 0. float64, shape (K + 1,)."""
    return np.append(diffusion.karras_sigmas(k), 0.0)


def phi_k(denoise_fn, noise, k: int, labels=None):
    """Phi_K(z): the teacher's K-step deterministic Heun sample from unit noise.

    denoise_fn(x, sigma) -> D, or denoise_fn(x, sigma, labels) when labels are given, with sigma shaped (batch,);
    noise: (batch, ...) standard normal.
    The sampler starts from 80 * noise and integrates in the noise's dtype: float64 noise (under
    `jax_enable_x64`) in float64, as EDM's sampler does (x and sigma reach the denoiser in float64; `Denoiser`
    then runs its network in float32, as EDM's EDMPrecond does); any other noise in float32. Returns an array
    shaped like `noise`, in that dtype.
    """
    if k < 1:
        raise ValueError(f"phi_k needs k >= 1 steps, got {k}")
    dtype = jnp.float64 if jnp.asarray(noise).dtype == jnp.float64 else jnp.float32
    t = jnp.asarray(sampler_sigmas(k), dtype)
    batch = noise.shape[0]
    x = t[0] * jnp.asarray(noise, dtype)

    def denoise(x, sigma):        # D's output promoted to the integration dtype (EDM: net(x, t).to(float64))
        return diffusion.denoise(denoise_fn, x, jnp.full((batch,), sigma, dtype), labels).astype(dtype)

    def d(x, sigma):
        return (x - denoise(x, sigma)) / sigma

    def heun_step(x, ts):
        t_cur, t_next = ts
        d_cur = d(x, t_cur)
        x_euler = x + (t_next - t_cur) * d_cur
        return x + (t_next - t_cur) * 0.5 * (d_cur + d(x_euler, t_next)), None

    if k > 1:
        x, _ = jax.lax.scan(heun_step, x, (t[:k - 1], t[1:k]))
    # Final Euler step t_{K-1} -> 0: x + (0 - t)(x - D)/t = D(x; t_{K-1}).
    return denoise(x, t[k - 1])
