"""The convergence record (dmdjax.record) in the training loop: what it measures, exact resume, the stop rule;
and the partial correlation of Fig. 5. A fake 'student' (a point set rotating towards a target) keeps it fast."""
import json

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dmdjax import loop, metrics, record
from dmdjax.checkpoint import Checkpointer

X = np.random.default_rng(0).normal(size=(40, 2)) * [3.0, 0.5]   # Phi_1: G at initialisation
TARGET = 2.0                                                # Phi_K: X rotated by TARGET radians


@flax.struct.dataclass
class Gen:
    params: jax.Array


@flax.struct.dataclass
class State:
    step: jax.Array
    gen: Gen


def _rotate(points, angle):
    c, s = np.cos(angle), np.sin(angle)
    return points @ np.array([[c, s], [-s, c]])


def _step(state, consts):
    """The angle approaches TARGET geometrically: the set moves (and re-pairs) early, then settles."""
    angle = state.gen.params + 0.15 * (TARGET - state.gen.params)
    return State(step=state.step + 1, gen=Gen(angle)), {"loss": TARGET - angle}


def _generate(params):
    return _rotate(X, float(params))


def _run(tmp, num_steps, cfg, ckpt_every=15, chunk=15):
    rec = record.Recorder(cfg, tmp / "record.jsonl", _rotate(X, TARGET), X, _generate,
                          lambda: record.finished_checkpoint(tmp / "ckpt"))
    state = State(step=jnp.zeros((), jnp.int32), gen=Gen(jnp.zeros(())))
    return loop.run_loop(_step, state, None, num_steps=num_steps, ckpt=Checkpointer(tmp / "ckpt"),
                         log_path=tmp / "log.jsonl", chunk=chunk, ckpt_every=ckpt_every, progress=False,
                         callback=rec, callback_every=cfg.eval_every)


def _rows(path, drop=("eval_s",)):
    return [{k: v for k, v in r.items() if k not in drop} for r in record.read_record(path)]


CFG = record.RecordConfig(eval_every=5, n=40, ci_resamples=20, patience=2, fit_factor=1.2, fit_tol=0.02,
                          kappa_tol=0.02, move_tol=0.01)


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("full")
    _run(tmp, 60, CFG)
    return _rows(tmp / "record.jsonl")


def test_record_measures_the_student(full):
    assert [r["step"] for r in full] == list(range(0, 61, 5))
    first, last = full[0], full[-1]
    assert first["covered"] == pytest.approx(0.0, abs=1e-12) and last["covered"] > 0.8   # Phi_1 -> Phi_K
    assert last["fit_ratio"] < first["fit_ratio"]
    moves = [r["delta_e_move"] for r in full[1:]]
    assert first["delta_e_move"] is None and max(moves[:3]) > 0.01      # the pairing moves early on ...
    assert moves[-1] < max(moves[:3])                                   # ... and less once the set settles
    for r in full:   # the intervals bracket the estimates
        assert r["delta_e_ci"][0] <= r["delta_e"] <= r["delta_e_ci"][1]
        assert r["kappa_ci"][0] <= r["kappa"] <= r["kappa_ci"][1]
    direct = metrics.copying_index(_rotate(X, TARGET), _generate(_angle(full[4]["step"])))   # independent G_20
    assert full[4]["kappa"] == pytest.approx(float(direct.kappa), rel=1e-4)
    assert full[2]["fit_change"] is not None and full[1]["fit_change"] is None    # window of patience = 2 rows
    assert full[2]["covered_change"] == pytest.approx(abs(full[2]["covered"] - full[0]["covered"]))


def _angle(step):
    """The fake student's angle after `step` steps, in closed form."""
    return TARGET * (1 - 0.85 ** step)


def test_resume_gives_the_same_record(full, tmp_path):
    """Killed at 45 (not a multiple of eval_every; resumes from the kept G of step 40) with a row written after
    that checkpoint (step 50, must be replaced); the resumed record equals the uninterrupted one."""
    _run(tmp_path, 45, CFG)
    with (tmp_path / "record.jsonl").open("a") as f:
        f.write(json.dumps({**full[-1], "step": 50, "delta_e": 123.0, "stop": False}) + "\n")
    kept = sorted(p.name for p in (tmp_path / "record_g").iterdir())
    assert "00000040.npy" in kept                        # G of the last row before the checkpoint
    _run(tmp_path, 60, CFG)
    assert _rows(tmp_path / "record.jsonl") == full


