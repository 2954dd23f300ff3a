"""Copying dynamics (paper Sec. 4.2, Fig. 4): Delta_E(Phi_8, G_t) on the N shared noises every M
distillation iterations, plotted beside the DM loss, so one sees when during distillation the pairing is decided.
Also Delta_E(G_T, G_t) against the final student: when the student's own pairing stops changing.

    python experiments/dynamics.py --preset=cpu --workdir=runs/dynamics --mnist_dir=../shared/data/mnist

Defaults: chessboard (4000 iterations, M = 200) and MNIST (one teacher, 400 iterations, M = 20). Each dataset is
a pipeline run directory workdir/<dataset>/ with student_<snap>/dynamics.jsonl; workdir/results.json and
workdir/dynamics.png summarise. Rerunning the same command resumes.
"""
from __future__ import annotations

from dmdjax import cli, configs, studies
from dmdjax.nets.mlp import WIDTH


def add_flags(parser) -> None:
    parser.add_argument("--datasets", type=studies.dataset_list, default=("chessboard", "mnist"),
                        help="comma-separated: chessboard, moons, gmm, mnist (default: chessboard,mnist)")
    parser.add_argument("--every", type=cli.positive_int,
                        help="M, iterations between Delta_E measurements (multiple of 5; default: toys 200, MNIST "
                             "20, paper 1000)")
    parser.add_argument("--width", type=cli.positive_int,
                        help=f"toys: MLP hidden width (default: the preset's {WIDTH})")
    parser.add_argument("--mnist_dir", default=None, help="directory with the four MNIST .gz files (offline)")


def config(args, dataset: str):
    return cli.configure(configs.dynamics, args, dataset=dataset, width=args.width)


def run_study(args, workdir, mesh) -> dict:
    return studies.run_dynamics_study(args.datasets, args.preset, workdir, studies.data_for(mnist_dir=args.mnist_dir),
                                      lambda dataset: config(args, dataset), args.every, mesh, not args.quiet)


def brief(result: dict) -> dict:
    """What the command prints: each dataset's Delta_E by recorded step."""
    return {d: dict(zip(r["step"], r["delta_e"])) for d, r in result["runs"].items()}


def main(argv=None) -> dict:
    return cli.study_main(argv, __doc__, "dynamics", add_flags, lambda args: [config(args, d) for d in args.datasets],
                          run_study, brief)


if __name__ == "__main__":
    cli.run(main)
