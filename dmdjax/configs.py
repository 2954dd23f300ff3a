"""Experiment presets as plain Python. Every experiment is the one pipeline (`dmdjax.pipeline.run`) with one
of these configs; `paper` follows the paper's App. D, `cpu` is sized to show the phenomenon on a 2-core CPU.
Costs of each preset are recorded in README.md / docs/performance.md.
"""
from __future__ import annotations

import dataclasses

from dmdjax.distill import DistillConfig
from dmdjax.config import Config
from dmdjax.record import RecordConfig
from dmdjax.teacher import TeacherConfig

PRESETS = ("cpu", "paper")


def _check_preset(preset: str) -> None:
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")


# Teacher EMA as EDM's training loop keeps it (`--ema` 0.5 Mimg, ramp-up 0.05; REFERENCE 2.2).
EDM_EMA = {"teacher.ema_halflife_kimg": 500.0, "teacher.ema_rampup_ratio": 0.05}
# Every preset that trains a teacher keeps it and distills it: with it the cpu MNIST students of the latest snapshot
# copy, with its raw weights they remap (results/mnist_regime). `--set teacher.ema_halflife_kimg=0`: raw weights.
EMA = dict(ema_halflife_kimg=EDM_EMA["teacher.ema_halflife_kimg"], ema_rampup_ratio=EDM_EMA["teacher.ema_rampup_ratio"])


def toy(dataset: str, preset: str = "cpu") -> Config:
    """The 2-D toys in R^4 (Sec. 3.3, App. A): MLP 5 x 384, teacher and student batch 512.

    The paper gives lr 2e-6 for distillation and no teacher recipe; the teacher uses Adam 1e-3 (an MLP does not
    train at 2e-6) and keeps EDM's EMA of its weights, which Phi_K and DMD use (`EMA`). `cpu` distills at a larger
    lr for fewer iterations (docs/design.md has the evidence).
    """
    from dmdjax.data.toy import DATASETS
    if dataset not in DATASETS:
        raise ValueError(f"unknown toy dataset {dataset!r}; choose one of {', '.join(DATASETS)}")
    _check_preset(preset)
    teacher = TeacherConfig(steps=4000, batch=512, lr=1e-3, ckpt_every=1000, chunk=200, **EMA)
    if preset == "paper":
        distill = DistillConfig(iterations=50_000, batch=512, lr_gen=2e-6, lr_fake=2e-6, ckpt_every=5000, chunk=500)
        rec = RecordConfig(eval_every=1000, n=500)
    else:
        distill = DistillConfig(iterations=4000, batch=512, lr_gen=1e-4, lr_fake=1e-4, ckpt_every=1000, chunk=200)
        rec = TOY_CPU_RECORD
    return _judged(Config(name=f"toy-{dataset}-{preset}", dataset=dataset, net="mlp", teacher=teacher,
                          distill=distill, record=rec))


PAPER_LR_SUM = 50_000 * 2e-6   # the paper's students: 50,000 DMD iterations at lr 2e-6


def judge_after(lr: float) -> int:
    """`record.min_iterations` of a preset: the stop rule judges a student only after the paper's sum of learning
    rates (a student's early copying phase can look converged for hundreds of iterations; docs/design.md)."""
    return round(PAPER_LR_SUM / lr)


def _judged(cfg: Config) -> Config:
    """cfg with `record.min_iterations = judge_after(distill.lr_gen)`."""
    return override(cfg, **{"record.min_iterations": judge_after(cfg.distill.lr_gen)})


# Fields a preset derives from others: {dotted key: cfg -> value}.
DERIVED = {"record.min_iterations": lambda cfg: judge_after(cfg.distill.lr_gen)}


def get(cfg, key: str):
    """The value of a dotted field: get(cfg, "distill.lr_gen")."""
    for part in key.split("."):
        cfg = cfg[part] if isinstance(cfg, dict) else getattr(cfg, part)
    return cfg


def derive(cfg: Config, preset: Config, explicit=()) -> Config:
    """cfg (the preset with overrides) with each `DERIVED` field that the preset derived recomputed from cfg's
    own fields, unless its key is in `explicit` (set on the command line): derived settings follow the
    overrides (`--set distill.lr_gen=1e-5` judges from iteration 10,000 on, not 1,000)."""
    changes = {key: rule(cfg) for key, rule in DERIVED.items()
               if key not in explicit and get(preset, key) == rule(preset)}
    return override(cfg, **changes) if changes else cfg


# Convergence records of the cpu presets (`dmdjax.record`): sized so the periodic evaluation costs at most 15 %
# of a student's wall time (docs/performance.md has the measurement).
TOY_CPU_RECORD = RecordConfig(eval_every=200, n=250)
MNIST_CPU_RECORD = RecordConfig(eval_every=25, n=200)


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



MNIST_CPU_NET = dict(img_resolution=16, in_channels=1, label_dim=0, model_channels=32, channel_mult=[1, 2],
                     channel_mult_emb=4, num_blocks=1, attn_resolutions=[8], dropout=0.0)


