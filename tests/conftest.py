"""Shared pytest fixtures: where ../shared/data is (a skip with a reason when it is absent), a tiny
through-plane weights file, and a record of the Predictors a test builds."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parent.parent

# Per-machine caches (precision choice, memory probes) of a test run go to a temporary folder, never
# the user's cache folder; a caller's own MEDSR_CACHE_DIR is kept.
os.environ.setdefault("MEDSR_CACHE_DIR", tempfile.mkdtemp(prefix="medsr-test-cache-"))

SHARED_DATA = Path(os.environ.get("MEDSR_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))

# Tests are small and run as two pytest-xdist workers on the 2-core CI machine: one thread each
# (two threads per worker oversubscribe the cores and OpenMP spin-waiting makes that ~10x slower).
torch.set_num_threads(1)


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


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory) -> Path:
    """A tp-dridsr weights file with small random tails (not a trained network): through-plane runs
    without shipped weights."""
    from MedSRLib.models import get_model
    from MedSRLib.models.weights import save_weights

    torch.manual_seed(0)
    net = get_model("tp-dridsr").build(8)
    for p in net.tails.parameters():
        torch.nn.init.normal_(p, std=0.01)
    path, _ = save_weights(net, tmp_path_factory.mktemp("w") / "tp-dridsr.safetensors",
                           card={"name": "tp-dridsr", "scale": 8}, half=False)
    return path


@pytest.fixture
def builds(monkeypatch) -> list:
    """Every :class:`MedSRLib.engine.Predictor` constructed during the test, in order."""
    from MedSRLib.engine import Predictor

    made: list = []
    original = Predictor.__init__

    def counting(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        original(self, *args, **kwargs)
        made.append(self)

    monkeypatch.setattr(Predictor, "__init__", counting)
    return made
