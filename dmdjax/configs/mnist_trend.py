"""The teacher-length study on MNIST (Sec. 4.2, Table 1, Fig. 4-6; `experiments/mnist_trend.py`):

    python experiments/mnist_trend.py --workdir=runs/mnist_trend --mnist_dir=../shared/data/mnist \\
        --results_dir=results/mnist_trend

Students of the teacher's snapshots T/16, T/8, T/4, T/2 and T, each distilled under `study_protocol` until its
convergence record says it converged. cpu: the cpu MNIST network with a teacher of 8192 steps.
"""
from __future__ import annotations

from dmdjax.config import Config
from dmdjax.configs import JUDGED, check_preset, mnist, override, resolve, snapshots_at, study_protocol

SNAPSHOT_DIVISORS = (16, 8, 4, 2, 1)   # snapshots T/16 .. T of a teacher of T steps
DERIVED = {**JUDGED, **snapshots_at(*SNAPSHOT_DIVISORS)}


def get_config(preset: str = "cpu", conditional: bool = False) -> Config:
    """conditional: the same study with the 10-class ADM (`mnist_trend_cond`)."""
    check_preset(preset)
    cfg = mnist(preset, conditional=conditional)
    if preset == "cpu":
        cfg = override(cfg, **{"teacher.steps": 8192, "teacher.ckpt_every": 512})
    cfg = override(cfg, name=f"mnist-trend-{'cond-' if conditional else ''}{preset}")
    return resolve(study_protocol(cfg, preset), DERIVED)
