"""Command-line flags shared by the experiments (argparse; `--flag=value` style) and the one rule for their
errors: every config error is found before any training and before config.json is written, and reaches the user
as one line (`error: ...`, exit status 2) without a traceback (`--debug` or DMDJAX_DEBUG=1 shows it).

An experiment's script is, in order:

    parser = cli.make_parser(__doc__); cli.add_common_flags(parser, presets=...)   # + its own flags
    args = cli.parse(parser, argv)         # flags only: no side effects
    cli.start(args)                        # process set-up: XLA:CPU tuning on a CPU-only host, --distributed
    cfg = cli.configure(configs.<experiment>, args, **options)   # get_config, flags, --set, derived fields
    cli.print_config_and_exit(cfg, args)   # with --print_config
    mesh = cli.check(cfg, args)            # ConfigError: bad sizes, batch vs devices, unusable workdir
    cli.announce(cfg, args)                # the first line: preset and what it holds; a CPU-time warning
    ... load data, pipeline.run(cfg, data, cli.workdir(cfg, args), mesh) ...

and its `__main__` block is `cli.run(main)`, which turns the user errors into the one-line message.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Sequence

from dmdjax import configs
from dmdjax.configs import ConfigError, apply_sets

__all__ = [
    "ConfigError", "HelpFormatter", "Parser", "make_parser", "positive_int", "add_common_flags", "parse", "start",
    "default_preset", "resolve_preset", "configure", "apply_common_flags", "apply_sets", "describe",
    "print_config_and_exit", "workdir", "check", "check_workdir", "announce", "cpu_hours_estimate", "device_mesh",
    "snapshot_list", "add_mnist_flags", "experiment_main", "mnist_main", "study_main", "run", "DEBUG_ENV",
    "compile_cache_dir", "COMPILE_CACHE_ENV", "echo",
]

DEBUG_ENV = "DMDJAX_DEBUG"
COMPILE_CACHE_ENV = "DMDJAX_COMPILE_CACHE"
RUNS_DIR = "runs"


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """The module docstring as written, and every flag's default in `--help` (where there is one)."""

    def _get_help_string(self, action):
        if any(action.default is v for v in (None, False, argparse.SUPPRESS)) or action.default == [] \
                or "%(default)" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line: `error: <what>` (exit 2), without the usage block."""

    def error(self, message: str):
        self.exit(2, f"error: {message} (see --help)\n")


def make_parser(description: str | None) -> Parser:
    """An experiment's parser: its docstring as the description, defaults in --help, one-line errors."""
    return Parser(description=description, formatter_class=HelpFormatter)


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


# ----------------------------------------------------------------------------------------------------------
# Flags.

