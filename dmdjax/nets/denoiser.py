"""The one denoiser abstraction: an EDM-preconditioned network D(x; sigma, y) (REFERENCE 2.1).

Teacher, fake score and generator are the same `Denoiser` module with different params; the generator is
G(z) = D(80 z; 80) (DMD2's `conditioning_sigma`). `net` is any raw network F(x_in, c_noise, labels) that maps
x_in (batch, ...) to an array of the same shape: `MLP` for the toys, `DhariwalUNet` for images.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from dmdjax import diffusion


class Denoiser(nn.Module):
    """D(x; sigma, y) = c_skip x + c_out F(c_in x, c_noise, y). x: (B, ...), sigma: (B,) or scalar."""
    net: nn.Module
    sigma_data: float = diffusion.SIGMA_DATA

    def __call__(self, x, sigma, labels=None, train: bool = False, return_bottleneck: bool = False):
        """return_bottleneck: instead of D, the raw network's bottleneck features of F(c_in x, c_noise, y)
        (DMD2's `return_bottleneck=True`, REFERENCE 1.7): (B, H', W', C') for the ADM, (B, width) for the MLP."""
        x = jnp.asarray(x, jnp.float32)
        sigma = jnp.broadcast_to(jnp.asarray(sigma, jnp.float32), (x.shape[0],))
        c_skip, c_out, c_in, c_noise = diffusion.precond(diffusion.expand(sigma, x), self.sigma_data)
        if return_bottleneck:
            return self.net(c_in * x, c_noise.reshape(-1), labels, train=train, return_bottleneck=True)
        f = self.net(c_in * x, c_noise.reshape(-1), labels, train=train)
        return c_skip * x + c_out * f.astype(jnp.float32)


def denoise_fn(model: Denoiser, params: Any):
    """Close over params: returns denoise(x, sigma, labels=None) -> D(x; sigma, labels), a pure function."""
    def denoise(x, sigma, labels=None):
        return model.apply({"params": params}, x, sigma, labels)
    return denoise
