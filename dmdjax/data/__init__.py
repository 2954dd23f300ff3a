"""Data: the one home of every data set. `load(cfg)` builds the Dataset a config names (`cfg.dataset`):

    chessboard, moons, gmm   the paper's 2-D/4-D toys in R^4 (`toy`; `toy_dataset` for R^D embeddings)
    mnist                    MNIST through TFDS at the network's resolution, with its test split (`mnist`)
    manifold                 the synthetic conditional MLP manifold (`manifold`, App. A)

A new data set is one sampler module here plus one entry in `REGISTRY` (and a preset in `dmdjax.configs`).
"""
from __future__ import annotations

import functools
from typing import Callable

from dmdjax.data.dataset import Dataset, image_dataset, point_dataset

__all__ = ["Dataset", "image_dataset", "point_dataset", "load", "REGISTRY", "toy_dataset", "mnist_dataset",
           "manifold_dataset"]


@functools.lru_cache(maxsize=None)
def toy_dataset(name: str, dim: int | None = None, embed_seed: int | None = None) -> Dataset:
    """A toy in R^4 (the paper's), or isometrically embedded in R^dim (`toy.get_sampler`). One object per
    argument tuple, so repeated runs in a process reuse their compiled steps."""
    from dmdjax.data import toy
    dim = toy.DIM if dim is None else dim
    label = name if embed_seed is None and dim == toy.DIM else f"{name}-R{dim}"
    return point_dataset(label, toy.get_sampler(name, dim=dim, embed_seed=embed_seed), dim)


def mnist_dataset(cfg, mnist_dir=None) -> Dataset:
    """MNIST (train for training, test held out) at the resolution of cfg's network; labels one-hot when the
    network is conditional. `mnist_dir`: the original MNIST files (no download)."""
    from dmdjax.data.mnist import MnistUnavailableError, load_mnist
    resolution = cfg.net_kwargs["img_resolution"]
    try:
        images, labels = load_mnist("train", manual_dir=mnist_dir, resolution=resolution)
        test_images, test_labels = load_mnist("test", manual_dir=mnist_dir, resolution=resolution)
    except ModuleNotFoundError as e:
        if "[tfds]" in str(e):
            raise MnistUnavailableError(str(e)) from e
        raise
    return image_dataset("mnist", images, labels, cfg.net_kwargs.get("label_dim", 0), test_images, test_labels)


def manifold_dataset(cfg, data_seed: int = 0, train_size: int = 60_000) -> Dataset:
    """The MLP manifold's finite training set (`manifold.load_manifold`) at cfg's resolution, 10 classes."""
    from dmdjax.data.manifold import load_manifold
    images, labels = load_manifold(train_size, data_seed, resolution=cfg.net_kwargs["img_resolution"])
    return image_dataset(f"manifold-{data_seed}", images, labels, cfg.net_kwargs["label_dim"])


REGISTRY: dict[str, Callable[..., Dataset]] = {
    "chessboard": lambda cfg, **kw: toy_dataset("chessboard", **kw),
    "moons": lambda cfg, **kw: toy_dataset("moons", **kw),
    "gmm": lambda cfg, **kw: toy_dataset("gmm", **kw),
    "mnist": mnist_dataset,
    "manifold": manifold_dataset,
}


def load(cfg, **options) -> Dataset:
    """The Dataset of `cfg.dataset` (its name up to any '(...)' detail), built with `options` (e.g. mnist_dir
    for MNIST, data_seed / train_size for the manifold, dim / embed_seed for a toy)."""
    name = cfg.dataset.split("(")[0]
    if name not in REGISTRY:
        raise ValueError(f"unknown dataset {cfg.dataset!r}; choose one of {', '.join(REGISTRY)}")
    return REGISTRY[name](cfg, **options)
