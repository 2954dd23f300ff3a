"""Evaluation of a teacher and its student on the N shared noises: Phi_K(z) (K-step Heun, Eq. 2) and G(z) in
batches, Delta_E and kappa with intervals (Eq. 4), the distribution fit, the teacher's floors and, for images,
the memorization / boundary statistics (Sec. 4.1-4.2) and held-out quality. Arrays and numbers only; the figures
are drawn by `dmdjax.report`."""
from __future__ import annotations

import functools
import time
from pathlib import Path
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from dmdjax import distill, files, loop, metrics, parallel, quality, sampling
from dmdjax.data import Dataset
from dmdjax.nets import denoise_fn
from dmdjax.config import Config, keys

__all__ = ["jitted_phi_k", "jitted_generate", "batched", "eval_noise", "generate_samples", "evaluate", "teacher_data_fit",
           "ci_fields", "copying_statistics", "dm_curve"]


@functools.partial(jax.jit, static_argnums=(0, 3))
def jitted_phi_k(model, params, z, k, labels):
    """Phi_K(z): the teacher's K-step Heun sample (`sampling.phi_k`, compiled per model and K) from noise z
    (n, *shape)."""
    return sampling.phi_k(denoise_fn(model, params), z, k, labels)


@functools.partial(jax.jit, static_argnums=(0, 4))
def jitted_generate(model, params, z, labels, sigma):
    """G(z): the one-step student at conditioning sigma (`distill.generate`, compiled per model)."""
    return distill.generate(model, params, z, labels, sigma)


def batched(fn: Callable, z, labels, batch: int) -> np.ndarray:
    """fn(z_chunk, labels_chunk) over leading-axis chunks of `batch`, concatenated as numpy (bounded memory;
    `parallel.fetch`: also for outputs that span processes)."""
    outs = [fn(z[i:i + batch], None if labels is None else labels[i:i + batch]) for i in range(0, len(z), batch)]
    return np.concatenate([parallel.fetch(o) for o in outs])


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


def teacher_samples(cfg: Config, model, teacher_params, z, labels, k: int) -> np.ndarray:
    return batched(lambda z, y: jitted_phi_k(model, teacher_params, z, k, y), z, labels, cfg.eval_batch)


def student_samples(cfg: Config, model, gen_params, z, labels) -> np.ndarray:
    sigma = cfg.distill.conditioning_sigma
    return batched(lambda z, y: jitted_generate(model, gen_params, z, y, sigma), z, labels, cfg.eval_batch)


def generate_samples(cfg: Config, model, teacher_params, gen_params, z, labels) -> dict[str, np.ndarray]:
    """Phi_K(z) for K in cfg.eval_ks (and 1, k_ref) and G(z), as numpy, each shaped like z."""
    out = {f"phi_{k}": teacher_samples(cfg, model, teacher_params, z, labels, k)
           for k in sorted(set(cfg.eval_ks) | {1, cfg.k_ref})}
    out["g"] = student_samples(cfg, model, gen_params, z, labels)
    return out


def dm_curve(outdir: Path) -> tuple[np.ndarray, np.ndarray]:
    """(iterations, DM loss) of a student's log (Fig. 4): every generator iteration, or every iteration with
    `dm_loss_every_iteration`."""
    return loop.read_series(Path(outdir) / "metrics.jsonl", "dm_loss")


def evaluate(cfg: Config, data: Dataset, model, teacher_params, gen_params, outdir: Path) -> tuple[dict, dict]:
    """Samples on the shared noises, Delta_E and companions, distribution fit; writes outdir/samples.npz (and
    copying_stats.npz for image data with training images). Returns (result, arrays): the numbers for
    results.json and the arrays the figures are drawn from (`report.student_figures`). Multi-host: every
    process computes them, process 0 writes the files.

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
    _, dm_loss = dm_curve(outdir)
    tail = max(1, len(dm_loss) // 20)
    result = {
        "delta_e": float(te.delta_e), "e_dt": float(te.e_dt), "e_ot": float(te.e_ot),
        **ci_fields(ci["g"]), **ci_fields(ci["phi1"], "_phi1"), "ci_level": cfg.ci_level,
        "ci_resamples": cfg.ci_resamples,
        "fit": {"w2_student": w2(g), "w2_teacher_floor": w2(ref), "w2_phi1": w2(s["phi_1"][:n])},
        "dist_phi1_ref_mean": float(np.mean(dist_1[:n])), "dist_g_ref_mean": float(np.mean(dist_g[:n])),
        "frac_g_closer_than_phi1": float(np.mean(dist_g[:n] < dist_1[:n])),
        "dist_g_phi1_mean": float(np.mean(np.linalg.norm(flat(s["g"][:n]) - flat(s["phi_1"][:n]), axis=1))),
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
        s[f"phi_{k}"] = teacher_samples(cfg, model, teacher_params, z[:cfg.n_show],
                                        None if labels is None else labels[:cfg.n_show], k)
    arrays = {"z": np.asarray(z), "assignment": np.asarray(te.assignment), "dist_phi1": dist_1, "dist_g": dist_g,
              **({} if labels is None else {"labels": np.asarray(labels)}), **s}
    if data.train_images is not None:
        stats, stat_arrays = copying_statistics(s, data.train_images, cfg, dist_1[:n])
        result.update(stats)
        if parallel.is_main():
            files.save_npz(Path(outdir) / "copying_stats.npz", compressed=True, **stat_arrays)
        arrays["copying_stats"] = stat_arrays
    if data.kind == "images" and data.test_images is not None:   # held-out teacher quality, classifier FD
        result.update(quality.heldout_metrics(cfg, data, model, teacher_params, s))
    if parallel.is_main():
        files.save_npz(Path(outdir) / "samples.npz", compressed=True,
                       **{k: v for k, v in arrays.items() if k != "copying_stats"})
    result["eval_wall_s"] = time.perf_counter() - t0
    return result, arrays


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


def copying_statistics(s: dict, train_images, cfg: Config, dist_phi1) -> tuple[dict, dict]:
    """Sec. 4.1.2 / 4.2.1 against the training set, on the first `eval_n` seeds: memorization ratios
    r(Phi_K(z)) (Fig. 12), D(z) vs delta(z) (Fig. 5) with the partial correlation given dist_phi1 (n,) =
    ||Phi_1(z) - Phi_K(z)||. Returns (statistics, arrays: r, neighbours (n, 2) train indices, d_z, delta)."""
    k, n = cfg.k_ref, cfg.eval_n
    ref, g, phi_1 = s[f"phi_{k}"][:n], s["g"][:n], s["phi_1"][:n]
    mem = metrics.memorization_ratio(ref, train_images)
    d_z = metrics.mean_train_distance(ref, train_images)
    delta = metrics.relative_displacement(g, phi_1, ref)
    corr = float(np.corrcoef(d_z, delta)[0, 1])
    partial = float(metrics.partial_correlation(d_z, delta, dist_phi1))
    r = np.asarray(mem.ratio)
    stats = {
        "memorization": {"r_mean": float(r.mean()), "r_min": float(r.min()), "r_median": float(np.median(r)),
                         "frac_r_below_1_3": float(np.mean(r < 1 / 3))},
        "boundary": {"corr_d_delta": corr, "partial_corr_d_delta_given_dist_phi1": partial,
                     "frac_delta_negative": float(np.mean(np.asarray(delta) < 0))},
    }
    return stats, {"r": mem.ratio, "neighbours": mem.indices, "d_z": d_z, "delta": delta}
