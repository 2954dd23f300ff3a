"""MNIST through tensorflow-datasets, as whole-split numpy arrays for the paper's MNIST experiments; no TensorFlow.

`load_mnist(split)` returns `(images, labels)`: images (N, R, R, 1) float32 in [-1, 1] (NHWC), labels (N,)
int32. The 28x28 uint8 digits are zero-padded to `pad_to` x `pad_to` (default 32; zero is the black
background, so the border is exactly -1 after scaling), scaled as x / 127.5 - 1 and, if `resolution` is
smaller than `pad_to`, average-pooled by the integer factor pad_to / resolution (e.g. 32 -> 16 for CPU
presets). The example order is TFDS's: shuffled once at preparation with a fixed key, identical on every
machine and call, but not the order of the IDX files.

Where the data come from (first match wins):
  1. an already prepared array_record copy under the TFDS data dir (no files, no network needed);
  2. a manual directory holding the four original files (train-images-idx3-ubyte.gz,
     train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz): the `manual_dir`
     argument (flag `--mnist_dir`), else the environment variable DMDJAX_MNIST_DIR. TFDS reads them
     instead of downloading (its registered SHA-256 checksums are still verified);
  3. TFDS's normal download, after a 3 s connectivity probe; offline, a `MnistUnavailableError` is raised
     at once instead of TFDS's minutes-long retry loop.
The TFDS data dir is `data_dir`, else DMDJAX_TFDS_DIR, else TFDS's own TFDS_DATA_DIR, else
~/tensorflow_datasets. Preparation (~10 s on 2 CPU cores, a ~27 MB copy) happens once and says on stderr where
the copy goes; later calls reuse it, and processes starting together on a fresh data dir prepare it once (a file
lock: the others wait). The files are checked before TFDS is imported, so without data and without network the
error comes at once; TFDS's empty `tmp*tfds` folders are removed from the temp directory.

TensorFlow is never imported, installed or not (`pip install "dmdjax[tfds]"` is all MNIST needs). TFDS 4.9.10's
own mnist builder needs TensorFlow to prepare (tf.io.gfile to extract and read the .gz files,
tf.image.encode_png for the digits), so the copy is written by `_tfds_mnist_builder()`: TFDS's mnist (same
features, splits and example keys, hence the same shuffled order and the same arrays) whose examples are read
with gzip and encoded as PNG with Pillow, written by TFDS in its array_record format and read back with
TFDS's `as_data_source` (TensorFlow-free random access; the PNGs decoded with Pillow). A copy that TFDS (or an
earlier dmdjax) wrote in its default tfrecord format needs TensorFlow to read: it is left as is, and
the array_record copy goes beside it, under <data dir>/array_record.
"""
from __future__ import annotations

import contextlib
import functools
import gzip
import io
import json
import logging
import os
import socket
import sys
import tempfile
import threading
import urllib.parse
from pathlib import Path

import numpy as np

MNIST_FILES = {  # name -> size in bytes of the original files (TFDS also checks their SHA-256)
    "train-images-idx3-ubyte.gz": 9_912_422,
    "train-labels-idx1-ubyte.gz": 28_881,
    "t10k-images-idx3-ubyte.gz": 1_648_877,
    "t10k-labels-idx1-ubyte.gz": 4_542,
}
MNIST_DIR_ENV = "DMDJAX_MNIST_DIR"
TFDS_DIR_ENV = "DMDJAX_TFDS_DIR"
TFDS_OWN_ENV = "TFDS_DATA_DIR"      # TFDS's own variable, honoured after ours
MNIST_DIR_FLAG = "--mnist_dir"
DOWNLOAD_HOST = ("storage.googleapis.com", 443)  # where TFDS's mnist builder downloads from
PROBE_TIMEOUT_S = 3.0
MNIST_VERSION = "3.0.1"              # TFDS's mnist version, the folder <data dir>/mnist/3.0.1
FILE_FORMAT = "array_record"         # the TFDS file format TFDS reads without TensorFlow (as_data_source)
LEGACY_SUBDIR = "array_record"       # <data dir>/array_record: our copy when <data dir> holds a tfrecord one
_SIZE = 28
_SCALE = (np.arange(256) / 127.5 - 1.0).astype(np.float32)  # uint8 value -> [-1, 1]


class MnistUnavailableError(RuntimeError):
    """MNIST is neither prepared, nor given as files, nor downloadable (no network)."""


def _unavailable_message(reason: str) -> str:
    names = ", ".join(MNIST_FILES)
    return (f"MNIST is not available: {reason}. Pass {MNIST_DIR_FLAG}=DIR (or set the environment variable "
            f"{MNIST_DIR_ENV}=DIR) to a directory holding the four original MNIST files ({names}); "
            f"they are read offline.")


