"""Figures and titles of a run, drawn from the arrays and numbers `dmdjax.evaluation` computed: a student's
pairing, quadruples / quintuples, PCA, heat map, boundary and memorization figures (Fig. 1-3, 5, 6, 9-12), and
the run's DM-loss curves (Fig. 4), teacher quality and copying trend."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from dmdjax import figures, files, metrics, quality
from dmdjax import summary as schema
from dmdjax.data import Dataset
from dmdjax.config import Config

__all__ = ["ci_text", "student_figures", "run_figures", "snapshot_table", "runs_table", "regime_table",
           "readme_tables", "update_readme"]


def ci_text(result: dict, suffix: str = "") -> str:
    """'Delta_E = 0.12 [0.10, 0.15], kappa = 0.4 [0.3, 0.5]' from result fields (`evaluation.ci_fields`), for
    titles; kappa is marked 'unreliable' when Delta_E_null is too small for it to mean anything."""
    lo, hi = result[f"delta_e{suffix}_ci"]
    klo, khi = result[f"kappa{suffix}_ci"]
    flag = "" if result[f"kappa{suffix}_reliable"] else " (unreliable)"
    return (f"Delta_E = {result[f'delta_e{suffix}']:.3g} [{lo:.3g}, {hi:.3g}], "
            f"kappa = {result[f'kappa{suffix}']:.2g} [{klo:.2g}, {khi:.2g}]{flag}")


def student_figures(cfg: Config, data: Dataset, outdir: Path, arrays: dict, result: dict, dm_curve: tuple,
                    train_images=None) -> None:
    """A student's figures in outdir from `evaluation.evaluate`'s arrays (samples on the shared noises, the
    distances to Phi_K, the copying statistics) and result (titles)."""
    outdir = Path(outdir)
    n, k = cfg.eval_n, cfg.k_ref
    s = {key: v for key, v in arrays.items() if key.startswith("phi_") or key == "g"}
    if data.kind == "images":
        _pairing_figures(s, arrays["dist_phi1"], arrays["dist_g"], outdir, k)
    if "copying_stats" in arrays:
        _copying_figures(s, arrays["copying_stats"], train_images, outdir, cfg, result["boundary"])
    z = np.asarray(arrays["z"][:n])
    s = {key: v[:n] for key, v in s.items()}
    ref_name, ref = f"Phi_{k}", s[f"phi_{k}"]
    tag = f"{cfg.name}, {outdir.name.replace('_', ' ')}: {ci_text(result)}"
    if data.kind == "points":
        fig = figures.pairing_scatter({"z": z, ref_name: ref, "Phi_1": s["phi_1"], "G": s["g"]}, z, tag, lim=3.0)
        figures.save(fig, outdir / "pairing.png")
    else:
        rows = {f"Phi_{j}": s[f"phi_{j}"] for j in sorted(set(cfg.eval_ks) | set(cfg.figure_ks))}
        figures.save(figures.image_rows({**rows, "G": s["g"]}, title=tag), outdir / "quadruples.png")
    m = min(100, len(z))
    sub = metrics.transport_energies(ref[:m], s["g"][:m])
    figures.save(figures.distance_heatmap(ref[:m], s["g"][:m], np.asarray(sub.assignment),
                                          f"{m} pairs, Delta_E = {float(sub.delta_e):.3g}"), outdir / "heatmap.png")
    figures.save(figures.dm_loss_curves({outdir.name: dm_curve}), outdir / "dm_loss.png")


def _pairing_figures(s: dict, dist_1, dist_g, outdir: Path, k: int) -> None:
    """Image data: PCA of the (Phi_K, Phi_1, G) triplets on the leading components of Phi_K (Fig. 1 bottom, 9)
    and ||Phi_1 - Phi_K|| against ||G - Phi_K|| per seed (Fig. 10, 11 bottom)."""
    p_ref, p_1, p_g = metrics.pca_projection(s[f"phi_{k}"], s["phi_1"], s["g"])
    figures.save(figures.pca_triplets({f"Phi_{k}": p_ref, "Phi_1": p_1, "G": p_g}, np.asarray(p_ref)),
                 outdir / "pca.png")
    figures.save(figures.displacement_scatter(dist_1, dist_g, f"||Phi_1 - Phi_{k}||", f"||G - Phi_{k}||"),
                 outdir / "distances.png")


def _copying_figures(s: dict, stats: dict, train_images, outdir: Path, cfg: Config, boundary: dict) -> None:
    """Quintuples with the two nearest training images (Fig. 6 / 11 top), D(z) vs delta(z) (Fig. 5) and the
    memorization-ratio histogram (Fig. 12)."""
    k, m = cfg.k_ref, cfg.n_show
    train = np.asarray(train_images)
    rows = {"Phi_1": s["phi_1"][:m], f"Phi_{k}": s[f"phi_{k}"][:m], "G": s["g"][:m],
            "x1": train[stats["neighbours"][:m, 0]], "x2": train[stats["neighbours"][:m, 1]]}
    figures.save(figures.image_rows(rows, m), outdir / "quintuples.png")
    corr, partial = boundary["corr_d_delta"], boundary["partial_corr_d_delta_given_dist_phi1"]
    figures.save(figures.displacement_scatter(
        stats["d_z"], stats["delta"], "D(z)", "delta(z)", diagonal=False, hline=0.0,
        title=f"corr = {corr:.3f}, partial corr | ||Phi_1 - Phi_{k}|| = {partial:.3f}"), outdir / "boundary.png")
    figures.save(figures.histogram(stats["r"], f"r(Phi_{k}(z))"), outdir / "memorization.png")


def run_figures(summary: dict, workdir: Path, curves: dict, k_ref: int) -> None:
    """Draw the run's figures over snapshots: DM loss of every student (Fig. 4), the teacher's quality
    (`summary["teacher_quality"]`, from `summary.run_summary`) and, with two or more students, Delta_E / kappa
    against teacher steps and quality."""
    workdir = Path(workdir)
    if "teacher_quality" in summary:
        figures.save(quality.teacher_quality_figure(summary["teacher_quality"], k_ref), workdir / "teacher_quality.png")
    figures.save(figures.dm_loss_curves(curves), workdir / "dm_loss.png")
    if len(summary["snapshots"]) > 1:
        figures.save(figures.copying_trend(summary["snapshots"], summary.get("teacher_quality")),
                     workdir / "trend.png")


def markdown_table(head: Sequence[str], rows: list[list[str]]) -> str:
    """A Markdown table without the columns that are empty in every row."""
    keep = [c for c in range(len(head)) if any(row[c] for row in rows)]
    lines = ["| " + " | ".join(row[c] for c in keep) + " |" for row in (head, *rows)]
    return "\n".join([lines[0], "|" + "---|" * len(keep), *lines[1:]])


def snapshot_table(summary: dict, run_dir: Path | None = None) -> str:
    """A run's results.json (`pipeline.run`'s summary) as a Markdown table, one row per teacher snapshot and one
    column per `dmdjax.summary.COLUMNS` entry (the records read from run_dir/student_<s>/record.jsonl); columns no
    row has are left out. The results pages' tables are these (a test compares them)."""
    return markdown_table([c.head for c in schema.COLUMNS], schema.student_cells(summary, run_dir))


