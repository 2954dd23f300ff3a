"""Data: the one home of every data set. `load(cfg)` builds the Dataset a config names (`cfg.dataset`):

    chessboard, moons, gmm   the paper's 2-D/4-D toys in R^4 (`toy`; `toy_dataset` for R^D embeddings)
    mnist                    MNIST through TFDS at the network's resolution, with its test split (`mnist`)
    manifold                 the synthetic conditional MLP manifold (`manifold`, App. A)
    imagenet64               no images: the shape and classes of a pre-trained teacher (DMD without GAN needs no
                             data; `experiments/imagenet64.py`)

A new data set is one sampler module here plus one entry in `REGISTRY` (and a preset in `dmdjax.configs`).
"""
from __future__ import annotations

import functools
import inspect
from typing import Callable

from dmdjax.data.dataset import Dataset, image_dataset, point_dataset

__all__ = ["Dataset", "image_dataset", "point_dataset", "load", "REGISTRY", "toy_dataset", "mnist_dataset",
           "manifold_dataset", "imagenet64_dataset"]


def toy_dataset(name: str, dim: int | None = None, embed_seed: int | None = None) -> Dataset:
    """A toy in R^4 (the paper's), or isometrically embedded in R^dim (`toy.get_sampler`). One object per
    toy, dimension and seed, so repeated runs in a process reuse their compiled steps."""
    from dmdjax.data import toy
    return _toy_dataset(name, toy.DIM if dim is None else dim, embed_seed)


@functools.lru_cache(maxsize=None)
def _toy_dataset(name: str, dim: int, embed_seed: int | None) -> Dataset:
    from dmdjax.data import toy
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


def imagenet64_dataset(cfg) -> Dataset:
    """The data DMD without GAN sees of a pre-trained image teacher (ImageNet-64): only the sample shape
    (resolution, resolution, in_channels) and the number of classes, from cfg.net_kwargs; no sampler, no images."""
    net = cfg.net_kwargs
    shape = (int(net["img_resolution"]), int(net["img_resolution"]), int(net["in_channels"]))
    return Dataset(name=cfg.dataset, shape=shape, sample=None, label_dim=int(net.get("label_dim", 0)),
                   kind="images", train_images=None)


def _toy(name: str) -> Callable[..., Dataset]:
    return lambda cfg, dim=None, embed_seed=None: toy_dataset(name, dim, embed_seed)


REGISTRY: dict[str, Callable[..., Dataset]] = {
    "chessboard": _toy("chessboard"),
    "moons": _toy("moons"),
    "gmm": _toy("gmm"),
    "mnist": mnist_dataset,
    "manifold": manifold_dataset,
    "imagenet64": imagenet64_dataset,
}


def _options(builder: Callable) -> set[str]:
    """The keyword options a REGISTRY builder takes (every parameter after cfg)."""
    return set(list(inspect.signature(builder).parameters)[1:])


def load(cfg, **options) -> Dataset:
    """The Dataset of `cfg.dataset` (its name up to any '(...)' detail), built with `options` (e.g. mnist_dir
    for MNIST, data_seed / train_size for the manifold, dim / embed_seed for a toy). An option that another
    data set takes is left out (a study passes mnist_dir to every data set); one that none takes is a TypeError."""
    name = cfg.dataset.split("(")[0]
    if name not in REGISTRY:
        raise ValueError(f"unknown dataset {cfg.dataset!r}; choose one of {', '.join(REGISTRY)}")
    unknown = set(options) - set().union(*map(_options, REGISTRY.values()))
    if unknown:
        raise TypeError(f"data.load: no dataset takes the options {sorted(unknown)}")
    takes = _options(REGISTRY[name])
    return REGISTRY[name](cfg, **{k: v for k, v in options.items() if k in takes})
