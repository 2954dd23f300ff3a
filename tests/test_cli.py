"""The experiments' command line: --set / --print_config / --help, the backend-dependent defaults (preset,
workdir, snapshots), the first line and the CPU-time warning, and the one rule for config errors (one line,
exit 2, nothing written, before any training)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dmdjax import cli, configs, xla_cpu

REPO = Path(__file__).resolve().parents[1]

from experiments import mnist_uncond, toy  # noqa: E402


def printed_config(main, argv, capsys) -> dict:
    with pytest.raises(SystemExit) as exit_info:
        main(argv + ["--print_config"])
    assert exit_info.value.code == 0
    return json.loads(capsys.readouterr().out)


def one_line_error(main, argv, capsys) -> str:
    """cli.run(main, argv) must exit 2 with a single `error: ...` line on stderr and nothing on stdout."""
    with pytest.raises(SystemExit) as exit_info:
        cli.run(main, argv)
    out, err = capsys.readouterr()
    assert exit_info.value.code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    assert "preset" not in out    # failed before the first line of a run
    return lines[0]


def test_set_is_typed_and_print_config_shows_it(capsys):
    shown = printed_config(mnist_uncond.main, ["--preset=cpu", "--set", "distill.lr_gen=3e-5", "--set",
                                               "distill_snapshots=1,2", "--set", "teacher.clip_norm=none",
                                               "--set", "distill.gan=true", "--set", "net_kwargs.model_channels=48",
                                               "--set", "distill.iterations=5e2"], capsys)
    cfg = shown["config"]
    assert cfg["distill"]["lr_gen"] == 3e-5 and cfg["distill"]["lr_fake"] == 1e-4
    assert cfg["distill"]["gan"] is True and cfg["distill"]["iterations"] == 500
    assert cfg["teacher"]["clip_norm"] is None and cfg["net_kwargs"]["model_channels"] == 48
    base = configs.mnist("cpu")
    sets = cli.apply_sets(base, ["distill_snapshots=1,2", "distill.lr_gen=3e-5"])
    assert sets.distill_snapshots == (1, 2) and isinstance(sets.distill.lr_gen, float)   # tuples stay hashable
    assert hash(sets.distill.step()) != hash(base.distill.step())   # the compiled step's cache key


@pytest.mark.parametrize("assignment, message", [
    ("distill.lr_gne=3e-5", "unknown config key 'distill.lr_gne'; did you mean distill.lr_gen"),
    ("nope=1", "unknown config key 'nope'; known top-level keys: name, dataset, net"),
    ("teacher.batch=abc", "teacher.batch takes an integer, got 'abc'"),
    ("distill.gan=maybe", "distill.gan takes true/false"),
    ("teacher=3", "teacher is a group of fields"),
    ("distill.lr_gen", "--set takes KEY=VALUE"),
    ("distill.gan_max_timestep=0", "gan_max_timestep must lie in 1..1000"),
])
def test_set_errors_are_one_line(assignment, message, capsys, tmp_path):
    assert message in one_line_error(toy.main, ["--set", assignment, f"--workdir={tmp_path}"], capsys)


def test_config_errors_stop_before_training_and_config_json(tmp_path, capsys, monkeypatch):
    """16.3: each bad input is one line, exit 2, and nothing is written (no config.json, no teacher)."""
    from dmdjax import pipeline

    def no_training(*args, **kwargs):
        raise AssertionError("the run started")
    monkeypatch.setattr(pipeline, "run", no_training)
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    cases = [
        (["--distill_iterations=7"], "distill.iterations = 7 is not a multiple of 5", "w1"),
        (["--set", "distill.chunk=12"], "distill.chunk = 12 is not a multiple of 5", "w2"),
        (["--set", "distill.ckpt_every=999"], "use --set distill.ckpt_every=1000", "w3"),
        (["--eval_n=1"], "eval_n must be an integer >= 2", "w4"),
        (["--devices=64"], "--devices: num_devices=64", "w5"),
        ([], f"--workdir {a_file} is a file", None),
        ([f"--workdir={a_file / 'below'}"], "is a file, not a directory", None),
    ]
    for flags, message, work in cases:
        argv = ["--quiet", *flags] + ([f"--workdir={tmp_path / work}"] if work else
                                      [] if any(f.startswith("--workdir") for f in flags) else [f"--workdir={a_file}"])
        assert message in one_line_error(toy.main, argv, capsys), flags
        if work:
            assert not (tmp_path / work).exists()
    with pytest.raises(cli.ConfigError, match="multiple of 5"):     # --debug: the exception itself
        cli.run(toy.main, ["--distill_iterations=7", f"--workdir={tmp_path / 'w6'}", "--debug"])


def test_every_invalid_setting_is_refused_before_work(tmp_path, capsys, monkeypatch):
    """The whole resolved config is validated after every override, before anything is written or trained; with
    --print_config the config is printed, then the same error, exit 2."""
    from dmdjax import pipeline
    monkeypatch.setattr(pipeline, "run", lambda *a, **k: (_ for _ in ()).throw(AssertionError("the run started")))
    cases = [
        (["--set", "eval_ks=1,0"], "eval_ks = 1,0: every K"),
        (["--set", "teacher.lr=-1"], "teacher.lr must be a finite number > 0, got -1.0"),
        (["--set", "teacher.lr=nan"], "teacher.lr must be a finite number > 0"),
        (["--set", "distill.gen_every=0"], "distill.gen_every must be an integer >= 1, got 0"),
        (["--set", "net=unet"], "net = 'unet' is not a known network; choose one of mlp, adm"),
        (["--set", "compute_dtype=float13"], "compute_dtype must be one of"),
        (["--set", "teacher.ema_halflife_kimg=-5"], "teacher.ema_halflife_kimg must be a finite number >= 0"),
        (["--teacher_steps=100", "--set", "teacher.steps=300"], "give teacher.steps different values (100 and 300)"),
    ]
    for i, (flags, message) in enumerate(cases):
        work = tmp_path / f"w{i}"
        assert message in one_line_error(mnist_uncond.main, ["--preset=cpu", f"--workdir={work}", *flags],
                                          capsys), flags
        assert not work.exists()
    for flags, message in [(["--set", "eval_n=1"], "eval_n must be an integer >= 2"),
                           (["--set", "compute_dtype=float13"], "compute_dtype must be one of"),
                           (["--devices=3"], "--devices: num_devices=3")]:
        with pytest.raises(SystemExit) as exit_info:
            cli.run(mnist_uncond.main, ["--preset=cpu", f"--workdir={tmp_path / 'p'}", "--print_config", *flags])
        out, err = capsys.readouterr()
        assert exit_info.value.code == 2 and json.loads(out)["config"] and message in err, flags
        assert not (tmp_path / "p").exists()


def test_batch_must_split_over_the_devices(monkeypatch, tmp_path):
    class Mesh:        # what check() reads of a 4-device data mesh
        class devices:
            size = 4
    monkeypatch.setattr(cli, "device_mesh", lambda args: Mesh)
    args = toy.cli.make_parser("")
    cli.add_common_flags(args)
    args = args.parse_args([f"--workdir={tmp_path}", "--preset=cpu"])
    with pytest.raises(cli.ConfigError, match=r"teacher.batch: batch size 30 is not divisible by the 4 devices"):
        cli.check(configs.override(configs.toy.get_config(), **{"teacher.batch": 30}), args)
    assert cli.check(configs.toy.get_config(), args) is Mesh


def test_entry_point_error_is_one_line_without_traceback(tmp_path):
    """The real command: exit 2, one line on stderr, no config.json; --debug prints the traceback."""
    run = lambda *extra: subprocess.run(
        [sys.executable, str(REPO / "experiments" / "toy.py"), "--distill_iterations=7", f"--workdir={tmp_path}",
         *extra], capture_output=True, text=True, timeout=300, env=dict(os.environ, PYTHONPATH=str(REPO)))
    proc = run()
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip().splitlines() == [
        "error: distill.iterations = 7 is not a multiple of 5 (one DMD round: 4 fake-score updates and 1 generator "
        "update, distill.gen_every); use --distill_iterations=5"]
    assert not (tmp_path / "config.json").exists()


@pytest.mark.parametrize("backend, preset", [("cpu", "cpu"), ("gpu", "paper"), ("tpu", "paper")])
def test_default_preset_workdir_and_snapshots_follow_the_backend(backend, preset, monkeypatch, capsys):
    import jax
    monkeypatch.setattr(jax, "default_backend", lambda: backend)
    shown = printed_config(mnist_uncond.main, ["--teacher_steps=8192"], capsys)
    assert shown["preset"] == preset and shown["workdir"] == f"runs/mnist-uncond-{preset}"
    assert shown["config"]["teacher"]["steps"] == 8192
    assert shown["config"]["distill_snapshots"] == [1024, 2048, 4096, 8192]
    assert "snapshots" not in shown["config"]["teacher"]   # one list: Config.snapshots()
    explicit = printed_config(mnist_uncond.main, ["--preset=cpu", "--snapshots=64,8", "--workdir=w"], capsys)
    assert explicit["preset"] == "cpu" and explicit["workdir"] == "w"
    assert explicit["config"]["distill_snapshots"] == [8, 64]


def test_default_snapshots():
    assert configs.snapshot_steps(8192) == (1024, 2048, 4096, 8192)
    assert configs.snapshot_steps(1024) == (128, 256, 512, 1024)
    assert configs.snapshot_steps(4) == (1, 2, 4) and configs.snapshot_steps(1) == (1,)
    assert configs.snapshot_steps(8192, (16, 8, 4, 2, 1)) == (512, 1024, 2048, 4096, 8192)


def test_first_line_names_the_preset_and_a_paper_run_on_cpu_warns(capsys, tmp_path):
    parser = cli.make_parser("")
    cli.add_common_flags(parser)
    args = parser.parse_args([f"--workdir={tmp_path}"])
    cli.resolve_preset(args)          # this host is CPU-only
    cli.announce(configs.mnist(args.preset), args)
    out, err = capsys.readouterr()
    assert out.startswith("preset cpu (default for this CPU-only host; --preset=paper for the paper's settings): "
                          "mnist-uncond-cpu: ADM 16x16 C32") and "teacher 1024 steps" in out
    assert err == ""                  # the cpu preset: no warning
    args = parser.parse_args([f"--workdir={tmp_path}", "--preset=paper"])
    cli.resolve_preset(args)
    cli.announce(configs.mnist("paper"), args)
    out, err = capsys.readouterr()
    assert out.startswith("preset paper: mnist-uncond-paper: ADM 32x32 C64")
    assert err.startswith("warning: on this CPU-only host") and " days) of training" in err and "--preset=cpu" in err
    assert cli.cpu_hours_estimate(configs.mnist("paper"), cores=2) > 100 * cli.cpu_hours_estimate(
        configs.mnist("cpu"), cores=2)
    assert cli.cpu_hours_estimate(configs.toy.get_config()) is None


def test_the_time_estimate_counts_only_what_a_resumed_run_has_left(tmp_path):
    cfg = configs.override(configs.mnist_trend.get_config("cpu"), distill_snapshots=(512, 8192))
    est = lambda: cli.cpu_hours_estimate(cfg, cores=2, work=tmp_path)
    fresh = est()
    assert fresh == cli.cpu_hours_estimate(cfg, cores=2) > 0
    (tmp_path / "teacher" / "ckpt" / "8192").mkdir(parents=True)            # teacher finished
    students = est()
    assert 0 < students < fresh
    (tmp_path / "student_512").mkdir()
    (tmp_path / "student_512" / "results.json").write_text("{}")            # one student finished
    one = est()
    assert one == pytest.approx(students / 2)
    (tmp_path / "student_8192" / "ckpt" / str(cfg.distill.iterations // 2)).mkdir(parents=True)
    assert est() == pytest.approx(one / 2)                                  # the other half-way
    (tmp_path / "student_8192" / "results.json").write_text("{}")
    assert est() == 0


def test_help_shows_defaults_and_presets():
    parser = cli.make_parser(mnist_uncond.__doc__)
    cli.add_common_flags(parser, presets=configs.mnist_uncond.get_config)
    text = parser.format_help()
    flat = " ".join(text.split())
    assert "shared evaluation noises) (default: 0)" in flat and "only where the generator" in flat
    assert "(default: None)" not in flat and "(default: False)" not in flat
    assert "presets:\n  cpu: ADM 16x16 C32" in text and "paper: ADM 32x32 C64" in text and "50000 iterations" in text


@pytest.mark.parametrize("script, default", [("mnist_uncond", "T/8, T/4, T/2, T"), ("mnist_cond", "T/8, T/4, T/2, T"),
                                             ("mnist_trend", "T/16, T/8, T/4, T/2, T"),
                                             ("mnist_trend_cond", "T/16, T/8, T/4, T/2, T")])
def test_help_names_each_experiments_own_snapshots(script, default, capsys):
    """--help states the snapshots the experiment distills by default (mnist_trend: T/16 .. T, not T/8 .. T)."""
    import importlib
    main = importlib.import_module(f"experiments.{script}").main
    with pytest.raises(SystemExit):
        main(["--help"])
    flat = " ".join(capsys.readouterr().out.split())
    assert f"default: {default} " in flat or f"default: {default})" in flat, flat[-600:]
    cfg = getattr(configs, script).get_config("cpu")
    steps = cfg.teacher.steps
    assert tuple(cfg.distill_snapshots) == tuple(sorted(steps // int(d) if d else steps
                                                        for d in (p.strip().lstrip("T/") for p in default.split(","))))


@pytest.mark.slow
def test_the_promised_command_starts_with_the_cpu_preset(tmp_path, shared_dir):
    """`python experiments/mnist_uncond.py --teacher_steps=8192` on this CPU-only host: the first line says cpu."""
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "experiments" / "mnist_uncond.py"), "--teacher_steps=8192",
         f"--mnist_dir={shared_dir / 'data' / 'mnist'}", "--quiet"], cwd=tmp_path, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONPATH=str(REPO)))
    try:
        first = proc.stdout.readline()
    finally:
        proc.kill()
        proc.wait()
    assert first.startswith("preset cpu (default for this CPU-only host"), (first, proc.stderr.read()[-2000:])
    assert "teacher 8192 steps" in first and "1024,2048,4096,8192" in first
    assert "workdir runs/mnist-uncond-cpu" in first


def test_xla_tuning_only_on_a_cpu_only_host(monkeypatch):
    monkeypatch.setattr(xla_cpu, "_configured_platforms", lambda: "cpu")
    assert xla_cpu.cpu_only_host()
    monkeypatch.setattr(xla_cpu, "_configured_platforms", lambda: "tpu,cpu")
    assert not xla_cpu.cpu_only_host()
    monkeypatch.setattr(xla_cpu, "_configured_platforms", lambda: "")
    monkeypatch.setattr(xla_cpu, "_importable", lambda name: name == "libtpu")
    monkeypatch.setattr(xla_cpu.os.path, "exists", lambda path: path == "/dev/vfio/0")
    assert not xla_cpu.cpu_only_host()                      # TPU plugin and device
    monkeypatch.setattr(xla_cpu.os.path, "exists", lambda path: False)
    assert xla_cpu.cpu_only_host()                          # the plugin alone: JAX falls back to the CPU
    monkeypatch.setattr(xla_cpu, "cpu_only_host", lambda: False)
    monkeypatch.setenv("XLA_FLAGS", "--xla_dump_to=/x")
    assert xla_cpu.tune() == (False, False) and os.environ["XLA_FLAGS"] == "--xla_dump_to=/x"


def test_parse_has_no_side_effects(monkeypatch):
    calls = []
    monkeypatch.setattr(xla_cpu, "tune", lambda enable=True: calls.append(enable))
    parser = cli.make_parser("")
    cli.add_common_flags(parser)
    args = cli.parse(parser, ["--no_xla_tuning"])
    assert calls == []
    cli.start(args)
    assert calls == [False]


def test_compile_cache_dir_follows_flag_variable_and_default(monkeypatch, tmp_path):
    monkeypatch.delenv(cli.COMPILE_CACHE_ENV, raising=False)
    monkeypatch.setenv("DMDJAX_CACHE", str(tmp_path / "c"))
    assert cli.compile_cache_dir() == tmp_path / "c" / "jax"
    assert cli.compile_cache_dir(str(tmp_path / "flag")) == tmp_path / "flag"
    assert cli.compile_cache_dir("none") is None
    monkeypatch.setenv(cli.COMPILE_CACHE_ENV, "0")
    assert cli.compile_cache_dir() is None and cli.compile_cache_dir(str(tmp_path)) == tmp_path
    monkeypatch.setenv(cli.COMPILE_CACHE_ENV, str(tmp_path / "env"))
    assert cli.compile_cache_dir() == tmp_path / "env"


COMPILE_TWICE = """
import sys, time
from dmdjax import cli
parser = cli.make_parser("")
cli.add_common_flags(parser)
cli.start(cli.parse(parser, sys.argv[1:]))
import jax, jax.numpy as jnp
f = jax.jit(lambda x: jnp.tanh(jnp.cumsum(x ** 2) @ jnp.ones((64, 64))).sum())
print(float(f(jnp.arange(64.0))))
"""


@pytest.mark.slow
def test_a_rerun_reads_its_compiles_from_the_persistent_cache(tmp_path):
    """cli.start points JAX's persistent cache at --compile_cache: the first process writes its programs there,
    a second one finds them all (no new entry) and computes the same; 'none' writes nothing."""
    env = {**os.environ, "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}
    env.pop(cli.COMPILE_CACHE_ENV, None)
    run = lambda flag: subprocess.run([sys.executable, "-c", COMPILE_TWICE, flag], capture_output=True, text=True,
                                      env=env, timeout=120, check=True).stdout
    cache = tmp_path / "cc"
    first = run(f"--compile_cache={cache}")
    entries = sorted(p.name for p in cache.iterdir())
    assert entries and any(name.startswith("jit_") for name in entries)
    assert run(f"--compile_cache={cache}") == first
    assert sorted(p.name for p in cache.iterdir()) == entries
    env["DMDJAX_CACHE"] = str(tmp_path / "default")
    run("--compile_cache=none")
    assert not (tmp_path / "default").exists()


def test_help_lists_the_snapshots_the_command_distills(capsys):
    """mnist_uncond distills T/8..T and mnist_trend T/16..T by default: --help says so for each preset."""
    from experiments import mnist_trend
    for main, cpu, paper in [(mnist_uncond.main, "(128,256,512,1024)", "(1024,2048,4096,8192)"),
                             (mnist_trend.main, "(512,1024,2048,4096,8192)", "(512,1024,2048,4096,8192)")]:
        with pytest.raises(SystemExit):
            main(["--help"])
        lines = capsys.readouterr().out.split("presets:")[-1].splitlines()
        assert any(line.strip().startswith("cpu:") and f"per snapshot {cpu}," in line for line in lines)
        assert any(line.strip().startswith("paper:") and f"per snapshot {paper}," in line for line in lines)
