"""Orbax checkpoints for resumable runs and kept snapshots.

One `Checkpointer` per run directory: it keeps the latest checkpoint (for resuming) and every step listed in
`keep_steps` (the teacher snapshots, e.g. 1024, 2048, 4096, 8192). Orbax writes to a temporary directory and
renames it when complete, so an interrupted save never leaves a half-written checkpoint behind.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable

import jax
import orbax.checkpoint as ocp
from orbax.checkpoint.checkpoint_managers import preservation_policy as pp


class CheckpointError(ValueError):
    """A checkpoint is missing, corrupt or does not match the model/config it is restored into."""


class Checkpointer:
    def __init__(self, directory: str | os.PathLike, keep_steps: Iterable[int] = ()):
        self.directory = Path(directory).absolute()
        policy = pp.AnyPreservationPolicy([pp.LatestN(1), pp.CustomSteps(sorted(set(int(s) for s in keep_steps)))])
        self._manager = ocp.CheckpointManager(
            self.directory, options=ocp.CheckpointManagerOptions(preservation_policy=policy, create=True))

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self._manager.all_steps())

    def save(self, step: int, state: Any) -> None:
        self._manager.save(int(step), args=ocp.args.StandardSave(state), force=True)

    def restore(self, target: Any, step: int | None = None) -> Any:
        """Restore into the structure, shapes and dtypes of `target` (concrete or `jax.eval_shape`d)."""
        step = self.latest_step() if step is None else step
        if step is None or step not in self.all_steps():
            raise CheckpointError(f"no checkpoint at step {step} in {self.directory} (found: {self.all_steps()})")
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
        try:
            return self._manager.restore(step, args=ocp.args.StandardRestore(abstract))
        except Exception as e:  # orbax raises several types for structure/shape mismatches and corrupt files
            raise CheckpointError(
                f"checkpoint {self.directory}/{step} does not match the model being restored ({type(e).__name__}: "
                f"{str(e)[:300]}). It was written by a different config or is corrupt: use the matching config, "
                f"or a fresh --workdir.") from e

    def wait(self) -> None:
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.close()


def check_config(path: str | os.PathLike, config: dict) -> None:
    """Write `config` as JSON at `path`, or, if a run already lives there, insist that it was the same config."""
    path = Path(path)
    config = json.loads(json.dumps(config))  # normalise tuples -> lists
    if path.exists():
        old = json.loads(path.read_text())
        if old != config:
            diff = sorted(k for k in set(old) | set(config) if old.get(k) != config.get(k))
            raise CheckpointError(
                f"{path.parent} holds a run with a different config (differs in: {', '.join(diff)}). "
                f"Rerun with the same flags to resume, or choose a fresh --workdir.")
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(config, indent=1, sort_keys=True))
    tmp.replace(path)
