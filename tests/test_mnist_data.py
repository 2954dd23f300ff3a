"""MNIST loader: real offline TFDS preparation from the shared IDX files, checked against a numpy IDX decode."""
import contextlib
import gzip
import io
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from dmdjax.data import mnist

SHARED = Path(os.environ.get("DMDJAX_SHARED") or Path(__file__).resolve().parents[1].parent / "shared")
MNIST_DIR = SHARED / "data" / "mnist"
TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
# SHA-256 of load_mnist(split)'s float32 images then int32 labels, as the TensorFlow path (TFDS's own mnist builder,
# tfrecord, as_dataset; dmdjax before the TensorFlow-free loader) returned them: same arrays, same order.
TF_PATH_SHA256 = {
    "train": "4a8d022966867c1dad4828871a05f83aab1083d594be0102f921d77f6bba3927",
    "test": "46e3991af073eb7d7001fb2f2350508db3dbaaef7ac37e14ccff4e5a1146b383",
}
# Run first in a subprocess: a module (and its submodules) looks not installed. Every import finder is wrapped to
# find nothing of it: `import tensorflow` raises ModuleNotFoundError, importlib.util.find_spec("tensorflow") is
# None (etils.epath probes that way) and nothing enters sys.modules (TFDS checks sys.modules for a loaded TF).
BLOCK = """
import sys
class Hidden:
    def __init__(self, finder):
        self.finder = finder
    def find_spec(self, name, path=None, target=None):
        if name == {module!r} or name.startswith({module!r} + "."):
            return None
        return self.finder.find_spec(name, path, target)
    def __getattr__(self, attr):
        return getattr(self.finder, attr)
sys.meta_path[:] = [Hidden(finder) for finder in sys.meta_path]
"""

@pytest.fixture(autouse=True)
def _mnist_files_present(request):
    """Tests marked with needs_files fail (not skip) without the files: a skipped test checks nothing."""
    if request.node.get_closest_marker("needs_files"):
        missing = [f for f in mnist.MNIST_FILES if not (MNIST_DIR / f).is_file()]
        if missing:
            pytest.fail(f"original MNIST files {missing} not found in {MNIST_DIR}; set DMDJAX_SHARED")


needs_files = pytest.mark.needs_files


def read_idx(path):
    """Independent decode of a gzipped IDX file: ubyte magic 0x0000_08_dd, big-endian int32 dims, then data."""
    raw = gzip.open(path, "rb").read()
    assert raw[:3] == b"\x00\x00\x08", raw[:4]
    ndim = raw[3]
    dims = np.frombuffer(raw, ">i4", count=ndim, offset=4)
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(dims)


@pytest.fixture
def no_env(monkeypatch):
    for var in (mnist.MNIST_DIR_ENV, mnist.TFDS_DIR_ENV, mnist.TFDS_OWN_ENV):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """Prepares MNIST once from the real files into a temp data dir (with its own temp directory);
    returns (data_dir, train arrays, seconds, stderr, temp directory)."""
    if not all((MNIST_DIR / f).is_file() for f in mnist.MNIST_FILES):
        pytest.fail(f"original MNIST files not found in {MNIST_DIR}; set DMDJAX_SHARED")
    data_dir, temp = tmp_path_factory.mktemp("tfds"), tmp_path_factory.mktemp("temp")
    t0 = time.perf_counter()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stderr(io.StringIO()) as err:
        mp.setattr(tempfile, "tempdir", str(temp))
        images, labels = mnist.load_mnist("train", data_dir=data_dir, manual_dir=MNIST_DIR)
    seconds = time.perf_counter() - t0
    print(f"\nfirst preparation + load: {seconds:.1f} s")
    return data_dir, images, labels, seconds, err.getvalue(), temp


@pytest.mark.slow
@needs_files
def test_train_split_matches_idx_files(prepared):
    _, images, labels, *_ = prepared
    assert images.shape == (60000, 32, 32, 1) and images.dtype == np.float32
    assert labels.shape == (60000,) and labels.dtype == np.int32
    assert images.min() == -1.0 and images.max() == 1.0
    border = np.ones((32, 32), bool)
    border[2:30, 2:30] = False
    assert np.all(images[:, border, 0] == -1.0)
    assert np.bincount(labels, minlength=10).tolist() == TRAIN_COUNTS

    idx_images = read_idx(MNIST_DIR / "train-images-idx3-ubyte.gz")
    idx_labels = read_idx(MNIST_DIR / "train-labels-idx1-ubyte.gz")
    assert idx_images.shape == (60000, 28, 28) and idx_labels.shape == (60000,)
    # One image, exactly: find loaded image 0 among the IDX images, then compare in [-1, 1] space.
    u8 = np.rint((images[:, 2:30, 2:30, 0] + 1.0) * 127.5).astype(np.uint8)
    (j,) = np.flatnonzero(np.all(idx_images == u8[0], axis=(1, 2)))[:1]
    expected = np.full((32, 32), -1.0, np.float32)
    expected[2:30, 2:30] = idx_images[j] / 127.5 - 1.0
    np.testing.assert_array_equal(images[0, :, :, 0], expected)
    assert labels[0] == idx_labels[j]
    # The whole split is a permutation of the IDX (image, label) pairs.
    key = lambda im, lab: im.tobytes() + bytes([lab])
    assert Counter(map(key, u8, labels)) == Counter(map(key, idx_images, idx_labels))


