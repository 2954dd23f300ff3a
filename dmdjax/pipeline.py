"""The one experiment pipeline shared by every experiment (they differ only in config):

    train teacher (keep snapshots) -> for each snapshot: distill a one-step student -> evaluate on N shared
    noises (Phi_1, Phi_8, Phi_32, G; Delta_E, fit, ...) -> results.json and figures.

Layout of a work directory:
    config.json, results.json (summary over snapshots), wall_s.json (each stage's wall time, summed over
        invocations: results.json's teacher_wall_s, distill_wall_s, evaluate_wall_s and total_wall_s)
    teacher/ckpt (Orbax: latest + snapshots), teacher/metrics.jsonl
    student_<teacher step>/ckpt, metrics.jsonl (per iteration; the DM loss per generator iteration), samples.npz,
        results.json, *.png; with `record.eval_every`: record.jsonl (the convergence record, `dmdjax.record`),
        record_ref.npz (Phi_K, Phi_1 on the record's noises) and convergence.png
    teacher/ and student_<step>/ also hold TensorBoard event files: the logged metrics as scalars, the student's
        figures as images (`tensorboard --logdir runs/`)
Every stage resumes: rerunning the same command continues from the last checkpoint and skips finished work.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import shutil
import time
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from dmdjax import distill, figures, loop, metrics, parallel, quality, record, sampling, teacher, tensorboard
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
    test_images: Any = None       # (M', ...) held-out split: teacher quality, held-out fit (dmdjax.quality)
    test_labels: Any = None       # (M',) int labels of test_images (classifier accuracy, conditional EDM loss)


def image_dataset(name: str, images, labels, label_dim: int = 0) -> Dataset:
    """A finite image training set (N, H, W, C) in [-1, 1] with integer labels (N,), sampled uniformly with
    replacement inside the jitted step; labels become one-hot (label_dim) or None when label_dim == 0."""
    images = np.asarray(images, np.float32)
    if images.ndim != 4 or not len(images):
        raise ValueError(f"images must be a non-empty (N, H, W, C) array, got shape {images.shape}")
    if labels is not None and len(labels) != len(images):
        raise ValueError(f"{len(labels)} labels for {len(images)} images")
    consts = (jnp.asarray(images), None if labels is None else jnp.asarray(labels, jnp.int32))

    def sample(key, n, consts):
        idx = jax.random.randint(key, (n,), 0, consts[0].shape[0])
        y = jax.nn.one_hot(consts[1][idx], label_dim) if label_dim else None
        return consts[0][idx], y

    return Dataset(name=name, shape=images.shape[1:], sample=sample, consts=consts, label_dim=label_dim,
                   kind="images", train_images=images)


@dataclasses.dataclass(frozen=True)
class Config:
    name: str
    dataset: str
    net: str = "mlp"                       # "mlp" | "adm"
    net_kwargs: dict = dataclasses.field(default_factory=dict)
    teacher: teacher.TeacherConfig = teacher.TeacherConfig()
    distill: distill.DistillConfig = distill.DistillConfig()
    distill_snapshots: tuple[int, ...] = ()   # teacher steps kept and distilled; () = the final teacher only
    eval_n: int = 1000                     # N shared noises for Delta_E (paper: 1000)
    pca_n: int = 2000                      # image data: triplets in the PCA figure (Fig. 1, 9: 2000)
    eval_ks: tuple[int, ...] = (1, 8, 32)      # Phi_K computed on all N noises
    figure_ks: tuple[int, ...] = ()            # Phi_K computed on the first `n_show` noises only (figures)
    n_show: int = 30                           # images per row in Fig. 1 / 6 / 11
    k_ref: int = 8                         # Phi_K the student is compared with (paper: K = 8)
    eval_batch: int = 1000
    seed: int = 0
    distill_seed: int | None = None        # the students' PRNG stream (DMD draws) when set; teacher and noises: seed
    compute_dtype: str = "float32"         # network interior: "float32" or "bfloat16" (GPU/TPU; DMD2's --use_fp16)
    ci_resamples: int = 100                # half-sample replicates of the Delta_E / kappa intervals (exact OT at N/2)
    ci_level: float = 0.95
    record: record.RecordConfig = record.RecordConfig()   # convergence record and stop rule during distillation
    classifier_steps: int = 1500           # MNIST: training steps of the Frechet-distance classifier; 0 = no FD

    def snapshots(self) -> tuple[int, ...]:
        """The teacher snapshots, sorted: the steps whose teacher checkpoints are kept and distilled."""
        return tuple(sorted(self.distill_snapshots)) or (self.teacher.steps,)

    def distill_order(self) -> tuple[int, ...]:
        """The snapshots in the order they are distilled: the earliest and the latest first (half a run already
        compares the two ends of teacher training), then the others in increasing order."""
        snaps = self.snapshots()
        return snaps if len(snaps) <= 2 else (snaps[0], snaps[-1], *snaps[1:-1])

    def student_seed(self) -> int:
        return self.seed if self.distill_seed is None else self.distill_seed

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
        if self.ci_resamples < 2 or not 0 < self.ci_level < 1:
            raise ValueError(f"ci_resamples must be >= 2 and 0 < ci_level < 1, got {self.ci_resamples}, "
                             f"{self.ci_level}")
        self.record.validate(self.distill.gen_every)
        if self.classifier_steps < 0:
            raise ValueError(f"classifier_steps must be >= 0 (0 = no Frechet distance), got {self.classifier_steps}")
        if self.compute_dtype not in COMPUTE_DTYPES:
            raise ValueError(f"compute_dtype must be one of {COMPUTE_DTYPES}, got {self.compute_dtype!r}")


COMPUTE_DTYPES = ("float32", "bfloat16")


def build_model(cfg: Config, data: Dataset) -> Denoiser:
    """The Denoiser of cfg. In bfloat16 mode only the network interior runs in bf16: preconditioning, losses,
    optimiser and master weights stay float32 (as DMD2's --use_fp16, REFERENCE 1.6)."""
    dtype = jnp.dtype(cfg.compute_dtype)
    if cfg.net == "mlp":
        return Denoiser(MLP(**cfg.net_kwargs, dtype=dtype))
    if cfg.net == "adm":
        from dmdjax.nets.adm import adm_denoiser
        return adm_denoiser(cfg.net_kwargs, dtype=dtype)
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
def _distill_step(model, scfg: distill.StepConfig, seed: int, label_dim: int, shape: tuple, mesh, sample=None):
    """Callers pass `DistillConfig.step()` (so runs differing only in length share the compiled step) and the
    Dataset's `sample` only when a term reads the data."""
    return distill.make_step(model, scfg, keys(seed)["distill"], label_dim, shape, mesh, sample)


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
    """Distill (or resume distilling) a one-step student from `teacher_params`; returns the final DMDState.

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
    return loop.run_loop(step, state, consts, num_steps=cfg.distill.iterations, ckpt=ckpt,
                         log_path=outdir / "metrics.jsonl", chunk=cfg.distill.chunk,
                         ckpt_every=cfg.distill.ckpt_every, desc=f"distill {outdir.name}", progress=progress,
                         steps_per_call=cfg.distill.gen_every, callback=recorder,
                         callback_every=cfg.record.eval_every)


def make_recorder(cfg: Config, data: Dataset, model, teacher_params, outdir: Path, ckpt: Checkpointer
                  ) -> record.Recorder:
    """The convergence record's callback: G on the first `record.n` shared noises against Phi_K and Phi_1 there,
    which are computed once per student and kept in outdir/record_ref.npz."""
    z, labels = eval_noise(cfg, data, cfg.record.n)
    path = outdir / "record_ref.npz"
    if path.exists():
        with np.load(path) as f:
            ref, phi_1 = f["ref"], f["phi_1"]
    else:
        t0 = time.perf_counter()
        phi = lambda k: _batched(lambda z, y: _phi_k(model, teacher_params, z, k, y), z, labels, cfg.eval_batch)
        ref, phi_1 = phi(cfg.k_ref), phi(1)
        if jax.process_index() == 0:
            outdir.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            with tmp.open("wb") as f:
                np.savez(f, ref=ref, phi_1=phi_1, seconds=time.perf_counter() - t0)
            tmp.replace(path)
    sigma = cfg.distill.conditioning_sigma
    generate = lambda params: _batched(lambda z, y: _generate(model, params, z, y, sigma), z, labels, cfg.eval_batch)
    return record.Recorder(cfg.record, outdir / "record.jsonl", ref, phi_1, generate,
                           lambda: record.finished_checkpoint(ckpt.directory),
                           seed=cfg.seed, main=jax.process_index() == 0)


def record_summary(cfg: Config, outdir: Path, final_step: int) -> dict:
    """results.json's account of the convergence record: the verdict (`record.convergence`), where the student
    stopped, the record's total evaluation time (record_eval_s, over its rows) and the time Phi_K and Phi_1 on its
    noises took (record_ref_s); draws outdir/convergence.png."""
    rows = record.read_record(outdir / "record.jsonl")
    verdict = record.convergence(rows, cfg.record)
    with np.load(outdir / "record_ref.npz") as f:
        ref_s = float(f["seconds"]) if "seconds" in f else None
    figures.save(figures.convergence_record(rows, _dm_curve(outdir), cfg.record, f"{cfg.name}, {outdir.name}"),
                 outdir / "convergence.png")
    stopped = final_step < cfg.distill.iterations
    return {"converged": verdict["converged"], "convergence": {
        **verdict, "until_converged": cfg.record.until_converged, "iterations": final_step,
        "stopped_early": stopped, "max_iterations": cfg.distill.iterations, "eval_every": cfg.record.eval_every,
        "record_n": cfg.record.n, "record_evals": len(rows),
        "record_eval_s": float(sum(r.get("eval_s", 0.0) for r in rows)), "record_ref_s": ref_s}}


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


def eval_noise(cfg: Config, data: Dataset, n: int | None = None):
    """The shared unit-normal noises z (n, *shape) (and one-hot labels (n, label_dim)) every model is evaluated on.

    The first `eval_n` are the same whatever `n` is (extra ones come from their own stream), so Delta_E's noise
    set does not depend on how many extra triplets the PCA figure uses."""
    k = keys(cfg.seed)
    n = cfg.eval_n if n is None else n

    def draw(key, fn):
        first = fn(key, min(n, cfg.eval_n))
        return first if n <= cfg.eval_n else jnp.concatenate([first, fn(jax.random.fold_in(key, 1), n - cfg.eval_n)])
    z = draw(k["eval_noise"], lambda key, m: jax.random.normal(key, (m,) + tuple(data.shape)))
    labels = (jax.nn.one_hot(draw(k["eval_labels"], lambda key, m: jax.random.randint(key, (m,), 0, data.label_dim)),
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
    """Samples on the shared noises, Delta_E and companions, distribution fit, figures; writes samples.npz.

    Delta_E and the fit use the first `eval_n` noises; image data also get `pca_n` triplets for the PCA figure
    (Fig. 1, 9) and, when the data set has training images, the memorization and boundary statistics."""
    t0 = time.perf_counter()
    n_all = max(cfg.eval_n, cfg.pca_n) if data.kind == "images" else cfg.eval_n
    z, labels = eval_noise(cfg, data, n_all)
    s = generate_samples(cfg, model, teacher_params, gen_params, z, labels)
    n = cfg.eval_n
    ref, g = s[f"phi_{cfg.k_ref}"][:n], s["g"][:n]
    te = metrics.transport_energies(ref, g)
    ci = {name: metrics.copying_index_ci(ref, x, n_resamples=cfg.ci_resamples, level=cfg.ci_level, seed=cfg.seed)
          for name, x in (("g", g), ("phi1", s["phi_1"][:n]))}
    # Distribution fit on independent halves: W2 from G's first half to Phi_K's second half, against the same
    # for Phi_K's own first half (the finite-sample floor) and for Phi_1 (the student at initialisation).
    h = n // 2
    w2 = lambda a: float(np.sqrt(metrics.transport_energies(a[:h], ref[h:2 * h]).e_ot))
    flat = lambda a: np.asarray(a).reshape(len(a), -1)
    dist_1 = np.linalg.norm(flat(s["phi_1"]) - flat(s[f"phi_{cfg.k_ref}"]), axis=1)   # ||Phi_1(z) - Phi_K(z)||
    dist_g = np.linalg.norm(flat(s["g"]) - flat(s[f"phi_{cfg.k_ref}"]), axis=1)       # ||G(z) - Phi_K(z)||
    dm_step, dm_loss = _dm_curve(outdir)
    tail = max(1, len(dm_loss) // 20)
    result = {
        "delta_e": float(te.delta_e), "e_dt": float(te.e_dt), "e_ot": float(te.e_ot),
        **ci_fields(ci["g"]), **ci_fields(ci["phi1"], "_phi1"), "ci_level": cfg.ci_level,
        "ci_resamples": cfg.ci_resamples,
        "fit": {"w2_student": w2(g), "w2_teacher_floor": w2(ref), "w2_phi1": w2(s["phi_1"][:n])},
        "dist_phi1_ref_mean": float(np.mean(dist_1[:n])), "dist_g_ref_mean": float(np.mean(dist_g[:n])),
        "frac_g_closer_than_phi1": float(np.mean(dist_g[:n] < dist_1[:n])),
        "final_dm_loss": float(np.mean(dm_loss[-tail:])),
        "k_ref": cfg.k_ref, "n": n,
    }
    if data.kind == "points":   # the teacher's own fit to the data, against the data's two-sample floor
        result["teacher_fit"] = teacher_data_fit(cfg, data, ref)
    for k in sorted(set(cfg.eval_ks) - {1, cfg.k_ref}):   # the teacher's discretisation floor Delta_E(Phi_K, Phi_k)
        floor = metrics.copying_index_ci(ref, s[f"phi_{k}"][:n], n_resamples=cfg.ci_resamples, level=cfg.ci_level,
                                         seed=cfg.seed)
        result[f"teacher_floor_phi_{k}"] = ci_fields(floor)
    for k in cfg.figure_ks:
        s[f"phi_{k}"] = _batched(lambda z, y, k=k: _phi_k(model, teacher_params, z, k, y), z[:cfg.n_show],
                                 None if labels is None else labels[:cfg.n_show], cfg.eval_batch)
    if data.kind == "images":
        pairing_figures(s, dist_1, dist_g, outdir, cfg)
    if data.train_images is not None:
        result.update(copying_statistics(s, data.train_images, outdir, cfg))
    if data.kind == "images" and data.test_images is not None:   # held-out teacher quality, classifier FD
        result.update(quality.heldout_metrics(cfg, data, model, teacher_params, s))
    extra = {} if labels is None else {"labels": np.asarray(labels)}
    np.savez_compressed(outdir / "samples.npz", z=np.asarray(z), assignment=np.asarray(te.assignment),
                        dist_phi1=dist_1, dist_g=dist_g, **extra, **s)
    draw_figures(cfg, data, outdir, np.asarray(z[:n]), {k: v[:n] for k, v in s.items()}, result,
                 (dm_step, dm_loss))
    if jax.process_index() == 0:    # the figures also as TensorBoard images, beside the loop's scalars
        tensorboard.write_pngs(outdir, outdir.glob("*.png"), step=cfg.distill.iterations)
    result["eval_wall_s"] = time.perf_counter() - t0
    return result


def teacher_data_fit(cfg: Config, data: Dataset, ref) -> dict:
    """Point data with a sampler: W2 from Phi_K's first half (h = N/2 points) to h fresh data points, against W2
    between two independent data draws of h points (the finite-sample floor). A teacher that fits its data sits
    near the floor (the chessboard's bridges between squares lift it above)."""
    h = len(ref) // 2
    key = jax.random.fold_in(keys(cfg.seed)["eval_noise"], 2)
    x = np.asarray(data.sample(key, 2 * h, data.consts)[0])
    w2 = lambda a, b: float(np.sqrt(metrics.transport_energies(a, b).e_ot))
    return {"w2_teacher_data": w2(ref[:h], x[:h]), "w2_data_floor": w2(x[h:], x[:h]), "n": h}


def ci_fields(ci: metrics.CopyingIndexCI, suffix: str = "") -> dict:
    """results.json fields of a `copying_index_ci`: delta_e<suffix> (with _ci [lo, hi]), kappa (with _ci),
    delta_e_null, kappa_reliable, and the counts of non-finite replicates when there are any."""
    out = {f"delta_e{suffix}": float(ci.index.delta_e), f"delta_e{suffix}_ci": [ci.delta_e.low, ci.delta_e.high],
           f"kappa{suffix}": float(ci.index.kappa), f"kappa{suffix}_ci": [ci.kappa.low, ci.kappa.high],
           f"delta_e_null{suffix}": float(ci.index.delta_e_null), f"kappa{suffix}_reliable": bool(ci.index.reliable)}
    if ci.delta_e.n_nonfinite or ci.kappa.n_nonfinite:
        out[f"ci{suffix}_nonfinite_replicates"] = {"delta_e": ci.delta_e.n_nonfinite, "kappa": ci.kappa.n_nonfinite}
    return out


def ci_text(result: dict, suffix: str = "") -> str:
    """'Delta_E = 0.12 [0.10, 0.15], kappa = 0.4 [0.3, 0.5]' from result fields (`ci_fields`), for titles;
    kappa is marked 'unreliable' when Delta_E_null is too small for it to mean anything."""
    lo, hi = result[f"delta_e{suffix}_ci"]
    klo, khi = result[f"kappa{suffix}_ci"]
    flag = "" if result[f"kappa{suffix}_reliable"] else " (unreliable)"
    return (f"Delta_E = {result[f'delta_e{suffix}']:.3g} [{lo:.3g}, {hi:.3g}], "
            f"kappa = {result[f'kappa{suffix}']:.2g} [{klo:.2g}, {khi:.2g}]{flag}")


def pairing_figures(s: dict, dist_1, dist_g, outdir: Path, cfg: Config) -> None:
    """Image data: PCA of the (Phi_K, Phi_1, G) triplets on the leading components of Phi_K (Fig. 1 bottom, 9)
    and ||Phi_1 - Phi_K|| against ||G - Phi_K|| per seed (Fig. 10, 11 bottom)."""
    k = cfg.k_ref
    p_ref, p_1, p_g = metrics.pca_projection(s[f"phi_{k}"], s["phi_1"], s["g"])
    figures.save(figures.pca_triplets({f"Phi_{k}": p_ref, "Phi_1": p_1, "G": p_g}, np.asarray(p_ref)),
                 outdir / "pca.png")
    figures.save(figures.displacement_scatter(dist_1, dist_g, f"||Phi_1 - Phi_{k}||", f"||G - Phi_{k}||"),
                 outdir / "distances.png")


def copying_statistics(s: dict, train_images, outdir: Path, cfg: Config) -> dict:
    """Sec. 4.1.2 / 4.2.1 against the training set, on the first `eval_n` seeds: memorization ratios
    r(Phi_K(z)) (Fig. 12), D(z) vs delta(z) (Fig. 5), quintuples with the nearest training images (Fig. 6 / 11
    top). Writes the figures; returns the statistics."""
    k, n = cfg.k_ref, cfg.eval_n
    ref, g, phi_1 = s[f"phi_{k}"][:n], s["g"][:n], s["phi_1"][:n]
    mem = metrics.memorization_ratio(ref, train_images)
    d_z = metrics.mean_train_distance(ref, train_images)
    delta = metrics.relative_displacement(g, phi_1, ref)
    dist_1 = np.linalg.norm(np.asarray(phi_1).reshape(len(ref), -1) - np.asarray(ref).reshape(len(ref), -1), axis=1)
    corr = float(np.corrcoef(d_z, delta)[0, 1])
    partial = float(metrics.partial_correlation(d_z, delta, dist_1))
    train = np.asarray(train_images)
    m = cfg.n_show
    rows = {"Phi_1": phi_1[:m], f"Phi_{k}": ref[:m], "G": g[:m],
            "x1": train[mem.indices[:m, 0]], "x2": train[mem.indices[:m, 1]]}
    figures.save(figures.image_rows(rows, m), outdir / "quintuples.png")
    figures.save(figures.displacement_scatter(
        d_z, delta, "D(z)", "delta(z)", diagonal=False, hline=0.0,
        title=f"corr = {corr:.3f}, partial corr | ||Phi_1 - Phi_{k}|| = {partial:.3f}"), outdir / "boundary.png")
    figures.save(figures.histogram(mem.ratio, f"r(Phi_{k}(z))"), outdir / "memorization.png")
    np.savez_compressed(outdir / "copying_stats.npz", r=mem.ratio, neighbours=mem.indices, d_z=d_z, delta=delta)
    r = np.asarray(mem.ratio)
    return {
        "memorization": {"r_mean": float(r.mean()), "r_min": float(r.min()), "r_median": float(np.median(r)),
                         "frac_r_below_1_3": float(np.mean(r < 1 / 3))},
        "boundary": {"corr_d_delta": corr, "partial_corr_d_delta_given_dist_phi1": partial,
                     "frac_delta_negative": float(np.mean(np.asarray(delta) < 0))},
    }


def draw_figures(cfg: Config, data: Dataset, outdir: Path, z, s: dict, result: dict, dm_curve: tuple) -> None:
    ref_name = f"Phi_{cfg.k_ref}"
    ref = s[f"phi_{cfg.k_ref}"]
    tag = f"{cfg.name}, {outdir.name.replace('_', ' ')}: {ci_text(result)}"
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
    figures.save(figures.dm_loss_curves({outdir.name: dm_curve}), outdir / "dm_loss.png")


def run(cfg: Config, data: Dataset, workdir: str | Path, mesh=None, progress: bool = True,
        results_dir: str | Path | None = None) -> dict:
    """The whole experiment; idempotent and resumable. Returns the summary written to workdir/results.json, and
    with `results_dir` also copies the evidence there (`export_results`)."""
    cfg.validate()
    workdir = Path(workdir)
    check_config(workdir / "config.json", cfg.to_dict())
    t0 = time.perf_counter()
    clock = workdir / WALL_TIMES
    with wall_time(clock, "teacher"):
        model, ckpt, final_state = train_teacher(cfg, data, workdir, mesh, progress)
    summary = {"config": cfg.to_dict(), "teacher_wall_s": read_wall_times(clock).get("teacher", 0.0),
               "snapshots": {}}
    for snap in cfg.distill_order():
        outdir = workdir / f"student_{snap}"
        outdir.mkdir(parents=True, exist_ok=True)
        result_path = outdir / "results.json"
        if result_path.exists():
            summary["snapshots"][str(snap)] = json.loads(result_path.read_text())
            continue
        with wall_time(clock, f"distill_{snap}"):
            teacher_params = teacher_snapshot(ckpt, final_state, snap)
            state = distill_student(cfg, data, model, teacher_params, outdir, mesh, progress)
        with wall_time(clock, f"evaluate_{snap}"):
            evaluation = evaluate(cfg, data, model, teacher_params, state.gen.params, outdir)
        walls = read_wall_times(clock)
        result = {"teacher_steps": snap, **evaluation, "distill_wall_s": walls.get(f"distill_{snap}", 0.0),
                  "evaluate_wall_s": walls.get(f"evaluate_{snap}", 0.0)}
        if cfg.record.eval_every:
            result.update(record_summary(cfg, outdir, int(state.step)))
        _write_json(result_path, result)
        summary["snapshots"][str(snap)] = result
        if len(summary["snapshots"]) < len(cfg.snapshots()):   # a partial summary after every student
            write_summary(cfg, workdir, summary, t0, results_dir)
    return write_summary(cfg, workdir, summary, t0, results_dir)


def write_summary(cfg: Config, workdir: Path, summary: dict, t0: float, results_dir=None) -> dict:
    """Write workdir/results.json (and the run's figures) from the students finished so far; `complete` says
    whether every snapshot has its student, `pending` lists the rest. Exported to `results_dir` when given."""
    clock = workdir / WALL_TIMES
    done = {str(s): summary["snapshots"][str(s)] for s in cfg.snapshots() if str(s) in summary["snapshots"]}
    summary = {**summary, "snapshots": done,                                       # by teacher step
               "complete": len(done) == len(cfg.snapshots()),
               "pending": [s for s in cfg.distill_order() if str(s) not in done]}
    curves = {f"teacher {s}": _dm_curve(workdir / f"student_{s}") for s in cfg.snapshots() if str(s) in done}
    figures.save(figures.dm_loss_curves(curves), workdir / "dm_loss.png")
    quality.save_teacher_quality(summary, workdir, cfg.k_ref)   # summary["teacher_quality"], teacher_quality.png
    summary["table"] = {s: r["delta_e"] for s, r in done.items()}
    summary["table_ci"] = {s: {k: r[k] for k in ("delta_e", "delta_e_ci", "kappa", "kappa_ci", "kappa_reliable",
                                                 "delta_e_phi1", "delta_e_phi1_ci", "kappa_phi1", "converged")
                               if k in r} for s, r in done.items()}
    if len(done) > 1:
        figures.save(figures.copying_trend(done, summary.get("teacher_quality")), workdir / "trend.png")
    summary["total_wall_s"] = sum(read_wall_times(clock).values())
    summary["total_wall_s_this_invocation"] = time.perf_counter() - t0
    _write_json(workdir / "results.json", summary)
    if results_dir is not None and jax.process_index() == 0:
        export_results(workdir, results_dir)
    return summary


EVIDENCE = ("results.json", "dm_loss.png", "trend.png", "teacher_quality.png")
STUDENT_EVIDENCE = ("results.json", "record.jsonl", "convergence.png", "quadruples.png", "pairing.png",
                    "boundary.png")


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
            dst.parent.mkdir(parents=True, exist_ok=True)
            tmp = dst.with_name(dst.name + ".tmp")
            shutil.copyfile(src, tmp)
            tmp.replace(dst)
            written.append(dst)
    return written


WALL_TIMES = "wall_s.json"   # per-stage wall-clock seconds, summed over every invocation of the run


@contextlib.contextmanager
def wall_time(path: Path, stage: str):
    """Add the wall-clock seconds the block takes to `stage`'s total in the JSON file `path`, also when the block
    raises (an interrupted invocation counts); a killed process loses only its own last stage's time."""
    t0 = time.perf_counter()
    try:
        yield
    finally:
        if jax.process_index() == 0:
            totals = read_wall_times(path)
            totals[stage] = totals.get(stage, 0.0) + time.perf_counter() - t0
            path.parent.mkdir(parents=True, exist_ok=True)
            _write_json(path, totals)


def read_wall_times(path: Path) -> dict[str, float]:
    """{stage: seconds summed over invocations} written by `wall_time`; {} before the first."""
    return json.loads(path.read_text()) if path.exists() else {}


def _dm_curve(outdir: Path) -> tuple[np.ndarray, np.ndarray]:
    """(iterations, DM loss) of a student's log (Fig. 4): every generator iteration, or every iteration with
    `dm_loss_every_iteration`."""
    return loop.read_series(outdir / "metrics.jsonl", "dm_loss")


def _write_json(path: Path, obj) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    tmp.replace(path)
