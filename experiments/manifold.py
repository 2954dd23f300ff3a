"""The conditional synthetic MLP-manifold data set (paper App. A, Fig. 8-10): 16-D Gaussian noise through a
seeded random two-layer MLP to 32x32x1 plus a class stripe; teacher -> one-step DMD student -> copying.

    python experiments/manifold.py --preset=cpu --workdir=runs/manifold_cpu
    python experiments/manifold.py --preset=paper --workdir=runs/manifold

Rerunning the same command resumes from the last checkpoint.
"""
from __future__ import annotations

import json

from dmdjax import cli, configs, data, pipeline


def main(argv=None) -> dict:
    parser = cli.make_parser(__doc__)
    cli.add_common_flags(parser, presets=configs.manifold)
    parser.add_argument("--data_seed", type=int, default=0, help="seed of the random MLP and of the training set")
    parser.add_argument("--train_size", type=cli.positive_int, default=60_000, help="training-set size (MNIST's)")
    parser.add_argument("--snapshots", type=cli.snapshot_list,
                        help="teacher steps to keep and distill (<= --teacher_steps; default: the final teacher)")
    args = cli.parse(parser, argv)
    cli.start(args)              # before any JAX computation: XLA:CPU tuning on a CPU-only host, --distributed
    cfg = cli.apply_common_flags(configs.manifold(cli.resolve_preset(args)), args)
    snapshots = args.snapshots or (cfg.teacher.steps,)
    cfg = configs.override(cfg, dataset=f"manifold(seed={args.data_seed}, n={args.train_size})",
                           distill_snapshots=snapshots)
    cli.print_config_and_exit(cfg, args)
    mesh = cli.check(cfg, args)  # every config error, before data, training and config.json
    workdir = cli.workdir(cfg, args)
    cli.announce(cfg, args)
    dataset = data.load(cfg, data_seed=args.data_seed, train_size=args.train_size)
    summary = pipeline.run(cfg, dataset, workdir, mesh=mesh, progress=not args.quiet,
                           results_dir=args.results_dir)
    print(json.dumps({"workdir": str(workdir), "delta_e": summary["table"], "with_ci": summary["table_ci"]},
                     indent=1))
    return summary


if __name__ == "__main__":
    cli.run(main)
