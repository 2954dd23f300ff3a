"""The paper's MNIST ADM on a GPU or TPU: compile times, step times, throughput, peak memory and model-FLOP
utilisation (MFU) of every program a run compiles, in float32 and bfloat16, at batch 32 and 128.

    python benchmarks/accelerator.py --out=accelerator.json            # on one GPU/TPU; budget 420 s
    python benchmarks/accelerator.py --net=tiny --batches=2 --phi_n=4 --repeats=2     # smoke run on CPU

Programs (each the experiment's own function, jitted on one device with the state donated as the experiments do):
    teacher     `teacher.make_step`: EDM loss, gradient, Adam update                      (images/s: batch / step)
    generator   `distill.make_iteration(update_generator=True)`: the DMD iteration that updates G (1 of 5)
    fake        `distill.make_iteration(update_generator=False)`: the fake-score iteration (4 of 5)
    phi8        `sampling.phi_k(K=8)` on `--phi_n` noises in chunks of `--phi_batch` (15 network evaluations)
For each: `compile_s` (lower + compile), `seconds` (median of --repeats calls after one warm-up call), `flops`
(XLA's own cost analysis of the compiled program), `tflops_per_s` and `mfu` = achieved / the device's peak
(`PEAK_TFLOPS`: dense tensor-core / MXU peak for the dtype; float32 on NVIDIA uses the TF32 peak, since XLA's
default precision lets convolutions and matmuls use TF32). `peak_memory_gib`: the device's peak bytes in use
since the process started (cumulative: read it per row as "so far"). A row whose start would pass --budget_s is
skipped (recorded as such), so the whole run stays within budget. JSON to stdout and --out.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time

NETS = ("paper", "small", "tiny")
PROGRAMS = ("teacher", "generator", "fake", "phi8")
# device_kind substring (lower case) -> peak dense TFLOP/s for (bfloat16, float32), vendor data sheets.
PEAK_TFLOPS = {
    "h200": (989.0, 494.0), "h100": (989.0, 494.0), "a100": (312.0, 156.0), "l4": (121.0, 60.0),
    "a10g": (70.0, 35.0), "v100": (125.0, 15.7), "t4": (65.0, 8.1), "l40s": (362.0, 183.0),
    "tpu v6": (918.0, 918.0), "tpu v5p": (459.0, 459.0), "tpu v5": (197.0, 197.0), "tpu v4": (275.0, 275.0),
    "tpu v3": (123.0, 123.0), "tpu v2": (45.0, 45.0),
}


def net_config(name: str) -> dict:
    from dmdjax.nets.adm import mnist_config
    if name == "paper":
        return mnist_config()
    small = dict(img_resolution=32, in_channels=1, label_dim=0, model_channels=32, channel_mult=[1, 2, 2],
                 channel_mult_emb=4, num_blocks=2, attn_resolutions=[8], dropout=0.0)
    if name == "small":
        return small
    if name == "tiny":
        return {**small, "img_resolution": 8, "model_channels": 8, "channel_mult": [1, 2], "num_blocks": 1,
                "attn_resolutions": [4]}
    raise ValueError(f"unknown net {name!r}; choose one of {', '.join(NETS)}")


def peak_tflops(device_kind: str, dtype: str) -> float | None:
    """The device's peak dense TFLOP/s for `dtype` from `PEAK_TFLOPS`, or None for an unknown device (CPU)."""
    kind = device_kind.lower()
    for key, (bf16, f32) in PEAK_TFLOPS.items():
        if key in kind:
            return bf16 if dtype == "bfloat16" else f32
    return None


def _flops(compiled) -> float | None:
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return float(cost["flops"]) if cost and "flops" in cost else None


def _peak_memory_gib(device) -> float | None:
    stats = device.memory_stats() if hasattr(device, "memory_stats") else None
    return stats["peak_bytes_in_use"] / 2 ** 30 if stats and "peak_bytes_in_use" in stats else None


def measure(fn, args: tuple, calls: int, repeats: int, items: int, peak: float | None, device) -> dict:
    """Compile `fn` (jitted) for `args`, then time `calls` consecutive calls per measurement (a call returns the
    next state as its first output when `fn` threads one), `repeats` times after one warm-up."""
    import jax
    t0 = time.perf_counter()
    compiled = fn.lower(*args).compile()
    compile_s = time.perf_counter() - t0
    flops = _flops(compiled)
    state, rest = args[0], args[1:]

    def once(state):
        out = None
        for _ in range(calls):
            out = compiled(state, *rest)
            state = out[0] if isinstance(out, tuple) else state
        jax.block_until_ready(out)
        return state

    state = once(state)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        state = once(state)
        times.append(time.perf_counter() - t0)
    seconds = statistics.median(times)
    achieved = None if flops is None else calls * flops / seconds / 1e12
    return {"compile_s": compile_s, "seconds": seconds, "times_s": times, "flops": flops,
            "items_per_s": items / seconds, "tflops_per_s": achieved,
            "mfu": None if achieved is None or not peak else achieved / peak,
            "peak_memory_gib": _peak_memory_gib(device)}