def mnist(preset: str = "cpu", conditional: bool = False) -> Config:
    """MNIST (Sec. 3.4, 4.2, App. B/D): EDM's ADM UNet, batch 32, teacher snapshots distilled one by one (the
    preset distills the final teacher; `experiments/mnist_uncond.py` sets `distill_snapshots` to T/8..T).

    paper: the paper's UNet (C_base 64, [1,2,3,4], 3 blocks, attention 32/16/8; 31,118,593 params) at 32x32,
    teacher 8192 iterations with snapshots 1024/2048/4096/8192, DMD at lr 2e-6 for 50,000 iterations (App. D).
    cpu: MNIST average-pooled to 16x16 and a small ADM (C_base 32, [1,2], 1 block, attention at 8; 826,337
    params), teacher 1024 iterations with snapshots 128/256/512/1024, DMD at lr 1e-4 for 400 iterations.
    The paper gives no teacher optimiser; both presets train it with Adam at 2e-4 and keep EDM's EMA of its
    weights (`EMA`), which Phi_K and DMD use, as DMD2 does with EDM's snapshots (cpu: the regime study's finding,
    results/mnist_regime; the raw-weight studies before it: `--set teacher.ema_halflife_kimg=0`).
    """
    _check_preset(preset)
    from dmdjax.nets.adm import mnist_config
    label_dim = 10 if conditional else 0
    name = f"mnist-{'cond' if conditional else 'uncond'}-{preset}"
    if preset == "paper":
        net = {**mnist_config(), "label_dim": label_dim}
        teacher = TeacherConfig(steps=8192, batch=32, lr=2e-4, ckpt_every=512, chunk=1, **EMA)
        distill = DistillConfig(iterations=50_000, batch=32, lr_gen=2e-6, lr_fake=2e-6, ckpt_every=1000, chunk=5)
        return _judged(Config(name=name, dataset="mnist", net="adm", net_kwargs=net, teacher=teacher,
                              distill=distill, eval_ks=(1, 8, 32), eval_batch=250,
                              record=RecordConfig(eval_every=1000, n=500)))
    net = {**MNIST_CPU_NET, "label_dim": label_dim}
    teacher = TeacherConfig(steps=1024, batch=32, lr=2e-4, ckpt_every=128, chunk=1, **EMA)
    distill = DistillConfig(iterations=400, batch=32, lr_gen=1e-4, lr_fake=1e-4, warmup=100, ckpt_every=100, chunk=5)
    return _judged(Config(name=name, dataset="mnist", net="adm", net_kwargs=net, teacher=teacher, distill=distill,
                          eval_ks=(1, 8), figure_ks=(32,), eval_batch=500, record=MNIST_CPU_RECORD))


TREND_LR = 1e-4          # the study's DMD learning rate (docs/notebook.md: the learning-rate pilot)
TREND_ITERATIONS = 2000  # the most DMD iterations per student: lr x iterations = 0.2 >= the paper's 50,000 x 2e-6 = 0.1


def mnist_trend(preset: str = "cpu", conditional: bool = False) -> Config:
    """The teacher-length study (Sec. 4.2, Table 1, Fig. 4-6): students of teacher snapshots from early to late
    training, each distilled until the convergence record says it converged (`record.until_converged`, at most
    `distill.iterations`), Delta_E and kappa with intervals, the teacher's floor Delta_E(Phi_8, Phi_32).

        python experiments/mnist_trend.py --workdir=runs/mnist_trend --mnist_dir=../shared/data/mnist \
            --results_dir=results/mnist_trend

    cpu: the cpu MNIST network (16x16, small ADM), teacher 8192 steps (EDM's EMA distilled, as in every preset)
    with snapshots T/16..T = 512..8192, DMD at
    lr TREND_LR for at most TREND_ITERATIONS iterations (twice the paper's sum of learning rates), record every 100
    iterations on 200 noises; the stop rule judges a student from iteration 1000 on (`judge_after`). paper: the
    paper preset with the same protocol (GPU/TPU). conditional: the same study with the 10-class ADM (App. A;
    `experiments/mnist_trend_cond.py`).
    """
    _check_preset(preset)
    base = mnist(preset, conditional=conditional)
    if preset == "cpu":
        base = override(base, **{"teacher.steps": 8192, "teacher.ckpt_every": 512})
    name = f"mnist-trend-{'cond-' if conditional else ''}{preset}"
    return study_protocol(override(base, name=name, distill_snapshots=(512, 1024, 2048, 4096, 8192)), preset)


def study_protocol(cfg: Config, preset: str) -> Config:
    """The teacher-length study's distillation protocol on an image preset: the convergence record and stop rule,
    judged from the paper's sum of learning rates on; cpu: at most TREND_ITERATIONS DMD iterations at TREND_LR,
    checkpoints and records every 100 iterations on 200 noises; paper: the preset's own lr and iterations."""
    if preset == "paper":
        changes = {"distill.ckpt_every": 1000}
    else:
        changes = {"distill.iterations": TREND_ITERATIONS, "distill.lr_gen": TREND_LR, "distill.lr_fake": TREND_LR,
                   "distill.ckpt_every": 100, "record.eval_every": 100, "record.n": 200}
    return _judged(override(cfg, eval_ks=(1, 8, 32), figure_ks=(), **{**changes, "record.until_converged": True}))


