"""Benchmark of dmdjax.metrics; prints one JSON document.

    python benchmarks/metrics.py                 # everything (~15 min on 2 CPU cores)
    python benchmarks/metrics.py --skip-large    # without the N = 20,000 Sinkhorn run
    python benchmarks/metrics.py --quick         # small sizes, a smoke test of this script

Times are wall-clock seconds after one warm-up call (compilation excluded), median of `--repeats` calls.
Cases: Delta_E exact and Sinkhorn (ott dense; online with batch_size 256) at N = 1000, d = 1024 and
N = 4000, d = 784, with the cost-matrix + scipy baseline; Sinkhorn at N = 20,000, d = 1024 (online cost, in
a subprocess to report its peak RSS, then checked against the exact E_OT); r(y) and D(z) for 1000 samples
against 60,000 MNIST-shaped training images.

Data: "copying" = clustered smooth images, student = teacher + noise with 30% of the pairs shuffled (a DMD
student that mostly copies); "remapped" = independent draws of a 16-d MLP manifold (a student that remaps
every seed: the hard case for Sinkhorn); "gaussian" = independent Gaussian clouds (the usual LSA timing case).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time

import numpy as np


# ------------------------------------------------------------------------------------------------------ data

def copying_pairs(n, side=32, shuffle=0.3, noise=0.3, seed=0, chunk=2048):
    """Image-like teacher/student pairs, float32, generated in chunks (bounded memory at N = 20,000)."""
    rng = np.random.default_rng(seed)
    d = side * side
    freq = np.sqrt(np.fft.fftfreq(side)[:, None] ** 2 + np.fft.rfftfreq(side)[None, :] ** 2)

    def smooth(k):
        f = np.fft.rfft2(rng.standard_normal((k, side, side))) * np.exp(-(freq / 0.08) ** 2 / 2)
        out = np.fft.irfft2(f, s=(side, side)).reshape(k, d)
        return (out / out.std(axis=1, keepdims=True)).astype(np.float32)

    centers, basis = smooth(10), smooth(16)
    t = np.empty((n, d), np.float32)
    s = np.empty((n, d), np.float32)
    for a in range(0, n, chunk):
        b = min(n, a + chunk)
        lab = rng.integers(0, 10, b - a)
        t[a:b] = np.tanh(centers[lab] + rng.standard_normal((b - a, 16)).astype(np.float32) @ basis / 8)
        s[a:b] = t[a:b] + noise * rng.standard_normal((b - a, d)).astype(np.float32)
    idx = rng.choice(n, int(shuffle * n), replace=False)
    s[idx] = s[rng.permutation(idx)]
    return t, s


def remapped_pairs(n, d=1024, latent=16, seed=1):
    rng = np.random.default_rng(seed)
    w1 = (rng.standard_normal((latent, 256)) / np.sqrt(latent)).astype(np.float32)
    w2 = (rng.standard_normal((256, d)) / 16).astype(np.float32)
    f = lambda z: np.tanh(np.tanh(1.5 * z @ w1) @ w2 * 1.5)
    return (f(rng.standard_normal((n, latent)).astype(np.float32)),
            f(rng.standard_normal((n, latent)).astype(np.float32)))


def gaussian_pairs(n, d, seed=2):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, d)).astype(np.float32), rng.standard_normal((n, d)).astype(np.float32)


DATA = {"copying": copying_pairs, "remapped": remapped_pairs, "gaussian": gaussian_pairs}


def make(kind, n, d):
    if kind == "copying":
        return copying_pairs(n, side=int(round(np.sqrt(d))))
    return DATA[kind](n, d)


# ------------------------------------------------------------------------------------------------------ timing

def timed(fn, repeats):
    """Warm-up call, then `repeats` timed calls (results blocked on). Returns (median, all times, last result)."""
    import jax
    jax.block_until_ready(fn())
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    return float(np.median(times)), [round(x, 4) for x in times], out


def baseline_exact(t, s):
    """Reference pipeline: float64 cost matrix by numpy/BLAS, then scipy's linear_sum_assignment."""
    from scipy.optimize import linear_sum_assignment
    t64, s64 = t.astype(np.float64), s.astype(np.float64)
    cost = (t64 ** 2).sum(1)[:, None] + (s64 ** 2).sum(1)[None] - 2 * t64 @ s64.T
    r, c = linear_sum_assignment(cost)
    return cost[r, c].mean()


