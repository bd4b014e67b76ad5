"""IntensityMapping: CT window and MR percentiles, exact inverse, dtype kept, degenerate inputs; guess_modality."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from conftest import shared_path

from MedSRLib.intensity import CT_WINDOW_HU, IntensityMapping, guess_modality
from MedSRLib.io import read_volume
from MedSRLib.volume import Volume


def vol(array, **fields) -> Volume:
    return Volume(array=array, spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0), direction=np.eye(3), **fields)


def test_ct_window_is_fixed_and_linear_without_clipping():
    hu = np.array([[[-1024, 3071, 0, -2000, 4000]]], dtype=np.int16)
    mapping = IntensityMapping.fit(hu, modality="CT")
    assert (mapping.low, mapping.high) == CT_WINDOW_HU == (-1024.0, 3071.0)
    unit = mapping.to_unit(hu)
    assert unit.dtype == np.float32
    np.testing.assert_allclose(unit[0, 0], [0.0, 1.0, 1024 / 4095, -976 / 4095, 5024 / 4095], rtol=1e-6)
    # the window does not depend on the data
    other = IntensityMapping.fit(hu[..., :2] + 5, modality="ct")
    assert (other.modality, other.low, other.high) == ("CT", -1024.0, 3071.0)


def test_ct_int16_round_trip_is_exact_over_the_whole_int16_range():
    hu = np.arange(-32768, 32768, dtype=np.int64).astype(np.int16).reshape(16, 64, 64)
    mapping = IntensityMapping.fit(hu, modality="CT")
    back = mapping.from_unit(mapping.to_unit(hu), dtype=hu.dtype)
    assert back.dtype == np.int16
    np.testing.assert_array_equal(back, hu)


def test_real_ct_dicom_round_trip_keeps_int16_hu():
    volume = read_volume(shared_path("totalseg-ct", "example_ct_dicom"))
    assert guess_modality(volume) == "CT"
    stack = volume.array[8:11]  # three real slices
    mapping = IntensityMapping.fit(volume.array, modality=guess_modality(volume))
    np.testing.assert_array_equal(mapping.from_unit(mapping.to_unit(stack), dtype=np.int16), stack)


def test_real_mr_percentiles_and_float_round_trip():
    volume = read_volume(shared_path("mr-volumes", "t1_fl2d_sag_LPS.nii.gz"))
    mapping = IntensityMapping.fit(volume.array, modality="MR")
    assert mapping.low == 0.0  # no negative values
    assert mapping.high == pytest.approx(np.percentile(volume.array, 99.5))
    unit = mapping.to_unit(volume.array)
    assert np.mean(unit <= 1.0) == pytest.approx(0.995, abs=2e-3)
    as_float = volume.array.astype(np.float32) * np.float32(0.731)
    fmap = IntensityMapping.fit(as_float, modality="MR")
    back = fmap.from_unit(fmap.to_unit(as_float), dtype=np.float32)
    assert back.dtype == np.float32
    np.testing.assert_allclose(back, as_float, rtol=1e-6, atol=1e-6 * fmap.high)
    np.testing.assert_array_equal(mapping.from_unit(unit, dtype=volume.array.dtype), volume.array)


def test_mr_with_negative_values_uses_the_low_percentile():
    rng = np.random.default_rng(1)
    data = rng.normal(100.0, 50.0, size=(4, 50, 50))
    mapping = IntensityMapping.fit(data, modality="MR")
    assert mapping.low == pytest.approx(min(0.0, np.percentile(data, 0.5)))
    assert mapping.low < 0
    assert mapping.high == pytest.approx(np.percentile(data, 99.5))
    # few negative voxels: the 0.5th percentile is positive, so low stays 0
    few = np.abs(data)
    few[0, 0, 0] = -3.0
    assert IntensityMapping.fit(few, modality="MR").low == 0.0


@pytest.mark.parametrize("value", [0.0, 7.0, -5.0])
def test_constant_volumes_and_slices_use_a_unit_width(value):
    data = np.full((3, 8, 8), value, dtype=np.float32)
    mapping = IntensityMapping.fit(data, modality="MR")
    assert mapping.high - mapping.low == 1.0 if value <= 0 else mapping.high == value
    unit = mapping.to_unit(data)
    assert np.all(np.isfinite(unit))
    np.testing.assert_allclose(mapping.from_unit(unit, dtype=np.float32), data)
    # a constant slice of an otherwise varied volume shares the volume's mapping
    varied = np.concatenate([data, np.linspace(0, 100, 3 * 64).reshape(3, 8, 8).astype(np.float32)])
    vmap = IntensityMapping.fit(varied, modality="MR")
    np.testing.assert_allclose(vmap.from_unit(vmap.to_unit(varied[0]), dtype=np.float32), data[0], atol=1e-5)


def test_nan_and_inf_are_replaced_with_a_warning_and_never_reach_the_output():
    data = np.linspace(0, 500, 60, dtype=np.float32).reshape(1, 6, 10)
    data[0, 0, :3] = [np.nan, np.inf, -np.inf]
    with pytest.warns(RuntimeWarning, match="NaN/Inf"):
        mapping = IntensityMapping.fit(data, modality="MR")
    finite = data[np.isfinite(data)]
    assert mapping.posinf_value == finite.max() and mapping.neginf_value == finite.min()
    unit = mapping.to_unit(data)
    assert np.all(np.isfinite(unit))
    back = mapping.from_unit(unit, dtype=np.float32)
    assert back[0, 0, 0] == mapping.low and back[0, 0, 1] == pytest.approx(finite.max())
    assert np.all(np.isfinite(mapping.from_unit(np.array([np.nan, np.inf, -np.inf]), dtype=np.float32)))
    ints = mapping.from_unit(np.array([np.nan, np.inf, -np.inf, 1e9]), dtype=np.int16)
    np.testing.assert_array_equal(ints, [0, 32767, -32768, 32767])
    all_nan = np.full((2, 3, 3), np.nan)
    with pytest.warns(RuntimeWarning):
        m = IntensityMapping.fit(all_nan, modality="MR")
    assert np.all(np.isfinite(m.to_unit(all_nan)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # finite data: no warning
        IntensityMapping.fit(finite, modality="MR")


def test_integer_outputs_are_rounded_and_clipped_to_the_dtype():
    mapping = IntensityMapping(modality="MR", low=0.0, high=1000.0, nan_value=0.0, posinf_value=1000.0, neginf_value=0.0)
    unit = np.array([-0.5, 0.00049, 0.00051, 0.5, 70.0])
    np.testing.assert_array_equal(mapping.from_unit(unit, dtype=np.uint16), [0, 0, 1, 500, 65535])
    np.testing.assert_array_equal(mapping.from_unit(unit, dtype=np.uint8), [0, 0, 1, 255, 255])
    assert mapping.from_unit(unit, dtype=np.float64)[0] == -500.0  # floats are not clipped


def test_input_is_never_modified():
    data = np.array([[[np.nan, 1.0, 2000.0]]])
    copy = data.copy()
    with pytest.warns(RuntimeWarning):
        mapping = IntensityMapping.fit(data, modality="CT")
    mapping.to_unit(data)
    np.testing.assert_array_equal(data, copy)


def test_constructor_and_fit_reject_bad_values_by_name():
    with pytest.raises(ValueError, match="modality"):
        IntensityMapping.fit(np.zeros((1, 2, 2)), modality="PET")
    with pytest.raises(ValueError, match="high"):
        IntensityMapping(modality="MR", low=5.0, high=5.0, nan_value=5.0, posinf_value=5.0, neginf_value=5.0)
    with pytest.raises(ValueError, match="low"):
        IntensityMapping(modality="MR", low=np.nan, high=5.0, nan_value=0.0, posinf_value=5.0, neginf_value=0.0)
    with pytest.raises(ValueError, match="dtype"):
        IntensityMapping.fit(np.zeros((1, 2, 2), dtype=complex), modality="MR")
    mapping = IntensityMapping.fit(np.ones((1, 2, 2)), modality="MR")
    with pytest.raises(ValueError, match="dtype"):
        mapping.from_unit(np.zeros(3), dtype=np.complex64)
    assert mapping.as_dict()["modality"] == "MR"


def test_guess_modality_metadata_first_then_values():
    air_ct = np.full((2, 4, 4), 40, dtype=np.int16)
    air_ct[0, 0, 0] = -1000
    assert guess_modality(vol(air_ct)) == "CT"
    assert guess_modality(vol(air_ct, modality="MR")) == "MR"  # what the file says wins
    assert guess_modality(vol(air_ct * 0 + 300, metadata={"dicom_modality": "CT"})) == "CT"
    assert guess_modality(vol(np.abs(air_ct))) == "MR"
    # float-scaled HU (uint8 * slope + intercept, like extras/niivue/shear.nii.gz) with air in view
    scaled = (np.arange(256, dtype=np.float32) * 7.1098 - 1024).reshape(4, 8, 8)
    assert guess_modality(vol(scaled)) == "CT"
    # a float image with a single strongly negative outlier is not called CT
    outlier = np.linspace(0, 900, 4 * 64, dtype=np.float32).reshape(4, 8, 8) + 0.25
    outlier[0, 0, 0] = -700.5
    assert guess_modality(vol(outlier)) == "MR"
    assert guess_modality(vol(np.full((1, 2, 2), np.nan))) == "MR"


def test_guess_modality_on_real_files():
    assert guess_modality(read_volume(shared_path("totalseg-ct", "example_ct.nii.gz"))) == "CT"
    assert guess_modality(read_volume(shared_path("totalseg-ct", "example_mr_sm.nii.gz"))) == "MR"
    with pytest.warns(RuntimeWarning, match="sform"):
        shear = read_volume(shared_path("extras", "niivue", "shear.nii.gz"))
    assert guess_modality(shear) == "CT"