def runs_table(runs: Sequence[tuple[str, dict, Path | None]]) -> str:
    """Several runs' summaries in one table (`snapshot_table` with a first column naming the run): e.g. the toys,
    one results directory each."""
    rows = [[label, *cells] for label, summary, run_dir in runs for cells in schema.student_cells(summary, run_dir)]
    return markdown_table(("run", *(c.head for c in schema.COLUMNS)), rows)


def regime_table(summary: dict) -> str:
    """The regime study's results.json (`studies.run_regime`: an `arms` list) as a Markdown table, one row per
    student (`dmdjax.summary.REGIME_COLUMNS`): kappa against the sum of learning rates S, final kappa and Delta_E
    with 95 % intervals, covered, Frechet distances, the convergence verdict."""
    return markdown_table([c.head for c in schema.REGIME_COLUMNS], schema.regime_cells(summary))


TABLE_BEGIN, TABLE_END = "<!-- table: {} -->", "<!-- /table -->"


def readme_tables(readme: str, results_root: Path,
                  generated: dict[str, Callable[[Path], str]] | None = None) -> dict[str, tuple[str, str]]:
    """{experiment: (table in the page, table from results_root/<experiment>/results.json)} for every
    `<!-- table: <experiment> -->` ... `<!-- /table -->` block of a page's text (README or a results page);
    a name in `generated` is made by its function of `results_root` instead."""
    out = {}
    for chunk in readme.split(TABLE_BEGIN.split("{}")[0])[1:]:
        name, rest = chunk.split(" -->", 1)
        text = rest.split(TABLE_END, 1)[0].strip()
        if name in (generated or {}):
            out[name] = (text, generated[name](Path(results_root)))
            continue
        dirs = [Path(results_root) / part for part in name.split("+")]   # "a+b": one table of several runs
        summaries = [json.loads((d / "results.json").read_text()) for d in dirs]
        if "arms" in summaries[0]:                 # a regime study (`studies.run_regime`)
            out[name] = (text, regime_table(summaries[0]))
            continue
        out[name] = (text, snapshot_table(summaries[0], dirs[0]) if len(dirs) == 1 else
                     runs_table([(d.name, s, d) for d, s in zip(dirs, summaries)]))
    return out


def update_readme(readme_path: Path, results_root: Path,
                  generated: dict[str, Callable[[Path], str]] | None = None) -> list[str]:
    """Rewrite a page's marked tables from the committed results; returns the experiments whose table changed."""
    text = Path(readme_path).read_text()
    tables = readme_tables(text, results_root, generated)
    changed = [name for name, (old, new) in tables.items() if old != new]
    for name in changed:
        begin = TABLE_BEGIN.format(name)
        head, rest = text.split(begin, 1)
        text = f"{head}{begin}\n{tables[name][1]}\n{TABLE_END}{rest.split(TABLE_END, 1)[1]}"
    files.write_text(readme_path, text)
    return changed
