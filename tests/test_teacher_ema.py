"""The teacher's EMA (EDM's rule): the formula with its ramp-up against a hand computation, kill -9 and resume,
students and Phi_K start from the EMA, derived settings follow overrides, the regime study's summary."""
import json
from pathlib import Path
import os
import signal
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dmdjax import configs, distill, pipeline, studies, teacher
from dmdjax.data import load, toy
from dmdjax.nets import MLP, Denoiser

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _flat(tree) -> np.ndarray:
    return np.concatenate([np.ravel(np.asarray(x, np.float64)) for x in jax.tree.leaves(tree)])


def test_ema_follows_edms_formula_with_rampup():
    """Batch 4, half-life 0.01 kimg (10 images), ramp-up 0.5: before update t, 4t images were seen, so the
    half-life is min(10, 2t) images and beta_t = 0.5 ** (4 / h): 0, 1/4, 1/2, 2^(-2/3), 2^(-1/2), 2^(-0.4), ..."""
    betas = [0.0, 0.25, 0.5, 0.5 ** (2 / 3), 0.5 ** 0.5, 0.5 ** 0.4, 0.5 ** 0.4]
    np.testing.assert_allclose([float(teacher.ema_beta(t, 4, 0.01, 0.5)) for t in range(7)], betas, rtol=1e-6)
    assert float(teacher.ema_beta(0, 4, 0.01, 0.0)) == pytest.approx(0.5 ** 0.4)   # no ramp-up: h = 10 at once

    model = Denoiser(MLP(features=(16, 16)))
    sample = toy.get_sampler("chessboard")
    tcfg = teacher.TeacherConfig(batch=4, lr=1e-2, ema_halflife_kimg=0.01, ema_rampup_ratio=0.5)
    state = teacher.create_state(model, tcfg, jax.random.PRNGKey(0), jnp.zeros((2, 4)))
    np.testing.assert_array_equal(_flat(state.ema), _flat(state.params))
    step = jax.jit(teacher.step_fn(model, tcfg, lambda k, b, c: (sample(k, b), None), jax.random.PRNGKey(1)))
    ema = _flat(state.params)
    for t, beta in enumerate(betas):
        state, _ = step(state, None)
        p = _flat(state.params)
        ema = beta * ema + (1 - beta) * p                       # EDM: p_ema.copy_(p_net.lerp(p_ema, beta))
        np.testing.assert_allclose(_flat(state.ema), ema, rtol=1e-5, atol=1e-7, err_msg=f"after step {t}")
    assert np.abs(_flat(state.ema) - _flat(state.params)).max() > 1e-4     # an average, not the raw weights


def _toy_ema_config(**changes):
    cfg = configs.override(configs.toy.get_config(), **{**configs.EDM_EMA,
        "teacher.ema_halflife_kimg": 0.5, "teacher.steps": 40, "teacher.chunk": 10, "teacher.ckpt_every": 20,
        "teacher.batch": 64, "net_kwargs": {"features": (32, 32)}, "distill.iterations": 10, "distill.chunk": 5,
        "distill.ckpt_every": 5, "distill.batch": 64, "eval_n": 32, "record.eval_every": 5, "record.n": 32,
        "record.ci_resamples": 10, "ci_resamples": 10})
    return configs.override(cfg, **changes)


KILLED = textwrap.dedent("""
    import os, signal, sys
    from dmdjax import loop, pipeline
    from dmdjax.data import load
    sys.path.insert(0, sys.argv[2])
    from test_teacher_ema import _toy_ema_config
    real = loop._run_chunk
    def dying(step_fn, state, *args):
        if int(state.step) == 30:                 # after the checkpoint at 20, in the middle of the run
            os.kill(os.getpid(), signal.SIGKILL)
        return real(step_fn, state, *args)
    loop._run_chunk = dying
    save = pipeline.Checkpointer.save          # saves finish before the kill (Orbax writes asynchronously)
    pipeline.Checkpointer.save = lambda self, *a: (save(self, *a), self.wait())
    cfg = _toy_ema_config()
    pipeline.train_teacher(cfg, load(cfg), __import__("pathlib").Path(sys.argv[1]), progress=False)
""")


