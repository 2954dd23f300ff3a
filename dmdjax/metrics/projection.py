"""PCA views of Fig. 1 (bottom) and Fig. 9: project samples on the leading principal components of Phi_8."""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from dmdjax.metrics import _checks


def pca_projection(reference, *others, n_components: int = 2):
    """Fit PCA on `reference` (N, ...) and project it and every array in `others` (N_i, ...) onto the
    `n_components` leading principal components (centred on the reference mean).

    Returns a tuple (reference_proj, *others_proj) of (N_i, n_components) arrays. Component signs are fixed
    (largest-magnitude loading positive) so projections are reproducible. Concrete inputs are computed in
    float64 numpy; traced inputs with jnp.linalg.svd.
    """
    ref = _checks.as_samples(reference, "reference", min_n=2)
    arrs = [_checks.as_samples(o, f"others[{i}]") for i, o in enumerate(others)]
    for i, a in enumerate(arrs):
        _checks.as_same_dim(a, ref, f"others[{i}]", "reference")
    n, d = ref.shape
    if not 1 <= n_components <= min(n, d):
        raise ValueError(f"n_components must be in [1, min(N, D)] = [1, {min(n, d)}], got {n_components}")
    xp = jnp if _checks.is_traced(ref, *arrs) else np
    if xp is np:
        ref, arrs = np.asarray(ref, np.float64), [np.asarray(a, np.float64) for a in arrs]
    mean = ref.mean(axis=0)
    _, _, vt = xp.linalg.svd(ref - mean, full_matrices=False)
    comps = vt[:n_components]                                           # (k, D)
    pivot = xp.argmax(xp.abs(comps), axis=1)
    signs = xp.sign(xp.take_along_axis(comps, pivot[:, None], axis=1))
    comps = comps * xp.where(signs == 0, 1.0, signs)
    return tuple((a - mean) @ comps.T for a in [ref, *arrs])
