"""Copying metrics of "Why Are DMD Students Lazy?" (numpy or JAX inputs, (N, ...) samples flattened per sample).

Laid out like ott-jax: geometry (`costs`: squared Euclidean costs), problem + API (`transport`: E_DT, E_OT,
Delta_E), solvers (`assignment`: exact; `sinkhorn`: ott-jax entropic, online for large N), plus the sample
statistics of Sec. 4 (`neighbours`) and the PCA views of Fig. 1 / 9 (`projection`).

    pairing_inefficiency(teacher, student, method="exact" | "sinkhorn")   Delta_E, Eq. 4-6
    transport_energies(...) -> TransportEnergies(e_dt, e_ot, delta_e, assignment, ...)   Fig. 3 heatmaps
    e_dt, e_ot, pairing_inefficiency_ci                                     Eq. 5, Eq. 4, half-sample interval
    copying_index(...) -> CopyingIndex(delta_e, delta_e_null, kappa, ...)  Delta_E against a random pairing
    copying_index_ci(...) -> CopyingIndexCI(delta_e, kappa, index)          intervals for Delta_E and kappa
    memorization_ratio(samples, train) -> r(y), neighbour indices          Sec. 4.1.2, Fig. 12
    mean_train_distance(samples, train) -> D(z)                             Sec. 4.2.1, Fig. 5
    relative_displacement(student, teacher_1, teacher_k) -> delta(z)        Fig. 5
    partial_correlation(x, y, control)                                      Fig. 5 without its confound
    pca_projection(reference, *others, n_components=2)                      Fig. 1, 9
"""
from dmdjax.metrics.copying import CopyingIndex, CopyingIndexCI, copying_index, copying_index_ci, e_null
from dmdjax.metrics.frechet import feature_statistics, frechet_distance, frechet_distance_from_stats
from dmdjax.metrics.neighbours import (MemorizationRatio, mean_train_distance, memorization_ratio,
                                       partial_correlation, relative_displacement)
from dmdjax.metrics.projection import pca_projection
from dmdjax.metrics.transport import (PairingCI, TransportEnergies, e_dt, e_ot, pairing_inefficiency,
                                      pairing_inefficiency_ci, transport_energies)

__all__ = [
    "CopyingIndex", "CopyingIndexCI", "copying_index", "copying_index_ci", "e_null",
    "feature_statistics", "frechet_distance", "frechet_distance_from_stats",
    "MemorizationRatio", "PairingCI", "TransportEnergies", "e_dt", "e_ot", "mean_train_distance",
    "memorization_ratio", "pairing_inefficiency", "pairing_inefficiency_ci", "pca_projection",
    "relative_displacement", "transport_energies",
    "partial_correlation",
]
