"""A small CNN digit classifier trained by the project, whose penultimate features give MNIST's Frechet distance.

The network (`DigitCNN`) runs at the data's resolution (8, 16 or 32 px; any multiple of 4): two 3x3 stride-2
conv + ReLU stages (width, 2 width channels; strided rather than max-pooled: XLA:CPU's max-pool gradient is
slow), a dense ReLU feature layer (`feature_dim`, the features of
`features`) and a linear head over the classes. Trained with Adam on softmax cross-entropy from a fixed seed
(deterministic on a given machine), evaluated on the held-out split, and cached:

    <cache dir>/classifier/<name>-r<res>-<key>.msgpack,   cache dir = $DMDJAX_CACHE, else ~/.cache/dmdjax

`key` hashes the config, `VERSION` and a fingerprint of the training and test data, so a different resolution,
seed, recipe or data set trains its own network. The file is the magic line, the SHA-256 of the payload and the
msgpack payload (params + metadata); it is written to a temporary file and renamed (atomic), and a file whose
magic, digest, structure or key does not check out is reported with a warning and retrained.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import time
import warnings
from pathlib import Path
from typing import Any, NamedTuple

import flax.linen as nn
import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import optax

from dmdjax import files

__all__ = ["CACHE_ENV", "Classifier", "ClassifierConfig", "DigitCNN", "VERSION", "accuracy", "cache_path",
           "default_cache_dir", "features", "load_or_train", "train"]

VERSION = 1
CACHE_ENV = "DMDJAX_CACHE"
_MAGIC = b"DMDJAX-CLASSIFIER\n"


@dataclasses.dataclass(frozen=True)
class ClassifierConfig:
    """Training recipe: `steps` Adam steps of `batch` images at learning rate `lr` from PRNG seed `seed`."""
    steps: int = 1500
    batch: int = 128
    lr: float = 1e-3
    seed: int = 0
    width: int = 32              # channels of the first conv stage (the second has 2 * width)
    feature_dim: int = 128       # dimension of the features used for the Frechet distance
    num_classes: int = 10

    def validate(self) -> None:
        for name in ("steps", "batch", "width", "feature_dim", "num_classes"):
            if getattr(self, name) < 1:
                raise ValueError(f"classifier {name} must be positive, got {getattr(self, name)}")


class DigitCNN(nn.Module):
    """(B, H, W, C) images in [-1, 1] -> logits (B, num_classes), or features (B, feature_dim) if `features`."""
    width: int = 32
    feature_dim: int = 128
    num_classes: int = 10

    @nn.compact
    def __call__(self, x, features: bool = False):
        for c in (self.width, 2 * self.width):
            x = nn.relu(nn.Conv(c, (3, 3), strides=(2, 2))(x))
        h = nn.relu(nn.Dense(self.feature_dim)(x.reshape(x.shape[0], -1)))
        return h if features else nn.Dense(self.num_classes)(h)


class Classifier(NamedTuple):
    """A trained classifier: its params, config, test accuracy (fraction), cache file and whether this call
    trained it (False: loaded from the cache)."""
    params: Any
    config: ClassifierConfig
    test_accuracy: float
    path: Path | None
    trained: bool
    train_wall_s: float


def _model(cfg: ClassifierConfig) -> DigitCNN:
    return DigitCNN(cfg.width, cfg.feature_dim, cfg.num_classes)


def _check_images(images, labels, what: str) -> tuple[np.ndarray, np.ndarray]:
    images, labels = np.asarray(images, np.float32), np.asarray(labels)
    if images.ndim != 4 or not len(images):
        raise ValueError(f"{what} images must be a non-empty (N, H, W, C) array, got shape {images.shape}")
    if images.shape[1] % 4 or images.shape[2] % 4:
        raise ValueError(f"{what} images must have sides divisible by 4 (two stride-2 convolutions), got {images.shape}")
    if labels.shape != (len(images),):
        raise ValueError(f"{what} labels must be (N,) = ({len(images)},), got shape {labels.shape}")
    return images, labels.astype(np.int32)


def _init(cfg: ClassifierConfig, shape) -> Any:
    return _model(cfg).init(jax.random.PRNGKey(cfg.seed), jnp.zeros((1,) + tuple(shape)))["params"]


@functools.lru_cache(maxsize=4)
def _train_step(cfg: ClassifierConfig):
    """One jitted Adam step `(params, opt_state), i, images, labels -> (params, opt_state), loss`. Called from a
    Python loop: XLA:CPU runs convolutions inside a scan's while loop far slower."""
    model, tx = _model(cfg), optax.adam(cfg.lr)

    @jax.jit
    def step(carry, i, images, labels):
        params, opt = carry
        idx = jax.random.randint(jax.random.fold_in(jax.random.PRNGKey(cfg.seed + 1), i), (cfg.batch,), 0,
                                 images.shape[0])

        def loss_fn(p):
            logits = model.apply({"params": p}, images[idx])
            return optax.softmax_cross_entropy_with_integer_labels(logits, labels[idx]).mean()

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt = tx.update(grads, opt, params)
        return (optax.apply_updates(params, updates), opt), loss

    return tx, step


