"""Experiment presets as plain Python. Every experiment is the one pipeline (`dmdjax.pipeline.run`) with one
of these configs; `paper` follows the paper's App. D, `cpu` is sized to show the phenomenon on a 2-core CPU.
Costs of each preset are recorded in README.md / BUILD_NOTES.md.
"""
from __future__ import annotations

import dataclasses

from dmdjax.distill import DistillConfig
from dmdjax.pipeline import Config
from dmdjax.teacher import TeacherConfig

PRESETS = ("cpu", "paper")


def _check_preset(preset: str) -> None:
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")


def toy(dataset: str, preset: str = "cpu") -> Config:
    """The 2-D toys in R^4 (Sec. 3.3, App. A): MLP 5 x 384, teacher and student batch 512.

    The paper gives lr 2e-6 for distillation and no teacher recipe; the teacher uses Adam 1e-3 (an MLP does not
    train at 2e-6). `cpu` distills at a larger lr for fewer iterations (BUILD_NOTES.md has the evidence).
    """
    from dmdjax.data.toy import DATASETS
    if dataset not in DATASETS:
        raise ValueError(f"unknown toy dataset {dataset!r}; choose one of {', '.join(DATASETS)}")
    _check_preset(preset)
    teacher = TeacherConfig(steps=6000, batch=512, lr=1e-3, ckpt_every=1000, chunk=200)
    if preset == "paper":
        distill = DistillConfig(iterations=50_000, batch=512, lr_gen=2e-6, lr_fake=2e-6, ckpt_every=5000, chunk=500)
    else:
        distill = DistillConfig(iterations=6000, batch=512, lr_gen=1e-4, lr_fake=1e-4, ckpt_every=1000, chunk=200)
    return Config(name=f"toy-{dataset}-{preset}", dataset=dataset, net="mlp", teacher=teacher, distill=distill)


def override(cfg: Config, **changes) -> Config:
    """Replace fields, with dotted names for nested ones: override(cfg, **{"teacher.steps": 100})."""
    top, nested = {}, {}
    for key, value in changes.items():
        if "." in key:
            outer, inner = key.split(".", 1)
            nested.setdefault(outer, {})[inner] = value
        else:
            top[key] = value
    for outer, fields in nested.items():
        top[outer] = dataclasses.replace(getattr(cfg, outer), **fields)
    return dataclasses.replace(cfg, **top)
