"""The 2-D toys in R^4 (paper Sec. 3.3, Fig. 2, 3 left, 7): teacher -> one-step DMD student -> Delta_E.

    python experiments/toy.py --dataset=chessboard --preset=cpu --workdir=runs/chessboard

Rerunning the same command resumes from the last checkpoint.
"""
from __future__ import annotations

import argparse
import functools
import json
import sys

from dmdjax import configs, pipeline
from dmdjax.cli import add_common_flags, apply_common_flags, device_mesh, parse, positive_int
from dmdjax.data import toy


@functools.lru_cache(maxsize=None)
def toy_dataset(name: str) -> pipeline.Dataset:
    """One Dataset object per toy, so repeated runs in a process reuse compiled steps."""
    sample = toy.get_sampler(name)
    return pipeline.Dataset(name=name, shape=(toy.DIM,), sample=lambda key, n, consts: (sample(key, n), None))


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", choices=toy.DATASETS, default="chessboard")
    add_common_flags(parser)
    args = parse(parser, argv)   # first: XLA tuning, --distributed
    cfg = apply_common_flags(configs.toy(args.dataset, args.preset), args)
    summary = pipeline.run(cfg, toy_dataset(args.dataset), args.workdir, mesh=device_mesh(args),
                           progress=not args.quiet)
    print(json.dumps({"workdir": args.workdir, "delta_e": summary["table"], "with_ci": summary["table_ci"]},
                     indent=1))
    return summary


if __name__ == "__main__":
    main(sys.argv[1:])
