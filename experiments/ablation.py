"""Ablation of the auxiliary losses (issue 7; paper Sec. 4.1.1): plain DMD vs + DMD2's GAN term vs + DMD1's
regression term, one teacher per dataset, Delta_E(Phi_8, G) of each student against plain DMD.

    python experiments/ablation.py --preset=cpu --workdir=runs/ablation --mnist_dir=../shared/data/mnist

GAN: classifier head on the fake score's bottleneck, softplus losses, weights 1e-2 (classifier) and 3e-3
(generator), real and fake images noised at a random table index (REFERENCE 1.7). Regression: L2 to
precomputed teacher pairs (z_ref, Phi_8(z_ref)), lambda_reg 0.25 (DMD1's value, which was for LPIPS; LPIPS
weights cannot be downloaded here, so the loss is L2). Writes workdir/results.json and workdir/ablation.png;
each student is a pipeline run in workdir/<dataset>/<variant>/. Rerunning the same command resumes.
"""
from __future__ import annotations

import argparse
import json
import sys

from dmdjax import studies
from dmdjax.cli import add_common_flags, device_mesh, parse, positive_int


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_flags(parser)
    parser.add_argument("--datasets", type=studies.dataset_list, default=("chessboard", "mnist"),
                        help="comma-separated: chessboard, moons, gmm, mnist (default: chessboard,mnist)")
    parser.add_argument("--variants", default=",".join(studies.VARIANTS),
                        help="comma-separated subset of plain,gan,regression (plain always runs)")
    parser.add_argument("--regression_weight", type=float, default=0.25, help="lambda_reg (DMD1: 0.25, for LPIPS)")
    parser.add_argument("--width", type=positive_int, help="toys: MLP hidden width (default: the preset's 384)")
    parser.add_argument("--mnist_dir", default=None, help="directory with the four MNIST .gz files (offline)")
    args = parse(parser, argv)   # first: XLA tuning, --distributed
    variants = tuple(v for v in args.variants.split(",") if v)
    if not set(variants) <= set(studies.VARIANTS):
        parser.error(f"--variants must be a subset of {','.join(studies.VARIANTS)}")
    result = studies.run_ablation(args.datasets, args.preset, args.workdir, studies.data_for(args.mnist_dir),
                                  studies.flag_tweak(args),
                                  variants, args.regression_weight, device_mesh(args), not args.quiet)
    print(json.dumps({d: {v: r["delta_e"] for v, r in rows.items()} for d, rows in result["table"].items()},
                     indent=1))
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
