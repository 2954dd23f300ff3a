"""The teacher-length trend test (`dmdjax.verdict.trend_test`) on committed results, kappa and Delta_E, written as
JSON beside the evidence. Each results folder is one run (one teacher, one DMD seed); give only independent runs.

    python tools/trend_test.py results/mnist_trend_raw results/mnist_trend_raw_seed1 --out=results/mnist_trend_raw/trend_test.json
"""
import argparse
from pathlib import Path

from dmdjax import files, verdict


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="results folders, each with a results.json")
    parser.add_argument("--out", type=Path, required=True, help="the JSON file to write")
    args = parser.parse_args(argv)
    pts = [p for run in args.runs for p in verdict.points(run / "results.json")]
    result = {"runs": [str(r) for r in args.runs], "points": pts,
              "tests": {stat: verdict.trend_test(pts, stat) for stat in ("kappa", "delta_e")}}
    files.write_json(args.out, result)
    for stat, t in result["tests"].items():
        print(f"{stat}: rho {t['spearman_rho']:.2f}, p {t['p_value']:.3f}: {t['verdict']}")
    return result


if __name__ == "__main__":
    main()
