"""Ablation of the auxiliary losses (paper Sec. 4.1.1): plain DMD vs + DMD2's GAN term vs + DMD1's
regression term, one teacher per dataset, Delta_E(Phi_8, G) of each student against plain DMD.

    python experiments/ablation.py --preset=cpu --workdir=runs/ablation --mnist_dir=../shared/data/mnist

GAN: classifier head on the fake score's bottleneck, softplus losses, weights 1e-2 (classifier) and 3e-3
(generator), real and fake images noised at a random table index (REFERENCE 1.7). Regression: L2 to
precomputed teacher pairs (z_ref, Phi_8(z_ref)), lambda_reg 0.25 (DMD1's value, which was for LPIPS; LPIPS
weights cannot be downloaded here, so the loss is L2). Writes workdir/results.json and workdir/ablation.png;
each student is a pipeline run in workdir/<dataset>/<variant>/. Rerunning the same command resumes.
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
    parser.add_argument("--variants", default=",".join(configs.ablation.VARIANTS),
                        help="comma-separated subset of plain,gan,regression (plain always runs)")
    parser.add_argument("--regression_weight", type=float, default=0.25, help="lambda_reg (DMD1: 0.25, for LPIPS)")
    parser.add_argument("--width", type=cli.positive_int,
                        help=f"toys: MLP hidden width (default: the preset's {WIDTH})")
    parser.add_argument("--mnist_dir", default=None, help="directory with the four MNIST .gz files (offline)")
    args = cli.parse(parser, argv)
    variants = tuple(v for v in args.variants.split(",") if v)
    if not set(variants) <= set(configs.ablation.VARIANTS):
        parser.error(f"--variants must be a subset of {','.join(configs.ablation.VARIANTS)}")
    cli.start(args)              # before any JAX computation: XLA:CPU tuning on a CPU-only host, --distributed
    preset = cli.resolve_preset(args)
    config = lambda dataset: cli.configure(configs.ablation, args, dataset=dataset, width=args.width)  # noqa: E731
    cfgs = [config(d) for d in args.datasets]
    cli.print_config_and_exit(cfgs[0], args, {"all": [c.to_dict() for c in cfgs]}, cfgs[1:])
    workdir = cli.workdir(cfgs[0], args, f"ablation-{preset}")
    mesh = cli.check(cfgs[0], args, cfgs[1:], work=workdir)
    cli.announce(cfgs[0], args)
    result = studies.run_ablation(args.datasets, preset, workdir, studies.data_for(mnist_dir=args.mnist_dir), config,
                                  variants, args.regression_weight, mesh, not args.quiet)
    cli.echo(json.dumps({d: {v: r["delta_e"] for v, r in rows.items()} for d, rows in result["table"].items()},
                     indent=1))
    return result


if __name__ == "__main__":
    cli.run(main)
