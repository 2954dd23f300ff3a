"""Data parallelism: three teacher steps (with the EMA) and two DMD rounds (10 iterations) on 4 (forced host) devices equal the 1-device result."""
import os
import subprocess
import sys
import textwrap

import pytest

from dmdjax import parallel

SCRIPT = textwrap.dedent("""
    import json, jax, jax.numpy as jnp, numpy as np
    from dmdjax import distill, parallel, teacher
    from dmdjax.data import toy
    from dmdjax.nets import MLP, Denoiser
    assert jax.device_count() == 4, jax.devices()
    model = Denoiser(MLP(features=(32, 32)))
    sample = toy.get_sampler("chessboard")
    tcfg = teacher.TeacherConfig(steps=1, batch=64, lr=1e-3, ema_halflife_kimg=0.1, ema_rampup_ratio=0.5)
    dcfg = distill.DistillConfig(batch=64, lr_gen=1e-3, lr_fake=1e-3, warmup=0)
    out = {}
    for n in (1, 4):
        mesh = parallel.data_mesh(n)
        st = parallel.replicate(teacher.create_state(model, tcfg, jax.random.PRNGKey(0), jnp.zeros((2, 4))), mesh)
        step = jax.jit(teacher.step_fn(model, tcfg, lambda k, b, c: (sample(k, b), None), jax.random.PRNGKey(1),
                                       mesh))
        for _ in range(3):                       # the EMA's first update copies the params; later ones average
            st, m = step(st, None)
        ds = parallel.replicate(distill.init_state(st.params, dcfg), mesh)
        dstep = jax.jit(distill.make_step(model, dcfg, jax.random.PRNGKey(2), sample_shape=(4,), mesh=mesh))
        for _ in range(2):
            ds, dm = dstep(ds, distill.StepConsts(st.params, {}))
        out[n] = {"teacher_loss": float(m["loss"]), "fake_loss": float(dm["fake_loss"][-1]),
                  "teacher": np.concatenate([np.ravel(x) for x in jax.tree.leaves(st.params)]).tolist(),
                  "ema": np.concatenate([np.ravel(x) for x in jax.tree.leaves(st.ema)]).tolist(),
                  "gen": np.concatenate([np.ravel(x) for x in jax.tree.leaves(ds.gen.params)]).tolist(),
                  "fake": np.concatenate([np.ravel(x) for x in jax.tree.leaves(ds.fake.params)]).tolist(),
                  "devices": len(ds.fake.params["net"]["Dense_0"]["kernel"].sharding.device_set)}
    try:
        parallel.check_batch(30, parallel.data_mesh(4))
        out["indivisible"] = "no error"
    except ValueError as e:
        out["indivisible"] = str(e)
    print("RESULT" + json.dumps(out))
""")


def four_device_env() -> dict:
    """A child process with four CPU devices and conftest's fast-compile XLA flags."""
    flags = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4"
    return dict(os.environ, XLA_FLAGS=flags.strip(), JAX_PLATFORMS="cpu")


@pytest.mark.slow
@pytest.mark.minver
def test_four_devices_match_one_device():
    env = four_device_env()
    proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    import json
    import numpy as np
    out = json.loads(proc.stdout.split("RESULT", 1)[1])
    one, four = out["1"], out["4"]
    assert one["devices"] == 1 and four["devices"] == 4
    assert four["teacher_loss"] == pytest.approx(one["teacher_loss"], rel=1e-5)
    assert four["fake_loss"] == pytest.approx(one["fake_loss"], rel=1e-5)
    assert np.abs(np.subtract(one["ema"], one["teacher"])).max() > 1e-5     # the EMA is an average
    for name in ("teacher", "ema", "gen", "fake"):
        np.testing.assert_allclose(four[name], one[name], rtol=1e-4, atol=1e-6, err_msg=name)
    assert "not divisible" in out["indivisible"] and "4 devices" in out["indivisible"]


def test_batch_must_divide_devices_on_one_device():
    parallel.check_batch(7, None)   # a single device takes any batch
    with pytest.raises(ValueError, match="num_devices"):
        parallel.data_mesh(99)


TOY_RUN = textwrap.dedent("""
    import json, sys
    from experiments import toy
    out = {}
    for n in (1, 4):
        s = toy.main([f"--devices={n}", "--teacher_steps=40", "--distill_iterations=40", "--eval_n=64", "--quiet",
                      f"--workdir={sys.argv[1]}/dev{n}"])
        out[n] = s["snapshots"]["40"]
    print("RESULT" + json.dumps(out))
""")


@pytest.mark.slow
def test_toy_run_end_to_end_same_delta_e_on_four_devices(tmp_path):
    """The whole pipeline (teacher, DMD, evaluation) through the command line on 1 and 4 devices."""
    env = four_device_env()
    proc = subprocess.run([sys.executable, "-c", TOY_RUN, str(tmp_path)], capture_output=True, text=True, env=env,
                          timeout=600, cwd=parallel.__file__.rsplit("/dmdjax/", 1)[0])
    assert proc.returncode == 0, proc.stderr[-3000:]
    import json
    out = json.loads(proc.stdout.split("RESULT", 1)[1])
    one, four = out["1"], out["4"]
    for key in ("delta_e", "e_dt", "e_ot", "final_dm_loss"):
        assert four[key] == pytest.approx(one[key], rel=1e-3, abs=1e-4), key
    assert one["e_ot"] > 0


def test_bf16_mode_keeps_float32_params_and_outputs():
    import jax
    import jax.numpy as jnp

    from dmdjax import configs, pipeline, teacher
    tiny_adm = dict(img_resolution=8, in_channels=1, label_dim=0, model_channels=16, channel_mult=[1],
                    num_blocks=1, attn_resolutions=[], dropout=0.0)
    for cfg in (configs.toy.get_config(), configs.override(configs.mnist("cpu"), net_kwargs=tiny_adm)):
        cfg = configs.override(cfg, compute_dtype="bfloat16")
        model = pipeline.build_model(cfg, None)
        assert model.net.dtype == jnp.bfloat16
        shape = (2, 4) if cfg.net == "mlp" else (2, 8, 8, 1)
        params = teacher.init_params(model, jax.random.PRNGKey(0), jnp.zeros(shape))
        assert {x.dtype for x in jax.tree.leaves(params)} == {jnp.dtype("float32")}
        out = model.apply({"params": params}, jnp.ones(shape), jnp.full((2,), 1.0))
        assert out.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(out)))
    with pytest.raises(ValueError, match="compute_dtype"):
        configs.override(configs.toy.get_config(), compute_dtype="float16").validate()
