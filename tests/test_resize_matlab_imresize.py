"""MedSRLib.resize reproduces MATLAB imresize(x, scale, 'bicubic') (networks.md Section 10).

Checks the published vectors T1-T6 to 1e-12 in float64, an independent dense implementation of
MATLAB's documented `contributions` algorithm on random and real images, the interior identity with
torch's antialiased bicubic, and the dtype / batch / 1-row / error behaviour.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import shared_path

from MedSRLib.errors import InputSizeError, ScaleError, UnsupportedImageError
from MedSRLib.resize import degrade, imresize, modcrop

TOL = 1e-12


# ---- independent oracle: MATLAB's contributions() as a dense matrix (1-based, as MATLAB writes it) ----
def _keys(x: np.ndarray) -> np.ndarray:
    ax = np.abs(x)
    return np.where(
        ax <= 1, 1.5 * ax**3 - 2.5 * ax**2 + 1, np.where(ax <= 2, -0.5 * ax**3 + 2.5 * ax**2 - 4 * ax + 2, 0.0)
    )


def _matlab_matrix(n_in: int, scale: float) -> np.ndarray:
    n_out = math.ceil(n_in * scale - 1e-9)
    if scale < 1:
        kernel, width = (lambda t: scale * _keys(scale * t)), 4.0 / scale
    else:
        kernel, width = _keys, 4.0
    u = np.arange(1, n_out + 1) / scale + 0.5 * (1 - 1 / scale)
    idx = np.floor(u - width / 2)[:, None] + np.arange(math.ceil(width) + 2)[None, :]
    w = kernel(u[:, None] - idx)
    w /= w.sum(axis=1, keepdims=True)
    aux = np.concatenate([np.arange(n_in), np.arange(n_in)[::-1]])
    cols = aux[np.mod(idx.astype(int) - 1, 2 * n_in)]
    mat = np.zeros((n_out, n_in))
    for r in range(n_out):
        np.add.at(mat[r], cols[r], w[r])
    return mat


def matlab_imresize(img: np.ndarray, scale: float) -> np.ndarray:
    return _matlab_matrix(img.shape[0], scale) @ img @ _matlab_matrix(img.shape[1], scale).T


def pattern(n: int) -> np.ndarray:
    r, c = np.mgrid[0:n, 0:n]
    return ((3 * r + 5 * c) % 11) / 10.0


ROW = np.arange(1, 9, dtype=np.float64)[None, :]


# ---- Section 10.3 vectors --------------------------------------------------------------------------
def test_T1_row_downscale_by_2():
    out = imresize(ROW, scale=1 / 2)
    np.testing.assert_allclose(out, [[1.44921875, 3.48828125, 5.51171875, 7.55078125]], rtol=0, atol=TOL)
    assert out.dtype == np.float64 and abs(out.sum() - 18.0) < TOL


def test_T1b_row_downscale_by_4():
    np.testing.assert_allclose(imresize(ROW, scale=0.25), [[2.3759765625, 6.6240234375]], rtol=0, atol=TOL)


def test_T6_row_upscale_by_2_gives_two_equal_rows():
    expected = [0.90625, 1.1796875, 1.7265625, 2.25, 2.75, 3.25, 3.75, 4.25, 4.75, 5.25, 5.75, 6.25, 6.75,
                7.2734375, 7.8203125, 8.09375]  # fmt: skip
    out = imresize(ROW, scale=2)
    assert out.shape == (2, 16)
    np.testing.assert_allclose(out, [expected, expected], rtol=0, atol=TOL)


T2 = [[0.3487335205, 0.6324417114, 0.5115982056, 0.4087890625],
      [0.4860671997, 0.5244842529, 0.5321777344, 0.4187942505],
      [0.4419204712, 0.4308898926, 0.5815887451, 0.4774368286],
      [0.6570678711, 0.4645278931, 0.5422134399, 0.4912689209]]  # fmt: skip
T3 = [[0.4562566682, 0.5445358939, 0.4874409389, 0.4488035360],
      [0.4597317482, 0.5330894681, 0.4634202103, 0.5449931413],
      [0.5464563329, 0.4736168267, 0.5090687395, 0.5165371132],
      [0.5120408474, 0.5030787990, 0.5326627039, 0.4127114769]]  # fmt: skip
T4 = [[0.4820068598, 0.5047819972, 0.4825922132, 0.5354895353],
      [0.4968409419, 0.5051702499, 0.5057535887, 0.4798206687],
      [0.5201793313, 0.4942464113, 0.4948297501, 0.5031590581],
      [0.4645104647, 0.5174077868, 0.4952180028, 0.5179931402]]  # fmt: skip


@pytest.mark.parametrize(
    "n, s, expected, total", [(8, 2, T2, 7.95), (12, 3, T3, 7.944444444444), (16, 4, T4, 8.0)], ids=["T2", "T3", "T4"]
)
def test_T2_T3_T4_pattern_downscale(n, s, expected, total):
    out = imresize(pattern(n), scale=1 / s)
    # the published values are rounded to 10 decimals; the oracle gives the full-precision check
    np.testing.assert_allclose(out, expected, rtol=0, atol=5.1e-11)
    np.testing.assert_allclose(out, matlab_imresize(pattern(n), 1 / s), rtol=0, atol=TOL)
    assert abs(out.sum() - total) < 1e-9
    np.testing.assert_allclose(degrade(pattern(n), scale=s), out, rtol=0, atol=0)


def test_T5_pattern_upscale_by_2():
    out = imresize(pattern(4), scale=2)
    assert out.shape == (8, 8)
    first = [-0.0750000000, 0.0593017578, 0.3279052734, 0.6460205078, 1.0136474609, 0.9745849609, 0.5288330078,
             0.3059570313]  # fmt: skip
    np.testing.assert_allclose(out[0], first, rtol=0, atol=5.1e-11)
    np.testing.assert_allclose(out, matlab_imresize(pattern(4), 2), rtol=0, atol=TOL)
    assert abs(out.sum() - 32.8) < 1e-9


# ---- against the oracle on random, odd-sized, tiny and real images ----------------------------------
@pytest.mark.parametrize("shape", [(40, 36), (23, 17), (7, 5), (1, 9), (5, 1), (1, 1)])
@pytest.mark.parametrize("s", [2, 3, 4, 8])
def test_matches_matlab_oracle_up_and_down(shape, s):
    img = np.random.default_rng(s).random(shape)
    up = imresize(img, scale=s)
    assert up.shape == (shape[0] * s, shape[1] * s)
    np.testing.assert_allclose(up, matlab_imresize(img, s), rtol=0, atol=1e-13)
    down = imresize(img, scale=1 / s)  # sizes not divisible by s: MATLAB's ceil(N/s) output
    assert down.shape == (math.ceil(shape[0] / s), math.ceil(shape[1] / s))
    np.testing.assert_allclose(down, matlab_imresize(img, 1 / s), rtol=0, atol=1e-13)


def test_real_mr_slice_matches_oracle():
    from scipy.io import loadmat

    path = shared_path("mr-volumes", "ixi-slices", "IXI040-Guys-0724-T2_69.mat")
    img = loadmat(path)["dcm"].astype(np.float64)[64:160, 40:136] / 1000.0  # 96 x 96 crop, brain tissue
    assert img.std() > 0.05
    for s in (2, 3, 4):
        np.testing.assert_allclose(degrade(img, scale=s), matlab_imresize(img, 1 / s), rtol=0, atol=1e-13)
        np.testing.assert_allclose(imresize(img[:24, :24], scale=s), matlab_imresize(img[:24, :24], s), atol=1e-13)


# ---- against torch: interior identity with antialias=True, clear difference without -----------------
@pytest.mark.parametrize("s", [2, 3, 4])
def test_interior_equals_torch_antialias_and_differs_from_plain_bicubic(s):
    img = torch.rand(1, 1, 96, 96, dtype=torch.float64, generator=torch.Generator().manual_seed(s))
    ours = imresize(img, scale=1 / s)
    size = (96 // s, 96 // s)
    aa = F.interpolate(img, size=size, mode="bicubic", align_corners=False, antialias=True)
    plain = F.interpolate(img, size=size, mode="bicubic", align_corners=False)
    m = 2 * s  # LR pixels reached by the border treatment
    interior = (..., slice(m, -m), slice(m, -m))
    assert (ours[interior] - aa[interior]).abs().max().item() < 1e-13
    assert (ours - aa).abs().max().item() > 1e-3  # truncate-and-renormalise border differs from symmetric
    assert (ours[interior] - plain[interior]).abs().max().item() > 0.1  # a = -0.75, no antialias


# ---- types, batches, devices of the API ------------------------------------------------------------
def test_numpy_and_torch_give_the_same_result_and_inputs_are_untouched():
    img = np.random.default_rng(0).random((3, 30, 24))
    before = img.copy()
    t = torch.from_numpy(img.copy())
    for scale in (1 / 3, 3):
        a, b = imresize(img, scale=scale), imresize(t, scale=scale)
        assert isinstance(a, np.ndarray) and isinstance(b, torch.Tensor) and b.dtype == torch.float64
        assert np.array_equal(a, b.numpy())
    np.testing.assert_array_equal(img, before)
    np.testing.assert_array_equal(t.numpy(), before)


def test_batched_nchw_equals_per_image_and_keeps_float32():
    x = torch.rand(3, 2, 24, 20, generator=torch.Generator().manual_seed(1))
    for scale in (1 / 4, 2):
        out = imresize(x, scale=scale)
        assert out.dtype == torch.float32 and out.shape[:2] == (3, 2)
        for n in range(3):
            for c in range(2):
                single = matlab_imresize(x[n, c].double().numpy(), scale)
                assert np.abs(out[n, c].double().numpy() - single).max() < 2e-6


def test_float32_numpy_and_half_tensor_keep_dtype_integer_gives_float64():
    img = np.random.default_rng(2).random((16, 16))
    ref = matlab_imresize(img, 0.5)
    f32 = imresize(img.astype(np.float32), scale=0.5)
    assert f32.dtype == np.float32 and np.abs(f32 - ref).max() < 2e-6
    half = imresize(torch.from_numpy(img).half(), scale=0.5)
    assert half.dtype == torch.float16 and (half.double().numpy() - ref).__abs__().max() < 2e-3
    ints = (img * 1000).astype(np.int16)
    out = imresize(ints, scale=0.5)
    assert out.dtype == np.float64
    np.testing.assert_allclose(out, matlab_imresize(ints.astype(np.float64), 0.5), atol=1e-10)
    big_endian = img.astype(">f8")
    np.testing.assert_array_equal(imresize(big_endian, scale=2), imresize(img, scale=2))


def test_one_row_image_both_directions():
    row = np.random.default_rng(3).random((1, 12))
    down = imresize(row, scale=1 / 3)
    assert down.shape == (1, 4)
    np.testing.assert_allclose(down, matlab_imresize(row, 1 / 3), atol=TOL)
    up = imresize(torch.from_numpy(row)[None, None].float(), scale=4)
    assert up.shape == (1, 1, 4, 48)
    assert (up[0, 0] - up[0, 0, :1]).abs().max().item() < 1e-6  # every row equal (float32 rounding)
    np.testing.assert_allclose(up[0, 0].double().numpy(), matlab_imresize(row, 4), atol=2e-6)


def test_scale_one_is_an_identity_copy():
    x = torch.rand(2, 5, 7)
    y = imresize(x, scale=1)
    assert torch.equal(x, y) and y.data_ptr() != x.data_ptr()


def test_volume_degrade_is_slice_by_slice():
    vol = np.random.default_rng(4).random((4, 17, 22))  # (z, y, x), in-plane not a multiple of 2
    lr = degrade(vol, scale=2)
    assert lr.shape == (4, 8, 11)
    for k in range(4):
        np.testing.assert_allclose(lr[k], matlab_imresize(vol[k, :16, :22], 0.5), atol=TOL)


# ---- modcrop and errors ------------------------------------------------------------------------------
def test_modcrop_crops_bottom_right_and_returns_a_view():
    img = np.arange(7 * 10).reshape(7, 10)
    out = modcrop(img, 3)
    assert out.shape == (6, 9) and np.shares_memory(out, img)
    np.testing.assert_array_equal(out, img[:6, :9])
    assert modcrop(torch.zeros(2, 1, 9, 8), scale=4).shape == (2, 1, 8, 8)


@pytest.mark.parametrize("scale", [1.5, 0.4, 2 / 3, 0, -2, float("nan"), float("inf"), True, "2"])
def test_unsupported_scales_raise_scale_error(scale):
    with pytest.raises(ScaleError, match="scale"):
        imresize(np.zeros((8, 8)), scale=scale)


def test_bad_inputs_raise_specific_errors():
    with pytest.raises(UnsupportedImageError, match="shape"):
        imresize(np.zeros(8), scale=2)
    with pytest.raises(UnsupportedImageError, match="real-valued"):
        imresize(np.zeros((4, 4), dtype=complex), scale=2)
    with pytest.raises(UnsupportedImageError, match="numpy array or torch tensor"):
        imresize([[1.0, 2.0]], scale=2)
    with pytest.raises(InputSizeError, match="H, W >= 1"):
        imresize(torch.zeros(0, 4), scale=2)
    with pytest.raises(InputSizeError, match="smaller than the scale"):
        degrade(np.zeros((3, 40)), scale=4)
    for bad in (2.0, 0, True):
        with pytest.raises(ScaleError, match="positive integer"):
            degrade(np.zeros((8, 8)), scale=bad)
