"""Issue 7's three study commands end to end at tiny sizes (toys only): outputs, shared teacher, resumable layout."""
import json
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]

from experiments import ablation, dimension_sweep, dynamics  # noqa: E402

from dmdjax import configs, loop  # noqa: E402
from dmdjax.nets.mlp import FEATURES  # noqa: E402

TINY = ["--teacher_steps=10", "--distill_iterations=10", "--eval_n=16", "--quiet"]


@pytest.fixture(autouse=True)
def small_toys(monkeypatch):
    """A 1 x 8 MLP, chunks that fit the tiny runs, and a generator update every iteration (a round of one
    iteration compiles ~5x faster; the 1:5 schedule is tested in test_distill.py)."""
    original = configs.toy.get_config

    def small(preset="cpu", dataset="chessboard"):
        return configs.override(original(preset, dataset), **{
            "teacher.chunk": 10, "distill.chunk": 10, "distill.ckpt_every": 10, "distill.gen_every": 1,
            "net_kwargs": {"features": (8,)}})
    monkeypatch.setattr(configs.toy, "get_config", small)


@pytest.mark.slow
def test_ablation(tmp_path):
    result = ablation.main(TINY + ["--datasets=chessboard", f"--workdir={tmp_path}"])
    rows = result["table"]["chessboard"]
    assert set(rows) == {"plain", "gan", "regression"}
    for row in rows.values():
        assert row["delta_e"] >= 0 and "w2_student" in row and "delta_e_over_plain" in row
        ratio = row["delta_e_over_plain"]
        assert (ratio is None) if rows["plain"]["delta_e"] == 0 else np.isclose(ratio, row["delta_e"] / rows["plain"]["delta_e"])
    assert json.loads((tmp_path / "results.json").read_text())["table"]["chessboard"]["gan"]["delta_e"] >= 0
    assert (tmp_path / "ablation.png").stat().st_size > 1000
    # one teacher for the three students
    for variant in ("gan", "regression"):
        assert sorted(p.name for p in (tmp_path / "chessboard" / variant / "teacher" / "ckpt").iterdir()) == \
            sorted(p.name for p in (tmp_path / "chessboard" / "plain" / "teacher" / "ckpt").iterdir())
    gan_log = loop.read_log(tmp_path / "chessboard" / "gan" / "student_10" / "metrics.jsonl")
    reg_log = loop.read_log(tmp_path / "chessboard" / "regression" / "student_10" / "metrics.jsonl")
    assert {"gan_gen", "gan_cls"} <= set(gan_log) and "regression" in reg_log and "gan_gen" not in reg_log
    assert (tmp_path / "chessboard" / "regression" / "student_10" / "regression_pairs.npz").exists()


