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

from dmdjax import cli, configs, studies
from dmdjax.nets.mlp import WIDTH


def variant_list(text: str) -> tuple[str, ...]:
    """argparse type: a comma-separated subset of configs.ablation.VARIANTS."""
    variants = tuple(v for v in text.split(",") if v)
    if not set(variants) <= set(configs.ablation.VARIANTS):
        raise cli.argparse.ArgumentTypeError(f"--variants must be a subset of {','.join(configs.ablation.VARIANTS)}")
    return variants


def add_flags(parser) -> None:
    parser.add_argument("--datasets", type=studies.dataset_list, default=("chessboard", "mnist"),
                        help="comma-separated: chessboard, moons, gmm, mnist (default: chessboard,mnist)")
    parser.add_argument("--variants", type=variant_list, default=configs.ablation.VARIANTS,
                        help="comma-separated subset of plain,gan,regression (plain always runs)")
    parser.add_argument("--regression_weight", type=float, default=0.25, help="lambda_reg (DMD1: 0.25, for LPIPS)")
    parser.add_argument("--width", type=cli.positive_int,
                        help=f"toys: MLP hidden width (default: the preset's {WIDTH})")
    parser.add_argument("--mnist_dir", default=None, help="directory with the four MNIST .gz files (offline)")


def config(args, dataset: str):
    """The plain student's Config of `dataset` with the command line's flags."""
    return cli.configure(configs.ablation, args, dataset=dataset, width=args.width)


def run_study(args, workdir, mesh) -> dict:
    return studies.run_ablation(args.datasets, args.preset, workdir, studies.data_for(mnist_dir=args.mnist_dir),
                                lambda dataset: config(args, dataset), args.variants, args.regression_weight, mesh,
                                not args.quiet)


def brief(result: dict) -> dict:
    """What the command prints: Delta_E of each dataset's variants."""
    return {d: {v: r["delta_e"] for v, r in rows.items()} for d, rows in result["table"].items()}


def main(argv=None) -> dict:
    return cli.study_main(argv, __doc__, "ablation", add_flags, lambda args: [config(args, d) for d in args.datasets],
                          run_study, brief)


if __name__ == "__main__":
    cli.run(main)
