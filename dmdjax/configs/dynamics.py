"""Copying dynamics (Sec. 4.2, Fig. 4; `experiments/dynamics.py`):

    python experiments/dynamics.py --preset=cpu --workdir=runs/dynamics --mnist_dir=../shared/data/mnist

The dataset's preset at its final teacher step; Delta_E(Phi_8, G_t) recorded every `interval` DMD iterations.
"""
from __future__ import annotations

from dmdjax.config import Config
from dmdjax.configs import JUDGED, override, resolve, study_base

DERIVED = JUDGED


def get_config(preset: str = "cpu", dataset: str = "chessboard", width: int | None = None) -> Config:
    """width: the toys' MLP width (None: the preset's)."""
    return resolve(override(study_base(preset, dataset, width), name=f"dynamics-{dataset}-{preset}"), DERIVED)


def interval(preset: str, dataset: str) -> int:
    """M, the DMD iterations between two records: 21 points of the cpu presets' runs, 51 of the paper's."""
    from dmdjax.data.toy import DATASETS
    return 1000 if preset == "paper" else (200 if dataset in DATASETS else 20)