def add_common_flags(parser: argparse.ArgumentParser, presets: Callable[[str], Any] | None = None) -> None:
    """The flags every training experiment takes. `presets(name) -> Config` (optional) lists what each preset
    holds in `--help`."""
    parser.add_argument("--preset", choices=configs.PRESETS, default=None,
                        help="cpu: minutes on a 2-core CPU; paper: the paper's App. D settings (GPU/TPU). "
                             "Default: paper when JAX's default backend is a GPU or TPU, cpu on a CPU-only host")
    parser.add_argument("--workdir", default=None,
                        help=f"run directory (checkpoints, results.json, figures, TensorBoard events); "
                             f"default: {RUNS_DIR}/<config name>")
    parser.add_argument("--teacher_steps", type=positive_int, help="override the preset's teacher iterations")
    parser.add_argument("--distill_iterations", type=positive_int, help="override the preset's DMD iterations")
    parser.add_argument("--eval_n", type=positive_int, help="override N, the number of shared noises (>= 2)")
    parser.add_argument("--set", dest="set", action="append", default=[], metavar="KEY=VALUE",
                        help="override any config field, dotted for nested ones, typed from the config "
                             "(repeatable), e.g. --set distill.lr_gen=3e-5 --set teacher.batch=64; "
                             "--print_config lists the fields")
    parser.add_argument("--print_config", action="store_true", help="print the resolved config as JSON and exit")
    parser.add_argument("--seed", type=int, default=0,
                        help="PRNG seed of the run (initialisation, training, the shared evaluation noises)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--devices", type=positive_int,
                        help="data-parallel over the first N devices (default: all; the result does not depend on N)")
    parser.add_argument("--bf16", action="store_true",
                        help="run the network interior in bfloat16 (GPU/TPU); preconditioning, losses and master "
                             "weights stay float32")
    parser.add_argument("--distributed", action="store_true",
                        help="multi-host: call jax.distributed.initialize() first (one process per host; every "
                             "process runs the same command, on a run directory they all see; process 0 writes "
                             "the files and prints). On TPU pods and SLURM/Open MPI/Kubernetes clusters JAX "
                             "finds the coordinator itself; elsewhere give the next three flags")
    parser.add_argument("--coordinator_address", default=None, metavar="HOST:PORT",
                        help="with --distributed: process 0's address (default: detected, or "
                             "$JAX_COORDINATOR_ADDRESS)")
    parser.add_argument("--num_processes", type=positive_int, default=None,
                        help="with --distributed: how many processes (default: detected)")
    parser.add_argument("--process_id", type=int, default=None,
                        help="with --distributed: this process's index, 0 .. num_processes - 1 (default: detected)")
    parser.add_argument("--dm_loss_every_iteration", action="store_true",
                        help="compute the DM loss (Fig. 4) on every DMD iteration, not only where the generator "
                             "updates (DMD2's choice): a 5x denser curve for ~1/3 more time on 4 of 5 iterations")
    parser.add_argument("--eval_every", type=int,
                        help="convergence record every N DMD iterations (multiple of 5; 0 = off; default: preset)")
    parser.add_argument("--until_converged", action="store_true",
                        help="stop each student when the record says it converged (--distill_iterations = maximum)")
    parser.add_argument("--no_xla_tuning", action="store_true",
                        help="keep XLA:CPU's default kernels and glibc's default allocator (see dmdjax/xla_cpu.py)")
    parser.add_argument("--results_dir", default=None,
                        help="also copy the summary and key figures (no checkpoints or samples) here when the run "
                             "ends, e.g. results/<experiment> (the committed evidence of quoted numbers)")
    parser.add_argument("--compile_cache", default=None,
                        help=f"JAX's persistent compilation cache: a rerun or resume skips the compiles of an "
                             f"earlier run (default: ${COMPILE_CACHE_ENV}, else $DMDJAX_CACHE/jax, else "
                             f"~/.cache/dmdjax/jax; 'none' turns it off)")
    parser.add_argument("--debug", action="store_true",
                        help=f"show the full traceback of an error (also: environment variable {DEBUG_ENV}=1)")
    if presets is not None:
        lines = []
        for name in configs.PRESETS:
            try:
                lines.append(f"  {name}: {describe(presets(name))}")
            except ValueError:       # a preset this experiment does not have
                continue
        parser.epilog = "presets:\n" + "\n".join(lines)


def parse(parser: argparse.ArgumentParser, argv=None) -> argparse.Namespace:
    """`parser.parse_args(argv)`: flags only, no side effects (`start` sets the process up)."""
    return parser.parse_args(argv)


def start(args) -> None:
    """Process set-up an experiment does right after parsing, before any JAX computation (data loading
    included): XLA:CPU tuning (`xla_cpu.tune`: only on a CPU-only host, unless --no_xla_tuning), JAX's
    persistent compilation cache (`compile_cache_dir`), then with --distributed jax.distributed.initialize()
    (coordinator, process count and id from --coordinator_address, --num_processes, --process_id, else from the
    launcher / TPU) with gloo as the CPU backend's cross-process collectives (the CPU's share of a multi-host
    program, and whole programs on CPU-only hosts)."""
    distributed = getattr(args, "distributed", False)
    given = {flag: getattr(args, flag, None) for flag in ("coordinator_address", "num_processes", "process_id")}
    if not distributed and any(v is not None for v in given.values()):
        raise ConfigError(f"--{next(k for k, v in given.items() if v is not None)} needs --distributed")
    n, i = given["num_processes"], given["process_id"]
    if i is not None and (i < 0 or (n is not None and i >= n)):
        raise ConfigError(f"--process_id={i} must be in 0 .. {(n or 1) - 1} (--num_processes={n})")
    from dmdjax import xla_cpu
    xla_cpu.tune(enable=not getattr(args, "no_xla_tuning", False))
    import jax
    cache = compile_cache_dir(getattr(args, "compile_cache", None))
    if cache is not None:
        jax.config.update("jax_compilation_cache_dir", str(cache))
    if distributed:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(**given)


