"""The teacher-length trend test (dmdjax.verdict): Spearman's rho with a permutation p-value, late-minus-early
differences with intervals, the verdict rule; and the committed trend tests equal a recomputation."""
import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import scipy.stats

from dmdjax import verdict

REPO = Path(__file__).resolve().parents[1]
STEPS = (512, 1024, 2048, 4096, 8192)


def _pts(run, kappas, half_width=0.02, steps=STEPS):
    return [{"run": run, "teacher_steps": s, "kappa": k, "kappa_ci": [k - half_width, k + half_width],
             "delta_e": k, "delta_e_ci": [k - half_width, k + half_width]} for s, k in zip(steps, kappas)]


def test_a_clear_fall_in_two_runs_is_reproduced_qualitatively():
    pts = _pts("a", [0.8, 0.6, 0.4, 0.2, 0.05]) + _pts("b", [0.75, 0.65, 0.3, 0.25, 0.03])
    t = verdict.trend_test(pts)
    assert t["spearman_rho"] < -0.9 and t["p_value"] < 0.001
    assert t["differences"]["a"]["difference"] == pytest.approx(0.05 - 0.8)
    assert t["differences"]["b"]["ci"][1] < 0
    assert t["verdict"] == "reproduced qualitatively"
    assert verdict.trend_test(pts, same_scale=True)["verdict"] == "reproduced"


def test_no_fall_is_not_reproduced_and_a_split_is_inconclusive():
    flat = _pts("a", [0.7, 0.9, 0.6, 0.95, 0.8]) + _pts("b", [0.7, 0.72], steps=(512, 8192))
    assert verdict.trend_test(flat)["verdict"] == "not reproduced"
    split = _pts("a", [0.7, 0.9, 0.6, 0.95, 0.8]) + _pts("b", [0.7, 0.3], steps=(512, 8192))
    t = verdict.trend_test(split)
    assert t["p_value"] >= 0.05 and t["differences"]["b"]["ci"][1] < 0 and t["verdict"] == "inconclusive"
    wide = _pts("a", [0.8, 0.6, 0.4, 0.2, 0.05], half_width=1.0)   # a fall, but no difference resolved
    assert verdict.trend_test(wide)["verdict"] == "inconclusive"


def test_permutation_p_value_matches_exact_enumeration():
    """Five distinct points: the exact one-sided p-value is the share of the 120 orderings with rho <= rho_obs."""
    values = [0.5, 0.9, 0.3, 0.2, 0.1]
    obs = scipy.stats.spearmanr(STEPS, values).statistic
    exact = np.mean([scipy.stats.spearmanr(STEPS, perm).statistic <= obs + 1e-12
                     for perm in itertools.permutations(values)])
    t = verdict.trend_test(_pts("a", values), n_permutations=20_000)
    assert t["spearman_rho"] == pytest.approx(obs)
    assert t["p_value"] == pytest.approx(exact, abs=0.01)


def test_difference_interval_combines_the_two_standard_errors():
    pts = _pts("a", [0.8, 0.1], steps=(512, 8192), half_width=0.0392) + _pts("b", [0.5, 0.2, 0.1], steps=(512, 1024, 8192))
    d = verdict.trend_test(pts)["differences"]["a"]
    se = 0.0392 / 1.959964                       # each interval's half width / z
    assert d["ci"][1] - d["ci"][0] == pytest.approx(2 * 1.959964 * np.hypot(se, se), rel=1e-4)


def test_bad_points_are_refused():
    with pytest.raises(ValueError, match="at least 3 points"):
        verdict.trend_test(_pts("a", [0.8, 0.1], steps=(512, 8192)))
    with pytest.raises(ValueError, match="non-finite kappa"):
        verdict.trend_test(_pts("a", [0.8, float("nan"), 0.1]))


@pytest.mark.parametrize("out", sorted(p.relative_to(REPO) for p in (REPO / "results").glob("*/trend_test.json")))
def test_committed_trend_tests_recompute(out):
    saved = json.loads((REPO / out).read_text())
    pts = [p for run in saved["runs"] for p in verdict.points(REPO / run / "results.json")]
    assert pts == saved["points"]
    for stat, t in saved["tests"].items():
        again = verdict.trend_test(pts, stat)
        assert again["verdict"] == t["verdict"] and again["p_value"] == pytest.approx(t["p_value"])
        assert again["spearman_rho"] == pytest.approx(t["spearman_rho"])


def test_the_verdict_page_is_current_and_reads_results():
    """results/VERDICTS.md equals its regeneration from results/ (so every number in it is read from there), and
    the verdict of a claim follows its students' kappa intervals."""
    page = (REPO / "results" / "VERDICTS.md").read_text()
    assert page == verdict.claims_page(REPO / "results")
    regime = json.loads((REPO / "results" / "mnist_regime" / "results.json").read_text())
    late = next(a for a in regime["arms"] if a["name"] == "ema" and a["teacher_steps"] == 8192)
    row = next(line for line in page.splitlines() if line.startswith("| the latest teacher's student copies"))
    assert f"kappa {late['kappa_final']:.3g} [{late['kappa_final_ci'][0]:.3g}, {late['kappa_final_ci'][1]:.3g}]" in row
    assert ("reproduced qualitatively" if late["kappa_final_ci"][1] < verdict.COPIES else "") in row


def test_regime_classification():
    assert verdict.regime([0.02, 0.04]) == "copies" and verdict.regime([0.6, 0.7]) == "remaps"
    assert verdict.regime([0.05, 0.2]) == "between"
    assert verdict._regime_verdict([("a", {"kappa_ci": [0.01, 0.03]})], "copies") == "reproduced qualitatively"
    assert verdict._regime_verdict([("a", {"kappa_ci": [0.5, 0.6]})], "copies") == "not reproduced"
    assert verdict._regime_verdict([("a", {"kappa_ci": [0.01, 0.03]}), ("b", {"kappa_ci": [0.5, 0.6]})],
                                   "copies") == "inconclusive"
    assert verdict._regime_verdict([], "copies") == "pending"


@pytest.mark.parametrize("trend_run, arm_run, snaps", [("mnist_trend", "ema", ("512", "8192")),
                                                        ("mnist_trend_seed1", "ema-seed1", ("8192",))])
def test_the_ema_trend_study_reproduces_the_regime_studys_ema_arm_exactly(trend_run, arm_run, snaps):
    """Two runs of the same teacher (trained from scratch twice, same seed) and protocol, for each DMD seed: the
    committed students of the same snapshot are equal number for number (the results pages' determinism
    statement)."""
    trend = json.loads((REPO / "results" / trend_run / "results.json").read_text())["snapshots"]
    arm = json.loads((REPO / "results" / "mnist_regime" / arm_run / "results.json").read_text())["snapshots"]
    for snap in snaps:
        for key in ("kappa", "kappa_ci", "delta_e", "delta_e_ci", "e_dt", "e_ot", "frechet", "converged"):
            assert trend[snap][key] == arm[snap][key], (snap, key)
