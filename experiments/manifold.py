"""The conditional synthetic MLP-manifold data set (paper App. A, Fig. 8-10): 16-D Gaussian noise through a
seeded random two-layer MLP to 32x32x1 plus a class stripe; teacher -> one-step DMD student -> copying.

    python experiments/manifold.py --preset=cpu --workdir=runs/manifold_cpu
    python experiments/manifold.py --preset=paper --workdir=runs/manifold

Rerunning the same command resumes from the last checkpoint.
"""
from __future__ import annotations

import argparse
import json
import sys

from dmdjax import configs, pipeline
from dmdjax.cli import add_common_flags, apply_common_flags, device_mesh, parse, positive_int, snapshot_list
from dmdjax.data.manifold import load_manifold


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_flags(parser)
    parser.add_argument("--data_seed", type=int, default=0, help="seed of the random MLP and of the training set")
    parser.add_argument("--train_size", type=positive_int, default=60_000, help="training-set size (MNIST's)")
    parser.add_argument("--snapshots", type=snapshot_list,
                        help="teacher steps to keep and distill (<= --teacher_steps; default: the final teacher)")
    args = parse(parser, argv)   # first: XLA tuning, --distributed
    cfg = apply_common_flags(configs.manifold(args.preset), args)
    snapshots = args.snapshots or (cfg.teacher.steps,)
    cfg = configs.override(cfg, dataset=f"manifold(seed={args.data_seed}, n={args.train_size})",
                           **{"teacher.snapshots": snapshots, "distill_snapshots": snapshots})
    images, labels = load_manifold(args.train_size, args.data_seed, resolution=cfg.net_kwargs["img_resolution"])
    data = pipeline.image_dataset(f"manifold-{args.data_seed}", images, labels, cfg.net_kwargs["label_dim"])
    summary = pipeline.run(cfg, data, args.workdir, mesh=device_mesh(args), progress=not args.quiet)
    print(json.dumps({"workdir": args.workdir, "delta_e": summary["table"], "with_ci": summary["table_ci"]},
                     indent=1))
    return summary


if __name__ == "__main__":
    main(sys.argv[1:])
