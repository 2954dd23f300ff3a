"""MNIST: snapshot chaining, a tiny end-to-end run on the real files, and the paper preset's steps at batch 2."""
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dmdjax import configs, distill, loop, metrics, pipeline, sampling, teacher
from dmdjax.data import Dataset, load

REPO = Path(__file__).resolve().parents[1]
from experiments import mnist_uncond  # noqa: E402

TINY_NET = dict(img_resolution=8, in_channels=1, label_dim=0, model_channels=16, channel_mult=[1], num_blocks=1,
                attn_resolutions=[], dropout=0.0)


def tiny_config(**changes):
    cfg = configs.override(configs.mnist_uncond.get_config("cpu"), **{
        "net_kwargs": TINY_NET, "teacher.steps": 4, "teacher.ckpt_every": 2,
        "distill_snapshots": (2, 4), "distill.iterations": 10, "distill.ckpt_every": 5, "distill.warmup": 0,
        "eval_n": 16, "pca_n": 24, "n_show": 8, "eval_batch": 24, "ci_resamples": 10, "record.eval_every": 5,
        "record.n": 24, "record.ci_resamples": 10, "classifier_steps": 20})
    return configs.override(cfg, **changes)


def synthetic_images(cfg):
    imgs = jnp.tanh(jax.random.normal(jax.random.PRNGKey(0), (64, 8, 8, 1)))
    return Dataset(name="synthetic", shape=(8, 8, 1), kind="images", consts=imgs,
                            sample=lambda k, n, c: (c[jax.random.randint(k, (n,), 0, 64)], None))


@pytest.mark.slow
def test_snapshot_chaining_student_starts_at_phi_1(tmp_path):
    cfg = tiny_config()
    data = synthetic_images(cfg)
    model, ckpt, final = pipeline.train_teacher(cfg, data, tmp_path, progress=False)
    assert ckpt.all_steps() == [2, 4]
    snap = pipeline.teacher_snapshot(ckpt, final, 2, cfg.teacher)
    assert any(bool(jnp.any(a != b)) for a, b in zip(jax.tree.leaves(snap), jax.tree.leaves(final.params)))
    student = distill.init_state(snap, cfg.distill)
    z = jax.random.normal(jax.random.PRNGKey(5), (4, 8, 8, 1))
    phi_1 = sampling.phi_k(lambda x, s, y=None: model.apply({"params": snap}, x, s, y), z, 1)
    np.testing.assert_array_equal(distill.generate(model, student.gen.params, z), phi_1)
    np.testing.assert_array_equal(distill.generate(model, student.fake.params, z), phi_1)


@pytest.fixture(scope="module")
def mnist_dir(shared_dir):
    return str(shared_dir / "data" / "mnist")


