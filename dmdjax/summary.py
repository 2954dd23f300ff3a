"""The results schema: what a run's and a student's results.json hold, and the columns of every results table.

`pipeline` writes summaries through `run_summary`, `studies` keeps students through `study_row` and
`regime_row`, `report` draws tables from `COLUMNS` and `REGIME_COLUMNS`. A metric that `evaluation` adds to a
student's results reaches every results table, the run's `table_ci` and the studies' rows by one entry here.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable

import numpy as np

from dmdjax import configs, files, quality

__all__ = ["Column", "COLUMNS", "REGIME_COLUMNS", "CI_KEYS", "STUDY_KEYS", "REGIME_SUMS", "run_summary",
           "study_row", "regime_row", "student_cells", "regime_cells", "record_kappa", "paper_lr_sum_row",
           "kappa_at_sum"]

# A student's numbers that the run's summary repeats per snapshot (`table_ci`) and the studies keep per student.
CI_KEYS = ("delta_e", "delta_e_ci", "kappa", "kappa_ci", "kappa_reliable", "delta_e_phi1", "delta_e_phi1_ci",
           "kappa_phi1", "converged")
STUDY_KEYS = ("delta_e", "delta_e_ci", "kappa", "kappa_ci", "kappa_reliable", "e_dt", "e_ot", "delta_e_phi1",
              "delta_e_phi1_ci", "kappa_phi1", "dist_phi1_ref_mean", "dist_g_ref_mean", "dist_g_phi1_mean",
              "final_dm_loss", "distill_wall_s", "converged")
REGIME_SUMS = (0.02, 0.05, 0.1)   # sums of DMD learning rates at which the regime study reads kappa


# ----------------------------------------------------------------------------------------------------------
# Run and student summaries.

def run_summary(summary: dict, snapshots, order, wall_s: dict[str, float], invocation_s: float) -> dict:
    """A run's results.json from its students so far (`summary["snapshots"]`, by teacher step): `complete` and
    `pending` (in distillation `order`), the teacher's quality per snapshot, `table` (Delta_E) and `table_ci`
    (`CI_KEYS`) per snapshot, wall times summed over invocations (`wall_s`, by stage) and this invocation's."""
    done = {str(s): summary["snapshots"][str(s)] for s in snapshots if str(s) in summary["snapshots"]}
    out = {**summary, "snapshots": done, "complete": len(done) == len(snapshots),
           "pending": [s for s in order if str(s) not in done]}
    table = quality.teacher_quality_table(done)
    if table:
        out["teacher_quality"] = table
        clf = next((r["classifier"] for r in done.values() if "classifier" in r), None)
        if clf is not None:
            out["classifier_test_accuracy"] = clf["test_accuracy"]
    out["table"] = {s: r["delta_e"] for s, r in done.items()}
    out["table_ci"] = {s: {k: r[k] for k in CI_KEYS if k in r} for s, r in done.items()}
    out["total_wall_s"] = sum(wall_s.values())
    out["total_wall_s_this_invocation"] = invocation_s
    return out


def study_row(res: dict) -> dict:
    """A student's results as a study's table keeps them (`STUDY_KEYS` and its distribution fit)."""
    return {**{k: res[k] for k in STUDY_KEYS if k in res}, **res.get("fit", {})}


def record_kappa(rows: list[dict]) -> tuple[float, float, float, int] | None:
    """(mean, min, max, count) of kappa over the second half of a convergence record (rows with step >= half the
    last step): how far a student that has not converged still swings. None without rows."""
    if not rows:
        return None
    last = max(r["step"] for r in rows)
    kappas = np.array([r["kappa"] for r in rows if r["step"] >= last / 2], dtype=float)
    return float(kappas.mean()), float(kappas.min()), float(kappas.max()), len(kappas)


def paper_lr_sum_row(rows: list[dict], summary: dict) -> dict | None:
    """The record row at the iteration where the student's learning rates add up to the paper's (50,000 x 2e-6;
    `configs.judge_after`), or None (no config, no record, or the student stopped earlier)."""
    lr = summary.get("config", {}).get("distill", {}).get("lr_gen")
    if not lr or not rows:
        return None
    return next((r for r in rows if r["step"] == configs.judge_after(lr)), None)


def kappa_at_sum(rows: list[dict], lr: float, lr_sum: float) -> dict | None:
    """The record row at the iteration where lr x iterations = lr_sum, or None when the record has none there."""
    step = round(lr_sum / lr)
    return next((r for r in rows if r["step"] == step), None)


