"""Data parallelism: pmap's semantics with today's API (sharded `jax.jit` over a 1-D `data` mesh).

Parameters and optimiser states are replicated, every per-example array is sharded over `data`, and XLA
inserts the gradient all-reduce (the mean over the global batch) that `pmap` + `lax.pmean` wrote by hand.
Randomness is drawn for the global batch from one key (threefry is partitionable), so a seed gives the same
numbers on 1 device and on 8.

Multi-host (one process per host, `jax.distributed`; the experiments' `--distributed`): the mesh spans every
process's devices. Nothing is fed from the hosts per step (batches are drawn inside the step), so a process only
ever puts its own, addressable copies of replicated values on its devices (`replicate`), reads results back with
`fetch` (replicated: its local copy; sharded: gathered from every process), takes host decisions from process 0
(`agree`), and only process 0 (`is_main`) writes files or prints. Every process must make the same calls in the
same order (they are collective); a run directory must be on a file system every process sees (Orbax writes each
process's share of a checkpoint into it).
"""
from __future__ import annotations

import zlib

import jax
import numpy as np
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

AXIS = "data"

__all__ = ["AXIS", "data_mesh", "check_batch", "shard", "replicate", "fetch", "is_main", "agree", "sync"]


def data_mesh(num_devices: int | None = None) -> jax.sharding.Mesh:
    """A 1-D mesh named `data` over the first `num_devices` devices (default: all, across hosts). With several
    processes the mesh must hold every device (a process without devices in it would have nothing to run)."""
    n = jax.device_count() if num_devices is None else num_devices
    if not 1 <= n <= jax.device_count():
        raise ValueError(f"num_devices={n} but {jax.device_count()} devices are visible")
    if jax.process_count() > 1 and n != jax.device_count():
        raise ValueError(f"num_devices={n}, but with {jax.process_count()} processes the data mesh spans all "
                         f"{jax.device_count()} devices; leave --devices out")
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
    """Place a pytree on every device of the mesh (outside jit). No-op without mesh.

    On a mesh within one process this is `jax.device_put`. On a mesh across processes every process must pass
    the same values (the same seed and data give them); each puts its own copy on its own devices only
    (`jax.make_array_from_callback`: no data crosses hosts), and one checksum of the whole tree is compared
    across processes (not the values: `jax.device_put` would gather every value from every process to compare
    them). Arrays that already span the processes (restored checkpoints, results of sharded programs) are
    resharded by `jax.device_put`."""
    if mesh is None:
        return tree
    sharding = NamedSharding(mesh, P())
    if not mesh.is_multi_process:
        return jax.device_put(tree, sharding)
    from jax.experimental import multihost_utils
    leaves, treedef = jax.tree.flatten(tree)
    out, digest = [], 0
    for leaf in leaves:
        if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
            out.append(jax.device_put(leaf, sharding))
            continue
        host = np.asarray(leaf)
        digest = zlib.crc32(np.ascontiguousarray(host).view(np.uint8).reshape(-1), digest)
        digest = zlib.crc32(f"{host.shape}{host.dtype}".encode(), digest)
        out.append(jax.make_array_from_callback(host.shape, sharding, lambda index, host=host: host[index]))
    multihost_utils.assert_equal(np.uint32(digest), "parallel.replicate: the processes passed different values "
                                                    "(every process must load the same data and seed)")
    return jax.tree.unflatten(treedef, out)


def fetch(tree):
    """A pytree of arrays as numpy on this host: an array this process holds whole (fully addressable, or
    replicated on every device) is read from its local copy; one sharded across processes is gathered from all
    of them (`multihost_utils.process_allgather`, a collective: every process must call `fetch` on it)."""
    def one(x):
        if isinstance(x, jax.Array) and not (x.is_fully_addressable or x.is_fully_replicated):
            from jax.experimental import multihost_utils
            return np.asarray(multihost_utils.process_allgather(x, tiled=True))
        return np.asarray(jax.device_get(x))
    return jax.tree.map(one, tree)


def is_main() -> bool:
    """Whether this process writes files and prints: process 0 (the only one without jax.distributed)."""
    return jax.process_index() == 0


def agree(value):
    """Process 0's value of a host-side decision (a bool or number, e.g. whether a file exists or a run should
    stop), on every process; `value` itself with one process. Collective: every process must call it."""
    if jax.process_count() == 1:
        return value
    from jax.experimental import multihost_utils
    array = np.asarray(value)
    out = multihost_utils.broadcast_one_to_all(array.astype(np.int32) if array.dtype == bool else array)
    return type(value)(out.item()) if isinstance(value, (bool, int, float)) else out.astype(array.dtype)


def sync(name: str) -> None:
    """A barrier across processes (e.g. after process 0 wrote a file the others read); no-op with one."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils
        multihost_utils.sync_global_devices(name)
