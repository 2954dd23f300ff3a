"""README's and the results pages' tables are the committed evidence: each `<!-- table: X -->` block equals the
table generated from results/X/results.json (`python tools/readme_tables.py` regenerates them)."""
import json
import re
from pathlib import Path

import pytest

from dmdjax import report
from tools import readme_tables

REPO = Path(__file__).resolve().parents[1]
PAGES = [p.relative_to(REPO) for p in readme_tables.pages()]


@pytest.mark.parametrize("page", PAGES, ids=str)
def test_page_tables_match_the_committed_results(page):
    tables = report.readme_tables((REPO / page).read_text(), REPO / "results", readme_tables.GENERATED)
    for name, (in_page, from_results) in tables.items():
        assert in_page == from_results, f"{page}'s {name} table differs from results/: run tools/readme_tables.py"


def test_every_results_section_has_its_page_and_readme_stays_a_front_page():
    """README is a front page (<= 15 KB, the quick start and results at a glance in its first 80 lines); each
    results page it links exists, and every relative link of README, docs/ and the results pages resolves."""
    readme = (REPO / "README.md").read_text()
    assert len(readme.encode()) <= 15_000
    head = "\n".join(readme.splitlines()[:80])
    assert "## Quick start" in head and "<!-- table: claims -->" in head and "results/VERDICTS.md" in head
    assert all(t in {"claims"} for t in report.readme_tables(readme, REPO / "results", readme_tables.GENERATED))
    docs = [REPO / "README.md", REPO / "BUILD_NOTES.md", *sorted((REPO / "docs").glob("*.md")),
            *[REPO / p for p in PAGES], REPO / "results" / "VERDICTS.md"]
    for doc in docs:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", doc.read_text()):
            if "://" not in target:
                assert (doc.parent / target).exists(), f"{doc.relative_to(REPO)} links to missing {target}"


def test_table_rows_follow_the_results(tmp_path):
    snap = {"delta_e": 0.5, "delta_e_ci": [0.4, 0.6], "kappa": 0.7, "kappa_ci": [0.6, 0.8], "kappa_reliable": True,
            "delta_e_phi1": 0.01, "delta_e_phi1_ci": [0.0, 0.02], "fit": {"w2_student": 6.5, "w2_teacher_floor": 6.0,
            "w2_phi1": 20.0}, "converged": False, "convergence": {"iterations": 2000},
            "teacher_quality": {"heldout_edm_loss": {"loss": 0.2, "n": 256}}, "frechet": {"g": 40.0, "phi_8": 12.0}}
    summary = {"snapshots": {"8192": snap, "512": {**snap, "delta_e": 1.2, "converged": True,
                                                    "convergence": {"iterations": 900}}}}
    lines = report.snapshot_table(summary).splitlines()
    assert len(lines) == 4 and lines[2].startswith("| 512 | 0.2000 | 1.2 [0.4, 0.6]") and "yes (900)" in lines[2]
    assert lines[3].startswith("| 8192 |") and "no (2000)" in lines[3] and "6.50 / 6.00 / 20.00" in lines[3]
    assert "mean ||G - Phi_1||" not in lines[0]               # a column no student has is left out ...
    moved = {**summary, "snapshots": {**summary["snapshots"], "8192": {**snap, "dist_g_phi1_mean": 3.25}}}
    head, _, _, late = report.snapshot_table(moved).splitlines()   # ... and shown once one has it
    column = head.split(" | ").index("mean ||G - Phi_1||")
    assert late.split(" | ")[column] == "3.25"
    (tmp_path / "x" / "student_8192").mkdir(parents=True)
    (tmp_path / "x" / "results.json").write_text(json.dumps(summary))
    record = [{"step": t, "kappa": k} for t, k in ((0, 0.0), (100, 0.1), (200, 0.9), (300, 0.3), (400, 0.6))]
    (tmp_path / "x" / "student_8192" / "record.jsonl").write_text("".join(json.dumps(r) + "\n" for r in record))
    with_record = report.snapshot_table(summary, tmp_path / "x").splitlines()
    assert with_record[3].endswith("| 0.60 [0.30, 0.90] (3 evals) |") and with_record[2].endswith("|  |")
    # kappa where the learning rates add up to the paper's 0.1: at lr 5e-4 that is iteration 200
    record = [{**r, "kappa_ci": [r["kappa"] - 0.05, r["kappa"] + 0.05]} for r in record]
    (tmp_path / "x" / "student_8192" / "record.jsonl").write_text("".join(json.dumps(r) + "\n" for r in record))
    cells = report.snapshot_table({**summary, "config": {"distill": {"lr_gen": 5e-4}}},
                                  tmp_path / "x").splitlines()[3].split(" | ")
    assert cells[-3] == "0.90 (200) [0.85, 0.95]" and cells[-2] == "no (2000)"
    assert "| 0.90 (200)" not in report.snapshot_table({**summary, "config": {"distill": {"lr_gen": 1e-4}}},
                                                       tmp_path / "x")       # iteration 1000 is not in the record
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- table: x -->\n<!-- /table -->\nend\n")      # an empty block is filled
    assert report.update_readme(readme, tmp_path) == ["x"]
    assert report.readme_tables(readme.read_text(), tmp_path)["x"][0] == report.snapshot_table(summary, tmp_path / "x")
    assert readme.read_text().startswith("intro\n") and readme.read_text().endswith("end\n")
    assert report.update_readme(readme, tmp_path) == []


