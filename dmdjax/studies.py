"""Studies, each a set of sub-runs of the one pipeline (`pipeline.run`) in sub-workdirs (each with its
own config.json, checkpoints, results.json and figures), plus a summary results.json and a figure:

    ablation   plain DMD vs + DMD2's GAN term vs + DMD1's regression term (L2), on toys and MNIST (Sec. 4.1.1)
    dynamics   Delta_E(Phi_K, G_t) on the N shared noises every M iterations, beside the DM loss (Sec. 4.2)
    sweep      toys embedded isometrically in R^D: Delta_E against D and against the MLP width (Sec. 3.3-3.4)

Every study resumes: rerunning the same command skips finished sub-runs and continues the unfinished one from
its last checkpoint. Sub-runs of one ablation share the teacher (a copy of the plain run's finished teacher).
Multi-host (`dmdjax.parallel`): every process runs the study, process 0 writes its files; the others wait for
it (`parallel.sync`) before they read what it wrote.
"""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Callable

import numpy as np

from dmdjax import configs, evaluation, figures, files, loop, metrics, parallel, pipeline
from dmdjax import summary as schema
from dmdjax.checkpoint import check_config
from dmdjax.data import Dataset, load, toy
from dmdjax.record import read_record
from dmdjax.config import Config

TOYS = toy.DATASETS


# ----------------------------------------------------------------------------------------------------------
# Helpers.

def dataset_list(text: str, allowed: tuple[str, ...] | None = None) -> tuple[str, ...]:
    """argparse type: a comma-separated, non-empty subset of `allowed` (default: `configs.study_datasets()`)."""
    import argparse
    allowed = configs.study_datasets() if allowed is None else allowed
    names = tuple(t.strip() for t in text.split(",") if t.strip())
    if not names or not set(names) <= set(allowed):
        raise argparse.ArgumentTypeError(f"datasets must be a comma-separated subset of {', '.join(allowed)}, "
                                         f"got {text!r}")
    return names


def data_for(**options) -> Callable:
    """cfg -> Dataset: `data.load(cfg, **options)`, each data set taking the options it knows (e.g. mnist_dir)."""
    return lambda cfg: load(cfg, **options)


def share_teacher(src: Path, dst: Path) -> None:
    """Give run directory `dst` the finished teacher of run directory `src` (copied, then renamed into place, so
    an interrupted copy is never mistaken for a teacher). No-op if dst already has one."""
    src, dst = Path(src), Path(dst)
    if parallel.agree((dst / "teacher").exists()):
        return
    if not (src / "teacher").is_dir():
        raise FileNotFoundError(f"no teacher in {src} to share")
    if parallel.is_main():
        dst.mkdir(parents=True, exist_ok=True)
        tmp = dst / "teacher.partial"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(src / "teacher", tmp)
        tmp.rename(dst / "teacher")
    parallel.sync(f"dmdjax.studies.share_teacher {dst}")


def final_result(summary: dict) -> dict:
    """The results of the last distilled snapshot of a pipeline.run summary."""
    return summary["snapshots"][str(max(int(s) for s in summary["snapshots"]))]


# ----------------------------------------------------------------------------------------------------------
# Studies.

def run_ablation(datasets, preset: str, workdir, make_data: Callable, config: Callable[[str], Config] | None = None,
                 variants=configs.ablation.VARIANTS, regression_weight: float = 0.25, mesh=None,
                 progress: bool = True) -> dict:
    """For each dataset: plain / gan / regression students of one teacher; Delta_E of each against plain.

    make_data(cfg) -> Dataset; config(dataset) -> the plain student's Config (default: `configs.ablation`'s, the
    scripts add the command line's flags). Layout: workdir/<dataset>/<variant>/ (pipeline run directories),
    workdir/results.json, workdir/ablation.png.
    """
    config = config or (lambda dataset: configs.ablation.get_config(preset, dataset))
    workdir = Path(workdir)
    t0 = time.perf_counter()
    table = {}
    for dataset in datasets:
        base = config(dataset)
        data = make_data(base)
        rows = {}
        for variant in ("plain",) + tuple(v for v in variants if v != "plain"):
            sub = workdir / dataset / variant
            if variant != "plain":
                share_teacher(workdir / dataset / "plain", sub)
            cfg = configs.ablation.variant(base, variant, regression_weight)
            summary = pipeline.run(cfg, data, sub, mesh, progress)
            rows[variant] = schema.study_row(final_result(summary))
        plain = rows["plain"]["delta_e"]
        for row in rows.values():   # undefined (null, not NaN) when plain DMD copies exactly (Delta_E = 0)
            row["delta_e_over_plain"] = row["delta_e"] / plain if plain > 0 else None
        table[dataset] = rows
    result = {"study": "ablation", "preset": preset, "regression_weight": regression_weight,
              "regression_loss": "L2 (mean over batch and elements); DMD1 used LPIPS, whose weights cannot be "
                                 "downloaded here", "table": table,
              "wall_s_this_invocation": time.perf_counter() - t0}
    if parallel.is_main():
        files.write_json(workdir / "results.json", result)
        fig_values = {d: {v: r["delta_e"] for v, r in rows.items()} for d, rows in table.items()}
        figures.save(figures.bar_panels(fig_values, r"$\Delta_E(\Phi_8, G)$", "Auxiliary losses vs plain DMD"),
                     workdir / "ablation.png")
    return result


