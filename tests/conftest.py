import os
import warnings
from pathlib import Path

import pytest

warnings.filterwarnings("ignore", module="jaxopt")

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("DMDJAX_SHARED", REPO.parent / "shared"))


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The read-only ../shared folder (paper, reference, fixtures, MNIST files); DMDJAX_SHARED overrides."""
    if not SHARED.is_dir():
        pytest.fail(f"shared folder not found at {SHARED}; set DMDJAX_SHARED")
    return SHARED