@functools.lru_cache(maxsize=4)
def _apply(cfg: ClassifierConfig, features_only: bool):
    return jax.jit(lambda p, x: _model(cfg).apply({"params": p}, x, features=features_only))


def _batched(fn, params, images, batch: int) -> np.ndarray:
    return np.concatenate([np.asarray(fn(params, jnp.asarray(images[i:i + batch])))
                           for i in range(0, len(images), batch)])


def accuracy(params, cfg: ClassifierConfig, images, labels, batch: int = 1000) -> float:
    """Fraction of (N, H, W, C) images whose argmax logit equals the (N,) integer label."""
    images, labels = _check_images(images, labels, "evaluation")
    logits = _batched(_apply(cfg, False), params, images, batch)
    return float(np.mean(np.argmax(logits, axis=1) == labels))


def features(clf: Classifier, images, batch: int = 1000) -> np.ndarray:
    """Penultimate features (N, feature_dim) float32 of (N, H, W, C) images (any real values; [-1, 1] is the
    data's range). Raises ValueError on non-finite images instead of returning NaN features."""
    images = np.asarray(images, np.float32)
    if images.ndim != 4:
        raise ValueError(f"images must be (N, H, W, C), got shape {images.shape}")
    if not np.all(np.isfinite(images)):
        raise ValueError(f"{int(np.sum(~np.all(np.isfinite(images.reshape(len(images), -1)), axis=1)))} of "
                         f"{len(images)} images contain non-finite values; no features for them")
    return _batched(_apply(clf.config, True), clf.params, images, batch)


def train(train_images, train_labels, cfg: ClassifierConfig = ClassifierConfig()):
    """Train from scratch: params after `cfg.steps` Adam steps on batches drawn uniformly with replacement."""
    cfg.validate()
    images, labels = _check_images(train_images, train_labels, "training")
    if labels.min() < 0 or labels.max() >= cfg.num_classes:
        raise ValueError(f"labels must lie in 0..{cfg.num_classes - 1}, got {labels.min()}..{labels.max()}")
    params = _init(cfg, images.shape[1:])
    tx, step = _train_step(cfg)
    carry, images, labels = (params, tx.init(params)), jnp.asarray(images), jnp.asarray(labels)
    for i in range(cfg.steps):
        carry, loss = step(carry, i, images, labels)
    if not np.isfinite(float(loss)):
        raise FloatingPointError(f"classifier training diverged (final loss {float(loss)}); lower lr={cfg.lr}")
    return carry[0]