def regime_row(arm: str, factor: str, cfg, student: dict, rows: list[dict], peak_rss_gib: float | None) -> dict:
    """One student of the regime study as results.json's `arms` list holds it (kappa_matched: at the paper's sum
    of learning rates 0.1 when the record reaches it, else at the record's last row, `matched_at` says which)."""
    lr = cfg.distill.lr_gen
    iterations = student.get("convergence", {}).get("iterations", cfg.distill.iterations)
    matched = kappa_at_sum(rows, lr, configs.PAPER_LR_SUM) or (rows[-1] if rows else None)
    frechet = student.get("frechet", {})
    at_sum = lambda r: None if r is None else {"kappa": r["kappa"], "kappa_ci": r["kappa_ci"]}
    return {"name": arm, "factor": factor, "teacher_steps": student["teacher_steps"],
            "teacher_ema": cfg.teacher.ema and cfg.teacher.distill_ema, "lr": lr, "iterations": iterations,
            "lr_sum": lr * iterations, "warmup": cfg.distill.warmup,
            "regression_weight": cfg.distill.regression_weight,
            "kappa_matched": None if matched is None else matched["kappa"],
            "kappa_matched_ci": None if matched is None else matched["kappa_ci"],
            "matched_at": None if matched is None else {"step": matched["step"], "lr_sum": lr * matched["step"]},
            "kappa_at_sum": {str(s): at_sum(kappa_at_sum(rows, lr, s)) for s in REGIME_SUMS},
            "kappa_final": student["kappa"], "kappa_final_ci": student["kappa_ci"],
            "delta_e": student["delta_e"], "delta_e_ci": student["delta_e_ci"],
            "covered": rows[-1].get("covered") if rows else None,
            "covered_max": max((r.get("covered") or 0.0 for r in rows), default=None),
            "fd_g": frechet.get("g"), "fd_phi8": frechet.get("phi_8"),
            "frac_g_closer_than_phi1": student.get("frac_g_closer_than_phi1"),
            "converged": student.get("converged"),
            "wall_s": student.get("distill_wall_s", 0.0) + student.get("evaluate_wall_s", 0.0),
            "peak_rss_gib": peak_rss_gib}


# ----------------------------------------------------------------------------------------------------------
# Table columns. A cell is "" where a student lacks the number; `report.markdown_table` drops empty columns.

@dataclasses.dataclass(frozen=True)
class Column:
    """One column of a results table: its header and its cell from (student result, context)."""
    head: str
    cell: Callable[[dict, "Context"], str]


@dataclasses.dataclass(frozen=True)
class Context:
    """What a cell may read besides the student's result: its teacher step, the run's summary and the student's
    convergence record (rows of record.jsonl; empty without a run directory)."""
    step: str
    summary: dict
    record: list


def _interval(value, ci, digits: int = 3) -> str:
    return f"{value:.{digits}g} [{ci[0]:.{digits}g}, {ci[1]:.{digits}g}]"


def _heldout_loss(r: dict, _) -> str:
    loss = r.get("teacher_quality", {}).get("heldout_edm_loss")
    loss = loss["loss"] if isinstance(loss, dict) else loss
    return "" if loss is None else f"{loss:.4f}"


def _joined(key: str, names, fmt: str) -> Callable[[dict, Context], str]:
    return lambda r, _: " / ".join(f"{r.get(key, {})[n]:{fmt}}" for n in names if n in r.get(key, {}))


def _floor(r: dict, _) -> str:
    floor = r.get("teacher_floor_phi_32")
    return "" if floor is None else _interval(floor["delta_e"], floor["delta_e_ci"])


def _frechet(r: dict, _) -> str:
    fd, k = r.get("frechet", {}), r.get("k_ref", 8)
    return " / ".join(f"{fd[n]:.1f}" for n in ("g", f"phi_{k}") if n in fd)


def _at_paper_sum(_, ctx: Context) -> str:
    at = paper_lr_sum_row(ctx.record, ctx.summary)
    return "" if at is None else f"{at['kappa']:.2f} ({at['step']}) [{at['kappa_ci'][0]:.2f}, {at['kappa_ci'][1]:.2f}]"


def _converged(r: dict, _) -> str:
    return f"{'yes' if r.get('converged') else 'no'} ({r.get('convergence', {}).get('iterations', '?')})" \
        if "converged" in r else ""


