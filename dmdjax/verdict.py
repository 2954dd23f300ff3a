"""The paper's claims against dmdjax's committed evidence: the teacher-length trend test (Sec. 4.2, Table 1).

The claim: a student copies more (kappa and Delta_E fall) the longer its teacher trained. The test reads the
per-student numbers of one or more runs (`points` from results.json files: a run = one teacher and one DMD seed)
and gives Spearman's rho of the statistic against teacher steps over every point, a one-sided permutation p-value
(alternative: rho < 0), and per run the difference between the latest and the earliest snapshot with its
interval. The verdict is one of VERDICTS, by the rule in `trend_test`.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import scipy.stats

__all__ = ["VERDICTS", "RULE", "points", "trend_test"]

VERDICTS = ("reproduced", "reproduced qualitatively", "not reproduced", "inconclusive")
RULE = ("reproduced qualitatively: p < alpha and every run's latest-minus-earliest interval below 0; not reproduced: "
        "p >= alpha and no run's interval below 0; inconclusive: otherwise; reproduced: as qualitatively, at the "
        "paper's scale only (Delta_E's units depend on the image dimension)")


def points(results_json: str | Path, run: str | None = None) -> list[dict]:
    """One point per distilled snapshot of a pipeline run's results.json: {run, teacher_steps, kappa, kappa_ci,
    delta_e, delta_e_ci, converged}; `run` names it (default: the results folder's name)."""
    path = Path(results_json)
    summary = json.loads(path.read_text())
    run = run or path.parent.name
    return [{"run": run, "teacher_steps": int(step), **{k: res[k] for k in ("kappa", "kappa_ci", "delta_e",
                                                                        "delta_e_ci")},
             "converged": res.get("converged")}
            for step, res in sorted(summary["snapshots"].items(), key=lambda kv: int(kv[0]))]


def _difference(late: dict, early: dict, stat: str, z: float) -> dict:
    """late - early with an interval from the two half-sample standard errors (each from its own interval),
    combined as if independent: conservative here, since the students share their evaluation noises, which
    correlates their errors positively."""
    se = [(p[f"{stat}_ci"][1] - p[f"{stat}_ci"][0]) / (2 * z) for p in (late, early)]
    d, s = late[stat] - early[stat], math.hypot(*se)
    return {"difference": d, "ci": [d - z * s, d + z * s], "late": late["teacher_steps"],
            "early": early["teacher_steps"]}


def trend_test(pts: list[dict], stat: str = "kappa", n_permutations: int = 10_000, seed: int = 0,
               level: float = 0.95, alpha: float = 0.05, same_scale: bool = False) -> dict:
    """Does `stat` fall with teacher steps? Returns {"stat", "n_points", "runs", "spearman_rho", "p_value",
    "differences": {run: late - early with "ci"}, "verdict", "rule"}.

    The verdict follows `RULE`; `same_scale` says the points come from the paper's scale (only then can the
    verdict be "reproduced").
    """
    steps = np.array([p["teacher_steps"] for p in pts], float)
    values = np.array([p[stat] for p in pts], float)
    if len(pts) < 3 or len(set(steps)) < 2:
        raise ValueError(f"the trend test needs at least 3 points over 2 teacher lengths, got {len(pts)}")
    if not np.all(np.isfinite(values)):
        raise ValueError(f"non-finite {stat} among the points: {values.tolist()}")
    if np.ptp(values) == 0:
        raise ValueError(f"{stat} is the same at every point ({values[0]}): no ranking to test")
    rho = float(scipy.stats.spearmanr(steps, values).statistic)
    rx, ry = (scipy.stats.rankdata(v) for v in (steps, values))       # Spearman = Pearson of the (average) ranks
    rx = (rx - rx.mean()) / np.linalg.norm(rx - rx.mean())
    perms = np.random.default_rng(seed).permuted(np.tile(ry - ry.mean(), (n_permutations, 1)), axis=1)
    null = perms @ rx / np.linalg.norm(perms, axis=1)
    p = float((1 + np.sum(null <= rho + 1e-12)) / (1 + n_permutations))
    z = float(scipy.stats.norm.ppf(0.5 + level / 2))
    runs = sorted({q["run"] for q in pts})
    diffs = {}
    for run in runs:
        mine = sorted((q for q in pts if q["run"] == run), key=lambda q: q["teacher_steps"])
        if len(mine) >= 2 and mine[-1]["teacher_steps"] > mine[0]["teacher_steps"]:
            diffs[run] = _difference(mine[-1], mine[0], stat, z)
    below = [d["ci"][1] < 0 for d in diffs.values()]
    if p < alpha and below and all(below):
        verdict = "reproduced" if same_scale else "reproduced qualitatively"
    elif p >= alpha and not any(below):
        verdict = "not reproduced"
    else:
        verdict = "inconclusive"
    return {"stat": stat, "n_points": len(pts), "runs": runs, "spearman_rho": rho, "p_value": p,
            "n_permutations": n_permutations, "alternative": "rho < 0 (copying grows with teacher steps)",
            "differences": diffs, "level": level, "alpha": alpha, "verdict": verdict, "rule": RULE}