def compile_cache_dir(flag: str | None = None) -> Path | None:
    """The persistent compilation cache's directory: --compile_cache, else $DMDJAX_COMPILE_CACHE, else
    $DMDJAX_CACHE/jax, else ~/.cache/dmdjax/jax; None when the flag or the variable is 'none', '0' or ''."""
    value = flag if flag is not None else os.environ.get(COMPILE_CACHE_ENV)
    if value is not None:
        return None if value.strip().lower() in ("", "0", "none", "off") else Path(value).expanduser()
    from dmdjax.classifier import default_cache_dir   # the project's one cache root ($DMDJAX_CACHE)
    return default_cache_dir() / "jax"


def default_preset() -> str:
    """'paper' when JAX's default backend is a GPU or TPU, 'cpu' on a CPU-only host (starts JAX's backend)."""
    import jax
    return "cpu" if jax.default_backend() == "cpu" else "paper"


def resolve_preset(args) -> str:
    """--preset, else `default_preset()`; records on `args` whether it was chosen automatically."""
    if args.preset is None:
        args.preset, args.preset_auto = default_preset(), True
    else:
        args.preset_auto = getattr(args, "preset_auto", False)
    return args.preset


def configure(experiment, args, **options):
    """The config of the command line: `experiment.get_config(preset, **options)` (`experiment`: a module of
    `dmdjax.configs`) with the common flags and every --set applied, its derived fields (`experiment.DERIVED`)
    recomputed after them (`apply_common_flags`)."""
    return apply_common_flags(experiment.get_config(resolve_preset(args), **options), args, experiment.DERIVED)


def apply_common_flags(cfg, args, derived: configs.Rules):
    """cfg with the common flags applied, then every `--set KEY=VALUE` (in order), then the `derived` fields
    recomputed from the result (`configs.resolve`: e.g. record.min_iterations from the DMD lr) unless given
    explicitly. A flag and a --set that give the same field different values are refused."""
    flags = {"teacher.steps": ("--teacher_steps", args.teacher_steps),
             "distill.iterations": ("--distill_iterations", args.distill_iterations),
             "eval_n": ("--eval_n", args.eval_n),
             "compute_dtype": ("--bf16", "bfloat16" if args.bf16 else None),
             "distill.dm_loss_every_iteration": ("--dm_loss_every_iteration", args.dm_loss_every_iteration or None),
             "record.eval_every": ("--eval_every", getattr(args, "eval_every", None)),
             "record.until_converged": ("--until_converged", getattr(args, "until_converged", False) or None),
             "seed": ("--seed", args.seed or None),
             "distill_snapshots": ("--snapshots", getattr(args, "snapshots", None))}
    given = {key: value for key, (_, value) in flags.items() if value is not None}
    try:
        out = configs.override(cfg, **{"seed": args.seed, **given})
    except ValueError as e:
        raise ConfigError(str(e)) from None
    sets = getattr(args, "set", None) or ()
    out = apply_sets(out, sets)
    set_keys = {text.partition("=")[0].strip() for text in sets}
    for key in sorted(set_keys & set(given)):
        if configs.get(out, key) != given[key]:
            raise ConfigError(f"{flags[key][0]} and --set {key} give {key} different values ({given[key]} and "
                              f"{configs.get(out, key)}); give it once")
    return configs.resolve(out, derived, explicit=set_keys | set(given))


# ----------------------------------------------------------------------------------------------------------
# What a config holds, the work directory, the checks.

def describe(cfg) -> str:
    """One line: the network, the teacher and DMD recipes, N (what a preset holds)."""
    net = cfg.net_kwargs
    if cfg.net == "adm":
        net_text = (f"ADM {net.get('img_resolution')}x{net.get('img_resolution')} C{net.get('model_channels')} "
                    f"x{list(net.get('channel_mult', []))} {net.get('num_blocks')} blocks"
                    + (f" {net['label_dim']} classes" if net.get("label_dim") else ""))
    else:
        net_text = f"MLP {list(configs.mlp_features(cfg))}"
    t, d = cfg.teacher, cfg.distill
    snaps = ",".join(str(s) for s in cfg.snapshots())
    return (f"{net_text}; teacher {t.steps} steps, batch {t.batch}, lr {t.lr:g}; DMD {d.iterations} iterations "
            f"per snapshot ({snaps}), batch {d.batch}, lr {d.lr_gen:g}/{d.lr_fake:g}, warm-up {d.warmup}, "
            f"1:{d.gen_every}; N={cfg.eval_n}; {cfg.compute_dtype}")


