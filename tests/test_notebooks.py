"""The colab/ notebooks run top to bottom: each is executed by papermill at a tiny size (its `parameters` cell
overridden) in a fresh kernel on this interpreter, and what it wrote is checked. Every notebook in colab/ must
have an entry in TINY, so none can go unexecuted.

The runs are compile-bound and mostly single-threaded, so the selected notebooks start together, one papermill
process each, when the first of their tests asks for them; each test then waits for its own.
"""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[1]
COLAB = REPO / "colab"
KERNEL = "dmdjax-notebook-test"
TIMEOUT_S = 900
FAST_COMPILE = ["--xla_backend_optimization_level=0", "--xla_llvm_disable_expensive_passes=true"]

# Tiny sizes for CI (the defaults in the notebooks are the real ones). MNIST: the paper preset with a tiny ADM at
# 8x8, float32 (bf16 is slow on XLA:CPU), one generator update per iteration (the unrolled 5-iteration DMD round
# dominates compile time) and 16 PCA triplets.
TINY_NET = dict(img_resolution=8, in_channels=1, label_dim=0, model_channels=16, channel_mult=[1], num_blocks=1,
                attn_resolutions=[], dropout=0.0)
TINY = {
    "quickstart.ipynb": dict(teacher_steps=10, distill_iterations=5, eval_n=32),
    "mnist_tpu.ipynb": dict(teacher_steps=2, snapshots=[2], distill_iterations=2, eval_n=16, bf16=False,
                         net_kwargs=TINY_NET, overrides={"pca_n": 16, "distill.gen_every": 1, "classifier_steps": 20}),
    "metrics_api.ipynb": dict(N=64, dim=8),
}


def test_every_notebook_is_clean_and_parameterised():
    assert sorted(p.name for p in COLAB.glob("*.ipynb")) == sorted(TINY)
    for name in TINY:
        nb = nbformat.read(COLAB / name, as_version=4)
        nbformat.validate(nb)
        assert nb.cells[0].cell_type == "markdown", name
        tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
        assert len(tagged) == 1 and "DMDJAX_SOURCE = None" in tagged[0].source, name
        for key in TINY[name]:
            assert f"\n{key} = " in "\n" + tagged[0].source, (name, key)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert all(not c.outputs and c.execution_count is None for c in code), f"{name} has stored outputs"


