"""EDM ADM network (DhariwalUNet) and checkpoint converter against the reference fixtures in shared/fixtures/edm:
numerical parity with EDM's PyTorch EDMPrecond(DhariwalUNet), the paper configs' exact parameter names/shapes/
counts, converter validation errors, and the bfloat16 mode."""
import json
import os
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from dmdjax import convert, teacher
from dmdjax.nets import adm

SHARED = Path(os.environ.get("DMDJAX_SHARED", Path(__file__).resolve().parents[1].parent / "shared"))
EDM = SHARED / "fixtures" / "edm"


@pytest.fixture(scope="module")
def tiny():
    """(config, state dict, io arrays in NHWC) of the small conditional reference network."""
    if not EDM.is_dir():
        pytest.fail(f"EDM fixtures not found at {EDM}; set DMDJAX_SHARED to the shared folder")
    config = json.loads((EDM / "edm_adm_tiny_cond_meta.json").read_text())["config"]
    state_dict = convert.load_state_dict(EDM / "edm_adm_tiny_cond_weights.npz")
    with np.load(EDM / "edm_adm_tiny_cond_io.npz") as f:
        io = {k: f[k] for k in f.files}
    for k in ("x", "denoised", "denoised_no_labels"):
        io[k] = io[k].transpose(0, 2, 3, 1)   # NCHW -> NHWC
    return config, state_dict, io


@pytest.fixture(scope="module")
def tiny_f32(tiny):
    config, state_dict, _ = tiny
    return convert.edm_denoiser(state_dict, config)


@pytest.mark.minver
def test_parity_with_edm_reference(tiny, tiny_f32):
    _, _, io = tiny
    out = np.asarray(tiny_f32(io["x"], io["sigma"], io["class_labels"]))
    assert out.shape == io["denoised"].shape and out.dtype == np.float32
    np.testing.assert_allclose(out, io["denoised"], rtol=0, atol=1e-4)
    out = np.asarray(tiny_f32(io["x"], io["sigma"]))   # labels=None -> zero label vector, as EDM
    np.testing.assert_allclose(out, io["denoised_no_labels"], rtol=0, atol=1e-4)


def test_bfloat16_mode_close_to_float32(tiny):
    config, state_dict, io = tiny
    out = np.asarray(convert.edm_denoiser(state_dict, config, dtype=jnp.bfloat16)(
        io["x"], io["sigma"], io["class_labels"]))
    ref = io["denoised"]
    assert out.dtype == np.float32 and np.all(np.isfinite(out))
    rel_rms = np.sqrt(np.mean((out - ref) ** 2) / np.mean(ref ** 2))
    assert rel_rms < 0.03, rel_rms                     # measured ~0.008 (bf16 has 8 mantissa bits)
    assert np.abs(out - ref).max() < 0.15


@pytest.mark.parametrize("json_name, config_fn, count", [
    ("edm_adm_mnist32_paper_shapes.json", adm.mnist_config, 31_118_593),
    ("edm_adm_imagenet64_cond_shapes.json", adm.imagenet64_config, 295_899_267),
])
def test_paper_configs_match_reference_shapes(json_name, config_fn, count):
    ref = json.loads((EDM / json_name).read_text())
    config = config_fn()
    assert config == ref["config"]
    assert adm.num_params(adm.param_shapes(config)) == count == ref["num_parameters"]
    expected = {name: tuple(shape) for name, shape in ref["state_dict"] if not name.endswith("resample_filter")}
    assert convert.state_dict_shapes(config) == expected


def test_convert_full_mnist_state_dict():
    """Every entry of the paper's MNIST state dict lands on a Flax param of the transposed shape."""
    ref = json.loads((EDM / "edm_adm_mnist32_paper_shapes.json").read_text())
    state_dict = {name: np.zeros(shape, np.float32) for name, shape in ref["state_dict"]}
    params = convert.params_from_state_dict(state_dict, ref["config"])
    got = {k: v.shape for k, v in traverse_util.flatten_dict(params).items()}
    want = {k: v.shape for k, v in traverse_util.flatten_dict(adm.param_shapes(ref["config"])).items()}
    assert got == want
    assert params["net"]["enc_32x32_block0"]["qkv"]["kernel"].shape == (1, 1, 64, 192)


