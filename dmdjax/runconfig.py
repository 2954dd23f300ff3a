"""The run's configuration: one frozen `Config` per experiment (presets in `dmdjax.configs`, overrides from the
command line), and the run's named PRNG streams (`keys`)."""
from __future__ import annotations

import dataclasses
import json

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
        for name, value in [("teacher.steps", self.teacher.steps), ("teacher.batch", self.teacher.batch),
                            ("distill.iterations", self.distill.iterations), ("distill.batch", self.distill.batch),
                            ("eval_n", self.eval_n)]:
            if value < 1:
                raise ValueError(f"{name} must be positive, got {value}")
        if self.eval_n < 2:
            raise ValueError("eval_n must be at least 2 for Delta_E")
        bad = [s for s in self.snapshots() if not 1 <= s <= self.teacher.steps]
        if bad:
            raise ValueError(f"snapshots {bad} lie outside 1..teacher.steps={self.teacher.steps}")
        if self.ci_resamples < 2 or not 0 < self.ci_level < 1:
            raise ValueError(f"ci_resamples must be >= 2 and 0 < ci_level < 1, got {self.ci_resamples}, "
                             f"{self.ci_level}")
        self.record.validate(self.distill.gen_every)
        if self.classifier_steps < 0:
            raise ValueError(f"classifier_steps must be >= 0 (0 = no Frechet distance), got {self.classifier_steps}")
        if self.compute_dtype not in COMPUTE_DTYPES:
            raise ValueError(f"compute_dtype must be one of {COMPUTE_DTYPES}, got {self.compute_dtype!r}")


COMPUTE_DTYPES = ("float32", "bfloat16")



def keys(seed: int) -> dict[str, jax.Array]:
    """Named, independent PRNG streams of a run."""
    root = jax.random.PRNGKey(seed)
    names = ("init", "teacher", "distill", "eval_noise", "eval_labels")
    return dict(zip(names, jax.random.split(root, len(names))))
