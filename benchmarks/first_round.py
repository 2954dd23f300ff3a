"""Time to the first step: an MNIST experiment from its command's start to its first teacher step and to its first
DMD round, with every XLA compilation (or load from JAX's persistent cache) as JAX itself times it.

    python benchmarks/first_round.py --mnist_dir=../shared/data/mnist                 # paper preset: cold, warm
    python benchmarks/first_round.py --preset=cpu --runs=cold --mnist_dir=../shared/data/mnist

Each run is `experiments/mnist_uncond.py --preset=P --teacher_steps=2 --snapshots=2 --distill_iterations=5` with a
tiny evaluation, in a fresh workdir, with JAX_LOG_COMPILES=1; it is stopped once `student_2/metrics.jsonl` has its
first row (one DMD round: a generator and four fake-score iterations). `--runs=cold,warm`: first with an empty
compilation cache, then the same command in a fresh workdir with the cache the first run filled (what a rerun or
a resume of the same config finds). Prints one JSON document: per run, seconds from the start to the first teacher
row and to the first DMD round, the child's peak RSS, and every compilation of 1 s or more (JAX's program name,
seconds, whether the persistent cache hit, seconds since the start when it finished).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
COMPILED = re.compile(r"Finished XLA compilation of jit\((.+?)\) in ([0-9.]+) sec")
CACHE_HIT = re.compile(r"Persistent compilation cache hit for '(.+?)'")


def first_round(preset: str, mnist_dir: str, workdir: Path, cache: Path, extra: list[str]) -> dict:
    """One run of the experiment, stopped after its first DMD round; see the module docstring."""
    cmd = [sys.executable, str(REPO / "experiments" / "mnist_uncond.py"), f"--preset={preset}", "--teacher_steps=2",
           "--snapshots=2", "--distill_iterations=5", f"--mnist_dir={mnist_dir}", "--quiet", "--eval_n=16",
           "--set", "record.n=16", "--set", "eval_batch=16", f"--compile_cache={cache}", f"--workdir={workdir}",
           *extra]
    marks: dict[str, float] = {}
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, env={**os.environ, "JAX_LOG_COMPILES": "1"}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)

    def watch():
        rows = {"first_teacher_row_s": workdir / "teacher" / "metrics.jsonl",
                "first_dmd_round_s": workdir / "student_2" / "metrics.jsonl"}
        while proc.poll() is None:
            for name, path in rows.items():
                if name not in marks and path.is_file() and path.read_text().strip():
                    marks[name] = time.perf_counter() - t0
            if "first_dmd_round_s" in marks:
                proc.terminate()
                return
            time.sleep(0.5)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    compiles, hit, tail = [], False, []
    for line in proc.stdout:
        tail = (tail + [line])[-20:]
        if CACHE_HIT.search(line):
            hit = True
        elif m := COMPILED.search(line):
            if float(m.group(2)) >= 1.0:
                compiles.append({"program": m.group(1), "seconds": float(m.group(2)), "cache_hit": hit,
                                 "at_s": round(time.perf_counter() - t0, 1)})
            hit = False
    _, status, usage = os.wait4(proc.pid, 0)
    watcher.join()
    if "first_dmd_round_s" not in marks:
        raise SystemExit(f"the run ended (status {status}) before its first DMD round:\n{''.join(tail)}")
    return {**{k: round(v, 1) for k, v in marks.items()}, "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),
            "compiles": compiles, "command": " ".join(cmd[1:])}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="paper", choices=["paper", "cpu"])
    parser.add_argument("--mnist_dir", required=True, help="the MNIST files (as for the experiments)")
    parser.add_argument("--runs", default="cold,warm", help="comma-separated: cold (empty cache), warm (the "
                        "cache the runs before filled); every run in a fresh workdir")
    parser.add_argument("--dir", default=None, help="where the workdirs and the cache go (default: a temporary "
                        "directory, removed afterwards)")
    args, extra = parser.parse_known_args(argv)
    runs = args.runs.split(",")
    if not runs or set(runs) - {"cold", "warm"} or runs[0] != "cold":
        parser.error("--runs must start with cold and name only cold and warm runs")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.dir or tmp)
        out = []
        for i, kind in enumerate(runs):
            cache = root / f"cache{sum(r == 'cold' for r in runs[:i + 1])}"
            if kind == "cold" and cache.exists():
                raise SystemExit(f"{cache} exists: a cold run needs an empty cache (choose another --dir)")
            cache.mkdir(parents=True, exist_ok=True)
            res = first_round(args.preset, args.mnist_dir, root / f"run{i}_{kind}", cache, extra)
            out.append({"run": kind, **res})
            print(json.dumps({k: res[k] for k in ("first_teacher_row_s", "first_dmd_round_s") if k in res}
                             | {"run": kind}), file=sys.stderr, flush=True)
    import jax
    doc = {"machine": f"{platform.node()} ({os.cpu_count()} CPUs, {platform.processor() or platform.machine()})",
           "jax": jax.__version__, "preset": args.preset, "date": time.strftime("%Y-%m-%d %H:%M"), "runs": out}
    print(json.dumps(doc, indent=1))
    return doc


if __name__ == "__main__":
    main()
