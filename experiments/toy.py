"""The 2-D toys in R^4 (paper Sec. 3.3, Fig. 2, 3 left, 7): teacher -> one-step DMD student -> Delta_E.

    python experiments/toy.py --dataset=chessboard --preset=cpu --workdir=runs/chessboard

`--set KEY=VALUE` changes any config field, `--print_config` shows the result. Rerunning the same command resumes
from the last checkpoint.
"""
from __future__ import annotations

import json

from dmdjax import cli, configs, data, pipeline
from dmdjax.data import toy


def main(argv=None) -> dict:
    parser = cli.make_parser(__doc__)
    parser.add_argument("--dataset", choices=toy.DATASETS, default="chessboard")
    cli.add_common_flags(parser, presets=lambda p: configs.toy("chessboard", p))
    args = cli.parse(parser, argv)
    cli.start(args)              # before any JAX computation: XLA:CPU tuning on a CPU-only host, --distributed
    cfg = cli.apply_common_flags(configs.toy(args.dataset, cli.resolve_preset(args)), args)
    cli.print_config_and_exit(cfg, args)
    mesh = cli.check(cfg, args)  # every config error, before training and config.json
    workdir = cli.workdir(cfg, args)
    cli.announce(cfg, args)
    summary = pipeline.run(cfg, data.load(cfg), workdir, mesh=mesh, progress=not args.quiet,
                           results_dir=args.results_dir)
    print(json.dumps({"workdir": str(workdir), "delta_e": summary["table"], "with_ci": summary["table_ci"]},
                     indent=1))
    return summary


if __name__ == "__main__":
    cli.run(main)
