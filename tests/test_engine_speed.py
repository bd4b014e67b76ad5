"""Speed settings of the engine: torch.compile option (and its eager fallback), CPU batch cap, THP."""

from __future__ import annotations

import os
import shutil
import warnings

import numpy as np
import pytest
import torch

import MedSRLib.engine as engine
from MedSRLib.engine import EngineOptions, run_slices
from test_engine_nets import RecordingNet, local_net


def _stack(n: int, h: int, w: int) -> np.ndarray:
    return np.random.default_rng(0).random((n, h, w), dtype=np.float32)


def test_engine_import_sets_transparent_huge_pages_without_overriding_the_user() -> None:
    assert "THP_MEM_ALLOC_ENABLE" in os.environ  # setdefault at import: a user's own value is kept


def test_cpu_batches_hold_at_most_the_pixel_cap() -> None:
    net = RecordingNet(local_net(2))
    side = 48  # not a memory-probe side (32, 64)
    run_slices(net, _stack(40, side, side), scale=2, options=EngineOptions(device="cpu", memory_budget_mb=4096))
    batches = [s[0] for s in net.shapes if s[2:] == (side, side)]
    assert sum(batches) == 40 and max(batches) == engine.memory._CPU_BATCH_PIXELS // (side * side)


def test_compile_failure_falls_back_to_eager_with_a_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*_args: object, **_kwargs: object):
        def run(_x: torch.Tensor) -> torch.Tensor:
            raise RuntimeError("no compiler here")

        return run

    monkeypatch.setattr(torch, "compile", broken)
    net = local_net(2)
    slices = _stack(5, 12, 10)
    expected = run_slices(net, slices, scale=2, options=EngineOptions(device="cpu"))
    with pytest.warns(RuntimeWarning, match="torch.compile failed"):
        got = run_slices(net, slices, scale=2, options=EngineOptions(device="cpu", compile=True, batch_size=2))
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)  # batch 2 vs 1: rounding only


@pytest.mark.skipif(not (shutil.which("c++") or shutil.which("g++")), reason="torch.compile on CPU needs a C++ compiler")
def test_compiled_run_equals_eager_run() -> None:
    from torch import nn

    from MedSRLib.models.blocks import PixelShuffleHead, conv1x1, conv3x3
    from MedSRLib.models.rewrites import prepare_for_inference

    torch.manual_seed(0)  # a prepared net with a 1x1 conv: its oneDNN path must stay out of the graph
    net = prepare_for_inference(nn.Sequential(conv3x3(1, 8), nn.ReLU(), conv1x1(8, 8), PixelShuffleHead(2, 8, 1)))
    slices = _stack(5, 64, 48)  # batches of 2, 2 (compiled) and 1 (eager: another shape)
    expected = run_slices(net, slices, scale=2, options=EngineOptions(device="cpu"))
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no fallback
        got = run_slices(net, slices, scale=2, options=EngineOptions(device="cpu", compile=True, batch_size=2))
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)


def test_free_cpu_count_is_between_one_and_the_usable_cores() -> None:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert 1 <= engine.free_cpu_count(0.05) <= cores


def test_auto_threads_apply_during_the_run_and_are_restored() -> None:
    before = torch.get_num_threads()
    net = RecordingNet(local_net(2))
    run_slices(net, _stack(2, 8, 8), scale=2, options=EngineOptions(device="cpu", threads="auto"))
    assert len(set(net.threads)) == 1 and 1 <= net.threads[0] <= (os.cpu_count() or 1)
    assert torch.get_num_threads() == before


@pytest.mark.parametrize("length,largest,overlap", [(512, 344, 16), (512, 400, 16), (300, 64, 16), (97, 40, 0),
                                                    (512, 512, 16), (1000, 33, 16)])
def test_balanced_tile_keeps_the_tile_count_with_the_smallest_tile(length: int, largest: int, overlap: int) -> None:
    tile = engine.balanced_tile(length, largest, overlap)
    count = len(engine.tile_starts(length, largest, overlap))
    assert 2 * overlap <= tile <= largest
    assert len(engine.tile_starts(length, tile, overlap)) == count
    if tile > 2 * overlap and length > largest:
        assert len(engine.tile_starts(length, tile - 1, overlap)) > count  # one pixel less needs more tiles
