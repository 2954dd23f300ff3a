"""The training loop and checkpoints: NaN stops the run, checkpoints refuse a mismatched model, resume is exact."""
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dmdjax import loop
from dmdjax.checkpoint import CheckpointError, Checkpointer, check_config


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


def test_resume_continues_log_and_state(tmp_path):
    state = Counter(step=jnp.zeros((), jnp.int32), x=jnp.zeros(()))
    ckpt = Checkpointer(tmp_path / "ckpt")
    with pytest.raises(FloatingPointError):
        loop.run_loop(_step_nan_at(17), state, 1.0, num_steps=20, ckpt=ckpt, log_path=tmp_path / "log.jsonl",
                      chunk=5, ckpt_every=5, progress=False)
    final = loop.run_loop(_step_nan_at(-1), state, 1.0, num_steps=20, ckpt=Checkpointer(tmp_path / "ckpt"),
                          log_path=tmp_path / "log.jsonl", chunk=5, ckpt_every=5, progress=False)
    assert int(final.step) == 20 and float(final.x) == 20.0
    log = loop.read_log(tmp_path / "log.jsonl")
    assert list(log["step"]) == list(range(20))     # no duplicates from the failed attempt
    np.testing.assert_array_equal(log["loss"], np.arange(1, 21))


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
    with pytest.raises(CheckpointError, match="does not match"):
        ckpt.restore({"w": jnp.zeros((5, 2))})
    with pytest.raises(CheckpointError, match="no checkpoint at step 7"):
        ckpt.restore({"w": jnp.zeros((4, 2))}, step=7)


def test_snapshots_are_kept_latest_rotates(tmp_path):
    ckpt = Checkpointer(tmp_path / "ckpt", keep_steps=(2,))
    for s in (1, 2, 3, 4):
        ckpt.save(s, {"w": jnp.full((), s)})
    ckpt.wait()
    assert ckpt.all_steps() == [2, 4]


def test_config_mismatch_names_the_keys(tmp_path):
    check_config(tmp_path / "config.json", {"a": 1, "b": (1, 2)})
    check_config(tmp_path / "config.json", {"a": 1, "b": [1, 2]})     # same config: fine
    with pytest.raises(CheckpointError, match="differs in: b"):
        check_config(tmp_path / "config.json", {"a": 1, "b": [1, 3]})
