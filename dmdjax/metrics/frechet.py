"""Frechet distance between two feature sets (the FID formula of Heusel et al. 2017, on any features).

    FD = ||mu_a - mu_b||^2 + tr(C_a + C_b - 2 (C_a^{1/2} C_b C_a^{1/2})^{1/2})

with mu, C the sample mean and covariance (ddof = 1) of (N, d) features, computed in float64. The matrix
square root uses the symmetric form C_a^{1/2} C_b C_a^{1/2}, whose eigenvalues are real and >= 0 for
positive semi-definite C_a, C_b, so that tr((C_a C_b)^{1/2}) is the sum of square roots of non-negative
eigenvalues (no complex sqrtm, no imaginary residue to drop). For Gaussians N(mu_a, C_a), N(mu_b, C_b) this is
the squared 2-Wasserstein distance between them. FD of a finite sample is biased upwards (by O(d / N)): compare
numbers only at the same N and feature dimension.
"""
from __future__ import annotations

import numpy as np

__all__ = ["feature_statistics", "frechet_distance", "frechet_distance_from_stats"]


def feature_statistics(features) -> tuple[np.ndarray, np.ndarray]:
    """Mean (d,) and covariance (d, d) (ddof = 1) of (N, d) features, float64; N >= 2, all finite."""
    f = np.asarray(features, np.float64)
    if f.ndim != 2 or f.shape[0] < 2:
        raise ValueError(f"features must be (N, d) with N >= 2, got shape {f.shape}")
    if not np.all(np.isfinite(f)):
        raise ValueError(f"features contain {int(np.sum(~np.isfinite(f)))} non-finite values; the samples they "
                         "come from are not finite (check the generator's output)")
    return f.mean(axis=0), np.cov(f, rowvar=False).reshape(f.shape[1], f.shape[1])


def _psd_sqrt(c: np.ndarray) -> np.ndarray:
    """Symmetric square root of a symmetric positive semi-definite matrix (negative round-off clipped)."""
    w, v = np.linalg.eigh((c + c.T) / 2)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_distance_from_stats(mu_a, cov_a, mu_b, cov_b) -> float:
    """FD from means (d,) and covariances (d, d); a float >= 0 (module docstring)."""
    mu_a, mu_b = np.asarray(mu_a, np.float64), np.asarray(mu_b, np.float64)
    cov_a, cov_b = np.asarray(cov_a, np.float64), np.asarray(cov_b, np.float64)
    if mu_a.shape != mu_b.shape or cov_a.shape != cov_b.shape or cov_a.shape != mu_a.shape * 2:
        raise ValueError(f"statistics do not match: means {mu_a.shape}, {mu_b.shape}, covariances "
                         f"{cov_a.shape}, {cov_b.shape}")
    root_a = _psd_sqrt(cov_a)
    cross = np.linalg.eigvalsh(root_a @ cov_b @ root_a)
    tr_cross = float(np.sum(np.sqrt(np.clip(cross, 0.0, None))))
    fd = float(np.sum((mu_a - mu_b) ** 2) + np.trace(cov_a) + np.trace(cov_b) - 2.0 * tr_cross)
    return max(fd, 0.0)


def frechet_distance(feats_a, feats_b) -> float:
    """FD between two feature sets (N_a, d) and (N_b, d) (module docstring); a float >= 0.

    Raises ValueError on mismatched dimensions, N < 2 or non-finite features (never a NaN result)."""
    a, b = feature_statistics(feats_a), feature_statistics(feats_b)
    if a[0].shape != b[0].shape:
        raise ValueError(f"feature dimensions differ: {a[0].shape[0]} vs {b[0].shape[0]}")
    return frechet_distance_from_stats(*a, *b)
