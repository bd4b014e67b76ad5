"""The one-direction slice-profile degradation and one-axis interpolation (MedSRLib.resize), against
scipy.ndimage and analytic cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import ndimage

from MedSRLib.errors import InputSizeError, ScaleError, UnsupportedImageError
from MedSRLib.resize import (
    interpolate_axis,
    interpolation_matrix,
    lr_length,
    slice_profile_degrade,
    slice_profile_matrix,
)

FWHM_TO_SIGMA = 1.0 / (2.0 * math.sqrt(2.0 * math.log(2.0)))


@pytest.mark.parametrize("kind,order", [("linear", 1), ("bspline3", 3)])
@pytest.mark.parametrize("n_in,n_out", [(35, 175), (35, 166), (12, 97), (40, 40), (9, 4)])
def test_interpolation_matches_scipy_map_coordinates(kind: str, order: int, n_in: int, n_out: int) -> None:
    rng = np.random.default_rng(n_in * 1000 + n_out)
    y = rng.random((n_in, 7))
    u = (np.arange(n_out) + 0.5) * n_in / n_out - 0.5
    ref = np.stack([ndimage.map_coordinates(y[:, c], [u], order=order, mode="reflect") for c in range(7)], axis=1)
    out = interpolate_axis(y, axis=0, n_out=n_out, kind=kind)
    assert out.shape == (n_out, 7)
    np.testing.assert_allclose(out, ref, atol=1e-10)


@pytest.mark.parametrize("kind", ["linear", "bspline3"])
def test_interpolation_reproduces_constants_lines_and_samples(kind: str) -> None:
    m = interpolation_matrix(20, 100, kind)
    np.testing.assert_allclose(m.sum(axis=1), 1.0, atol=1e-12)  # constants kept
    x = np.arange(20.0)
    u = (np.arange(100) + 0.5) * 0.2 - 0.5
    # a ramp is exact away from the borders (the mirrored ramp bends there; the B-spline prefilter's
    # influence decays as 0.268^k, so 8 samples in it is below 1e-4)
    inner = (u >= 8) & (u <= 11)
    np.testing.assert_allclose((m @ x)[inner], u[inner], atol=2e-4 if kind == "bspline3" else 1e-12)
    # odd integer factor: every 5th output sits on an input sample and equals it (interpolating)
    y = np.random.default_rng(1).random(20)
    np.testing.assert_allclose((m @ y)[2::5], y, atol=1e-12)


def test_interpolation_axis_and_torch_agree_with_numpy() -> None:
    vol = np.random.default_rng(2).random((6, 9, 5)).astype(np.float32)
    out = interpolate_axis(vol, axis=1, n_out=31, kind="bspline3")
    assert out.shape == (6, 31, 5) and out.dtype == np.float32
    ref = np.stack([[ndimage.map_coordinates(vol[i, :, j].astype(np.float64), [(np.arange(31) + 0.5) * 9 / 31 - 0.5],
                                             order=3, mode="reflect") for j in range(5)] for i in range(6)])
    np.testing.assert_allclose(out, ref.transpose(0, 2, 1), atol=1e-5)
    t = interpolate_axis(torch.from_numpy(vol), axis=1, n_out=31, kind="bspline3")
    assert isinstance(t, torch.Tensor)
    np.testing.assert_allclose(t.numpy(), out, atol=1e-5)


@pytest.mark.parametrize("factor", [2, 3, 5, 7])
def test_gaussian_profile_matches_scipy_for_odd_and_even_factors(factor: int) -> None:
    x = np.random.default_rng(factor).random((8 * factor + 3, 11))
    lr = slice_profile_degrade(x, axis=0, factor=factor)
    n_lr = lr_length(x.shape[0], factor)
    assert lr.shape == (n_lr, 11) == ((8 * factor + 3) // factor, 11)
    blurred = ndimage.gaussian_filter1d(x, factor * FWHM_TO_SIGMA, axis=0, mode="reflect", truncate=5.5)
    centres = (np.arange(n_lr) + 0.5) * factor - 0.5
    ref = np.stack([np.interp(centres, np.arange(x.shape[0]), blurred[:, c]) for c in range(11)], axis=1)
    np.testing.assert_allclose(lr, ref, atol=1e-10)


def test_rect_profile_is_the_block_mean_for_integer_factors() -> None:
    x = np.random.default_rng(3).random((40, 6))
    for f in (3, 5):  # odd width centred on a sample: exactly the mean of f consecutive samples
        lr = slice_profile_degrade(x, axis=0, factor=f, profile="rect")
        np.testing.assert_allclose(lr, x[: lr.shape[0] * f].reshape(-1, f, 6).mean(axis=1), atol=1e-12)


def test_degradation_keeps_constants_ramps_and_field_of_view() -> None:
    n, f = 60, 4.5
    m = slice_profile_matrix(n, f, f, "gaussian")
    assert m.shape == (lr_length(n, f), n) == (13, 60)
    np.testing.assert_allclose(m.sum(axis=1), 1.0, atol=1e-12)
    ramp = np.arange(n, dtype=np.float64)
    centres = (np.arange(13) + 0.5) * f - 0.5
    inner = (centres > 3 * f) & (centres < n - 1 - 3 * f)
    np.testing.assert_allclose((m @ ramp)[inner], centres[inner], atol=1e-9)  # symmetric profile: centre kept
    # FWHM: a delta's response, read back at half maximum, is `thickness` wide
    delta = np.zeros(201)
    delta[100] = 1
    blur = slice_profile_matrix(201, 1.0 + 1e-12, 9.0, "gaussian")
    resp = blur @ delta
    sigma = 9.0 * FWHM_TO_SIGMA
    np.testing.assert_allclose(resp.max() / resp.sum(), 1 / math.sqrt(2 * math.pi) / sigma, rtol=1e-3)


def test_volume_and_torch_degradation_agree() -> None:
    vol = np.random.default_rng(4).random((30, 8, 9)).astype(np.float32)
    lr = slice_profile_degrade(vol, axis=2, factor=3, thickness=2.5)
    assert lr.shape == (30, 8, 3) and lr.dtype == np.float32
    t = slice_profile_degrade(torch.from_numpy(vol), axis=2, factor=3, thickness=2.5)
    np.testing.assert_allclose(t.numpy(), lr, atol=1e-6)


def test_bad_arguments_raise_specific_errors() -> None:
    x = np.zeros((10, 10))
    with pytest.raises(ScaleError):
        slice_profile_degrade(x, axis=0, factor=1.0)
    with pytest.raises(ScaleError):
        slice_profile_degrade(x, axis=0, factor=2, thickness=0)
    with pytest.raises(ScaleError):
        slice_profile_degrade(x, axis=0, factor=2, profile="sinc")
    with pytest.raises(UnsupportedImageError):
        slice_profile_degrade(x, axis=2, factor=2)
    with pytest.raises(ScaleError):
        interpolation_matrix(4, 8, "cubic")
    with pytest.raises(InputSizeError):
        interpolation_matrix(0, 8, "linear")
