"""Atomic file writes: every file a run writes appears whole or not at all (a kill mid-write leaves the previous
version), so a resumed run never reads a torn JSON, log or array."""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import IO, Iterator

import numpy as np

__all__ = ["atomic_open", "write_bytes", "write_text", "write_json", "write_lines", "read_lines", "save_npz",
           "save_npy", "copy_file"]


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "w") -> Iterator[IO]:
    """Open a temporary file beside `path` (same directory, so the rename is atomic); on success it is flushed,
    synced and renamed to `path`; on any error it is removed and `path` is left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_open(path, "wb") as f:
        f.write(data)


def write_text(path: str | Path, text: str) -> None:
    with atomic_open(path, "w") as f:
        f.write(text)


def write_json(path: str | Path, obj, **kwargs) -> None:
    """`obj` as indented JSON (json.dumps keyword arguments pass through, e.g. sort_keys)."""
    write_text(path, json.dumps(obj, indent=1, **kwargs))


def write_lines(path: str | Path, rows: list[dict]) -> None:
    """A JSON-lines file (one object per line), replacing the whole file at once."""
    write_text(path, "".join(json.dumps(r) + "\n" for r in rows))


def read_lines(path: str | Path) -> list[dict]:
    """The objects of a JSON-lines file ([] if there is none)."""
    path = Path(path)
    return [json.loads(line) for line in path.read_text().splitlines() if line] if path.exists() else []


def save_npz(path: str | Path, compressed: bool = False, **arrays) -> None:
    with atomic_open(path, "wb") as f:
        (np.savez_compressed if compressed else np.savez)(f, **arrays)


def save_npy(path: str | Path, array) -> None:
    with atomic_open(path, "wb") as f:
        np.save(f, array)


def copy_file(src: str | Path, dst: str | Path) -> None:
    with atomic_open(dst, "wb") as f, open(src, "rb") as g:
        shutil.copyfileobj(g, f)
