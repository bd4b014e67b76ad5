"""The non-learned models `bicubic` and `nearest`: registry entries, shapes, and their exact outputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import shared_path

from MedSRLib.errors import ScaleError
from MedSRLib.models import get_model, list_models
from MedSRLib.models.interpolation import SCALES
from MedSRLib.resize import degrade, imresize


@pytest.mark.parametrize("name", ["bicubic", "nearest"])
def test_registered_as_parameter_free_any_modality_models(name):
    spec = get_model(name.upper())
    assert spec is get_model(name) and spec.name == name
    assert not spec.learned and spec.has_weights(4) and spec.modality == "any"
    assert spec.scales == SCALES and {2, 3, 4, 8} <= set(spec.scales) and spec.min_lr_size == 1
    assert spec.num_parameters(2) == 0 and spec.macs_per_lr_pixel(2) == 0.0
    assert [s.name for s in list_models()][:2] == ["bicubic", "nearest"]


@pytest.mark.parametrize("name", ["bicubic", "nearest"])
@pytest.mark.parametrize("scale", SCALES)
def test_output_shape_on_odd_and_one_row_inputs(name, scale):
    module = get_model(name).build(scale)
    for h, w in ((23, 17), (1, 5), (1, 1)):
        out = module(torch.rand(2, 1, h, w))
        assert out.shape == (2, 1, scale * h, scale * w) and out.dtype == torch.float32


@pytest.mark.parametrize("scale", [2, 3, 4, 8])
def test_bicubic_equals_imresize(scale):
    x = torch.rand(3, 1, 11, 9, dtype=torch.float64, generator=torch.Generator().manual_seed(scale))
    out = get_model("bicubic").build(scale)(x)
    assert torch.equal(out, imresize(x, scale=scale))
    # MATLAB Section 10.3 T6: the 1 x 8 ramp at x2
    ramp = torch.arange(1.0, 9.0, dtype=torch.float64).reshape(1, 1, 1, 8)
    if scale == 2:
        row = get_model("bicubic").build(2)(ramp)[0, 0, 0]
        assert abs(row[0].item() - 0.90625) < 1e-12 and abs(row[3].item() - 2.25) < 1e-12


@pytest.mark.parametrize("scale", [2, 3, 4, 8])
def test_nearest_equals_numpy_repeat(scale):
    x = torch.rand(2, 1, 7, 5, generator=torch.Generator().manual_seed(scale))
    out = get_model("nearest").build(scale)(x)
    ref = np.repeat(np.repeat(x.numpy(), scale, axis=2), scale, axis=3)
    np.testing.assert_array_equal(out.numpy(), ref)


def test_bicubic_beats_nearest_on_a_real_ct_slice():
    pydicom = pytest.importorskip("pydicom")
    folder = shared_path("totalseg-ct", "example_ct_dicom")
    ds = pydicom.dcmread(sorted(folder.iterdir())[10])
    hu = ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    hr = np.clip((hu[160:352, 160:352] + 1000.0) / 2000.0, 0.0, 1.0)  # 192 x 192 crop, [-1000, 1000] HU
    lr = torch.from_numpy(degrade(hr, scale=2))[None, None]
    errors = {}
    for name in ("bicubic", "nearest"):
        sr = get_model(name).build(2)(lr)[0, 0].numpy()
        errors[name] = float(np.sqrt(np.mean((sr - hr) ** 2)))
    assert errors["bicubic"] < errors["nearest"]


@pytest.mark.parametrize("name", ["bicubic", "nearest"])
@pytest.mark.parametrize("scale", [1, 9, 2.5, 0])
def test_unsupported_scale_raises_scale_error(name, scale):
    with pytest.raises(ScaleError, match=f"model '{name}' does not support scale"):
        get_model(name).build(scale)