def test_several_runs_share_one_table_without_their_empty_columns(tmp_path):
    """`<!-- table: a+b -->`: one row per run and snapshot, a first column naming the run, and no column that no
    row fills (toys have no held-out EDM loss, Frechet distance or Phi_32 floor)."""
    snap = {"delta_e": 4.0, "delta_e_ci": [3.5, 4.5], "kappa": 0.9, "kappa_ci": [0.8, 1.0], "delta_e_phi1": 0.1,
            "delta_e_phi1_ci": [0.05, 0.15], "fit": {"w2_student": 0.5, "w2_teacher_floor": 0.4, "w2_phi1": 1.6}}
    fits = {"toy_a": {"teacher_fit": {"w2_teacher_data": 0.49, "w2_data_floor": 0.19, "n": 500}}, "toy_b": {}}
    for name, delta in (("toy_a", 4.0), ("toy_b", 9.0)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.json").write_text(json.dumps({"snapshots": {"4000": {**snap, "delta_e": delta,
                                                                                          **fits[name]}}}))
    readme = tmp_path / "README.md"
    readme.write_text("<!-- table: toy_a+toy_b -->\n<!-- /table -->\n")
    assert report.update_readme(readme, tmp_path) == ["toy_a+toy_b"]
    lines = readme.read_text().splitlines()[1:-1]
    assert lines[0] == ("| run | teacher steps | Delta_E(Phi_8, G) [95 % CI] | kappa [95 % CI] | Delta_E(Phi_8, Phi_1) "
                        "| W2 G / floor / Phi_1 | W2 Phi_8 to data / data floor |")
    assert lines[1] == "|---|---|---|---|---|---|---|" and len(lines) == 4
    assert lines[2].startswith("| toy_a | 4000 | 4 [3.5, 4.5] |") and lines[2].endswith("| 0.49 / 0.19 |")
    assert lines[3].startswith("| toy_b | 4000 | 9 [3.5, 4.5] |") and lines[3].endswith("|  |")


def test_regime_table_rows_follow_the_arms():
    arm = {"name": "ema", "teacher_steps": 8192, "teacher_ema": True, "lr": 1e-4, "iterations": 2000, "lr_sum": 0.2,
           "regression_weight": 0.0, "kappa_at_sum": {"0.05": {"kappa": 0.02, "kappa_ci": [0.0, 0.04]}},
           "kappa_matched": 0.31, "kappa_matched_ci": [0.25, 0.37], "matched_at": {"step": 1000, "lr_sum": 0.1},
           "kappa_final": 0.5, "kappa_final_ci": [0.4, 0.6], "delta_e": 0.6, "delta_e_ci": [0.5, 0.7],
           "covered": -0.1, "covered_max": 0.3, "fd_g": 40.0, "fd_phi8": 12.0, "converged": False}
    low = {**arm, "name": "lr4e-6", "teacher_ema": False, "lr": 4e-6, "iterations": 12500, "lr_sum": 0.05,
           "kappa_at_sum": {"0.05": None}, "matched_at": {"step": 12500, "lr_sum": 0.05}}
    lines = report.regime_table({"arms": [arm, low]}).splitlines()
    assert lines[2] == ("| ema | 8192 | EMA | 0.0001 | 2000 (0.2) | 0.02 [0, 0.04] | 0.31 [0.25, 0.37] at S = 0.1 | "
                        "0.5 [0.4, 0.6] | 0.6 [0.5, 0.7] | -0.10 / 0.30 | 40.0 / 12.0 | no |")
    assert "| lr4e-6 | 8192 | raw | 4e-06 | 12500 (0.05) |  | 0.31 [0.25, 0.37] at S = 0.05 |" in lines[3]


