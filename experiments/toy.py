"""The 2-D toys in R^4 (paper Sec. 3.3, Fig. 2, 3 left, 7): teacher -> one-step DMD student -> Delta_E.

    python experiments/toy.py --dataset=chessboard --preset=cpu --workdir=runs/chessboard

`--set KEY=VALUE` changes any config field, `--print_config` shows the result. Rerunning the same command resumes
from the last checkpoint.
"""
from __future__ import annotations

from dmdjax import cli, configs
from dmdjax.data.toy import DATASETS


def main(argv=None) -> dict:
    return cli.experiment_main(
        argv, __doc__, configs.toy,
        add_flags=lambda parser: parser.add_argument("--dataset", choices=DATASETS, default="chessboard"),
        options=lambda args: {"dataset": args.dataset})


if __name__ == "__main__":
    cli.run(main)
