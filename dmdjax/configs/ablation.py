"""The ablation of the auxiliary losses (Sec. 4.1.1; `experiments/ablation.py`):

    python experiments/ablation.py --preset=cpu --workdir=runs/ablation --mnist_dir=../shared/data/mnist

Per dataset one teacher (the dataset's preset at its final step) and three students (`VARIANTS`, `variant`).
cpu: fewer DMD iterations than the dataset's preset, so that three students per dataset fit the study's hour.
"""
from __future__ import annotations

from dmdjax.config import Config
from dmdjax.configs import JUDGED, mnist, override, resolve, toy, with_width

DERIVED = JUDGED
VARIANTS = ("plain", "gan", "regression")
CPU_ITERATIONS = {"toy": 1600, "mnist": 300}    # DMD iterations per student at the cpu preset


def get_config(preset: str = "cpu", dataset: str = "chessboard", width: int | None = None) -> Config:
    """The plain student's config; width: the toys' MLP width (None: the preset's)."""
    from dmdjax.data.toy import DATASETS
    if dataset not in DATASETS + ("mnist",):
        raise ValueError(f"unknown dataset {dataset!r}; choose from {', '.join(DATASETS + ('mnist',))}")
    cfg = with_width(toy.get_config(preset, dataset), width) if dataset in DATASETS else mnist(preset)
    if preset == "cpu":
        cfg = override(cfg, **{"distill.iterations": CPU_ITERATIONS["toy" if dataset in DATASETS else "mnist"]})
    return resolve(override(cfg, name=f"ablation-{dataset}-{preset}"), DERIVED)


def variant(cfg: Config, name: str, regression_weight: float = 0.25) -> Config:
    """plain: DMD as in the paper; gan: + DMD2's GAN term (REFERENCE 1.7, weights 1e-2 / 3e-3); regression: +
    DMD1's regression term with L2 (REFERENCE 1.8; lambda_reg 0.25 is DMD1's value for LPIPS)."""
    changes = {"plain": {}, "gan": {"distill.gan": True},
               "regression": {"distill.regression_weight": regression_weight}}
    if name not in changes:
        raise ValueError(f"unknown variant {name!r}; choose from {', '.join(VARIANTS)}")
    return override(cfg, name=f"{cfg.name}-{name}", **changes[name])
