"""Held-out quality of teachers and students on image data (MNIST's test split).

Per teacher snapshot (`teacher_quality`):
  - the held-out EDM denoising loss: E_x E_eps lambda(sigma) ||D(x + sigma eps; sigma) - x||^2 / d on the first
    `EDM_LOSS_N` test images, with EDM's weighting lambda(sigma) = (sigma^2 + sigma_data^2) / (sigma sigma_data)^2 (the weighting
    of `diffusion.edm_loss`, REFERENCE 2.2), on a fixed grid of `SIGMA_GRID_SIZE` noise levels: the mid-quantiles
    of EDM's training distribution ln sigma ~ N(P_MEAN, P_STD^2), so that the grid mean is a quadrature of the
    training objective. Noise is drawn from a fixed key (the same for every snapshot).
  - the fit of Phi_K to held-out data: W2 = sqrt(E_OT) between N samples Phi_K(z) and N test images, against the
    data's own floor W2(N training images, the same N test images) (equal-size sets, exact assignment).
Per student (`frechet_scores`, MNIST only): the Frechet distance on the features of the project's digit
classifier (`dmdjax.classifier`) of G, Phi_1, Phi_K and the test images, each against the same N training
images (test vs train is the data's own reference), all at the same N.
"""
from __future__ import annotations

import functools
import time

import jax
import jax.numpy as jnp
import numpy as np
import scipy.stats

from dmdjax import classifier, diffusion, metrics
from dmdjax.metrics.frechet import frechet_distance
from dmdjax.nets import denoise_fn

__all__ = ["SIGMA_GRID_SIZE", "frechet_scores", "heldout_edm_loss", "heldout_fit", "heldout_metrics",
           "reference_images", "sigma_grid", "teacher_quality_figure", "teacher_quality_table"]

SIGMA_GRID_SIZE = 8
EDM_LOSS_N = 256                   # test images in the held-out EDM loss (each at every grid sigma)
CLASSIFIER_DATASETS = ("mnist",)   # data sets whose name selects the digit classifier's Frechet distance


def sigma_grid(n: int = SIGMA_GRID_SIZE) -> np.ndarray:
    """(n,) increasing noise levels exp(P_MEAN + P_STD Phi^-1((i + 1/2) / n)): mid-quantiles of EDM's training
    distribution of sigma."""
    if n < 1:
        raise ValueError(f"sigma grid needs n >= 1, got {n}")
    q = (np.arange(n) + 0.5) / n
    return np.exp(diffusion.P_MEAN + diffusion.P_STD * scipy.stats.norm.ppf(q))


@functools.partial(jax.jit, static_argnums=0)
def _weighted_error(model, params, x, noise, sigma, labels):
    """(B,) lambda(sigma) * mean over elements of (D(x + sigma noise; sigma) - x)^2, for one scalar sigma."""
    s = jnp.full((x.shape[0],), sigma, jnp.float32)
    d = denoise_fn(model, params)(x + sigma * noise, s, labels)
    return diffusion.loss_weight(sigma) * jnp.mean((d - x) ** 2, axis=tuple(range(1, x.ndim)))


def heldout_edm_loss(model, params, images, labels=None, *, sigmas=None, seed: int = 0, batch: int = 500) -> dict:
    """Held-out EDM loss of a Denoiser on (N, ...) clean images (labels (N, label_dim) one-hot or None).

    Returns {"loss": mean over the grid, "loss_per_sigma": (n_sigma,) list, "sigmas": the grid, "n": N,
    "weighting": "edm"}; noise eps ~ N(0, I) from PRNGKey(seed), one independent draw per grid point."""
    images = jnp.asarray(images, jnp.float32)
    sigmas = sigma_grid() if sigmas is None else np.asarray(sigmas, np.float64)
    per_sigma = []
    for j, sigma in enumerate(sigmas):
        noise = jax.random.normal(jax.random.fold_in(jax.random.PRNGKey(seed), j), images.shape)
        errs = [_weighted_error(model, params, images[i:i + batch], noise[i:i + batch], float(sigma),
                                None if labels is None else jnp.asarray(labels[i:i + batch]))
                for i in range(0, len(images), batch)]
        per_sigma.append(float(np.mean(np.concatenate([np.asarray(e) for e in errs]))))
    if not np.all(np.isfinite(per_sigma)):
        raise FloatingPointError(f"held-out EDM loss is not finite at sigma {sigmas[~np.isfinite(per_sigma)]}: "
                                 "the teacher's parameters are not finite")
    return {"loss": float(np.mean(per_sigma)), "loss_per_sigma": per_sigma, "sigmas": sigmas.tolist(),
            "n": int(len(images)), "weighting": "edm"}


def reference_images(train_images, n: int, seed: int = 0) -> np.ndarray:
    """n training images drawn without replacement from PRNG seed `seed` (the fixed reference set)."""
    train = np.asarray(train_images)
    if n > len(train):
        raise ValueError(f"need {n} training images for the reference set, the data set has {len(train)}")
    return train[np.sort(np.random.default_rng(seed).choice(len(train), n, replace=False))]


def heldout_fit(samples, test_images, reference) -> dict:
    """W2 of (N, ...) samples to the first N test images, and the floor W2(reference (N, ...), same test)."""
    n = len(samples)
    if len(test_images) < n or len(reference) < n:
        raise ValueError(f"held-out fit needs {n} test and reference images, got {len(test_images)} and "
                         f"{len(reference)}")
    test = np.asarray(test_images[:n])
    w2 = lambda a: float(np.sqrt(metrics.transport_energies(np.asarray(a[:n]), test).e_ot))
    return {"w2_test": w2(samples), "w2_train_floor": w2(reference), "n": n}