def echo(*values, file=None, **kwargs) -> None:
    """`print` on process 0 only (multi-host: one process reports; every process runs the same code)."""
    from dmdjax import parallel
    if parallel.is_main():
        print(*values, file=file, flush=True, **kwargs)


def print_config_and_exit(cfg, args, extra: dict | None = None, others: Sequence = ()) -> None:
    """With --print_config: the resolved config (and `extra`) as JSON on stdout, then every check of `check`
    (cfg and `others`): exit 0 when the config is valid, else the ConfigError (`run` prints it, exit status 2)."""
    if getattr(args, "print_config", False):
        echo(json.dumps({"preset": args.preset, "workdir": str(workdir(cfg, args)), **(extra or {}),
                         "config": cfg.to_dict()}, indent=1))
        check(cfg, args, others)
        raise SystemExit(0)


def workdir(cfg, args, name: str | None = None) -> Path:
    """--workdir, else runs/<config name> (or runs/<name>)."""
    return Path(args.workdir) if args.workdir else Path(RUNS_DIR) / (name or cfg.name)


def check_workdir(path: str | os.PathLike) -> None:
    """Raise ConfigError unless `path` is, or can be made, a writable directory (nothing is left behind: a
    probe file in the nearest existing directory is created and removed)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"--workdir {path} is a file, not a directory; choose another --workdir")
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"--workdir {path}: {existing} is a file, not a directory; choose another --workdir")
    try:                        # os.access says yes to root on read-only mounts and /proc: try a file
        fd, probe = tempfile.mkstemp(prefix=".dmdjax-write-test-", dir=existing)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        what = "is not writable" if existing == path else f"cannot be created ({existing} is not writable)"
        raise ConfigError(f"--workdir {path} {what} ({e.strerror}); choose another --workdir") from None


def check(cfg, args, configs_to_check: Sequence = (), work: Path | None = None):
    """Every config error the run would meet, before any training and before config.json is written: sizes
    (`Config.validate`), DMD lengths that are not whole 1:gen_every rounds, batch sizes that do not split over the
    devices, an unusable work directory. Returns the device mesh. Raises ConfigError."""
    from dmdjax import parallel
    try:
        mesh = device_mesh(args)
    except ValueError as e:
        raise ConfigError(f"--devices: {e}") from None
    for c in (cfg, *configs_to_check):
        try:
            c.validate()
        except ValueError as e:
            raise ConfigError(str(e)) from None
        d = c.distill
        for flag, name, value in [("--distill_iterations", "distill.iterations", d.iterations),
                                  ("--set distill.chunk", "distill.chunk", d.chunk),
                                  ("--set distill.ckpt_every", "distill.ckpt_every", d.ckpt_every)]:
            if value and value % d.gen_every:
                fix = max(d.gen_every, round(value / d.gen_every) * d.gen_every)
                raise ConfigError(f"{name} = {value} is not a multiple of {d.gen_every} (one DMD round: "
                                  f"{d.gen_every - 1} fake-score updates and 1 generator update, "
                                  f"distill.gen_every); use {flag}={fix}")
        for name, batch in [("teacher.batch", c.teacher.batch), ("distill.batch", d.batch)]:
            try:
                parallel.check_batch(batch, mesh)
            except ValueError as e:
                raise ConfigError(f"{name}: {e}; or --devices=N with N dividing {batch}") from None
    check_workdir(work if work is not None else workdir(cfg, args))
    return mesh


# Seconds per step of the paper MNIST ADM (C_base 64, 32x32), float32, batch 32, on a 2-core CPU; the source
# measurement is in docs/performance.md.
_PAPER_ADM_S = {"teacher": 6.87, "generator": 17.66, "fake": 8.75}


def _adm_work(net: dict) -> float:
    """The ADM's convolution work up to a constant: sum over resolution levels of (channels)^2 x pixels x blocks."""
    c, res, blocks = net.get("model_channels", 64), net.get("img_resolution", 32), net.get("num_blocks", 3)
    return sum((c * m) ** 2 * (res / 2 ** i) ** 2 * blocks for i, m in enumerate(net.get("channel_mult", (1, 2, 3, 4))))


