"""The paper's low-dimensional toys, embedded in R^4 (Sec. 3.3, App. A, Fig. 2 and 7).

Each sampler is pure and jittable: `sample(key, n) -> (n, 4)` float32, the 2-D structure in the first two
coordinates and zeros elsewhere (the GMM is isotropic in all four). Units are the paper's, not rescaled to
sigma_data = 0.5: per-coordinate std of the first two coordinates is about 1.15 (chessboard), 0.87 / 0.62
(moons), 1.43 (GMM). EDM preconditioning is then slightly off the variance it assumes, which it tolerates
(c_skip is only a skip weight); `scale` lets a user rescale all three to other units.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

DIM = 4
DATASETS = ("chessboard", "moons", "gmm")


def _embed(xy, dim: int = DIM):
    return jnp.concatenate([xy, jnp.zeros((xy.shape[0], dim - 2), xy.dtype)], axis=1)


def chessboard(key, n: int):
    """4x4 chessboard on [-2, 2]^2: uniform on the 8 unit squares with even (column + row)."""
    k_col, k_row, k_u = jax.random.split(key, 3)
    col = jax.random.randint(k_col, (n,), 0, 4)
    row = 2 * jax.random.randint(k_row, (n,), 0, 2) + col % 2   # rows with the same parity as the column
    u = jax.random.uniform(k_u, (n, 2))
    xy = jnp.stack([col, row], axis=1).astype(jnp.float32) + u - 2.0
    return _embed(xy)


def moons(key, n: int, noise: float = 0.05):
    """Double moons (scikit-learn's construction, centred and scaled by 1.5), Gaussian jitter `noise` x 1.5."""
    k_side, k_t, k_eps = jax.random.split(key, 3)
    side = jax.random.bernoulli(k_side, 0.5, (n,))
    t = jnp.pi * jax.random.uniform(k_t, (n,))
    upper = jnp.stack([jnp.cos(t), jnp.sin(t)], axis=1)
    lower = jnp.stack([1.0 - jnp.cos(t), 0.5 - jnp.sin(t)], axis=1)
    xy = jnp.where(side[:, None], upper, lower) + noise * jax.random.normal(k_eps, (n, 2))
    xy = 1.5 * (xy - jnp.array([0.5, 0.25]))
    return _embed(xy)


def gmm(key, n: int, num_components: int = 32, radius: float = 2.0, std: float = 0.2):
    """32 isotropic 4-D Gaussians (std 0.2), means on a circle of radius 2 in the first two coordinates."""
    k_c, k_eps = jax.random.split(key)
    angle = 2 * jnp.pi * jax.random.randint(k_c, (n,), 0, num_components) / num_components
    means = _embed(radius * jnp.stack([jnp.cos(angle), jnp.sin(angle)], axis=1))
    return means + std * jax.random.normal(k_eps, (n, DIM))


_SAMPLERS = {"chessboard": chessboard, "moons": moons, "gmm": gmm}


def get_sampler(name: str, scale: float = 1.0):
    """`sample(key, n) -> (n, 4)` for a toy by name; `scale` multiplies the samples."""
    if name not in _SAMPLERS:
        raise ValueError(f"unknown toy dataset {name!r}; choose one of {', '.join(DATASETS)}")
    fn = _SAMPLERS[name]
    return lambda key, n: scale * fn(key, n)
