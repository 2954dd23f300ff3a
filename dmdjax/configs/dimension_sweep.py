"""The dimension sweep (Sec. 3.3-3.4, 4.2; `experiments/dimension_sweep.py`):

    python experiments/dimension_sweep.py --preset=cpu --workdir=runs/dimension_sweep

A toy embedded isometrically in R^dim with the toy recipe (`toy`), one run per dimension in `DIMS` at the
preset's MLP width and one per width in `WIDTHS`. cpu: a shorter teacher and fewer DMD iterations than the toy
preset, so that the sweep's runs fit an hour.
"""
from __future__ import annotations

from dmdjax.config import Config
from dmdjax.configs import JUDGED, mlp_features, override, resolve, toy, with_width
from dmdjax.nets.mlp import WIDTH

DERIVED = JUDGED
DIMS = {"cpu": (2, 4, 16, 64, 256, 1024), "paper": (2, 4, 16, 64, 256, 1024)}
WIDTHS = {"cpu": (WIDTH // 4, WIDTH // 2, WIDTH), "paper": (WIDTH // 4, WIDTH // 2, WIDTH, 2 * WIDTH, 4 * WIDTH)}


def get_config(preset: str = "cpu", dataset: str = "chessboard", dim: int = 2, width: int | None = None) -> Config:
    """The toy in R^dim; width: the MLP width (None: the preset's)."""
    cfg = toy.get_config(preset, dataset)
    if preset == "cpu":
        cfg = override(cfg, **{"teacher.steps": 2000, "distill.iterations": 1600})
    cfg = with_width(cfg, width)
    return resolve(override(cfg, name=f"sweep-{dataset}-R{dim}-w{mlp_features(cfg)[0]}-{preset}"), DERIVED)
