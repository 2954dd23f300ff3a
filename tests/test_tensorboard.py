"""TensorBoard summaries: the loop's scalars and the student's figures are written as event files and read back."""
import jax.numpy as jnp
import numpy as np
import pytest

from dmdjax import loop, tensorboard
from dmdjax.checkpoint import Checkpointer
from test_loop import Counter, _step_nan_at


def test_loop_scalars_match_the_log_and_a_resume_purges_the_lost_steps(tmp_path):
    """An interrupted run wrote steps 10-14 after its last checkpoint (10); the resumed run writes them again:
    read back, every step appears once with the metrics.jsonl value."""
    state = Counter(step=jnp.zeros((), jnp.int32), x=jnp.zeros(()))
    with pytest.raises(FloatingPointError):
        loop.run_loop(_step_nan_at(17), state, 1.0, num_steps=20, ckpt=Checkpointer(tmp_path / "ckpt"),
                      log_path=tmp_path / "metrics.jsonl", chunk=5, ckpt_every=10, progress=False)
    first = tensorboard.read_events(tmp_path)["scalars"]["loss"]
    assert first[0].tolist() == list(range(15))
    loop.run_loop(_step_nan_at(-1), state, 2.0, num_steps=20, ckpt=Checkpointer(tmp_path / "ckpt"),
                  log_path=tmp_path / "metrics.jsonl", chunk=5, ckpt_every=10, progress=False)
    assert len(tensorboard.event_files(tmp_path)) == 2
    steps, values = tensorboard.read_events(tmp_path)["scalars"]["loss"]
    log = loop.read_log(tmp_path / "metrics.jsonl")
    assert steps.tolist() == list(range(20)) == log["step"].tolist()
    np.testing.assert_allclose(values, log["loss"])
    assert first[1][12] == 13 and values[12] == 16 and values[19] == 30   # 10-19: the resumed run (consts 2.0)


def test_no_writer_when_disabled(tmp_path):
    state = Counter(step=jnp.zeros((), jnp.int32), x=jnp.zeros(()))
    loop.run_loop(_step_nan_at(-1), state, 1.0, num_steps=5, ckpt=Checkpointer(tmp_path / "ckpt"),
                  log_path=tmp_path / "metrics.jsonl", chunk=5, ckpt_every=5, progress=False, tensorboard=False)
    assert tensorboard.event_files(tmp_path) == []


def test_pngs_round_trip(tmp_path):
    from dmdjax import figures
    fig, ax = figures.subplots(figsize=(2, 1.5))
    ax.plot([0, 1], [1, 0])
    figures.save(fig, tmp_path / "curve.png")
    tensorboard.write_pngs(tmp_path, [tmp_path / "curve.png"], step=7)
    images = tensorboard.read_events(tmp_path)["images"]
    assert list(images) == ["curve"] and images["curve"][0] == (7, (tmp_path / "curve.png").read_bytes())
