"""dmdjax against EDM's own PyTorch network, side by side: the ADM forward D(x; sigma) and the teacher train step
(EDM loss, backward, Adam at lr 2e-4) at batch 32, 32x32x1, float32, on the CPU, in alternating processes;
`convs`: the network's convolutions alone, each timed by itself, forward + backward, summed (a floor).

    python benchmarks/versus_torch.py --edm_dir=PATH/TO/edm --torch_python=PATH/TO/venv/bin/python

`--edm_dir`: a checkout of github.com/NVlabs/edm (its `training/networks.py` and `training/loss.py` are imported,
not copied); `--torch_python`: a Python with torch and numpy (default: this one). Each round runs one PyTorch
process and one dmdjax process (`benchmarks/train_step.py`'s child) per part, the order alternating between
rounds; each process reports the median of --repeats calls after its first call and --warmup further calls.
Prints one JSON document: every process's result and, per part, the median over rounds of each side and the ratio
dmdjax / torch (below 1: dmdjax is faster). Nets as in train_step.py (small: 1,921,601 params; paper: 31,118,593).
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
from pathlib import Path

HERE = Path(__file__).resolve().parent
TORCH_CHILD = "_torch"
PARTS = ("forward", "teacher", "convs")
BATCH = 32


def _torch_child(net: str, part: str, repeats: int, warmup: int, edm_dir: str, cfg: dict) -> dict:
    """One PyTorch process: EDM's EDMPrecond(DhariwalUNet) with the ADM config `cfg` (train_step.net_config)."""
    import torch
    sys.path.insert(0, edm_dir)
    from training.loss import EDMLoss
    from training.networks import EDMPrecond

    torch.manual_seed(0)
    torch.set_num_threads(os.cpu_count())
    model = EDMPrecond(img_resolution=cfg["img_resolution"], img_channels=cfg["in_channels"], label_dim=0,
                       model_type="DhariwalUNet", model_channels=cfg["model_channels"],
                       channel_mult=cfg["channel_mult"], channel_mult_emb=cfg["channel_mult_emb"],
                       num_blocks=cfg["num_blocks"], attn_resolutions=cfg["attn_resolutions"], dropout=0.0)
    x = torch.randn(BATCH, cfg["in_channels"], cfg["img_resolution"], cfg["img_resolution"])
    header = {"side": "torch", "net": net, "part": part, "torch": torch.__version__,
              "threads": torch.get_num_threads(), "params": sum(p.numel() for p in model.parameters())}
    if part == "forward":
        model.eval()
        sigma = torch.full((BATCH,), 2.5)

        def call():
            with torch.no_grad():
                model(x, sigma)
    elif part == "teacher":
        model.train()
        loss_fn, opt = EDMLoss(), torch.optim.Adam(model.parameters(), lr=2e-4)

        def call():
            opt.zero_grad(set_to_none=True)
            loss_fn(net=model, images=x).sum().mul(1.0 / BATCH).backward()
            opt.step()
    elif part == "convs":
        return {**header, **_torch_conv_floor(model, x, repeats, warmup)}
    else:
        raise ValueError(f"unknown part {part!r}; choose from {', '.join(PARTS)}")
    times = _call_times(call, 1 + warmup + repeats)
    return {**header, "seconds": statistics.median(times[1 + warmup:]), "first_s": times[0], "times_s": times[1:]}


