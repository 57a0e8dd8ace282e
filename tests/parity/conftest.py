"""Fixtures for comparisons with the authors' code (recorded outputs in ``../shared/fixtures``).

The recordings live outside the repository: ``<repo>/../shared/fixtures`` by default, or the folder
named by the environment variable ``WECLIP_FIXTURES``. Tests that need them are skipped, with the
path that was tried, when they are absent.
"""

import os
from pathlib import Path
from typing import Dict, Iterator

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]


def fixtures_dir() -> Path:
    """``$WECLIP_FIXTURES`` if set, else ``<repo>/../shared/fixtures``."""
    env = os.environ.get("WECLIP_FIXTURES")
    return Path(env) if env else REPO_ROOT.parent / "shared" / "fixtures"


@pytest.fixture(scope="session")
def official_step_static() -> Iterator[Dict[str, np.ndarray]]:
    """All arrays of ``official_step_static.npz`` (one training step of the authors' code, see the
    README beside it), as a dict of numpy arrays."""
    path = fixtures_dir() / "official_step_static.npz"
    if not path.is_file():
        pytest.skip(
            f"official fixture not found at {path} (set WECLIP_FIXTURES to the folder holding "
            "official_step_static.npz)"
        )
    with np.load(path, allow_pickle=False) as data:
        arrays = {key: data[key] for key in data.files}
    yield arrays
