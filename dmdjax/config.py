"""The run's configuration: one frozen `Config` per experiment (presets in `dmdjax.configs`, overrides from the
command line), and the run's named PRNG streams (`keys`)."""
from __future__ import annotations

import dataclasses
import json
import math

import jax

from dmdjax import distill, record, teacher

__all__ = ["Config", "COMPUTE_DTYPES", "keys"]


@dataclasses.dataclass(frozen=True)
class Config:
    name: str
    dataset: str
    net: str = "mlp"                       # "mlp" | "adm"
    net_kwargs: dict = dataclasses.field(default_factory=dict)
    teacher: teacher.TeacherConfig = teacher.TeacherConfig()
    distill: distill.DistillConfig = distill.DistillConfig()
    distill_snapshots: tuple[int, ...] = ()   # teacher steps kept and distilled; () = the final teacher only
    eval_n: int = 1000                     # N shared noises for Delta_E (paper: 1000)
    pca_n: int = 2000                      # image data: triplets in the PCA figure (Fig. 1, 9: 2000)
    eval_ks: tuple[int, ...] = (1, 8, 32)      # Phi_K computed on all N noises
    figure_ks: tuple[int, ...] = ()            # Phi_K computed on the first `n_show` noises only (figures)
    n_show: int = 30                           # images per row in Fig. 1 / 6 / 11
    k_ref: int = 8                         # Phi_K the student is compared with (paper: K = 8)
    eval_batch: int = 1000
    seed: int = 0
    distill_seed: int | None = None        # the students' PRNG stream (DMD draws) when set; teacher and noises: seed
    compute_dtype: str = "float32"         # network interior: "float32" or "bfloat16" (GPU/TPU; DMD2's --use_fp16)
    ci_resamples: int = 100                # half-sample replicates of the Delta_E / kappa intervals (exact OT at N/2)
    ci_level: float = 0.95
    record: record.RecordConfig = record.RecordConfig()   # convergence record and stop rule during distillation
    classifier_steps: int = 1500           # MNIST: training steps of the Frechet-distance classifier; 0 = no FD

    def snapshots(self) -> tuple[int, ...]:
        """The teacher snapshots, sorted: the steps whose teacher checkpoints are kept and distilled."""
        return tuple(sorted(self.distill_snapshots)) or (self.teacher.steps,)

    def distill_order(self) -> tuple[int, ...]:
        """The snapshots in the order they are distilled: the earliest and the latest first (half a run already
        compares the two ends of teacher training), then the others in increasing order."""
        snaps = self.snapshots()
        return snaps if len(snaps) <= 2 else (snaps[0], snaps[-1], *snaps[1:-1])

    def student_seed(self) -> int:
        return self.seed if self.distill_seed is None else self.distill_seed

    def to_dict(self) -> dict:
        return json.loads(json.dumps(dataclasses.asdict(self)))

    def validate(self) -> None:
        """Every field of the resolved config checked before any work: one ValueError naming the field, what it
        holds and what it accepts."""
        from dmdjax.nets import NETS
        t, d = self.teacher, self.distill
        _at_least(1, **{"teacher.steps": t.steps, "teacher.batch": t.batch, "teacher.chunk": t.chunk,
                        "distill.iterations": d.iterations, "distill.batch": d.batch, "distill.chunk": d.chunk,
                        "distill.gen_every": d.gen_every, "k_ref": self.k_ref, "n_show": self.n_show,
                        "eval_batch": self.eval_batch})
        _at_least(0, **{"teacher.warmup": t.warmup, "teacher.ckpt_every": t.ckpt_every, "distill.warmup": d.warmup,
                        "distill.ckpt_every": d.ckpt_every, "pca_n": self.pca_n})
        _at_least(2, eval_n=self.eval_n, ci_resamples=self.ci_resamples, **{"distill.num_timesteps": d.num_timesteps})
        _finite(positive=True, **{"teacher.lr": t.lr, "distill.lr_gen": d.lr_gen, "distill.lr_fake": d.lr_fake,
                                  "distill.conditioning_sigma": d.conditioning_sigma})
        _finite(positive=False, **{"teacher.weight_decay": t.weight_decay, "distill.weight_decay": d.weight_decay,
                                   "teacher.ema_halflife_kimg": t.ema_halflife_kimg,
                                   "teacher.ema_rampup_ratio": t.ema_rampup_ratio,
                                   "distill.regression_weight": d.regression_weight,
                                   "distill.gan_cls_weight": d.gan_cls_weight,
                                   "distill.gan_gen_weight": d.gan_gen_weight})
        for name, clip in (("teacher.clip_norm", t.clip_norm), ("distill.clip_norm", d.clip_norm)):
            if clip is not None:
                _finite(positive=True, **{name: clip})
        for name, ks in (("eval_ks", self.eval_ks), ("figure_ks", self.figure_ks)):
            if any(k < 1 for k in ks):
                raise ValueError(f"{name} = {','.join(map(str, ks))}: every K (sampler steps of Phi_K) must be >= 1")
        if not 0 <= d.dm_min_index <= d.dm_max_index < d.num_timesteps:
            raise ValueError(f"distill.dm_min_index ({d.dm_min_index}) and dm_max_index ({d.dm_max_index}) must "
                             f"satisfy 0 <= min <= max < distill.num_timesteps ({d.num_timesteps})")
        if self.net not in NETS:
            raise ValueError(f"net = {self.net!r} is not a known network; choose one of {', '.join(NETS)}")
        if self.compute_dtype not in COMPUTE_DTYPES:
            raise ValueError(f"compute_dtype must be one of {COMPUTE_DTYPES}, got {self.compute_dtype!r}")
        bad = [s for s in self.snapshots() if not 1 <= s <= self.teacher.steps]
        if bad:
            raise ValueError(f"snapshots {bad} lie outside 1..teacher.steps={self.teacher.steps}")
        if not 0 < self.ci_level < 1:
            raise ValueError(f"ci_level must lie in (0, 1), got {self.ci_level}")
        self.record.validate(self.distill.gen_every)
        if self.classifier_steps < 0:
            raise ValueError(f"classifier_steps must be >= 0 (0 = no Frechet distance), got {self.classifier_steps}")


def _at_least(low: int, **fields) -> None:
    for name, value in fields.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")


def _finite(positive: bool, **fields) -> None:
    for name, value in fields.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                or value < 0 or (positive and value == 0):
            raise ValueError(f"{name} must be a finite number {'> 0' if positive else '>= 0'}, got {value!r}")


COMPUTE_DTYPES = ("float32", "bfloat16")



def keys(seed: int) -> dict[str, jax.Array]:
    """Named, independent PRNG streams of a run."""
    root = jax.random.PRNGKey(seed)
    names = ("init", "teacher", "distill", "eval_noise", "eval_labels")
    return dict(zip(names, jax.random.split(root, len(names))))