@pytest.mark.slow
@needs_files
def test_cached_reload_needs_no_files_or_network(prepared, monkeypatch, no_env):
    data_dir, images, labels, first, *_ = prepared
    record = next((Path(data_dir) / "mnist").rglob("mnist-train.array_record*"))
    mtime = record.stat().st_mtime_ns
    monkeypatch.setattr(mnist, "network_reachable", lambda *a, **k: pytest.fail("probed the network"))
    t0 = time.perf_counter()
    images2, labels2 = mnist.load_mnist("train", data_dir=data_dir)  # no manual dir: must reuse the data
    seconds = time.perf_counter() - t0
    print(f"\ncached reload: {seconds:.1f} s (first preparation {first:.1f} s)")
    assert record.stat().st_mtime_ns == mtime
    np.testing.assert_array_equal(images2, images)  # same deterministic order
    np.testing.assert_array_equal(labels2, labels)


@pytest.mark.slow
@needs_files
def test_env_dirs_test_split_and_resolution(prepared, monkeypatch, no_env):
    data_dir, *_ = prepared
    monkeypatch.setenv(mnist.TFDS_DIR_ENV, str(data_dir))
    monkeypatch.setattr(mnist, "network_reachable", lambda *a, **k: False)
    x32, y32 = mnist.load_mnist("test")
    assert x32.shape == (10000, 32, 32, 1) and y32.shape == (10000,)
    x16, y16 = mnist.load_mnist("test", resolution=16)
    assert x16.shape == (10000, 16, 16, 1) and x16.dtype == np.float32
    np.testing.assert_array_equal(y16, y32)
    np.testing.assert_allclose(x16, x32.reshape(10000, 16, 2, 16, 2, 1).mean(axis=(2, 4)), atol=1e-6)
    assert np.all(x16[:, 0] == -1.0)  # the 2-pixel border pools to background


@pytest.mark.slow
@needs_files
def test_preparation_says_where_and_leaves_no_temp_folders(prepared):
    data_dir, *_, stderr, temp = prepared
    assert f"in {data_dir}" in stderr and "DMDJAX_TFDS_DIR or TFDS_DATA_DIR" in stderr
    assert not list(temp.glob("tmp*tfds"))          # TFDS's empty DatasetInfo folders are removed


@pytest.mark.slow
@needs_files
def test_tfds_data_dir_variable_is_honoured(prepared, monkeypatch, no_env):
    data_dir, *_ = prepared
    assert mnist.tfds_data_dir() == Path("~/tensorflow_datasets").expanduser()
    monkeypatch.setenv(mnist.TFDS_OWN_ENV, str(data_dir))
    assert mnist.tfds_data_dir() == data_dir and mnist.tfds_data_dir("elsewhere") == Path("elsewhere")
    monkeypatch.setattr(mnist, "network_reachable", lambda *a, **k: pytest.fail("probed the network"))
    x, y = mnist.load_mnist("test[:10]", resolution=16)
    assert x.shape == (10, 16, 16, 1) and y.shape == (10,)
    monkeypatch.setenv(mnist.TFDS_DIR_ENV, str(data_dir.parent / "ours"))   # ours wins over TFDS's
    assert mnist.tfds_data_dir() == data_dir.parent / "ours"


