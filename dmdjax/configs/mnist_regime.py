"""The regime study on MNIST (`experiments/mnist_regime.py`):

    python experiments/mnist_regime.py --arms=ema,raw --workdir=runs/mnist_regime \\
        --mnist_dir=../shared/data/mnist --results_dir=results/mnist_regime

Which difference from the paper's setting turns a remapping student into a copying one? The base is the
teacher-length study's teacher and protocol (`mnist_trend`), EDM's EMA kept beside the raw weights, snapshots
`SNAPSHOTS`; each arm (`ARMS`, `arm`) changes one factor of it.
"""
from __future__ import annotations

from dmdjax.config import Config
from dmdjax.configs import EDM_EMA, JUDGED, mnist_trend, override, resolve

DERIVED = JUDGED
SNAPSHOTS = (512, 8192)   # the earliest and the latest snapshot of the teacher-length study
LOW_LR = 4e-6             # the lr arm's DMD learning rate, at the paper's order (2e-6) ...
LOW_LR_SUM = 0.05         # ... run to this sum of learning rates

# name: (factor, changes to the base)
ARMS = {
    "ema": ("teacher_ema", {"teacher.distill_ema": True}),
    "raw": ("teacher_ema", {"teacher.distill_ema": False}),
    "lr4e-6": ("dmd_lr", {"teacher.distill_ema": False, "distill.lr_gen": LOW_LR, "distill.lr_fake": LOW_LR}),
    "regression": ("regression_control", {"teacher.distill_ema": False, "distill.regression_weight": 100.0,
                                          "distill.regression_pairs": 10_000}),
}


def get_config(preset: str = "cpu") -> Config:
    cfg = override(mnist_trend.get_config(preset), name=f"mnist-regime-{preset}", distill_snapshots=SNAPSHOTS,
                   **EDM_EMA)
    return resolve(cfg, DERIVED)


def arm(base: Config, name: str, seed: int | None = None, snapshots=None) -> tuple[str, Config]:
    """(factor, config) of one arm of the study on its base config (`get_config` with the command line's flags):

    ema         teacher EMA: Phi_K, the fake score and the generator start from the EMA weights
    raw         the same teacher's raw weights
    lr4e-6      raw weights, DMD at lr LOW_LR to the sum of learning rates LOW_LR_SUM, its warm-up spanning the
                same sum as the base's; latest snapshot only
    regression  raw weights, led by DMD1's regression onto 10,000 teacher pairs (Phi_8) at weight 100: what copying
                looks like with this network (the pairs come from the distillation stream, not the shared noises)

    seed: another DMD seed (`distill_seed`, named -seed<k>); snapshots: a subset of the arm's snapshots. The
    derived fields are recomputed from the arm's own fields.
    """
    if name not in ARMS:
        raise ValueError(f"unknown arm {name!r}; choose from {', '.join(ARMS)}")
    factor, changes = ARMS[name]
    if name == "lr4e-6":
        scale = base.distill.lr_gen / LOW_LR
        changes = {**changes, "distill_snapshots": (base.snapshots()[-1],),
                   "distill.iterations": round(LOW_LR_SUM / LOW_LR),
                   "distill.warmup": round(base.distill.warmup * scale),
                   "distill.ckpt_every": 500, "record.eval_every": 500}
    changes = {**changes, "name": f"{base.name}-{name}"}
    if seed is not None:
        changes.update(name=f"{base.name}-{name}-seed{seed}", distill_seed=seed)
    if snapshots:
        changes["distill_snapshots"] = tuple(snapshots)
    return factor, resolve(override(base, **changes), DERIVED)
