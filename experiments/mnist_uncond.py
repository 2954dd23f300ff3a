"""Unconditional MNIST (paper Sec. 3.4, 4.2, App. B; Fig. 1, 3-6, 11, 12): one teacher, snapshots chained
into one-step DMD students, copying measured per snapshot.

    python experiments/mnist_uncond.py --teacher_steps=8192
    python experiments/mnist_uncond.py --preset=cpu --workdir=runs/mnist_cpu --mnist_dir=../shared/data/mnist

The preset defaults to `paper` on a GPU/TPU and to `cpu` on a CPU-only host (the first printed line says which,
and what it holds); the work directory to runs/<config name>; the teacher snapshots distilled to T/8, T/4, T/2
and T of the teacher's T steps. `--set KEY=VALUE` changes any config field, `--print_config` shows the result.
MNIST comes through tensorflow-datasets (`pip install 'dmdjax[mnist]'`); offline, give the four original files
with --mnist_dir (or DMDJAX_MNIST_DIR). Rerunning the same command resumes from the last checkpoint.
"""
from __future__ import annotations

import json

from dmdjax import cli, configs, pipeline


def main(argv=None, conditional: bool = False, config=None, divisors=(8, 4, 2, 1), doc: str = __doc__) -> dict:
    """`config(preset) -> Config` (default: `configs.mnist`); the snapshots default to T / `divisors`."""
    config = config or (lambda p: configs.mnist(p, conditional=conditional))
    parser = cli.make_parser(doc)
    cli.add_common_flags(parser, presets=config)
    cli.add_mnist_flags(parser)
    args = cli.parse(parser, argv)
    cli.start(args)              # before any JAX computation: XLA:CPU tuning on a CPU-only host, --distributed
    cfg = cli.apply_common_flags(config(cli.resolve_preset(args)), args)
    snapshots = args.snapshots or cli.default_snapshots(cfg.teacher.steps, divisors)
    cfg = configs.override(cfg, distill_snapshots=snapshots)
    cli.print_config_and_exit(cfg, args)
    mesh = cli.check(cfg, args)  # every config error, before data, training and config.json
    workdir = cli.workdir(cfg, args)
    cli.announce(cfg, args)
    data = cli.mnist_dataset(cfg, args.mnist_dir)
    summary = pipeline.run(cfg, data, workdir, mesh=mesh, progress=not args.quiet,
                           results_dir=args.results_dir)
    held_out = {k: summary[k] for k in ("classifier_test_accuracy", "teacher_quality") if k in summary}
    print(json.dumps({"workdir": str(workdir), "delta_e": summary["table"], "with_ci": summary["table_ci"],
                      **held_out}, indent=1))
    return summary


if __name__ == "__main__":
    cli.run(main)
