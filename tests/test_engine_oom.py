"""Out-of-memory handling of run_slices, with a network that raises torch.cuda.OutOfMemoryError (no GPU).

Policy under test: empty the cache, halve the batch; at batch 1 halve the tile (start tiling) down to
max(2 x overlap, 32) px; then continue on the CPU with a RuntimeWarning. Results equal a normal run.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from MedSRLib import engine
from MedSRLib.engine import EngineOptions, run_slices
from test_engine_nets import FakeOOMNet

SLICES = np.random.default_rng(5).random((5, 96, 96), dtype=np.float32)


def _reference(scale: int = 2) -> np.ndarray:
    return run_slices(FakeOOMNet(scale, limit=10**9), SLICES, scale=scale, options=EngineOptions(device="cpu", precision="fp32"))


def _slice_attempts(net: FakeOOMNet) -> list[tuple[int, ...]]:
    """Failed forward shapes, without the memory probe's 32 / 64 px inputs."""
    return [s for s in net.failures if s[2] not in (32, 64)]


def test_oom_halves_batch_then_tiles_and_matches_normal_result(monkeypatch: pytest.MonkeyPatch) -> None:
    emptied: list[str] = []
    monkeypatch.setattr(engine.device, "_empty_cache", lambda device: emptied.append(device.type))
    net = FakeOOMNet(2, limit=5000)  # the 64 x 64 probe (4096 px) fits; one 96 x 96 slice (9216) does not
    out = run_slices(net, SLICES, scale=2, options=EngineOptions(device="cpu", batch_size=4, tile_overlap=8, precision="fp32"))
    assert _slice_attempts(net) == [(4, 1, 96, 96), (2, 1, 96, 96), (1, 1, 96, 96)]
    assert len(emptied) == 3
    assert {s[2:] for s in net.shapes if s[2] not in (32, 64)} == {(48, 48)}  # halved 96 -> 48 px tiles
    np.testing.assert_allclose(out, _reference(), rtol=0, atol=1e-5)


def test_oom_at_the_smallest_tile_on_cpu_reraises() -> None:
    net = FakeOOMNet(2, limit=100)  # even the probe does not fit, and there is nothing to fall back to
    with pytest.raises(torch.cuda.OutOfMemoryError):
        run_slices(net, SLICES, scale=2, options=EngineOptions(device="cpu"))


@pytest.fixture
def fake_cuda(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Pretend 'cuda' exists: resolve_device returns it and _move only records the device on the module."""
    moves: list[str] = []

    def fake_move(obj: object, device: torch.device, *, channels_last: bool = False) -> object:
        moves.append(device.type)
        if isinstance(obj, FakeOOMNet):
            obj.fake_device = device.type
        return obj

    real_resolve = engine.device.resolve_device
    def fake_resolve(device: object = "auto") -> torch.device:
        return torch.device("cuda") if device == "cuda" else real_resolve(device)

    monkeypatch.setattr(engine.device, "resolve_device", fake_resolve)
    monkeypatch.setattr(engine.device, "_move", fake_move)
    monkeypatch.setattr(engine.device, "_empty_cache", lambda device: None)
    return moves


def test_oom_at_smallest_tile_falls_back_to_cpu_with_a_warning(fake_cuda: list[str]) -> None:
    net = FakeOOMNet(2, limit=5000, gpu_types=("cuda",))
    options = EngineOptions(device="cuda", batch_size=4, tile_overlap=40, precision="fp32", memory_budget_mb=64)
    with pytest.warns(RuntimeWarning, match="continuing on the CPU"):
        out = run_slices(net, SLICES, scale=2, options=options)
    # batch 4 -> 2 -> 1, then tiles of max(ceil(96 / 2), 2 x 40) = 80 px, then the CPU
    assert _slice_attempts(net) == [(4, 1, 96, 96), (2, 1, 96, 96), (1, 1, 96, 96), (1, 1, 80, 80)]
    assert net.fake_device == "cpu" and "cuda" in fake_cuda
    np.testing.assert_allclose(out, _reference(), rtol=0, atol=1e-5)


def test_oom_while_probing_falls_back_to_cpu(fake_cuda: list[str]) -> None:
    net = FakeOOMNet(2, limit=0, gpu_types=("cuda",))  # nothing fits on the "GPU"
    progress: list[tuple[int, int]] = []
    with pytest.warns(RuntimeWarning, match="while probing"):
        options = EngineOptions(device="cuda", precision="fp32", memory_budget_mb=64)
        out = run_slices(net, SLICES, scale=2, options=options, progress=lambda d, t: progress.append((d, t)))
    assert net.fake_device == "cpu" and progress[0] == (0, 5) and progress[-1] == (5, 5)
    np.testing.assert_allclose(out, _reference(), rtol=0, atol=1e-5)