def test_converter_layout_mapping(tiny):
    config, state_dict, _ = tiny
    params = convert.params_from_state_dict(state_dict, config)["net"]
    np.testing.assert_array_equal(params["map_layer0"]["kernel"], state_dict["model.map_layer0.weight"].T)
    np.testing.assert_array_equal(params["map_label"]["kernel"], state_dict["model.map_label.weight"].T)
    assert "bias" not in params["map_label"]
    np.testing.assert_array_equal(params["enc_16x16_conv"]["kernel"],
                                  state_dict["model.enc.16x16_conv.weight"].transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(params["out_norm"]["scale"], state_dict["model.out_norm.weight"])


@pytest.mark.parametrize("case", ["missing", "unexpected", "shape"])
def test_converter_errors_name_the_key(tiny, case):
    config, state_dict, _ = tiny
    sd = dict(state_dict)
    if case == "missing":
        key = "model.dec.8x8_block1.qkv.weight"
        del sd[key]
        words = "missing"
    elif case == "unexpected":
        key = "model.enc.8x8_block0.extra.weight"
        sd[key] = np.zeros(3, np.float32)
        words = "unexpected"
    else:
        key = "model.map_layer1.weight"
        sd[key] = np.zeros((128, 64), np.float32)
        words = "expected (128, 128)"
    with pytest.raises(ValueError) as err:
        convert.params_from_state_dict(sd, config)
    assert key in str(err.value) and words in str(err.value)


def test_converter_ignores_resample_filter_buffers(tiny):
    config, state_dict, _ = tiny
    without = {k: v for k, v in state_dict.items() if not k.endswith("resample_filter")}
    assert len(without) < len(state_dict)
    a = traverse_util.flatten_dict(convert.params_from_state_dict(without, config))
    b = traverse_util.flatten_dict(convert.params_from_state_dict(state_dict, config))
    assert a.keys() == b.keys()


def test_init_zero_output_and_dropout():
    """Fresh init: out_conv is zero-initialised (F = 0); dropout and label dropout only act with train=True."""
    config = dict(img_resolution=4, in_channels=2, label_dim=3, model_channels=16, channel_mult=[1],
                  num_blocks=1, attn_resolutions=[], dropout=0.5, label_dropout=0.5)
    net = adm.DhariwalUNet(**adm.unet_kwargs(config))
    x = jax.random.normal(jax.random.key(0), (2, 4, 4, 2))
    c_noise, labels = jnp.array([0.1, -0.3]), jax.nn.one_hot(jnp.array([0, 2]), 3)
    # unsafe_rbg keys: XLA:CPU compiles threefry bit generation slowly (seconds per call site); values do not matter.
    key = lambda seed: jax.random.key(seed, impl="unsafe_rbg")
    params = jax.jit(net.init)(key(1), x, c_noise, labels)["params"]
    assert np.all(np.asarray(params["out_conv"]["kernel"]) == 0)
    apply = jax.jit(lambda p, rng, train: net.apply({"params": p}, x, c_noise, labels, train=train,
                                                    rngs={"dropout": rng}), static_argnums=2)
    out = apply(params, key(3), False)
    assert out.shape == (2, 4, 4, 2) and np.all(np.asarray(out) == 0)
    rng = np.random.default_rng(0)   # re-draw everything: zero-init layers would hide dropout
    params = jax.tree_util.tree_map(lambda l: 0.3 * rng.standard_normal(l.shape, np.float32), params)
    e1, e2 = apply(params, key(3), False), apply(params, key(4), False)
    t1, t2 = apply(params, key(3), True), apply(params, key(4), True)
    np.testing.assert_array_equal(e1, e2)
    assert not np.allclose(t1, t2) and not np.allclose(t1, e1)


@pytest.mark.slow
def test_init_params_is_the_eager_init_as_one_program():
    """teacher.init_params jits the init (one program instead of one per initialiser and layer); the params are
    the eager init's, bit for bit, so runs started before and after the change start from the same weights."""
    config = dict(img_resolution=8, in_channels=1, label_dim=2, model_channels=16, channel_mult=[1, 2],
                  num_blocks=1, attn_resolutions=[4], dropout=0.0)
    model = adm.adm_denoiser(config)
    x, key = jnp.zeros((2, 8, 8, 1)), jax.random.PRNGKey(3)
    got = teacher.init_params(model, key, x, label_dim=2)
    want = model.init(key, x, jnp.ones((2,)), jnp.zeros((2, 2)))["params"]
    assert jax.tree.structure(got) == jax.tree.structure(want)
    jax.tree.map(np.testing.assert_array_equal, got, want)
    assert not np.all(np.asarray(got["net"]["enc_8x8_conv"]["kernel"]) == 0)


def test_adm_denoiser_config_handling():
    with pytest.raises(ValueError, match="augment_dim"):
        adm.unet_kwargs(dict(adm.mnist_config(), augment_dim=9))
    with pytest.raises(ValueError, match="bogus"):
        adm.unet_kwargs(dict(adm.mnist_config(), bogus=1))
    kw = adm.unet_kwargs(adm.mnist_config())
    assert kw["out_channels"] == 1 and kw["channel_mult"] == (1, 2, 3, 4)
    model = adm.adm_denoiser(dict(adm.mnist_config(), label_dim=10))
    x, sigma = jax.ShapeDtypeStruct((2, 32, 32, 1), jnp.float32), jax.ShapeDtypeStruct((2,), jnp.float32)
    with pytest.raises(ValueError, match="one-hot"):   # integer class ids instead of one-hot
        jax.eval_shape(model.init, jax.random.key(0), x, sigma, jnp.zeros((2,), jnp.int32))
