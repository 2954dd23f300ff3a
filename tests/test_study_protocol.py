"""The teacher-length study's protocol: snapshot order, the students' own seed, the trend figure, the exported
evidence and the study's command line."""
import json
from pathlib import Path

import jax
import numpy as np
import pytest

from dmdjax import config, configs, distill, evaluation, figures, pipeline
from dmdjax.data import Dataset

REPO = Path(__file__).resolve().parents[1]
from experiments import mnist_trend  # noqa: E402


def test_earliest_and_latest_snapshots_are_distilled_first():
    cfg = configs.mnist_trend.get_config()
    assert cfg.snapshots() == (512, 1024, 2048, 4096, 8192)
    assert cfg.distill_order() == (512, 8192, 1024, 2048, 4096)
    two = configs.override(cfg, distill_snapshots=(8192, 512))
    assert two.distill_order() == (512, 8192)


def test_distill_seed_changes_only_the_students_stream(monkeypatch, tmp_path):
    seen = []
    monkeypatch.setattr(distill, "make_step", lambda model, cfg, key, *a, **k: seen.append(np.asarray(key)))
    monkeypatch.setattr(pipeline.loop, "run_loop", lambda *a, **k: None)
    monkeypatch.setattr(distill, "init_state", lambda *a, **k: None)
    pipeline._distill_step.cache_clear()
    cfg = configs.override(configs.toy.get_config(), **{"record.eval_every": 0})
    data = type("D", (), {"label_dim": 0, "shape": (4,), "sample": None, "consts": None})()
    for c in (cfg, configs.override(cfg, distill_seed=0), configs.override(cfg, distill_seed=1)):
        pipeline._distill_step.cache_clear()
        pipeline.distill_student(c, data, None, None, tmp_path / "s")
    pipeline._distill_step.cache_clear()
    assert len(seen) == 3
    assert np.array_equal(seen[0], seen[1]) and not np.array_equal(seen[0], seen[2])
    assert np.array_equal(seen[0], np.asarray(config.keys(0)["distill"]))


def test_trend_figure_plots_each_student_and_its_phi1():
    snaps = {str(s): {"delta_e": d, "delta_e_ci": [d - 0.1, d + 0.1], "kappa": k, "kappa_ci": [k - 0.1, k + 0.1],
                      "delta_e_phi1": 0.01, "delta_e_phi1_ci": [0.0, 0.02], "kappa_phi1": 0.1,
                      "kappa_phi1_ci": [0.0, 0.2]}
             for s, d, k in ((512, 0.9, 0.8), (1024, 0.5, 0.6), (8192, 0.2, 0.3))}
    quality = {s: {"heldout_edm_loss": loss} for s, loss in (("512", 0.8), ("1024", 0.7), ("8192", 0.6))}
    fig = figures.copying_trend(snaps, quality)
    axes = fig.axes
    assert len(axes) == 4
    g_kappa = axes[2].get_lines()[0]          # row 2 (kappa), first column (steps): G
    assert np.allclose(g_kappa.get_xdata(), [512, 1024, 8192]) and np.allclose(g_kappa.get_ydata(), [0.8, 0.6, 0.3])
    assert np.allclose(axes[3].get_lines()[0].get_xdata(), [0.8, 0.7, 0.6])    # against held-out loss
    assert len(figures.copying_trend(snaps).axes) == 2


def test_export_copies_the_evidence_and_nothing_else(tmp_path):
    run, out = tmp_path / "run", tmp_path / "results" / "x"
    (run / "student_512" / "ckpt" / "100").mkdir(parents=True)
    (run / "results.json").write_text(json.dumps({"table": {"512": 0.5}}))
    for name in ("trend.png", "dm_loss.png"):
        (run / name).write_bytes(b"png")
    for name in ("results.json", "record.jsonl", "convergence.png"):
        (run / "student_512" / name).write_text(name)
    np.savez(run / "student_512" / "samples.npz", g=np.zeros(3))
    written = pipeline.export_results(run, out)
    names = sorted(str(p.relative_to(out)) for p in written)
    assert names == ["dm_loss.png", "results.json", "student_512/convergence.png", "student_512/record.jsonl",
                     "student_512/results.json", "trend.png"]
    assert json.loads((out / "results.json").read_text()) == {"table": {"512": 0.5}}
    assert not list(out.rglob("*.npz")) and not (out / "student_512" / "ckpt").exists()


def test_study_command_line_defaults(capsys):
    with pytest.raises(SystemExit) as exit_info:
        mnist_trend.main(["--teacher_steps=32", "--print_config", "--workdir=w"])
    assert exit_info.value.code == 0
    cfg = json.loads(capsys.readouterr().out)["config"]
    assert cfg["name"] == "mnist-trend-cpu" and cfg["distill_snapshots"] == [2, 4, 8, 16, 32]
    assert cfg["record"]["until_converged"] and cfg["eval_ks"] == [1, 8, 32]
    assert cfg["distill"]["lr_gen"] * cfg["distill"]["iterations"] >= 0.1 - 1e-12   # the paper's 50,000 x 2e-6


@pytest.mark.slow
def test_summary_is_written_after_every_student(monkeypatch, tmp_path):
    """A run stopped after its first student leaves a partial summary (and its export) that says what is missing;
    the rerun completes it."""
    from experiments import toy
    small = {"net_kwargs": {"features": (16, 16)}, "record.eval_every": 0, "ci_resamples": 10}
    monkeypatch.setattr(configs.toy, "get_config", lambda p="cpu", dataset="chessboard", _t=configs.toy.get_config:
                        configs.override(_t(p, dataset), **small))
    argv = ["--dataset=chessboard", "--teacher_steps=20", "--set=distill_snapshots=10,20", "--distill_iterations=10",
            "--eval_n=32", "--quiet", f"--workdir={tmp_path / 'run'}", f"--results_dir={tmp_path / 'out'}"]
    students = []
    real = pipeline.distill_student

    def stop_at_second(*args, **kwargs):
        if students:
            raise KeyboardInterrupt
        students.append(1)
        return real(*args, **kwargs)
    monkeypatch.setattr(pipeline, "distill_student", stop_at_second)
    with pytest.raises(KeyboardInterrupt):
        toy.main(argv)
    for where in ("run", "out"):
        partial = json.loads((tmp_path / where / "results.json").read_text())
        assert partial["complete"] is False and partial["pending"] == [20] and list(partial["snapshots"]) == ["10"]
    monkeypatch.setattr(pipeline, "distill_student", real)
    full = toy.main(argv)
    assert full["complete"] is True and full["pending"] == [] and list(full["snapshots"]) == ["10", "20"]
    assert full["snapshots"]["10"] == partial["snapshots"]["10"]


def test_teacher_data_fit_tells_a_fitting_teacher_from_a_shifted_one():
    sample = lambda key, n, consts: (jax.random.normal(key, (n, 4)), None)
    data = Dataset(name="gauss", shape=(4,), sample=sample)
    cfg = configs.toy.get_config()
    fitting = np.asarray(jax.random.normal(jax.random.PRNGKey(7), (400, 4)))
    good = evaluation.teacher_data_fit(cfg, data, fitting)
    bad = evaluation.teacher_data_fit(cfg, data, fitting + 3.0)
    assert good["n"] == 200 and good["w2_data_floor"] > 0
    assert good["w2_teacher_data"] < 1.3 * good["w2_data_floor"]
    assert bad["w2_teacher_data"] > 2.5 and bad["w2_data_floor"] == good["w2_data_floor"]
