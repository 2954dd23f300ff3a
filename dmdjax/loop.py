"""The one training loop (teacher and DMD): jitted, scanned chunks of steps, Orbax checkpoints, JSON-lines
metrics (also as TensorBoard scalars beside them), a progress bar, and resumption from the last checkpoint.

`step_fn(state, consts) -> (state, metrics)` must derive all randomness from `state.step` (e.g.
`fold_in(key, state.step)`), so a resumed run repeats exactly the steps an uninterrupted one would take.
"""
from __future__ import annotations

import functools
import json
import math
import os
import warnings
from pathlib import Path
from typing import Any, Callable, Iterable

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from dmdjax import files, parallel
from dmdjax.checkpoint import Checkpointer, CorruptCheckpointError
from dmdjax.tensorboard import ScalarWriter


@functools.partial(jax.jit, static_argnums=(0, 3), donate_argnums=(1,))
def _run_chunk(step_fn, state, consts, length: int):
    """`length` calls of step_fn in one XLA program; metrics flattened to one entry per iteration.
    length 1 calls step_fn without a loop: XLA:CPU runs convolution backward passes inside loops far slower."""
    if length == 1:
        state, metrics = step_fn(state, consts)
    else:
        state, metrics = jax.lax.scan(lambda s, _: step_fn(s, consts), state, None, length=length)
    return state, jax.tree.map(lambda m: m.reshape(-1), metrics)


def _run_parts(parts, state, consts):
    """One call of a step given as separately compiled parts (`step_fn.parts`, e.g. a DMD round's generator
    iteration and fake-score iterations): each part is its own program; metrics concatenated by name in call
    order, as the whole step would return them."""
    metrics = []
    for part in parts:
        state, m = _run_chunk(part, state, consts, 1)
        metrics.append(m)
    return state, {name: jnp.concatenate([m[name] for m in metrics if name in m]) for name in metrics[0]}


def callback_intervals(every: int | Iterable[int]) -> tuple[int, ...]:
    """`run_loop`'s callback_every as a tuple of positive intervals (0 or () : none)."""
    return tuple(e for e in ((every,) if isinstance(every, int) else tuple(every)) if e)


def _boundaries(start: int, num_steps: int, chunk: int, ckpt_every: int, keep_steps: Iterable[int],
                callback_every: int | Iterable[int] = 0) -> list[int]:
    marks = {num_steps} | {s for s in keep_steps if start < s < num_steps}
    marks |= set(range(ckpt_every, num_steps, ckpt_every)) if ckpt_every else set()
    for every in callback_intervals(callback_every):
        marks |= set(range(every, num_steps, every))
    marks |= set(range(chunk, num_steps, chunk))
    return sorted(m for m in marks if m > start)


def _truncate_log(path: Path, start: int) -> None:
    """Drop log lines of steps >= start (written after the checkpoint we resume from). Atomic: the kept lines go
    to a temporary file that then replaces the log, so a kill here leaves the old log or the new one. A torn last
    line (a kill while appending) is dropped too."""
    if not path.exists():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            if line and json.loads(line)["step"] < start:
                keep.append(line)
        except (json.JSONDecodeError, KeyError, TypeError):
            continue
    files.write_text(path, "".join(line + "\n" for line in keep))


