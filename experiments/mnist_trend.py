"""The teacher-length study on MNIST (paper Sec. 4.2, Table 1; Fig. 4-6): does a student copy more as its teacher
trains longer? One teacher, snapshots T/16, T/8, T/4, T/2, T (the earliest and the latest distilled first), each
student distilled until its convergence record says it converged, Delta_E and kappa with intervals, Phi_1 and the
teacher's discretisation floor as controls, held-out teacher quality per snapshot.

    python experiments/mnist_trend.py --workdir=runs/mnist_trend --mnist_dir=../shared/data/mnist \\
        --results_dir=results/mnist_trend
    python experiments/mnist_trend.py --set distill_seed=1 --workdir=runs/mnist_trend_seed1 \\
        --mnist_dir=../shared/data/mnist          # the second-seed control (same teacher, another DMD stream)
    python experiments/mnist_trend.py --seed=1 --snapshots=512,2048,8192 --workdir=runs/mnist_trend_teacher1 \\
        --mnist_dir=../shared/data/mnist          # the second-teacher control (another init seed)
    python experiments/mnist_trend.py --set teacher.ema_halflife_kimg=0 --workdir=runs/mnist_trend_raw \\
        --mnist_dir=../shared/data/mnist          # the raw-weight protocol of the studies before the regime study

The teacher keeps EDM's EMA of its weights and its snapshots give the EMA to Phi_K and the students (DMD2's
protocol; in the regime study, results/mnist_regime, the latest snapshot's students copy with it and remap with
the raw weights).

The cpu preset (16x16, small ADM, 8192 teacher steps) is sized for a 2-core CPU; `--preset=paper` runs the same
protocol at the paper's scale (GPU/TPU). Rerunning the same command resumes.
"""
from __future__ import annotations

from dmdjax import cli, configs


def main(argv=None) -> dict:
    return cli.mnist_main(argv, configs.mnist_trend, __doc__)


if __name__ == "__main__":
    cli.run(main)