def cpu_hours_estimate(cfg, cores: int | None = None, work: str | Path | None = None) -> float | None:
    """Rough hours of teacher training and distillation of cfg on a CPU: the paper ADM's measured step times
    scaled by batch, the network's convolution work (`_adm_work`) and 2 / cores; with `work` (a run directory)
    only what is left: teacher steps after its latest checkpoint, students without results.json from their
    latest checkpoint on. None for networks other than the ADM."""
    if cfg.net != "adm":
        return None
    from dmdjax.nets.adm import mnist_config
    from dmdjax.record import finished_checkpoint
    cores = cores or os.cpu_count() or 2
    scale = _adm_work(cfg.net_kwargs) / _adm_work(mnist_config()) * 2 / cores
    d = cfg.distill
    done = (lambda path: (finished_checkpoint(Path(work) / path) or 0)) if work is not None else (lambda path: 0)
    dmd_s = (_PAPER_ADM_S["generator"] + (d.gen_every - 1) * _PAPER_ADM_S["fake"]) / d.gen_every
    teacher_steps = max(cfg.teacher.steps - done("teacher/ckpt"), 0)
    teacher_s = teacher_steps * _PAPER_ADM_S["teacher"] * cfg.teacher.batch / 32
    iterations = sum(0 if work is not None and (Path(work) / f"student_{s}" / "results.json").exists()
                     else max(d.iterations - done(f"student_{s}/ckpt"), 0) for s in cfg.snapshots())
    distill_s = iterations * dmd_s * d.batch / 32
    return (teacher_s + distill_s) * scale / 3600


def announce(cfg, args, out=None, warn_hours: float = 1.0) -> None:
    """Print (process 0) the first line of a run: the preset (and why it was chosen), what it holds, the work
    directory; on a CPU-only host whose estimated time exceeds `warn_hours`, a warning with the estimate follows."""
    import jax
    out = out or sys.stdout
    why = ""
    if getattr(args, "preset_auto", False):
        why = (" (default for this CPU-only host; --preset=paper for the paper's settings)" if args.preset == "cpu"
               else f" (default: JAX's backend is {jax.default_backend()})")
    echo(f"preset {args.preset}{why}: {cfg.name}: {describe(cfg)}; workdir {workdir(cfg, args)}", file=out)
    if jax.default_backend() == "cpu":
        hours = cpu_hours_estimate(cfg, work=workdir(cfg, args))
        if hours is not None and hours > warn_hours:
            size = f"{hours:.1f} h" if hours < 10 else f"{hours:,.0f} h ({hours / 24:,.1f} days)"
            faster = "--preset=cpu, " if args.preset != "cpu" else ""
            echo(f"warning: on this CPU-only host ({os.cpu_count()} cores) this run needs roughly {size} of "
                 f"training (estimated from measured step times); {faster}fewer --teacher_steps / "
                 f"--distill_iterations or a GPU/TPU take less. Rerunning the same command resumes.", file=sys.stderr)


def device_mesh(args):
    """The `data` mesh the experiment runs on (after `start`)."""
    from dmdjax import parallel
    return parallel.data_mesh(args.devices)


# ----------------------------------------------------------------------------------------------------------
# MNIST.

def snapshot_list(text: str) -> tuple[int, ...]:
    try:
        steps = tuple(sorted({positive_int(t) for t in text.split(",") if t.strip()}))
    except argparse.ArgumentTypeError as e:
        raise argparse.ArgumentTypeError(f"--snapshots takes comma-separated positive integers: {e}") from None
    if not steps:
        raise argparse.ArgumentTypeError("--snapshots needs at least one step, e.g. 1024,2048,4096,8192")
    return steps


def add_mnist_flags(parser: argparse.ArgumentParser, divisors: Sequence[int]) -> None:
    """--mnist_dir and --snapshots (its default: T / d for each of the experiment's snapshot `divisors`)."""
    parser.add_argument("--mnist_dir", default=None,
                        help="directory with the four original MNIST .gz files (offline; else DMDJAX_MNIST_DIR, "
                             "else TFDS downloads them)")
    parser.add_argument("--snapshots", type=snapshot_list,
                        help="teacher steps to keep and distill, e.g. 1024,2048,4096,8192 (<= the teacher's "
                             "steps T); default: " + ", ".join("T" if d == 1 else f"T/{d}" for d in divisors))


