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


KILLED_RUN = """
import os, signal, sys, time
sys.path.insert(0, sys.argv[2])
from dmdjax import loop, pipeline
from dmdjax.data import load
from test_teacher_ema import _toy_ema_config
real = loop._run_chunk
def slow(step_fn, state, *args):
    if int(state.step) == 30:                 # after the checkpoint at 20 and its chunk, killed outright
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(0.3)
    return real(step_fn, state, *args)
loop._run_chunk = slow
save = pipeline.Checkpointer.save             # saves finish before the kill (Orbax writes asynchronously)
pipeline.Checkpointer.save = lambda self, *a: (save(self, *a), self.wait())
cfg = _toy_ema_config(**{"teacher.ckpt_every": 10})
pipeline.run(cfg, load(cfg), sys.argv[1], progress=False)
"""


@pytest.mark.slow
def test_a_kill_loses_at_most_one_chunk_of_wall_time_and_no_checkpointed_scalars(tmp_path):
    """kill -9 in the middle of teacher training: the wall time of the chunks before it (3 x >= 0.3 s) and
    TensorBoard's scalars up to the last checkpoint (step 30) survive; the resumed run adds its own."""
    import json
    import os
    import signal
    import subprocess
    import sys
    from pathlib import Path
    from dmdjax import pipeline
    from dmdjax.data import load
    from tests.test_teacher_ema import _toy_ema_config
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, "-c", KILLED_RUN, str(tmp_path), str(root / "tests")], timeout=300,
                          capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(root)))
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    walls = json.loads((tmp_path / "wall_s.json").read_text())
    assert walls["teacher"] >= 0.9                                  # the three chunks before the kill
    steps, _ = tensorboard.read_events(tmp_path / "teacher")["scalars"]["loss"]
    assert list(steps) == list(range(30))                           # up to the checkpoint at 30, flushed
    cfg = _toy_ema_config(**{"teacher.ckpt_every": 10})
    summary = pipeline.run(cfg, load(cfg), tmp_path, progress=False)
    assert summary["teacher_wall_s"] >= walls["teacher"] and summary["total_wall_s"] > walls["teacher"]
    steps, _ = tensorboard.read_events(tmp_path / "teacher")["scalars"]["loss"]
    assert list(steps) == list(range(40))
    # the student's convergence record as TensorBoard scalars, row for row (live copying curves)
    rows = [json.loads(line) for line in (tmp_path / "student_40" / "record.jsonl").read_text().splitlines()]
    scalars = tensorboard.read_events(tmp_path / "student_40")["scalars"]
    for tag, value in (("kappa", lambda r: r["kappa"]), ("delta_e", lambda r: r["delta_e"]),
                       ("kappa_low", lambda r: r["kappa_ci"][0]), ("covered", lambda r: r["covered"])):
        steps, values = scalars[f"record/{tag}"]
        assert list(steps) == [r["step"] for r in rows] and len(rows) >= 2, tag
        np.testing.assert_allclose(values, [value(r) for r in rows], rtol=1e-6, err_msg=tag)
