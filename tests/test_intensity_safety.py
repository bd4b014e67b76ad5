"""Issue 15 items 5, 6, 7: non-finite or wiped network output, CT padding, physically possible range.

Real CT (TotalSegmentator's DICOM series) and real MR (a sagittal T1) crops from ../shared/data;
bicubic or a real shipped network on tiny crops so the tests stay fast on two cores.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import shared_path
from MedSRLib import errors
from MedSRLib.io import read_volume
from MedSRLib.pipeline import super_resolve
from MedSRLib.volume import Volume


def _crop(volume: Volume, zyx: tuple[slice, slice, slice], *, dtype=None) -> Volume:
    array = np.ascontiguousarray(volume.array[zyx])
    return volume.with_array(array.astype(dtype) if dtype else array)


@pytest.fixture(scope="module")
def real_ct() -> Volume:
    return read_volume(shared_path("totalseg-ct", "example_ct_dicom"))


@pytest.fixture(scope="module")
def real_mr() -> Volume:
    return read_volume(shared_path("mr-volumes", "t1_fl2d_sag_LPS.nii.gz"), modality="MR")



class _ConstantNet(torch.nn.Module):
    def __init__(self, scale: int, value: float) -> None:
        super().__init__()
        self.scale, self.value = scale, value

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        return torch.full((n, c, h * self.scale, w * self.scale), self.value, dtype=x.dtype)


# ---------------------------------------------------------------------------------------------- item 5
def test_nan_weights_are_an_error_naming_the_slice(real_mr, monkeypatch):
    from MedSRLib.models import get_model

    spec = get_model("mdrn")
    real_load = type(spec).load

    def nan_load(self, scale, **kwargs):
        module = real_load(self, scale, **kwargs)
        with torch.no_grad():
            for p in module.parameters():
                p.fill_(float("nan"))
        return module

    monkeypatch.setattr(type(spec), "load", nan_load)
    volume = _crop(real_mr, (slice(100, 132), slice(100, 132), slice(17, 19)))  # slice axis: numpy 2 (4.8 mm)
    with pytest.raises(errors.NetworkOutputError, match="NaN/Inf for slice 0"):
        super_resolve(volume, model=spec, scale=2, precision="fp32")


def test_a_wiped_network_output_is_an_error_naming_the_slice(real_mr, monkeypatch):
    from MedSRLib.models import get_model

    spec = get_model("mdrn")
    monkeypatch.setattr(type(spec), "load", lambda self, scale, **kw: _ConstantNet(scale, 0.0))
    volume = _crop(real_mr, (slice(100, 132), slice(100, 132), slice(17, 20)))
    with pytest.raises(errors.NetworkOutputError, match="constant slice 0"):
        super_resolve(volume, model=spec, scale=2, precision="fp32")


def test_one_extreme_voxel_does_not_wipe_its_slice_with_a_real_network(real_mr):
    volume = _crop(real_mr, (slice(100, 148), slice(100, 148), slice(17, 19)), dtype=np.float32)
    reference = super_resolve(volume, model="mdrn", scale=2, precision="fp32").array
    hot = volume.array.copy()
    hot[5, 5, 0] = 3e38
    result = super_resolve(volume.with_array(hot), model="mdrn", scale=2, precision="fp32").array
    assert np.all(np.isfinite(result))
    far = (slice(40, None), slice(40, None), 0)  # > 15 LR pixels from the extreme voxel, same slice
    diff = np.abs(result[far] - reference[far])
    assert float(np.median(diff)) < 0.02 * float(np.ptp(reference)), "the slice with the extreme voxel was changed"
    assert float(np.std(result[..., 0])) > 0.1 * float(np.std(reference[..., 0]))


def test_from_network_names_the_slice_along_the_axis():
    from MedSRLib.intensity import IntensityMapping, NetworkIntensity

    stack = np.random.default_rng(0).uniform(0, 100, (3, 4, 4)).astype(np.float32)
    rules = NetworkIntensity.for_volume(stack, IntensityMapping.fit(stack, modality="MR"))
    unit = np.random.default_rng(1).uniform(0, 1, (3, 8, 8))
    unit[2, 3, 3] = np.nan
    with pytest.raises(errors.NetworkOutputError, match="slice 12"):
        rules.from_network(unit, stack, dtype=np.float32, first_slice=10)


# ---------------------------------------------------------------------------------------------- item 6
def _padded_ct(real_ct: Volume) -> tuple[Volume, np.ndarray]:
    volume = _crop(real_ct, (slice(8, 10), slice(200, 264), slice(0, 64)))
    yy, xx = np.mgrid[:64, :64]
    outside = (yy - 32) ** 2 + (xx - 70) ** 2 > 50 ** 2  # a circular field of view, GE-style padding outside
    array = volume.array.copy()
    array[:, outside] = -3024
    return volume.with_array(array), outside


@pytest.mark.parametrize("model", ["bicubic", "dridsr"])
def test_ct_padding_is_masked_before_the_network_and_restored_after(real_ct, model):
    volume, outside = _padded_ct(real_ct)
    result = super_resolve(volume, model=model, scale=2, precision="fp32", clip_output=False).array
    up = np.repeat(np.repeat(outside, 2, axis=0), 2, axis=1)
    assert np.all(result[:, up] == -3024), "padding must come back exactly"
    inside = result[:, ~up]
    assert inside.min() >= -1300, f"a ring reaching {inside.min()} HU along the field-of-view edge"


# ---------------------------------------------------------------------------------------------- item 7
def test_mr_output_is_not_negative_by_default_and_raw_on_request(real_mr):
    volume = _crop(real_mr, (slice(60, 124), slice(60, 124), slice(15, 18)))
    assert volume.array.min() >= 0
    clipped = super_resolve(volume, model="bicubic", scale=2).array
    raw = super_resolve(volume, model="bicubic", scale=2, clip_output=False).array
    assert raw.min() < 0, "this real crop has edges where bicubic overshoots below 0"
    assert clipped.min() >= 0
    np.testing.assert_array_equal(clipped[raw >= 0], raw[raw >= 0])


def test_ct_output_stays_at_or_above_air_by_default(real_ct):
    volume = _crop(real_ct, (slice(8, 10), slice(200, 264), slice(0, 64)))
    clipped = super_resolve(volume, model="bicubic", scale=2).array
    raw = super_resolve(volume, model="bicubic", scale=2, clip_output=False).array
    assert raw.min() < -1024 and clipped.min() >= -1024
    np.testing.assert_array_equal(clipped[raw >= -1024], raw[raw >= -1024])


def test_check_no_longer_flags_padded_ct_slices(real_ct):
    from MedSRLib.consistency import check_consistency

    volume, _ = _padded_ct(real_ct)
    result = super_resolve(volume, model="dridsr", scale=2, precision="fp32")
    report = check_consistency(volume, result, scale=2, axis=0)
    assert report.flagged_slices == []