def test_stop_rule_stops_and_stays_stopped(full, tmp_path):
    cfg = record.RecordConfig(**{**CFG.__dict__, "until_converged": True})
    expected = next(r["step"] for i, r in enumerate(full) if record.convergence(full[:i + 1], cfg)["converged"])
    assert 0 < expected < 60
    state = _run(tmp_path, 60, cfg)
    assert int(state.step) == expected and Checkpointer(tmp_path / "ckpt").latest_step() == expected
    rows = _rows(tmp_path / "record.jsonl")
    assert rows[-1]["stop"] and not any(r["stop"] for r in rows[:-1])
    assert _rows(tmp_path / "record.jsonl", ("eval_s", "stop")) == [
        {k: v for k, v in r.items() if k != "stop"} for r in full if r["step"] <= expected]
    again = _run(tmp_path, 60, cfg)                       # a rerun stays stopped and trains nothing
    assert int(again.step) == expected and _rows(tmp_path / "record.jsonl") == rows
    assert len(loop.read_log(tmp_path / "log.jsonl")["step"]) == expected
    verdict = record.convergence(record.read_record(tmp_path / "record.jsonl"), cfg)
    assert verdict["converged"] and all(c["ok"] for c in verdict["last"])
    strict = record.RecordConfig(**{**cfg.__dict__, "fit_factor": 1e-3})   # never close enough: runs to the max
    assert int(_run(tmp_path / "strict", 60, strict).step) == 60
    assert not record.convergence(record.read_record(tmp_path / "strict" / "record.jsonl"), strict)["converged"]


