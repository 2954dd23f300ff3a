"""Conditional MNIST (App. A, Fig. 8-10; `experiments/mnist_cond.py`):

    python experiments/mnist_cond.py --preset=cpu --workdir=runs/mnist_cond_cpu --mnist_dir=../shared/data/mnist

`mnist_uncond` with the 10-class ADM.
"""
from __future__ import annotations

from dmdjax.config import Config
from dmdjax.configs import mnist, resolve
from dmdjax.configs.mnist_uncond import DERIVED, SNAPSHOT_DIVISORS  # noqa: F401 (the flags' help)


def get_config(preset: str = "cpu") -> Config:
    return resolve(mnist(preset, conditional=True), DERIVED)
