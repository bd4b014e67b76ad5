"""Building blocks shared by several papers' networks (each written once, imported by the networks).

All blocks take and return ``N x C x H x W`` float tensors. Definitions follow
``../shared/design/networks.md`` Section 0; each docstring names the papers that use the block.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def conv3x3(c_in: int, c_out: int, *, bias: bool = True) -> nn.Conv2d:
    """A 3x3 convolution with 'same' zero padding."""
    return nn.Conv2d(c_in, c_out, 3, padding=1, bias=bias)


def conv1x1(c_in: int, c_out: int, *, bias: bool = True) -> nn.Conv2d:
    """A 1x1 convolution."""
    return nn.Conv2d(c_in, c_out, 1, bias=bias)


class EDSRUpsampler(nn.Sequential):
    """Sub-pixel upsampler of EDSR/RCAN (IDMAN, W2AMSN, SRDA).

    Scale 2^n: n x [conv3x3 C -> 4C, PixelShuffle(2)]; scale 3: conv3x3 C -> 9C, PixelShuffle(3).
    Channels stay C; spatial size is multiplied by ``scale``.
    """

    def __init__(self, scale: int, channels: int, *, bias: bool = True) -> None:
        layers: list[nn.Module] = []
        if scale == 3:
            layers += [conv3x3(channels, 9 * channels, bias=bias), nn.PixelShuffle(3)]
        elif scale >= 2 and (scale & (scale - 1)) == 0:
            for _ in range(int(math.log2(scale))):
                layers += [conv3x3(channels, 4 * channels, bias=bias), nn.PixelShuffle(2)]
        else:
            raise ValueError(f"EDSRUpsampler supports scales 2^n and 3; got {scale}")
        super().__init__(*layers)


class PixelShuffleHead(nn.Sequential):
    """One conv3x3 C_in -> s^2 * C_out followed by PixelShuffle(s), for any integer s (DRIDSR, MDRN)."""

    def __init__(self, scale: int, c_in: int, c_out: int, *, bias: bool = True) -> None:
        if scale < 1:
            raise ValueError(f"scale must be a positive integer; got {scale}")
        super().__init__(conv3x3(c_in, scale * scale * c_out, bias=bias), nn.PixelShuffle(scale))


class ResBlock(nn.Module):
    """EDSR residual block without BN: ``x + res_scale * conv3x3(ReLU(conv3x3(x)))`` (DRIDSR, SRDA)."""

    def __init__(self, channels: int, *, bias: bool = True, res_scale: float = 1.0) -> None:
        super().__init__()
        self.body = nn.Sequential(
            conv3x3(channels, channels, bias=bias), nn.ReLU(inplace=True), conv3x3(channels, channels, bias=bias)
        )
        self.res_scale = float(res_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.res_scale * self.body(x)


class SpatialAttention7(nn.Module):
    """CBAM spatial attention: ``m = sigmoid(conv7x7([mean_c(x), max_c(x)]))``; returns ``(x * m, m)``.

    ``m`` is ``N x 1 x H x W`` in (0, 1). Used twice by SRDA (SR network and diagnosis network).
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 1, 7, padding=3, bias=True)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pooled = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        m = torch.sigmoid(self.conv(pooled))
        return x * m, m


class BSConvU(nn.Module):
    """Blueprint separable conv (unconstrained): pointwise 1x1 C_in -> C_out (no bias), then depthwise
    3x3 on C_out channels (bias) (MDRN)."""

    def __init__(self, c_in: int, c_out: int, *, padding_mode: str = "zeros") -> None:
        super().__init__()
        self.pw = nn.Conv2d(c_in, c_out, 1, bias=False)
        self.dw = nn.Conv2d(c_out, c_out, 3, padding=1, groups=c_out, bias=True, padding_mode=padding_mode)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dw(self.pw(x))


class CCA(nn.Module):
    """Contrast-aware channel attention (IMDN): statistic = per-channel population std + mean over H x W,
    then 1x1 C -> C/r, ReLU, 1x1 C/r -> C, sigmoid; the input is scaled by it (MDRN).

    The std is ``sqrt(var + eps)`` so a constant channel gives finite gradients.
    """

    def __init__(self, channels: int, reduction: int = 16, *, eps: float = 1e-12) -> None:
        super().__init__()
        hidden = max(1, channels // reduction)
        self.fc = nn.Sequential(
            nn.Conv2d(channels, hidden, 1, bias=True),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, channels, 1, bias=True),
            nn.Sigmoid(),
        )
        self.eps = float(eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(dim=(2, 3), keepdim=True)
        var = (x - mean).pow(2).mean(dim=(2, 3), keepdim=True)
        return x * self.fc(torch.sqrt(var + self.eps) + mean)


class NCAB(nn.Module):
    """Non-reduction channel attention block of W2AMSN (Fig. 2, Eqs. 5-6):
    ``softmax_c(GAP(conv1x1_u(x))) * conv1x1_l(x) + x``; both 1x1 convs C -> C with bias."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.upper = conv1x1(channels, channels)
        self.lower = conv1x1(channels, channels)

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        """Channel weights ``N x C x 1 x 1`` that sum to 1 over C."""
        return torch.softmax(self.upper(x).mean(dim=(2, 3), keepdim=True), dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.attention(x) * self.lower(x) + x


# ------------------------------------------------------------------------------ inference rewrites
# Exact rewrites of the shared blocks, registered with :mod:`.rewrites` (applied by
# ``prepare_for_inference``; never used for training).

from .rewrites import add_, register_swap, scale_conv_  # noqa: E402  (rewrites imports no block)


class _InferenceResBlock(ResBlock):
    """:class:`ResBlock` with ``res_scale`` folded into its last convolution and an in-place skip."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return add_(self.body(x), x)


def _fold_res_scale(m: ResBlock) -> None:
    if m.res_scale != 1.0:
        scale_conv_(m.body[-1], m.res_scale, dim=0)
        m.res_scale = 1.0


class _InferenceNCAB(NCAB):
    """:class:`NCAB` whose attention pools before the 1x1 ``upper`` convolution
    (``softmax(GAP(conv1x1(x)))`` = ``softmax(conv1x1(GAP(x)))``: the mean commutes with a linear map);
    in-place tail."""

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.upper(x.mean(dim=(2, 3), keepdim=True)), dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.lower(x)
        att = self.attention(x)
        if y.dtype == torch.result_type(y, att):
            return add_(y.mul_(att), x)
        return att * y + x


register_swap(ResBlock, _InferenceResBlock, rewrite=_fold_res_scale, condition=lambda m: isinstance(m.body[-1], nn.Conv2d))
register_swap(NCAB, _InferenceNCAB, condition=lambda m: isinstance(m.upper, nn.Conv2d) and m.upper.kernel_size == (1, 1))
