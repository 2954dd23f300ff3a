"""Multi-host, exercised: the toy experiment with `--distributed` in two local processes (jax.distributed, gloo
CPU collectives, two CPU devices each: one 4-device mesh across the processes), killed (SIGKILL, both processes)
in the middle of teacher training and rerun. It must resume from the last checkpoint and end where one process
with four devices ends, with every file of the run directory written by process 0 (the checkpoints by Orbax's
multi-process save, each process its share) and nothing printed by process 1.

Two one-process references, four devices each, run beside it:
- with `--distributed` as a single process (`--num_processes=1`): its all-reduces are gloo's too, and the
  two-process result must equal it BITWISE (samples, logs, every number of results.json but wall times);
- without `--distributed` (XLA:CPU's in-process all-reduce): equal to float32 tolerance (rtol 1e-4, atol 1e-5,
  as tests/test_parallel.py), not bitwise, because the two all-reduces sum the four devices' partial gradients
  in different orders (float32 addition is not associative): the teacher's logged losses (themselves means
  over the sharded batch) differ by up to 2e-7 relative from the first step on.
"""
import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
TIMEOUT_S = 300          # per launch (both processes), generous for a contended 2-core machine

SMALL = {"teacher.chunk": 10, "teacher.ckpt_every": 20, "distill.chunk": 10, "distill.ckpt_every": 10,
         "net_kwargs": {"features": (32, 32)}, "record.eval_every": 10, "record.n": 32, "record.ci_resamples": 10,
         "ci_resamples": 20}
TINY = ["--dataset=chessboard", "--teacher_steps=40", "--distill_iterations=20", "--eval_n=64", "--quiet"]

# One process of a run: the toy experiment's main with the small config. It logs, outside the run directory
# (in `side`), every file-system change it makes under the run directory (Python's audit events: opens for
# writing, renames, removals, new directories) and every training chunk it starts; it reports what JAX saw (the
# processes, the devices, the mesh of the trained state). With `pause_at` it stops before the teacher chunk that
# starts at that step and waits to be killed.
WORKER = textwrap.dedent(f"""
    import json, os, sys, time
    spec = json.loads(sys.argv[1])
    work, side, pid = os.path.realpath(spec["workdir"]), spec["side"], spec["process_id"]
    tag = "single" if pid is None else str(pid)
    writes = open(os.path.join(side, f"writes_{{tag}}.jsonl"), "a", buffering=1)
    WRITE_EVENTS = ("os.rename", "os.replace", "os.remove", "os.unlink", "os.rmdir", "os.mkdir", "shutil.rmtree",
                    "shutil.move", "shutil.copyfile", "os.truncate", "os.symlink", "os.link")

    def audit(event, args):
        if event == "open":
            path, mode, flags = args
            if not isinstance(path, (str, bytes)) or not (
                    any(c in (mode or "") for c in "wax+") or (flags or 0) & (os.O_WRONLY | os.O_RDWR | os.O_CREAT)):
                return
        elif event in WRITE_EVENTS:
            path = args[0]
            if not isinstance(path, (str, bytes, os.PathLike)):
                return
        else:
            return
        path = os.path.abspath(os.fsdecode(path))
        if path == work or path.startswith(work + os.sep):
            writes.write(json.dumps([event, os.path.relpath(path, work)]) + "\\n")
    sys.addaudithook(audit)

    from dmdjax import configs, loop
    from experiments import toy
    original = configs.toy.get_config
    configs.toy.get_config = lambda preset="cpu", dataset="chessboard": configs.override(original(preset, dataset),
                                                                                       **{SMALL!r})

    chunks, states = [], []
    real_chunk, real_loop = loop._run_chunk, loop.run_loop

    def chunk(step_fn, state, consts, length):
        kind, step = ("distill" if hasattr(state, "gen") else "teacher"), int(state.step)
        if kind == "teacher" and step == spec.get("pause_at"):
            open(os.path.join(side, f"paused_{{tag}}"), "w").close()
            time.sleep(3600)
        chunks.append((kind, step, length))
        return real_chunk(step_fn, state, consts, length)

    def run_loop(*args, **kwargs):
        state = real_loop(*args, **kwargs)
        import jax
        leaf = jax.tree.leaves(state.params if hasattr(state, "params") else state.gen.params)[0]
        states.append({{"devices": len(leaf.sharding.device_set), "fully_addressable": leaf.is_fully_addressable,
                       "addressable_devices": len(leaf.addressable_shards)}})
        return state
    loop._run_chunk, loop.run_loop = chunk, run_loop

    flags = {TINY!r} + ["--workdir=" + spec["workdir"], "--compile_cache=" + spec["cache"]]
    if spec["num_processes"]:
        flags += ["--distributed", "--coordinator_address=localhost:%d" % spec["port"],
                  "--num_processes=%d" % spec["num_processes"], "--process_id=%d" % (pid or 0)]
    summary = toy.main(flags)
    import jax
    report = {{"process_index": jax.process_index(), "process_count": jax.process_count(),
              "device_count": jax.device_count(), "local_device_count": jax.local_device_count(),
              "chunks": chunks, "states": states, "table": summary["table"], "table_ci": summary["table_ci"]}}
    with open(os.path.join(side, f"report_{{tag}}.json"), "w") as f:
        json.dump(report, f)
""")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def env(devices: int) -> dict:
    """A child with `devices` CPU devices, conftest's fast-compile XLA flags, the CPU only."""
    flags = os.environ.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={devices}"
    return dict(os.environ, XLA_FLAGS=flags.strip(), JAX_PLATFORMS="cpu", PYTHONPATH=str(REPO))


