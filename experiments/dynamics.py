"""Copying dynamics (paper Sec. 4.2, Fig. 4): Delta_E(Phi_8, G_t) on the N shared noises every M
distillation iterations, plotted beside the DM loss, so one sees when during distillation the pairing is decided.
Also Delta_E(G_T, G_t) against the final student: when the student's own pairing stops changing.

    python experiments/dynamics.py --preset=cpu --workdir=runs/dynamics --mnist_dir=../shared/data/mnist

Defaults: chessboard (4000 iterations, M = 200) and MNIST (one teacher, 400 iterations, M = 20). Each dataset is
a pipeline run directory workdir/<dataset>/ with student_<snap>/dynamics.jsonl; workdir/results.json and
workdir/dynamics.png summarise. Rerunning the same command resumes.
"""
from __future__ import annotations

import json

from dmdjax import cli, configs, studies
from dmdjax.nets.mlp import WIDTH


def main(argv=None) -> dict:
    parser = cli.make_parser(__doc__)
    cli.add_common_flags(parser)
    parser.add_argument("--datasets", type=studies.dataset_list, default=("chessboard", "mnist"),
                        help="comma-separated: chessboard, moons, gmm, mnist (default: chessboard,mnist)")
    parser.add_argument("--every", type=cli.positive_int,
                        help="M, iterations between Delta_E measurements (multiple of 5; default: toys 200, MNIST "
                             "20, paper 1000)")
    parser.add_argument("--width", type=cli.positive_int,
                        help=f"toys: MLP hidden width (default: the preset's {WIDTH})")
    parser.add_argument("--mnist_dir", default=None, help="directory with the four MNIST .gz files (offline)")
    args = cli.parse(parser, argv)
    cli.start(args)              # before any JAX computation: XLA:CPU tuning on a CPU-only host, --distributed
    preset = cli.resolve_preset(args)
    config = lambda dataset: cli.configure(configs.dynamics, args, dataset=dataset, width=args.width)  # noqa: E731
    cfgs = [config(d) for d in args.datasets]
    cli.print_config_and_exit(cfgs[0], args, {"all": [c.to_dict() for c in cfgs]}, cfgs[1:])
    workdir = cli.workdir(cfgs[0], args, f"dynamics-{preset}")
    mesh = cli.check(cfgs[0], args, cfgs[1:], work=workdir)
    cli.announce(cfgs[0], args)
    result = studies.run_dynamics_study(args.datasets, preset, workdir, studies.data_for(mnist_dir=args.mnist_dir), config,
                                        args.every, mesh, not args.quiet)
    cli.echo(json.dumps({d: dict(zip(r["step"], r["delta_e"])) for d, r in result["runs"].items()}, indent=1))
    return result


if __name__ == "__main__":
    cli.run(main)