def frechet_scores(clf: classifier.Classifier, sets: dict, reference) -> dict:
    """{name: FD(features(set), features(reference))} for (N, H, W, C) image sets; all must have the same N."""
    ref = classifier.features(clf, reference)
    for name, images in sets.items():
        if len(images) != len(reference):
            raise ValueError(f"Frechet distance at different N: {name} has {len(images)}, reference {len(reference)}")
    return {name: frechet_distance(classifier.features(clf, images), ref) for name, images in sets.items()}


_MEMO: dict = {}   # the last classifier, so that the students of one run do not reload (and re-hash) it


def _classifier_for(data, ccfg) -> classifier.Classifier:
    """`classifier.load_or_train` for this Dataset, remembered for the next student of the same run (the memo
    holds the data arrays themselves, so their ids cannot be reused by other arrays)."""
    key = (data.name, id(data.train_images), id(data.test_images), ccfg)
    if _MEMO.get("key") != key:
        clf = classifier.load_or_train(data.name, data.train_images, np.asarray(data.consts[1]), data.test_images,
                                       data.test_labels, ccfg)
        _MEMO.clear()
        _MEMO.update(key=key, clf=clf, arrays=(data.train_images, data.test_images))
    return _MEMO["clf"]


def heldout_metrics(cfg, data, model, teacher_params, samples: dict) -> dict:
    """Pipeline hook (image data with `test_images`): {"teacher_quality": ..., "frechet": ..., "classifier": ...,
    "quality_wall_s": seconds}. `samples` holds Phi_1, Phi_K, G on the shared noises; the first cfg.eval_n are
    used (fewer when the test split is smaller)."""
    t0 = time.perf_counter()
    k = cfg.k_ref
    n = min(cfg.eval_n, len(data.test_images))
    test = np.asarray(data.test_images[:n])
    ref = reference_images(data.train_images, n, cfg.seed)
    labels = None
    if data.label_dim:
        labels = jax.nn.one_hot(np.asarray(data.test_labels[:n]), data.label_dim)
    out = {"teacher_quality": {
        "heldout_edm_loss": heldout_edm_loss(model, teacher_params, test[:EDM_LOSS_N],
                                             None if labels is None else labels[:EDM_LOSS_N], seed=cfg.seed,
                                             batch=cfg.eval_batch),
        f"fit_phi_{k}": heldout_fit(samples[f"phi_{k}"][:n], test, ref)}}
    steps = getattr(cfg, "classifier_steps", 0)
    if data.name in CLASSIFIER_DATASETS and steps > 0 and data.test_labels is not None:
        ccfg = classifier.ClassifierConfig(steps=steps)
        clf = _classifier_for(data, ccfg)
        sets = {"g": samples["g"][:n], "phi_1": samples["phi_1"][:n], f"phi_{k}": samples[f"phi_{k}"][:n],
                "test": test}
        out["frechet"] = {**frechet_scores(clf, sets, ref), "reference": "train", "n": n,
                          "feature_dim": ccfg.feature_dim}
        out["classifier"] = {"test_accuracy": clf.test_accuracy, "steps": steps, "cache": str(clf.path),
                             "trained_in_this_process": clf.trained, "train_wall_s": clf.train_wall_s}
    out["quality_wall_s"] = time.perf_counter() - t0
    return out


def teacher_quality_table(snapshots: dict) -> dict:
    """{teacher steps: {heldout_edm_loss, w2_test, w2_train_floor[, fd_phi_k, fd_test]}} from per-snapshot results
    (those without held-out numbers are left out)."""
    table = {}
    for step, r in snapshots.items():
        q = r.get("teacher_quality")
        if not q:
            continue
        fit = next(v for key, v in q.items() if key.startswith("fit_phi_"))
        row = {"heldout_edm_loss": q["heldout_edm_loss"]["loss"], "w2_test": fit["w2_test"],
               "w2_train_floor": fit["w2_train_floor"]}
        if "frechet" in r:
            row.update({f"fd_{name}": v for name, v in r["frechet"].items() if isinstance(v, float)})
        table[str(step)] = row
    return table


def teacher_quality_figure(table: dict, k_ref: int = 8):
    """Over teacher snapshots: held-out EDM loss (left), W2(Phi_K, test) against the train-vs-test floor (middle),
    and, when present, the classifier Frechet distances (right). Returns a matplotlib Figure."""
    from dmdjax import figures

    steps = sorted(table, key=int)
    x = [int(s) for s in steps]
    has_fd = any("fd_g" in table[s] for s in steps)
    fig, axes = figures.subplots(1, 3 if has_fd else 2, figsize=(13 if has_fd else 9, 3.6))
    axes[0].plot(x, [table[s]["heldout_edm_loss"] for s in steps], "o-")
    axes[0].set_ylabel("held-out EDM loss (lambda-weighted)")
    axes[1].plot(x, [table[s]["w2_test"] for s in steps], "o-", label=f"Phi_{k_ref} vs test")
    axes[1].plot(x, [table[s]["w2_train_floor"] for s in steps], "kx--", label="train vs test (floor)")
    axes[1].set_ylabel("W2")
    axes[1].legend(fontsize=8)
    if has_fd:
        for name, style in (("g", "o-"), ("phi_1", "s-"), (f"phi_{k_ref}", "^-"), ("test", "kx--")):
            axes[2].plot(x, [table[s].get(f"fd_{name}", np.nan) for s in steps], style, label=name)
        axes[2].set_ylabel("Frechet distance to train (classifier features)")
        axes[2].set_yscale("log")
        axes[2].legend(fontsize=8)
    for ax in axes:
        ax.set_xlabel("teacher steps")
        ax.set_xscale("log", base=2)
    fig.suptitle("teacher quality per snapshot (held-out MNIST test split)")
    fig.tight_layout()
    return fig


