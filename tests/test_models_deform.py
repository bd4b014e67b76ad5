"""DCNv1 in pure torch (MedSRLib.models.deform): exactness against conv2d and an explicit bilinear reference, the offset
channel layout (y, x interleaved per tap), bilinear interpolation, gradients, init, chunking."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from MedSRLib.errors import MedSRError, ModelInputError, OptionError
from MedSRLib.models import count_macs
from MedSRLib.models import deform
from MedSRLib.models.deform import DeformConv2dV1, deform_conv2d


def _inputs(n=2, c_in=3, c_out=4, h=11, w=13, k=3, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, c_in, h, w, generator=g, dtype=dtype)
    weight = torch.randn(c_out, c_in, k, k, generator=g, dtype=dtype) * 0.3
    bias = torch.randn(c_out, generator=g, dtype=dtype)
    return x, weight, bias


def _reference_dcn(x, offset, weight, bias=None):
    """Independent DCN: explicit floor/fraction bilinear sampling with zeros outside, tap by tap."""
    n, c_in, h, w = x.shape
    c_out, _, kh, kw = weight.shape
    ys, xs = torch.meshgrid(torch.arange(h, dtype=x.dtype), torch.arange(w, dtype=x.dtype), indexing="ij")

    def pixel(yi, xi):  # N x C x H x W values at integer positions, 0 outside the image
        inside = ((yi >= 0) & (yi < h) & (xi >= 0) & (xi < w)).unsqueeze(1)
        flat = (yi.clamp(0, h - 1) * w + xi.clamp(0, w - 1)).view(n, 1, h * w).expand(n, c_in, h * w)
        return torch.gather(x.reshape(n, c_in, h * w), 2, flat).view(n, c_in, h, w) * inside

    out = torch.zeros(n, c_out, h, w, dtype=x.dtype)
    for k in range(kh * kw):
        py = ys + (k // kw - kh // 2) + offset[:, 2 * k]
        px = xs + (k % kw - kw // 2) + offset[:, 2 * k + 1]
        y0, x0 = torch.floor(py), torch.floor(px)
        fy, fx = (py - y0).unsqueeze(1), (px - x0).unsqueeze(1)
        y0, x0 = y0.long(), x0.long()
        sampled = ((1 - fy) * (1 - fx) * pixel(y0, x0) + (1 - fy) * fx * pixel(y0, x0 + 1)
                   + fy * (1 - fx) * pixel(y0 + 1, x0) + fy * fx * pixel(y0 + 1, x0 + 1))
        out += torch.einsum("oc,nchw->nohw", weight[:, :, k // kw, k % kw], sampled)
    return out if bias is None else out + bias.view(1, -1, 1, 1)


@pytest.mark.parametrize("k", [1, 3, 5])
def test_zero_offsets_equal_conv2d(k):
    x, weight, bias = _inputs(k=k)
    offset = torch.zeros(2, 2 * k * k, 11, 13)
    out = deform_conv2d(x, offset, weight, bias)
    assert (out - F.conv2d(x, weight, bias, padding=k // 2)).abs().max() < 1e-5


@pytest.mark.parametrize("size", [(1, 7), (5, 1), (1, 1)])
def test_zero_offsets_equal_conv2d_for_one_pixel_sides(size):
    x, weight, bias = _inputs(n=1, c_in=1, c_out=4, h=size[0], w=size[1])
    out = deform_conv2d(x, torch.zeros(1, 18, *size), weight, bias)
    assert (out - F.conv2d(x, weight, bias, padding=1)).abs().max() < 1e-5


@pytest.mark.parametrize(("dtype", "tol"), [(torch.float32, 1e-4), (torch.float64, 1e-10)])
def test_zero_offsets_on_a_large_slice(dtype, tol):
    # float32 sampling positions carry grid_sample's coordinate normalisation rounding (~1e-5 px
    # on a 300-px side); float64 is exact to rounding.
    x, weight, bias = _inputs(n=1, c_in=1, c_out=4, h=300, w=301, dtype=dtype)
    out = deform_conv2d(x, torch.zeros(1, 18, 300, 301, dtype=dtype), weight, bias)
    assert (out - F.conv2d(x, weight, bias, padding=1)).abs().max() < tol


def test_constant_x_offset_is_a_one_column_shift():
    # Channel 2k+1 is the x (column) displacement of tap k: +1 reads the column to the right.
    x, weight, _ = _inputs()
    offset = torch.zeros(2, 18, 11, 13)
    offset[:, 1::2] = 1.0
    out = deform_conv2d(x, offset, weight)
    shifted = F.conv2d(x[..., 1:], weight, padding=1)  # image shifted left by one column
    # away from the borders (column 0 of `shifted` sees its own zero padding, the last two columns ours)
    assert (out[..., 1:-2] - shifted[..., 1:-1]).abs().max() < 1e-5
    assert (out[..., 1:-2] - F.conv2d(x, weight, padding=1)[..., 1:-2]).abs().max() > 1e-2


def test_constant_y_offset_is_a_one_row_shift():
    # Channel 2k is the y (row) displacement of tap k.
    x, weight, _ = _inputs()
    offset = torch.zeros(2, 18, 11, 13)
    offset[:, 0::2] = 1.0
    out = deform_conv2d(x, offset, weight)
    shifted = F.conv2d(x[..., 1:, :], weight, padding=1)
    assert (out[..., 1:-2, :] - shifted[..., 1:-1, :]).abs().max() < 1e-5


def test_half_pixel_offset_is_bilinear_average():
    x, weight, _ = _inputs()
    offset = torch.zeros(2, 18, 11, 13)
    offset[:, 1::2] = 0.5
    out = deform_conv2d(x, offset, weight)
    averaged = 0.5 * (x[..., :-1] + x[..., 1:])  # column j = value at j + 0.5
    ref = F.conv2d(averaged, weight, padding=1)
    assert (out[..., 1:-2] - ref[..., 1:-1]).abs().max() < 1e-5


def test_random_offsets_match_reference_including_outside_samples():
    x, weight, bias = _inputs(dtype=torch.float64)
    g = torch.Generator().manual_seed(1)
    offset = (torch.rand(2, 18, 11, 13, generator=g, dtype=torch.float64) - 0.5) * 6  # up to 3 px, leaves the image
    out = deform_conv2d(x, offset, weight, bias)
    ref = _reference_dcn(x, offset, weight, bias)
    assert (out - ref).abs().max() < 1e-10


def test_modulation_mask_scales_each_tap():
    x, weight, _ = _inputs()
    offset = torch.zeros(2, 18, 11, 13)
    mask = torch.zeros(2, 9, 11, 13)
    mask[:, 4] = 1.0  # keep only the centre tap
    out = deform_conv2d(x, offset, weight, mask=mask)
    ref = F.conv2d(x, weight[:, :, 1:2, 1:2])
    assert (out - ref).abs().max() < 1e-5


def test_tap_chunking_gives_the_same_result(monkeypatch):
    x, weight, bias = _inputs()
    offset = torch.randn(2, 18, 11, 13)
    whole = deform_conv2d(x, offset, weight, bias)
    monkeypatch.setattr(deform, "MAX_SAMPLED_ELEMENTS", 2 * 3 * 11 * 13 * 2)  # two taps at a time
    chunked = deform_conv2d(x, offset, weight, bias)
    assert (whole - chunked).abs().max() < 1e-5


def test_gradcheck_input_offsets_and_weight():
    g = torch.Generator().manual_seed(2)
    x = torch.rand(1, 2, 4, 5, generator=g, dtype=torch.float64, requires_grad=True)
    # fractional offsets away from integers, where bilinear sampling is differentiable
    offset = (torch.rand(1, 18, 4, 5, generator=g, dtype=torch.float64) * 0.8 + 0.1 - 0.5).requires_grad_()
    weight = torch.randn(2, 2, 3, 3, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b, c: deform_conv2d(a, b, c), (x, offset, weight))


def test_module_starts_as_plain_convolution_and_offset_conv_gets_gradients():
    torch.manual_seed(0)
    m = DeformConv2dV1(2, 4)
    assert m.offset_conv.weight.abs().sum() == 0 and m.offset_conv.bias.abs().sum() == 0
    assert m.bias is None and tuple(m.weight.shape) == (4, 2, 3, 3)
    x = torch.rand(1, 2, 9, 10)
    assert (m(x) - F.conv2d(x, m.weight, padding=1)).abs().max() < 1e-5

    with torch.no_grad():
        m.offset_conv.weight.normal_(0, 0.5)  # non-zero offsets
    x.requires_grad_(True)
    m(x).square().sum().backward()
    for p in (m.offset_conv.weight, m.offset_conv.bias, m.weight):
        assert torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0
    assert x.grad.abs().sum() > 0


def test_offset_bias_init_default_keeps_random_bias_and_modulated_starts_at_half():
    torch.manual_seed(0)
    assert DeformConv2dV1(1, 4, offset_bias_init="default").offset_conv.bias.abs().sum() > 0
    m = DeformConv2dV1(1, 4, modulated=True)
    x = torch.rand(1, 1, 7, 8)
    assert (m(x) - 0.5 * F.conv2d(x, m.weight, padding=1)).abs().max() < 1e-6
    # re-initialising keeps the zero offset conv
    with torch.no_grad():
        m.offset_conv.weight.fill_(1.0)
    m.reset_parameters()
    assert m.offset_conv.weight.abs().sum() == 0


def test_macs_count_the_kxk_weights_and_the_offset_conv():
    m = DeformConv2dV1(2, 8)
    # per pixel: deformable conv 8*2*9 + offset conv 18*2*9
    assert count_macs(torch.nn.Sequential(torch.nn.Conv2d(1, 2, 1, bias=False), m), (6, 7)) == 6 * 7 * (2 + 144 + 324)


def test_bad_arguments_raise_medsr_errors():
    with pytest.raises(OptionError, match="kernel_size"):
        DeformConv2dV1(1, 4, kernel_size=4)
    with pytest.raises(OptionError, match="offset_bias_init"):
        DeformConv2dV1(1, 4, offset_bias_init="random")
    with pytest.raises(OptionError, match="out_channels"):
        DeformConv2dV1(1, 0)
    x, weight, _ = _inputs()
    with pytest.raises(ModelInputError, match="offset must be"):
        deform_conv2d(x, torch.zeros(2, 9, 11, 13), weight)
    with pytest.raises(MedSRError, match="input channels"):
        deform_conv2d(x[:, :2], torch.zeros(2, 18, 11, 13), weight)