def _probe_target() -> tuple[str, int]:
    """Host and port a download would connect to first: the HTTPS proxy if one is set, else the host."""
    for var in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        if os.environ.get(var):
            url = urllib.parse.urlsplit(os.environ[var] if "://" in os.environ[var] else "//" + os.environ[var])
            if url.hostname:
                return url.hostname, url.port or 8080
    return DOWNLOAD_HOST


def network_reachable(host: str | None = None, port: int | None = None,
                      timeout: float = PROBE_TIMEOUT_S) -> bool:
    """True iff a TCP connection to host:port (default: the download host or proxy) opens within `timeout` s.

    Name resolution runs in a daemon thread too, so the whole probe is bounded by `timeout`.
    """
    if host is None:
        host, port = _probe_target()
    result = [False]

    def connect():
        try:
            with socket.create_connection((host, port), timeout=timeout):
                result[0] = True
        except OSError:
            pass

    thread = threading.Thread(target=connect, daemon=True)
    thread.start()
    thread.join(timeout)
    return result[0]


def check_manual_dir(manual_dir) -> Path:
    """Checks that `manual_dir` holds the four original files (by name and size); returns it as a Path."""
    path = Path(manual_dir).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(f"MNIST directory {path} (from {MNIST_DIR_FLAG} / {MNIST_DIR_ENV}) does not exist")
    for name, size in MNIST_FILES.items():
        f = path / name
        if not f.is_file():
            raise FileNotFoundError(f"MNIST file {name} is missing from {path} (from {MNIST_DIR_FLAG} / "
                                    f"{MNIST_DIR_ENV}); it needs all of: {', '.join(MNIST_FILES)}")
        if f.stat().st_size != size:
            raise ValueError(f"MNIST file {f} has {f.stat().st_size} bytes, expected {size} (the original, "
                             f"still gzip-compressed file)")
    return path


def install_hint(extra: str) -> str:
    """The pip command that adds `extra` to this dmdjax as it was installed: from a source tree (a clone, an
    editable install) `pip install -e "<tree>[extra]"`, else from the package index."""
    tree = Path(__file__).resolve().parents[2]
    if (tree / "pyproject.toml").is_file() and (tree / "dmdjax").is_dir():
        return f'pip install -e "{tree}[{extra}]"'
    return f"pip install 'dmdjax[{extra}]'"


@contextlib.contextmanager
def _quiet_tfds(tfds):
    """Within the block only: TFDS's progress bars off, absl's log below errors dropped, TFDS's own stdout
    report swallowed (the one-line notice above says what happens); all restored after."""
    from tensorflow_datasets.core.utils import tqdm_utils
    bars = getattr(tqdm_utils, "_active", True)
    absl = logging.getLogger("absl")
    level = absl.level
    tfds.display_progress_bar(False)
    absl.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        tfds.display_progress_bar(bars)
        absl.setLevel(level)


def _import_tfds():
    """Imports TFDS (which imports TensorFlow only when one of its TF-based APIs is used; none is here)."""
    try:
        import tensorflow_datasets as tfds
        from PIL import Image  # noqa: F401  (PNG encoding, and TFDS's decoding without TensorFlow)
        from array_record.python import array_record_module  # noqa: F401  (TFDS imports it lazily, late)
    except ModuleNotFoundError as e:
        raise ModuleNotFoundError(f"MNIST needs tensorflow-datasets ({e.name} is not installed): "
                                  f"{install_hint('tfds')}", name=e.name) from None
    return tfds