def run_dynamics(cfg: Config, data: Dataset, workdir, every: int, mesh=None,
                 progress: bool = True) -> dict:
    """`pipeline.run` whose last snapshot's student records Delta_E(Phi_K, G_t) on the N shared noises (exact OT)
    at t = 0 (G = Phi_1), every `every` iterations and at the last, through the distillation loop's callback
    (`dynamics_callback`). Layout: workdir/ is a pipeline run directory; student_<snap>/dynamics.jsonl (one row per
    recorded t) and student_<snap>/dynamics/ (G_t samples) are added; returns {'step', 'delta_e',
    'delta_e_to_final', ..., 'dm_step', 'dm_loss'}. A stop rule of the convergence record (until_converged) ends
    the rows at the last multiple of `every` before the stop.
    """
    if every % cfg.distill.gen_every or every < 1:
        raise ValueError(f"the recording interval ({every}) must be a positive multiple of {cfg.distill.gen_every}")
    snap = cfg.snapshots()[-1]
    outdir = Path(workdir) / f"student_{snap}"

    def hook(student: int, model, teacher_params, out: Path):
        return dynamics_callback(cfg, data, model, teacher_params, out, every) if student == snap else None
    summary = pipeline.run(cfg, data, workdir, mesh, progress, student_callback=hook)
    parallel.sync(f"dmdjax.studies.run_dynamics {outdir} done")   # process 0's log and G files are written

    log_path = outdir / "dynamics.jsonl"
    rows = sorted({r["step"]: r for r in files.read_lines(log_path)}.values(), key=lambda r: r["step"])
    final = np.load(outdir / "dynamics" / f"g_{rows[-1]['step']:07d}.npy")
    to_final = [float(metrics.transport_energies(final, np.load(outdir / "dynamics" / f"g_{r['step']:07d}.npy"))
                      .delta_e) for r in rows]
    dm_step, dm_loss = loop.read_series(outdir / "metrics.jsonl", "dm_loss")
    out = {key: [r[key] for r in rows] for key in rows[0]}
    out.update(delta_e_to_final=to_final, dm_step=dm_step.tolist(), dm_loss=dm_loss.tolist(),
               every=every, final=schema.study_row(final_result(summary)))
    return out


def dynamics_callback(cfg: Config, data: Dataset, model, teacher_params, outdir: Path, every: int
                      ) -> tuple[Callable, tuple[int, int]]:
    """The dynamics study's record of one student, as (callback, callback_every) for its distillation loop: G_t on
    the N shared noises at t = 0 (recorded here, from the teacher's weights), at every multiple of `every` and at
    cfg.distill.iterations: outdir/dynamics/g_<t>.npy and a row {'step', 'delta_e', 'e_dt', 'e_ot',
    'dist_g_ref_mean'} appended to outdir/dynamics.jsonl. Resumable: a step already in the log is not recorded
    again (the log is read once, here)."""
    main = parallel.is_main()
    if main:
        (outdir / "dynamics").mkdir(parents=True, exist_ok=True)
    z, labels = evaluation.eval_noise(cfg, data)
    ref = evaluation.teacher_samples(cfg, model, teacher_params, z, labels, cfg.k_ref)
    log_path = outdir / "dynamics.jsonl"
    done = {r["step"] for r in files.read_lines(log_path)}
    parallel.sync(f"dmdjax.studies.dynamics_callback {outdir}")   # every process has read the log before it grows
    last = cfg.distill.iterations

    def record(step: int, gen_params) -> None:
        g = evaluation.student_samples(cfg, model, gen_params, z, labels)
        if main:
            files.save_npy(outdir / "dynamics" / f"g_{step:07d}.npy", g)
        te = metrics.transport_energies(ref, g)
        dist = np.linalg.norm((g - ref).reshape(len(g), -1), axis=1)
        row = {"step": step, "delta_e": float(te.delta_e), "e_dt": float(te.e_dt), "e_ot": float(te.e_ot),
               "dist_g_ref_mean": float(dist.mean())}
        if main:
            with log_path.open("a") as f:
                f.write(json.dumps(row) + "\n")
        done.add(step)

    def callback(step: int, state) -> bool:
        if step not in done and step and (step % every == 0 or step == last):
            record(step, state.gen.params)
        return False

    if 0 not in done:
        record(0, teacher_params)      # the student at initialisation: G = Phi_1
    return callback, (every, last)