@pytest.mark.slow
def test_dynamics(tmp_path):
    result = dynamics.main(TINY + ["--datasets=chessboard", "--every=5", f"--workdir={tmp_path}"])
    run = result["runs"]["chessboard"]
    assert run["step"] == [0, 5, 10] and len(run["delta_e"]) == len(run["delta_e_to_final"]) == 3
    assert run["delta_e_to_final"][-1] == 0.0 and run["dm_step"] == list(range(10))
    assert (tmp_path / "dynamics.png").stat().st_size > 1000
    assert (tmp_path / "chessboard" / "student_10" / "results.json").exists()   # full evaluation of the final G
    # G at t = 0 is Phi_1
    s = np.load(tmp_path / "chessboard" / "student_10" / "samples.npz")
    g0 = np.load(tmp_path / "chessboard" / "student_10" / "dynamics" / "g_0000000.npy")
    np.testing.assert_allclose(g0, s["phi_1"], rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_dynamics_rows_are_those_of_segmentwise_distillation(tmp_path):
    """The dynamics callback (one distillation, beside a convergence record on another interval) sees the states
    of distilling 5 iterations, then resuming to 10 and 12 (the study's former segment-wise way): G_t bitwise
    equal, the same DM loss log."""
    from dmdjax import evaluation, pipeline, studies
    from dmdjax.data import load
    cfg = configs.override(configs.dynamics.get_config("cpu", "chessboard"), **{
        "teacher.steps": 10, "distill.iterations": 12, "eval_n": 16, "record.eval_every": 4, "record.n": 8})
    data = load(cfg)
    run = studies.run_dynamics(cfg, data, tmp_path / "one", every=5, progress=False)
    assert run["step"] == [0, 5, 10, 12]
    model, ckpt, final = pipeline.train_teacher(cfg, data, tmp_path / "seg", progress=False)
    params = pipeline.teacher_snapshot(ckpt, final, 10, cfg.teacher)
    z, labels = evaluation.eval_noise(cfg, data)
    for stop in (5, 10, 12):
        state = pipeline.distill_student(configs.override(cfg, **{"distill.iterations": stop}), data, model,
                                         params, tmp_path / "seg" / "student", progress=False)
        g = evaluation.student_samples(cfg, model, state.gen.params, z, labels)
        np.testing.assert_array_equal(g, np.load(tmp_path / "one" / "student_10" / "dynamics" / f"g_{stop:07d}.npy"))
    assert (tmp_path / "seg" / "student" / "metrics.jsonl").read_text() == \
        (tmp_path / "one" / "student_10" / "metrics.jsonl").read_text()


@pytest.mark.slow
def test_dimension_sweep(tmp_path):
    result = dimension_sweep.main(TINY + ["--datasets=chessboard", "--dims=2", "--widths=8", "--width_dim=2",
                                          f"--workdir={tmp_path}"])
    assert [(r["dim"], r["width"]) for r in result["by_dim"]["chessboard"]] == [(2, 8)]
    assert [(r["dim"], r["width"]) for r in result["by_width"]["chessboard"]] == [(2, 8)]
    assert sorted(p.name for p in (tmp_path / "chessboard").iterdir()) == ["R2_w8"]   # one run serves both axes
    assert np.load(tmp_path / "chessboard" / "R2_w8" / "student_10" / "samples.npz")["g"].shape == (16, 2)
    assert (tmp_path / "sweep.png").stat().st_size > 1000


def test_bad_study_flags(tmp_path, capsys):
    for main, flag in ((ablation.main, "--datasets=spiral"), (dimension_sweep.main, "--datasets=mnist"),
                       (dimension_sweep.main, "--dims=0")):
        with pytest.raises(SystemExit):
            main([flag, f"--workdir={tmp_path}"])
    assert "datasets must be" in capsys.readouterr().err


def test_study_configs(monkeypatch):
    from dmdjax import studies
    from dmdjax.data import load
    monkeypatch.undo()                                   # the real presets
    base = configs.ablation.get_config("cpu", "chessboard")
    assert not base.distill.gan and base.distill.regression_weight == 0
    gan, reg = configs.ablation.variant(base, "gan"), configs.ablation.variant(base, "regression")
    assert gan.distill.gan and (gan.distill.gan_cls_weight, gan.distill.gan_gen_weight) == (1e-2, 3e-3)
    assert reg.distill.regression_weight == 0.25 and not reg.distill.gan
    assert gan.teacher == base.teacher == reg.teacher      # the shared teacher
    mnist = configs.ablation.get_config("cpu", "mnist")
    assert mnist.snapshots() == (mnist.teacher.steps,)
    cfg, every = configs.dynamics.get_config("cpu", "chessboard"), configs.dynamics.interval("cpu", "chessboard")
    assert cfg.distill.iterations % every == 0 and every % cfg.distill.gen_every == 0
    cfg = configs.dimension_sweep.get_config("cpu", "gmm", 64, width=96)
    assert cfg.net_kwargs["features"] == (96,) * 5 and "R64" in cfg.name
    assert configs.mlp_features(configs.dimension_sweep.get_config("cpu", "gmm", 64)) == FEATURES == (384,) * 5
    assert load(cfg, dim=64, embed_seed=0).shape == (64,)               # the sweep's R^64 embedding
    assert studies.dataset_list("gmm,mnist") == ("gmm", "mnist")
    with pytest.raises(ValueError, match="unknown variant"):
        configs.ablation.variant(base, "lpips")
