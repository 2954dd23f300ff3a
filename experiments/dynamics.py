"""Copying dynamics (issue 7; paper Sec. 4.2, Fig. 4): Delta_E(Phi_8, G_t) on the N shared noises every M
distillation iterations, plotted beside the DM loss, so one sees when during distillation the pairing is decided.
Also Delta_E(G_T, G_t) against the final student: when the student's own pairing stops changing.

    python experiments/dynamics.py --preset=cpu --workdir=runs/dynamics --mnist_dir=../shared/data/mnist

Defaults: chessboard (4000 iterations, M = 200) and MNIST (one teacher, 400 iterations, M = 20). Each dataset is
a pipeline run directory workdir/<dataset>/ with student_<snap>/dynamics.jsonl; workdir/results.json and
workdir/dynamics.png summarise. Rerunning the same command resumes.
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
    parser.add_argument("--every", type=positive_int,
                        help="M, iterations between Delta_E measurements (multiple of 5; default: toys 200, MNIST "
                             "20, paper 1000)")
    parser.add_argument("--width", type=positive_int, help="toys: MLP hidden width (default: the preset's 384)")
    parser.add_argument("--mnist_dir", default=None, help="directory with the four MNIST .gz files (offline)")
    args = parse(parser, argv)   # first: XLA tuning, --distributed
    result = studies.run_dynamics_study(args.datasets, args.preset, args.workdir,
                                        studies.data_for(args.mnist_dir), studies.flag_tweak(args),
                                        args.every, device_mesh(args), not args.quiet)
    print(json.dumps({d: dict(zip(r["step"], r["delta_e"])) for d, r in result["runs"].items()}, indent=1))
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
