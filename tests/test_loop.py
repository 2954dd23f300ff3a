"""The training loop and checkpoints: NaN stops the run, checkpoints refuse a mismatched model, resume is exact
and runs only the remaining steps, a corrupt checkpoint falls back to the previous one."""
import glob
import json
import os
import subprocess
import sys
from pathlib import Path

import flax.struct
import jax.numpy as jnp
import numpy as np
import pytest

from dmdjax import files, loop
from dmdjax.checkpoint import SUMS_FILE, CheckpointError, Checkpointer, CorruptCheckpointError, check_config, file_sums


@flax.struct.dataclass
class Counter:
    step: jnp.ndarray
    x: jnp.ndarray


def _step_nan_at(bad_step):
    def step(state, consts):
        value = jnp.where(state.step == bad_step, jnp.nan, state.x + consts)
        return Counter(step=state.step + 1, x=state.x + consts), {"loss": value}
    return step


def test_nan_metric_stops_with_step_and_saves_nothing_after(tmp_path):
    ckpt = Checkpointer(tmp_path / "ckpt")
    state = Counter(step=jnp.zeros((), jnp.int32), x=jnp.zeros(()))
    with pytest.raises(FloatingPointError, match=r"'loss' became nan at step 13"):
        loop.run_loop(_step_nan_at(13), state, 1.0, num_steps=30, ckpt=ckpt, log_path=tmp_path / "log.jsonl",
                      chunk=5, ckpt_every=5, progress=False)
    assert ckpt.latest_step() == 10


def _count_steps(monkeypatch):
    """Record (first step, iterations) of every chunk loop.run_loop executes from now on."""
    real, chunks = loop._run_chunk, []

    def counting(step_fn, state, consts, length):
        chunks.append((int(state.step), length))
        return real(step_fn, state, consts, length)
    monkeypatch.setattr(loop, "_run_chunk", counting)
    return chunks


@pytest.mark.minver
def test_resume_continues_log_and_state(tmp_path, monkeypatch):
    state = Counter(step=jnp.zeros((), jnp.int32), x=jnp.zeros(()))
    ckpt = Checkpointer(tmp_path / "ckpt")
    with pytest.raises(FloatingPointError):
        loop.run_loop(_step_nan_at(17), state, 1.0, num_steps=20, ckpt=ckpt, log_path=tmp_path / "log.jsonl",
                      chunk=5, ckpt_every=5, progress=False)
    chunks = _count_steps(monkeypatch)
    state = Counter(step=jnp.zeros((), jnp.int32), x=jnp.zeros(()))     # the first run donated its buffers
    final = loop.run_loop(_step_nan_at(-1), state, 1.0, num_steps=20, ckpt=Checkpointer(tmp_path / "ckpt"),
                          log_path=tmp_path / "log.jsonl", chunk=5, ckpt_every=5, progress=False)
    assert chunks == [(15, 5)]                      # resumed: only steps 15..19 ran, not a restart from 0
    assert int(final.step) == 20 and float(final.x) == 20.0
    log = loop.read_log(tmp_path / "log.jsonl")
    assert list(log["step"]) == list(range(20))     # no duplicates from the failed attempt
    np.testing.assert_array_equal(log["loss"], np.arange(1, 21))


