"""Unconditional MNIST (paper Sec. 3.4, 4.2, App. B; Fig. 1, 3-6, 11, 12): one teacher, snapshots chained
into one-step DMD students, copying measured per snapshot.

    python experiments/mnist_uncond.py --teacher_steps=8192 --preset=paper --workdir=runs/mnist
    python experiments/mnist_uncond.py --preset=cpu --workdir=runs/mnist_cpu --mnist_dir=../shared/data/mnist

MNIST comes through tensorflow-datasets; offline, give the four original files with --mnist_dir (or
DMDJAX_MNIST_DIR). Rerunning the same command resumes from the last checkpoint.
"""
from __future__ import annotations

import argparse
import json
import sys

from dmdjax import configs, pipeline
from dmdjax.cli import add_common_flags, add_mnist_flags, apply_common_flags, device_mesh, mnist_dataset, parse


def main(argv=None, conditional: bool = False) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_flags(parser)
    add_mnist_flags(parser)
    args = parse(parser, argv)   # first: XLA tuning, --distributed
    cfg = apply_common_flags(configs.mnist(args.preset, conditional=conditional), args)
    snapshots = args.snapshots or tuple(sorted({s for s in cfg.teacher.snapshots if s <= cfg.teacher.steps}
                                               | {cfg.teacher.steps}))
    cfg = configs.override(cfg, **{"teacher.snapshots": snapshots, "distill_snapshots": snapshots})
    data = mnist_dataset(cfg, args.mnist_dir)
    summary = pipeline.run(cfg, data, args.workdir, mesh=device_mesh(args),
                           progress=not args.quiet)
    held_out = {k: summary[k] for k in ("classifier_test_accuracy", "teacher_quality") if k in summary}
    print(json.dumps({"workdir": args.workdir, "delta_e": summary["table"], **held_out}, indent=1))
    return summary


if __name__ == "__main__":
    main(sys.argv[1:])