def default_cache_dir() -> Path:
    """$DMDJAX_CACHE, else ~/.cache/dmdjax."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "dmdjax").expanduser()


def _fingerprint(*arrays) -> str:
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(repr((a.shape, str(a.dtype))).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def cache_path(name: str, cfg: ClassifierConfig, train_images, train_labels, test_images, test_labels,
               cache_dir=None) -> tuple[Path, str]:
    """(file, key) of the cached classifier for this data set name, config and data (module docstring)."""
    key_src = json.dumps({"version": VERSION, "config": dataclasses.asdict(cfg),
                          "data": _fingerprint(train_images, train_labels, test_images, test_labels)},
                         sort_keys=True)
    key = hashlib.sha256(key_src.encode()).hexdigest()[:16]
    directory = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return directory / "classifier" / f"{name}-r{np.shape(train_images)[1]}-{key}.msgpack", key


def _read(path: Path, template, key: str) -> tuple[Any, dict]:
    """Params and metadata from a cache file; ValueError naming what is wrong."""
    blob = path.read_bytes()
    if not blob.startswith(_MAGIC):
        raise ValueError("not a classifier cache file")
    digest, _, payload = blob[len(_MAGIC):].partition(b"\n")
    if hashlib.sha256(payload).hexdigest().encode() != digest:
        raise ValueError("checksum mismatch (truncated or corrupt)")
    state = flax.serialization.msgpack_restore(payload)
    meta = json.loads(state["meta"])
    if meta.get("key") != key:
        raise ValueError(f"key {meta.get('key')!r} != {key!r}")
    params = flax.serialization.from_state_dict(template, state["params"])
    if jax.tree.structure(params) != jax.tree.structure(template) or any(
            np.shape(a) != np.shape(b) for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(template))):
        raise ValueError("parameter shapes do not match the network")
    return jax.tree.map(jnp.asarray, params), meta


def _write(path: Path, params, meta: dict) -> None:
    payload = flax.serialization.msgpack_serialize(
        {"params": flax.serialization.to_state_dict(jax.tree.map(np.asarray, params)), "meta": json.dumps(meta)})
    files.write_bytes(path, _MAGIC + hashlib.sha256(payload).hexdigest().encode() + b"\n" + payload)


def load_or_train(name: str, train_images, train_labels, test_images, test_labels,
                  cfg: ClassifierConfig = ClassifierConfig(), cache_dir=None) -> Classifier:
    """The cached classifier for (name, cfg, data), training and caching it first if the cache has none.

    Args:
        name: data set name (part of the file name), e.g. "mnist".
        train_images, train_labels: (N, H, W, C) in [-1, 1] and (N,) integer labels it is trained on.
        test_images, test_labels: the held-out split its `test_accuracy` is measured on.
        cfg: the recipe; cache_dir: default `default_cache_dir()`.
    Returns:
        `Classifier`; `trained` says whether this call trained it. A corrupt or mismatched cache file is
        reported with a RuntimeWarning and replaced.
    """
    cfg.validate()
    train_images, train_labels = _check_images(train_images, train_labels, "training")
    test_images, test_labels = _check_images(test_images, test_labels, "test")
    if test_images.shape[1:] != train_images.shape[1:]:
        raise ValueError(f"test images {test_images.shape[1:]} and training images {train_images.shape[1:]} differ")
    path, key = cache_path(name, cfg, train_images, train_labels, test_images, test_labels, cache_dir)
    if path.exists():
        try:
            params, meta = _read(path, _init(cfg, train_images.shape[1:]), key)
            return Classifier(params, cfg, float(meta["test_accuracy"]), path, False, float(meta["train_wall_s"]))
        except Exception as e:  # noqa: BLE001 -- any unreadable cache is retrained, never trusted
            warnings.warn(f"classifier cache {path} is unusable ({type(e).__name__}: {e}); retraining it",
                          RuntimeWarning, stacklevel=2)
    t0 = time.perf_counter()
    params = train(train_images, train_labels, cfg)
    wall = time.perf_counter() - t0
    acc = accuracy(params, cfg, test_images, test_labels)
    _write(path, params, {"key": key, "version": VERSION, "config": dataclasses.asdict(cfg),
                          "test_accuracy": acc, "train_wall_s": wall, "n_train": len(train_images),
                          "n_test": len(test_images)})
    return Classifier(jax.tree.map(jnp.asarray, params), cfg, acc, path, True, wall)