@pytest.mark.slow
def test_tiny_mnist_run_end_to_end_and_resume(tmp_path, mnist_dir, monkeypatch):
    monkeypatch.setenv("DMDJAX_TFDS_DIR", str(tmp_path / "tfds"))
    cfg = tiny_config()
    data = load(cfg, mnist_dir=mnist_dir)
    assert data.consts[0].shape == (60000, 8, 8, 1)
    ref = pipeline.run(cfg, data, tmp_path / "a", progress=False)
    assert set(ref["snapshots"]) == {"2", "4"}
    snap = ref["snapshots"]["4"]
    assert snap["delta_e"] >= 0 and 0 < snap["memorization"]["r_min"] <= snap["memorization"]["r_mean"] <= 1
    assert -1 <= snap["boundary"]["corr_d_delta"] <= 1
    stats = np.load(tmp_path / "a" / "student_4" / "copying_stats.npz")       # Fig. 5 without its confound
    dist_1 = np.load(tmp_path / "a" / "student_4" / "samples.npz")["dist_phi1"][:16]
    assert snap["boundary"]["partial_corr_d_delta_given_dist_phi1"] == pytest.approx(
        metrics.partial_correlation(stats["d_z"], stats["delta"], dist_1))
    assert snap["delta_e_ci"][0] <= snap["delta_e"] <= snap["delta_e_ci"][1] and "kappa_phi1" in snap
    assert [r["step"] for r in map(json.loads, (tmp_path / "a" / "student_4" / "record.jsonl").open())] == [0, 5, 10]
    for png in ("quadruples.png", "quintuples.png", "heatmap.png", "pca.png", "boundary.png", "distances.png",
                "memorization.png", "dm_loss.png", "convergence.png"):
        assert (tmp_path / "a" / "student_4" / png).stat().st_size > 1000, png
    assert (tmp_path / "a" / "dm_loss.png").exists()
    # held-out quality (dmdjax.quality): teacher EDM loss and fit on the test split, classifier FD at the same N
    assert snap["teacher_quality"]["fit_phi_8"]["n"] == 16 and snap["teacher_quality"]["heldout_edm_loss"]["loss"] > 0
    assert set(snap["frechet"]) >= {"g", "phi_1", "phi_8", "test"} and 0 <= snap["classifier"]["test_accuracy"] <= 1
    assert set(ref["teacher_quality"]) == {"2", "4"} and (tmp_path / "a" / "teacher_quality.png").exists()
    samples = np.load(tmp_path / "a" / "student_4" / "samples.npz")
    # Delta_E on eval_n = 16 noises; Phi_1, Phi_8, G on pca_n = 24 for the PCA figure; Phi_32 on n_show = 8
    assert samples["phi_32"].shape == (8, 8, 8, 1) and samples["phi_8"].shape == (24, 8, 8, 1)
    assert samples["g"].shape == (24, 8, 8, 1) and snap["n"] == 16

    # interrupt in the second half of the second student's distillation, then rerun: only that half runs again,
    # to the same numbers
    real_chunk, calls, ran = loop._run_chunk, {"n": 0}, []

    def dying(step_fn, state, consts, length):
        kind = "distill" if hasattr(state, "gen") else "teacher"
        if kind == "distill" and int(state.step) == 5:
            calls["n"] += 1
            if calls["n"] == 2:    # the second round of student_4 (a round: one program per iteration)
                raise KeyboardInterrupt
        ran.append((kind, int(state.step), length))
        return real_chunk(step_fn, state, consts, length)

    monkeypatch.setattr(loop, "_run_chunk", dying)
    with pytest.raises(KeyboardInterrupt):
        pipeline.run(cfg, data, tmp_path / "b", progress=False)
    assert (tmp_path / "b" / "student_2" / "results.json").exists()
    assert not (tmp_path / "b" / "student_4" / "results.json").exists()
    ran.clear()
    resumed = pipeline.run(cfg, data, tmp_path / "b", progress=False)
    monkeypatch.setattr(loop, "_run_chunk", real_chunk)
    # student_4 resumed at its step-5 checkpoint: one round, its 5 iterations as separate programs
    assert ran == [("distill", step, 1) for step in range(5, 10)]
    assert resumed["table"] == ref["table"]
    with np.load(tmp_path / "a" / "student_4" / "samples.npz") as a, \
            np.load(tmp_path / "b" / "student_4" / "samples.npz") as b:
        np.testing.assert_array_equal(a["g"], b["g"])


def test_mnist_flags(tmp_path, capsys):
    with pytest.raises(SystemExit):
        mnist_uncond.main(["--snapshots=12,x", f"--workdir={tmp_path}"])
    assert "--snapshots" in capsys.readouterr().err


def test_missing_mnist_files_name_the_flag(tmp_path, monkeypatch):
    monkeypatch.setenv("DMDJAX_TFDS_DIR", str(tmp_path / "tfds"))
    with pytest.raises(Exception, match="train-images-idx3-ubyte.gz"):
        mnist_uncond.main([f"--workdir={tmp_path / 'w'}", f"--mnist_dir={tmp_path}", "--quiet"])


@pytest.mark.slow
def test_paper_preset_steps_trace_at_batch_2():
    """The paper's 31M-parameter UNet: one teacher step and one DMD iteration (with generator update), traced
    abstractly (`jax.eval_shape`: forward and backward passes with every shape and dtype, no XLA compile; compiling
    them on a 2-core CPU takes minutes, measured in docs/performance.md and benchmarks/accelerator.py)."""
    cfg = configs.mnist("paper")
    model = pipeline.build_model(cfg, None)
    x = jax.ShapeDtypeStruct((2, 32, 32, 1), jnp.float32)
    params = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros(x.shape), jnp.ones(2))["params"])
    assert sum(p.size for p in jax.tree.leaves(params)) == 31_118_593
    tcfg = configs.override(cfg, **{"teacher.batch": 2}).teacher
    images = jax.ShapeDtypeStruct((4, 32, 32, 1), jnp.float32)
    step = teacher.make_step(model, tcfg.optimizer(), lambda k, n, c: (c[:n], None), 2, jax.random.PRNGKey(2))
    state, m = jax.eval_shape(lambda p, im: step(teacher.TrainState.create(p, tcfg.optimizer()), im), params, images)
    assert m["loss"].shape == () and m["loss"].dtype == jnp.float32
    assert jax.tree.structure(state.params) == jax.tree.structure(params)
    dcfg = configs.override(cfg, **{"distill.batch": 2}).distill
    iteration = distill.make_iteration(model, dcfg, jax.random.PRNGKey(3), sample_shape=(32, 32, 1))
    dstate, dm = jax.eval_shape(lambda p: iteration(distill.init_state(p, dcfg), distill.StepConsts(p, {}), True),
                                params)
    assert set(dm) >= {"dm_loss", "fake_loss"} and dm["fake_loss"].shape == ()
    assert all(a.shape == b.shape for a, b in zip(jax.tree.leaves(dstate.gen.params), jax.tree.leaves(params)))
