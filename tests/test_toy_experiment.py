"""The toy experiment end to end at a tiny size: outputs, determinism, resume after interruption, bad flags."""
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]

from experiments import toy  # noqa: E402

from dmdjax import loop, metrics  # noqa: E402

TINY = ["--dataset=chessboard", "--teacher_steps=60", "--distill_iterations=30", "--eval_n=64", "--quiet"]


SMALL = {"teacher.chunk": 10, "teacher.ckpt_every": 20, "distill.chunk": 10, "distill.ckpt_every": 10,
         "net_kwargs": {"features": (256, 256)}, "record.eval_every": 10, "record.n": 32, "record.ci_resamples": 10,
         "ci_resamples": 20}


def _small(monkeypatch):
    """Shrink the cpu preset's chunks/checkpoint cadence so a tiny run crosses several checkpoints."""
    from dmdjax import configs
    original = configs.toy.get_config

    def small(preset="cpu", dataset="chessboard"):
        return configs.override(original(preset, dataset), **SMALL)
    monkeypatch.setattr(configs.toy, "get_config", small)


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    _small(mp)
    workdir = tmp_path_factory.mktemp("ref")
    summary = toy.main(TINY + [f"--workdir={workdir}"])
    mp.undo()
    return workdir, summary


@pytest.mark.slow
@pytest.mark.minver
def test_outputs(reference_run):
    workdir, summary = reference_run
    res = json.loads((workdir / "results.json").read_text())
    snap = res["snapshots"]["60"]
    for key in ("delta_e", "e_dt", "e_ot", "fit", "final_dm_loss", "distill_wall_s", "delta_e_null",
                "kappa_reliable", "delta_e_null_phi1", "converged", "convergence", "teacher_fit"):
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
    floor = snap["teacher_floor_phi_32"]           # the teacher's discretisation floor Delta_E(Phi_8, Phi_32)
    samples = np.load(workdir / "student_60" / "samples.npz")
    assert floor["delta_e"] == pytest.approx(float(metrics.pairing_inefficiency(samples["phi_8"], samples["phi_32"])))
    assert floor["delta_e_ci"][0] <= floor["delta_e"] <= floor["delta_e_ci"][1]
    moved = np.linalg.norm(samples["g"] - samples["phi_1"], axis=-1).mean()     # how far G moved from Phi_1
    assert snap["dist_g_phi1_mean"] == pytest.approx(float(moved), rel=1e-5) and moved > 0
    for png in ("pairing.png", "heatmap.png", "dm_loss.png", "convergence.png"):
        assert (workdir / "student_60" / png).stat().st_size > 1000
    log = loop.read_log(workdir / "student_60" / "metrics.jsonl")
    assert list(log["step"]) == list(range(30))          # a log line per iteration
    dm_step, dm_loss = loop.read_series(workdir / "student_60" / "metrics.jsonl", "dm_loss")
    assert dm_step.tolist() == list(range(0, 30, 5)) and np.all(dm_loss >= 0)   # the generator iterations
    samples = np.load(workdir / "student_60" / "samples.npz")
    assert samples["g"].shape == samples["phi_8"].shape == (64, 4)


@pytest.mark.slow
def test_tensorboard_events(reference_run):
    """`tensorboard --logdir` shows the teacher's and the student's curves (the metrics.jsonl values) and the
    student's figures."""
    from dmdjax import tensorboard
    workdir, _ = reference_run
    for run, n in (("teacher", 60), ("student_60", 30)):
        events = tensorboard.read_events(workdir / run)
        log = loop.read_log(workdir / run / "metrics.jsonl")
        steps, values = events["scalars"]["loss" if run == "teacher" else "fake_loss"]
        assert steps.tolist() == list(range(n))
        np.testing.assert_allclose(values, log["loss" if run == "teacher" else "fake_loss"], rtol=1e-6)
    images = tensorboard.read_events(workdir / "student_60")["images"]
    assert {"pairing", "heatmap", "dm_loss"} <= set(images)
    assert images["pairing"][-1] == (30, (workdir / "student_60" / "pairing.png").read_bytes())


