"""XLA:CPU tuning for the ADM (issue 8, BUILD_NOTES.md "Performance"): which XLA:CPU ops go to YNNPACK.

jaxlib 0.10 hands convolutions, dots, reductions and elementwise fusions to YNNPACK by default. On the 2-core
CPU the ADM runs faster with convolutions left to XLA's own (Eigen) kernels and dots and reductions kept in
YNNPACK (`--xla_cpu_experimental_ynn_fusion_type=dot,reduce`): small ADM train step 1.33 -> 0.91 s, forward
0.38 -> 0.21 s; paper ADM forward 2.58 -> 2.20 s, train step unchanged (8.4 vs 8.6 s). The flag is experimental:
an XLA that does not know it aborts the process, so it is only set for the jaxlib versions it was measured on.

XLA reads XLA_FLAGS once, when the CPU backend starts, so `tune()` must run before the first computation. The
experiments call it from `cli.device_mesh` (`--no_xla_tuning` turns it off); library users may call it first thing.
"""
from __future__ import annotations

import os
import warnings

FLAG = "--xla_cpu_experimental_ynn_fusion_type=dot,reduce"
OPTION = FLAG.split("=")[0].lstrip("-")
TESTED_JAXLIB = ("0.10.",)


def tune(enable: bool = True) -> bool:
    """Add FLAG to XLA_FLAGS (the user's flags win: nothing is changed if they already set the option). Returns
    whether the flag is in effect for this process. A no-op with a warning once the backend has started."""
    import jaxlib

    current = os.environ.get("XLA_FLAGS", "")
    if OPTION in current:
        return FLAG in current.split()
    if not enable or not jaxlib.__version__.startswith(TESTED_JAXLIB):
        return False
    from jax._src import xla_bridge
    if xla_bridge.backends_are_initialized():
        warnings.warn("dmdjax.xla_cpu.tune() called after JAX started its backends; XLA_FLAGS unchanged")
        return False
    os.environ["XLA_FLAGS"] = (current + " " + FLAG).strip()
    return True
