"""XLA:CPU tuning for the ADM (measurements: docs/performance.md): which XLA:CPU ops go to YNNPACK, and
how the host allocator hands XLA its buffers.

Kernels: jaxlib 0.10 hands convolutions, dots, reductions and elementwise fusions to YNNPACK by default. On the
2-core CPU the ADM runs faster with convolutions left to XLA's own (Eigen) kernels and dots and reductions kept in
YNNPACK (`--xla_cpu_experimental_ynn_fusion_type=dot,reduce`). The flag is experimental:
an XLA that does not know it aborts the process, so it is only set for the jaxlib versions it was measured on.

Allocator: XLA:CPU mallocs every call's buffers afresh. glibc serves large blocks with mmap (and trims freed heap
tops), so each call page-faults its whole working set in again. `reuse_freed_memory()` keeps freed memory in the
process (one arena, no mmap, no trimming), which makes the paper ADM gradient faster; the process keeps its heap,
which can settle above the default allocator's peak.

Both must happen before JAX starts its backend (XLA reads XLA_FLAGS once; XLA's threads pick their malloc arena
when they start), so `tune()` cannot ask JAX for its default backend: it applies only when `cpu_only_host()`
finds no accelerator JAX could use (JAX_PLATFORMS, else an installed GPU/TPU plugin together with its device
files). Nothing here runs at import: the experiments call `tune()` explicitly (`cli.start`, right after reading
their flags; `--no_xla_tuning` turns it off); library users may call it first thing.
"""
from __future__ import annotations

import ctypes
import os
import sys
import warnings
from typing import NamedTuple

FLAG = "--xla_cpu_experimental_ynn_fusion_type=dot,reduce"
OPTION = FLAG.split("=")[0].lstrip("-")
TESTED_JAXLIB = ("0.10.",)
# glibc mallopt parameters (malloc.h) and the values set: one arena, never mmap, never trim (-1 becomes SIZE_MAX).
_MALLOPT = {"M_ARENA_MAX": (-8, 1), "M_MMAP_MAX": (-4, 0), "M_TRIM_THRESHOLD": (-1, -1)}
_MALLOC_ENV = ("MALLOC_ARENA_MAX", "MALLOC_MMAP_MAX_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_")


class Tuning(NamedTuple):
    """What `tune()` put in effect for this process."""
    xla_flag: bool           # FLAG is in XLA_FLAGS
    reuse_memory: bool       # `reuse_freed_memory()` succeeded


def _flag_on() -> bool:
    return FLAG in os.environ.get("XLA_FLAGS", "").split()


def _backend_started() -> bool:
    try:
        from jax._src import xla_bridge     # private: no public API tells whether the backends have started
        return xla_bridge.backends_are_initialized()
    except (ImportError, AttributeError):   # a JAX without it: assume started, so tune() changes nothing
        return True


# Accelerator plugins JAX loads, and the device files that show the hardware is present.
_ACCELERATORS = {
    "cuda": (("jax_cuda12_plugin", "jax_cuda13_plugin", "jax_plugins.xla_cuda12", "jax_plugins.xla_cuda13"),
             ("/dev/nvidia0", "/dev/nvidiactl")),
    "rocm": (("jax_rocm60_plugin", "jax_rocm7_plugin", "jax_plugins.xla_rocm60", "jax_plugins.xla_rocm7"),
             ("/dev/kfd",)),
    "tpu": (("libtpu",), ("/dev/accel0", "/dev/vfio/0", "/dev/vfio/vfio")),
}


def _importable(name: str) -> bool:
    import importlib.util
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def _configured_platforms() -> str:
    """JAX's `jax_platforms` setting (from JAX_PLATFORMS or jax.config), '' when unset."""
    if "jax" in sys.modules:
        return sys.modules["jax"].config.jax_platforms or ""
    return os.environ.get("JAX_PLATFORMS", "")


def cpu_only_host() -> bool:
    """Whether JAX's default backend will be the CPU, decided without starting JAX's backend: JAX_PLATFORMS
    (or JAX's `jax_platforms` config) when set, else no GPU/TPU plugin is installed with its device present."""
    platforms = _configured_platforms()
    if platforms:
        return platforms.split(",")[0].strip().lower() == "cpu"
    return not any(any(_importable(m) for m in modules) and any(os.path.exists(d) for d in devices)
                   for modules, devices in _ACCELERATORS.values())


def reuse_freed_memory() -> bool:
    """Make glibc's malloc keep freed memory for reuse (M_ARENA_MAX 1, M_MMAP_MAX 0, M_TRIM_THRESHOLD max) so that
    XLA's per-call buffers are not page-faulted in again on every call. Returns whether it was applied: not on a
    non-glibc system, not when the user set a MALLOC_* variable or glibc.malloc tunables (theirs win)."""
    if not sys.platform.startswith("linux") or any(v in os.environ for v in _MALLOC_ENV) \
            or "glibc.malloc" in os.environ.get("GLIBC_TUNABLES", ""):
        return False
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version      # glibc only: other C libraries' mallopt differs or is a stub
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return all(mallopt(param, value) == 1 for param, value in _MALLOPT.values())


def tune(enable: bool = True) -> Tuning:
    """Add FLAG to XLA_FLAGS (the user's flags win: nothing is changed if they already set the option) and call
    `reuse_freed_memory()`. Only on a CPU-only host (`cpu_only_host()`); elsewhere a no-op. A no-op with a
    warning once the backend has started."""
    import jaxlib

    if not enable or not cpu_only_host():
        return Tuning(_flag_on(), False)
    if _backend_started():
        warnings.warn("dmdjax.xla_cpu.tune() called after JAX started its backends; nothing changed")
        return Tuning(_flag_on(), False)
    current = os.environ.get("XLA_FLAGS", "")
    if OPTION not in current and jaxlib.__version__.startswith(TESTED_JAXLIB):
        os.environ["XLA_FLAGS"] = (current + " " + FLAG).strip()
    return Tuning(_flag_on(), reuse_freed_memory())
