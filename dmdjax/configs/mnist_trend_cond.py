"""The teacher-length study with class-conditional students (App. A; `experiments/mnist_trend_cond.py`):

    python experiments/mnist_trend_cond.py --snapshots=512,8192 --workdir=runs/mnist_trend_cond \\
        --mnist_dir=../shared/data/mnist --results_dir=results/mnist_trend_cond

`mnist_trend` with the 10-class ADM.
"""
from __future__ import annotations

from dmdjax.config import Config
from dmdjax.configs import mnist_trend

DERIVED, SNAPSHOT_DIVISORS = mnist_trend.DERIVED, mnist_trend.SNAPSHOT_DIVISORS


def get_config(preset: str = "cpu") -> Config:
    return mnist_trend.get_config(preset, conditional=True)