def test_min_iterations_delays_the_stop_and_a_stopped_student_resumes_under_the_new_rule(full, tmp_path):
    """A rule with min_iterations fires at its first converged evaluation at or after that iteration. A student
    stopped early by a rule without it, rerun under the new rule, resumes from where it stopped (the stop row is
    judged again) and ends with the record and the step of a student run under the new rule from the start."""
    cfg = record.RecordConfig(**{**CFG.__dict__, "until_converged": True})
    early = next(r["step"] for i, r in enumerate(full) if record.convergence(full[:i + 1], cfg)["converged"])
    later = record.RecordConfig(**{**cfg.__dict__, "min_iterations": early + 12})
    expected = next(r["step"] for i, r in enumerate(full) if record.convergence(full[:i + 1], later)["converged"])
    assert expected >= early + 12 and not record.convergence(full[:early // 5 + 1], later)["converged"]
    assert int(_run(tmp_path / "fresh", 60, later).step) == expected
    assert int(_run(tmp_path / "stopped", 60, cfg).step) == early
    resumed = _run(tmp_path / "stopped", 60, later)
    assert int(resumed.step) == expected
    assert _rows(tmp_path / "stopped" / "record.jsonl") == _rows(tmp_path / "fresh" / "record.jsonl")
    assert record.convergence(_rows(tmp_path / "fresh" / "record.jsonl"), later)["criteria"]["min_iterations"] \
        == early + 12


def test_a_student_drifting_away_from_its_teacher_has_not_converged():
    """Fit, spread and pairing all steady (the 1024-step MNIST student at t = 800..1000: kappa ~0, Delta_E moves 0)
    but G moves away from Phi_K (covered 0.24 -> 0.14): not converged; the same record with G at rest is."""
    cfg = record.RecordConfig(eval_every=100, patience=3, min_iterations=1000)
    steady = {"fit_ratio": 0.89, "spread_ratio": 0.64, "fit_change": 0.01, "kappa": 0.001, "kappa_change": 0.002,
              "delta_e_move": 0.0}
    before = [{"step": t, **steady, "covered": 0.3, "covered_change": 0.01} for t in (500, 600, 700)]
    drifting = before + [{"step": t, **steady, "covered": c, "covered_change": ch}
                         for t, c, ch in ((800, 0.24, 0.09), (900, 0.19, 0.14), (1000, 0.14, 0.16))]
    resting = [{**r, "covered_change": 0.01} for r in drifting]
    assert not record.convergence(drifting, cfg)["converged"]
    assert [c["ok"] for c in record.convergence(drifting, cfg)["last"]] == [False, False, False]
    assert record.convergence(resting, cfg)["converged"]
    assert not record.convergence(resting[-2:], cfg)["converged"]                     # fewer than patience rows
    assert not record.convergence([{**r, "step": r["step"] - 200} for r in resting], cfg)["converged"]  # too early


def test_kappa_drift_is_the_change_over_the_second_half_of_the_run():
    """kappa_drift against a direct computation: kappa linear in the step gives slope x t / 2 exactly, whatever the
    first half holds; noise around a flat line gives ~0; fewer than 3 rows in the second half give None."""
    rows = [{"step": t, "kappa": (5.0 if t < 500 else 0.1 + 2e-4 * t)} for t in range(0, 1001, 100)]
    assert record.kappa_drift(rows) == pytest.approx(2e-4 * 500, rel=1e-9)
    noise = np.random.default_rng(0).normal(scale=1e-3, size=11)
    flat = [{"step": t, "kappa": 0.3 + e} for t, e in zip(range(0, 1001, 100), noise)]
    assert abs(record.kappa_drift(flat)) < 3e-3
    steps = np.arange(500, 1001, 100)
    assert record.kappa_drift(flat) == pytest.approx(np.polyfit(steps, 0.3 + noise[5:], 1)[0] * 500)
    assert record.kappa_drift(flat[-2:]) is None and record.kappa_drift([]) is None


def test_a_slow_drift_of_the_pairing_has_not_converged():
    """The toy gmm student at t = 1000..1800: every window of 3 evaluations passes every tolerance (kappa moves
    0.004-0.025 < kappa_tol 0.05) while kappa climbs 0.04 -> 0.07 (and on to 0.26 at 4000): not converged. The same
    record with kappa at rest is."""
    cfg = record.RecordConfig(eval_every=200, patience=3, min_iterations=1000)
    kappas = {1000: 0.040, 1200: 0.045, 1400: 0.056, 1600: 0.063, 1800: 0.070}
    steady = {"fit_ratio": 1.3, "spread_ratio": 0.9, "fit_change": 0.04, "covered_change": 0.03,
              "delta_e_move": 0.001}
    drifting = [{"step": t, **steady, "kappa": k, "kappa_change": 0.025} for t, k in kappas.items()]
    resting = [{**r, "kappa": 0.05} for r in drifting]
    verdict = record.convergence(drifting, cfg)
    assert not verdict["converged"] and [c["ok"] for c in verdict["last"]] == [False, False, False]
    assert verdict["last"][-1]["kappa_drift"] == pytest.approx(
        np.polyfit(list(kappas), list(kappas.values()), 1)[0] * 900)
    assert record.convergence(resting, cfg)["converged"]
    assert record.convergence(drifting, record.RecordConfig(**{**cfg.__dict__, "drift_abs": 1.0}))["converged"]


def test_bad_record_config_is_a_clear_error():
    with pytest.raises(ValueError, match="multiple of distill.gen_every"):
        record.RecordConfig(eval_every=7).validate(gen_every=5)
    with pytest.raises(ValueError, match="needs the record"):
        record.RecordConfig(until_converged=True).validate()


def test_partial_correlation_against_residual_regression():
    rng = np.random.default_rng(1)
    c = rng.normal(size=300)
    x = 2 * c + rng.normal(size=300)
    y = -c + 0.5 * x + rng.normal(size=300)

    def residual(v):   # least squares on [1, c], directly
        design = np.stack([np.ones_like(c), c], axis=1)
        return v - design @ np.linalg.lstsq(design, v, rcond=None)[0]
    direct = np.corrcoef(residual(x), residual(y))[0, 1]
    assert metrics.partial_correlation(x, y, c) == pytest.approx(direct, abs=1e-10)
    # confounded: x and y both follow c with independent noise -> strongly correlated, partially ~ 0
    x2, y2 = c + 0.3 * rng.normal(size=300), c + 0.3 * rng.normal(size=300)
    assert np.corrcoef(x2, y2)[0, 1] > 0.8 and abs(metrics.partial_correlation(x2, y2, c)) < 0.15
    assert metrics.partial_correlation(x, y, np.ones(300)) == pytest.approx(np.corrcoef(x, y)[0, 1])
    assert np.isnan(metrics.partial_correlation(3 * c + 1, y, c))      # nothing left of x beyond c
    with pytest.raises(ValueError, match="one length"):
        metrics.partial_correlation(x, y[:5], c)


def test_collapsed_student_is_not_converged(full):
    """Shrinking G_t towards its mean keeps fit and pairing still, but the spread criterion refuses it."""
    cfg = record.RecordConfig(**{**CFG.__dict__, "fit_factor": 1e9})
    assert record.convergence(full, cfg)["converged"]
    shrunk = [{**r, "spread_ratio": 0.05} for r in full]
    verdict = record.convergence(shrunk, cfg)
    assert not verdict["converged"] and verdict["last"][-1]["spread_ratio"] == 0.05
