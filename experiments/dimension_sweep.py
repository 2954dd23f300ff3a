"""Dimension sweep (issue 7; the paper's conjecture that copying grows with dimension, Sec. 3.3-3.4, 4.2): the
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
import sys

from dmdjax import studies
from dmdjax.cli import add_common_flags, device_mesh, parse, positive_int


def int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers, got {text!r}")
    return values


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_flags(parser)
    parser.add_argument("--datasets", type=lambda text: studies.dataset_list(text, studies.TOYS),
                        default=("chessboard", "gmm"), help="comma-separated toys (default: chessboard,gmm)")
    parser.add_argument("--dims", type=int_list, help="ambient dimensions D (default: cpu 2,4,16,64,256; paper "
                                                      "2,4,16,64,256,1024)")
    parser.add_argument("--widths", type=int_list, help="MLP widths for the width axis (default: cpu 96,192,384; "
                                                        "paper 96,192,384,768,1536)")
    parser.add_argument("--width_dim", type=positive_int, default=64, help="D of the width axis (default 64)")
    parser.add_argument("--embed_seed", type=int, default=0, help="seed of the orthonormal embedding")
    args = parse(parser, argv)   # first: XLA tuning, --distributed
    dims = args.dims or studies.SWEEP_DIMS[args.preset]
    widths = args.widths or studies.SWEEP_WIDTHS[args.preset]
    result = studies.run_sweep(args.datasets, dims, widths, args.width_dim, args.preset, args.workdir,
                               studies.flag_tweak(args), args.embed_seed, device_mesh(args), not args.quiet)
    print(json.dumps({d: {r["dim"]: r["delta_e"] for r in rows} for d, rows in result["by_dim"].items()}, indent=1))
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
