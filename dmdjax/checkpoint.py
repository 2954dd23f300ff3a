"""Orbax checkpoints for resumable runs and kept snapshots.

One `Checkpointer` per run directory: it keeps the latest two checkpoints (for resuming; the older one is the
fallback when the newer cannot be read) and every step listed in `keep_steps` (the teacher snapshots, e.g. 1024,
2048, 4096, 8192). Orbax writes to a temporary directory and renames it when complete, so an interrupted save
never leaves a half-written checkpoint behind; the temporary directories a killed save leaves are removed when
the next `Checkpointer` opens the directory. A checkpoint whose files cannot be read raises `CorruptCheckpointError`
(naming the one directory to delete), one written for another model `CheckpointError` ("does not match").

Orbax keeps no checksum of array data (a flipped byte restores without an error), so each step directory also
holds `SUMS_FILE`: the SHA-256 of every file Orbax wrote, taken once the save is final and compared before Orbax
reads anything (a mismatch is a `CorruptCheckpointError`, and Orbax's own noisy failure path is never entered).
A checkpoint without it (written before it existed, or killed between Orbax's finalisation and the file) is
restored unverified.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any, Iterable

import jax
import orbax.checkpoint as ocp
from orbax.checkpoint.checkpoint_managers import preservation_policy as pp

from dmdjax import files, parallel


__all__ = ["CheckpointError", "CorruptCheckpointError", "Checkpointer", "check_config", "file_sums"]

TMP_SUFFIX = getattr(ocp.utils, "TMP_DIR_SUFFIX", ".orbax-checkpoint-tmp")   # Orbax's unfinished saves
KEEP_LATEST = 2   # latest checkpoints kept besides the snapshots: the newest and one fallback
SUMS_FILE = "dmdjax.sha256.json"   # in each step directory: {file path relative to it: sha256 of its bytes}


class CheckpointError(ValueError):
    """A checkpoint is missing, corrupt or does not match the model/config it is restored into."""


class CorruptCheckpointError(CheckpointError):
    """A checkpoint's files cannot be read (truncated, garbled): not a config mismatch. `step` and `path` name it,
    `reason` is Orbax's error in one line."""

    def __init__(self, message: str, step: int, path: Path, reason: str = ""):
        super().__init__(message)
        self.step, self.path, self.reason = step, path, reason


class Checkpointer:
    def __init__(self, directory: str | os.PathLike, keep_steps: Iterable[int] = ()):
        self.directory = Path(directory).absolute()
        self._keep_steps = sorted(set(int(s) for s in keep_steps))
        if parallel.is_main():          # multi-host: one process cleans up, the others wait for it
            remove_temporary(self.directory)
        parallel.sync(f"dmdjax.Checkpointer {self.directory}")
        self._manager = self._open()
        self._in_flight: int | None = None     # the step of a save whose checksums are not written yet

    def _open(self):
        policy = pp.AnyPreservationPolicy([pp.LatestN(KEEP_LATEST), pp.CustomSteps(self._keep_steps)])
        return ocp.CheckpointManager(self.directory, options=ocp.CheckpointManagerOptions(
            preservation_policy=policy, create=True))

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self._manager.all_steps())

    def save(self, step: int, state: Any) -> None:
        self._manager.save(int(step), args=ocp.args.StandardSave(state), force=True)  # waits for the previous
        self._write_sums()
        self._in_flight = int(step)

    def _write_sums(self) -> None:
        """Record the checksums of the last save, which must be finished (Orbax renamed its directory)."""
        step, self._in_flight = self._in_flight, None
        step_dir = self.directory / str(step)
        if step is not None and parallel.is_main() and step_dir.is_dir():
            files.write_json(step_dir / SUMS_FILE, file_sums(step_dir), sort_keys=True)

    def restore(self, target: Any, step: int | None = None) -> Any:
        """Restore into the structure, shapes and dtypes of `target` (concrete or `jax.eval_shape`d)."""
        step = self.latest_step() if step is None else step
        if step is None or step not in self.all_steps():
            raise CheckpointError(f"no checkpoint at step {step} in {self.directory} (found: {self.all_steps()})")
        self._verify(step)
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
        try:
            return self._manager.restore(step, args=ocp.args.StandardRestore(abstract))
        except Exception as e:  # orbax raises several types for structure/shape mismatches and corrupt files
            reason = f"{type(e).__name__}: {' '.join(str(e).split())[:200]}"
            path = self.directory / str(step)
            if self._readable_but_different(step, abstract, e):
                raise CheckpointError(
                    f"checkpoint {path} does not match the model being restored ({reason}). It was written by a "
                    f"different config: use the matching config, or a fresh --workdir.") from e
            raise self._corrupt(step, reason) from e

    def _verify(self, step: int) -> None:
        """Raise CorruptCheckpointError if a file of `step` is missing or differs from its SHA-256 at save time."""
        path = self.directory / str(step)
        try:
            recorded = json.loads((path / SUMS_FILE).read_text())
        except FileNotFoundError:
            return                                         # unverified: see the module docstring
        except (OSError, ValueError) as e:
            reason = f"{SUMS_FILE} unreadable: {type(e).__name__}"
        else:
            found = file_sums(path)
            bad = [name for name in sorted(recorded) if found.get(name) != recorded[name]]
            if not bad:
                return
            reason = (f"{len(bad)} of {len(recorded)} files missing or changed since the save, by their SHA-256 "
                      f"(first: {bad[0]})")
        raise self._corrupt(step, reason)

    def _corrupt(self, step: int, reason: str) -> CorruptCheckpointError:
        path = self.directory / str(step)
        return CorruptCheckpointError(
            f"checkpoint {path} cannot be read: it is corrupt ({reason}). Delete that one directory, {path}, "
            f"and rerun: the run resumes from the checkpoint before it, if any.", step, path, reason)

    def _readable_but_different(self, step: int, abstract: Any, error: Exception) -> bool:
        """True if the checkpoint's metadata reads and names other leaves (shapes/dtypes) than `abstract`, or
        Orbax says the structures differ: a different model, not a damaged file."""
        message = str(error)
        if any(m in message for m in ("Structure mismatch", "structures do not match", "not compatible with the "
                                                                                      "stored shape")):
            return True
        try:
            tree = ocp.StandardCheckpointHandler().metadata(self.directory / str(step) / "default").tree
            stored = _leaves(tree)
        except Exception:        # unreadable metadata: corrupt
            return False
        return stored != _leaves(abstract)

    def set_aside(self, step: int) -> Path:
        """Move the (corrupt) checkpoint of `step` out of the run, to `<directory>.corrupt-<step>`, so the run can
        save that step again; returns where it went. Nothing is deleted. Multi-host: every process calls it,
        process 0 moves the directory."""
        self.wait()
        source = self.directory / str(step)
        dest = self.directory.with_name(f"{self.directory.name}.corrupt-{step}")
        n = 1
        while dest.exists():
            n += 1
            dest = self.directory.with_name(f"{self.directory.name}.corrupt-{step}-{n}")
        parallel.sync(f"dmdjax.Checkpointer.set_aside {source}")   # every process named dest before the move
        if parallel.is_main():
            shutil.move(str(source), str(dest))
        parallel.sync(f"dmdjax.Checkpointer.set_aside {source} done")
        self._manager.close()
        self._manager = self._open()
        return dest

    def wait(self) -> None:
        self._manager.wait_until_finished()
        self._write_sums()

    def close(self) -> None:
        self.wait()
        self._manager.close()