@pytest.mark.slow
@needs_files
def test_loads_from_the_original_files_without_tensorflow(shared_dir, tmp_path):
    """With `import tensorflow` failing, train and test are prepared from the original files into a fresh TFDS
    data dir and read back: the arrays the TensorFlow path gave, and TensorFlow never imported."""
    code = BLOCK.format(module="tensorflow") + (
        "import hashlib, time\n"
        "try:\n    import tensorflow\nexcept ModuleNotFoundError: pass\n"
        "else: raise SystemExit('tensorflow was not blocked')\n"
        "from dmdjax.data import mnist\n"
        "for split in ('train', 'test'):\n"
        "    t0 = time.perf_counter()\n"
        "    x, y = mnist.load_mnist(split, data_dir=sys.argv[1], manual_dir=sys.argv[2])\n"
        "    seconds = time.perf_counter() - t0\n"
        "    print(split, x.shape, y.shape, hashlib.sha256(x.tobytes() + y.tobytes()).hexdigest(), f'{seconds:.1f}')\n"
        "print('tensorflow' in sys.modules, any(m.startswith('tensorflow.') for m in sys.modules))\n")
    env = {k: v for k, v in os.environ.items()
           if k not in (mnist.MNIST_DIR_ENV, mnist.TFDS_DIR_ENV, mnist.TFDS_OWN_ENV)}
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "tfds"), str(shared_dir / "data" / "mnist")],
                         capture_output=True, text=True, env=env, timeout=300,
                         cwd=Path(__file__).resolve().parents[1])   # this tree's dmdjax ('' leads sys.path)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.split("\n")
    print("\n" + out.stdout)    # the seconds: train includes the preparation
    train, test, imported = (line.split() for line in lines[-4:-1])
    assert train[:-1] == ["train", "(60000,", "32,", "32,", "1)", "(60000,)", TF_PATH_SHA256["train"]], train
    assert test[:-1] == ["test", "(10000,", "32,", "32,", "1)", "(10000,)", TF_PATH_SHA256["test"]], test
    assert imported == ["False", "False"]
    assert len(lines) == 4                            # nothing on stdout but the script's own three lines
    noise = [line for line in out.stderr.splitlines() if line.strip() and "BLOCK" not in line]
    assert len(noise) == 1 and noise[0].startswith("MNIST: preparing a TFDS copy"), out.stderr[-3000:]
    assert mnist.is_prepared(tmp_path / "tfds")
    assert not list((tmp_path / "tfds").rglob("*.tfrecord*"))


@needs_files
def test_without_tfds_the_error_names_the_extra(shared_dir, tmp_path):
    code = BLOCK.format(module="tensorflow_datasets") + (
        "from dmdjax.data import mnist\n"
        "try: mnist.load_mnist('test', data_dir=sys.argv[1], manual_dir=sys.argv[2])\n"
        "except ModuleNotFoundError as e: print(e)\n")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "tfds"), str(shared_dir / "data" / "mnist")],
                         capture_output=True, text=True, timeout=120, cwd=Path(__file__).resolve().parents[1])
    expected = "MNIST needs tensorflow-datasets (tensorflow_datasets is not installed): pip install"
    assert out.stdout.startswith(expected), out.stdout + out.stderr[-2000:]
    assert out.stdout.count("\n") == 1 and out.stdout.rstrip().endswith("[tfds]\"")


def test_an_earlier_tfrecord_copy_is_left_alone(tmp_path):
    """A TFDS mnist copy in tfrecord (TFDS's default, dmdjax's before) needs TensorFlow to read: the array_record
    copy goes beside it, under <data dir>/array_record; an array_record copy, or one listing it, is used."""
    variant = tmp_path / "mnist" / mnist.MNIST_VERSION
    variant.mkdir(parents=True)
    assert mnist.array_record_dir(tmp_path) == tmp_path and not mnist.is_prepared(tmp_path)
    (variant / "dataset_info.json").write_text('{"name": "mnist", "version": "3.0.1"}')   # tfrecord: no fileFormat
    assert mnist.array_record_dir(tmp_path) == tmp_path / "array_record" and not mnist.is_prepared(tmp_path)
    ours = tmp_path / "array_record" / "mnist" / mnist.MNIST_VERSION
    ours.mkdir(parents=True)
    (ours / "dataset_info.json").write_text('{"name": "mnist", "fileFormat": "array_record"}')
    assert mnist.is_prepared(tmp_path)
    (variant / "dataset_info.json").write_text('{"fileFormat": "tfrecord", "alternativeFileFormats": ["array_record"]}')
    assert mnist.array_record_dir(tmp_path) == tmp_path and mnist.is_prepared(tmp_path)


def test_pad_and_scale_values():
    u = np.arange(2 * 28 * 28, dtype=np.int64).reshape(2, 28, 28) % 256
    x = mnist.pad_and_scale(u.astype(np.uint8))
    assert x.shape == (2, 32, 32, 1)
    np.testing.assert_array_equal(x[:, 2:30, 2:30, 0], (u / 127.5 - 1).astype(np.float32))
    assert x[:, :2].max() == -1.0 and x[:, 30:].max() == -1.0
    assert mnist.pad_and_scale(u.astype(np.uint8), pad_to=28).shape == (2, 28, 28, 1)
    with pytest.raises(ValueError, match="resolution"):
        mnist.pad_and_scale(u.astype(np.uint8), resolution=12)


