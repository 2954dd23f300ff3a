"""ImageNet-64 teacher path on small networks in the export format of tools/export_edm_pkl.py: `.npz` state dict
(torch names and layouts) + JSON sidecar -> convert.load_teacher -> Phi_K sampling -> one DMD iteration and the
evaluation through experiments/imagenet64.py; the loader's and the experiment's errors; the exporter's
constructor-argument reader (torch is not installed here, so its unpickling part cannot run)."""
import json
import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from dmdjax import configs, convert, sampling
from dmdjax.data import load
from dmdjax.nets import adm

REPO = Path(__file__).resolve().parents[1]
from experiments import imagenet64  # noqa: E402
from tools import export_edm_pkl  # noqa: E402

# A conditional ADM (one resolution; attention in dec.8x8_in0) small enough to compile a DMD iteration in seconds
# on a CPU. Down/up-sampling and attention layouts are covered by the EDM fixture (3 resolutions, attention).
TINY = dict(img_resolution=8, in_channels=3, out_channels=3, label_dim=10, model_channels=16, channel_mult=[1],
            channel_mult_emb=2, num_blocks=1, attn_resolutions=[], dropout=0.0, label_dropout=0)


def export(tmp_path: Path, name: str, state_dict: dict, config: dict) -> Path:
    """Write what tools/export_edm_pkl.py writes: <name>.npz and the <name>.json sidecar."""
    npz = tmp_path / f"{name}.npz"
    np.savez(npz, **state_dict)
    npz.with_suffix(".json").write_text(json.dumps({"config": config, "sigma_data": 0.5, "prefix": "model."}))
    return npz


def random_params(config: dict, seed: int = 0):
    """Every parameter re-drawn (no zero-initialised output layer), scaled like EDM's init."""
    rng = np.random.default_rng(seed)
    flat = traverse_util.flatten_dict(adm.param_shapes(config))
    draw = {"kernel": lambda s: rng.standard_normal(s) / np.sqrt(np.prod(s[:-1])),
            "scale": lambda s: 1 + 0.1 * rng.standard_normal(s), "bias": lambda s: 0.1 * rng.standard_normal(s)}
    return traverse_util.unflatten_dict({p: draw[p[-1]](leaf.shape).astype(np.float32) for p, leaf in flat.items()})


@pytest.fixture(scope="module")
def edm(shared_dir):
    """The EDM reference fixture: a torch-exported state dict of a small conditional network, its config, io."""
    d = shared_dir / "fixtures" / "edm"
    config = json.loads((d / "edm_adm_tiny_cond_meta.json").read_text())["config"]
    with np.load(d / "edm_adm_tiny_cond_io.npz") as f:
        io = {k: f[k] for k in f.files}
    return d, config, io


@pytest.fixture(scope="module")
def tiny_npz(tmp_path_factory):
    return export(tmp_path_factory.mktemp("teacher"), "tiny", convert.state_dict_from_params(random_params(TINY)),
                  TINY)


def test_state_dict_from_params_inverts_the_converter(edm):
    """Flax -> torch layout reproduces EDM's own export exactly (names, shapes, values)."""
    d, config, _ = edm
    sd = convert.load_state_dict(d / "edm_adm_tiny_cond_weights.npz")
    back = convert.state_dict_from_params(convert.params_from_state_dict(sd, config))
    assert back.keys() == {k for k in sd if not k.endswith("resample_filter")}
    for k, v in back.items():
        assert v.dtype == np.float32
        np.testing.assert_array_equal(v, sd[k])