@pytest.mark.slow
def test_checkpoint_bytes_predicts_the_disk_a_run_keeps(reference_run):
    """`pipeline.checkpoint_bytes` (what the notebooks print before training) against the run's checkpoints: as
    many kept as it says, each the size of the state it assumes (Orbax compresses a little and adds metadata)."""
    from dmdjax import configs, pipeline
    from dmdjax.data import load
    workdir, _ = reference_run
    cfg = configs.override(configs.toy.get_config(), **SMALL,
                           **{"teacher.steps": 60, "distill.iterations": 30, "eval_n": 64})
    saved = json.loads((workdir / "config.json").read_text())
    assert {k: saved[k] for k in ("teacher", "distill", "net_kwargs")} == \
        json.loads(json.dumps({k: cfg.to_dict()[k] for k in ("teacher", "distill", "net_kwargs")}))
    est = pipeline.checkpoint_bytes(cfg, load(cfg))
    assert est["teacher_state"] > 400_000                  # the state's arrays dominate its metadata
    kept = {"teacher": (workdir / "teacher" / "ckpt", est["teacher_kept"], est["teacher_state"]),
            "student": (workdir / "student_60" / "ckpt", est["student_kept"], est["student_state"])}
    total = 0
    for what, (ckpt, n, size) in kept.items():
        steps = sorted(d for d in ckpt.iterdir() if d.name.isdigit())
        assert len(steps) == n, (what, [d.name for d in steps])
        for d in steps:
            disk = sum(f.stat().st_size for f in d.rglob("*") if f.is_file())
            assert 0.8 * size < disk < size + 600_000, (what, d.name, disk, size)
            total += disk
    assert 0.8 * est["total"] < total < est["total"] + 600_000 * (est["teacher_kept"] + est["student_kept"])


@pytest.mark.slow
def test_rerun_is_idempotent(reference_run, monkeypatch):
    workdir, summary = reference_run
    _small(monkeypatch)
    again = toy.main(TINY + [f"--workdir={workdir}"])
    assert again["table"] == summary["table"]


@pytest.mark.slow
@pytest.mark.minver
def test_interrupted_run_resumes_to_same_result(reference_run, tmp_path, monkeypatch):
    """Kill the run in the middle of teacher training and again in the middle of distillation. Each rerun must
    run only the steps after the last checkpoint (a restart from 0 fails) and end where an uninterrupted run ends;
    the wall times in results.json add up every invocation's."""
    ref_dir, summary = reference_run
    _small(monkeypatch)
    real_chunk = loop._run_chunk
    clock = tmp_path / "wall_s.json"
    ran, walls = [], []             # per invocation: (phase, first step, calls) of every chunk; wall_s.json after
    for phase, die_at in (("teacher", 4), ("distill", 2), (None, 0)):   # the n-th chunk of that phase raises
        calls, chunks = {"n": 0}, []

        def counting(step_fn, state, *args, **kwargs):
            kind = "distill" if hasattr(state, "gen") else "teacher"
            if kind == phase:
                calls["n"] += 1
                if calls["n"] == die_at:
                    raise KeyboardInterrupt
            chunks.append((kind, int(state.step), args[1]))
            return real_chunk(step_fn, state, *args, **kwargs)

        monkeypatch.setattr(loop, "_run_chunk", counting)
        if phase:
            with pytest.raises(KeyboardInterrupt):
                toy.main(TINY + [f"--workdir={tmp_path}"])
        else:
            resumed = toy.main(TINY + [f"--workdir={tmp_path}"])
        monkeypatch.setattr(loop, "_run_chunk", real_chunk)
        ran.append(chunks)
        walls.append(json.loads(clock.read_text()))
    # teacher: chunks of 10, checkpoints every 20 -> died in 30..40, resumes at 20; distillation: chunks of 10
    # iterations (2 rounds of 5), checkpoints every 10 -> died in 10..20, resumes at 10
    assert [c for c in ran[1] if c[0] == "teacher"][0][1] == 20
    assert sum(c[2] for c in ran[1] if c[0] == "teacher") == 40
    assert not [c for c in ran[2] if c[0] == "teacher"]
    assert ran[2][0][:2] == ("distill", 10) and sum(5 * c[2] for c in ran[2]) == 20
    assert resumed["table"] == summary["table"]
    with np.load(tmp_path / "student_60" / "samples.npz") as a, np.load(ref_dir / "student_60" / "samples.npz") as b:
        np.testing.assert_array_equal(a["g"], b["g"])
    assert 0 < walls[0]["teacher"] < walls[1]["teacher"] <= walls[2]["teacher"] == resumed["teacher_wall_s"]
    snap = resumed["snapshots"]["60"]
    assert 0 < walls[1]["distill_60"] < walls[2]["distill_60"] == snap["distill_wall_s"]
    assert resumed["total_wall_s"] == pytest.approx(sum(walls[2].values()))

    assert resumed["table_ci"] == summary["table_ci"]
    rows = lambda w: [{k: v for k, v in json.loads(line).items() if k != "eval_s"}   # the record, resumed exactly
                      for line in (w / "student_60" / "record.jsonl").read_text().splitlines()]
    assert rows(tmp_path) == rows(reference_run[0])


