"""The toy experiment end to end at a tiny size: outputs, determinism, resume after interruption, bad flags."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "experiments"))

import toy  # noqa: E402

from dmdjax import loop  # noqa: E402

TINY = ["--dataset=chessboard", "--teacher_steps=60", "--distill_iterations=30", "--eval_n=64", "--quiet"]


def _small(monkeypatch):
    """Shrink the cpu preset's chunks/checkpoint cadence so a tiny run crosses several checkpoints."""
    from dmdjax import configs
    original = configs.toy

    def small(dataset, preset="cpu"):
        return configs.override(original(dataset, preset), **{
            "teacher.chunk": 10, "teacher.ckpt_every": 20, "distill.chunk": 10, "distill.ckpt_every": 10,
            "net_kwargs": {"features": (32, 32)}, "record.eval_every": 10, "record.n": 32,
            "record.ci_resamples": 10, "ci_resamples": 20})
    monkeypatch.setattr(configs, "toy", small)


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    _small(mp)
    workdir = tmp_path_factory.mktemp("ref")
    summary = toy.main(TINY + [f"--workdir={workdir}"])
    mp.undo()
    return workdir, summary


def test_outputs(reference_run):
    workdir, summary = reference_run
    res = json.loads((workdir / "results.json").read_text())
    snap = res["snapshots"]["60"]
    for key in ("delta_e", "e_dt", "e_ot", "fit", "final_dm_loss", "distill_wall_s", "delta_e_null",
                "kappa_reliable", "delta_e_null_phi1", "converged", "convergence"):
        assert key in snap
    for suffix in ("", "_phi1"):    # intervals bracket the estimates; kappa = Delta_E / Delta_E_null
        lo, hi = snap[f"delta_e{suffix}_ci"]
        assert lo <= snap[f"delta_e{suffix}"] <= hi and hi > lo
        assert snap[f"kappa{suffix}_ci"][0] <= snap[f"kappa{suffix}"] <= snap[f"kappa{suffix}_ci"][1]
        assert snap[f"kappa{suffix}"] == pytest.approx(snap[f"delta_e{suffix}"] / snap[f"delta_e_null{suffix}"])
    assert res["table_ci"]["60"]["delta_e_ci"] == snap["delta_e_ci"]
    rows = [json.loads(line) for line in (workdir / "student_60" / "record.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [0, 10, 20, 30] and snap["convergence"]["record_evals"] == 4
    assert snap["convergence"]["iterations"] == 30 and snap["converged"] in (True, False)
    assert snap["delta_e"] >= 0 and snap["e_dt"] >= snap["e_ot"] > 0
    assert res["config"]["teacher"]["steps"] == 60
    for png in ("pairing.png", "heatmap.png", "dm_loss.png", "convergence.png"):
        assert (workdir / "student_60" / png).stat().st_size > 1000
    log = loop.read_log(workdir / "student_60" / "metrics.jsonl")
    assert list(log["step"]) == list(range(30))          # a log line per iteration
    dm_step, dm_loss = loop.read_series(workdir / "student_60" / "metrics.jsonl", "dm_loss")
    assert dm_step.tolist() == list(range(0, 30, 5)) and np.all(dm_loss >= 0)   # the generator iterations
    samples = np.load(workdir / "student_60" / "samples.npz")
    assert samples["g"].shape == samples["phi_8"].shape == (64, 4)


def test_rerun_is_idempotent(reference_run, monkeypatch):
    workdir, summary = reference_run
    _small(monkeypatch)
    again = toy.main(TINY + [f"--workdir={workdir}"])
    assert again["table"] == summary["table"]


def test_interrupted_run_resumes_to_same_result(reference_run, tmp_path, monkeypatch):
    """Kill the run in the middle of teacher training and again in the middle of distillation."""
    _, summary = reference_run
    _small(monkeypatch)
    real_chunk = loop._run_chunk
    for phase, die_at in (("teacher", 4), ("distill", 2)):   # the n-th chunk of that phase raises
        calls = {"n": 0}

        def dying(step_fn, state, *args, **kwargs):
            if hasattr(state, "gen") == (phase == "distill"):
                calls["n"] += 1
                if calls["n"] == die_at:
                    raise KeyboardInterrupt
            return real_chunk(step_fn, state, *args, **kwargs)

        monkeypatch.setattr(loop, "_run_chunk", dying)
        with pytest.raises(KeyboardInterrupt):
            toy.main(TINY + [f"--workdir={tmp_path}"])
        monkeypatch.setattr(loop, "_run_chunk", real_chunk)
    resumed = toy.main(TINY + [f"--workdir={tmp_path}"])
    assert resumed["table"] == summary["table"]
    assert resumed["table_ci"] == summary["table_ci"]
    rows = lambda w: [{k: v for k, v in json.loads(line).items() if k != "eval_s"}   # the record, resumed exactly
                      for line in (w / "student_60" / "record.jsonl").read_text().splitlines()]
    assert rows(tmp_path) == rows(reference_run[0])


def test_changed_config_refuses_to_mix(reference_run, monkeypatch):
    workdir, _ = reference_run
    _small(monkeypatch)
    with pytest.raises(ValueError, match="different config"):
        toy.main(TINY[:1] + ["--teacher_steps=80", "--distill_iterations=30", "--eval_n=64", "--quiet",
                             f"--workdir={workdir}"])


@pytest.mark.parametrize("flag, message", [
    ("--dataset=spiral", "invalid choice"),
    ("--preset=gpu", "invalid choice"),
    ("--teacher_steps=0", "positive integer"),
    ("--distill_iterations=-5", "positive integer"),
])
def test_bad_flags_exit_with_clear_message(flag, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        toy.main([flag, f"--workdir={tmp_path}"])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_command_line_entry_point(tmp_path):
    proc = subprocess.run([sys.executable, str(REPO / "experiments" / "toy.py"), "--help"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "--dataset" in proc.stdout and "--preset" in proc.stdout


def test_dm_loss_every_iteration_flag():
    import argparse

    from dmdjax import cli, configs
    parser = argparse.ArgumentParser()
    cli.add_common_flags(parser)
    base = configs.toy("chessboard")
    dense = cli.apply_common_flags(base, parser.parse_args(["--workdir=w", "--dm_loss_every_iteration"]))
    sparse = cli.apply_common_flags(base, parser.parse_args(["--workdir=w"]))
    assert dense.distill.dm_loss_every_iteration and not sparse.distill.dm_loss_every_iteration