@functools.lru_cache(maxsize=None)
def _tfds_mnist_builder():
    """TFDS's mnist builder class, preparing without TensorFlow (see the module docstring); not registered."""
    tfds = _import_tfds()
    from PIL import Image
    from tensorflow_datasets.image_classification import mnist as tfds_mnist

    class Mnist(tfds_mnist.MNIST, skip_registration=True):
        name = "mnist"
        VERSION = tfds.core.Version(MNIST_VERSION)
        url_infos = tfds_mnist.MNIST.url_infos  # TFDS's registered sizes and SHA-256 of the original files

        def _split_generators(self, dl_manager):
            # download(), not download_and_extract(): TFDS's extractor copies through tf.io.gfile. With a
            # manual_dir, the files are used where they are (checksums verified).
            files = dl_manager.download({name: self.URL + name for name in MNIST_FILES})
            return [tfds.core.SplitGenerator(name=split, gen_kwargs=dict(
                        num_examples=n, data_path=files[f"{prefix}-images-idx3-ubyte.gz"],
                        label_path=files[f"{prefix}-labels-idx1-ubyte.gz"]))
                    for split, prefix, n in ((tfds.Split.TRAIN, "train", 60_000), (tfds.Split.TEST, "t10k", 10_000))]

        def _generate_examples(self, num_examples, data_path, label_path):
            # As TFDS's mnist: IDX headers skipped, example key = index in the file (the shuffle is by key).
            with gzip.open(data_path, "rb") as f:
                images = np.frombuffer(f.read(), np.uint8, offset=16).reshape(num_examples, _SIZE, _SIZE)
            with gzip.open(label_path, "rb") as f:
                labels = np.frombuffer(f.read(), np.uint8, offset=8)
            if labels.shape != (num_examples,):
                raise ValueError(f"{label_path} holds {labels.size} labels, expected {num_examples}")
            for index, (image, label) in enumerate(zip(images, labels)):
                png = io.BytesIO()
                Image.fromarray(image).save(png, format="png")
                yield index, {"image": png.getvalue(), "label": int(label)}

    return Mnist


def tfds_data_dir(data_dir=None) -> Path:
    """The TFDS data dir used: `data_dir`, else DMDJAX_TFDS_DIR, else TFDS_DATA_DIR, else ~/tensorflow_datasets."""
    chosen = data_dir or os.environ.get(TFDS_DIR_ENV) or os.environ.get(TFDS_OWN_ENV) or "~/tensorflow_datasets"
    return Path(chosen).expanduser()


def _file_formats(data_dir) -> set[str]:
    """The file formats of the TFDS mnist copy under `data_dir` (from its dataset_info.json; empty if none)."""
    try:
        info = json.loads((Path(data_dir) / "mnist" / MNIST_VERSION / "dataset_info.json").read_text())
    except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError):
        return set()
    return {info.get("fileFormat") or "tfrecord", *info.get("alternativeFileFormats", ())}


def array_record_dir(data_dir) -> Path:
    """Where the array_record copy lives: `data_dir`, unless data_dir/mnist/3.0.1 holds a copy in another
    format only (tfrecord, TFDS's default: it needs TensorFlow to read and is left as is): then
    data_dir/array_record."""
    formats = _file_formats(data_dir)
    return Path(data_dir) if not formats or FILE_FORMAT in formats else Path(data_dir) / LEGACY_SUBDIR


def is_prepared(data_dir) -> bool:
    """True if an array_record MNIST copy lies under `data_dir` (its dataset_info.json); imports nothing."""
    return FILE_FORMAT in _file_formats(array_record_dir(data_dir))


def _remove_new_empty_tmp_dirs(before: set[str]) -> None:
    """Remove the empty `tmp*tfds` folders TFDS's DatasetInfo.initialize_from_bucket left in the temp directory
    since `before` (a listing of it); non-empty ones and older ones are left alone."""
    root = Path(tempfile.gettempdir())
    for p in root.glob("tmp*tfds"):
        if p.name not in before and p.is_dir():
            try:
                p.rmdir()              # only if empty
            except OSError:
                pass


def pad_and_scale(images_u8: np.ndarray, pad_to: int = 32, resolution: int | None = None) -> np.ndarray:
    """(N, 28, 28[, 1]) uint8 -> (N, R, R, 1) float32 in [-1, 1]: zero-pad to pad_to, x/127.5 - 1, avg-pool.

    R = resolution (default pad_to); pad_to must be a multiple of R. Padding is centred ((pad_to-28)//2
    before, the rest after).
    """
    x = np.asarray(images_u8)
    if x.dtype != np.uint8:
        raise TypeError(f"expected uint8 images, got {x.dtype}")
    if x.ndim == 3:
        x = x[..., None]
    if x.shape[1:] != (_SIZE, _SIZE, 1):
        raise ValueError(f"expected (N, 28, 28, 1) images, got {x.shape}")
    if pad_to < _SIZE:
        raise ValueError(f"pad_to must be >= 28, got {pad_to}")
    resolution = pad_to if resolution is None else int(resolution)
    if resolution <= 0 or pad_to % resolution:
        raise ValueError(f"resolution must divide pad_to={pad_to}, got {resolution}")
    lo = (pad_to - _SIZE) // 2
    x = np.pad(x, ((0, 0), (lo, pad_to - _SIZE - lo), (lo, pad_to - _SIZE - lo), (0, 0)))  # 0 = background
    x = _SCALE[x]  # x / 127.5 - 1, computed in float64 and rounded once to float32
    f = pad_to // resolution
    if f > 1:
        x = x.reshape(x.shape[0], resolution, f, resolution, f, 1).mean(axis=(2, 4), dtype=np.float32)
    return x