def _restore_latest_good(ckpt: Checkpointer, state: Any, desc: str) -> tuple[Any, int]:
    """Restore the newest readable checkpoint: (state, its step), or (state, 0) when there is none. A corrupt
    newer one is moved aside (`Checkpointer.set_aside`) with a warning naming its step and the step resumed from;
    if no checkpoint can be read, a CorruptCheckpointError naming every directory to delete is raised, nothing
    moved."""
    corrupt = []
    for step in sorted(ckpt.all_steps(), reverse=True):
        try:
            restored = ckpt.restore(state, step)
        except CorruptCheckpointError as e:
            corrupt.append(e)
            continue
        for e in corrupt:
            moved = ckpt.set_aside(e.step)
            if parallel.is_main():
                warnings.warn(f"{desc}: checkpoint step {e.step} is corrupt ({e.reason}); "
                              f"resuming from step {step} instead. The corrupt copy was moved to {moved}; delete "
                              f"it when you no longer need it.", RuntimeWarning, stacklevel=3)
        return restored, step
    if len(corrupt) > 1:
        paths = ", ".join(str(e.path) for e in corrupt)
        raise CorruptCheckpointError(
            f"{desc}: none of the checkpoints in {ckpt.directory} can be read: steps "
            f"{', '.join(str(e.step) for e in corrupt)} are corrupt (step {corrupt[0].step}: {corrupt[0].reason}). "
            f"Delete those directories ({paths}) and rerun: the run starts again from step 0.",
            corrupt[0].step, corrupt[0].path, corrupt[0].reason)
    if corrupt:
        raise corrupt[0]
    return state, 0