class Executions:
    """Papermill processes, one per notebook, started together; `result(name)` waits for one of them."""

    def __init__(self, root: Path, parameters: dict):
        self.root, self.procs = root, {}
        kernel = root / "kernels" / KERNEL   # ipykernel on this interpreter, found first through JUPYTER_PATH:
        kernel.mkdir(parents=True)           # a fresh CI venv has no registered kernel at all
        (kernel / "kernel.json").write_text(json.dumps({
            "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "dmdjax tests", "language": "python"}))
        env = dict(os.environ, JUPYTER_PATH=str(root), DMDJAX_TFDS_DIR=str(root / "tfds"),
                   PYDEVD_DISABLE_FILE_VALIDATION="1",   # ipykernel's debugger warns about frozen modules
                   XLA_FLAGS=" ".join([os.environ.get("XLA_FLAGS", ""), *(f for f in FAST_COMPILE
                                                                     if f not in os.environ.get("XLA_FLAGS", ""))]).strip())
        for name, params in parameters.items():
            run = self.dir(name)
            run.mkdir()
            (run / "parameters.json").write_text(json.dumps({**TINY[name], **params}))   # JSON is YAML
            with open(run / "papermill.log", "w") as log:
                self.procs[name] = subprocess.Popen(
                    [sys.executable, "-m", "papermill", str(COLAB / name), str(run / name), "-k", KERNEL,
                     "-f", str(run / "parameters.json"), "--cwd", str(run), "--no-progress-bar",
                     "--execution-timeout", str(TIMEOUT_S)], stdout=log, stderr=subprocess.STDOUT, env=env)

    def dir(self, name: str) -> Path:
        return self.root / Path(name).stem

    def result(self, name: str):
        """Waits for the notebook; returns (executed notebook, its run directory) or fails with papermill's log."""
        try:
            rc = self.procs[name].wait(timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            rc = "timeout"
        run = self.dir(name)
        if rc != 0:
            pytest.fail(f"{name} failed ({rc}):\n" + (run / "papermill.log").read_text()[-6000:], pytrace=False)
        return nbformat.read(run / name, as_version=4), run

    def stop(self):
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()


@pytest.fixture(scope="module")
def notebooks(request, tmp_path_factory):
    root = tmp_path_factory.mktemp("notebooks")
    extra = {"quickstart.ipynb": lambda: dict(workdir="run"),
             "mnist_tpu.ipynb": lambda: dict(workdir="run",
                                             mnist_dir=str(request.getfixturevalue("shared_dir") / "data" / "mnist")),
             "metrics_api.ipynb": lambda: dict(out_json="numbers.json")}
    selected = {item.name.removeprefix("test_") + ".ipynb" for item in request.session.items
                if item.module is request.module} & set(TINY)
    runs = Executions(root, {name: extra[name]() for name in sorted(selected)})
    yield runs
    runs.stop()


def outputs(nb, kind):
    """All outputs of an executed notebook with the given MIME type (e.g. 'image/png'), or 'stream' text."""
    found = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if kind == "stream" and out.get("output_type") == "stream":
                found.append(out["text"])
            elif kind in out.get("data", {}):
                found.append(out["data"][kind])
    return found


@pytest.mark.slow
@pytest.mark.minver
def test_quickstart(notebooks):
    nb, run = notebooks.result("quickstart.ipynb")
    results = json.loads((run / "run" / "results.json").read_text())
    assert math.isfinite(results["table"]["10"]) and results["table"]["10"] >= 0
    assert len(outputs(nb, "image/png")) == 3      # pairing, heatmap, DM loss
    assert any("Delta_E = " in text for text in outputs(nb, "stream"))


@pytest.mark.slow
@pytest.mark.minver
def test_mnist_tpu(notebooks):
    nb, run = notebooks.result("mnist_tpu.ipynb")
    results = json.loads((run / "run" / "results.json").read_text())
    assert results["config"]["compute_dtype"] == "float32" and results["config"]["net_kwargs"] == TINY_NET
    assert results["config"]["distill"]["lr_gen"] == 2e-6          # the paper preset, shrunk
    assert math.isfinite(results["table"]["2"])
    assert 0 < results["snapshots"]["2"]["memorization"]["r_min"] <= 1
    assert len(outputs(nb, "image/png")) == 4      # DM loss, quadruples, quintuples, boundary
    assert any("CpuDevice" in text for text in outputs(nb, "stream"))
    # the disk it keeps, said before training (its accuracy: test_toy_experiment's checkpoint_bytes test)
    assert any("checkpoints in run: about" in text for text in outputs(nb, "stream"))


@pytest.mark.slow
@pytest.mark.minver
def test_metrics_api(notebooks):
    _, run = notebooks.result("metrics_api.ipynb")
    numbers = json.loads((run / "numbers.json").read_text())
    copier, remapper = numbers["delta_e"]["copier"], numbers["delta_e"]["remapper"]
    assert copier["exact"] == pytest.approx(0, abs=1e-6) and copier["sinkhorn"] < 0.05
    assert remapper["exact"] > 5 and remapper["sinkhorn"] == pytest.approx(remapper["exact"], rel=0.05)
    assert numbers["jitted"]["remapper"]["delta_e"] == pytest.approx(remapper["exact"], rel=1e-5)
    assert numbers["ci"]["low"] <= numbers["ci"]["estimate"] <= numbers["ci"]["high"]
    assert numbers["memorized_fraction"] == pytest.approx(0.5, abs=0.1)


def install_cell(name: str) -> str:
    """The notebook's install cell: the first code cell after the parameters that runs pip."""
    return next(c.source for c in nbformat.read(COLAB / name, as_version=4).cells
                if c.cell_type == "code" and "pip" in c.source)


def test_install_cells_share_one_recipe():
    """The notebooks' install cells differ only in the extras and the backend advice (one of them runs below)."""
    def recipe(name):
        cell = install_cell(name)
        return cell[cell.index("try:"):cell.index("\nimport jax\n")]
    assert recipe("quickstart.ipynb") == recipe("metrics_api.ipynb") == recipe("mnist_tpu.ipynb")
    assert 'EXTRAS = ""' in install_cell("quickstart.ipynb") and 'EXTRAS = "[tfds]"' in install_cell("mnist_tpu.ipynb")


@pytest.fixture
def runtime_venv(tmp_path):
    """A fresh virtual environment shaped like a notebook runtime: this test's packages (jax, numpy, ...) without
    dmdjax, plus a TensorFlow at a version no index has. Returns (python, env) for a pip dry run without an index."""
    import site
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    venv_site = next(venv.glob("lib/python*/site-packages"))
    for packages in map(Path, site.getsitepackages()):   # this test's packages, but not dmdjax (nor its metadata)
        for entry in packages.iterdir():
            if "dmdjax" not in entry.name.lower() and not (venv_site / entry.name).exists():
                (venv_site / entry.name).symlink_to(entry)
    stub = venv_site / "tensorflow-2.99.0.dist-info"
    stub.mkdir()
    (stub / "METADATA").write_text("Metadata-Version: 2.1\nName: tensorflow\nVersion: 2.99.0\n")
    (stub / "RECORD").write_text("")
    env = dict(os.environ, PIP_NO_INDEX="1", PIP_DRY_RUN="1", PIP_REPORT=str(tmp_path / "report.json"),
               PIP_NO_BUILD_ISOLATION="0", PIP_DISABLE_PIP_VERSION_CHECK="1", PYTHONPATH="")
    return str(venv / "bin" / "python"), env


def run_install_cell(name: str, runtime_venv, cwd: Path, source=None) -> subprocess.CompletedProcess:
    python, env = runtime_venv
    code = f"DMDJAX_SOURCE = {source!r}\n" + install_cell(name)
    return subprocess.run([python, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
@pytest.mark.parametrize("name, extras", [("mnist_tpu.ipynb", {"tfds"})])
def test_install_cell_keeps_the_runtimes_jax_and_tensorflow(name, extras, runtime_venv, tmp_path):
    """The install cell, run as in Colab after `git clone ... dmdjax` (no URL to edit: DMDJAX_SOURCE stays None)
    in a runtime-shaped environment: pip's resolution (a dry run from the clone, no index) installs dmdjax alone,
    asks for no TensorFlow, and pins the runtime's jax, numpy and TensorFlow."""
    (tmp_path / "dmdjax").symlink_to(REPO, target_is_directory=True)      # the clone, in the working directory
    proc = run_install_cell(name, runtime_venv, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "backend cpu" in proc.stdout and "keeping the runtime's" in proc.stdout, proc.stdout
    pins = (tmp_path / "runtime-constraints.txt").read_text().split()
    import jax
    import numpy
    assert {"tensorflow==2.99.0", f"jax=={jax.__version__}", f"numpy=={numpy.__version__}"} <= set(pins), pins
    report = json.loads((tmp_path / "report.json").read_text())
    assert [item["metadata"]["name"] for item in report["install"]] == ["dmdjax"], report["install"]
    item = report["install"][0]
    assert set(item.get("requested_extras") or ()) == extras
    wanted = [Requirement(r) for r in item["metadata"].get("requires_dist", [])]
    wanted = [r.name.lower() for r in wanted
              if r.marker is None or any(r.marker.evaluate({"extra": e}) for e in extras | {""})]
    assert "jax" in wanted and not [n for n in wanted if n.startswith(("tensorflow-cpu", "libtpu"))
                                    or n == "tensorflow"], wanted


@pytest.mark.slow
@pytest.mark.parametrize("source", [None, "/no/such/dmdjax"])
def test_install_cell_without_a_source_says_where_it_looked(source, runtime_venv, tmp_path):
    """No source where the cell looks (or a wrong DMDJAX_SOURCE): one error that names the places and the fix,
    before pip runs."""
    proc = run_install_cell("quickstart.ipynb", runtime_venv, tmp_path, source)
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("FileNotFoundError: dmdjax's source is not in"), proc.stderr[-2000:]
    assert "git clone" in last and "DMDJAX_SOURCE" in last and (source or "/content/dmdjax") in last
    assert not (tmp_path / "runtime-constraints.txt").exists()


def _install_script():
    import importlib.util
    spec = importlib.util.spec_from_file_location("colab_install", COLAB / "install.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_install_script_pins_the_runtime_unless_below_the_floor():
    """colab/install.py against dmdjax's own pyproject.toml: packages the runtime has are pinned as installed,
    one below dmdjax's floor is left free (named in one line), packages it lacks are not pinned at all."""
    install = _install_script()
    reqs = install.requirements(REPO, ("tfds",))
    names = {r.name.lower() for r in reqs}
    assert {"jax", "flax", "tensorflow-datasets", "array_record"} <= names and "pytest" not in names
    jax_floor = next(r for r in reqs if r.name == "jax").specifier
    floor = min(v for v in ("0.4.1", "0.5.0", "0.6.0", "0.7.0", "0.8.0", "0.9.0", "0.10.0", "0.10.2")
                if jax_floor.contains(v))
    old = "0.0.1"
    assert not jax_floor.contains(old)
    pins, below = install.plan(reqs, {"jax": floor, "jaxlib": floor, "numpy": "2.4.6", "flax": old,
                                      "tensorflow": "2.99.0"})
    assert pins == [f"jax=={floor}", f"jaxlib=={floor}", "numpy==2.4.6", "tensorflow==2.99.0"]
    assert len(below) == 1 and below[0].startswith(f"flax {old} is below dmdjax's floor (flax>=")
    assert "restart" in below[0]