def _call_times(fn, calls: int) -> list[float]:
    """Wall-clock seconds of `calls` successive calls of fn()."""
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def _torch_conv_floor(model, x, repeats: int, warmup: int) -> dict:
    """train_step.conv_floor's PyTorch side: every ungrouped conv2d of one forward, each timed alone (median of
    `repeats` after 1 + `warmup` calls), forward and forward + backward to input and kernel, summed."""
    import collections

    import torch
    f = torch.nn.functional
    calls, conv2d = collections.Counter(), f.conv2d

    def record(inp, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
        if groups == 1:
            calls[(tuple(inp.shape), tuple(weight.shape), padding)] += 1
        return conv2d(inp, weight, bias, stride, padding, dilation, groups)
    f.conv2d = record
    try:
        with torch.no_grad():
            model(x, torch.full((x.shape[0],), 2.5))
    finally:
        f.conv2d = conv2d

    timed = lambda fn: statistics.median(_call_times(fn, 1 + warmup + repeats)[1 + warmup:])

    fwd = both = 0.0
    shapes = []
    for (xs, ws, pad), count in calls.items():
        a = torch.randn(xs, requires_grad=True)
        w = torch.randn(ws, requires_grad=True)
        dy = torch.randn(conv2d(a.detach(), w.detach(), padding=pad).shape)
        with torch.no_grad():
            t_f = timed(lambda: conv2d(a, w, padding=pad))
        t_fb = timed(lambda: torch.autograd.grad(conv2d(a, w, padding=pad), (a, w), dy))
        fwd, both = fwd + count * t_f, both + count * t_fb
        shapes.append({"input": xs, "kernel": ws, "count": count, "forward_ms": 1e3 * t_f, "both_ms": 1e3 * t_fb})
    return {"seconds": both, "forward_s": fwd, "convolutions": sum(calls.values()), "by_shape": shapes}


def _run(cmd: list[str]) -> dict:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd[:4])} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--edm_dir", required=True, help="a checkout of github.com/NVlabs/edm")
    parser.add_argument("--torch_python", default=sys.executable, help="a Python with torch and numpy")
    parser.add_argument("--nets", default="small", help="comma-separated: small, paper")
    parser.add_argument("--parts", default=",".join(PARTS), help="comma-separated: " + ", ".join(PARTS))
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (one process per side each)")
    parser.add_argument("--repeats", type=int, default=10, help="timed calls per process")
    parser.add_argument("--warmup", type=int, default=2, help="untimed calls after the first")
    args = parser.parse_args(argv)
    if not (Path(args.edm_dir) / "training" / "networks.py").is_file():
        parser.error(f"--edm_dir={args.edm_dir} holds no training/networks.py: point it at an EDM checkout")
    nets, parts = args.nets.split(","), args.parts.split(",")
    if set(parts) - set(PARTS) or args.rounds < 1 or args.repeats < 1:
        parser.error(f"--parts must be among {PARTS}, --rounds and --repeats >= 1")
    sys.path.insert(0, str(HERE))
    from train_step import net_config
    results = []
    for r in range(args.rounds):
        for net in nets:
            for part in parts:
                torch_cmd = [args.torch_python, __file__, TORCH_CHILD, net, part, str(args.repeats),
                             str(args.warmup), args.edm_dir, json.dumps(net_config(net))]
                jax_cmd = [sys.executable, str(HERE / "train_step.py"), "_child", net, part, str(args.repeats),
                           str(args.warmup), "1"]
                for cmd in ((torch_cmd, jax_cmd) if r % 2 == 0 else (jax_cmd, torch_cmd)):
                    res = _run(cmd)
                    res.setdefault("side", "dmdjax")
                    res["round"] = r
                    results.append(res)
                    print(json.dumps({k: res[k] for k in ("side", "net", "part", "round", "seconds")}),
                          file=sys.stderr, flush=True)
    summary = {}
    for net in nets:
        for part in parts:
            med = {side: statistics.median(x["seconds"] for x in results
                                           if x["side"] == side and x["net"] == net and x["part"] == part)
                   for side in ("torch", "dmdjax")}
            summary[f"{net}/{part}"] = {**med, "ratio_dmdjax_over_torch": med["dmdjax"] / med["torch"]}
    out = {"machine": f"{platform.node()} ({os.cpu_count()} CPUs, {platform.processor() or platform.machine()})",
           "rounds": args.rounds, "repeats": args.repeats, "warmup": args.warmup, "summary": summary,
           "results": results}
    print(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == TORCH_CHILD:
        print(json.dumps(_torch_child(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), sys.argv[6],
                                      json.loads(sys.argv[7]))))
    else:
        main()