def tail(path: Path, n: int = 2500) -> str:
    return path.read_text(errors="replace")[-n:] if path.exists() else "(none)"


class Launch:
    """The processes of one run: `processes` 2 (two, two devices each, --distributed) or 1 (one, four devices;
    with `distributed` as a one-process jax.distributed run)."""

    def __init__(self, workdir: Path, side: Path, cache: Path, processes: int, distributed: bool = True,
                 pause_at=None):
        side.mkdir(parents=True, exist_ok=True)
        self.side, self.procs, port = side, {}, free_port()
        for pid in ([None] if processes == 1 else range(processes)):
            tag = "single" if pid is None else str(pid)
            spec = {"workdir": str(workdir), "side": str(side), "process_id": pid, "port": port,
                    "num_processes": processes if distributed else 0, "pause_at": pause_at, "cache": str(cache)}
            out, err = open(side / f"stdout_{tag}", "w"), open(side / f"stderr_{tag}", "w")
            self.procs[tag] = subprocess.Popen([sys.executable, "-c", WORKER, json.dumps(spec)], cwd=REPO,
                                               env=env(4 if pid is None else 2), stdout=out, stderr=err)
            out.close()
            err.close()

    def failure(self, what: str) -> str:
        lines = [what]
        for tag, p in self.procs.items():
            lines.append(f"--- process {tag}: exit status {p.poll()}; stderr tail:\n{tail(self.side / f'stderr_{tag}')}")
        return "\n".join(lines)

    def kill(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGKILL)
        for p in self.procs.values():
            p.wait()

    def wait(self, until=None, timeout: float = TIMEOUT_S) -> None:
        """Until every process exits with status 0 (or `until()` holds, with every process still running)."""
        deadline = time.monotonic() + timeout
        try:
            while True:
                codes = [p.poll() for p in self.procs.values()]
                if until is not None and until():
                    return
                if any(c not in (None, 0) for c in codes):
                    pytest.fail(self.failure("a process failed"))
                if until is not None and any(c is not None for c in codes):
                    pytest.fail(self.failure("a process ended before it paused"))
                if until is None and all(c == 0 for c in codes):
                    return
                if time.monotonic() > deadline:
                    pytest.fail(self.failure(f"timed out after {timeout:.0f} s"))
                time.sleep(0.2)
        except BaseException:
            self.kill()
            raise

    def report(self, tag: str) -> dict:
        return json.loads((self.side / f"report_{tag}.json").read_text())

    def writes(self, tag: str) -> list:
        path = self.side / f"writes_{tag}.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def outside_checkpoints(writes: list) -> list:
    """The writes that are neither Orbax's share of a checkpoint (`*/ckpt/...`) nor `cli.check_workdir`'s probe
    (every process checks that it can write the run directory, with a file it removes at once)."""
    return [w for w in writes if "ckpt" not in Path(w[1]).parts
            and not Path(w[1]).name.startswith(".dmdjax-write-test-")]


def run_files(workdir: Path) -> set:
    """The run directory's files, without Orbax's checkpoint internals, TensorBoard event files (their names
    hold host, pid and time) and the record's G files (how many are pruned depends on when an asynchronous save
    finished)."""
    return {str(p.relative_to(workdir)) for p in workdir.rglob("*") if p.is_file()
            and "ckpt" not in p.relative_to(workdir).parts and "record_g" not in p.parts
            and not p.name.startswith("events.out.tfevents")}


