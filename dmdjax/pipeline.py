"""The one experiment pipeline shared by every experiment (they differ only in config):

    train teacher (keep snapshots) -> for each snapshot: distill a one-step student -> evaluate on N shared
    noises (`dmdjax.evaluation`) -> figures (`dmdjax.report`) -> results.json.

Layout of a work directory:
    config.json, results.json (summary over snapshots; `complete` / `pending` while students remain),
        wall_s.json (each stage's wall time, summed over invocations: results.json's teacher_wall_s,
        distill_wall_s, evaluate_wall_s and total_wall_s)
    teacher/ckpt (Orbax: latest + snapshots), teacher/metrics.jsonl
    student_<teacher step>/ckpt, metrics.jsonl (per iteration; the DM loss per generator iteration), samples.npz,
        results.json, *.png; with `record.eval_every`: record.jsonl (the convergence record, `dmdjax.record`),
        record_ref.npz (Phi_K, Phi_1 on the record's noises) and convergence.png
    teacher/ and student_<step>/ also hold TensorBoard event files: the logged metrics as scalars, the student's
        figures as images (`tensorboard --logdir runs/`)
Every stage resumes: rerunning the same command continues from the last checkpoint and skips finished work.
Multi-host (`dmdjax.parallel`): every process runs the whole pipeline and computes the same numbers; process 0
alone writes the files above (Orbax's checkpoints: each process its share), and decisions read from them (a
finished student, cached reference samples) are process 0's.
"""
from __future__ import annotations

import contextlib
import functools
import json
import time
from pathlib import Path
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from dmdjax import distill, evaluation, figures, files, loop, nets, parallel, record, report, teacher, tensorboard
from dmdjax import summary as schema
from dmdjax.checkpoint import Checkpointer, check_config
from dmdjax.data import Dataset
from dmdjax.config import Config, keys

__all__ = ["train_teacher", "teacher_snapshot", "distill_student", "distill_and_evaluate", "combine_callbacks", "run",
           "write_summary", "export_results", "build_model", "evaluate_student", "checkpoint_bytes", "EVIDENCE",
           "STUDENT_EVIDENCE", "WALL_TIMES", "wall_time", "read_wall_times"]


def build_model(cfg: Config, data: Dataset | None = None) -> nets.Denoiser:
    """The Denoiser of cfg (`nets.build` from cfg.net, cfg.net_kwargs, cfg.compute_dtype)."""
    return nets.build(cfg.net, cfg.net_kwargs, cfg.compute_dtype)


@functools.lru_cache(maxsize=8)
def _teacher_step(model, tcfg: teacher.TeacherConfig, sample: Callable, seed: int, mesh):
    """Built once per (model, config, data, seed, mesh): the same function object keeps the jit cache warm."""
    return teacher.step_fn(model, tcfg, sample, keys(seed)["teacher"], mesh)


@functools.lru_cache(maxsize=8)
def _distill_step(model, scfg: distill.StepConfig, seed: int, label_dim: int, shape: tuple, mesh, sample=None):
    """Callers pass `DistillConfig.step()` (so runs differing only in length share the compiled step) and the
    Dataset's `sample` only when a term reads the data."""
    return distill.make_step(model, scfg, keys(seed)["distill"], label_dim, shape, mesh, sample)


def train_teacher(cfg: Config, data: Dataset, workdir: Path, mesh=None, progress: bool = True,
                  tick: Callable | None = None):
    """Train (or resume) the teacher; returns (model, Checkpointer holding the snapshots, final state). `tick()`
    runs after every chunk (`wall_time`'s)."""
    model = build_model(cfg, data)
    k = keys(cfg.seed)
    example = jnp.zeros((2,) + data.shape)
    state = teacher.create_state(model, cfg.teacher, k["init"], example, data.label_dim)
    state = parallel.replicate(state, mesh)
    step = _teacher_step(model, cfg.teacher, data.sample, cfg.seed, mesh)
    ckpt = Checkpointer(workdir / "teacher" / "ckpt", keep_steps=cfg.snapshots())
    consts = parallel.replicate(data.consts, mesh)
    state = loop.run_loop(step, state, consts, num_steps=cfg.teacher.steps, ckpt=ckpt,
                          log_path=workdir / "teacher" / "metrics.jsonl", chunk=cfg.teacher.chunk,
                          ckpt_every=cfg.teacher.ckpt_every, keep_steps=cfg.snapshots(), desc="teacher",
                          progress=progress, on_chunk=tick)
    return model, ckpt, state