def run_row(net: str, program: str, batch: int, dtype: str, args) -> dict:
    import jax
    import jax.numpy as jnp

    from dmdjax import configs, distill, sampling, teacher
    from dmdjax.nets.adm import adm_denoiser, num_params

    device = jax.devices()[0]
    peak = args.peak_tflops or peak_tflops(device.device_kind, dtype)
    cfg = net_config(net)
    shape = (cfg["img_resolution"], cfg["img_resolution"], cfg["in_channels"])
    model = adm_denoiser(cfg, dtype=jnp.dtype(dtype))
    params = teacher.init_params(model, jax.random.PRNGKey(1), jnp.zeros((2,) + shape))
    paper = configs.mnist("paper")
    sample = lambda key, n, consts: (jax.random.normal(key, (n,) + shape), None)
    row = {"net": net, "program": program, "batch": batch, "dtype": dtype, "params": num_params(params)}
    if program == "teacher":
        tcfg = configs.override(paper, **{"teacher.batch": batch}).teacher
        state = teacher.TrainState.create(params, tcfg.optimizer())
        fn = jax.jit(teacher.make_step(model, tcfg.optimizer(), sample, batch, jax.random.PRNGKey(2)),
                     donate_argnums=0)
        res = measure(fn, (state, None), 1, args.repeats, batch, peak, device)
    elif program in ("generator", "fake"):
        dcfg = configs.override(paper, **{"distill.batch": batch}).distill
        it = distill.make_iteration(model, dcfg, jax.random.PRNGKey(3), 0, shape)
        fn = jax.jit(lambda st, tp: it(st, distill.StepConsts(tp, {}), update_generator=(program == "generator")),
                     donate_argnums=0)
        state = distill.init_state(params, dcfg)
        res = measure(fn, (state, jax.tree.map(jnp.array, params)), 1, args.repeats, batch, peak, device)
    elif program == "phi8":
        chunk = min(args.phi_batch, args.phi_n)
        if args.phi_n % chunk:
            raise ValueError(f"--phi_n ({args.phi_n}) must be a multiple of --phi_batch ({chunk})")
        fn = jax.jit(lambda z, p: (z, sampling.phi_k(lambda x, s, y: model.apply({"params": p}, x, s, y), z, 8)))
        z = jax.random.normal(jax.random.PRNGKey(0), (chunk,) + shape)
        res = measure(fn, (z, params), args.phi_n // chunk, args.repeats, args.phi_n, peak, device)
        row.update(n=args.phi_n, chunk=chunk)
    else:
        raise ValueError(f"unknown program {program!r}; choose from {', '.join(PROGRAMS)}")
    return {**row, **res}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--net", default="paper", choices=NETS)
    parser.add_argument("--batches", default="32,128", help="comma-separated batch sizes")
    parser.add_argument("--dtypes", default="float32,bfloat16", help="network interior dtypes")
    parser.add_argument("--programs", default=",".join(PROGRAMS), help="comma-separated: " + ", ".join(PROGRAMS))
    parser.add_argument("--phi_n", type=int, default=1000, help="Phi_8 samples")
    parser.add_argument("--phi_batch", type=int, default=1000, help="Phi_8 chunk")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--budget_s", type=float, default=420.0, help="skip rows that would start after this")
    parser.add_argument("--peak_tflops", type=float, default=None, help="override the device's peak (MFU)")
    parser.add_argument("--out", default=None, help="also write the JSON here")
    args = parser.parse_args(argv)
    batches = [int(b) for b in args.batches.split(",") if b]
    dtypes = [d for d in args.dtypes.split(",") if d]
    programs = [p for p in args.programs.split(",") if p]
    bad = sorted(set(dtypes) - {"float32", "bfloat16"}) + sorted(set(programs) - set(PROGRAMS))
    if bad or args.repeats < 1 or not batches or min(batches) < 1 or args.phi_n < 1 or args.phi_batch < 1:
        parser.error(f"unknown dtype/program {bad}, or a count below 1")

    import jax
    start = time.perf_counter()
    device = jax.devices()[0]
    rows = []
    for batch in batches:
        for dtype in dtypes:
            for program in programs:
                if program == "phi8" and batch != batches[0]:
                    continue                 # Phi_8's cost depends on --phi_batch, not on the training batch
                if time.perf_counter() - start > args.budget_s:
                    rows.append({"net": args.net, "program": program, "batch": batch, "dtype": dtype,
                                 "skipped": f"over --budget_s={args.budget_s:g}"})
                    continue
                rows.append(run_row(args.net, program, batch, dtype, args))
                print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    out = {"device": f"{device.platform}: {device.device_kind}", "devices": jax.device_count(),
           "host": platform.node(), "jax": jax.__version__, "net": args.net, "repeats": args.repeats,
           "peak_tflops": {d: args.peak_tflops or peak_tflops(device.device_kind, d) for d in dtypes},
           "wall_s": time.perf_counter() - start, "rows": rows}
    text = json.dumps(out, indent=1)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    return out


if __name__ == "__main__":
    main()
