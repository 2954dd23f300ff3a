"""Data-parallel throughput: teacher steps and DMD iterations per second, in images/s, per device count.

    python benchmarks/throughput.py --preset=cpu --devices=1,2           # CPU: forced host devices
    python benchmarks/throughput.py --preset=paper --devices=1,2,4,8     # GPU/TPU: the first N real devices

Prints one JSON document. Each device count runs in its own process (on CPU, XLA_FLAGS
`--xla_force_host_platform_device_count=N` splits the host into N devices; on GPU/TPU the child uses the first N
devices). The step is the experiment's own jitted, sharded step (`teacher.make_step`, `distill.make_step` over a
`data` mesh) on the preset's network and global batch, with synthetic data of the right shape (throughput does
not depend on the pixels). Times are wall-clock medians over `--repeats` calls after one warm-up call (compilation
excluded). images/s = global batch / seconds per teacher step, and global batch / seconds per DMD iteration
(a DMD round is gen_every = 5 iterations, one with a generator update). Peak memory: the device's
`peak_bytes_in_use` where the backend reports it, else the process's peak RSS.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

CHILD = "_child"


def _child(preset: str, dataset: str, devices: int, repeats: int, bf16: bool) -> dict:
    import jax
    import jax.numpy as jnp

    from dmdjax import configs, distill, parallel, pipeline, teacher

    cfg = configs.toy.get_config(preset) if dataset == "toy" else configs.mnist(preset)
    if bf16:
        cfg = configs.override(cfg, compute_dtype="bfloat16")
    shape = (4,) if dataset == "toy" else (cfg.net_kwargs["img_resolution"],) * 2 + (1,)
    mesh = parallel.data_mesh(devices)
    model = pipeline.build_model(cfg, None)
    sample = lambda key, n, consts: (jax.random.normal(key, (n,) + shape), None)

    state = teacher.create_state(model, cfg.teacher, jax.random.PRNGKey(0), jnp.zeros((2,) + shape))
    state = parallel.replicate(state, mesh)
    t_step = jax.jit(teacher.make_step(model, cfg.teacher.optimizer(), sample, cfg.teacher.batch,
                                       jax.random.PRNGKey(1), mesh), donate_argnums=0)
    d_step = jax.jit(distill.make_step(model, cfg.distill, jax.random.PRNGKey(2), 0, shape, mesh), donate_argnums=0)
    dstate = parallel.replicate(distill.init_state(state.params, cfg.distill), mesh)
    tparams = distill.StepConsts(parallel.replicate(jax.tree.map(jnp.array, state.params), mesh), {})

    def timed(fn, st, *args):
        times = []
        for i in range(repeats + 1):
            t0 = time.perf_counter()
            st, m = fn(st, *args)
            jax.block_until_ready((st, m))
            if i:                       # the first call compiles
                times.append(time.perf_counter() - t0)
        return statistics.median(times), times

    t_teacher, all_t = timed(t_step, state, None)
    t_round, all_d = timed(d_step, dstate, tparams)
    stats = jax.devices()[0].memory_stats() or {}
    peak = stats.get("peak_bytes_in_use")
    return {
        "devices": devices, "device_kind": jax.devices()[0].device_kind, "platform": jax.default_backend(),
        "teacher_batch": cfg.teacher.batch, "distill_batch": cfg.distill.batch,
        "teacher_step_s": t_teacher, "teacher_images_per_s": cfg.teacher.batch / t_teacher,
        "dmd_iteration_s": t_round / cfg.distill.gen_every,
        "dmd_images_per_s": cfg.distill.batch * cfg.distill.gen_every / t_round,
        "teacher_step_times_s": all_t, "dmd_round_times_s": all_d,
        "peak_device_bytes": peak,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=("cpu", "paper"), default="cpu")
    parser.add_argument("--dataset", choices=("mnist", "toy"), default="mnist",
                        help="mnist: the preset's ADM at batch 32; toy: the MLP at batch 512")
    parser.add_argument("--devices", default="1,2", help="comma-separated device counts")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--bf16", action="store_true", help="network interior in bfloat16")
    args = parser.parse_args(argv)
    counts = [int(c) for c in args.devices.split(",") if c.strip()]
    results = []
    for n in counts:
        env = dict(os.environ)
        if env.get("JAX_PLATFORMS", "cpu") == "cpu" and not _has_accelerator():
            env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={n}").strip()
        cmd = [sys.executable, __file__, CHILD, args.preset, args.dataset, str(n), str(args.repeats),
               str(int(args.bf16))]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if proc.returncode:
            raise SystemExit(f"device count {n} failed:\n{proc.stderr[-3000:]}")
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    out = {"preset": args.preset, "dataset": args.dataset, "bf16": args.bf16, "repeats": args.repeats,
           "machine": f"{platform.node()} ({os.cpu_count()} CPUs)", "results": results}
    print(json.dumps(out, indent=1))
    return out


def _has_accelerator() -> bool:
    """Whether jax sees a GPU/TPU (checked in a subprocess so this process never initialises a backend)."""
    code = "import jax; print(jax.default_backend())"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    return proc.stdout.strip() not in ("", "cpu")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == CHILD:
        preset, dataset, n, repeats, bf16 = sys.argv[2:7]
        print(json.dumps(_child(preset, dataset, int(n), int(repeats), bool(int(bf16)))))
    else:
        main()