def manifold(preset: str = "cpu") -> Config:
    """The conditional synthetic MLP-manifold data set (App. A, Fig. 8-10; `dmdjax.data.manifold`), 10 classes.

    The networks of conditional MNIST and the teacher-length study's distillation protocol (`study_protocol`):
    paper = the paper's ADM at 32x32 (label_dim 10), teacher 8192 iterations, DMD at lr 2e-6 for at most 50,000
    iterations; cpu = 16x16 and the small ADM, teacher 1024 iterations, one student distilled until the stop rule
    says it converged (at most 2000 DMD iterations at lr 1e-4).
    """
    cfg = mnist(preset, conditional=True)
    snapshots = (8192,) if preset == "paper" else (1024,)
    cfg = override(cfg, name=f"manifold-{preset}", dataset="manifold", distill_snapshots=snapshots)
    return study_protocol(cfg, preset)


def imagenet64(preset: str = "paper") -> Config:
    """Conditional ImageNet-64 (App. D; Fig. 8-10): the converted EDM teacher (`imagenet64_config()`, C_base 192,
    1000 classes, 295,899,267 params; no teacher training), DMD at lr 2e-6 both, batch 32, 50,000 iterations,
    500 warm-up; Phi_1/8/32 on N = 1000 shared noises with random labels. Evaluated in chunks of 100 (the 32x32
    attention of a 1000-batch would need ~25 GB). Only `paper` exists: the 296M-parameter teacher is not a CPU
    workload; a small exported network runs through the same experiment with its config sidecar instead.
    """
    _check_preset(preset)
    if preset != "paper":
        raise ValueError("imagenet64 has only the 'paper' preset (GPU/TPU; --bf16 optional); for a smoke run "
                         "give experiments/imagenet64.py a small exported network and --config_json")
    from dmdjax.nets.adm import imagenet64_config
    distill = DistillConfig(iterations=50_000, batch=32, lr_gen=2e-6, lr_fake=2e-6, warmup=500, ckpt_every=1000,
                            chunk=5)
    return Config(name="imagenet64-paper", dataset="imagenet64", net="adm", net_kwargs=imagenet64_config(),
                  distill=distill, eval_n=1000, eval_ks=(1, 8, 32), eval_batch=100)

REGIME_SNAPSHOTS = (512, 8192)   # the earliest and the latest snapshot of the teacher-length study


def mnist_regime(preset: str = "cpu") -> Config:
    """The regime study's base (`experiments/mnist_regime.py`): the teacher-length study's teacher and protocol
    (`mnist_trend`) with EDM's EMA kept beside the raw weights, snapshots 512 and 8192. Its arms (`REGIME_ARMS`)
    change one factor each."""
    cfg = override(mnist_trend(preset), name=f"mnist-regime-{preset}", distill_snapshots=REGIME_SNAPSHOTS, **EDM_EMA)
    return _judged(cfg)


LOW_LR = 4e-6          # the regime study's DMD learning rate at the paper's order (2e-6)
LOW_LR_SUM = 0.05      # ... run to this sum of learning rates


def regime_arm(cfg: Config, arm: str) -> tuple[str, Config]:
    """(factor, config) of one arm of the regime study on its base config `cfg` (`mnist_regime`):

    ema         teacher EMA: Phi_K, the fake score and the generator start from the EMA weights
    raw         the same teacher's raw weights (the teacher-length study's protocol)
    lr4e-6      raw weights, DMD at lr LOW_LR to the sum of learning rates LOW_LR_SUM, its warm-up spanning the
                same sum as the study's 100 iterations at 1e-4; latest snapshot only
    regression  raw weights, led by DMD1's regression onto 10,000 teacher pairs (Phi_8) at weight 100: what copying
                looks like with this network (the pairs come from the distillation stream, not the shared noises)
    """
    if arm not in REGIME_ARMS:
        raise ValueError(f"unknown arm {arm!r}; choose from {', '.join(REGIME_ARMS)}")
    factor, changes = REGIME_ARMS[arm]
    if arm == "lr4e-6":
        scale = cfg.distill.lr_gen / LOW_LR
        changes = {**changes, "distill_snapshots": (cfg.snapshots()[-1],),
                   "distill.iterations": round(LOW_LR_SUM / LOW_LR), "distill.warmup": round(cfg.distill.warmup * scale),
                   "distill.ckpt_every": 500, "record.eval_every": 500}
    return factor, _judged(override(cfg, name=f"{cfg.name}-{arm}", **changes))


REGIME_ARMS = {
    "ema": ("teacher_ema", {"teacher.distill_ema": True}),
    "raw": ("teacher_ema", {"teacher.distill_ema": False}),
    "lr4e-6": ("dmd_lr", {"teacher.distill_ema": False, "distill.lr_gen": LOW_LR, "distill.lr_fake": LOW_LR}),
    "regression": ("regression_control", {"teacher.distill_ema": False, "distill.regression_weight": 100.0,
                                          "distill.regression_pairs": 10_000}),
}