# The toy experiment in a child process, with every Orbax save held open 1 s before its final rename (only here,
# in the test): the window in which the test kills it. (Orbax's private finalize is async from 0.11.25 on.)
SLOW_SAVE_RUN = f"""
import asyncio, inspect, sys, time
from orbax.checkpoint._src.path import atomicity
from experiments import toy
from dmdjax import configs
finalize = atomicity.AtomicRenameTemporaryPath.finalize
async def slow_finalize(self, *args, **kwargs):
    await asyncio.sleep(1.0)
    return await finalize(self, *args, **kwargs)
def slow_finalize_sync(self, *args, **kwargs):
    time.sleep(1.0)
    return finalize(self, *args, **kwargs)
atomicity.AtomicRenameTemporaryPath.finalize = (slow_finalize if inspect.iscoroutinefunction(finalize)
                                                else slow_finalize_sync)
original = configs.toy.get_config
configs.toy.get_config = lambda preset="cpu", dataset="chessboard": configs.override(original(preset, dataset),
                                                                                   **{SMALL!r})
toy.main({TINY!r} + ["--workdir=" + sys.argv[1]])
"""


@pytest.mark.slow
@pytest.mark.minver
def test_killed_during_a_checkpoint_save_resumes_to_same_result(reference_run, tmp_path, monkeypatch):
    """SIGKILL a real experiment process at a random moment while it saves the teacher's step-40 checkpoint; the
    rerun discards the unfinished save, resumes from step 20 and ends where an uninterrupted run ends."""
    ref_dir, summary = reference_run
    delay = random.uniform(0.0, 0.9)
    proc = subprocess.Popen([sys.executable, "-c", SLOW_SAVE_RUN, str(tmp_path)], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    ckpt = tmp_path / "teacher" / "ckpt"
    try:
        deadline = time.monotonic() + 120
        while not list(ckpt.glob("40.orbax-checkpoint-tmp*")):
            assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
            assert time.monotonic() < deadline, "the step-40 save never started"
            time.sleep(0.005)
        time.sleep(delay)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert list(ckpt.glob("40.orbax-checkpoint-tmp*")) and not (ckpt / "40").exists(), f"delay {delay:.3f} s"
    _small(monkeypatch)
    real_chunk, chunks = loop._run_chunk, []

    def counting(step_fn, state, consts, length):
        if not chunks:                  # the rerun opened the checkpoints: the unfinished save is already gone
            leftovers.extend(ckpt.glob("*.orbax-checkpoint-tmp*"))
        chunks.append(("distill" if hasattr(state, "gen") else "teacher", int(state.step), length))
        return real_chunk(step_fn, state, consts, length)
    leftovers = []
    monkeypatch.setattr(loop, "_run_chunk", counting)
    resumed = toy.main(TINY + [f"--workdir={tmp_path}"])
    assert chunks[0] == ("teacher", 20, 10), f"delay {delay:.3f} s"           # resumed, not restarted
    assert sum(n for kind, _, n in chunks if kind == "teacher") == 40
    assert not leftovers and not list(ckpt.glob("*.orbax-checkpoint-tmp*"))
    assert resumed["table"] == summary["table"], f"delay {delay:.3f} s"
    with np.load(tmp_path / "student_60" / "samples.npz") as a, np.load(ref_dir / "student_60" / "samples.npz") as b:
        np.testing.assert_array_equal(a["g"], b["g"])
    assert list(loop.read_log(tmp_path / "teacher" / "metrics.jsonl")["step"]) == list(range(60))


@pytest.mark.slow
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


@pytest.mark.slow
def test_command_line_entry_point(tmp_path):
    proc = subprocess.run([sys.executable, str(REPO / "experiments" / "toy.py"), "--help"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "--dataset" in proc.stdout and "--preset" in proc.stdout


def test_dm_loss_every_iteration_flag():
    import argparse

    from dmdjax import cli, configs
    parser = argparse.ArgumentParser()
    cli.add_common_flags(parser)
    base = configs.toy.get_config()
    flags = lambda *argv: cli.apply_common_flags(base, parser.parse_args(["--workdir=w", *argv]),  # noqa: E731
                                                 configs.toy.DERIVED)
    dense, sparse = flags("--dm_loss_every_iteration"), flags()
    assert dense.distill.dm_loss_every_iteration and not sparse.distill.dm_loss_every_iteration
