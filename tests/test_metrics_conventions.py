"""MedSRLib.metrics: PSNR/SSIM/MS-SSIM against independent direct formulas and the named conventions.

The references below are written from the definitions (Wang 2004 SSIM with an explicit 11 x 11
window loop, pytorch_ssim's zero-padded variant, Wang 2003 MS-SSIM), not with the libraries the
module uses, so a wrong window, padding, covariance or constant would show.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import shared_path

from MedSRLib.errors import GeometryError, InputSizeError, UnsupportedImageError
from MedSRLib.metrics import (
    BASICSR,
    CONVENTIONS,
    DRIDSR_Y,
    SRDA,
    Y_CHANNEL_PSNR_OFFSET_DB,
    MetricConvention,
    evaluate_pair,
    get_convention,
    ms_ssim,
    psnr,
    ssim,
)
from MedSRLib.resize import degrade, imresize


def _window() -> np.ndarray:
    g = np.exp(-((np.arange(11) - 5.0) ** 2) / (2 * 1.5**2))
    g /= g.sum()
    return np.outer(g, g)


def _ssim_terms_valid(a: np.ndarray, b: np.ndarray, L: float) -> tuple[np.ndarray, np.ndarray]:
    """(ssim map, cs map) at every position where the 11 x 11 window fits, by an explicit loop."""
    w = _window()
    c1, c2 = (0.01 * L) ** 2, (0.03 * L) ** 2
    h, wd = a.shape[0] - 10, a.shape[1] - 10
    s_map, cs_map = np.empty((h, wd)), np.empty((h, wd))
    for i in range(h):
        for j in range(wd):
            pa, pb = a[i : i + 11, j : j + 11], b[i : i + 11, j : j + 11]
            ma, mb = (w * pa).sum(), (w * pb).sum()
            va, vb = (w * (pa - ma) ** 2).sum(), (w * (pb - mb) ** 2).sum()
            cov = (w * (pa - ma) * (pb - mb)).sum()
            cs_map[i, j] = (2 * cov + c2) / (va + vb + c2)
            s_map[i, j] = (2 * ma * mb + c1) / (ma**2 + mb**2 + c1) * cs_map[i, j]
    return s_map, cs_map


def _ssim_same_pytorch_ssim(a: np.ndarray, b: np.ndarray) -> float:
    """pytorch_ssim's formula: conv2d with zero padding 5, C1 = 0.01^2, C2 = 0.03^2, mean of the map."""
    win = torch.from_numpy(_window())[None, None]
    x, y = (torch.from_numpy(v)[None, None] for v in (a, b))

    def conv(t: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.conv2d(t, win, padding=5)

    mu1, mu2 = conv(x), conv(y)
    s1, s2, s12 = conv(x * x) - mu1**2, conv(y * y) - mu2**2, conv(x * y) - mu1 * mu2
    c1, c2 = 0.01**2, 0.03**2
    m = ((2 * mu1 * mu2 + c1) * (2 * s12 + c2)) / ((mu1**2 + mu2**2 + c1) * (s1 + s2 + c2))
    return float(m.mean())


@pytest.fixture(scope="module")
def pair() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    hr = np.clip(np.cumsum(rng.normal(size=(30, 26)), axis=1) / 10 + 0.5, 0, 1)
    sr = np.clip(hr + rng.normal(scale=0.05, size=hr.shape), 0, 1)
    return sr, hr


# ---- PSNR ---------------------------------------------------------------------------------------
def test_psnr_hand_computed_and_shave():
    hr = np.zeros((10, 10))
    sr = np.full((10, 10), 0.1)
    assert psnr(sr, hr, data_range=1.0) == pytest.approx(20.0, abs=1e-12)  # MSE 0.01
    assert psnr(sr * 255, hr, data_range=255.0) == pytest.approx(20.0, abs=1e-12)
    sr[0, :] = 1.0  # an error only in the border row: shaving it restores 20 dB
    assert psnr(sr, hr, data_range=1.0, shave=1) == pytest.approx(20.0, abs=1e-12)
    assert psnr(sr, hr, data_range=1.0) < 15.0
    assert psnr(hr, hr, data_range=1.0) == math.inf


def test_y_channel_adds_20log10_255_over_219(pair):
    sr, hr = pair
    assert Y_CHANNEL_PSNR_OFFSET_DB == pytest.approx(1.3219, abs=1e-4)
    grey = psnr(sr, hr, data_range=1.0, shave=2)
    y = psnr(sr, hr, data_range=1.0, shave=2, y_channel=True)
    assert y - grey == pytest.approx(Y_CHANNEL_PSNR_OFFSET_DB, abs=1e-10)


def test_quantize_rounds_to_8_bit_levels():
    hr = np.zeros((12, 12))
    sr = np.full((12, 12), 0.3 / 255)  # rounds to grey level 0: identical after quantisation
    assert psnr(sr, hr, data_range=1.0, quantize=True) == math.inf
    assert psnr(sr, hr, data_range=1.0) < math.inf


# ---- SSIM ---------------------------------------------------------------------------------------
def test_ssim_valid_equals_wang_2004_direct_loop(pair):
    sr, hr = pair
    ref = _ssim_terms_valid(sr, hr, 1.0)[0].mean()
    assert ssim(sr, hr, data_range=1.0) == pytest.approx(ref, abs=1e-12)
    ref_shaved = _ssim_terms_valid(sr[3:-3, 3:-3], hr[3:-3, 3:-3], 1.0)[0].mean()
    assert ssim(sr, hr, data_range=1.0, shave=3) == pytest.approx(ref_shaved, abs=1e-12)
    # invariant under the 0-255 scaling BasicSR uses (no rounding)
    assert ssim(sr * 255, hr * 255, data_range=255.0) == pytest.approx(ref, abs=1e-12)


def test_ssim_same_equals_pytorch_ssim_formula_and_differs_from_valid(pair):
    sr, hr = pair
    same = ssim(sr, hr, data_range=1.0, padding="same")
    assert same == pytest.approx(_ssim_same_pytorch_ssim(sr, hr), abs=1e-12)
    assert abs(same - ssim(sr, hr, data_range=1.0)) > 1e-3
    assert ssim(sr[:5, :5], hr[:5, :5], data_range=1.0, padding="same") <= 1.0  # any size works


def test_ssim_of_identical_images_is_one_and_y_channel_changes_it(pair):
    sr, hr = pair
    assert ssim(hr, hr, data_range=1.0) == pytest.approx(1.0, abs=1e-12)
    assert ssim(hr, hr, data_range=1.0, padding="same") == pytest.approx(1.0, abs=1e-12)
    y = ssim(sr, hr, data_range=1.0, y_channel=True)
    ref = _ssim_terms_valid(16 + 219 * sr, 16 + 219 * hr, 255.0)[0].mean()
    assert y == pytest.approx(ref, abs=1e-12)
    assert abs(y - ssim(sr, hr, data_range=1.0)) > 1e-4


# ---- MS-SSIM ------------------------------------------------------------------------------------
def test_ms_ssim_equals_wang_2003_direct_formula():
    rng = np.random.default_rng(3)
    hr = np.clip(np.cumsum(np.cumsum(rng.normal(size=(176, 176)), 0), 1) / 400 + 0.5, 0, 1)
    sr = np.clip(hr + rng.normal(scale=0.03, size=hr.shape), 0, 1)
    weights = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
    a, b, value = hr.copy(), sr.copy(), 1.0
    for level, wgt in enumerate(weights):
        s_map, cs_map = _ssim_terms_valid(b, a, 1.0)
        value *= max(cs_map.mean() if level < 4 else s_map.mean(), 0.0) ** wgt
        if level < 4:  # 2 x 2 average pooling (176 = 11 * 16: no odd sides)
            a, b = (v.reshape(v.shape[0] // 2, 2, v.shape[1] // 2, 2).mean(axis=(1, 3)) for v in (a, b))
    got = ms_ssim(sr, hr, data_range=1.0)
    assert got == pytest.approx(value, abs=1e-12)
    assert ms_ssim(hr, hr, data_range=1.0) == pytest.approx(1.0, abs=1e-12)


def test_ms_ssim_needs_more_than_160_pixels():
    img = np.zeros((160, 200))
    with pytest.raises(InputSizeError, match="161 px"):
        ms_ssim(img, img, data_range=1.0)
    with pytest.raises(InputSizeError, match="161 px"):
        ms_ssim(np.zeros((170, 170)), np.zeros((170, 170)), data_range=1.0, shave=5)


# ---- conventions --------------------------------------------------------------------------------
def test_named_conventions_are_registered_and_frozen():
    assert set(CONVENTIONS) == {"basicsr", "srda", "dridsr-y"}
    assert get_convention("DRIDSR_Y") is DRIDSR_Y and get_convention(SRDA) is SRDA
    assert BASICSR.shave_for(4) == 4 and SRDA.shave_for(4) == 0
    assert SRDA.ssim_padding == "same" and DRIDSR_Y.y_channel and DRIDSR_Y.ms_ssim
    with pytest.raises(AttributeError):
        BASICSR.shave = 0  # type: ignore[misc]
    with pytest.raises(ValueError, match="unknown metric convention 'matlab'; choose one of: basicsr"):
        get_convention("matlab")
    with pytest.raises(ValueError, match="ssim_padding"):
        MetricConvention(name="x", ssim_padding="full")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="shave"):
        MetricConvention(name="x", shave=-1)


def test_evaluate_pair_applies_each_convention(pair):
    sr, hr = pair
    b = evaluate_pair(sr, hr, scale=2, convention="basicsr")
    assert b == {"psnr": psnr(sr, hr, data_range=1.0, shave=2), "ssim": ssim(sr, hr, data_range=1.0, shave=2)}
    s = evaluate_pair(sr, hr, scale=2, convention=SRDA)
    assert s["psnr"] == pytest.approx(10 * math.log10(1 / np.mean((sr - hr) ** 2)), abs=1e-12)
    assert s["ssim"] == ssim(sr, hr, data_range=1.0, padding="same")
    d = evaluate_pair(sr, hr, scale=2, convention="dridsr-y")
    assert d["psnr"] - b["psnr"] == pytest.approx(Y_CHANNEL_PSNR_OFFSET_DB, abs=1e-10)
    assert d["ms_ssim"] is None  # 26 px: too small for MS-SSIM


def test_bicubic_x2_on_a_real_mr_slice_under_every_convention():
    from scipy.io import loadmat

    img = loadmat(shared_path("mr-volumes", "ixi-slices", "IXI040-Guys-0724-T2_69.mat"))["dcm"].astype(np.float64)
    hr = np.clip(img / np.percentile(img, 99.5), 0, 1)[20:220, 20:220]  # 200 x 200 brain, [0, 1]
    sr = np.clip(imresize(degrade(hr, scale=2), scale=2), 0, 1)
    b = evaluate_pair(sr, hr, scale=2, convention=BASICSR)
    d = evaluate_pair(sr, hr, scale=2, convention=DRIDSR_Y)
    s = evaluate_pair(sr, hr, scale=2, convention=SRDA)
    assert 24.0 < b["psnr"] < 40.0 and 0.7 < b["ssim"] < 1.0  # bicubic x2 on MR: the papers' 28-35 dB
    assert d["psnr"] - b["psnr"] == pytest.approx(Y_CHANNEL_PSNR_OFFSET_DB, abs=1e-9)
    assert d["ms_ssim"] is not None and b["ssim"] < d["ms_ssim"] <= 1.0
    assert s["psnr"] != b["psnr"] and 0.7 < s["ssim"] < 1.0


# ---- bad input ----------------------------------------------------------------------------------
def test_bad_inputs_raise_specific_errors_and_leave_inputs_untouched(pair):
    sr, hr = pair
    before = sr.copy()
    with pytest.raises(GeometryError, match="same shape"):
        psnr(sr, hr[:-1], data_range=1.0)
    with pytest.raises(UnsupportedImageError, match="2D grey image"):
        ssim(np.zeros((2, 20, 20)), np.zeros((2, 20, 20)), data_range=1.0)
    with pytest.raises(UnsupportedImageError, match="real-valued"):
        psnr(sr.astype(complex), hr, data_range=1.0)
    with pytest.raises(InputSizeError, match="at least 11 px"):
        ssim(sr[:12, :12], hr[:12, :12], data_range=1.0, shave=1)
    with pytest.raises(ValueError, match="data_range"):
        psnr(sr, hr, data_range=0)
    with pytest.raises(ValueError, match="shave"):
        psnr(sr, hr, data_range=1.0, shave=-1)
    with pytest.raises(ValueError, match="padding"):
        ssim(sr, hr, data_range=1.0, padding="full")  # type: ignore[arg-type]
    np.testing.assert_array_equal(sr, before)


def test_torch_and_batched_singleton_inputs(pair):
    sr, hr = pair
    t_sr, t_hr = torch.from_numpy(sr).float()[None, None], torch.from_numpy(hr).float()[None, None]
    assert psnr(t_sr, t_hr, data_range=1.0) == pytest.approx(
        psnr(sr.astype(np.float32), hr.astype(np.float32), data_range=1.0), abs=1e-9
    )