def run_dynamics_study(datasets, preset: str, workdir, make_data: Callable,
                       config: Callable[[str], Config] | None = None, every: int | None = None, mesh=None,
                       progress: bool = True) -> dict:
    """`run_dynamics` for each dataset (config(dataset) -> Config, default `configs.dynamics`'s; every: M, default
    `configs.dynamics.interval`) in workdir/<dataset>/; workdir/results.json and dynamics.png."""
    config = config or (lambda dataset: configs.dynamics.get_config(preset, dataset))
    workdir = Path(workdir)
    t0 = time.perf_counter()
    runs = {}
    for dataset in datasets:
        cfg = config(dataset)
        m = every or configs.dynamics.interval(preset, dataset)
        runs[dataset] = run_dynamics(cfg, make_data(cfg), workdir / dataset, m, mesh, progress)
    result = {"study": "dynamics", "preset": preset, "runs": runs, "wall_s_this_invocation": time.perf_counter() - t0}
    if parallel.is_main():
        files.write_json(workdir / "results.json", result)
        figures.save(figures.copying_dynamics(runs), workdir / "dynamics.png")
    return result


def run_sweep(datasets, dims, widths, width_dim: int, preset: str, workdir, config: Callable | None = None,
              embed_seed: int = 0, mesh=None, progress: bool = True) -> dict:
    """Delta_E against the ambient dimension D (each toy isometrically embedded in R^D, D >= its native
    dimension; others are skipped) at the preset width, and against the MLP width at D = width_dim.
    config(dataset, dim, width) -> Config (default: `configs.dimension_sweep`'s). Layout:
    workdir/<dataset>/R<D>_w<width>/ (pipeline run directories), workdir/results.json, sweep.png."""
    config = config or (lambda dataset, dim, width: configs.dimension_sweep.get_config(preset, dataset, dim, width))
    workdir = Path(workdir)
    t0 = time.perf_counter()
    by_dim, by_width = {}, {}
    for dataset in datasets:
        runs = [(d, None) for d in dims if d >= toy.NATIVE_DIM[dataset]]
        runs += [(width_dim, w) for w in widths if width_dim >= toy.NATIVE_DIM[dataset]]
        rows = {}
        for dim, width in runs:
            cfg = config(dataset, dim, width)
            w = configs.mlp_features(cfg)[0]
            if (dim, w) not in rows:
                summary = pipeline.run(cfg, load(cfg, dim=dim, embed_seed=embed_seed),
                                       workdir / dataset / f"R{dim}_w{w}", mesh, progress)
                rows[(dim, w)] = {"dim": dim, "width": w, **schema.study_row(final_result(summary))}
            if width is None:
                by_dim.setdefault(dataset, []).append(rows[(dim, w)])
            else:
                by_width.setdefault(dataset, []).append(rows[(dim, w)])
    result = {"study": "dimension_sweep", "preset": preset, "embed_seed": embed_seed, "width_dim": width_dim,
              "by_dim": by_dim, "by_width": by_width,
              "definition": "D = ambient dimension: the toy's native sample (chessboard R^2, GMM R^4) mapped into "
                            "R^D by a seeded D x d0 matrix with orthonormal columns (isometric)",
              "wall_s_this_invocation": time.perf_counter() - t0}
    if not parallel.is_main():
        return result
    files.write_json(workdir / "results.json", result)
    curves = lambda table, x: {d: ([r[x] for r in rs], [max(r["delta_e"], 1e-6) for r in rs]) for d, rs in table.items()}
    fig, (ax1, ax2) = figures.subplots(1, 2, figsize=(10, 3.8))
    label = r"$\Delta_E(\Phi_8, G)$"
    figures.line_plot(curves(by_dim, "dim"), "ambient dimension D", label, "Delta_E against D", True, True, ax1)
    figures.line_plot(curves(by_width, "width"), "MLP width (units per hidden layer)", label,
                      f"Delta_E against width, D = {width_dim}", True, True, ax2)
    fig.tight_layout()
    figures.save(fig, workdir / "sweep.png")
    return result



# ----------------------------------------------------------------------------------------------------------
# The regime study: which difference from the paper's setting turns a remapping student into a copying one.

def regime_arm_dir(arm: str, seed: int | None = None) -> str:
    """An arm's run directory name: the arm, with `-seed<k>` for another DMD seed (a control, arm e)."""
    return arm if seed is None else f"{arm}-seed{seed}"