def checkpoint_bytes(cfg: Config, data: Dataset) -> dict:
    """The disk a finished `run` of cfg keeps in checkpoints (Orbax, float32 arrays; shapes by `jax.eval_shape`,
    nothing computed): the teacher's kept steps (its snapshots and the latest two) and each student's latest
    two. Returns {"teacher_state", "student_state": bytes per checkpoint, "teacher_kept", "student_kept":
    counts, "total": bytes}; evaluation outputs and logs come on top (a few MB per student)."""
    from dmdjax.checkpoint import KEEP_LATEST
    model = build_model(cfg, data)
    size = lambda tree: sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree))
    key = keys(cfg.seed)["init"]
    args = teacher.init_args(key, jnp.zeros((2,) + tuple(data.shape)), data.label_dim)
    params = jax.eval_shape(lambda *a: model.init(*a)["params"], *args)
    state_cls = teacher.EmaTrainState if cfg.teacher.ema else teacher.TrainState
    t_state = jax.eval_shape(lambda p: state_cls.create(p, cfg.teacher.optimizer()), params)
    dcfg = cfg.distill
    active = distill.terms(dcfg, model, tuple(data.shape), data.label_dim, data.sample)
    s_state = jax.eval_shape(lambda p, k: distill.init_state(p, dcfg.step(), distill.term_params(active, k)),
                             t_state.params, key)
    snaps, steps = set(cfg.snapshots()), cfg.teacher.steps
    saved = sorted(set(range(cfg.teacher.ckpt_every, steps + 1, cfg.teacher.ckpt_every)) | snaps | {steps})
    teacher_kept = len(snaps | set(saved[-KEEP_LATEST:]))
    student_saved = set(range(dcfg.ckpt_every, dcfg.iterations + 1, dcfg.ckpt_every)) | {dcfg.iterations}
    student_kept = min(KEEP_LATEST, len(student_saved))
    t_bytes, s_bytes = size(t_state), size(s_state)
    return {"teacher_state": t_bytes, "student_state": s_bytes, "teacher_kept": teacher_kept,
            "student_kept": student_kept,
            "total": t_bytes * teacher_kept + s_bytes * student_kept * len(cfg.snapshots())}


def teacher_snapshot(ckpt: Checkpointer, template_state, step: int, tcfg: teacher.TeacherConfig):
    """The weights of the teacher snapshot at `step` that Phi_K and DMD use (`teacher.distilled_params`: its EMA
    when `tcfg` keeps one and distills it, else the raw params)."""
    return teacher.distilled_params(ckpt.restore(template_state, step), tcfg)


