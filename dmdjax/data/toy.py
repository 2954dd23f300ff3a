"""The paper's low-dimensional toys, embedded in R^4 (Sec. 3.3, App. A, Fig. 2 and 7), or in R^D (the dimension sweep).

Each sampler is pure and jittable: `sample(key, n) -> (n, 4)` float32, the 2-D structure in the first two
coordinates and zeros elsewhere (the GMM is isotropic in all four).

Dimension sweep: every toy has a native sample in R^d0 (chessboard and moons: their 2-D structure, d0 = 2; GMM:
the paper's 4-D mixture, d0 = 4). `get_sampler(name, dim=D, embed_seed=s)` maps it into R^D, D >= d0, by a
fixed D x d0 matrix with orthonormal columns (QR of a Gaussian matrix seeded by s): an isometry, so every
distance, hence E_DT, E_OT and Delta_E of the native data, is unchanged, and only the ambient dimension D that
the networks see grows. D = 4 gives the paper's toy up to a rotation (the MLP is not rotation-invariant, so
results can differ from the zero-padded default). Units are the paper's, not rescaled to
sigma_data = 0.5: per-coordinate std of the first two coordinates is about 1.15 (chessboard), 0.87 / 0.62
(moons), 1.43 (GMM). EDM preconditioning is then slightly off the variance it assumes, which it tolerates
(c_skip is only a skip weight); `scale` lets a user rescale all three to other units.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

DIM = 4
DATASETS = ("chessboard", "moons", "gmm")


def _embed(xy, dim: int = DIM):
    return jnp.concatenate([xy, jnp.zeros((xy.shape[0], dim - xy.shape[1]), xy.dtype)], axis=1)


def _chessboard_2d(key, n: int):
    k_col, k_row, k_u = jax.random.split(key, 3)
    col = jax.random.randint(k_col, (n,), 0, 4)
    row = 2 * jax.random.randint(k_row, (n,), 0, 2) + col % 2   # rows with the same parity as the column
    u = jax.random.uniform(k_u, (n, 2))
    return jnp.stack([col, row], axis=1).astype(jnp.float32) + u - 2.0


def _moons_2d(key, n: int, noise: float = 0.05):
    k_side, k_t, k_eps = jax.random.split(key, 3)
    side = jax.random.bernoulli(k_side, 0.5, (n,))
    t = jnp.pi * jax.random.uniform(k_t, (n,))
    upper = jnp.stack([jnp.cos(t), jnp.sin(t)], axis=1)
    lower = jnp.stack([1.0 - jnp.cos(t), 0.5 - jnp.sin(t)], axis=1)
    xy = jnp.where(side[:, None], upper, lower) + noise * jax.random.normal(k_eps, (n, 2))
    return 1.5 * (xy - jnp.array([0.5, 0.25]))


def _gmm_4d(key, n: int, num_components: int = 32, radius: float = 2.0, std: float = 0.2):
    k_c, k_eps = jax.random.split(key)
    angle = 2 * jnp.pi * jax.random.randint(k_c, (n,), 0, num_components) / num_components
    means = _embed(radius * jnp.stack([jnp.cos(angle), jnp.sin(angle)], axis=1), 4)
    return means + std * jax.random.normal(k_eps, (n, 4))


def chessboard(key, n: int):
    """4x4 chessboard on [-2, 2]^2: uniform on the 8 unit squares with even (column + row)."""
    return _embed(_chessboard_2d(key, n))


def moons(key, n: int, noise: float = 0.05):
    """Double moons (scikit-learn's construction, centred and scaled by 1.5), Gaussian jitter `noise` x 1.5."""
    return _embed(_moons_2d(key, n, noise))


def gmm(key, n: int, num_components: int = 32, radius: float = 2.0, std: float = 0.2):
    """32 isotropic 4-D Gaussians (std 0.2), means on a circle of radius 2 in the first two coordinates."""
    return _gmm_4d(key, n, num_components, radius, std)


_NATIVE = {"chessboard": (_chessboard_2d, 2), "moons": (_moons_2d, 2), "gmm": (_gmm_4d, 4)}
NATIVE_DIM = {name: d for name, (_, d) in _NATIVE.items()}


def embedding_matrix(dim: int, native_dim: int, seed: int) -> np.ndarray:
    """A (dim, native_dim) float32 matrix with orthonormal columns: Q of the QR decomposition of a Gaussian matrix
    drawn with numpy's default_rng(seed), column signs fixed so that diag(R) > 0 (Q is then unique)."""
    if dim < native_dim:
        raise ValueError(f"cannot embed R^{native_dim} isometrically into R^{dim}: dim must be >= {native_dim}")
    g = np.random.default_rng(seed).standard_normal((dim, native_dim))
    q, r = np.linalg.qr(g)
    return (q * np.sign(np.diag(r))[None, :]).astype(np.float32)


def get_sampler(name: str, scale: float = 1.0, dim: int = DIM, embed_seed: int | None = None):
    """`sample(key, n) -> (n, dim)` for a toy by name; `scale` multiplies the samples.

    embed_seed None: the native sample zero-padded to `dim` (dim = 4: the paper's toys, the default).
    embed_seed s: the native sample times `embedding_matrix(dim, d0, s)`^T, an isometric embedding in R^dim.
    """
    if name not in _NATIVE:
        raise ValueError(f"unknown toy dataset {name!r}; choose one of {', '.join(DATASETS)}")
    fn, d0 = _NATIVE[name]
    if dim < d0:
        raise ValueError(f"toy {name!r} is {d0}-dimensional; dim must be >= {d0}, got {dim}")
    if embed_seed is None:
        return lambda key, n: scale * _embed(fn(key, n), dim)
    q = jnp.asarray(embedding_matrix(dim, d0, embed_seed))
    return lambda key, n: scale * jnp.matmul(fn(key, n), q.T, precision=jax.lax.Precision.HIGHEST)
