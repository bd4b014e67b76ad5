"""Tiling and bf16 on a real CT slice: tiled == untiled for local networks, bf16 within a stated tolerance."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import shared_path
from MedSRLib.engine import EngineOptions, run_slices
from test_engine_nets import LOCAL_RADIUS, RecordingNet, local_net

#: Max abs error of bf16 autocast vs fp32 for outputs in [0, 1] (bf16 keeps 8 significant bits: 2^-8 = 0.4 %).
BF16_TOLERANCE = 1e-2


def _ct_slice() -> np.ndarray:
    """One real 512 x 512 CT slice (TotalSegmentator example, JPEG 2000 DICOM), HU -1024..1839 -> [0, 1]."""
    import SimpleITK as sitk

    folder = shared_path("totalseg-ct", "example_ct_dicom")
    files = sorted(p for p in folder.iterdir() if p.is_file())
    hu = sitk.GetArrayFromImage(sitk.ReadImage(str(files[len(files) // 2])))[0].astype(np.float32)
    return np.clip((hu + 1024.0) / 2863.0, 0.0, 1.0).astype(np.float32)


@pytest.fixture(scope="module")
def ct() -> np.ndarray:
    return _ct_slice()


def test_tiled_equals_untiled_on_a_512_ct_slice(ct: np.ndarray) -> None:
    assert ct.shape == (512, 512) and 0.1 < ct.mean() < 0.9
    net = RecordingNet(local_net(2))
    slices = ct[None]
    whole = run_slices(net, slices, scale=2, options=EngineOptions(device="cpu"))
    assert (1, 1, 512, 512) in net.shapes  # untiled: the whole slice in one pass
    net.shapes.clear()
    options = EngineOptions(device="cpu", tile=96, tile_overlap=4 * LOCAL_RADIUS + 4)
    tiled = run_slices(net, slices, scale=2, options=options)
    assert max(s[2] for s in net.shapes) == 96 and len([s for s in net.shapes if s[2:] == (96, 96)]) >= 36
    np.testing.assert_allclose(tiled, whole, rtol=0, atol=1e-4)


def test_tiled_equals_untiled_on_an_odd_crop_at_scale_3(ct: np.ndarray) -> None:
    crop = np.stack([ct[100:237, 60:311], ct[200:337, 150:401]])  # 137 x 251, two slices
    net = local_net(3)
    whole = run_slices(net, crop, scale=3, options=EngineOptions(device="cpu"))
    tiled = run_slices(net, crop, scale=3, options=EngineOptions(device="cpu", tile=64, tile_overlap=16, batch_size=2))
    np.testing.assert_allclose(tiled, whole, rtol=0, atol=1e-4)


def test_budget_too_small_for_one_slice_tiles_automatically(ct: np.ndarray) -> None:
    net = RecordingNet(local_net(2))
    whole = run_slices(net, ct[None, :256, :256], scale=2, options=EngineOptions(device="cpu"))
    net.shapes.clear()
    tiled = run_slices(net, ct[None, :256, :256], scale=2, options=EngineOptions(device="cpu", memory_budget_mb=2))
    sides = {s[2] for s in net.shapes if s[2] not in (32, 64)}  # 32 / 64: the memory probe
    assert sides and max(sides) < 256  # one 256 x 256 slice does not fit 2 MiB: tiled
    np.testing.assert_allclose(tiled, whole, rtol=0, atol=1e-4)


def test_tiled_equals_untiled_with_registry_bicubic(ct: np.ndarray) -> None:
    from MedSRLib.errors import ModelNotFoundError
    from MedSRLib.models import get_model

    try:
        spec = get_model("bicubic")
    except ModelNotFoundError:
        pytest.skip("the bicubic model is not registered yet")
    bicubic = spec.build(4)
    crop = ct[None, 128:384, 100:330]
    whole = run_slices(bicubic, crop, scale=4, options=EngineOptions(device="cpu"))
    tiled = run_slices(bicubic, crop, scale=4, options=EngineOptions(device="cpu", tile=64, tile_overlap=16))
    np.testing.assert_allclose(tiled, whole, rtol=0, atol=1e-4)


def test_bf16_runs_and_stays_within_tolerance_of_fp32(ct: np.ndarray) -> None:
    net = local_net(2, channels=16)
    crop = ct[None, 200:328, 200:328]
    fp32 = run_slices(net, crop, scale=2, options=EngineOptions(device="cpu", precision="fp32"))
    bf16 = run_slices(net, crop, scale=2, options=EngineOptions(device="cpu", precision="bf16"))
    assert bf16.dtype == np.float32
    error = np.abs(bf16 - fp32).max()
    assert 0 < error < BF16_TOLERANCE  # > 0: autocast really ran in bf16
