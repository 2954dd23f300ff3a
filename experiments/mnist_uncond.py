"""Unconditional MNIST (paper Sec. 3.4, 4.2, App. B; Fig. 1, 3-6, 11, 12): one teacher, snapshots chained
into one-step DMD students, copying measured per snapshot.

    python experiments/mnist_uncond.py --teacher_steps=8192
    python experiments/mnist_uncond.py --preset=cpu --workdir=runs/mnist_cpu --mnist_dir=../shared/data/mnist

The preset defaults to `paper` on a GPU/TPU and to `cpu` on a CPU-only host (the first printed line says which,
and what it holds); the work directory to runs/<config name>; the teacher snapshots distilled to T/8, T/4, T/2
and T of the teacher's T steps. `--set KEY=VALUE` changes any config field, `--print_config` shows the result.
MNIST comes through tensorflow-datasets, without TensorFlow (`pip install 'dmdjax[tfds]'`); offline, give the
four original files with --mnist_dir (or DMDJAX_MNIST_DIR). Rerunning the same command resumes from the last
checkpoint.
"""
from __future__ import annotations

from dmdjax import cli, configs


def main(argv=None) -> dict:
    return cli.mnist_main(argv, configs.mnist_uncond, __doc__)


if __name__ == "__main__":
    cli.run(main)
