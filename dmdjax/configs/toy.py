"""The 2-D toys in R^4 (Sec. 3.3, App. A; `experiments/toy.py`):

    python experiments/toy.py --dataset=chessboard --preset=cpu --workdir=runs/chessboard

MLP `nets.mlp.FEATURES`, teacher and student batch 512. The paper gives DMD's lr (2e-6) and no teacher recipe:
the teacher trains with Adam at 1e-3 and keeps EDM's EMA (`EMA`); `cpu` distills at a larger lr for fewer
iterations (docs/design.md has the evidence).
"""
from __future__ import annotations

from dmdjax.config import Config
from dmdjax.configs import EMA, JUDGED, check_preset, resolve
from dmdjax.distill import DistillConfig
from dmdjax.record import RecordConfig
from dmdjax.teacher import TeacherConfig

DERIVED = JUDGED
# The cpu convergence record: its evaluations cost at most 15 % of a student's wall time (docs/performance.md).
CPU_RECORD = RecordConfig(eval_every=200, n=250)


def get_config(preset: str = "cpu", dataset: str = "chessboard") -> Config:
    from dmdjax.data.toy import DATASETS
    if dataset not in DATASETS:
        raise ValueError(f"unknown toy dataset {dataset!r}; choose one of {', '.join(DATASETS)}")
    check_preset(preset)
    teacher = TeacherConfig(steps=4000, batch=512, lr=1e-3, ckpt_every=1000, chunk=200, **EMA)
    if preset == "paper":
        distill = DistillConfig(iterations=50_000, batch=512, lr_gen=2e-6, lr_fake=2e-6, ckpt_every=5000, chunk=500)
        record = RecordConfig(eval_every=1000, n=500)
    else:
        distill = DistillConfig(iterations=4000, batch=512, lr_gen=1e-4, lr_fake=1e-4, ckpt_every=1000, chunk=200)
        record = CPU_RECORD
    return resolve(Config(name=f"toy-{dataset}-{preset}", dataset=dataset, net="mlp", teacher=teacher,
                          distill=distill, record=record), DERIVED)