def experiment_main(argv, doc: str, experiment, add_flags: Callable | None = None,
                    options: Callable | None = None, load_options: Callable | None = None) -> dict:
    """An experiment's main: its flags (`add_flags(parser)` beside the common ones), its config (`configure`:
    `experiment.get_config(preset, **options(args))` with the common flags), every check, the data
    (`data.load(cfg, **load_options(args))`), `pipeline.run`. Prints and returns the summary."""
    from dmdjax import data, pipeline
    parser = make_parser(doc)
    add_common_flags(parser, presets=experiment.get_config)
    if add_flags is not None:
        add_flags(parser)
    args = parse(parser, argv)
    start(args)                  # before any JAX computation: XLA:CPU tuning on a CPU-only host, --distributed
    cfg = configure(experiment, args, **(options(args) if options is not None else {}))
    print_config_and_exit(cfg, args)
    mesh = check(cfg, args)      # every config error, before data, training and config.json
    work = workdir(cfg, args)
    announce(cfg, args)
    dataset = data.load(cfg, **(load_options(args) if load_options is not None else {}))
    summary = pipeline.run(cfg, dataset, work, mesh=mesh, progress=not args.quiet, results_dir=args.results_dir)
    held_out = {k: summary[k] for k in ("classifier_test_accuracy", "teacher_quality") if k in summary}
    echo(json.dumps({"workdir": str(work), "delta_e": summary["table"], "with_ci": summary["table_ci"],
                     **held_out}, indent=1))
    return summary


def study_main(argv, doc: str, name: str, add_flags: Callable, configs_of: Callable, run_study: Callable,
               brief: Callable) -> dict:
    """A study's main (experiments/ablation.py, dynamics.py, dimension_sweep.py): the common flags and the study's
    (`add_flags(parser)`), `configs_of(args)` -> every sub-run's Config (--print_config shows them all, `check`
    checks them all), the work directory (default runs/<name>-<preset>), then `run_study(args, workdir, mesh)`.
    Prints `brief(result)` as JSON and returns the result."""
    parser = make_parser(doc)
    add_common_flags(parser)
    add_flags(parser)
    args = parse(parser, argv)
    start(args)                  # before any JAX computation: XLA:CPU tuning on a CPU-only host, --distributed
    preset = resolve_preset(args)
    cfgs = list(configs_of(args))
    print_config_and_exit(cfgs[0], args, {"all": [c.to_dict() for c in cfgs]}, cfgs[1:])
    work = workdir(cfgs[0], args, f"{name}-{preset}")
    mesh = check(cfgs[0], args, cfgs[1:], work=work)
    announce(cfgs[0], args)
    result = run_study(args, work, mesh)
    echo(json.dumps(brief(result), indent=1))
    return result


def mnist_main(argv, experiment, doc: str) -> dict:
    """The MNIST experiments' main (`experiment_main` with --mnist_dir and --snapshots): mnist_uncond, mnist_cond,
    mnist_trend and mnist_trend_cond differ only in their config module (which names its SNAPSHOT_DIVISORS)."""
    add_flags = lambda parser: add_mnist_flags(parser, experiment.SNAPSHOT_DIVISORS)
    return experiment_main(argv, doc, experiment, add_flags,
                           load_options=lambda args: {"mnist_dir": args.mnist_dir})


# ----------------------------------------------------------------------------------------------------------
# The entry point.

def _user_errors() -> tuple[type[BaseException], ...]:
    from dmdjax.checkpoint import CheckpointError
    from dmdjax.data.mnist import MnistUnavailableError
    return ConfigError, CheckpointError, MnistUnavailableError


def run(main: Callable[[list[str]], Any], argv: Sequence[str] | None = None) -> None:
    """An experiment's `__main__`: `main(argv)`; a user error (ConfigError, a checkpoint that belongs to another
    config, MNIST unavailable) is printed as one line `error: ...` and exits with status 2. With --debug or
    DMDJAX_DEBUG=1 the traceback is shown instead."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get(DEBUG_ENV, "").strip() not in ("", "0")
    try:
        main(argv)
    except _user_errors() as e:
        if debug:
            raise
        message = " ".join(str(e).split())
        print(f"error: {message}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
