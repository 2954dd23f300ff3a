"""Dimension sweep (the paper's conjecture that copying grows with dimension, Sec. 3.3-3.4, 4.2): the
chessboard and the GMM embedded isometrically in R^D, the toy teacher / student recipe, Delta_E(Phi_8, G)
against D and against the MLP width.

    python experiments/dimension_sweep.py --preset=cpu --workdir=runs/dimension_sweep

D is the ambient dimension: the toy's native sample (chessboard: its 2-D square, GMM: the paper's 4-D mixture)
times a seeded D x d0 matrix with orthonormal columns (QR of a Gaussian matrix; --embed_seed), so all distances
are those of the native data and only the dimension the networks see changes. D below the native dimension is
skipped. Each point is a pipeline run directory workdir/<dataset>/R<D>_w<width>/; workdir/results.json and
workdir/sweep.png summarise. Rerunning the same command resumes.
"""
from __future__ import annotations

import argparse
import json

from dmdjax import cli, configs, studies


def int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers, got {text!r}")
    return values


def main(argv=None) -> dict:
    parser = cli.make_parser(__doc__)
    cli.add_common_flags(parser)
    parser.add_argument("--datasets", type=lambda text: studies.dataset_list(text, studies.TOYS),
                        default=("chessboard", "gmm"), help="comma-separated toys (default: chessboard,gmm)")
    per_preset = lambda values: "; ".join(f"{p} {','.join(map(str, v))}" for p, v in values.items())  # noqa: E731
    parser.add_argument("--dims", type=int_list,
                        help=f"ambient dimensions D (default: {per_preset(configs.dimension_sweep.DIMS)})")
    parser.add_argument("--widths", type=int_list,
                        help=f"MLP widths for the width axis (default: {per_preset(configs.dimension_sweep.WIDTHS)})")
    parser.add_argument("--width_dim", type=cli.positive_int, default=64, help="D of the width axis (default 64)")
    parser.add_argument("--embed_seed", type=int, default=0, help="seed of the orthonormal embedding")
    args = cli.parse(parser, argv)
    cli.start(args)              # before any JAX computation: XLA:CPU tuning on a CPU-only host, --distributed
    preset = cli.resolve_preset(args)
    dims = args.dims or configs.dimension_sweep.DIMS[preset]
    widths = args.widths or configs.dimension_sweep.WIDTHS[preset]

    def config(dataset: str, dim: int, width: int | None = None):
        return cli.configure(configs.dimension_sweep, args, dataset=dataset, dim=dim, width=width)
    cfgs = [config(d, dim) for d in args.datasets for dim in dims]
    cli.print_config_and_exit(cfgs[0], args, {"all": [c.to_dict() for c in cfgs]}, cfgs[1:])
    workdir = cli.workdir(cfgs[0], args, f"dimension_sweep-{preset}")
    mesh = cli.check(cfgs[0], args, cfgs[1:], work=workdir)
    cli.announce(cfgs[0], args)
    result = studies.run_sweep(args.datasets, dims, widths, args.width_dim, preset, workdir, config,
                               args.embed_seed, mesh, not args.quiet)
    cli.echo(json.dumps({d: {r["dim"]: r["delta_e"] for r in rows} for d, rows in result["by_dim"].items()}, indent=1))
    return result


if __name__ == "__main__":
    cli.run(main)
