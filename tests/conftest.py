import os
import warnings
from pathlib import Path

import pytest

warnings.filterwarnings("ignore", module="jaxopt")

# The suite is dominated by XLA compilation of small programs: compile with fewer LLVM passes (about 30 % less
# wall time for the MNIST tests on 2 cores; docs/testing.md). Set before jax initialises its backend; a user's
# XLA_FLAGS are kept. Subprocess tests that set their own XLA_FLAGS do not inherit this.
_FAST_COMPILE = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _FAST_COMPILE).strip()
# The experiments' XLA:CPU kernel choice (dmdjax/xla_cpu.py), so that the suite runs what users run.
from dmdjax import xla_cpu  # noqa: E402

xla_cpu.tune()

# The experiments' persistent compilation cache (cli.start) stays off in the test process (tests that call an
# experiment's main() would otherwise turn it on for every later test); tests/test_cli.py tests it in subprocesses.
os.environ.setdefault("DMDJAX_COMPILE_CACHE", "none")

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("DMDJAX_SHARED", REPO.parent / "shared"))


@pytest.fixture(scope="session", autouse=True)
def _private_cache(tmp_path_factory):
    """Tests never read or write the user's ~/.cache/dmdjax (the MNIST classifier cache, dmdjax.classifier)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DMDJAX_CACHE", str(tmp_path_factory.mktemp("dmdjax_cache")))
        yield


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The read-only ../shared folder (paper, reference, fixtures, MNIST files); DMDJAX_SHARED overrides."""
    if not SHARED.is_dir():
        pytest.fail(f"shared folder not found at {SHARED}; set DMDJAX_SHARED")
    return SHARED
