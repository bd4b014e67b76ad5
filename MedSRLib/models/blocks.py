"""Building blocks shared by several papers' networks (each written once, imported by the networks).

All blocks take and return ``N x C x H x W`` float tensors. Definitions follow
``../shared/design/networks.md`` Section 0; each docstring names the papers that use the block.
"""

from __future__ import annotations

import math
from typing import Callable

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


class ShuffleTailFold(nn.Module):
    """Inference form of ``tail(PixelShuffle_s(head(x)))`` where ``head`` and ``tail`` are 3x3 convs with
    nothing between them (DRIDSR's upsampler and tail): one 5x5 conv on the LR grid, ``C_in -> s^2 C_out``,
    then PixelShuffle(s) -- the same linear map, with ~1/9 of the MACs at x2 (``C_in = 24``: 11.3 ->
    1.3 GFLOP per 512^2 slice), no ``s^2 C`` intermediate and no HR conv with one output channel.

    The 5x5 kernel and its bias are the path's impulse response (float64). Exact in exact arithmetic
    everywhere: the HR tail's zero padding differs from the LR conv's only on the outermost LR row and
    column of outputs, and those four strips are recomputed through the original layers on their 3-pixel
    input strips (~1 % of the work). ``N x C_in x h x w`` -> ``N x C_out x s h x s w``, in the weights' dtype.

    ``forward(y, pre)`` takes the map BEFORE a preceding PixelShuffle(pre) (SRDA x4: the first upsampler
    stage's conv output, ``C_in pre^2`` channels at ``h / pre``) and runs the same 5x5 conv as a 3x3 conv on
    that grid (:meth:`unshuffled_weight`: ``C_in pre^2 -> C_out s^2 pre^2``; a 2-pixel reach at the shuffled
    size is a 1-pixel reach at ``pre >= 2``, and zero padding maps to zero padding), so the shuffled
    ``C_in``-channel map is never built: equal to ``forward(PixelShuffle_pre(y))``.
    """

    def __init__(self, head: nn.Conv2d, scale: int, tail: nn.Conv2d) -> None:
        super().__init__()
        if head.kernel_size != (3, 3) or tail.kernel_size != (3, 3) or head.padding != (1, 1) or tail.padding != (1, 1):
            raise ValueError("ShuffleTailFold needs 3x3 'same' convolutions")
        if head.out_channels != scale * scale * tail.in_channels:
            raise ValueError(f"head gives {head.out_channels} channels; PixelShuffle({scale}) then tail needs "
                             f"{scale * scale * tail.in_channels}")
        self.scale = int(scale)
        for name, conv in (("head", head), ("tail", tail)):  # copies for the border strips
            self.register_buffer(f"{name}_weight", conv.weight.detach().clone(), persistent=False)
            self.register_buffer(f"{name}_bias", None if conv.bias is None else conv.bias.detach().clone(), persistent=False)
        weight, bias = self._impulse_response()
        self.register_buffer("weight", weight, persistent=False)
        self.register_buffer("bias", bias, persistent=False)

    @staticmethod
    def applies(upsampler: nn.Sequential, tail: nn.Module) -> bool:
        """Whether ``upsampler`` ends with ``[conv3x3, PixelShuffle]`` and ``tail`` is a 3x3 conv (foldable)."""
        return (len(upsampler) >= 2 and isinstance(upsampler[-1], nn.PixelShuffle) and isinstance(upsampler[-2], nn.Conv2d)
                and isinstance(tail, nn.Conv2d) and tail.kernel_size == (3, 3))

    @classmethod
    def of(cls, upsampler: nn.Sequential, tail: nn.Conv2d) -> "ShuffleTailFold":
        """The fold of ``upsampler``'s last stage (conv + PixelShuffle) and ``tail``; the stages before it
        (``upsampler[:-2]``, EDSR x4's first) stay with the network."""
        return cls(upsampler[-2], upsampler[-1].upscale_factor, tail)

    def after_stages(self, upsampler: nn.Sequential, h: torch.Tensor) -> torch.Tensor:
        """The whole of :meth:`of`'s ``upsampler`` + tail on ``h``: the stages before the folded one (EDSR
        x4's first), then the fold; a PixelShuffle ending those stages is not run but read through
        (``forward(h, pre)``)."""
        stages = list(upsampler)[:-2]
        pre = stages.pop().upscale_factor if stages and isinstance(stages[-1], nn.PixelShuffle) else 1
        for stage in stages:
            h = stage(h)
        return self(h, pre)

    def original(self, x: torch.Tensor, *, bias: bool = True) -> torch.Tensor:
        """The unfolded path ``tail(PixelShuffle_s(head(x)))``."""
        head_b, tail_b = (self.head_bias, self.tail_bias) if bias else (None, None)
        up = nn.functional.pixel_shuffle(nn.functional.conv2d(x, self.head_weight.to(x.dtype),
                                                              None if head_b is None else head_b.to(x.dtype), padding=1), self.scale)
        return nn.functional.conv2d(up, self.tail_weight.to(x.dtype), None if tail_b is None else tail_b.to(x.dtype), padding=1)

    @torch.no_grad()
    def _impulse_response(self) -> tuple[torch.Tensor, torch.Tensor]:
        s, c_in = self.scale, self.head_weight.shape[1]
        c_out = self.tail_weight.shape[0]
        impulses = torch.zeros(c_in, c_in, 5, 5, dtype=torch.float64, device=self.head_weight.device)
        impulses[torch.arange(c_in), torch.arange(c_in), 2, 2] = 1.0
        response = self.original(impulses, bias=False)  # c_in x c_out x 5s x 5s; no border effect (kernel reach 2)
        # out_LR(i, j)[o, a, b] = sum_k W[(o, a, b), c, ky, kx] x[c, i + ky - 2, j + kx - 2]: an impulse at
        # (2, 2) shows W[..., c, 4 - i, 4 - j] at LR output (i, j), sub-pixel (a, b) = HR (s i + a, s j + b).
        r = response.reshape(c_in, c_out, 5, s, 5, s).permute(1, 3, 5, 0, 2, 4).flip(-1, -2)
        weight = r.reshape(c_out * s * s, c_in, 5, 5)
        constant = self.original(torch.zeros(1, c_in, 5, 5, dtype=torch.float64, device=self.head_weight.device))
        bias = constant[0, :, 2 * s : 3 * s, 2 * s : 3 * s].reshape(c_out * s * s)  # an interior output
        dtype = self.head_weight.dtype  # the weights' own precision (computed in float64)
        return weight.to(dtype).contiguous(), bias.to(dtype).contiguous()

    def macs_removed(self, h: int, w: int, pre: int = 1) -> int:
        """Multiply-accumulates the fold saves on an ``h x w`` input: the head conv and the tail at
        ``s`` x that, minus the 5x5 LR conv (the border strips, ~1 %, not counted); with ``pre`` (an input
        before a PixelShuffle(pre), see the class) the 3x3 conv on the unshuffled grid replaces the 5x5."""
        c_mid, c_in = self.head_weight.shape[:2]
        c_out, c_tail = self.tail_weight.shape[:2]
        s = self.scale
        pixels = h * w * pre * pre  # at the fold's own input size
        unfolded = pixels * (9 * c_in * c_mid + s * s * 9 * c_tail * c_out)
        k = 5 if pre == 1 else self.unshuffled_kernel(pre)  # the conv that runs, on the h x w grid
        return int(unfolded - h * w * k * k * (c_in * pre * pre) * (c_out * s * s * pre * pre))

    @staticmethod
    def unshuffled_kernel(pre: int) -> int:
        """Side of the conv on the grid before a PixelShuffle(``pre``) that reaches as far as the 5x5 after it."""
        return 2 * (-(-2 // pre)) + 1

    def unshuffled_weight(self, pre: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(weight, bias)`` of the conv on the unshuffled grid (cached per ``pre``): input channel
        ``c pre^2 + a pre + b`` is the shuffled map's channel ``c`` at sub-pixel ``(a, b)``; output channel
        ``o pre^2 + a' pre + b'`` is the 5x5 conv's output ``o`` at sub-pixel ``(a', b')``; a tap ``(di, dj)``
        of input sub-pixel ``(a, b)`` is the 5x5 tap ``(pre di + a - a' + 2, pre dj + b - b' + 2)`` when inside."""
        cache = self.__dict__.setdefault("_unshuffled", {})
        if pre not in cache:
            k = self.unshuffled_kernel(pre)
            c = self.weight.shape[1] * pre * pre
            with torch.no_grad():  # the impulse response, as for the 5x5 kernel: each output is one weight x 1
                impulses = torch.zeros(c, c, k, k, dtype=self.weight.dtype, device=self.weight.device)
                impulses[torch.arange(c), torch.arange(c), k // 2, k // 2] = 1.0
                shuffled = nn.functional.pixel_shuffle(impulses, pre)
                response = nn.functional.pixel_unshuffle(nn.functional.conv2d(shuffled, self.weight, padding=2), pre)
            weight = response.transpose(0, 1).flip(-1, -2)  # a correlation's impulse response is its flipped kernel
            cache[pre] = (weight.contiguous(), self.bias.repeat_interleave(pre * pre).contiguous())
        return cache[pre]

    #: In a full-precision layer (``rewrites``): reduced-precision inputs are cast here, in bands.
    casts_own_inputs = True

    def forward(self, x: torch.Tensor, pre: int = 1) -> torch.Tensor:
        s = self.scale
        if pre > 1:
            return self._forward_unshuffled(x, int(pre))
        if x.dtype in (torch.bfloat16, torch.float16) and self.weight.dtype not in (torch.bfloat16, torch.float16):
            x = x.to(self.weight.dtype)
        h, w = x.shape[-2:]
        if h < 3 or w < 3:
            return self.original(x)
        y = nn.functional.pixel_shuffle(nn.functional.conv2d(x, self.weight.to(x.dtype), self.bias.to(x.dtype), padding=2), s)
        return self._with_exact_border(y, lambda edge: x[edge])

    def _with_exact_border(self, y: torch.Tensor, strip: Callable[[tuple], torch.Tensor]) -> torch.Tensor:
        """``y`` with its outermost LR row/column of outputs (``s`` HR pixels each side) recomputed through
        the original layers: ``strip(index)`` gives the fold's input at ``index`` (its 3 outermost rows or
        columns), where the HR tail's zero padding differs from the LR conv's."""
        s = self.scale
        y[..., :s, :] = self.original(strip((..., slice(0, 3), slice(None))))[..., :s, :]
        y[..., -s:, :] = self.original(strip((..., slice(-3, None), slice(None))))[..., -s:, :]
        y[..., :, :s] = self.original(strip((..., slice(None), slice(0, 3))))[..., :, :s]
        y[..., :, -s:] = self.original(strip((..., slice(None), slice(-3, None))))[..., :, -s:]
        return y

    #: Bytes of one band of the unshuffled input in :meth:`_conv_in_bands` (cast to the weights' dtype a band
    #: at a time: SRDA x4's 256-channel 512^2 map in one piece was a 268 MB fp32 copy, faulted in on every run).
    BAND_BYTES = 8 * 2**20

    def _conv_in_bands(self, u: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """``conv2d(u, weight, bias, 'same' zero padding)`` in the weights' dtype, over bands of rows of ``u``
        (each cast on its own, with its neighbours' halo rows; zero rows only at the true borders)."""
        n, c, h, w = u.shape
        reach = weight.shape[-1] // 2
        dtype = weight.dtype
        band = max(1, min(h, self.BAND_BYTES // max(1, n * c * w * torch.finfo(dtype).bits // 8)))
        out = torch.empty((n, weight.shape[0], h, w), dtype=dtype, device=u.device)
        if u.is_contiguous(memory_format=torch.channels_last):
            out = out.contiguous(memory_format=torch.channels_last)
        for r0 in range(0, h, band):
            r1 = min(h, r0 + band)
            piece = u[..., max(0, r0 - reach) : min(h, r1 + reach), :].to(dtype)  # the band and its halo rows
            piece = nn.functional.pad(piece, (0, 0, max(0, reach - r0), max(0, r1 + reach - h)))  # zeros past the borders
            out[..., r0:r1, :] = nn.functional.conv2d(piece, weight, bias, padding=(0, reach))
        return out

    def _forward_unshuffled(self, u: torch.Tensor, pre: int) -> torch.Tensor:
        """``forward(PixelShuffle_pre(u))`` without building the shuffled map (see the class)."""
        s = self.scale
        h, w = u.shape[-2] * pre, u.shape[-1] * pre
        dtype = self.weight.dtype if u.dtype in (torch.bfloat16, torch.float16) else u.dtype
        if h < 3 or w < 3:
            return self.original(nn.functional.pixel_shuffle(u.to(dtype), pre))
        weight, bias = self.unshuffled_weight(pre)
        z = self._conv_in_bands(u, weight.to(dtype), bias.to(dtype))
        y = nn.functional.pixel_shuffle(nn.functional.pixel_shuffle(z, pre), s)
        rows = -(-3 // pre)  # unshuffled rows/columns holding the 3 outermost shuffled ones

        def strip(edge: tuple) -> torch.Tensor:  # the shuffled map at ``edge``, from the unshuffled rows/columns
            near = tuple(slice(None) if e == slice(None) else slice(0, rows) if e.start == 0 else slice(-rows, None)
                         for e in edge[1:])
            return nn.functional.pixel_shuffle(u[(...,) + near].to(dtype), pre)[edge]

        return self._with_exact_border(y, strip)


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

from . import fused  # noqa: E402
from .rewrites import add_, register_swap, scale_conv_  # noqa: E402  (rewrites imports no block)


class _InferenceResBlock(ResBlock):
    """:class:`ResBlock` with ``res_scale`` folded into its last convolution and an in-place skip; in a
    bf16 body on the CPU the ReLU and the skip run inside the convolutions (:mod:`.fused`)."""

    def forward(self, x: torch.Tensor, *, consume: bool = False) -> torch.Tensor:
        """``consume``: the caller no longer needs ``x``; a fused bf16 call then writes the result into it."""
        if fused.applies(x) and len(self.body) == 3 and isinstance(self.body[1], nn.ReLU):
            return fused.conv(fused.conv(x, self.body[0], relu=True), self.body[2], add=x, add_is_scratch=consume)
        return add_(self.body(x), x)


def _fold_res_scale(m: ResBlock) -> None:
    if m.res_scale != 1.0:
        scale_conv_(m.body[-1], m.res_scale, dim=0)
        m.res_scale = 1.0


class _InferenceNCAB(NCAB):
    """:class:`NCAB` whose attention pools before the 1x1 ``upper`` convolution
    (``softmax(GAP(conv1x1(x)))`` = ``softmax(conv1x1(GAP(x)))``: the mean commutes with a linear map);
    in-place tail. In a bf16 body on the CPU (:mod:`.fused`): the pooling by GEMM
    (:func:`.fused.channel_means`) and ``att * lower(x) + x`` as one convolution per sample: the attention
    scales ``lower``'s output channels, so it scales its weight rows and bias (in fp32, rounded once),
    and the skip is the convolution's add post-op."""

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        if fused.applies(x):
            pooled = fused.channel_means(x).to(x.dtype)[:, :, None, None]
        else:
            pooled = x.mean(dim=(2, 3), keepdim=True)
        return torch.softmax(self.upper(pooled), dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if fused.applies(x) and isinstance(self.lower, nn.Conv2d) and self.lower.kernel_size == (1, 1):
            return fused.conv_scaled(x, self.lower, self.attention(x), add=x)
        y = self.lower(x)
        att = self.attention(x)
        if y.dtype == torch.result_type(y, att):
            return add_(y.mul_(att), x)
        return att * y + x


register_swap(ResBlock, _InferenceResBlock, rewrite=_fold_res_scale, condition=lambda m: isinstance(m.body[-1], nn.Conv2d))
register_swap(NCAB, _InferenceNCAB, condition=lambda m: isinstance(m.upper, nn.Conv2d) and m.upper.kernel_size == (1, 1))
