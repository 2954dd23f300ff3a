"""The paper's toy network (Sec. 3.3, App. D): an MLP with `DEPTH` hidden layers of `WIDTH` units and a 32-dim
Fourier embedding of the noise level, used as the raw network F inside `Denoiser`."""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

WIDTH = 384                  # units per hidden layer of the paper's toy MLP (App. D)
DEPTH = 5                    # hidden layers
FEATURES = (WIDTH,) * DEPTH  # `MLP.features` by default


def fourier_embedding(c_noise, dim: int = 32, max_freq: float = 64.0):
    """[cos(f_i c), sin(f_i c)] with dim/2 frequencies f_i geometric in [1, max_freq]. c_noise: (B,) -> (B, dim).

    c_noise = ln(sigma)/4 spans about [-1.55, 1.10] for sigma in [0.002, 80], so frequencies from 1 to 64
    resolve both coarse and fine noise levels (EDM's ADM embedding uses 1 ... 1e-4 instead).
    """
    freqs = jnp.geomspace(1.0, max_freq, dim // 2)
    arg = c_noise[:, None] * freqs[None, :]
    return jnp.concatenate([jnp.cos(arg), jnp.sin(arg)], axis=-1)


class MLP(nn.Module):
    """F(x_in, c_noise): x_in (B, d) -> (B, d). Input [x_in, emb(c_noise)] -> hidden SiLU layers -> linear.

    `dtype` is the computation dtype of the hidden layers (params and output stay float32).
    `return_bottleneck=True` returns the last hidden layer (B, features[-1]) instead (the GAN head's input)."""
    features: Sequence[int] = FEATURES
    embed_dim: int = 32
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, c_noise, labels=None, train: bool = False, return_bottleneck: bool = False):
        if labels is not None:
            raise ValueError("MLP is unconditional; pass labels=None")
        h = jnp.concatenate([x, fourier_embedding(c_noise, self.embed_dim)], axis=-1)
        for width in self.features:
            h = nn.silu(nn.Dense(width, dtype=self.dtype)(h))
        if return_bottleneck:   # the last hidden layer (B, features[-1]): the GAN head's input (dmdjax.gan)
            return h.astype(jnp.float32)
        return nn.Dense(x.shape[-1], dtype=self.dtype)(h).astype(jnp.float32)
