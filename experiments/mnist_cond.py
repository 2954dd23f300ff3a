"""Conditional MNIST (paper App. A, Fig. 8-10): the unconditional MNIST pipeline with a 10-class ADM; generator,
fake score and teacher see the same random labels (REFERENCE 1.9).

    python experiments/mnist_cond.py --preset=paper --teacher_steps=8192 --workdir=runs/mnist_cond
    python experiments/mnist_cond.py --preset=cpu --workdir=runs/mnist_cond_cpu --mnist_dir=../shared/data/mnist

Same flags as experiments/mnist_uncond.py; rerunning the same command resumes from the last checkpoint.
"""
from __future__ import annotations

from dmdjax import cli, configs


def main(argv=None) -> dict:
    return cli.mnist_main(argv, configs.mnist_cond, __doc__)


if __name__ == "__main__":
    cli.run(main)
