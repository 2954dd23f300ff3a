"""Figures 8-10 of the paper (App. A) from finished conditional runs: quadruples per data set (Fig. 8), PCA of
the (Phi_8, Phi_1, G) triplets (Fig. 9) and ||Phi_1 - Phi_8|| against ||G - Phi_8|| (Fig. 10).

    python experiments/conditional_figures.py --out=runs/fig8_10 \\
        --run "conditional MNIST=runs/mnist_cond_cpu" --run "MLP manifold=runs/manifold_cpu" \\
        [--run "ImageNet-64=runs/imagenet64"]

Each run directory is one written by experiments/mnist_cond.py, manifold.py or imagenet64.py; its most-trained
student (`student_<largest teacher step>`, or `student`) is drawn. Writes fig8.png, fig9.png, fig10.png and
results.json (Delta_E per data set) to --out. Needs no network and no GPU: it only reads samples.npz.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from dmdjax import figures, metrics


def student_dir(run: Path) -> Path:
    """The run's most-trained finished student: student_<largest step> (MNIST / manifold) or student (ImageNet)."""
    done = [d for d in run.glob("student*") if (d / "samples.npz").exists() and (d / "results.json").exists()]
    if not done:
        raise FileNotFoundError(f"no finished student (samples.npz + results.json) under {run}; run the experiment "
                                f"to the end first")
    return max(done, key=lambda d: int(d.name.split("_")[-1]) if d.name[-1].isdigit() else 1 << 62)


def parse_run(text: str) -> tuple[str, Path]:
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"--run takes NAME=DIR, got {text!r}")
    return name, Path(path)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=parse_run, action="append", required=True, help="NAME=RUN_DIR (repeatable)")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--k", type=int, default=8, help="the teacher's reference step count K (paper: 8)")
    parser.add_argument("--n_show", type=int, default=30, help="quadruples per data set in Fig. 8")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    quads, pcas, dists, table = {}, {}, {}, {}
    ref = f"phi_{args.k}"
    for name, run in args.run:
        sdir = student_dir(run)
        s = dict(np.load(sdir / "samples.npz"))
        result = json.loads((sdir / "results.json").read_text())
        rows = {f"Phi_{k}": s[f"phi_{k}"] for k in sorted(int(key[4:]) for key in s if key.startswith("phi_"))}
        quads[name] = {**rows, "G": s["g"]}
        p_ref, p_1, p_g = metrics.pca_projection(s[ref], s["phi_1"], s["g"])
        pcas[name] = {f"Phi_{args.k}": np.asarray(p_ref), "Phi_1": np.asarray(p_1), "G": np.asarray(p_g)}
        dists[name] = (s["dist_phi1"], s["dist_g"])
        table[name] = {"run": str(sdir), "delta_e": result["delta_e"], "n": result["n"],
                       **{k: result[k] for k in ("delta_e_ci", "kappa", "kappa_ci", "kappa_reliable") if k in result},
                       "pca_triplets": int(len(s[ref])),
                       "frac_g_closer_than_phi1": float(np.mean(s["dist_g"] < s["dist_phi1"]))}
    figures.save(figures.quadruple_panels(quads, args.n_show), out / "fig8.png")
    figures.save(figures.pca_grid(pcas), out / "fig9.png")
    figures.save(figures.distance_panels(dists, f"||Phi_1 - Phi_{args.k}||", f"||G - Phi_{args.k}||"),
                 out / "fig10.png")
    (out / "results.json").write_text(json.dumps(table, indent=1))
    print(json.dumps(table, indent=1))
    return table


if __name__ == "__main__":
    main(sys.argv[1:])