def distill_student(cfg: Config, data: Dataset, model, teacher_params, outdir: Path, mesh=None, progress=True,
                    tick: Callable | None = None, callback: Callable | None = None, callback_every=()):
    """Distill (or resume distilling) a one-step student from `teacher_params`; returns the final DMDState.
    `callback(step, state) -> stop` (optional) runs in the loop at its start and at the multiples of
    `callback_every` (one interval or several; `loop.run_loop`), beside the convergence record's.

    The step's constants are `distill.step_consts` of the active terms (`distill.terms`): with DMD2's GAN term the
    Dataset's consts (real data) and the classifier head in the fake-score state; with DMD1's regression term N_ref
    teacher pairs, computed once and kept in outdir/regression_pairs.npz."""
    dcfg = cfg.distill
    shape = tuple(data.shape)
    active = distill.terms(dcfg, model, shape, data.label_dim, data.sample)
    sample = data.sample if any(t.uses_data for t in active) else None   # else one step serves every Dataset
    step = _distill_step(model, dcfg.step(), cfg.student_seed(), data.label_dim, shape, mesh, sample)
    key = keys(cfg.student_seed())["distill"]
    consts = distill.step_consts(active, teacher_params, key, data.consts, cache_dir=outdir)
    teacher_params = parallel.replicate(teacher_params, mesh)
    state = parallel.replicate(distill.init_state(teacher_params, dcfg, distill.term_params(active, key)), mesh)
    consts = parallel.replicate(consts, mesh)
    ckpt = Checkpointer(outdir / "ckpt")
    recorder = make_recorder(cfg, data, model, teacher_params, outdir, ckpt) if cfg.record.eval_every else None
    both, every = combine_callbacks((recorder, cfg.record.eval_every), (callback, callback_every))
    try:
        state = loop.run_loop(step, state, consts, num_steps=cfg.distill.iterations, ckpt=ckpt,
                              log_path=outdir / "metrics.jsonl", chunk=cfg.distill.chunk,
                              ckpt_every=cfg.distill.ckpt_every, desc=f"distill {outdir.name}", progress=progress,
                              steps_per_call=cfg.distill.gen_every, callback=both, callback_every=every,
                              on_chunk=tick)
    finally:
        if recorder is not None:
            recorder.close()
    parallel.sync(f"dmdjax distilled {outdir}")   # multi-host: the others read the log and record process 0 wrote
    return state


def combine_callbacks(*parts) -> tuple[Callable | None, tuple[int, ...]]:
    """One `loop.run_loop` callback from (callback, callback_every) pairs (None callbacks and 0 intervals are left
    out): each callback runs at the loop's start step and then at the multiples of its own interval(s), all of them
    at a step (none is skipped when another says stop); the loop stops when any says stop. Returns (the callback or
    None, every interval)."""
    parts = [(cb, loop.callback_intervals(every)) for cb, every in parts if cb is not None]
    parts = [(cb, every) for cb, every in parts if every]
    if not parts:
        return None, ()
    at_start = [True]                               # the first call is the loop's start step

    def callback(step: int, state) -> bool:
        first, at_start[0] = at_start[0], False
        stops = [bool(cb(step, state)) for cb, every in parts if first or any(step % e == 0 for e in every)]
        return any(stops)
    return callback, tuple(sorted({e for _, every in parts for e in every}))


def make_recorder(cfg: Config, data: Dataset, model, teacher_params, outdir: Path, ckpt: Checkpointer
                  ) -> record.Recorder:
    """The convergence record's callback: G on the first `record.n` shared noises against Phi_K and Phi_1 there,
    which are computed once per student and kept in outdir/record_ref.npz."""
    z, labels = evaluation.eval_noise(cfg, data, cfg.record.n)
    path = outdir / "record_ref.npz"
    if parallel.agree(path.exists()):
        with np.load(path) as f:
            ref, phi_1 = f["ref"], f["phi_1"]
    else:
        t0 = time.perf_counter()
        phi = lambda k: evaluation.teacher_samples(cfg, model, teacher_params, z, labels, k)
        ref, phi_1 = phi(cfg.k_ref), phi(1)
        if parallel.is_main():
            files.save_npz(path, ref=ref, phi_1=phi_1, seconds=time.perf_counter() - t0)
    generate = lambda params: evaluation.student_samples(cfg, model, params, z, labels)
    return record.Recorder(cfg.record, outdir / "record.jsonl", ref, phi_1, generate,
                           lambda: record.finished_checkpoint(ckpt.directory),
                           seed=cfg.seed, main=parallel.is_main())


