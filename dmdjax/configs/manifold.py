"""The conditional synthetic MLP-manifold data set (App. A, Fig. 8-10; `experiments/manifold.py`):

    python experiments/manifold.py --preset=cpu --workdir=runs/manifold_cpu --results_dir=results/manifold_cpu

The networks of conditional MNIST (`configs.mnist`), the final teacher distilled under `study_protocol`.
`data_seed` and `train_size` choose the data set (`data.manifold_dataset`).
"""
from __future__ import annotations

from dmdjax.config import Config
from dmdjax.configs import FINAL_TEACHER, JUDGED, mnist, override, resolve, study_protocol

DERIVED = {**JUDGED, **FINAL_TEACHER}


def get_config(preset: str = "cpu", data_seed: int = 0, train_size: int = 60_000) -> Config:
    cfg = override(mnist(preset, conditional=True), name=f"manifold-{preset}",
                   dataset=f"manifold(seed={data_seed}, n={train_size})")
    return resolve(study_protocol(cfg, preset), DERIVED)