def test_load_teacher_from_export_then_phi_1(edm, tmp_path):
    """EDM's export-format .npz + sidecar -> load_teacher -> Phi_1(z) equals EDM's D(80 z; 80, y)."""
    d, config, io = edm
    shutil.copy(d / "edm_adm_tiny_cond_weights.npz", tmp_path / "teacher.npz")
    shutil.copy(d / "edm_adm_tiny_cond_meta.json", tmp_path / "teacher.json")
    model, params = convert.load_teacher(tmp_path / "teacher.npz")   # config from the sidecar
    i = int(np.argmax(io["sigma"]))
    assert io["sigma"][i] == 80.0
    z = jnp.asarray(io["x"][i:i + 1].transpose(0, 2, 3, 1) / 80.0)      # Phi_1 starts from 80 z
    labels = jnp.asarray(io["class_labels"][i:i + 1])
    denoise = lambda x, s, y: model.apply({"params": params}, x, s, y)
    phi_1 = np.asarray(jax.jit(lambda z, y: sampling.phi_k(denoise, z, 1, y))(z, labels))
    np.testing.assert_allclose(phi_1, io["denoised"][i:i + 1].transpose(0, 2, 3, 1), rtol=0, atol=1e-4)


@pytest.mark.slow
def test_experiment_end_to_end_and_resume(tiny_npz, tmp_path, monkeypatch):
    """export -> convert -> two DMD iterations (each a generator and a fake-score update) -> Phi_1/8/32 and G on
    the shared noises -> Delta_E. The paper preset with a generator update every iteration and no lr warm-up:
    XLA:CPU compiles DMD2's 5-iteration round ~3x slower, and a warm-up starts at lr 0 (G would not move). Two
    iterations because the first DM gradient is exactly 0 (fake score = teacher); the second is not."""
    paper = configs.imagenet64.get_config
    monkeypatch.setattr(configs.imagenet64, "get_config", lambda preset="paper", **options: configs.override(
        paper(preset, **options), **{"distill.gen_every": 1, "distill.warmup": 0}))
    argv = [f"--teacher_npz={tiny_npz}", f"--config_json={tiny_npz.with_suffix('.json')}",
            f"--workdir={tmp_path / 'run'}", "--distill_iterations=2", "--eval_n=8", "--pca_n=8", "--quiet"]
    result = imagenet64.main(argv)
    assert np.isfinite(result["delta_e"]) and result["n"] == 8 and result["k_ref"] == 8
    assert json.loads((tmp_path / "run" / "results.json").read_text())["delta_e"] == result["delta_e"]
    student = tmp_path / "run" / "student"
    for name in ("quadruples.png", "pca.png", "distances.png", "heatmap.png", "dm_loss.png", "metrics.jsonl"):
        assert (student / name).exists(), name
    log = [json.loads(line) for line in (student / "metrics.jsonl").read_text().splitlines()]
    assert len(log) == 2 and all(r["gen_update"] == 1 and np.isfinite(r["dm_loss"] + r["fake_loss"]) for r in log)
    with np.load(student / "samples.npz") as s:
        assert {"phi_1", "phi_8", "phi_32", "g", "labels"} <= set(s.files)
        assert s["phi_32"].shape == (8, 8, 8, 3) and s["labels"].shape == (8, 10)
        assert all(np.all(np.isfinite(s[k])) for k in ("phi_1", "phi_8", "phi_32", "g"))
        assert not np.allclose(s["phi_8"], s["phi_1"])
        assert not np.array_equal(s["g"], s["phi_1"])   # G = Phi_1 at initialisation; the update moved it
    assert imagenet64.main(argv)["delta_e"] == result["delta_e"]   # rerun: finished, nothing recomputed
    with pytest.raises(Exception, match="different config"):
        imagenet64.main(argv[:-2] + ["--eval_n=16", "--quiet"])
    other = export(tmp_path, "tiny", convert.state_dict_from_params(random_params(TINY, seed=1)), TINY)
    assert other.name == tiny_npz.name and other != tiny_npz    # another teacher under the same file name
    with pytest.raises(Exception, match="different config .*differs in: teacher_sha256"):
        imagenet64.main([f"--teacher_npz={other}", *argv[1:]])
    assert json.loads((tmp_path / "run" / "wall_s.json").read_text())["distill"] == result["distill_wall_s"] > 0


