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

from dmdjax import cli, configs, studies


def int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers, got {text!r}")
    return values


def add_flags(parser) -> None:
    parser.add_argument("--datasets", type=lambda text: studies.dataset_list(text, studies.TOYS),
                        default=("chessboard", "gmm"), help="comma-separated toys (default: chessboard,gmm)")
    per_preset = lambda values: "; ".join(f"{p} {','.join(map(str, v))}" for p, v in values.items())  # noqa: E731
    parser.add_argument("--dims", type=int_list,
                        help=f"ambient dimensions D (default: {per_preset(configs.dimension_sweep.DIMS)})")
    parser.add_argument("--widths", type=int_list,
                        help=f"MLP widths for the width axis (default: {per_preset(configs.dimension_sweep.WIDTHS)})")
    parser.add_argument("--width_dim", type=cli.positive_int, default=64, help="D of the width axis (default 64)")
    parser.add_argument("--embed_seed", type=int, default=0, help="seed of the orthonormal embedding")


def config(args, dataset: str, dim: int, width: int | None = None):
    return cli.configure(configs.dimension_sweep, args, dataset=dataset, dim=dim, width=width)


def dims(args) -> tuple[int, ...]:
    return args.dims or configs.dimension_sweep.DIMS[args.preset]


def run_study(args, workdir, mesh) -> dict:
    return studies.run_sweep(args.datasets, dims(args), args.widths or configs.dimension_sweep.WIDTHS[args.preset],
                             args.width_dim, args.preset, workdir, lambda *a: config(args, *a), args.embed_seed, mesh,
                             not args.quiet)


def brief(result: dict) -> dict:
    """What the command prints: each toy's Delta_E by D."""
    return {d: {r["dim"]: r["delta_e"] for r in rows} for d, rows in result["by_dim"].items()}


def main(argv=None) -> dict:
    return cli.study_main(argv, __doc__, "dimension_sweep", add_flags,
                          lambda args: [config(args, d, dim) for d in args.datasets for dim in dims(args)],
                          run_study, brief)


if __name__ == "__main__":
    cli.run(main)
