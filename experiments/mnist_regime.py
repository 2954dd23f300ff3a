"""The regime study on MNIST: which difference from the paper's setting turns a remapping student into a copying
one? One teacher (the teacher-length study's, 16x16, small ADM, 8192 steps) trained once with EDM's EMA kept beside
its raw weights; its snapshots 512 and 8192 distilled under the study's protocol by one student per arm, each with
the convergence record (`configs.mnist_regime.arm`): ema, raw, lr4e-6 (the DMD lr at the paper's order), regression
(DMD1's regression-led control: what copying looks like with this network).

    python experiments/mnist_regime.py --arms=ema,raw --workdir=runs/mnist_regime \\
        --mnist_dir=../shared/data/mnist --results_dir=results/mnist_regime

Each arm is a pipeline run in workdir/<arm>; results.json lists one entry per finished student under `arms`, and
kappa_vs_sum.png draws kappa against the sum of learning rates. A second DMD seed of an arm on its latest
snapshot (arm e): `--arms=ema --distill_seed=1 --only_snapshots=8192` (run directory ema-seed1). Rerunning the same command resumes; arms run in
the order given (one invocation per arm gives each arm's own peak memory).
"""
from __future__ import annotations

import json
import resource

from dmdjax import cli, configs, studies


def arm_list(text: str) -> tuple[str, ...]:
    arms = tuple(a for a in text.split(",") if a)
    known = configs.mnist_regime.ARMS
    bad = [a for a in arms if a not in known]
    if bad or not arms:
        raise cli.argparse.ArgumentTypeError(f"unknown arms {bad}; choose from {','.join(known)}")
    return arms


def peak_rss_gib() -> float:
    """This process's peak resident memory (Linux: ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20


def main(argv=None) -> dict:
    from dmdjax import data
    parser = cli.make_parser(__doc__)
    names = tuple(configs.mnist_regime.ARMS)
    cli.add_common_flags(parser, presets=configs.mnist_regime.get_config)
    parser.add_argument("--arms", type=arm_list, default=names,
                        help=f"comma-separated arms, run in this order (default: {','.join(names)})")
    parser.add_argument("--mnist_dir", default=None, help="directory with the four original MNIST .gz files")
    parser.add_argument("--distill_seed", type=int, default=None,
                        help="another DMD seed for the arms (a control; run directory <arm>-seed<k>); the teacher "
                             "and the shared noises stay those of --seed")
    parser.add_argument("--only_snapshots", type=cli.snapshot_list, default=None,
                        help="distill only these of the arms' snapshots, e.g. 8192")
    args = cli.parse(parser, argv)
    cli.start(args)
    base = cli.configure(configs.mnist_regime, args)
    arms = [configs.mnist_regime.arm(base, a, args.distill_seed, args.only_snapshots)[1] for a in args.arms]
    cli.print_config_and_exit(base, args, {"arms": {a: c.to_dict() for a, c in zip(args.arms, arms)}}, arms)
    work = cli.workdir(base, args)
    mesh = cli.check(base, args, arms, work=work)
    cli.announce(base, args)
    dataset = data.load(base, mnist_dir=args.mnist_dir)
    result = studies.run_regime(base, args.arms, work, dataset, mesh, not args.quiet, args.results_dir,
                                peak_rss_gib, args.distill_seed, args.only_snapshots)
    cli.echo(json.dumps([{k: r[k] for k in ("name", "teacher_steps", "kappa_matched", "kappa_final", "delta_e",
                                         "converged")} for r in result["arms"]], indent=1))
    return result


if __name__ == "__main__":
    cli.run(main)
