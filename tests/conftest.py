"""Shared pytest fixtures: where ../shared/data is, and a skip with a reason when it is absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("MEDSR_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))

# Tests are small; two threads match the CI machine and keep parallel workers from oversubscribing.
torch.set_num_threads(min(2, os.cpu_count() or 1))


def shared_path(*parts: str) -> Path:
    """Path under ../shared/data; skips the calling test with a clear reason when it is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"needs ../shared/data/{'/'.join(parts)} (real data beside the checkout); not found at {path}")
    return path


@pytest.fixture
def shared_data() -> Path:
    """The ../shared/data folder (test skipped with a reason when absent)."""
    return shared_path()