def run_regime(base: Config, arms, workdir, data: Dataset, mesh=None, progress: bool = True,
               results_dir=None, peak_rss_gib: Callable[[], float] | None = None, seed: int | None = None,
               snapshots=None) -> dict:
    """The regime study: the base config's teacher trained once in workdir/teacher_run (raw and EMA weights),
    shared with every arm's run directory workdir/<arm>[-seed<k>], each arm a `pipeline.run`
    (`configs.mnist_regime.arm`; `seed`: another DMD seed, `snapshots`: a subset of the arm's). Writes
    workdir/results.json ({"arms": [...], "pending": [...]}) and workdir/kappa_vs_sum.png from every arm
    finished so far (also those of earlier invocations), exported to `results_dir`."""
    workdir = Path(workdir)
    check_config(workdir / "teacher_run" / "config.json", base.to_dict())
    with pipeline.wall_time(workdir / pipeline.WALL_TIMES, "teacher") as tick:
        pipeline.train_teacher(base, data, workdir / "teacher_run", mesh, progress, tick)
    for arm in arms:
        _, cfg = configs.mnist_regime.arm(base, arm, seed, snapshots)
        name = regime_arm_dir(arm, seed)
        share_teacher(workdir / "teacher_run", workdir / name)
        pipeline.run(cfg, data, workdir / name, mesh, progress)
        rss = workdir / name / "peak_rss.json"        # the largest resident size of any invocation of this arm
        if peak_rss_gib is not None and parallel.is_main():          # multi-host: process 0's
            old = json.loads(rss.read_text())["gib"] if rss.exists() else 0.0
            files.write_json(rss, {"gib": max(old, peak_rss_gib())})
        if results_dir is not None:
            if parallel.is_main():
                pipeline.export_results(workdir / name, Path(results_dir) / name)
                if rss.exists():
                    files.copy_file(rss, Path(results_dir) / name / rss.name)
            write_regime_summary(base, workdir, results_dir)
    return write_regime_summary(base, workdir, results_dir)


def write_regime_summary(base: Config, workdir, results_dir=None) -> dict:
    """workdir/results.json and kappa_vs_sum.png from every finished student of every arm directory (another
    seed's and a subset of snapshots included, read from the directory's config.json; an arm absent from workdir
    is read from its exported evidence in `results_dir`, an earlier workdir's); `pending` lists the arms'
    students not finished yet. Multi-host: every process returns it (after process 0's files are written),
    process 0 writes it."""
    workdir = Path(workdir)
    parallel.sync(f"dmdjax.studies.write_regime_summary {workdir}")
    rows, records, pending = [], {}, []
    arm_dirs = lambda root, arm: {d.name: d for d in Path(root).glob(f"{arm}*") if d.is_dir() and
                                  (d.name == arm or d.name.startswith(f"{arm}-seed"))}
    for arm in configs.mnist_regime.ARMS:
        dirs = arm_dirs(results_dir, arm) if results_dir is not None else {}
        dirs.update(arm_dirs(workdir, arm))                                # the live run directory wins
        for d in [dirs[k] for k in sorted(dirs)] or [workdir / arm]:
            if (d / "config.json").exists():
                saved = json.loads((d / "config.json").read_text())
            else:                                                          # exported: the config in results.json
                saved = json.loads((d / "results.json").read_text())["config"] if (d / "results.json").exists() else {}
            seed = saved.get("distill_seed") if d.name != arm else None
            factor, cfg = configs.mnist_regime.arm(base, arm, seed, saved.get("distill_snapshots"))
            path = d / "results.json"
            summary = json.loads(path.read_text()) if path.exists() else {}
            rss = d / "peak_rss.json"
            peak = json.loads(rss.read_text())["gib"] if rss.exists() else None
            for snap in cfg.snapshots():
                student = summary.get("snapshots", {}).get(str(snap))
                if student is None:
                    pending.append(f"{d.name}/{snap}")
                    continue
                rec = read_record(d / f"student_{snap}" / "record.jsonl")
                rows.append({**schema.regime_row(d.name, factor, cfg, student, rec, peak), "distill_seed": cfg.student_seed()})
                records.setdefault(snap, {})[d.name] = (cfg.distill.lr_gen, rec)
    teacher_wall = pipeline.read_wall_times(workdir / pipeline.WALL_TIMES).get("teacher", 0.0)
    result = {"config": base.to_dict(), "teacher_wall_s": teacher_wall, "arms": rows, "pending": pending,
              "complete": not pending}
    if not parallel.is_main():
        return result
    files.write_json(workdir / "results.json", result)
    if records:
        figures.save(figures.kappa_vs_lr_sum(records), workdir / "kappa_vs_sum.png")
    if results_dir is not None:
        for name in ("results.json", "kappa_vs_sum.png"):
            if (workdir / name).exists():
                files.copy_file(workdir / name, Path(results_dir) / name)
    return result
