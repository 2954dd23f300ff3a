"""The teacher-length study with class-conditional students (paper App. A: conditional students copy more):
`experiments/mnist_trend.py`'s protocol, teacher, snapshots and stop rule with the 10-class ADM; generator, fake
score and teacher see the same random labels.

    python experiments/mnist_trend_cond.py --snapshots=512,8192 --workdir=runs/mnist_trend_cond \\
        --mnist_dir=../shared/data/mnist --results_dir=results/mnist_trend_cond

Compare with results/mnist_trend at the same snapshots. Rerunning the same command resumes.
"""
from __future__ import annotations

from dmdjax import cli, configs


def main(argv=None) -> dict:
    return cli.mnist_main(argv, configs.mnist_trend_cond, __doc__)


if __name__ == "__main__":
    cli.run(main)
