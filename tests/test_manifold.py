"""The synthetic MLP-manifold data set (App. A) and a tiny conditional run through the shared pipeline."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dmdjax import configs, evaluation, pipeline
from dmdjax.data import Dataset, image_dataset, manifold


def test_manifold_is_seeded_shaped_and_striped():
    x, y = manifold.load_manifold(500, seed=3)
    x2, y2 = manifold.load_manifold(500, seed=3)
    x3, _ = manifold.load_manifold(500, seed=4)
    assert x.shape == (500, 32, 32, 1) and x.dtype == np.float32 and y.shape == (500,)
    np.testing.assert_array_equal(x, x2)
    np.testing.assert_array_equal(y, y2)
    assert not np.allclose(x, x3)
    assert x.min() >= -1 and x.max() <= 1
    assert set(np.unique(y)) == set(range(10))
    for c in range(10):
        top, bottom = manifold.stripe_rows(c)
        imgs = x[y == c]
        assert np.all(imgs[:, top:bottom] == 1.0), c                 # the class stripe is white
        others = np.ones(32, bool)
        others[top:bottom] = False
        assert np.mean(imgs[:, others] == 1.0) < 0.01                 # nowhere else
    tops = [manifold.stripe_rows(c)[0] for c in range(10)]
    assert len(set(tops)) == 10 and all(t % 2 == 0 for t in tops)    # distinct, survive 2x pooling


def test_manifold_has_sixteen_dimensions_per_class():
    """Local dimension: the Jacobian of the map u -> image has rank 16 (the paper's 16-D manifold)."""
    params = manifold.mlp_params(0)
    u = jax.random.normal(jax.random.PRNGKey(1), (manifold.LATENT_DIM,))
    jac = jax.jacfwd(lambda u: manifold.render(params, u[None], jnp.array([2])).ravel())(u)
    s = np.linalg.svd(np.asarray(jac), compute_uv=False)
    assert jac.shape == (1024, 16) and s[-1] > 1e-3 * s[0]


def test_manifold_pooling_and_bad_resolution():
    x16, _ = manifold.load_manifold(50, seed=0, resolution=16)
    x32, _ = manifold.load_manifold(50, seed=0)
    np.testing.assert_allclose(x16, x32.reshape(50, 16, 2, 16, 2, 1).mean(axis=(2, 4)), atol=1e-6)
    with pytest.raises(ValueError, match="resolution must divide 32"):
        manifold.load_manifold(10, resolution=12)


def test_first_eval_noises_do_not_depend_on_pca_n():
    cfg = configs.override(configs.manifold.get_config("cpu"), eval_n=8)
    data = Dataset(name="d", shape=(4, 4, 1), sample=None, label_dim=10, kind="images")
    z8, y8 = evaluation.eval_noise(cfg, data)
    z20, y20 = evaluation.eval_noise(cfg, data, 20)
    assert z20.shape == (20, 4, 4, 1) and y20.shape == (20, 10)
    np.testing.assert_array_equal(z20[:8], z8)
    np.testing.assert_array_equal(y20[:8], y8)


TINY = dict(img_resolution=8, in_channels=1, label_dim=10, model_channels=16, channel_mult=[1], num_blocks=1,
            attn_resolutions=[], dropout=0.0)


@pytest.mark.slow
def test_tiny_conditional_run(tmp_path):
    cfg = configs.override(configs.manifold.get_config("cpu"), **{
        "net_kwargs": TINY, "teacher.steps": 2, "teacher.ckpt_every": 2,
        "distill_snapshots": (2,), "distill.iterations": 5, "distill.ckpt_every": 5, "distill.warmup": 0,
        "eval_n": 16, "pca_n": 24, "n_show": 8, "eval_batch": 24})
    x, y = manifold.load_manifold(100, 0, resolution=8)
    summary = pipeline.run(cfg, image_dataset("manifold", x, y, 10), tmp_path, progress=False)
    result = json.loads((tmp_path / "student_2" / "results.json").read_text())
    assert np.isfinite(result["delta_e"]) and result["n"] == 16
    assert summary["table"] == {"2": result["delta_e"]}
    for fig in ("quadruples.png", "pca.png", "distances.png", "quintuples.png", "boundary.png"):
        assert (tmp_path / "student_2" / fig).stat().st_size > 0, fig
    s = np.load(tmp_path / "student_2" / "samples.npz")
    assert s["z"].shape == (24, 8, 8, 1) and s["g"].shape == (24, 8, 8, 1) and s["labels"].shape == (24, 10)
    np.testing.assert_array_equal(s["labels"].sum(axis=1), 1.0)


def test_image_dataset_rejects_bad_input():
    with pytest.raises(ValueError, match="non-empty"):
        image_dataset("x", np.zeros((0, 8, 8, 1)), None)
    with pytest.raises(ValueError, match="labels for"):
        image_dataset("x", np.zeros((4, 8, 8, 1)), np.zeros(3))


@pytest.mark.slow
def test_conditional_figures_from_runs(tmp_path):
    """Fig. 8-10 from finished runs (experiments/conditional_figures.py) on a hand-made run directory."""
    from experiments import conditional_figures
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        sdir = tmp_path / name / "student_64"
        sdir.mkdir(parents=True)
        img = lambda n: np.tanh(rng.standard_normal((n, 8, 8, 1))).astype(np.float32)
        np.savez(sdir / "samples.npz", z=img(40), phi_1=img(40), phi_8=img(40), phi_32=img(6), g=img(40),
                 dist_phi1=rng.random(40), dist_g=rng.random(40))
        (sdir / "results.json").write_text(json.dumps({"delta_e": 0.5, "n": 20}))
    (tmp_path / "a" / "student_8").mkdir()                   # unfinished: ignored
    table = conditional_figures.main([f"--run=A={tmp_path / 'a'}", f"--run=B={tmp_path / 'b'}",
                                      f"--out={tmp_path / 'out'}", "--n_show=6"])
    assert set(table) == {"A", "B"} and table["A"]["run"].endswith("student_64") and table["A"]["pca_triplets"] == 40
    for fig in ("fig8.png", "fig9.png", "fig10.png", "results.json"):
        assert (tmp_path / "out" / fig).stat().st_size > 0
    with pytest.raises(FileNotFoundError, match="no finished student"):
        conditional_figures.main([f"--run=C={tmp_path / 'missing'}", f"--out={tmp_path / 'out'}"])