PREPARE_LOCK = ".dmdjax-mnist-prepare.lock"   # in the array_record dir: one preparation at a time per data dir


@contextlib.contextmanager
def _preparation_lock(store: Path):
    """Holds an exclusive lock on `store`/PREPARE_LOCK (POSIX flock; none where fcntl is missing): two processes
    starting on a fresh data dir prepare it once, the second waiting (TFDS's final rename fails for the loser)."""
    try:
        import fcntl
    except ImportError:     # Windows: no lock, as before
        yield
        return
    store.mkdir(parents=True, exist_ok=True)
    with open(store / PREPARE_LOCK, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"MNIST: another process is preparing the TFDS copy in {store}; waiting for it", file=sys.stderr)
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _prepare(tfds, builder, manual_dir, data_dir: Path, store: Path) -> None:
    """Writes the array_record copy from `manual_dir` (else a download), saying where on stderr."""
    source = f"the files in {manual_dir}" if manual_dir is not None else "a download"
    beside = "" if store == data_dir else f" (the tfrecord copy in {data_dir / 'mnist'} is left as is)"
    print(f"MNIST: preparing a TFDS copy (~27 MB) from {source} in {builder.data_dir}{beside}, once; "
          f"set {TFDS_DIR_ENV} or {TFDS_OWN_ENV} to put it elsewhere", file=sys.stderr)
    config = tfds.download.DownloadConfig(
        manual_dir=None if manual_dir is None else os.fspath(manual_dir), force_checksums_validation=True)
    builder.download_and_prepare(download_config=config)


def load_mnist(split: str = "train", *, data_dir=None, manual_dir=None, pad_to: int = 32,
               resolution: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Whole MNIST split -> (images (N, R, R, 1) float32 in [-1, 1], labels (N,) int32); R = resolution or pad_to.

    split: any TFDS split string ("train" = 60,000, "test" = 10,000, "train[:1000]", ...).
    data_dir: TFDS data dir (prepared data are written and reused there); default DMDJAX_TFDS_DIR, else
      TFDS_DATA_DIR, else ~/tensorflow_datasets. manual_dir: the four original .gz files (flag --mnist_dir);
      default DMDJAX_MNIST_DIR.
    resolution: optional smaller side (must divide pad_to), by average pooling, e.g. 16 for CPU presets.
    Raises FileNotFoundError naming a missing file, or MnistUnavailableError when no files and no network.
    """
    data_dir = tfds_data_dir(data_dir)
    if manual_dir is None:
        manual_dir = os.environ.get(MNIST_DIR_ENV) or None
    # Validate the cheap arguments and find the data before importing TFDS.
    pad_and_scale(np.zeros((0, _SIZE, _SIZE, 1), np.uint8), pad_to, resolution)
    prepared = is_prepared(data_dir)
    if not prepared:
        if manual_dir is not None:
            manual_dir = check_manual_dir(manual_dir)
        elif not network_reachable():
            host, port = _probe_target()
            raise MnistUnavailableError(_unavailable_message(
                f"it is not prepared under {array_record_dir(data_dir) / 'mnist'}, no directory was given, and the "
                f"download host {host}:{port} is unreachable (no network)"))

    tfds = _import_tfds()
    store = array_record_dir(data_dir)
    temp_before = {p.name for p in Path(tempfile.gettempdir()).glob("tmp*tfds")}
    with _quiet_tfds(tfds):
        try:
            builder = _tfds_mnist_builder()(data_dir=os.fspath(store), file_format=FILE_FORMAT)
            if not builder.is_prepared():
                with _preparation_lock(store):
                    # Asked again under the lock: a concurrent process may have prepared it meanwhile.
                    builder = _tfds_mnist_builder()(data_dir=os.fspath(store), file_format=FILE_FORMAT)
                    if not builder.is_prepared():
                        _prepare(tfds, builder, manual_dir, data_dir, store)
        finally:
            _remove_new_empty_tmp_dirs(temp_before)
        source = builder.as_data_source(split=split)
        examples = source.__getitems__(list(range(len(source))))  # TFDS's batched random access
    images_u8 = np.stack([e["image"] for e in examples]) if examples else np.zeros((0, _SIZE, _SIZE, 1), np.uint8)
    images = pad_and_scale(images_u8, pad_to, resolution)
    labels = np.asarray([e["label"] for e in examples], dtype=np.int32)
    return images, labels