def record_summary(cfg: Config, outdir: Path, final_step: int) -> dict:
    """results.json's account of the convergence record: the verdict (`record.convergence`), where the student
    stopped, the record's total evaluation time (record_eval_s, over its rows) and the time Phi_K and Phi_1 on its
    noises took (record_ref_s); process 0 draws outdir/convergence.png."""
    rows = record.read_record(outdir / "record.jsonl")
    verdict = record.convergence(rows, cfg.record)
    with np.load(outdir / "record_ref.npz") as f:
        ref_s = float(f["seconds"]) if "seconds" in f else None
    if parallel.is_main():
        figures.save(figures.convergence_record(rows, evaluation.dm_curve(outdir), cfg.record,
                                                f"{cfg.name}, {outdir.name}"), outdir / "convergence.png")
    stopped = final_step < cfg.distill.iterations
    return {"converged": verdict["converged"], "convergence": {
        **verdict, "until_converged": cfg.record.until_converged, "iterations": final_step,
        "stopped_early": stopped, "max_iterations": cfg.distill.iterations, "eval_every": cfg.record.eval_every,
        "record_n": cfg.record.n, "record_evals": len(rows),
        "record_eval_s": float(sum(r.get("eval_s", 0.0) for r in rows)), "record_ref_s": ref_s}}


def distill_and_evaluate(cfg: Config, data: Dataset, model, teacher_params, outdir: Path, clock: Path,
                         stage: str = "", mesh=None, progress: bool = True, callback: Callable | None = None,
                         callback_every=()) -> dict:
    """One student from a given teacher: distill (or resume distilling) into `outdir` (`distill_student`, with the
    optional loop `callback`), evaluate it (`evaluate_student`); the seconds of both stages are summed in the
    wall-time file `clock` under distill<stage> and evaluate<stage>. Returns the student's results: the evaluation,
    distill_wall_s, evaluate_wall_s and, with the convergence record, its account (`record_summary`)."""
    if parallel.is_main():
        outdir.mkdir(parents=True, exist_ok=True)
    with wall_time(clock, f"distill{stage}") as tick:
        state = distill_student(cfg, data, model, teacher_params, outdir, mesh, progress, tick, callback,
                                callback_every)
    with wall_time(clock, f"evaluate{stage}"):
        result = evaluate_student(cfg, data, model, teacher_params, state.gen.params, outdir)
    walls = read_wall_times(clock)
    result = {**result, "distill_wall_s": walls.get(f"distill{stage}", 0.0),
              "evaluate_wall_s": walls.get(f"evaluate{stage}", 0.0)}
    if cfg.record.eval_every:
        result.update(record_summary(cfg, outdir, int(state.step)))
    return result


def evaluate_student(cfg: Config, data: Dataset, model, teacher_params, gen_params, outdir: Path) -> dict:
    """`evaluation.evaluate` on the shared noises, then the student's figures (`report.student_figures`, also as
    TensorBoard images); returns the numbers for results.json."""
    result, arrays = evaluation.evaluate(cfg, data, model, teacher_params, gen_params, outdir)
    if parallel.is_main():
        report.student_figures(cfg, data, outdir, arrays, result, evaluation.dm_curve(outdir), data.train_images)
        tensorboard.write_pngs(outdir, outdir.glob("*.png"), step=cfg.distill.iterations)
    return result


def run(cfg: Config, data: Dataset, workdir: str | Path, mesh=None, progress: bool = True,
        results_dir: str | Path | None = None, student_callback: Callable | None = None) -> dict:
    """The whole experiment; idempotent and resumable. Returns the summary written to workdir/results.json, and
    with `results_dir` also copies the evidence there (`export_results`). `student_callback(snap, model,
    teacher_params, outdir)` (optional) runs before each student this invocation distills and returns None or
    (callback, callback_every) for its distillation loop (`distill_student`; e.g. the dynamics study's record)."""
    cfg.validate()
    workdir = Path(workdir)
    check_config(workdir / "config.json", cfg.to_dict())
    t0 = time.perf_counter()
    clock = workdir / WALL_TIMES
    with wall_time(clock, "teacher") as tick:
        model, ckpt, final_state = train_teacher(cfg, data, workdir, mesh, progress, tick)
    summary = {"config": cfg.to_dict(), "teacher_wall_s": read_wall_times(clock).get("teacher", 0.0),
               "snapshots": {}}
    for snap in cfg.distill_order():
        outdir = workdir / f"student_{snap}"
        if parallel.is_main():
            outdir.mkdir(parents=True, exist_ok=True)
        result_path = outdir / "results.json"
        if parallel.agree(result_path.exists()):
            summary["snapshots"][str(snap)] = json.loads(result_path.read_text())
            continue
        with wall_time(clock, f"distill_{snap}"):             # the snapshot's restore counts as distillation
            teacher_params = teacher_snapshot(ckpt, final_state, snap, cfg.teacher)
            extra = student_callback(snap, model, teacher_params, outdir) if student_callback is not None else None
        result = {"teacher_steps": snap, **distill_and_evaluate(cfg, data, model, teacher_params, outdir, clock,
                                                                f"_{snap}", mesh, progress, *(extra or ()))}
        if parallel.is_main():
            files.write_json(result_path, result)
        summary["snapshots"][str(snap)] = result
        if len(summary["snapshots"]) < len(cfg.snapshots()):   # a partial summary after every student
            write_summary(cfg, workdir, summary, t0, results_dir)
    return write_summary(cfg, workdir, summary, t0, results_dir)