def _corrupt(step_dir: Path, how: str) -> None:
    if how == "flipped byte":          # in the middle of the largest array's data: Orbax reads it without error
        biggest = max(glob.glob(str(step_dir / "default" / "**" / "d" / "*"), recursive=True), key=os.path.getsize)
        data = bytearray(Path(biggest).read_bytes())
        data[len(data) // 2] ^= 0x40
        Path(biggest).write_bytes(bytes(data))
    elif how == "truncated data":
        files = [f for f in glob.glob(str(step_dir / "default" / "**" / "d" / "*"), recursive=True)]
        assert files
        for f in files:
            os.truncate(f, os.path.getsize(f) // 2)
    else:
        (step_dir / "default" / "_METADATA").write_text('{"tree_metadata": {"x": ')


def _step_array(state, consts):
    return Counter(step=state.step + 1, x=state.x * 0.5 + consts), {"loss": jnp.mean(state.x)}


@pytest.mark.minver
@pytest.mark.parametrize("how", ["truncated data", "garbled _METADATA", "flipped byte"])
def test_corrupt_latest_checkpoint_falls_back_to_the_previous(tmp_path, monkeypatch, how):
    noise = np.random.default_rng(0).standard_normal((64, 32)).astype(np.float32)   # 8 KiB, incompressible
    fresh = lambda: Counter(step=jnp.zeros((), jnp.int32), x=jnp.asarray(noise))
    run = lambda n, d: loop.run_loop(_step_array, fresh(), jnp.asarray(noise), num_steps=n,
                                     ckpt=Checkpointer(d / "ckpt"), log_path=d / "log.jsonl", chunk=5, ckpt_every=5,
                                     progress=False)
    reference = run(30, tmp_path / "ref")
    run(20, tmp_path / "a")
    assert Checkpointer(tmp_path / "a" / "ckpt").all_steps() == [15, 20]     # the latest two are kept
    _corrupt(tmp_path / "a" / "ckpt" / "20", how)
    chunks = _count_steps(monkeypatch)
    with pytest.warns(RuntimeWarning, match=r"checkpoint step 20 is corrupt .*resuming from step 15 instead"):
        final = run(30, tmp_path / "a")
    assert chunks[0] == (15, 5) and sum(n for _, n in chunks) == 15
    assert int(final.step) == int(reference.step)
    np.testing.assert_array_equal(final.x, reference.x)
    assert (tmp_path / "a" / "ckpt.corrupt-20").is_dir()                     # set aside, not deleted
    assert Checkpointer(tmp_path / "a" / "ckpt").all_steps() == [25, 30]
    log = loop.read_log(tmp_path / "a" / "log.jsonl")
    assert list(log["step"]) == list(range(30))
    np.testing.assert_array_equal(log["loss"], loop.read_log(tmp_path / "ref" / "log.jsonl")["loss"])


def test_flipped_byte_is_caught_by_the_recorded_sha256(tmp_path):
    """Orbax restores a flipped data byte without an error; the SHA-256s recorded at save time catch it."""
    state = {"w": jnp.asarray(np.random.default_rng(1).standard_normal((64, 32)), jnp.float32),
             "b": jnp.arange(8.0)}
    ckpt = Checkpointer(tmp_path / "ckpt")
    ckpt.save(5, state)
    ckpt.wait()
    recorded = json.loads((tmp_path / "ckpt" / "5" / SUMS_FILE).read_text())
    assert recorded == file_sums(tmp_path / "ckpt" / "5") and any("/d/" in name for name in recorded)
    _corrupt(tmp_path / "ckpt" / "5", "flipped byte")
    with pytest.raises(CorruptCheckpointError, match=rf"1 of {len(recorded)} files missing or changed since the "
                                                     r"save, by their SHA-256 \(first: default/.*d/\w+\)\)\. Delete"):
        Checkpointer(tmp_path / "ckpt").restore(state)
    (tmp_path / "ckpt" / "5" / SUMS_FILE).unlink()      # without the record (an older checkpoint): unverified
    restored = Checkpointer(tmp_path / "ckpt").restore(state)
    assert not np.array_equal(restored["w"], state["w"]) and np.array_equal(restored["b"], state["b"])


def test_unreadable_only_checkpoint_names_the_one_directory(tmp_path):
    ckpt = Checkpointer(tmp_path / "ckpt")
    ckpt.save(5, {"w": jnp.ones((4, 2))})
    ckpt.wait()
    _corrupt(tmp_path / "ckpt" / "5", "garbled _METADATA")
    with pytest.raises(CorruptCheckpointError, match=r"cannot be read: it is corrupt") as info:
        Checkpointer(tmp_path / "ckpt").restore({"w": jnp.zeros((4, 2))})
    message = str(info.value)
    assert f"Delete that one directory, {tmp_path / 'ckpt' / '5'}," in message
    assert "does not match" not in message and "--workdir" not in message
    state = Counter(step=jnp.zeros((), jnp.int32), x=jnp.zeros(()))
    with pytest.raises(CorruptCheckpointError):       # no readable fallback: refuse, move nothing
        loop.run_loop(_step_nan_at(-1), state, 1.0, num_steps=10, ckpt=Checkpointer(tmp_path / "ckpt"),
                      log_path=tmp_path / "log.jsonl", chunk=5, ckpt_every=5, progress=False)
    assert (tmp_path / "ckpt" / "5").is_dir()
    ckpt = Checkpointer(tmp_path / "ckpt")
    ckpt.save(10, {"w": jnp.ones((4, 2))})
    ckpt.wait()
    _corrupt(tmp_path / "ckpt" / "10", "garbled _METADATA")
    with pytest.raises(CorruptCheckpointError, match=r"steps 10, 5 are corrupt .*Delete those directories "
                                                     r"\(.*ckpt/10, .*ckpt/5\) and rerun: the run starts again"):
        loop.run_loop(_step_nan_at(-1), state, 1.0, num_steps=10, ckpt=Checkpointer(tmp_path / "ckpt"),
                      log_path=tmp_path / "log.jsonl", chunk=5, ckpt_every=5, progress=False)
    assert (tmp_path / "ckpt" / "5").is_dir() and (tmp_path / "ckpt" / "10").is_dir()


@pytest.mark.minver
def test_leftover_temporary_checkpoint_directories_are_removed(tmp_path):
    ckpt = Checkpointer(tmp_path / "ckpt")
    ckpt.save(5, {"w": jnp.ones((4, 2))})
    ckpt.close()
    leftover = tmp_path / "ckpt" / "10.orbax-checkpoint-tmp"       # a save killed before its rename
    (leftover / "default").mkdir(parents=True)
    (leftover / "default" / "_METADATA").write_text("{")
    ckpt = Checkpointer(tmp_path / "ckpt")
    ckpt.wait()
    assert not leftover.exists() and ckpt.all_steps() == [5]


def test_log_truncation_is_atomic(tmp_path, monkeypatch):
    """A kill while the resumed run rewrites the log leaves the old log whole, never a half-written one."""
    path = tmp_path / "log.jsonl"
    path.write_text("".join(f'{{"step": {i}, "loss": {i}}}\n' for i in range(20)))
    before = path.read_text()
    with monkeypatch.context() as m:       # killed after the new text is written, before it replaces the log
        m.setattr(files.os, "fsync", lambda fd: (_ for _ in ()).throw(KeyboardInterrupt))
        with pytest.raises(KeyboardInterrupt):
            loop._truncate_log(path, 15)
    assert path.read_text() == before and [p.name for p in tmp_path.iterdir()] == ["log.jsonl"]
    loop._truncate_log(path, 15)
    assert list(loop.read_log(path)["step"]) == list(range(15))


def _round_with_sparse_metric(bad_step=-1):
    """A 5-iteration round (as DMD's) whose 'every' metric has 5 entries and 'first' one, from iteration 0."""
    def step(state, consts):
        steps = state.step + jnp.arange(5)
        first = jnp.where(state.step == bad_step, jnp.inf, 100.0 + state.step)
        return Counter(step=state.step + 5, x=state.x + 5), {"every": steps.astype(jnp.float32), "first": first[None]}
    return step


def test_metric_of_one_per_round_is_logged_at_its_iteration(tmp_path):
    state = Counter(step=jnp.zeros((), jnp.int32), x=jnp.zeros(()))
    loop.run_loop(_round_with_sparse_metric(), state, 0.0, num_steps=30, ckpt=Checkpointer(tmp_path / "ckpt"),
                  log_path=tmp_path / "log.jsonl", chunk=10, ckpt_every=15, steps_per_call=5, progress=False)
    log = loop.read_log(tmp_path / "log.jsonl")
    np.testing.assert_array_equal(log["every"], np.arange(30))
    steps, first = loop.read_series(tmp_path / "log.jsonl", "first")
    np.testing.assert_array_equal(steps, np.arange(0, 30, 5))
    np.testing.assert_array_equal(first, 100.0 + steps)
    assert np.isnan(log["first"][1:5]).all()
    with pytest.raises(KeyError, match="no metric 'dm_loss'.*'every', 'first'"):
        loop.read_series(tmp_path / "log.jsonl", "dm_loss")
    with pytest.raises(FloatingPointError, match=r"'first' became inf at step 45"):
        loop.run_loop(_round_with_sparse_metric(45), state, 0.0, num_steps=60, ckpt=Checkpointer(tmp_path / "ckpt"),
                      log_path=tmp_path / "log.jsonl", chunk=10, ckpt_every=15, steps_per_call=5, progress=False)


def test_callback_at_the_multiples_of_each_interval_and_a_stop(tmp_path):
    """Several intervals: the callback runs at the start and at every multiple of any of them (no other chunk
    boundaries); True stops there, saved, and a rerun stays stopped."""
    calls = []
    callback = lambda step, state: calls.append((step, float(state.x))) or step == 12
    state = Counter(step=jnp.zeros((), jnp.int32), x=jnp.zeros(()))
    ckpt = Checkpointer(tmp_path / "ckpt")
    state = loop.run_loop(_step_nan_at(-1), state, 1.0, num_steps=20, ckpt=ckpt, log_path=tmp_path / "log.jsonl",
                          chunk=20, ckpt_every=0, progress=False, callback=callback, callback_every=(4, 6))
    assert calls == [(0, 0.0), (4, 4.0), (6, 6.0), (8, 8.0), (12, 12.0)] and int(state.step) == 12
    assert ckpt.latest_step() == 12
    with pytest.raises(ValueError, match="callback_every"):
        loop.run_loop(_step_nan_at(-1), state, 1.0, num_steps=20, ckpt=ckpt, log_path=tmp_path / "log.jsonl",
                      steps_per_call=2, chunk=20, ckpt_every=0, progress=False, callback=callback,
                      callback_every=(4, 5))


def test_boundaries_must_fit_steps_per_call(tmp_path):
    state = Counter(step=jnp.zeros((), jnp.int32), x=jnp.zeros(()))
    with pytest.raises(ValueError, match="multiple of 5"):
        loop.run_loop(_step_nan_at(-1), state, 1.0, num_steps=12, ckpt=Checkpointer(tmp_path / "c"),
                      log_path=tmp_path / "l", chunk=5, ckpt_every=5, steps_per_call=5, progress=False)
    with pytest.raises(ValueError, match="positive"):
        loop.run_loop(_step_nan_at(-1), state, 1.0, num_steps=0, ckpt=Checkpointer(tmp_path / "c"),
                      log_path=tmp_path / "l", progress=False)


def test_restore_into_mismatched_model_is_a_clear_error(tmp_path):
    ckpt = Checkpointer(tmp_path / "ckpt")
    ckpt.save(3, {"w": jnp.ones((4, 2))})
    ckpt.wait()
    np.testing.assert_array_equal(ckpt.restore({"w": jnp.zeros((4, 2))})["w"], np.ones((4, 2)))
    with pytest.raises(CheckpointError, match="does not match") as info:
        ckpt.restore({"w": jnp.zeros((5, 2))})
    assert not isinstance(info.value, CorruptCheckpointError)
    with pytest.raises(CheckpointError, match="does not match"):
        ckpt.restore({"v": jnp.zeros((4, 2))})
    with pytest.raises(CheckpointError, match="no checkpoint at step 7"):
        ckpt.restore({"w": jnp.zeros((4, 2))}, step=7)


def test_snapshots_are_kept_latest_rotates(tmp_path):
    ckpt = Checkpointer(tmp_path / "ckpt", keep_steps=(2,))
    for s in (1, 2, 3, 4):
        ckpt.save(s, {"w": jnp.full((), s)})
    ckpt.wait()
    assert ckpt.all_steps() == [2, 3, 4]     # the snapshot and the latest two


def test_config_mismatch_names_the_keys(tmp_path):
    check_config(tmp_path / "config.json", {"a": 1, "b": (1, 2)})
    check_config(tmp_path / "config.json", {"a": 1, "b": [1, 2]})     # same config: fine
    with pytest.raises(CheckpointError, match="differs in: b"):
        check_config(tmp_path / "config.json", {"a": 1, "b": [1, 3]})


def test_a_run_written_with_a_removed_config_field_still_resumes(tmp_path):
    """teacher.snapshots was removed (the teacher keeps Config.snapshots()): an older run directory resumes, but
    any other difference in that section is still refused."""
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"teacher": {"steps": 8, "snapshots": [4, 8]}, "distill_snapshots": [4, 8]}))
    check_config(path, {"teacher": {"steps": 8}, "distill_snapshots": [4, 8]})
    with pytest.raises(CheckpointError, match="differs in: teacher"):
        check_config(path, {"teacher": {"steps": 16}, "distill_snapshots": [4, 8]})


