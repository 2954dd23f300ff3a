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

__all__ = ["VERDICTS", "RULE", "points", "trend_test", "claims_page", "glance_table"]

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


# ----------------------------------------------------------------------------------------------------------
# The verdict page: one row per claim of the paper, read from results/.

COPIES, REMAPS = 0.1, 0.3      # kappa interval wholly below COPIES: copies; wholly above REMAPS: remaps


def regime(kappa_ci) -> str:
    """'copies', 'remaps' or 'between' from a kappa interval (kappa = Delta_E / Delta_E of a random pairing:
    0 keeps the teacher's pairing, 1 is as far as a random one)."""
    return "copies" if kappa_ci[1] < COPIES else "remaps" if kappa_ci[0] > REMAPS else "between"


def _fmt(x: float) -> str:
    return f"{x:.3g}"


def _interval(value: float, ci) -> str:
    return f"{_fmt(value)} [{_fmt(ci[0])}, {_fmt(ci[1])}]"


def _student(label: str, res: dict) -> str:
    return (f"{label}: kappa {_interval(res['kappa'], res['kappa_ci'])}, "
            f"Delta_E {_interval(res['delta_e'], res['delta_e_ci'])}")


def _students(root: Path, picks: list[tuple[str, str, str]]) -> list[tuple[str, dict]]:
    """(label, result) for each (label, results folder, snapshot) that exists (regime arms: 'mnist_regime/<arm>'
    read from the study's `arms` list, which names kappa `kappa_final`)."""
    out = []
    for label, folder, snap in picks:
        if folder.startswith("mnist_regime/"):
            path = root / "mnist_regime" / "results.json"
            if not path.exists():
                continue
            arms = json.loads(path.read_text())["arms"]
            arm = next((a for a in arms if a["name"] == folder.split("/")[1] and str(a["teacher_steps"]) == snap), None)
            if arm:
                out.append((label, {"kappa": arm["kappa_final"], "kappa_ci": arm["kappa_final_ci"],
                                    "delta_e": arm["delta_e"], "delta_e_ci": arm["delta_e_ci"]}))
            continue
        path = root / folder / "results.json"
        snapshots = json.loads(path.read_text())["snapshots"] if path.exists() else {}
        if snap in snapshots:
            out.append((label, snapshots[snap]))
    return out


def _regime_verdict(found: list[tuple[str, dict]], claimed: str) -> str:
    if not found:
        return "pending"
    seen = {regime(r["kappa_ci"]) for _, r in found}
    if seen == {claimed}:
        return "reproduced qualitatively"
    if claimed not in seen and "between" not in seen:
        return "not reproduced"
    return "inconclusive"


# (claim, paper's section, paper's number, claimed regime, EMA-protocol students, raw-weight students, results page)
CLAIMS = [
    ("the latest teacher's student copies", "Sec. 4.2, Table 1", "Delta_E 0.0367 at 8192 steps", "copies",
     [("seed 0", "mnist_regime/ema", "8192"), ("seed 1", "mnist_regime/ema-seed1", "8192"),
      ("teacher 1", "mnist_trend_teacher1", "8192")],
     [("seed 0", "mnist_trend_raw", "8192"), ("seed 1", "mnist_trend_raw_seed1", "8192")], "mnist_regime"),
    ("an early teacher's student remaps", "Sec. 4.2, Table 1", "Delta_E 1.05 at 1024 steps", "remaps",
     [("512 steps, seed 0", "mnist_regime/ema", "512"), ("512 steps, seed 1", "mnist_trend_seed1", "512"),
      ("512 steps, teacher 1", "mnist_trend_teacher1", "512")],
     [("512 steps, seed 0", "mnist_trend_raw", "512"), ("512 steps, seed 1", "mnist_trend_raw_seed1", "512")],
     "mnist_regime"),
    ("conditional students copy", "App. A, Fig. 8-10", "copying (figures)", "copies",
     [("512 steps, seed 0", "mnist_trend_cond", "512"), ("512 steps, seed 1", "mnist_trend_cond_seed1", "512"),
      ("8192 steps, seed 0", "mnist_trend_cond", "8192"), ("8192 steps, seed 1", "mnist_trend_cond_seed1", "8192")],
     [("8192 steps, seed 0", "mnist_trend_cond_raw", "8192"), ("8192 steps, seed 1", "mnist_trend_cond_raw_seed1", "8192")],
     "mnist_trend_cond"),
    ("MLP-manifold students copy", "App. A, Fig. 8-10", "copying (figures)", "copies",
     [("1024 steps", "manifold_ema", "1024")], [("1024 steps", "manifold_cpu", "1024")], "manifold_cpu"),
    ("toy students in R^4 remap", "Sec. 3.3, Fig. 2", "chessboard Delta_E 8.55", "remaps",
     [("chessboard", "toy_chessboard_ema", "4000"), ("moons", "toy_moons_ema", "4000"),
      ("gmm", "toy_gmm_ema", "4000")],
     [("chessboard", "chessboard_control", "4000"), ("moons", "toy_moons", "4000"),
          ("gmm", "toy_gmm", "4000")], "toy"),
]


