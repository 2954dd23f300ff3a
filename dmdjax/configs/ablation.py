"""The ablation of the auxiliary losses (Sec. 4.1.1; `experiments/ablation.py`):

    python experiments/ablation.py --preset=cpu --workdir=runs/ablation --mnist_dir=../shared/data/mnist

Per dataset one teacher (the dataset's preset at its final step) and three students (`VARIANTS`, `variant`).
cpu: fewer DMD iterations than the dataset's preset, so that three students per dataset fit the study's hour.
"""
from __future__ import annotations

from dmdjax.config import Config
from dmdjax.configs import JUDGED, override, resolve, study_base

DERIVED = JUDGED
VARIANTS = ("plain", "gan", "regression")
CPU_ITERATIONS = {"toy": 1600, "mnist": 300}    # DMD iterations per student at the cpu preset


def get_config(preset: str = "cpu", dataset: str = "chessboard", width: int | None = None) -> Config:
    """The plain student's config; width: the toys' MLP width (None: the preset's)."""
    cfg = study_base(preset, dataset, width)
    if preset == "cpu":
        cfg = override(cfg, **{"distill.iterations": CPU_ITERATIONS["mnist" if dataset == "mnist" else "toy"]})
    return resolve(override(cfg, name=f"ablation-{dataset}-{preset}"), DERIVED)


def variant(cfg: Config, name: str, regression_weight: float = 0.25) -> Config:
    """plain: DMD as in the paper; gan: + DMD2's GAN term (REFERENCE 1.7, weights 1e-2 / 3e-3); regression: +
    DMD1's regression term with L2 (REFERENCE 1.8; lambda_reg 0.25 is DMD1's value for LPIPS)."""
    changes = {"plain": {}, "gan": {"distill.gan": True},
               "regression": {"distill.regression_weight": regression_weight}}
    if name not in changes:
        raise ValueError(f"unknown variant {name!r}; choose from {', '.join(VARIANTS)}")
    return override(cfg, name=f"{cfg.name}-{name}", **changes[name])
