"""dmdjax.xla_cpu.tune: sets the YNNPACK kernel choice only before the backend starts, never over the user's own
XLA_FLAGS, and the tuned kernels compute the same ADM output and gradient as XLA's defaults; its allocator setting
stops the per-call page faults of XLA's buffers, and the user's MALLOC_* settings win."""
import json
import os
import subprocess
import sys

import jaxlib
import numpy as np
import pytest

from dmdjax import xla_cpu

TESTED = jaxlib.__version__.startswith(xla_cpu.TESTED_JAXLIB)

CHILD = r"""
import json, os, sys, warnings
sys.path.insert(0, sys.argv[3])
from dmdjax import xla_cpu
tuning = xla_cpu.tune(enable=sys.argv[1] == "1")
out = {"on": tuning.xla_flag, "reuse": tuning.reuse_memory, "flags": os.environ.get("XLA_FLAGS", "")}
if sys.argv[2] == "compute":
    import test_xla_cpu
    out.update(test_xla_cpu.adm_output_and_grad())
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        out["late"] = list(xla_cpu.tune())
    out["late_warned"] = len(w)
if sys.argv[2] == "faults":       # minor page faults of calls 31-40, each making a fresh 64 MiB buffer
    import resource
    import jax, jax.numpy as jnp
    f = jax.jit(lambda x: x * 2.0 + 1.0)
    x = jnp.ones((1 << 24,))
    faults = []
    for _ in range(40):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        y = f(x).block_until_ready()
        del y
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    out["faults"] = faults[30:]
print(json.dumps(out))
"""


def adm_output_and_grad() -> dict:
    """A small ADM's output and summed parameter gradient (no zero-initialised layers left)."""
    import jax
    import jax.numpy as jnp

    from dmdjax.nets.adm import adm_denoiser
    model = adm_denoiser(dict(img_resolution=8, in_channels=1, model_channels=16, channel_mult=[1, 2],
                              num_blocks=1, attn_resolutions=[4], dropout=0.0))
    x = jax.random.normal(jax.random.PRNGKey(0), (4, 8, 8, 1))
    f = lambda p: model.apply({"params": p}, x, jnp.full((4,), 1.5))

    @jax.jit
    def run(key):
        p = model.init(key, x, jnp.ones((4,)))["params"]
        p = jax.tree.map(lambda a: a + 0.05 * jnp.cos(jnp.arange(a.size, dtype=jnp.float32).reshape(a.shape)), p)
        g = jax.grad(lambda p: jnp.mean(f(p) ** 2))(p)
        return f(p), sum(jnp.sum(leaf) for leaf in jax.tree.leaves(g))
    out, grad = run(jax.random.PRNGKey(1))
    return {"out": np.asarray(out).ravel().tolist(), "grad": float(grad)}


def _run(enable: bool, flags: str = "", mode: str = "compute", **env) -> dict:
    """A fresh process with XLA_FLAGS = this suite's (conftest.py) without the YNN option, plus `flags`."""
    base = " ".join(f for f in os.environ.get("XLA_FLAGS", "").split() if xla_cpu.OPTION not in f)
    env = dict(os.environ, XLA_FLAGS=(base + " " + flags).strip(), **env)
    proc = subprocess.run([sys.executable, "-c", CHILD, "1" if enable else "0", mode, os.path.dirname(__file__)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.slow
@pytest.mark.skipif(not TESTED, reason="the flag is only set on the jaxlib versions it was measured on")
def test_tuned_kernels_match_xla_defaults():
    """This process runs with the flag (conftest.py); the child with XLA's defaults."""
    assert xla_cpu.FLAG in os.environ["XLA_FLAGS"].split()
    default = _run(False)
    assert not default["on"] and xla_cpu.FLAG not in default["flags"]
    assert default["late"] == [False, False] and default["late_warned"] == 1   # backend started: refuses, warns
    tuned = adm_output_and_grad()
    np.testing.assert_allclose(tuned["out"], default["out"], rtol=0, atol=1e-5)
    assert abs(tuned["grad"] - default["grad"]) <= 1e-4 * max(1.0, abs(default["grad"]))


@pytest.mark.skipif(not TESTED, reason="the flag is only set on the jaxlib versions it was measured on")
def test_tune_adds_flag_once():
    run = _run(True, mode="flags")
    assert run["on"] and run["flags"].split().count(xla_cpu.FLAG) == 1


def test_user_flag_wins():
    user = "--xla_cpu_experimental_ynn_fusion_type=dot,eltwise,reduce"
    run = _run(True, user, mode="flags")
    assert not run["on"] and run["flags"].split()[-1] == user and xla_cpu.FLAG not in run["flags"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the allocator setting is glibc's mallopt")
def test_reuse_freed_memory_stops_page_faults():
    """Without it every call page-faults its fresh 64 MiB output in again (16,384 pages); with it, the heap grows
    over the first calls (by whole buffers, at varying calls) and then serves every call without faults."""
    plain, tuned = _run(False, mode="faults"), _run(True, mode="faults")
    assert not plain["reuse"] and tuned["reuse"]
    assert min(plain["faults"]) > 8000, plain
    assert sum(tuned["faults"]) < sum(plain["faults"]) / 4, (tuned, plain)
    assert sorted(tuned["faults"])[len(tuned["faults"]) // 2] < 1000, tuned


@pytest.mark.minver
def test_user_malloc_settings_win():
    run = _run(True, mode="flags", MALLOC_ARENA_MAX="4")
    assert run["on"] == TESTED and not run["reuse"]


# An experiment, its pipeline stubbed out: exit 0 if the kernel flag was set and JAX's backend had started by then
# (the data was loaded), 3 otherwise; a tune() after the backend started warns, which is made an error here.
EXPERIMENT_CHILD = r"""
import sys, warnings
warnings.filterwarnings("error", message="dmdjax.xla_cpu.tune")
import importlib
from dmdjax import pipeline, xla_cpu
experiment = importlib.import_module("experiments." + sys.argv[2])
def run(cfg, data, workdir, mesh=None, progress=True, **kwargs):
    raise SystemExit(0 if xla_cpu._flag_on() and xla_cpu._backend_started() else 3)
pipeline.run = run
experiment.main(sys.argv[3:])
"""


@pytest.mark.slow
@pytest.mark.skipif(not TESTED, reason=f"the flag is set on jaxlib {xla_cpu.TESTED_JAXLIB} only")
@pytest.mark.parametrize("experiment", ["manifold", "mnist_uncond"])
def test_experiments_tune_before_loading_data(experiment, shared_dir, tmp_path):
    """The experiments' data loading runs JAX: XLA:CPU must be tuned before it (cli.start), not at the mesh."""
    argv = ["--train_size=64"] if experiment == "manifold" else [f"--mnist_dir={shared_dir / 'data' / 'mnist'}"]
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS" and not k.startswith("MALLOC_")}
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.run([sys.executable, "-c", EXPERIMENT_CHILD, repo, experiment,
                           f"--workdir={tmp_path}", "--quiet", *argv], capture_output=True, text=True, env=env,
                          cwd=repo)
    assert proc.returncode == 0, proc.stderr[-2000:]
