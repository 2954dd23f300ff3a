"""The one experiment pipeline shared by every experiment (they differ only in config):

    train teacher (keep snapshots) -> for each snapshot: distill a one-step student -> evaluate on N shared
    noises (Phi_1, Phi_8, Phi_32, G; Delta_E, fit, ...) -> results.json and figures.

Layout of a work directory:
    config.json, results.json (summary over snapshots)
    teacher/ckpt (Orbax: latest + snapshots), teacher/metrics.jsonl
    student_<teacher step>/ckpt, metrics.jsonl (DM loss per iteration), samples.npz, results.json, *.png
Every stage resumes: rerunning the same command continues from the last checkpoint and skips finished work.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import time
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from dmdjax import distill, figures, loop, metrics, parallel, sampling, teacher
from dmdjax.checkpoint import Checkpointer, check_config
from dmdjax.nets import MLP, Denoiser


@dataclasses.dataclass(frozen=True)
class Dataset:
    """A data source. `sample(key, n, consts) -> (x (n, *shape), labels (n, label_dim) or None)` is pure and
    jittable; `consts` (e.g. the training images) is passed into the jitted step instead of being baked in."""
    name: str
    shape: tuple[int, ...]
    sample: Callable
    consts: Any = None
    label_dim: int = 0
    kind: str = "points"          # "points" (toys: scatter figures) or "images"
    train_images: Any = None      # (M, ...) for memorization statistics, images only


@dataclasses.dataclass(frozen=True)
class Config:
    name: str
    dataset: str
    net: str = "mlp"                       # "mlp" | "adm"
    net_kwargs: dict = dataclasses.field(default_factory=dict)
    teacher: teacher.TeacherConfig = teacher.TeacherConfig()
    distill: distill.DistillConfig = distill.DistillConfig()
    distill_snapshots: tuple[int, ...] = ()   # teacher steps to distill; () = the final teacher only
    eval_n: int = 1000                     # N shared noises for Delta_E (paper: 1000)
    eval_ks: tuple[int, ...] = (1, 8, 32)      # Phi_K computed on all N noises
    figure_ks: tuple[int, ...] = ()            # Phi_K computed on the first `n_show` noises only (figures)
    n_show: int = 30                           # images per row in Fig. 1 / 6 / 11
    k_ref: int = 8                         # Phi_K the student is compared with (paper: K = 8)
    eval_batch: int = 1000
    seed: int = 0

    def snapshots(self) -> tuple[int, ...]:
        return tuple(sorted(self.distill_snapshots)) or (self.teacher.steps,)

    def to_dict(self) -> dict:
        return json.loads(json.dumps(dataclasses.asdict(self)))

    def validate(self) -> None:
        for name, value in [("teacher.steps", self.teacher.steps), ("teacher.batch", self.teacher.batch),
                            ("distill.iterations", self.distill.iterations), ("distill.batch", self.distill.batch),
                            ("eval_n", self.eval_n)]:
            if value < 1:
                raise ValueError(f"{name} must be positive, got {value}")
        if self.eval_n < 2:
            raise ValueError("eval_n must be at least 2 for Delta_E")
        bad = [s for s in self.snapshots() if not 1 <= s <= self.teacher.steps]
        if bad:
            raise ValueError(f"snapshots {bad} lie outside 1..teacher.steps={self.teacher.steps}")


def build_model(cfg: Config, data: Dataset) -> Denoiser:
    if cfg.net == "mlp":
        return Denoiser(MLP(**cfg.net_kwargs))
    if cfg.net == "adm":
        from dmdjax.nets.adm import adm_denoiser
        return adm_denoiser(cfg.net_kwargs)
    raise ValueError(f"unknown net {cfg.net!r}; choose 'mlp' or 'adm'")


def keys(seed: int) -> dict[str, jax.Array]:
    """Named, independent PRNG streams of a run."""
    root = jax.random.PRNGKey(seed)
    names = ("init", "teacher", "distill", "eval_noise", "eval_labels")
    return dict(zip(names, jax.random.split(root, len(names))))


@functools.lru_cache(maxsize=8)
def _teacher_step(model, tcfg: teacher.TeacherConfig, sample: Callable, seed: int, mesh):
    """Built once per (model, config, data, seed, mesh): the same function object keeps the jit cache warm."""
    return teacher.make_step(model, tcfg.optimizer(), sample, tcfg.batch, keys(seed)["teacher"], mesh)


@functools.lru_cache(maxsize=8)
def _distill_step(model, dcfg: distill.DistillConfig, seed: int, label_dim: int, shape: tuple, mesh):
    return distill.make_step(model, dcfg, keys(seed)["distill"], label_dim, shape, mesh)


def train_teacher(cfg: Config, data: Dataset, workdir: Path, mesh=None, progress: bool = True):
    """Train (or resume) the teacher; returns (model, Checkpointer holding the snapshots, final params)."""
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
                          progress=progress)
    return model, ckpt, state


def teacher_snapshot(ckpt: Checkpointer, template_state, step: int):
    """Params of the teacher snapshot at `step`."""
    return ckpt.restore(template_state, step).params


def distill_student(cfg: Config, data: Dataset, model, teacher_params, outdir: Path, mesh=None, progress=True):
    """Distill (or resume distilling) a one-step student from `teacher_params`; returns the final DMDState."""
    step = _distill_step(model, cfg.distill, cfg.seed, data.label_dim, tuple(data.shape), mesh)
    teacher_params = parallel.replicate(teacher_params, mesh)
    state = parallel.replicate(distill.init_state(teacher_params, cfg.distill), mesh)
    ckpt = Checkpointer(outdir / "ckpt")
    return loop.run_loop(step, state, teacher_params, num_steps=cfg.distill.iterations, ckpt=ckpt,
                         log_path=outdir / "metrics.jsonl", chunk=cfg.distill.chunk,
                         ckpt_every=cfg.distill.ckpt_every, desc=f"distill {outdir.name}", progress=progress,
                         steps_per_call=cfg.distill.gen_every)


@functools.partial(jax.jit, static_argnums=(0, 3))
def _phi_k(model, params, z, k, labels):
    return sampling.phi_k(lambda x, s, y: model.apply({"params": params}, x, s, y), z, k, labels)


@functools.partial(jax.jit, static_argnums=(0, 4))
def _generate(model, params, z, labels, sigma):
    return distill.generate(model, params, z, labels, sigma)


def _batched(fn: Callable, z, labels, batch: int):
    """fn(z_chunk, labels_chunk) over leading-axis chunks of `batch`, concatenated as numpy (bounded memory)."""
    outs = [fn(z[i:i + batch], None if labels is None else labels[i:i + batch]) for i in range(0, len(z), batch)]
    return np.concatenate([np.asarray(o) for o in outs])


def eval_noise(cfg: Config, data: Dataset):
    """The N shared unit-normal noises z (and labels) every model is evaluated on."""
    k = keys(cfg.seed)
    z = jax.random.normal(k["eval_noise"], (cfg.eval_n,) + data.shape)
    labels = (jax.nn.one_hot(jax.random.randint(k["eval_labels"], (cfg.eval_n,), 0, data.label_dim),
                             data.label_dim) if data.label_dim else None)
    return z, labels


def generate_samples(cfg: Config, model, teacher_params, gen_params, z, labels) -> dict[str, np.ndarray]:
    """Phi_K(z) for K in cfg.eval_ks and G(z), as numpy, each shaped like z."""
    out = {f"phi_{k}": _batched(lambda z, y, k=k: _phi_k(model, teacher_params, z, k, y), z, labels, cfg.eval_batch)
           for k in sorted(set(cfg.eval_ks) | {1, cfg.k_ref})}
    sigma = cfg.distill.conditioning_sigma
    out["g"] = _batched(lambda z, y: _generate(model, gen_params, z, y, sigma), z, labels, cfg.eval_batch)
    return out


def evaluate(cfg: Config, data: Dataset, model, teacher_params, gen_params, outdir: Path) -> dict:
    """Samples on the shared noises, Delta_E and companions, distribution fit, figures; writes results.json."""
    t0 = time.perf_counter()
    z, labels = eval_noise(cfg, data)
    s = generate_samples(cfg, model, teacher_params, gen_params, z, labels)
    ref, g = s[f"phi_{cfg.k_ref}"], s["g"]
    te = metrics.transport_energies(ref, g)
    init = metrics.transport_energies(ref, s["phi_1"])
    # Distribution fit on independent halves: W2 from G's first half to Phi_K's second half, against the same
    # for Phi_K's own first half (the finite-sample floor) and for Phi_1 (the student at initialisation).
    h = len(z) // 2
    w2 = lambda a: float(np.sqrt(metrics.transport_energies(a[:h], ref[h:2 * h]).e_ot))
    flat = lambda a: np.asarray(a).reshape(len(a), -1)
    dist_1 = np.linalg.norm(flat(s["phi_1"]) - flat(ref), axis=1)   # ||Phi_1(z) - Phi_K(z)|| per seed
    dist_g = np.linalg.norm(flat(g) - flat(ref), axis=1)            # ||G(z) - Phi_K(z)|| per seed
    dm = loop.read_log(outdir / "metrics.jsonl")
    tail = max(1, len(dm["dm_loss"]) // 20)
    result = {
        "delta_e": float(te.delta_e), "e_dt": float(te.e_dt), "e_ot": float(te.e_ot),
        "delta_e_phi1": float(init.delta_e),
        "fit": {"w2_student": w2(g), "w2_teacher_floor": w2(ref), "w2_phi1": w2(s["phi_1"])},
        "dist_phi1_ref_mean": float(np.mean(dist_1)), "dist_g_ref_mean": float(np.mean(dist_g)),
        "final_dm_loss": float(np.mean(dm["dm_loss"][-tail:])),
        "k_ref": cfg.k_ref, "n": cfg.eval_n,
    }
    for k in cfg.figure_ks:
        s[f"phi_{k}"] = _batched(lambda z, y, k=k: _phi_k(model, teacher_params, z, k, y), z[:cfg.n_show],
                                 None if labels is None else labels[:cfg.n_show], cfg.eval_batch)
    if data.train_images is not None:
        result.update(copying_statistics(s, ref, dist_1, dist_g, data.train_images, outdir, cfg))
    np.savez_compressed(outdir / "samples.npz", z=np.asarray(z), assignment=np.asarray(te.assignment), **s)
    draw_figures(cfg, data, outdir, np.asarray(z), s, result, dm)
    result["eval_wall_s"] = time.perf_counter() - t0
    return result


def copying_statistics(s: dict, ref, dist_1, dist_g, train_images, outdir: Path, cfg: Config) -> dict:
    """Sec. 4.1.2 / 4.2.1 for image data: memorization ratios r(Phi_K(z)) (Fig. 12), D(z) vs delta(z) (Fig. 5),
    ||Phi_1 - Phi_K|| vs ||G - Phi_K|| (Fig. 11 bottom), quintuples with nearest training images (Fig. 6 / 11
    top), PCA of the triplets (Fig. 1 bottom). Writes the figures; returns the statistics."""
    mem = metrics.memorization_ratio(ref, train_images)
    d_z = metrics.mean_train_distance(ref, train_images)
    delta = metrics.relative_displacement(s["g"], s["phi_1"], ref)
    k = cfg.k_ref
    train = np.asarray(train_images)
    n = cfg.n_show
    rows = {"Phi_1": s["phi_1"][:n], f"Phi_{k}": ref[:n], "G": s["g"][:n],
            "x1": train[mem.indices[:n, 0]], "x2": train[mem.indices[:n, 1]]}
    figures.save(figures.image_rows(rows, n), outdir / "quintuples.png")
    p_ref, p_1, p_g = metrics.pca_projection(ref, s["phi_1"], s["g"])
    z_pca = np.asarray(p_ref)
    figures.save(figures.pca_triplets({f"Phi_{k}": p_ref, "Phi_1": p_1, "G": p_g}, z_pca), outdir / "pca.png")
    figures.save(figures.displacement_scatter(d_z, delta, "D(z)", "delta(z)", diagonal=False, hline=0.0),
                 outdir / "boundary.png")
    figures.save(figures.displacement_scatter(dist_1, dist_g, f"||Phi_1 - Phi_{k}||", f"||G - Phi_{k}||"),
                 outdir / "distances.png")
    figures.save(figures.histogram(mem.ratio, f"r(Phi_{k}(z))"), outdir / "memorization.png")
    np.savez_compressed(outdir / "copying_stats.npz", r=mem.ratio, neighbours=mem.indices, d_z=d_z, delta=delta,
                        dist_phi1=dist_1, dist_g=dist_g)
    r = np.asarray(mem.ratio)
    return {
        "memorization": {"r_mean": float(r.mean()), "r_min": float(r.min()), "r_median": float(np.median(r)),
                         "frac_r_below_1_3": float(np.mean(r < 1 / 3))},
        "boundary": {"corr_d_delta": float(np.corrcoef(d_z, delta)[0, 1]), "frac_delta_negative":
                     float(np.mean(np.asarray(delta) < 0))},
        "frac_g_closer_than_phi1": float(np.mean(dist_g < dist_1)),
    }


def draw_figures(cfg: Config, data: Dataset, outdir: Path, z, s: dict, result: dict, dm: dict) -> None:
    ref_name = f"Phi_{cfg.k_ref}"
    ref = s[f"phi_{cfg.k_ref}"]
    tag = f"{cfg.name}, teacher {outdir.name.split('_')[-1]} steps: Delta_E = {result['delta_e']:.3g}"
    if data.kind == "points":
        fig = figures.pairing_scatter({"z": z, ref_name: ref, "Phi_1": s["phi_1"], "G": s["g"]}, z, tag, lim=3.0)
        figures.save(fig, outdir / "pairing.png")
    else:
        rows = {f"Phi_{k}": s[f"phi_{k}"] for k in sorted(set(cfg.eval_ks) | set(cfg.figure_ks))}
        figures.save(figures.image_rows({**rows, "G": s["g"]}, title=tag), outdir / "quadruples.png")
    m = min(100, len(z))
    sub = metrics.transport_energies(ref[:m], s["g"][:m])
    figures.save(figures.distance_heatmap(ref[:m], s["g"][:m], np.asarray(sub.assignment),
                                          f"{m} pairs, Delta_E = {float(sub.delta_e):.3g}"), outdir / "heatmap.png")
    figures.save(figures.dm_loss_curves({outdir.name: (dm["step"], dm["dm_loss"])}), outdir / "dm_loss.png")


def run(cfg: Config, data: Dataset, workdir: str | Path, mesh=None, progress: bool = True) -> dict:
    """The whole experiment; idempotent and resumable. Returns the summary written to workdir/results.json."""
    cfg.validate()
    workdir = Path(workdir)
    check_config(workdir / "config.json", cfg.to_dict())
    t0 = time.perf_counter()
    model, ckpt, final_state = train_teacher(cfg, data, workdir, mesh, progress)
    t_teacher = time.perf_counter() - t0
    summary = {"config": cfg.to_dict(), "teacher_wall_s": t_teacher, "snapshots": {}}
    for snap in cfg.snapshots():
        outdir = workdir / f"student_{snap}"
        outdir.mkdir(parents=True, exist_ok=True)
        result_path = outdir / "results.json"
        if result_path.exists():
            summary["snapshots"][str(snap)] = json.loads(result_path.read_text())
            continue
        t1 = time.perf_counter()
        teacher_params = teacher_snapshot(ckpt, final_state, snap)
        state = distill_student(cfg, data, model, teacher_params, outdir, mesh, progress)
        t_distill = time.perf_counter() - t1
        result = {"teacher_steps": snap, **evaluate(cfg, data, model, teacher_params, state.gen.params, outdir),
                  "distill_wall_s": t_distill}
        _write_json(result_path, result)
        summary["snapshots"][str(snap)] = result
    curves = {f"teacher {s}": _dm_curve(workdir / f"student_{s}") for s in cfg.snapshots()}
    figures.save(figures.dm_loss_curves(curves), workdir / "dm_loss.png")
    summary["table"] = {s: r["delta_e"] for s, r in summary["snapshots"].items()}
    summary["total_wall_s_this_invocation"] = time.perf_counter() - t0
    _write_json(workdir / "results.json", summary)
    return summary


def _dm_curve(outdir: Path):
    log = loop.read_log(outdir / "metrics.jsonl")
    return log["step"], log["dm_loss"]


def _write_json(path: Path, obj) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    tmp.replace(path)
