"""Unconditional MNIST (Sec. 3.4, 4.2, App. B; `experiments/mnist_uncond.py`):

    python experiments/mnist_uncond.py --preset=cpu --workdir=runs/mnist_cpu --mnist_dir=../shared/data/mnist

The MNIST preset (`configs.mnist`); the teacher's snapshots T/8, T/4, T/2 and T distilled one by one.
"""
from __future__ import annotations

from dmdjax.config import Config
from dmdjax.configs import JUDGED, mnist, resolve, snapshots_at

SNAPSHOT_DIVISORS = (8, 4, 2, 1)   # snapshots T/8 .. T of a teacher of T steps
DERIVED = {**JUDGED, **snapshots_at(*SNAPSHOT_DIVISORS)}


def get_config(preset: str = "cpu") -> Config:
    return resolve(mnist(preset), DERIVED)