def claims_page(results_root: str | Path) -> str:
    """results/VERDICTS.md: per claim, the paper's number, dmdjax's under the EMA protocol (every preset's since
    the regime study) and under the raw weights before it, with 95 % intervals, the verdict on the EMA protocol
    and the evidence; then the teacher-length trend tests (`trend_test`)."""
    root = Path(results_root)
    rows = []
    for claim, where, paper, claimed, ema, raw, _ in CLAIMS:
        found_ema, found_raw = _students(root, ema), _students(root, raw)
        cell = lambda found: "<br>".join(_student(l, r) for l, r in found) or "not run yet"
        evidence = sorted({f"results/{f.split('/')[0]}" for _, f, _ in ema + raw})
        rows.append(f"| {claim} ({where}) | {paper} | {cell(found_ema)} | {cell(found_raw)} | "
                    f"{_regime_verdict(found_ema, claimed)} (raw weights: {_regime_verdict(found_raw, claimed)}) | "
                    f"{', '.join(evidence)} |")
    tests = []
    for path in sorted(root.glob("*/trend_test.json")):
        saved = json.loads(path.read_text())
        for stat, t in saved["tests"].items():
            diffs = "; ".join(f"{run} {d['late']}-{d['early']}: {_interval(d['difference'], d['ci'])}"
                              for run, d in t["differences"].items())
            cfg = json.loads((root.parent / saved["runs"][0] / "results.json").read_text())["config"]
            protocol = "EMA" if cfg["teacher"].get("ema_halflife_kimg", 0) > 0 else "raw weights"
            tests.append(f"| {path.parent.name} | {protocol} | {stat} | {t['n_points']} | {_fmt(t['spearman_rho'])} | "
                         f"{_fmt(t['p_value'])} | {diffs} | {t['verdict']} |")
    return "\n".join([
        "# The paper's claims against dmdjax's evidence",
        "",
        "Generated from results/ by `python tools/readme_tables.py` (tests/test_verdict.py checks it is current).",
        "Every dmdjax number is one student's, with its 95 % half-sample interval; cpu scale (16x16 MNIST, a small",
        "ADM), so Delta_E is in other units than the paper's 32x32 (only kappa, Delta_E over a random pairing's, is",
        "comparable). A claim of copying is reproduced qualitatively when every student's kappa interval lies below",
        f"{COPIES}, of remapping when every one lies above {REMAPS}; not reproduced when every one lies on the",
        "other side; inconclusive otherwise; pending when no student under the EMA protocol exists yet. The EMA",
        "protocol (EDM's EMA of the teacher's weights, distilled) is every preset's since the regime study",
        "(results/mnist_regime); the raw-weight evidence is the protocol before it.",
        "",
        "| claim | paper | dmdjax, EMA protocol | dmdjax, raw weights | verdict | evidence |",
        "|---|---|---|---|---|---|",
        *rows,
        "",
        "## Does copying grow with teacher length? (`dmdjax.verdict.trend_test`)",
        "",
        "Spearman's rho of the statistic against teacher steps over every student of the listed runs, a one-sided",
        f"permutation p-value (rho < 0), and per run the latest-minus-earliest difference with its 95 % interval. "
        f"Rule: {RULE}.",
        "",
        "| study | protocol | statistic | points | rho | p | latest - earliest [95 % CI] | verdict |",
        "|---|---|---|---|---|---|---|---|",
        *tests,
        "",
    ])


# (claim, paper's section, paper's numbers, the EMA study, the raw-weight study): their trend_test.json
TREND_CLAIM = ("copying grows with teacher length", "Sec. 4.2, Table 1", "Delta_E 1.05 / 0.389 / 0.237 / 0.0367 at "
               "1024..8192 steps", "mnist_trend", "mnist_trend_raw")


def glance_table(results_root: str | Path) -> str:
    """README's results at a glance: per claim the paper's number, dmdjax's kappa (95 % interval) per student
    under the EMA protocol, the verdict (and the raw-weight protocol's), the results page; then the trend test
    of the EMA study (`trend_test.json`)."""
    root = Path(results_root)
    rows = []
    for claim, where, paper, claimed, ema, raw, page in CLAIMS:
        found_ema, found_raw = _students(root, ema), _students(root, raw)
        cell = ("; ".join(f"{label} {_interval(r['kappa'], r['kappa_ci'])}" for label, r in found_ema)
                or "not run yet")
        rows.append(f"| {claim} ({where}) | {paper} | {cell} | {_regime_verdict(found_ema, claimed)} "
                    f"({_regime_verdict(found_raw, claimed)}) | [{page}](results/{page}/README.md) |")
    claim, where, paper, page, raw_page = TREND_CLAIM
    test = lambda run: (json.loads((root / run / "trend_test.json").read_text())["tests"]["kappa"]
                        if (root / run / "trend_test.json").exists() else None)
    t, raw = test(page), test(raw_page)
    if t:
        rows.append(f"| {claim} ({where}) | {paper} | Spearman's rho {_fmt(t['spearman_rho'])}, permutation p = "
                    f"{_fmt(t['p_value'])} ({t['n_points']} students) | {t['verdict']} "
                    f"({raw['verdict'] if raw else 'pending'}) | [{page}](results/{page}/README.md) |")
    return "\n".join(["| claim (paper) | paper | dmdjax, EMA protocol: kappa [95 % CI] | verdict (raw weights) | results |",
                      "|---|---|---|---|---|", *rows])
