"""The synthetic MLP-manifold data set (paper App. A, Fig. 8-10).

A 16-dimensional standard normal u goes through a randomly initialised, seeded two-layer MLP
(16 -> `hidden` tanh -> 32*32, tanh output in [-1, 1]); a whitened (set to +1) horizontal stripe, 2 rows high, is
then superimposed at a class-dependent row for the class label c in 0..9. Each class is the image of R^16 under
a smooth map: a 16-D manifold in R^(32x32x1), reproducible from `seed`.

The paper gives no sizes beyond these; the hidden width (256), the output gain and the stripe rows are ours.
Like MNIST the training set is finite (60,000 draws by default), so the memorization and boundary statistics
(Sec. 4.1.2, 4.2.1) have a training set to measure against; `resolution` average-pools for CPU presets (the
stripes sit on even rows, so 16x16 keeps them one row high).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

LATENT_DIM = 16
NUM_CLASSES = 10
SIZE = 32
STRIPE_HEIGHT = 2


def stripe_rows(label: int) -> tuple[int, int]:
    """[top, bottom) rows of class `label`'s stripe at 32x32: tops 2, 4, 6, 10, 12, 16, 18, 20, 24, 26."""
    top = 2 + 2 * ((14 * int(label)) // 10)
    return top, top + STRIPE_HEIGHT


def mlp_params(seed: int = 0, hidden: int = 256, gain: float = 2.0) -> dict:
    """The random two-layer MLP (LeCun-normal weights times `gain` on the output layer, normal biases)."""
    k1, k2, k3, k4 = jax.random.split(jax.random.PRNGKey(seed), 4)
    return {"w1": jax.random.normal(k1, (LATENT_DIM, hidden)) / np.sqrt(LATENT_DIM),
            "b1": 0.1 * jax.random.normal(k2, (hidden,)),
            "w2": gain * jax.random.normal(k3, (hidden, SIZE * SIZE)) / np.sqrt(hidden),
            "b2": 0.1 * jax.random.normal(k4, (SIZE * SIZE,))}


def render(params: dict, u, labels):
    """u (N, 16), integer labels (N,) -> images (N, 32, 32, 1) float32 in [-1, 1]."""
    h = jnp.tanh(u @ params["w1"] + params["b1"])
    x = jnp.tanh(h @ params["w2"] + params["b2"]).reshape(-1, SIZE, SIZE, 1)
    rows = jnp.arange(SIZE)
    tops = jnp.asarray([stripe_rows(c)[0] for c in range(NUM_CLASSES)])[labels]
    stripe = (rows[None, :] >= tops[:, None]) & (rows[None, :] < tops[:, None] + STRIPE_HEIGHT)   # (N, 32)
    return jnp.where(stripe[:, :, None, None], 1.0, x)


def sample(key, n: int, params: dict):
    """n fresh draws from the distribution: (images (n, 32, 32, 1), labels (n,) int32)."""
    k_u, k_c = jax.random.split(key)
    labels = jax.random.randint(k_c, (n,), 0, NUM_CLASSES)
    return render(params, jax.random.normal(k_u, (n, LATENT_DIM)), labels), labels


def load_manifold(n: int = 60_000, seed: int = 0, resolution: int | None = None, batch: int = 10_000):
    """The finite training set: (images (n, R, R, 1) float32 in [-1, 1], labels (n,) int32), R = resolution or 32.

    Deterministic in (n, seed); `resolution` must divide 32 (average pooling)."""
    resolution = SIZE if resolution is None else int(resolution)
    if resolution <= 0 or SIZE % resolution:
        raise ValueError(f"resolution must divide {SIZE}, got {resolution}")
    if n < 1:
        raise ValueError(f"n must be positive, got {n}")
    params = mlp_params(seed)
    key = jax.random.fold_in(jax.random.PRNGKey(seed), 1)
    draw = jax.jit(lambda k, m: sample(k, m, params), static_argnums=1)
    images, labels = [], []
    for i, start in enumerate(range(0, n, batch)):
        x, y = draw(jax.random.fold_in(key, i), min(batch, n - start))
        images.append(np.asarray(x))
        labels.append(np.asarray(y, np.int32))
    x = np.concatenate(images)
    f = SIZE // resolution
    if f > 1:
        x = x.reshape(n, resolution, f, resolution, f, 1).mean(axis=(2, 4), dtype=np.float32)
    return x.astype(np.float32), np.concatenate(labels)