def lsa_only(cost):
    from scipy.optimize import linear_sum_assignment
    return linear_sum_assignment(cost)


def bench_delta_e(n, d, kinds, repeats, online_too=True):
    from dmdjax import metrics
    out = {}
    for kind in kinds:
        t, s = make(kind, n, d)
        row = {}
        med, times, ex = timed(lambda: metrics.transport_energies(t, s), repeats)
        row["exact"] = {"median_s": med, "times_s": times, "delta_e": float(ex.delta_e), "e_dt": float(ex.e_dt),
                        "e_ot": float(ex.e_ot)}
        med, times, ref = timed(lambda: baseline_exact(t, s), repeats)
        t64 = t.astype(np.float64)
        s64 = s.astype(np.float64)
        cost = (t64 ** 2).sum(1)[:, None] + (s64 ** 2).sum(1)[None] - 2 * t64 @ s64.T
        med_lsa, _, _ = timed(lambda: lsa_only(cost), repeats)
        row["baseline_cost_plus_scipy"] = {"median_s": med, "times_s": times, "scipy_lsa_alone_median_s": med_lsa,
                                           "e_ot_rel_diff_vs_ours": float(ref / ex.e_ot - 1)}
        variants = {"sinkhorn": {}}
        if online_too:
            variants["sinkhorn_online_bs256"] = {"batch_size": 256}
        for name, kw in variants.items():
            med, times, sk = timed(lambda: metrics.transport_energies(t, s, method="sinkhorn", **kw), repeats)
            row[name] = {"median_s": med, "times_s": times, "delta_e": float(sk.delta_e),
                         "e_ot_rel_err_vs_exact": float(sk.e_ot / ex.e_ot - 1), "iterations": int(sk.n_iterations),
                         "converged": bool(sk.converged), "marginal_error": float(sk.marginal_error)}
        out[kind] = row
    return out


def bench_large(n, d, repeats, kinds=("copying", "remapped"), validate=True):
    """Runs inside its own process, so the peak RSS (VmHWM) is this case's alone. The exact E_OT used to check
    the Sinkhorn result is computed afterwards (its ~5 GB transient cost matrices are not in the peak)."""
    from dmdjax import metrics
    import jax
    jax.block_until_ready(jax.numpy.zeros(1))
    out = {"n": n, "d": d, "rss_after_jax_init_mib": round(peak_rss_mib(), 1),
           "dense_cost_matrix_would_be_mib": round(n * n * 4 / 2 ** 20, 1)}
    online = n * n * 4 > 2 ** 24  # transport_energies' default max_cost_bytes
    kw = {} if online else {"batch_size": 512}  # --quick: force the online path at small N
    data = {}
    for kind in kinds:
        t, s = make(kind, n, d)
        data[kind] = (t, s)
        rss_data = peak_rss_mib()
        med, times, sk = timed(lambda: metrics.transport_energies(t, s, method="sinkhorn", **kw), repeats)
        out[kind] = {"median_s": med, "times_s": times, "delta_e": float(sk.delta_e), "e_ot": float(sk.e_ot),
                     "e_dt": float(sk.e_dt), "iterations": int(sk.n_iterations), "converged": bool(sk.converged),
                     "marginal_error": float(sk.marginal_error), "bias_bound_rel": float(sk.bias_bound / sk.e_ot),
                     "inputs_mib": round((t.nbytes + s.nbytes) / 2 ** 20, 1),
                     "rss_before_solve_mib": round(rss_data, 1), "peak_rss_so_far_mib": round(peak_rss_mib(), 1)}
    out["mode"] = "online, batch_size 512 " + ("(automatic: N^2 * 4 bytes > 16 MiB)" if online else "(forced)")
    if validate:
        for kind, (t, s) in data.items():
            t0 = time.perf_counter()
            ex = metrics.transport_energies(t, s)
            out[kind]["exact_check"] = {"seconds": round(time.perf_counter() - t0, 2), "e_ot": float(ex.e_ot),
                                        "sinkhorn_e_ot_rel_err": float(out[kind]["e_ot"] / ex.e_ot - 1)}
    return out