def test_dmd_needs_no_images():
    cfg = configs.override(configs.imagenet64.get_config(), net_kwargs=TINY)
    data = load(cfg)                                   # the registered imagenet64 Dataset
    assert data.sample is None and data.train_images is None and data.consts is None
    assert data.shape == (8, 8, 3) and data.label_dim == 10
    assert load(configs.imagenet64.get_config()).shape == (64, 64, 3)


def test_paper_preset():
    cfg = configs.imagenet64.get_config("paper")
    assert cfg.net_kwargs == adm.imagenet64_config() and cfg.eval_ks == (1, 8, 32) and cfg.eval_n == 1000
    d = cfg.distill
    assert (d.iterations, d.batch, d.lr_gen, d.lr_fake, d.warmup, d.gen_every) == (50_000, 32, 2e-6, 2e-6, 500, 5)
    with pytest.raises(ValueError, match="only the 'paper' preset"):
        configs.imagenet64.get_config("cpu")


def test_load_teacher_errors_name_the_file_and_fix(tiny_npz, tmp_path):
    missing = tmp_path / "nope.npz"
    with pytest.raises(FileNotFoundError, match="nope.npz.*export_edm_pkl"):
        convert.load_teacher(missing, TINY)
    corrupt = tmp_path / "corrupt.npz"
    corrupt.write_bytes(tiny_npz.read_bytes()[:1000])               # a truncated download / copy
    with pytest.raises(ValueError, match="corrupt.npz is not a readable .npz.*export_edm_pkl"):
        convert.load_teacher(corrupt, TINY)
    with pytest.raises(ValueError, match=r"tiny.npz does not match the given config: shape mismatch for 'model[.]"):
        convert.load_teacher(tiny_npz, dict(TINY, channel_mult_emb=4))
    with pytest.raises(ValueError, match="tiny.npz does not match .*missing"):
        convert.load_teacher(tiny_npz, dict(TINY, num_blocks=2))
    lone = tmp_path / "lone.npz"
    shutil.copy(tiny_npz, lone)
    with pytest.raises(FileNotFoundError, match="lone.json"):            # no config given and no sidecar
        convert.load_teacher(lone)
    lone.with_suffix(".json").write_text(json.dumps({"config": TINY, "sigma_data": 1.0}))
    with pytest.raises(ValueError, match="sigma_data"):
        convert.load_teacher(lone)


def test_experiment_errors_name_the_flag(tiny_npz, tmp_path, capsys):
    base = [f"--workdir={tmp_path / 'run'}", "--quiet"]
    with pytest.raises(SystemExit):
        imagenet64.main([f"--teacher_npz={tmp_path / 'nope.npz'}", *base])
    assert "--teacher_npz" in capsys.readouterr().err
    with pytest.raises(SystemExit):   # the full-size config cannot read the tiny export
        imagenet64.main([f"--teacher_npz={tiny_npz}", f"--workdir={tmp_path / 'run2'}", "--quiet"])
    err = capsys.readouterr().err
    assert "--teacher_npz" in err and "does not match" in err
    with pytest.raises(SystemExit):
        imagenet64.main([f"--teacher_npz={tiny_npz}", f"--config_json={tmp_path / 'none.json'}", *base])
    assert "--config_json" in capsys.readouterr().err


def test_exporter_reads_full_constructor_arguments():
    """persistence-style classes record only the given arguments; the exporter fills in the defaults."""
    class DhariwalUNet:
        def __init__(self, img_resolution, in_channels, out_channels, label_dim=0, augment_dim=0,
                     model_channels=192, channel_mult=(1, 2, 3, 4), num_blocks=3, dropout=0.10):
            pass

    class Decorator(DhariwalUNet):   # what torch_utils.persistence.persistent_class builds
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.init_args, self.init_kwargs = args, kwargs

    net = Decorator(64, in_channels=3, out_channels=3, label_dim=1000, channel_mult=[1, 2, 3, 4])
    assert export_edm_pkl.constructor_kwargs(net) == dict(
        img_resolution=64, in_channels=3, out_channels=3, label_dim=1000, augment_dim=0, model_channels=192,
        channel_mult=[1, 2, 3, 4], num_blocks=3, dropout=0.10)
