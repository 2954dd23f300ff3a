"""Command-line flags shared by the experiments (argparse; `--flag=value` style)."""
from __future__ import annotations

import argparse

from dmdjax import configs


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def add_common_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", choices=configs.PRESETS, default="cpu",
                        help="cpu: minutes on a 2-core CPU; paper: the paper's App. D settings (GPU/TPU)")
    parser.add_argument("--workdir", required=True, help="run directory (checkpoints, results.json, figures)")
    parser.add_argument("--teacher_steps", type=positive_int, help="override the preset's teacher iterations")
    parser.add_argument("--distill_iterations", type=positive_int, help="override the preset's DMD iterations")
    parser.add_argument("--eval_n", type=positive_int, help="override N, the number of shared noises (>= 2)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def apply_common_flags(cfg, args):
    changes = {"seed": args.seed}
    if args.teacher_steps:
        changes["teacher.steps"] = args.teacher_steps
    if args.distill_iterations:
        changes["distill.iterations"] = args.distill_iterations
    if args.eval_n:
        changes["eval_n"] = args.eval_n
    return configs.override(cfg, **changes)