def close(a, b, what: str) -> None:
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5, err_msg=what)


def numbers(result: dict) -> dict:
    """A student's results.json without its times."""
    return {k: v for k, v in result.items() if not (k.endswith("_s") or k.endswith("wall_s"))
            and k != "convergence"} | {"convergence": {k: v for k, v in result["convergence"].items()
                                                      if not k.endswith("_s")}}


def log(path: Path, drop=("eval_s",)) -> list:
    return [{k: v for k, v in json.loads(line).items() if k not in drop} for line in path.read_text().splitlines()]


@pytest.fixture
def launches():
    """Every launch of a test; whatever still runs at its end (a failed test) is killed."""
    started = []
    yield started
    for launch in started:
        launch.kill()


@pytest.mark.slow
def test_two_processes_match_one_process_and_resume_after_kill(tmp_path, launches):
    t0 = time.monotonic()
    cache = tmp_path / "jax_cache"     # the persistent compilation cache (its slow compiles), shared by the launches
    gloo_dir, plain_dir, two_dir = tmp_path / "one_gloo", tmp_path / "one_plain", tmp_path / "two"

    # The one-process references (started first; they run beside the two-process launches).
    gloo = Launch(gloo_dir, tmp_path / "side_gloo", cache, 1, distributed=True)
    plain = Launch(plain_dir, tmp_path / "side_plain", cache, 1, distributed=False)
    launches += [gloo, plain]

    # Two processes: killed while paused before the teacher's chunk 30..40 (checkpoint 20 is saved).
    killed = Launch(two_dir, tmp_path / "side_killed", cache, 2, pause_at=30)
    launches.append(killed)
    paused = lambda: all((killed.side / f"paused_{t}").exists() for t in "01") and (two_dir / "teacher/ckpt/20").is_dir()
    killed.wait(until=paused)
    killed.kill()
    assert not (two_dir / "results.json").exists() and not (two_dir / "teacher/ckpt/40").exists()

    # Rerun both processes: resumes from step 20 and finishes.
    resumed = Launch(two_dir, tmp_path / "side_resumed", cache, 2)
    launches.append(resumed)
    resumed.wait()
    gloo.wait()
    plain.wait()
    seconds = time.monotonic() - t0

    # A real two-process run: each process saw 2 of the mesh's 4 devices, the trained states span both processes.
    for ref in (gloo, plain):
        r = ref.report("single")
        assert (r["process_count"], r["device_count"]) == (1, 4)
        assert r["states"] and all(s == {"devices": 4, "fully_addressable": True, "addressable_devices": 4}
                                   for s in r["states"])
    for tag in "01":
        r = resumed.report(tag)
        assert (r["process_index"], r["process_count"], r["device_count"], r["local_device_count"]) == (int(tag), 2, 4, 2)
        assert r["states"] and all(s == {"devices": 4, "fully_addressable": False, "addressable_devices": 2}
                                   for s in r["states"]), r["states"]
        # the rerun resumed the teacher at its last checkpoint (20), ran its 20 remaining steps, then distilled
        teacher = [c for c in r["chunks"] if c[0] == "teacher"]
        assert teacher[0][1] == 20 and sum(c[2] for c in teacher) == 20, r["chunks"]
        assert sum(5 * c[2] for c in r["chunks"] if c[0] == "distill") == 20
        assert r["table_ci"] == resumed.report("0")["table_ci"]    # every process returns the same summary

    # The killed and resumed two-process run equals the uninterrupted one-process gloo run bitwise.
    result = lambda d: json.loads((d / "results.json").read_text())["snapshots"]["40"]
    assert numbers(result(two_dir)) == numbers(result(gloo_dir))
    with np.load(gloo_dir / "student_40/samples.npz") as a, np.load(two_dir / "student_40/samples.npz") as b:
        assert sorted(a.files) == sorted(b.files)
        for name in a.files:                                        # z, Phi_1, Phi_8, Phi_32 (teacher), G, ...
            np.testing.assert_array_equal(b[name], a[name], err_msg=name)
    for path, n in (("teacher/metrics.jsonl", 40), ("student_40/metrics.jsonl", 20), ("student_40/record.jsonl", 3)):
        assert len(log(two_dir / path)) == n and log(two_dir / path) == log(gloo_dir / path), path

    # ... and the plain one-process run (XLA:CPU's all-reduce) to float32 tolerance.
    one, two = result(plain_dir), result(two_dir)
    for key in ("delta_e", "e_dt", "e_ot", "kappa", "delta_e_null", "delta_e_phi1", "final_dm_loss"):
        close(two[key], one[key], key)
    close(two["delta_e_ci"], one["delta_e_ci"], "delta_e_ci")
    with np.load(plain_dir / "student_40/samples.npz") as a, np.load(two_dir / "student_40/samples.npz") as b:
        for name in ("phi_1", "phi_8", "phi_32", "g"):
            close(b[name], a[name], name)
    for path in ("teacher/metrics.jsonl", "student_40/metrics.jsonl"):
        rows, ref_rows = log(two_dir / path), log(plain_dir / path)
        assert [r["step"] for r in rows] == [r["step"] for r in ref_rows]
        for key in ref_rows[0]:
            close([r.get(key, np.nan) for r in rows], [r.get(key, np.nan) for r in ref_rows], f"{path} {key}")
    assert not np.array_equal([r["loss"] for r in log(two_dir / "teacher/metrics.jsonl")],
                              [r["loss"] for r in log(plain_dir / "teacher/metrics.jsonl")]), \
        "bitwise equal to the plain run: the all-reduce orders now agree; make this test compare bitwise"

    # Files: the same set as the one-process runs', nothing temporary left; checkpoints at the same steps.
    # Process 1 wrote nothing in the run directory but its share of Orbax's checkpoints, and printed nothing.
    assert run_files(two_dir) == run_files(gloo_dir) == run_files(plain_dir)
    assert json.loads((two_dir / "config.json").read_text()) == json.loads((plain_dir / "config.json").read_text())
    assert not [p for p in two_dir.rglob("*") if p.name.endswith(".tmp") or "orbax-checkpoint-tmp" in p.name]
    for ckpt in ("teacher/ckpt", "student_40/ckpt"):
        steps = lambda d: sorted(p.name for p in (d / ckpt).iterdir())
        assert steps(two_dir) == steps(plain_dir), ckpt
    for launch in (killed, resumed):
        assert launch.writes("0"), "the audit of process 0 saw no writes"
        assert outside_checkpoints(launch.writes("1")) == [], outside_checkpoints(launch.writes("1"))[:10]
        assert not [w for w in launch.writes("1") if w[0] in ("os.rename", "os.replace")], "process 1 committed"
        gloo = re.compile(r"\[Gloo\] Rank \d+ is connected to |\d+ peer ranks\. Expected number of connected peer "
                          r"ranks is : \d+")   # gloo's C++ connection log, in pieces when its threads' writes interleave
        printed = [line for line in gloo.sub("", (launch.side / "stdout_1").read_text()).splitlines() if line.strip()]
        assert printed == [], f"process 1 printed: {printed[:5]}"
    out = (resumed.side / "stdout_0").read_text()
    assert "preset cpu" in out and '"delta_e"' in out
    renamed = [Path(w[1]) for w in resumed.writes("0") if w[0] in ("os.rename", "os.replace")]   # atomic writes
    for name in ("results.json", "student_40/results.json", "student_40/samples.npz"):
        name = Path(name)
        assert sum(p.parent == name.parent and p.name.startswith(name.name + ".") for p in renamed) == 1, name
    print(f"two-process test: {seconds:.0f} s wall")


