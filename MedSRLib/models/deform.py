"""Deformable convolution v1 (Dai et al., "Deformable Convolutional Networks", ICCV 2017) in pure torch.

Used by SRDA's first layer (``../shared/design/networks.md`` Section 6.1). No torchvision: the
bilinear sampling of all taps is one ``F.grid_sample(padding_mode='zeros')`` call (native forward and
backward on every device), then the kxk weights are one matmul over the sampled taps. Zero offsets
reproduce ``F.conv2d(x, w, padding=k // 2)``: exactly to rounding in float64; in float32 the
positions carry grid_sample's coordinate-normalisation rounding (<= ~2e-5 px on 512-px sides), which
is far below any learned offset. Half-precision inputs are sampled in float32.

Offset channel layout (the torchvision / mmcv convention): for the ``K = kh * kw`` kernel taps in
row-major order ``k = ky * kw + kx``, channel ``2k`` is the **y** (row) displacement and channel
``2k + 1`` the **x** (column) displacement of tap ``k``, in pixels; ``offset`` is ``N x 2K x H x W``.
The optional DCNv2 modulation ``mask`` is ``N x K x H x W`` (tap ``k`` in channel ``k``).

Sampling: output pixel ``p = (y, x)`` and tap ``k`` with grid position ``p_k`` in
``{-(kh//2)..kh//2} x {-(kw//2)..kw//2}`` read the input bilinearly at ``p + p_k + offset_k(p)``;
the input is zero outside the image (like ``F.grid_sample(padding_mode='zeros')``).
Stride is 1 and the output has the input's size ('same').
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ModelInputError, OptionError
from .checks import positive_int
from .rewrites import register_in_place

__all__ = ["DeformConv2dV1", "deform_conv2d"]

#: Largest number of sampled values (N * C_in * taps * H * W) held at once; more taps are
#: processed in groups so inference on 512 x 512 slices stays memory-bounded.
MAX_SAMPLED_ELEMENTS = 1 << 24


def deform_conv2d(
    x: torch.Tensor,
    offset: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Deformable convolution (DCNv1; DCNv2 when ``mask`` is given), stride 1, 'same' size.

    Args:
        x: input ``N x C_in x H x W``.
        offset: ``N x 2K x H x W`` displacements in pixels, ``K = kh * kw``, channels (y, x)
            interleaved per tap (module docstring).
        weight: ``C_out x C_in x kh x kw`` (odd kh, kw).
        bias: optional ``C_out``.
        mask: optional modulation ``N x K x H x W`` (DCNv2), multiplies each tap's sample.

    Returns:
        ``N x C_out x H x W``.
    """
    if x.dim() != 4 or weight.dim() != 4:
        raise ModelInputError(f"deform_conv2d expects 4D x and weight; got {tuple(x.shape)} and {tuple(weight.shape)}")
    n, c_in, h, w = x.shape
    c_out, c_in_w, kh, kw = weight.shape
    if c_in_w != c_in:
        raise ModelInputError(f"weight has {c_in_w} input channels but x has {c_in}")
    if kh % 2 == 0 or kw % 2 == 0:
        raise ModelInputError(f"deform_conv2d needs an odd kernel size; got {kh}x{kw}")
    taps = kh * kw
    if tuple(offset.shape) != (n, 2 * taps, h, w):
        raise ModelInputError(f"offset must be {(n, 2 * taps, h, w)} (N x 2K x H x W); got {tuple(offset.shape)}")
    if mask is not None and tuple(mask.shape) != (n, taps, h, w):
        raise ModelInputError(f"mask must be {(n, taps, h, w)} (N x K x H x W); got {tuple(mask.shape)}")

    # Sampling in at least float32: half precision cannot address 512-px rows finely.
    dtype = torch.promote_types(torch.promote_types(x.dtype, offset.dtype), torch.float32)
    ky, kx = torch.meshgrid(
        torch.arange(kh, device=x.device, dtype=dtype) - kh // 2,
        torch.arange(kw, device=x.device, dtype=dtype) - kw // 2,
        indexing="ij",
    )
    # grid_sample's normalised coordinates (align_corners=False, defined for 1-px sides too):
    # pixel position p -> (2 p + 1) / size - 1; outside samples blend with zeros.
    gy = (2 * (torch.arange(h, device=x.device, dtype=dtype).view(1, 1, h, 1) + ky.reshape(1, taps, 1, 1)) + 1) / h - 1
    gx = (2 * (torch.arange(w, device=x.device, dtype=dtype).view(1, 1, 1, w) + kx.reshape(1, taps, 1, 1)) + 1) / w - 1
    gy = gy + offset[:, 0::2].to(dtype) * (2.0 / h)  # N x K x H x W
    gx = gx + offset[:, 1::2].to(dtype) * (2.0 / w)

    x_s = x.to(dtype)
    w_taps = weight.reshape(c_out, c_in, taps)
    group = max(1, min(taps, MAX_SAMPLED_ELEMENTS // max(1, n * c_in * h * w)))
    out = None
    for k0 in range(0, taps, group):
        k1 = min(taps, k0 + group)
        kk = k1 - k0
        grid = torch.stack((gx[:, k0:k1], gy[:, k0:k1]), dim=-1).view(n, kk * h, w, 2)
        cols = F.grid_sample(x_s, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        cols = cols.view(n, c_in, kk, h * w)
        if mask is not None:
            cols = cols * mask[:, k0:k1].reshape(n, 1, kk, h * w)
        cols = cols.to(weight.dtype)
        # (C_out x C_in*kk) @ (N x C_in*kk x HW): the kxk weights applied to the sampled taps.
        part = torch.matmul(w_taps[:, :, k0:k1].reshape(c_out, c_in * kk), cols.reshape(n, c_in * kk, h * w))
        out = part if out is None else out + part
    out = out.view(n, c_out, h, w)
    if bias is not None:
        out = out + bias.view(1, c_out, 1, 1)
    return out


class DeformConv2dV1(nn.Conv2d):
    """DCNv1 layer: ``offset = conv_kxk(x)`` (C_in -> 2K, bias), then :func:`deform_conv2d`.

    It is an ``nn.Conv2d`` (stride 1, 'same' padding, groups 1) whose taps read deformed positions, so
    ``weight`` is ``C_out x C_in x k x k`` with nn.Conv2d's init and :func:`~.base.count_macs` counts
    its ``C_out * C_in * k * k`` MACs per pixel (the sampling itself is not counted).
    The offset convolution's weight starts at zero, so the layer starts as a plain convolution;
    ``offset_bias_init='zero'`` (default) zeroes its bias too, ``'default'`` keeps PyTorch's random
    bias (the SRDA code's behaviour: constant offsets up to +-1/sqrt(9 C_in) px at start).
    ``modulated=True`` adds the DCNv2 mask ``sigmoid(conv_kxk(x))`` (C_in -> K; zero weight and
    bias, so it starts at 0.5).

    Args:
        in_channels, out_channels: C_in, C_out.
        kernel_size: odd k (3 in SRDA).
        bias: whether the deformable convolution has a bias (SRDA: no).
        modulated: DCNv2 modulation.
        offset_bias_init: ``'zero'`` or ``'default'``.

    Shapes: ``N x C_in x H x W -> N x C_out x H x W``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        *,
        bias: bool = False,
        modulated: bool = False,
        offset_bias_init: str = "zero",
    ) -> None:
        positive_int("in_channels", in_channels)
        positive_int("out_channels", out_channels)
        if positive_int("kernel_size", kernel_size) % 2 == 0:
            raise OptionError(f"kernel_size must be a positive odd integer; got {kernel_size!r}")
        if offset_bias_init not in ("zero", "default"):
            raise OptionError(f"offset_bias_init must be 'zero' or 'default'; got {offset_bias_init!r}")
        super().__init__(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=bias)
        self.modulated = bool(modulated)
        self.offset_bias_init = offset_bias_init
        taps = kernel_size * kernel_size
        self.offset_conv = nn.Conv2d(in_channels, 2 * taps, kernel_size, padding=kernel_size // 2, bias=True)
        self.mask_conv = (
            nn.Conv2d(in_channels, taps, kernel_size, padding=kernel_size // 2, bias=True) if modulated else None
        )
        self._reset_offset_parameters()

    def reset_parameters(self) -> None:
        """nn.Conv2d's init for ``weight``/``bias``; zero offset (and mask) convolution weights."""
        super().reset_parameters()
        if "offset_conv" in self._modules:
            self._reset_offset_parameters()

    def _reset_offset_parameters(self) -> None:
        nn.init.zeros_(self.offset_conv.weight)
        if self.offset_bias_init == "zero":
            nn.init.zeros_(self.offset_conv.bias)
        if self.mask_conv is not None:
            nn.init.zeros_(self.mask_conv.weight)
            nn.init.zeros_(self.mask_conv.bias)

    def offsets(self, x: torch.Tensor) -> torch.Tensor:
        """The learned offsets ``N x 2K x H x W`` (pixels, (y, x) interleaved per tap)."""
        return self.offset_conv(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mask = torch.sigmoid(self.mask_conv(x)) if self.mask_conv is not None else None
        return deform_conv2d(x, self.offset_conv(x), self.weight, self.bias, mask)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, modulated={self.modulated}, offset_bias_init={self.offset_bias_init!r}"


# ------------------------------------------------------------------------------- inference rewrite


def _same_memory_format(_module: nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
    """Forward hook: ``output`` in the memory format of the module's first input (so a channels_last
    network does not convert every later layer's input)."""
    x = inputs[0]
    if output.dim() != 4 or not x.is_contiguous(memory_format=torch.channels_last):
        return output
    if x.is_contiguous() and not (x.shape[1] == 1 and x.device.type in ("cpu", "cuda")):
        return output  # plain NCHW (a 1-channel input is both: follow the engine's cpu/cuda default)
    return output.contiguous(memory_format=torch.channels_last)


def _keep_memory_format(m: DeformConv2dV1) -> None:
    m.register_forward_hook(_same_memory_format)
    m._medsr_keeps_format = True


register_in_place(DeformConv2dV1, _keep_memory_format, condition=lambda m: not getattr(m, "_medsr_keeps_format", False))