@pytest.mark.slow
def test_kill_and_resume_give_the_bitwise_ema(tmp_path, monkeypatch):
    cfg = _toy_ema_config()
    data = load(cfg)
    _, _, whole = pipeline.train_teacher(cfg, data, tmp_path / "whole", progress=False)
    env = dict(os.environ, PYTHONPATH=REPO)
    proc = subprocess.run([sys.executable, "-c", KILLED, str(tmp_path / "killed"), os.path.join(REPO, "tests")],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    from dmdjax import loop
    real, starts = loop._run_chunk, []
    monkeypatch.setattr(loop, "_run_chunk", lambda f, s, *a: (starts.append(int(s.step)), real(f, s, *a))[1])
    _, _, resumed = pipeline.train_teacher(cfg, data, tmp_path / "killed", progress=False)
    assert starts == [20, 30]                                   # resumed at the checkpoint, not restarted
    np.testing.assert_array_equal(_flat(resumed.ema), _flat(whole.ema))
    np.testing.assert_array_equal(_flat(resumed.params), _flat(whole.params))


@pytest.mark.slow
def test_students_and_phi_k_start_from_the_ema(tmp_path, monkeypatch):
    """pipeline.run hands the snapshot's EMA to DMD's init (generator and fake score) and to the record's
    Phi_K; with distill_ema False, the raw weights."""
    seen = []
    real = distill.init_state
    monkeypatch.setattr(distill, "init_state", lambda p, *a, **k: (seen.append(_flat(p)), real(p, *a, **k))[1])
    for distill_ema in (True, False):
        cfg = _toy_ema_config(**{"teacher.distill_ema": distill_ema, "teacher.steps": 20,
                                 "record.eval_every": 0})
        work = tmp_path / str(distill_ema)
        pipeline.run(cfg, load(cfg), work, progress=False)
        state = pipeline.Checkpointer(work / "teacher" / "ckpt").restore(
            teacher.create_state(pipeline.build_model(cfg), cfg.teacher, jax.random.PRNGKey(0), jnp.zeros((2, 4))), 20)
        np.testing.assert_array_equal(seen[-1], _flat(state.ema if distill_ema else state.params))
    assert np.abs(seen[0] - seen[1]).max() > 1e-4


@pytest.mark.slow
def test_derived_settings_follow_overrides():
    out = subprocess.run([sys.executable, "experiments/mnist_uncond.py", "--set", "distill.lr_gen=1e-5",
                          "--print_config"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout)["config"]["record"]["min_iterations"] == 10_000
    both = subprocess.run([sys.executable, "experiments/mnist_uncond.py", "--teacher_steps=100", "--set",
                           "teacher.steps=300", "--print_config"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert both.returncode == 2 and "different values" in both.stderr and "Traceback" not in both.stderr
    paper = subprocess.run([sys.executable, "experiments/mnist_uncond.py", "--preset=paper", "--print_config"],
                           cwd=REPO, capture_output=True, text=True, timeout=120)
    t = json.loads(paper.stdout)["config"]["teacher"]
    assert t["ema_halflife_kimg"] == 500.0 and t["ema_rampup_ratio"] == 0.05 and t["distill_ema"]


@pytest.mark.parametrize("make", [lambda p: configs.toy.get_config(p, "moons"), configs.mnist_uncond.get_config,
                                  configs.mnist_cond.get_config, configs.mnist_trend.get_config,
                                  configs.mnist_trend_cond.get_config, configs.manifold.get_config,
                                  configs.mnist_regime.get_config])
@pytest.mark.parametrize("preset", ["cpu", "paper"])
def test_every_teacher_preset_distills_edms_ema(make, preset):
    """The protocol the regime study selected (results/mnist_regime): every preset that trains a teacher keeps
    EDM's EMA and gives it to Phi_K and the students; one --set away from the raw weights."""
    cfg = make(preset)
    assert (cfg.teacher.ema_halflife_kimg, cfg.teacher.ema_rampup_ratio, cfg.teacher.distill_ema) == (500.0, 0.05, True)
    assert cfg.teacher.ema
    raw = configs.override(cfg, **{"teacher.ema_halflife_kimg": 0.0})
    assert not raw.teacher.ema and raw.validate() is None


@pytest.mark.slow
def test_regime_arms_and_summary(tmp_path):
    """The study trains its teacher once and gives each arm a copy; each finished student is one `arms` entry;
    the lr arm runs to its sum of learning rates with a warm-up spanning the same sum as its base's."""
    base = configs.override(_toy_ema_config(**{"distill.warmup": 5}), distill_snapshots=(20, 40))
    factor, low = configs.mnist_regime.arm(base, "lr4e-6")
    assert factor == "dmd_lr" and low.snapshots() == (40,)
    assert low.distill.iterations * low.distill.lr_gen == pytest.approx(configs.mnist_regime.LOW_LR_SUM)
    assert low.distill.warmup * low.distill.lr_gen == pytest.approx(base.distill.warmup * base.distill.lr_gen)
    assert low.record.min_iterations == round(configs.PAPER_LR_SUM / configs.mnist_regime.LOW_LR)
    result = studies.run_regime(base, ["ema", "raw"], tmp_path, load(base), progress=False,
                                results_dir=tmp_path / "evidence", peak_rss_gib=lambda: 1.5)
    assert [(r["name"], r["teacher_steps"], r["teacher_ema"]) for r in result["arms"]] == [
        ("ema", 20, True), ("ema", 40, True), ("raw", 20, False), ("raw", 40, False)]
    assert result["pending"] == ["lr4e-6/40", "regression/20", "regression/40"] and not result["complete"]
    for r in result["arms"]:
        assert r["lr_sum"] == pytest.approx(r["lr"] * r["iterations"]) and r["peak_rss_gib"] == 1.5
        assert r["kappa_final_ci"][0] <= r["kappa_final"] <= r["kappa_final_ci"][1]
    refs = [np.load(tmp_path / a / "student_40" / "record_ref.npz")["ref"] for a in ("ema", "raw")]
    assert np.abs(refs[0] - refs[1]).max() > 1e-4                  # Phi_K of the EMA, not of the raw weights
    log = (tmp_path / "teacher_run" / "teacher" / "metrics.jsonl").read_text()
    assert len(log.splitlines()) == 40 and all((tmp_path / a / "teacher" / "metrics.jsonl").read_text() == log
                                               for a in ("ema", "raw"))   # one teacher, shared
    assert json.loads((tmp_path / "evidence" / "results.json").read_text())["arms"] == result["arms"]
    again = studies.run_regime(base, ["ema"], tmp_path, load(base), progress=False, seed=1, snapshots=(40,))
    seed1 = [r for r in again["arms"] if r["name"] == "ema-seed1"]
    assert [(r["teacher_steps"], r["distill_seed"]) for r in seed1] == [(40, 1)]
    assert seed1[0]["kappa_final"] != next(r for r in again["arms"] if r["name"] == "ema" and
                                           r["teacher_steps"] == 40)["kappa_final"] or \
        seed1[0]["delta_e"] != result["arms"][1]["delta_e"]
    assert (tmp_path / "evidence" / "kappa_vs_sum.png").is_file()


def test_regime_summary_keeps_arms_exported_from_an_earlier_workdir(tmp_path):
    """An arm whose run directory is gone (another workdir, another machine) is read from its exported evidence:
    regenerating the committed summary from results/ alone gives the same arm rows."""
    import shutil
    res = tmp_path / "res"
    shutil.copytree(Path(REPO) / "results" / "mnist_regime", res)
    committed = json.loads((res / "results.json").read_text())
    again = studies.write_regime_summary(configs.mnist_regime.get_config(), tmp_path / "work", res)
    assert again["arms"] == json.loads(json.dumps(committed["arms"]))
    assert (res / "kappa_vs_sum.png").stat().st_size > 1000
