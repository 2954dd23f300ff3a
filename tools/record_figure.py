"""kappa of several runs' convergence records against the DMD iteration, one panel per teacher snapshot, with the
iteration where the learning rates add up to the paper's (dashed): e.g. conditional against unconditional
students of the same snapshots.

    python tools/record_figure.py --run unconditional=results/mnist_trend_raw --run "seed 1=results/mnist_trend_raw_seed1" \\
        --run conditional=results/mnist_trend_cond_raw --snapshots=512,8192 --out=results/mnist_trend_cond_raw/kappa_records.png
"""
import argparse
import json
from pathlib import Path

from dmdjax import configs, figures, files


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", action="append", required=True, help="LABEL=DIR (a run or results directory)")
    parser.add_argument("--snapshots", required=True, help="comma-separated teacher steps, one panel each")
    parser.add_argument("--out", required=True, help="the PNG to write")
    args = parser.parse_args(argv)
    runs = [r.split("=", 1) for r in args.run]
    if any(len(r) != 2 for r in runs):
        parser.error("--run takes LABEL=DIR")
    snapshots = [s for s in args.snapshots.split(",") if s]
    fig, axes = figures.subplots(1, len(snapshots), figsize=(5 * len(snapshots), 3.8), squeeze=False)
    for ax, step in zip(axes[0], snapshots):
        series, lr_sum = {}, set()
        for label, directory in runs:
            rows = files.read_lines(Path(directory) / f"student_{step}" / "record.jsonl")
            if not rows:
                raise SystemExit(f"{directory} has no record of student_{step}")
            series[label] = ([r["step"] for r in rows], [r["kappa"] for r in rows])
            lr = json.loads((Path(directory) / "results.json").read_text())["config"]["distill"]["lr_gen"]
            lr_sum.add(configs.judge_after(lr))
        figures.line_plot(series, "DMD iteration", "kappa (0 copies, ~1 random pairing)",
                          title=f"teacher {step} steps", ax=ax)
        for t in lr_sum:
            ax.axvline(t, ls="--", lw=0.8, color="gray")
    figures.save(fig, args.out)
    print(args.out)


if __name__ == "__main__":
    main()