def file_sums(step_dir: str | os.PathLike) -> dict[str, str]:
    """{path relative to `step_dir`: SHA-256 hex of the file's bytes} for every file in it but `SUMS_FILE`."""
    step_dir = Path(step_dir)
    sums = {}
    for f in sorted(p for p in step_dir.rglob("*") if p.is_file() and p.name != SUMS_FILE):
        with open(f, "rb") as handle:
            sums[f.relative_to(step_dir).as_posix()] = hashlib.file_digest(handle, "sha256").hexdigest()
    return sums


def _leaves(tree) -> list[tuple]:
    """(path names, shape, dtype) of every array leaf, sorted: comparable between a state and Orbax metadata."""
    name = lambda k: str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k))))
    return sorted((tuple(name(k) for k in path), tuple(leaf.shape), str(leaf.dtype))
                  for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0])


def remove_temporary(directory: str | os.PathLike) -> list[Path]:
    """Delete the temporary directories (`<step>.orbax-checkpoint-tmp...`) an interrupted save left in
    `directory`; they never hold a finished checkpoint. Returns the removed paths."""
    removed = sorted(p for p in Path(directory).glob(f"*{TMP_SUFFIX}*") if p.is_dir())
    for p in removed:
        shutil.rmtree(p, ignore_errors=True)
    return removed


# Config fields that were removed without changing what a run computes; a run directory written with them
# still resumes. ("teacher", "snapshots"): the teacher keeps Config.snapshots().
REMOVED_FIELDS = (("teacher", "snapshots"),)
# Config fields added later, with the value that computes what a run written before them computed: a run
# directory without them resumes when the new config holds that value (section None: a top-level field).
ADDED_FIELDS = (("teacher", "ema_halflife_kimg", 0.0), ("teacher", "ema_rampup_ratio", 0.05),
                ("teacher", "distill_ema", True))


def check_config(path: str | os.PathLike, config: dict) -> None:
    """Write `config` as JSON at `path`, or, if a run already lives there, insist that it was the same config.
    Multi-host: every process checks, process 0 writes."""
    path = Path(path)
    config = json.loads(json.dumps(config))  # normalise tuples -> lists
    if path.exists():
        old = json.loads(path.read_text())
        for section, name in REMOVED_FIELDS:      # written by an older dmdjax: no longer part of the config
            if name not in config.get(section, {}):
                old.get(section, {}).pop(name, None)
        for section, name, value in ADDED_FIELDS:        # written before the field existed
            old_section = old if section is None else old.get(section)
            new_section = config if section is None else config.get(section, {})
            if isinstance(old_section, dict) and name not in old_section and new_section.get(name) == value:
                old_section[name] = value
        if old != config:
            diff = sorted(k for k in set(old) | set(config) if old.get(k) != config.get(k))
            raise CheckpointError(
                f"{path.parent} holds a run with a different config (differs in: {', '.join(diff)}). "
                f"Rerun with the same flags to resume, or choose a fresh --workdir.")
        return
    if parallel.is_main():
        files.write_json(path, config, sort_keys=True)