def test_the_regime_verdict_follows_the_committed_students():
    """README's reading of results/mnist_regime: the EMA teacher's 8192-step student copies (converged, kappa's
    interval below 0.05, G closer to Phi_8 than Phi_1 for most noises, FD within twice the teacher's); its
    512-step student remaps (kappa's interval above 0.5); the raw-weight students of results/mnist_trend_raw remap."""
    arms = {(a["name"], a["teacher_steps"]): a for a in
            json.loads((REPO / "results" / "mnist_regime" / "results.json").read_text())["arms"]}
    late, early = arms[("ema", 8192)], arms[("ema", 512)]
    assert late["teacher_ema"] and late["converged"] and late["kappa_final_ci"][1] < 0.05
    assert late["kappa_matched_ci"][1] < 0.05 and late["matched_at"]["lr_sum"] == 0.1
    assert late["frac_g_closer_than_phi1"] > 0.5 and late["fd_g"] < 2 * late["fd_phi8"]
    assert early["kappa_final_ci"][0] > 0.5 and not early["converged"]
    seed1 = arms[("ema-seed1", 8192)]
    assert seed1["distill_seed"] == 1 and seed1["converged"] and seed1["iterations"] == 1000
    assert f"kappa {seed1['kappa_final']:.3f} [{seed1['kappa_final_ci'][0]:.3f}, {seed1['kappa_final_ci'][1]:.3f}]" \
        in " ".join((REPO / "results" / "mnist_regime" / "README.md").read_text().split())
    readme = (REPO / "results" / "mnist_regime" / "README.md").read_text()
    flat = " ".join(readme.split())
    for snap in (512, 8192):                # the raw weights of the same teacher remap at both snapshots
        raw = arms[("raw", snap)]
        assert not raw["teacher_ema"] and not raw["converged"] and raw["kappa_final_ci"][0] > 0.5
        assert f"{raw['kappa_final']:.3g} [{raw['kappa_final_ci'][0]:.3g}, {raw['kappa_final_ci'][1]:.3g}]" in flat
    for run, kappas in (("mnist_trend_raw", "0.83 [0.81, 0.85]"), ("mnist_trend_raw_seed1", "0.67 [0.65, 0.69]")):
        r = json.loads((REPO / "results" / run / "student_8192" / "results.json").read_text())
        assert f"{r['kappa']:.2f} [{r['kappa_ci'][0]:.2f}, {r['kappa_ci'][1]:.2f}]" == kappas and kappas in readme
        assert not r["converged"]


def test_the_toy_pages_prose_reads_the_committed_students():
    """results/toy/README.md quotes each toy student's kappa with its interval under both protocols."""
    from dmdjax import verdict
    page = " ".join((REPO / "results" / "toy" / "README.md").read_text().split())
    for run in ("toy_chessboard_ema", "toy_moons_ema", "toy_gmm_ema"):
        r = json.loads((REPO / "results" / run / "results.json").read_text())["snapshots"]["4000"]
        quoted = f"{verdict._fmt(r['kappa'])} [{verdict._fmt(r['kappa_ci'][0])}, {verdict._fmt(r['kappa_ci'][1])}]"
        assert quoted in page, (run, quoted)
        assert not r["converged"] and "No student converged in 4000 iterations" in page
    for run in ("chessboard_control", "toy_moons", "toy_gmm"):
        r = json.loads((REPO / "results" / run / "results.json").read_text())["snapshots"]["4000"]
        assert f"{verdict._fmt(r['kappa'])})" in page or f"{verdict._fmt(r['kappa'])};" in page, run


def test_the_ema_trend_pages_prose_reads_the_committed_trend_test():
    """The EMA study's page and README quote the committed trend test (rho, p, verdict, its runs), the second
    seed's and the second teacher's students as results/ holds them."""
    from dmdjax import verdict
    kappa = json.loads((REPO / "results" / "mnist_trend" / "trend_test.json").read_text())["tests"]["kappa"]
    page = " ".join((REPO / "results" / "mnist_trend" / "README.md").read_text().split())
    readme = " ".join((REPO / "README.md").read_text().split())
    runs = json.loads((REPO / "results" / "mnist_trend" / "trend_test.json").read_text())["runs"]
    assert "results/mnist_trend_teacher1" in runs and f"{kappa['n_points']} students" in page
    quoted = f"{kappa['spearman_rho']:.2f}, one-sided permutation p = {kappa['p_value']:.2g}"
    assert quoted in page and f"**{kappa['verdict']}**" in page
    assert f"rho {kappa['spearman_rho']:.2f}, p = {kappa['p_value']:.2g}" in readme
    for run, d in kappa["differences"].items():
        assert f"{d['difference']:.3g} [{d['ci'][0]:.3g}, {d['ci'][1]:.3g}]" in page, run
    teacher1 = json.loads((REPO / "results" / "mnist_trend_teacher1" / "results.json").read_text())["snapshots"]
    row = " / ".join(f"{verdict._fmt(teacher1[s]['kappa'])}" for s in ("512", "2048", "8192"))
    assert f"kappa {row} at 512 / 2048 / 8192 steps" in page
    seed1 = json.loads((REPO / "results" / "mnist_trend_seed1" / "results.json").read_text())["snapshots"]
    assert f"{verdict._fmt(seed1['512']['kappa'])} at 512 steps to {verdict._fmt(seed1['8192']['kappa'])} at 8192" in page
    r = seed1["4096"]
    assert not r["converged"] and f"kappa {r['kappa']:.3g} [{r['kappa_ci'][0]:.3g}, {r['kappa_ci'][1]:.3g}]" in page
    assert [s for s, r in seed1.items() if r["converged"]] == ["8192"] and seed1["8192"]["convergence"]["iterations"] == 1000