def peak_rss_mib():
    """Peak resident set size of this process (VmHWM; unlike ru_maxrss it is not inherited from the parent)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench_memorization(n, m, repeats):
    from dmdjax import metrics
    rng = np.random.default_rng(3)
    train = rng.uniform(-1, 1, (m, 28, 28)).astype(np.float32)
    samples = rng.uniform(-1, 1, (n, 28, 28)).astype(np.float32)
    med, times, res = timed(lambda: metrics.memorization_ratio(samples, train), repeats)
    med_d, times_d, _ = timed(lambda: metrics.mean_train_distance(samples, train), repeats)
    k = min(20, n)  # spot check against numpy brute force
    dist = np.sqrt(((samples[:k].reshape(k, 1, -1).astype(np.float64) - train.reshape(1, m, -1)) ** 2).sum(-1))
    ok = bool(np.array_equal(np.argsort(dist, axis=1)[:, :2], res.indices[:k]))
    return {"n_samples": n, "n_train": m, "d": 784, "median_s": med, "times_s": times,
            "mean_train_distance_median_s": med_d, "mean_train_distance_times_s": times_d,
            "neighbours_match_numpy_on_first_20": ok, "r_mean": float(np.mean(res.ratio))}


# ------------------------------------------------------------------------------------------------------ main

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes (smoke test of the script)")
    ap.add_argument("--skip-large", action="store_true", help="skip the N = 20,000 Sinkhorn case")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-validate", action="store_true", help="skip the exact E_OT check at N = 20,000 (~3 min)")
    ap.add_argument("--case", default="all", help=argparse.SUPPRESS)  # "large": internal, for the subprocess
    args = ap.parse_args()
    import jax
    if args.case == "large":
        n = 2000 if args.quick else 20000
        print(json.dumps(bench_large(n, 1024, max(1, args.repeats - 1), validate=not args.no_validate)))
        return
    q = args.quick
    load0 = os.getloadavg()
    t_start = time.perf_counter()
    report = {"host": {"cpu_count": os.cpu_count(), "platform": platform.platform(), "jax": jax.__version__,
                       "devices": [str(dv) for dv in jax.devices()], "loadavg_1_5_15_at_start": load0}}
    report["delta_e_n1000_d1024"] = bench_delta_e(200 if q else 1000, 1024, ["copying", "remapped", "gaussian"],
                                                  args.repeats)
    report["delta_e_n4000_d784"] = bench_delta_e(400 if q else 4000, 784, ["copying", "remapped", "gaussian"],
                                                 max(1, args.repeats - 1))
    report["memorization_ratio"] = bench_memorization(100 if q else 1000, 6000 if q else 60000, args.repeats)
    if not args.skip_large:
        cmd = [sys.executable, os.path.abspath(__file__), "--case", "large", "--repeats", str(args.repeats)]
        cmd += (["--quick"] if q else []) + (["--no-validate"] if args.no_validate else [])
        proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
        report["sinkhorn_n20000_d1024"] = json.loads(proc.stdout.strip().splitlines()[-1])
    report["host"]["loadavg_1_5_15_at_end"] = os.getloadavg()
    report["host"]["total_wall_s"] = round(time.perf_counter() - t_start, 1)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
