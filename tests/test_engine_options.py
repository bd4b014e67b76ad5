"""EngineOptions validation, device resolution and the run-time estimate of MedSRLib.engine."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from MedSRLib.engine import (
    EngineOptions,
    estimate_seconds,
    resolve_device,
    run_slices,
    tile_starts,
    tile_weights,
)
from MedSRLib.engine.estimate import CPU_BF16_SPEEDUP, CPU_MACS_PER_SECOND_PER_THREAD, CUDA_MACS_PER_SECOND
from MedSRLib.errors import DeviceError, InputSizeError, MedSRError, OptionError
from test_engine_nets import local_net


@pytest.mark.parametrize(
    "field,value",
    [
        ("batch_size", 0),
        ("batch_size", -3),
        ("batch_size", 2.5),
        ("batch_size", True),
        ("memory_budget_mb", 0),
        ("memory_budget_mb", -1.0),
        ("memory_budget_mb", math.nan),
        ("memory_budget_mb", math.inf),
        ("memory_budget_mb", "2GB"),
        ("tile", 0),
        ("tile", 64.0),
        ("tile_overlap", -1),
        ("tile_overlap", 1.5),
        ("ensemble", "yes"),
        ("precision", "fp64"),
        ("precision", "FP32"),
        ("channels_last", 1),
        ("compile", 1),
        ("compile", "yes"),
        ("threads", 0),
        ("threads", "4"),
        ("device", "banana"),
        ("device", "tpu"),
        ("device", 3),
    ],
)
def test_bad_option_is_rejected_by_name(field: str, value: object) -> None:
    with pytest.raises(OptionError, match=field):
        EngineOptions(**{field: value})


def test_option_errors_are_medsr_and_value_errors() -> None:
    with pytest.raises(MedSRError):
        EngineOptions(batch_size=0)
    with pytest.raises(ValueError):
        EngineOptions(batch_size=0)


def test_good_options_are_kept() -> None:
    opts = EngineOptions(device="cpu", batch_size=3, memory_budget_mb=64.5, tile=40, tile_overlap=8,
                         ensemble=True, precision="bf16", channels_last=False, threads=1, compile=True)
    assert (opts.batch_size, opts.tile, opts.tile_overlap, opts.memory_budget_mb) == (3, 40, 8, 64.5)


def test_tile_smaller_than_twice_the_overlap_is_an_input_size_error() -> None:
    with pytest.raises(InputSizeError, match="tile_overlap"):
        EngineOptions(tile=31, tile_overlap=16)
    EngineOptions(tile=32, tile_overlap=16)  # exactly 2 x overlap is allowed


def test_tile_smaller_than_the_model_minimum_is_an_input_size_error() -> None:
    slices = np.zeros((1, 80, 80), np.float32)
    with pytest.raises(InputSizeError, match="minimum"):
        run_slices(local_net(2), slices, scale=2, options=EngineOptions(tile=40, tile_overlap=8), min_lr_size=48)
    with pytest.raises(InputSizeError, match="minimum"):
        run_slices(local_net(2), slices[:, :40], scale=2, min_lr_size=48)


def test_fp16_on_cpu_is_rejected_with_advice() -> None:
    with pytest.raises(OptionError, match="bf16"):
        run_slices(local_net(2), np.zeros((1, 8, 8), np.float32), scale=2,
                   options=EngineOptions(device="cpu", precision="fp16"))


def test_resolve_device_cpu_and_auto() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(" CPU ") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    auto = resolve_device("auto")
    if torch.cuda.is_available():
        assert auto.type == "cuda"
    elif not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        assert auto == torch.device("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message when CUDA is absent")
@pytest.mark.parametrize("name", ["cuda", "cuda:1"])
def test_unavailable_cuda_is_a_device_error(name: str) -> None:
    with pytest.raises(DeviceError, match="CUDA is not available"):
        resolve_device(name)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_missing_cuda_index_is_a_device_error() -> None:
    with pytest.raises(DeviceError, match="does not exist"):
        resolve_device(f"cuda:{torch.cuda.device_count()}")


def test_unknown_device_is_a_device_error() -> None:
    with pytest.raises(DeviceError, match="not understood"):
        resolve_device("gpu0")


def test_estimate_seconds_scales_with_work_and_device() -> None:
    cpu = torch.device("cpu")
    one = estimate_seconds(macs_per_lr_pixel=1e5, lr_pixels_total=10**6, device=cpu, ensemble=False, precision="fp32")
    assert one == pytest.approx(1e11 / (CPU_MACS_PER_SECOND_PER_THREAD * torch.get_num_threads()))
    bf16 = estimate_seconds(macs_per_lr_pixel=1e5, lr_pixels_total=10**6, device=cpu, ensemble=False, precision="bf16")
    assert bf16 == pytest.approx(one / CPU_BF16_SPEEDUP)
    double = estimate_seconds(macs_per_lr_pixel=1e5, lr_pixels_total=2 * 10**6, device=cpu, ensemble=False, precision="fp32")
    ensembled = estimate_seconds(macs_per_lr_pixel=1e5, lr_pixels_total=10**6, device=cpu, ensemble=True, precision="fp32")
    assert double == pytest.approx(2 * one) and ensembled == pytest.approx(8 * one)
    gpu = estimate_seconds(macs_per_lr_pixel=1e5, lr_pixels_total=10**6, device=torch.device("cuda"), ensemble=False)
    assert gpu == pytest.approx(1e11 / CUDA_MACS_PER_SECOND) and gpu < one
    assert estimate_seconds(macs_per_lr_pixel=0.0, lr_pixels_total=10**6, device=cpu, ensemble=False) == 0.0
    with pytest.raises(OptionError, match="macs_per_lr_pixel"):
        estimate_seconds(macs_per_lr_pixel=-1.0, lr_pixels_total=1, device=cpu, ensemble=False)
    with pytest.raises(OptionError, match="lr_pixels_total"):
        estimate_seconds(macs_per_lr_pixel=1.0, lr_pixels_total=-1, device=cpu, ensemble=False)


@pytest.mark.parametrize(
    "length,tile,overlap", [(512, 128, 16), (130, 64, 16), (65, 64, 16), (300, 32, 16), (97, 40, 0)]
)
def test_tiles_cover_the_axis_with_at_least_the_overlap(length: int, tile: int, overlap: int) -> None:
    starts = tile_starts(length, tile, overlap)
    assert starts[0] == 0 and starts[-1] + tile == length
    assert all(b - a <= tile - overlap for a, b in zip(starts, starts[1:]))
    assert all(b > a for a, b in zip(starts, starts[1:]))


@pytest.mark.parametrize("scale", [1, 2, 3, 4])
def test_tile_weights_sum_to_one_and_vanish_near_inner_edges(scale: int) -> None:
    length, tile, overlap = 300, 64, 16
    starts = tile_starts(length, tile, overlap)
    weights = tile_weights(starts, tile=tile, length=length, overlap=overlap, scale=scale)
    total = np.zeros(length * scale)
    for start, w in zip(starts, weights):
        assert w.shape == (tile * scale,) and w.min() >= 0 and w.max() <= 1
        total[start * scale : (start + tile) * scale] += w
        margin = overlap // 4 * scale  # output pixels within overlap / 4 LR px of an inner edge
        if start > 0:
            assert np.all(w[:margin] == 0)
        if start + tile < length:
            assert np.all(w[-margin:] == 0)
    np.testing.assert_allclose(total, 1.0, atol=1e-6)