def test_distributed_flags_need_distributed(tmp_path):
    """The coordinator flags without --distributed, or a process id out of range, are one-line config errors
    (before JAX starts)."""
    from dmdjax import cli
    from experiments import toy
    for flags, message in ((["--process_id=1"], "needs --distributed"),
                           (["--distributed", "--num_processes=2", "--process_id=2"], "--process_id=2 must be in 0 .. 1")):
        with pytest.raises(cli.ConfigError, match=message):
            toy.main(TINY + flags + [f"--workdir={tmp_path}"])


def test_one_process_helpers_are_identities():
    """`parallel`'s multi-host helpers in one process: fetch is device_get, agree returns its value, sync and
    the mesh rule do nothing."""
    import jax
    import jax.numpy as jnp

    from dmdjax import parallel
    mesh = parallel.data_mesh()
    x = parallel.replicate({"a": jnp.arange(4.0), "b": np.int32(3)}, mesh)
    assert x["a"].sharding.is_fully_replicated and len(x["a"].sharding.device_set) == jax.device_count()
    got = parallel.fetch(x)
    assert isinstance(got["a"], np.ndarray) and got["a"].tolist() == [0, 1, 2, 3] and int(got["b"]) == 3
    assert parallel.agree(True) is True and parallel.agree(7) == 7 and parallel.is_main()
    parallel.sync("nothing to wait for")