_RESUME_CORRUPT = """
import sys, warnings
import jax.numpy as jnp, numpy as np
sys.path.insert(0, {tests!r})
from test_loop import Counter, _corrupt, _step_array
from pathlib import Path
from dmdjax import loop
from dmdjax.checkpoint import Checkpointer
warnings.simplefilter("default")
noise = np.random.default_rng(0).standard_normal((64, 32)).astype(np.float32)
fresh = lambda: Counter(step=jnp.zeros((), jnp.int32), x=jnp.asarray(noise))      # run_loop donates the state
run = lambda n, d: loop.run_loop(_step_array, fresh(), jnp.asarray(noise), num_steps=n,
                                 ckpt=Checkpointer(d / "ckpt"), log_path=d / "log.jsonl", chunk=5, ckpt_every=5,
                                 progress=False)
for how in ("truncated data", "garbled _METADATA", "flipped byte"):
    d = Path({tmp!r}) / how.replace(" ", "_")
    run(20, d)
    _corrupt(d / "ckpt" / "20", how)
    run(30, d)
"""


def test_corrupt_checkpoint_resume_prints_one_warning_line_and_no_traceback(tmp_path):
    """A user resuming after corruption sees one warning per corrupt step, not Orbax's or asyncio's tracebacks."""
    script = _RESUME_CORRUPT.format(tests=str(Path(__file__).parent), tmp=str(tmp_path))
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert "Traceback" not in out.stderr and "Event loop is closed" not in out.stderr, out.stderr[-3000:]
    warned = [line for line in lines if "checkpoint step 20 is corrupt" in line]
    assert len(warned) == 3 and all("resuming from step 15 instead" in line for line in warned), out.stderr
    assert len(lines) <= 6, out.stderr     # each warning: its line and the source line Python shows below it