def run_loop(step_fn: Callable, state: Any, consts: Any, *, num_steps: int, ckpt: Checkpointer, log_path: str | os.PathLike,
             chunk: int = 100, ckpt_every: int = 1000, keep_steps: Iterable[int] = (), desc: str = "train",
             progress: bool = True,
             steps_per_call: int = 1, tensorboard: bool = True, callback: Callable | None = None,
             callback_every: int | Iterable[int] = 0, on_chunk: Callable[[], None] | None = None) -> Any:
    """Run `step_fn` until `state.step == num_steps`, resuming from `ckpt`'s latest readable checkpoint if there
    is one (a corrupt newer one is moved aside with a RuntimeWarning naming both steps).

    Saves at multiples of `ckpt_every`, at every step in `keep_steps` and at the end. Raises FloatingPointError
    (and saves nothing) if a metric becomes NaN or inf. Returns the final state. `step_fn` may advance
    `steps_per_call` iterations at once (a DMD round); every boundary must then be a multiple of it. A metric
    with steps_per_call / k entries per call (DMD's generator terms: one per round) is logged at every k-th
    iteration, from the call's first; `read_series` reads it back. A `step_fn` with a `parts` attribute (step
    functions that together make one call) runs them as separate programs wherever a chunk is a single call.
    With `tensorboard`, every logged row is also written as TensorBoard scalars to log_path's directory
    (`dmdjax.tensorboard`).

    `callback(step, state) -> bool` (optional) runs at the start step (0 or the resumed one, so that a resumed
    run re-reads its state and decision) and at every multiple of `callback_every` (an interval, or several: every
    multiple of any of them) reached, before that step's checkpoint; True stops the run there: the state at that step is saved (if it is not the start) and returned.
    A callback must decide from the state and its own files only, so that a resumed run decides the same.
    `on_chunk()` (optional) runs after every chunk (e.g. `pipeline.wall_time`'s tick).
    """
    if num_steps < 1:
        raise ValueError(f"num_steps must be positive, got {num_steps}")
    keep_steps = sorted(set(keep_steps))
    intervals = callback_intervals(callback_every)
    for name, value in [("the number of steps", num_steps), ("chunk", chunk), ("ckpt_every", ckpt_every or 0),
                        *[("a kept step", s) for s in keep_steps], *[("callback_every", e) for e in intervals]]:
        if value % steps_per_call:
            raise ValueError(f"{desc}: {name} ({value}) must be a multiple of {steps_per_call} (one call of the "
                             f"step advances {steps_per_call} iterations); e.g. use "
                             f"{max(steps_per_call, value // steps_per_call * steps_per_call)}")
    log_path = Path(log_path)
    state, start = _restore_latest_good(ckpt, state, desc)
    if int(state.step) != start:
        raise ValueError(f"restored state is at step {int(state.step)}, expected {start}")
    main = parallel.is_main()                 # multi-host: one process writes the log
    if main:
        _truncate_log(log_path, start)
    if callback is not None and intervals and parallel.agree(bool(callback(start, state))):
        return state                          # stopped before (or at once): stays stopped
    tb = ScalarWriter(log_path.parent, purge_step=start) if main and tensorboard else None
    bar = tqdm(total=num_steps, initial=start, desc=desc, unit="it", disable=not (progress and main),
               dynamic_ncols=True)
    step = start
    try:
        with (log_path.open("a") if main else open(os.devnull, "w")) as log:
            for stop in _boundaries(start, num_steps, chunk, ckpt_every, keep_steps, intervals):
                calls = (stop - step) // steps_per_call
                if calls == 1 and getattr(step_fn, "parts", None):
                    state, metrics = _run_parts(step_fn.parts, state, consts)
                else:
                    state, metrics = _run_chunk(step_fn, state, consts, calls)
                metrics, n = parallel.fetch(metrics), stop - step
                every = {name: _spacing(name, len(values), n) for name, values in metrics.items()}
                for name, values in metrics.items():
                    bad = ~np.isfinite(values)
                    if bad.any():
                        first = step + int(np.argmax(bad)) * every[name]
                        raise FloatingPointError(
                            f"{desc}: metric {name!r} became {values[bad][0]} at step {first}; nothing after step "
                            f"{ckpt.latest_step()} was saved. Lower the learning rate or check the data for NaNs.")
                for i in range(n):
                    row = {k: float(v[i // every[k]]) for k, v in metrics.items() if i % every[k] == 0}
                    log.write(json.dumps({"step": step + i, **row}) + "\n")
                    if tb is not None:
                        tb.scalars(step + i, row)
                log.flush()
                bar.set_postfix({k: f"{float(v[-1]):.4g}" for k, v in metrics.items()}, refresh=False)
                bar.update(stop - step)
                step = stop
                halt = bool(callback is not None and any(stop % e == 0 for e in intervals)
                            and parallel.agree(bool(callback(stop, state))))   # multi-host: process 0 decides
                if halt or stop == num_steps or stop in keep_steps or (ckpt_every and stop % ckpt_every == 0):
                    ckpt.save(stop, state)
                    if tb is not None:    # TensorBoard holds every step up to the last checkpoint
                        tb.flush()
                if on_chunk is not None:
                    on_chunk()
                if halt:
                    break
    finally:  # also on Ctrl-C / errors: let an in-flight async save finish, so no work is lost or half-read
        bar.close()
        ckpt.wait()
        if tb is not None:
            tb.close()
    return state


def _spacing(name: str, entries: int, iterations: int) -> int:
    """Iterations between a metric's entries: a call of `iterations` steps returned `entries` values."""
    if not entries or iterations % entries:
        raise ValueError(f"metric {name!r} has {entries} entries for {iterations} iterations; a step must return "
                         f"one per iteration or one per k iterations")
    return iterations // entries


def read_log(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read a JSON-lines metrics log into {name: array over steps} (with 'step'); NaN where a metric was not
    recorded (see `read_series`)."""
    if not Path(path).exists():
        raise FileNotFoundError(path)
    rows = files.read_lines(path)
    keys = list(dict.fromkeys(k for r in rows for k in r)) or ["step"]
    return {k: np.array([r.get(k, math.nan) for r in rows]) for k in keys}


def read_series(path: str | os.PathLike, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(steps, values) of one metric of a log, at the iterations where it was recorded (e.g. DMD's dm_loss:
    the generator iterations, 0, 5, 10, ...). Raises KeyError naming the metrics there if `name` is not one."""
    log = read_log(path)
    if name not in log:
        raise KeyError(f"{path} has no metric {name!r}; it has {sorted(set(log) - {'step'})}")
    recorded = ~np.isnan(log[name])
    return log["step"][recorded].astype(int), log[name][recorded]