@needs_files
@pytest.mark.parametrize("via_env", [False, True])
def test_missing_manual_file_is_named(tmp_path, monkeypatch, no_env, via_env):
    manual = tmp_path / "mnist"
    manual.mkdir()
    for name in mnist.MNIST_FILES:
        if name != "train-labels-idx1-ubyte.gz":
            shutil.copy(MNIST_DIR / name, manual / name)
    if via_env:
        monkeypatch.setenv(mnist.MNIST_DIR_ENV, str(manual))
    with pytest.raises(FileNotFoundError, match="train-labels-idx1-ubyte.gz"):
        mnist.load_mnist(data_dir=tmp_path / "tfds", manual_dir=None if via_env else manual)
    assert not (tmp_path / "tfds" / "mnist").exists()  # failed before TFDS started preparing


def test_no_dir_no_network_fails_fast(tmp_path, monkeypatch, no_env):
    monkeypatch.setattr(mnist, "network_reachable", lambda *a, **k: False)
    with pytest.raises(mnist.MnistUnavailableError) as err:
        mnist.load_mnist(data_dir=tmp_path / "tfds")
    assert "--mnist_dir" in str(err.value) and "DMDJAX_MNIST_DIR" in str(err.value)
    # The files are looked for before TFDS is imported, and nothing is left behind.
    code = ("import sys, tempfile; from unittest import mock; from dmdjax.data import mnist\n"
            "tempfile.tempdir = sys.argv[2]\n"
            "with mock.patch.object(mnist, 'network_reachable', lambda *a, **k: False):\n"
            "    try: mnist.load_mnist(data_dir=sys.argv[1])\n"
            "    except mnist.MnistUnavailableError: print('tensorflow' in sys.modules)")
    (tmp_path / "temp").mkdir()
    env = {k: v for k, v in os.environ.items() if k not in (mnist.MNIST_DIR_ENV, mnist.TFDS_DIR_ENV)}
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "tfds"), str(tmp_path / "temp")],
                         capture_output=True, text=True, check=True, env=env, timeout=120)
    assert out.stdout.strip() == "False", out.stderr[-2000:]
    assert not list((tmp_path / "temp").iterdir()) and not (tmp_path / "tfds").exists()


def test_network_probe_is_bounded_and_local():
    # Loopback only: a listening port is reachable, a closed one is not; neither waits long.
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        assert mnist.network_reachable("127.0.0.1", server.getsockname()[1], timeout=1.0)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    t0 = time.perf_counter()
    assert not mnist.network_reachable("127.0.0.1", closed, timeout=1.0)
    assert time.perf_counter() - t0 < 2.0


def test_import_dmdjax_does_not_import_tensorflow():
    code = "import sys, dmdjax, dmdjax.data.mnist; print('tensorflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_install_hint_matches_how_dmdjax_was_installed(monkeypatch, tmp_path):
    """From this source tree: `pip install -e "<tree>[tfds]"` (a plain `dmdjax[tfds]` cannot install from a
    clone); from a wheel (no pyproject.toml beside the package): the package index's name."""
    from pathlib import Path
    from dmdjax.data import mnist
    tree = Path(mnist.__file__).resolve().parents[2]
    assert mnist.install_hint("tfds") == f'pip install -e "{tree}[tfds]"'
    fake = tmp_path / "site-packages" / "dmdjax" / "data" / "mnist.py"
    fake.parent.mkdir(parents=True)
    monkeypatch.setattr(mnist, "__file__", str(fake))
    assert mnist.install_hint("tfds") == "pip install 'dmdjax[tfds]'"


@pytest.mark.slow
@needs_files
def test_a_second_process_waits_for_the_first_preparation(prepared, tmp_path, no_env):
    """Two experiments started together on a fresh data dir: while one prepares (here: the test, holding the
    lock), the other waits and then reads that copy instead of preparing its own (whose final rename failed with
    FileExistsError before the lock)."""
    data_dir = prepared[0]
    fresh = tmp_path / "tfds"
    code = ("import hashlib, sys\nfrom dmdjax.data import mnist\n"
            "x, y = mnist.load_mnist('test', data_dir=sys.argv[1], manual_dir=sys.argv[2])\n"
            "print(hashlib.sha256(x.tobytes() + y.tobytes()).hexdigest())\n")
    with mnist._preparation_lock(fresh):
        child = subprocess.Popen([sys.executable, "-c", code, str(fresh), str(MNIST_DIR)], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[1])
        seen = []
        while not seen or not any(word in seen[-1] for word in ("waiting", "preparing")):
            seen.append(child.stderr.readline())     # blocks until the child says what it does
            if not seen[-1]:
                break                                # the child ended
        assert "waiting for it" in seen[-1], "".join(seen)[-3000:]
        shutil.copytree(data_dir / "mnist", fresh / "mnist")    # "the first process" finishes its copy
    out, err = child.communicate(timeout=300)
    assert child.returncode == 0, err[-3000:]
    assert "preparing" not in err, err[-3000:]
    assert out.split() == [TF_PATH_SHA256["test"]]
