"""Data parallelism: pmap's semantics with today's API (sharded `jax.jit` over a 1-D `data` mesh).

Parameters and optimiser states are replicated, every per-example array is sharded over `data`, and XLA
inserts the gradient all-reduce (the mean over the global batch) that `pmap` + `lax.pmean` wrote by hand.
Randomness is drawn for the global batch from one key (threefry is partitionable), so a seed gives the same
numbers on 1 device and on 8.
"""
from __future__ import annotations

import jax
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

AXIS = "data"


def data_mesh(num_devices: int | None = None) -> jax.sharding.Mesh:
    """A 1-D mesh named `data` over the first `num_devices` devices (default: all, across hosts)."""
    n = jax.device_count() if num_devices is None else num_devices
    if not 1 <= n <= jax.device_count():
        raise ValueError(f"num_devices={n} but {jax.device_count()} devices are visible")
    return jax.make_mesh((n,), (AXIS,), axis_types=(AxisType.Auto,), devices=jax.devices()[:n])


def check_batch(batch: int, mesh) -> None:
    """A global batch must split evenly over the devices."""
    n = mesh.devices.size if mesh is not None else 1
    if batch % n:
        raise ValueError(f"batch size {batch} is not divisible by the {n} devices of the data mesh; "
                         f"use a multiple of {n} (e.g. {n * max(1, batch // n)})")


def shard(x, mesh):
    """Constrain a per-example array (leading batch axis) to be split over `data` (inside jit). No-op without mesh."""
    if mesh is None:
        return x
    return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, P(AXIS)))


def replicate(tree, mesh):
    """Place a pytree on every device of the mesh (outside jit). No-op without mesh."""
    if mesh is None:
        return tree
    return jax.device_put(tree, NamedSharding(mesh, P()))
