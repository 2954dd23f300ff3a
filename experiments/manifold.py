"""The conditional synthetic MLP-manifold data set (paper App. A, Fig. 8-10): 16-D Gaussian noise through a
seeded random two-layer MLP to 32x32x1 plus a class stripe; teacher -> one-step DMD student -> copying.

    python experiments/manifold.py --preset=cpu --workdir=runs/manifold_cpu --results_dir=results/manifold_cpu
    python experiments/manifold.py --preset=paper --workdir=runs/manifold

Both presets distill under the teacher-length study's protocol (`configs.study_protocol`): the student runs until
the convergence record's stop rule says it converged.

Rerunning the same command resumes from the last checkpoint.
"""
from __future__ import annotations

from dmdjax import cli, configs


def add_flags(parser) -> None:
    parser.add_argument("--data_seed", type=int, default=0, help="seed of the random MLP and of the training set")
    parser.add_argument("--train_size", type=cli.positive_int, default=60_000, help="training-set size (MNIST's)")
    parser.add_argument("--snapshots", type=cli.snapshot_list,
                        help="teacher steps to keep and distill (<= --teacher_steps; default: the final teacher)")


def data_options(args) -> dict:
    return {"data_seed": args.data_seed, "train_size": args.train_size}


def main(argv=None) -> dict:
    return cli.experiment_main(argv, __doc__, configs.manifold, add_flags, data_options, data_options)


if __name__ == "__main__":
    cli.run(main)
