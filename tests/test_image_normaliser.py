"""One 2D-image normaliser (intensity.image_to_unit) for evaluate, panels and training: CT slices get
the CT window (the old evaluate used MR percentiles on CT DICOM slices while training used the
window), 8-bit images are divided by 255."""

from __future__ import annotations

import numpy as np
from conftest import shared_path

from MedSRLib.intensity import CT_WINDOW_HU, image_to_unit
from MedSRLib.io import read_image_2d


def test_ct_dicom_slice_uses_the_ct_window_in_evaluate_and_training():
    from training.data import to_unit

    path = sorted(shared_path("totalseg-ct", "example_ct_dicom").iterdir())[10]
    raw = read_image_2d(path)
    unit = image_to_unit(raw)
    low, high = CT_WINDOW_HU
    np.testing.assert_allclose(unit, np.clip((raw.astype(np.float64) - low) / (high - low), 0, 1), atol=1e-12)
    np.testing.assert_array_equal(to_unit(raw, normalise="auto"), unit.astype(np.float32))


def test_eight_bit_images_are_divided_by_255_whatever_the_modality():
    path = sorted(shared_path("covid-ct").rglob("*.png"))[0]
    raw = read_image_2d(path)
    assert raw.max() <= 255 and raw.min() >= 0
    np.testing.assert_array_equal(image_to_unit(raw), raw.astype(np.float64) / 255.0)
    np.testing.assert_array_equal(image_to_unit(raw, modality="CT"), raw.astype(np.float64) / 255.0)  # grey, not HU


def test_mr_float_image_uses_its_percentiles_and_is_clipped():
    rng = np.random.default_rng(0)
    image = rng.gamma(2.0, 100.0, size=(64, 64))
    unit = image_to_unit(image)
    assert unit.max() == 1.0 and np.mean(unit >= 1.0) < 0.01  # the top 0.5 % saturate