def _swing(_, ctx: Context) -> str:
    swing = record_kappa(ctx.record)
    return "" if swing is None else f"{swing[0]:.2f} [{swing[1]:.2f}, {swing[2]:.2f}] ({swing[3]} evals)"


def _moved(r: dict, _) -> str:
    return "" if r.get("dist_g_phi1_mean") is None else f"{r['dist_g_phi1_mean']:.2f}"


COLUMNS = (
    Column("teacher steps", lambda r, ctx: ctx.step),
    Column("held-out EDM loss", _heldout_loss),
    Column("Delta_E(Phi_8, G) [95 % CI]", lambda r, _: _interval(r["delta_e"], r["delta_e_ci"])),
    Column("kappa [95 % CI]", lambda r, _: _interval(r["kappa"], r["kappa_ci"], 2)
           + ("" if r.get("kappa_reliable", True) else " (unreliable)")),
    Column("Delta_E(Phi_8, Phi_1)", lambda r, _: _interval(r["delta_e_phi1"], r["delta_e_phi1_ci"])),
    Column("floor Delta_E(Phi_8, Phi_32)", _floor),
    Column("W2 G / floor / Phi_1", _joined("fit", ("w2_student", "w2_teacher_floor", "w2_phi1"), ".2f")),
    Column("W2 Phi_8 to data / data floor", _joined("teacher_fit", ("w2_teacher_data", "w2_data_floor"), ".2f")),
    Column("FD G / Phi_8", _frechet),
    Column("mean ||G - Phi_1||", _moved),
    Column("kappa at the paper's sum of lr (iteration) [95 % CI]", _at_paper_sum),
    Column("converged (iterations)", _converged),
    Column("kappa, 2nd half of record: mean [min, max]", _swing),
)


def student_cells(summary: dict, run_dir: Path | None = None) -> list[list[str]]:
    """The cells of a run's table, one list per teacher snapshot (`COLUMNS`), the records read from run_dir."""
    rows = []
    for step, r in sorted(summary["snapshots"].items(), key=lambda kv: int(kv[0])):
        record = [] if run_dir is None else files.read_lines(Path(run_dir) / f"student_{step}" / "record.jsonl")
        rows.append([c.cell(r, Context(str(step), summary, record)) for c in COLUMNS])
    return rows


def _regime_arm(r: dict, _) -> str:
    return r["name"] + (f" (weight {r['regression_weight']:g})" if r.get("regression_weight") else "")


def _matched(r: dict, _) -> str:
    m = r["matched_at"]
    return "" if m is None else f"{_interval(r['kappa_matched'], r['kappa_matched_ci'], 2)} at S = {m['lr_sum']:.3g}"


def _at_005(r: dict, _) -> str:
    at = r["kappa_at_sum"].get("0.05")
    return "" if at is None else _interval(at["kappa"], at["kappa_ci"], 2)


REGIME_COLUMNS = (
    Column("arm", _regime_arm),
    Column("snapshot", lambda r, _: str(r["teacher_steps"])),
    Column("teacher weights", lambda r, _: "EMA" if r["teacher_ema"] else "raw"),
    Column("DMD lr", lambda r, _: f"{r['lr']:g}"),
    Column("iterations (S)", lambda r, _: f"{r['iterations']} ({r['lr_sum']:.3g})"),
    Column("kappa at S = 0.05", _at_005),
    Column("kappa at S = 0.1 (or last)", _matched),
    Column("kappa final", lambda r, _: _interval(r["kappa_final"], r["kappa_final_ci"], 2)),
    Column("Delta_E final", lambda r, _: _interval(r["delta_e"], r["delta_e_ci"])),
    Column("covered last / max", lambda r, _: "" if r.get("covered") is None
           else f"{r['covered']:.2f} / {r['covered_max']:.2f}"),
    Column("FD G / Phi_8", lambda r, _: "" if r.get("fd_g") is None else f"{r['fd_g']:.1f} / {r['fd_phi8']:.1f}"),
    Column("converged", lambda r, _: "yes" if r.get("converged") else "no"),
)


def regime_cells(summary: dict) -> list[list[str]]:
    """The cells of the regime study's table, one list per student (`REGIME_COLUMNS`)."""
    return [[c.cell(r, None) for c in REGIME_COLUMNS] for r in summary["arms"]]