def write_summary(cfg: Config, workdir: Path, summary: dict, t0: float, results_dir=None) -> dict:
    """Write workdir/results.json (and the run's figures) from the students finished so far; `complete` says
    whether every snapshot has its student, `pending` lists the rest. Exported to `results_dir` when given.
    Every process returns the summary, process 0 writes it."""
    main = parallel.is_main()
    summary = schema.run_summary(summary, cfg.snapshots(), cfg.distill_order(), read_wall_times(workdir / WALL_TIMES),
                                 time.perf_counter() - t0)
    curves = {f"teacher {s}": evaluation.dm_curve(workdir / f"student_{s}") for s in cfg.snapshots()
              if str(s) in summary["snapshots"] and (workdir / f"student_{s}" / "metrics.jsonl").exists()}
    if main:
        report.run_figures(summary, workdir, curves, cfg.k_ref)
        files.write_json(workdir / "results.json", summary)
        if results_dir is not None:
            export_results(workdir, results_dir)
    return summary


EVIDENCE = ("results.json", "dm_loss.png", "trend.png", "teacher_quality.png")
STUDENT_EVIDENCE = ("results.json", "record.jsonl", "convergence.png", "quadruples.png", "quintuples.png",
                    "pairing.png", "distances.png", "pca.png", "boundary.png", "heatmap.png", "memorization.png")


def export_results(workdir: str | Path, results_dir: str | Path) -> list[Path]:
    """Copy a finished run's summary and key figures (`EVIDENCE`, and `STUDENT_EVIDENCE` of every student; no
    checkpoints or sample arrays) from `workdir` to `results_dir` (e.g. results/<experiment>/, committed as the
    evidence of the numbers README quotes). Returns the files written."""
    workdir, results_dir = Path(workdir), Path(results_dir)
    written = []
    sources = [(workdir / name, results_dir / name) for name in EVIDENCE]
    for student in sorted(workdir.glob("student_*")):
        sources += [(student / name, results_dir / student.name / name) for name in STUDENT_EVIDENCE]
    for src, dst in sources:
        if src.is_file():
            files.copy_file(src, dst)
            written.append(dst)
    return written


WALL_TIMES = "wall_s.json"   # per-stage wall-clock seconds, summed over every invocation of the run


@contextlib.contextmanager
def wall_time(path: Path, stage: str):
    """Add the wall-clock seconds the block takes to `stage`'s total in the JSON file `path`, also when the block
    raises. Yields `tick()`, which adds the seconds so far at once (the training loops call it after every chunk),
    so a killed process loses at most the time since its last tick."""
    last = [time.perf_counter()]

    def tick() -> None:
        now = time.perf_counter()
        if parallel.is_main():
            totals = read_wall_times(path)
            totals[stage] = totals.get(stage, 0.0) + now - last[0]
            files.write_json(path, totals)
        last[0] = now

    try:
        yield tick
    finally:
        tick()


def read_wall_times(path: Path) -> dict[str, float]:
    """{stage: seconds summed over invocations} written by `wall_time`; {} before the first."""
    return json.loads(path.read_text()) if path.exists() else {}
