"""The Dataset every stage takes: a pure, jittable sampler plus what evaluation needs (training and test images)."""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["Dataset", "image_dataset", "point_dataset"]


@dataclasses.dataclass(frozen=True)
class Dataset:
    """A data source. `sample(key, n, consts) -> (x (n, *shape), labels (n, label_dim) or None)` is pure and
    jittable; `consts` (e.g. the training images) is passed into the jitted step instead of being baked in."""
    name: str
    shape: tuple[int, ...]
    sample: Callable
    consts: Any = None
    label_dim: int = 0
    kind: str = "points"          # "points" (toys: scatter figures) or "images"
    train_images: Any = None      # (M, ...) for memorization statistics, images only
    test_images: Any = None       # (M', ...) held-out split: teacher quality, held-out fit (dmdjax.quality)
    test_labels: Any = None       # (M',) int labels of test_images (classifier accuracy, conditional EDM loss)


def point_dataset(name: str, sampler: Callable, dim: int) -> Dataset:
    """An unlabelled point cloud in R^dim from `sampler(key, n) -> (n, dim)` (the toys)."""
    return Dataset(name=name, shape=(dim,), sample=lambda key, n, consts: (sampler(key, n), None))


def image_dataset(name: str, images, labels, label_dim: int = 0, test_images=None, test_labels=None) -> Dataset:
    """A finite image training set (N, H, W, C) in [-1, 1] with integer labels (N,), sampled uniformly with
    replacement inside the jitted step; labels become one-hot (label_dim) or None when label_dim == 0. The
    optional held-out split feeds the teacher-quality and Frechet-distance evaluation."""
    images = np.asarray(images, np.float32)
    if images.ndim != 4 or not len(images):
        raise ValueError(f"images must be a non-empty (N, H, W, C) array, got shape {images.shape}")
    if labels is not None and len(labels) != len(images):
        raise ValueError(f"{len(labels)} labels for {len(images)} images")
    consts = (jnp.asarray(images), None if labels is None else jnp.asarray(labels, jnp.int32))

    def sample(key, n, consts):
        idx = jax.random.randint(key, (n,), 0, consts[0].shape[0])
        y = jax.nn.one_hot(consts[1][idx], label_dim) if label_dim else None
        return consts[0][idx], y

    return Dataset(name=name, shape=images.shape[1:], sample=sample, consts=consts, label_dim=label_dim,
                   kind="images", train_images=images, test_images=test_images, test_labels=test_labels)
