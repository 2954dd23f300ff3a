"""Where a step's time goes (issue 8): forward, teacher train step, DMD generator and fake-score iterations, and
Phi_8 sampling of the ADM at batch 32, 32x32x1, float32, on one device.

    python benchmarks/train_step.py                                  # small and paper ADM, every part
    python benchmarks/train_step.py --nets=small --parts=forward,teacher --repeats=10

Prints one JSON document. Networks (EDM DhariwalUNet, dropout 0, unconditional):
    small   C 32, mult [1, 2, 2], 2 blocks, attention at 8x8            (1,921,601 params)
    paper   the paper's MNIST ADM, C 64, mult [1, 2, 3, 4], 3 blocks, attention at 32, 16, 8   (31,118,593)
Parts (each the experiment's own function, jitted, with donated state where the experiment donates it):
    forward     D(x; sigma), one Denoiser evaluation
    teacher     `teacher.make_step`: EDM loss, its gradient and an Adam update
    generator   `distill.make_iteration(update_generator=True)`: G forward, the DM gradient (teacher + fake
                score), generator update, then the fake-score update on the same samples
    fake        `distill.make_iteration(update_generator=False)`: G forward and the fake-score update (4 of every 5
                DMD iterations)
    fake_dm     the same with `dm_loss_every_iteration`: also the DM loss for the curve (teacher + fake forwards)
    phi8        `sampling.phi_k(K=8)`: 15 Denoiser evaluations
    convs       a floor for the teacher step: every convolution of the network timed alone (forward, and forward
                plus its VJP to input and kernel), at its best, summed; `seconds` is forward + VJP, `forward_s`
XLA:CPU kernels and allocator: `dmdjax.xla_cpu.tune()` (as the experiments) unless --no_xla_tuning; each result
records its XLA_FLAGS and tuning. Each (net, part) runs in its own process: `seconds` is the median wall-clock time
of --repeats calls after the first (compiling) call and --warmup further calls (the heap reaches its steady size),
`compile_s` that first call, and `peak_rss_mib` the process's peak resident memory (VmHWM; params, optimiser
state, activations and XLA's buffers of that one part).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

import numpy as np

from metrics import peak_rss_mib   # benchmarks/metrics.py: this process's VmHWM

CHILD = "_child"
NETS = ("small", "paper")
PARTS = ("forward", "teacher", "generator", "fake", "fake_dm", "phi8", "convs")
BATCH = 32


def net_config(name: str) -> dict:
    from dmdjax.nets.adm import mnist_config
    if name == "paper":
        return mnist_config()
    if name == "small":
        return dict(img_resolution=32, in_channels=1, label_dim=0, model_channels=32, channel_mult=[1, 2, 2],
                    channel_mult_emb=4, num_blocks=2, attn_resolutions=[8], dropout=0.0)
    raise ValueError(f"unknown net {name!r}; choose from {', '.join(NETS)}")


def _convolutions(jaxpr):
    """Every conv_general_dilated equation of a (closed) jaxpr, nested jaxprs included."""
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "conv_general_dilated":
            yield eqn
        for value in eqn.params.values():
            for sub in value if isinstance(value, (tuple, list)) else (value,):
                sub = getattr(sub, "jaxpr", sub)
                if hasattr(sub, "eqns"):
                    yield from _convolutions(sub)


def conv_floor(apply, params, x, sigma, repeats: int, warmup: int) -> dict:
    """Sum over the network's convolutions of each one's time alone (median of `repeats` after a compiling call
    and `warmup` calls): forward, and forward + VJP (input and kernel). Returns seconds, forward_s, count, forward
    GFLOP and `by_shape` (per distinct convolution: count, ms and GFLOP/s of the forward and of the VJP)."""
    import collections

    import jax
    from jax import lax
    eqns = list(_convolutions(jax.make_jaxpr(apply)(params, x, sigma).jaxpr))
    keys = collections.Counter()
    for e in eqns:
        prm = e.params
        keys[(e.invars[0].aval.shape, e.invars[1].aval.shape, prm["window_strides"], tuple(prm["padding"]),
              prm["dimension_numbers"], prm["lhs_dilation"], prm["rhs_dilation"], prm["feature_group_count"])] += 1

    def timed(fn, *args):
        fn = jax.jit(fn)
        for _ in range(1 + warmup):
            jax.block_until_ready(fn(*args))
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            jax.block_until_ready(fn(*args))
            times.append(time.perf_counter() - t0)
        return statistics.median(times)

    fwd = both = flops = 0.0
    shapes = []
    for (lhs, rhs, strides, pad, dn, ld, rd, groups), count in keys.items():
        conv = lambda a, b: lax.conv_general_dilated(a, b, strides, pad, ld, rd, dn, groups)
        a = jax.random.normal(jax.random.PRNGKey(0), lhs)
        b = jax.random.normal(jax.random.PRNGKey(1), rhs)
        out = jax.eval_shape(conv, a, b)
        dy = jax.random.normal(jax.random.PRNGKey(2), out.shape)
        f = timed(conv, a, b)
        g = timed(lambda a, b, dy: jax.vjp(conv, a, b)[1](dy), a, b, dy)
        fwd, both = fwd + count * f, both + count * (f + g)
        gflop = 2 * np.prod(out.shape) * np.prod(rhs) / rhs[dn.rhs_spec[0]] / 1e9
        flops += count * gflop
        shapes.append({"input": lhs, "kernel": rhs, "count": count, "forward_ms": 1e3 * f, "vjp_ms": 1e3 * g,
                       "forward_gflops": gflop / f, "vjp_gflops": 2 * gflop / g})
    return {"seconds": both, "forward_s": fwd, "convolutions": len(eqns), "forward_gflop": flops,
            "by_shape": shapes}


def _child(net: str, part: str, repeats: int, warmup: int, tune: bool) -> dict:
    from dmdjax import xla_cpu
    tuning = xla_cpu.tune(tune)
    import jax
    import jax.numpy as jnp

    from dmdjax import configs, distill, sampling, teacher
    from dmdjax.nets.adm import adm_denoiser, num_params

    model = adm_denoiser(net_config(net))
    shape = (32, 32, 1)
    x = jax.random.normal(jax.random.PRNGKey(0), (BATCH,) + shape)
    params = teacher.init_params(model, jax.random.PRNGKey(1), x[:2])
    paper = configs.mnist("paper")
    sample = lambda key, n, consts: (jax.random.normal(key, (n,) + shape), None)

    def result(**fields) -> dict:
        return {"net": net, "part": part, "params": num_params(params), "batch": BATCH, **fields, "warmup": warmup,
                "peak_rss_mib": round(peak_rss_mib(), 1), "xla_flags": os.environ.get("XLA_FLAGS", ""),
                "tuning": tuning._asdict()}

    if part == "convs":
        return result(**conv_floor(lambda p, x, s: model.apply({"params": p}, x, s), params, x,
                                   jnp.full((BATCH,), 2.5), repeats, warmup))
    if part == "forward":
        fn = jax.jit(lambda p, x, s: model.apply({"params": p}, x, s))
        sigma = jnp.full((BATCH,), 2.5)
        call, state = (lambda st: (st, fn(params, x, sigma))), None
    elif part == "phi8":
        fn = jax.jit(lambda p, z: sampling.phi_k(lambda x, s, y: model.apply({"params": p}, x, s, y), z, 8))
        call, state = (lambda st: (st, fn(params, x))), None
    elif part == "teacher":
        tcfg = configs.override(paper, **{"teacher.batch": BATCH}).teacher
        state = teacher.TrainState.create(params, tcfg.optimizer())
        step = jax.jit(teacher.make_step(model, tcfg.optimizer(), sample, BATCH, jax.random.PRNGKey(2)),
                       donate_argnums=0)
        call = lambda st: step(st, None)
    elif part in ("generator", "fake", "fake_dm"):
        dcfg = configs.override(paper, **{"distill.batch": BATCH,
                                          "distill.dm_loss_every_iteration": part == "fake_dm"}).distill
        it = distill.make_iteration(model, dcfg, jax.random.PRNGKey(3), 0, shape)
        step = jax.jit(lambda st, tp: it(st, distill.StepConsts(tp, {}), update_generator=(part == "generator")),
                       donate_argnums=0)
        state = distill.init_state(params, dcfg)
        tparams = jax.tree.map(jnp.array, params)
        call = lambda st: step(st, tparams)
    else:
        raise ValueError(f"unknown part {part!r}; choose from {', '.join(PARTS)}")

    times = []
    for _ in range(1 + warmup + repeats):
        t0 = time.perf_counter()
        state, out = call(state)
        jax.block_until_ready((state, out))
        times.append(time.perf_counter() - t0)
    return result(seconds=statistics.median(times[1 + warmup:]), compile_s=times[0], times_s=times[1:])


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nets", default=",".join(NETS), help="comma-separated: small, paper")
    parser.add_argument("--parts", default=",".join(PARTS), help="comma-separated: " + ", ".join(PARTS))
    parser.add_argument("--repeats", type=int, default=5, help="timed calls after the compiling one")
    parser.add_argument("--warmup", type=int, default=2, help="untimed calls after the compiling one")
    parser.add_argument("--no_xla_tuning", action="store_true",
                        help="XLA:CPU's defaults instead of dmdjax.xla_cpu.tune() (kernel flag and allocator)")
    args = parser.parse_args(argv)
    nets = [n for n in args.nets.split(",") if n]
    parts = [p for p in args.parts.split(",") if p]
    bad = sorted(set(nets) - set(NETS)) + sorted(set(parts) - set(PARTS))
    if bad or args.repeats < 1 or args.warmup < 0:
        parser.error(f"unknown net/part {bad} (nets: {NETS}, parts: {PARTS}), --repeats < 1 or --warmup < 0")
    results = []
    for net in nets:
        for part in parts:
            cmd = [sys.executable, __file__, CHILD, net, part, str(args.repeats), str(args.warmup),
                   str(int(not args.no_xla_tuning))]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode:
                raise SystemExit(f"{net}/{part} failed:\n{proc.stderr[-3000:]}")
            results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
            print(json.dumps(results[-1]), file=sys.stderr, flush=True)
    import jax
    out = {"machine": f"{platform.node()} ({os.cpu_count()} CPUs, {platform.processor() or platform.machine()})",
           "jax": jax.__version__, "repeats": args.repeats, "warmup": args.warmup,
           "results": results}
    print(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == CHILD:
        print(json.dumps(_child(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), bool(int(sys.argv[6])))))
    else:
        main()
