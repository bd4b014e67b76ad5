"""MDRN: multi-distillation residual network (brain MR).

Deng et al., "MDRN: Multi-distillation residual network for efficient MR image super-resolution",
AIMS 2024 (``../shared/papers/004_*.txt``, Section 2, Eqs. 1-6, Fig. 1). Build, ambiguities and
options: ``../shared/design/networks.md`` Sections 7, 8 and 15.

* Shallow conv3x3 1 -> C (Eq. 1); n x :class:`FMDRB` in a chain (Eq. 2).
* Distillation connections outside the blocks (Eq. 3): ``concat(F_1..F_n)`` -> conv1x1 nC -> C ->
  conv3x3 C -> C, plus ``F_0`` (Eq. 4).
* Reconstruction: one conv3x3 C -> s^2 and PixelShuffle(s) for x2, x4 and x8.

Defaults C = 64, n = 8 (from BSRN; the paper states neither): 332,848 parameters at x4.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .base import ModelSpec, register
from .blocks import CCA, BSConvU, PixelShuffleHead, conv1x1, conv3x3
from .idman import MIN_LR_SIZE
from .checks import check_lr_input, choice, positive_int
from . import fused
from .rewrites import add_, add_to_stream, body_dtype, pointwise_conv, register_swap, to_body

PAPER = "Deng et al., MDRN: Multi-distillation residual network for efficient MR image super-resolution, AIMS 2024"

#: Smallest LR side with ``esa=True``: ESA's stride-2 3x3 conv followed by its 7x7 stride-3 max pool.
ESA_MIN_SIZE = 15


def _activation(name: str | None, *, option: str) -> nn.Module:
    """The activation named by option ``option`` (None = identity)."""
    choice(option, name, (None, "gelu", "lrelu"))
    if name == "gelu":
        return nn.GELU()
    if name == "lrelu":
        return nn.LeakyReLU(0.05, inplace=True)
    return nn.Identity()


class BSRB(nn.Module):
    """Blueprint-separable residual block (Section 2.2, after BSRN): ``ReLU(BSConvU(x) + x)``,
    ``N x C x H x W`` -> same."""

    def __init__(self, channels: int, *, padding_mode: str = "zeros") -> None:
        super().__init__()
        self.conv = BSConvU(channels, channels, padding_mode=padding_mode)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv(x) + x)


class ESA(nn.Module):
    """Enhanced spatial attention of RFDN (Liu et al., ECCV-W 2020), an option MDRN does not use
    (networks.md 7.2 item 8). ``N x C x H x W`` -> same, H, W >= :data:`ESA_MIN_SIZE`."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        f = max(1, channels // 4)
        self.conv1 = conv1x1(channels, f)
        self.conv_f = conv1x1(f, f)
        self.conv2 = nn.Conv2d(f, f, 3, stride=2)
        self.conv_max = conv3x3(f, f)
        self.conv3 = conv3x3(f, f)
        self.conv3_ = conv3x3(f, f)
        self.conv4 = conv1x1(f, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c1_ = self.conv1(x)
        v = F.max_pool2d(self.conv2(c1_), kernel_size=7, stride=3)
        c3 = self.conv3_(F.relu(self.conv3(F.relu(self.conv_max(v)))))
        c3 = F.interpolate(c3, size=x.shape[2:], mode="bilinear", align_corners=False)
        return x * torch.sigmoid(self.conv4(c3 + self.conv_f(c1_)))


class FMDRB(nn.Module):
    """Feature multi-distillation residual block (Section 2.2, Eq. 5; Fig. 1), ``N x C x H x W`` -> same.

    ``d_i = conv1x1(r_{i-1})`` (C -> dc, i = 1..3, ``r_0 = F_in``), ``r_i = BSRB(r_{i-1})``;
    ``r_4 = ReLU(BSConvU(r_3))`` (C -> dc; ``last_remain='bsrb_full'``: a full BSRB, C wide);
    ``out = CCA(conv1x1(concat(d_1, d_2, d_3, r_4))) + F_in`` (the residual only if ``block_residual``).
    Eq. 5 reuses D_2/R_2 for step 3: read as a typo, each step has its own layers.
    """

    #: In a fused bf16 body (:mod:`.fused`), run the fuse conv as a sum of per-part convolutions rather
    #: than on the concatenation (set by :class:`MDRN` per scale: :data:`BF16_FUSE_AS_SUM_SCALES`).
    fuse_as_sum: bool = False

    def __init__(self, channels: int, *, distill_channels: int | None = None, last_remain: str = "bsconv_half",
                 block_residual: bool = True, distill_act: str | None = None, cca_reduction: int = 16,
                 esa: bool = False, padding_mode: str = "zeros") -> None:
        super().__init__()
        positive_int("channels", channels)
        choice("last_remain", last_remain, ("bsconv_half", "bsrb_full"))
        choice("padding_mode", padding_mode, ("zeros", "reflect", "replicate", "circular"))
        dc = channels // 2 if distill_channels is None else positive_int("distill_channels", distill_channels)
        self.distill = nn.ModuleList(conv1x1(channels, dc) for _ in range(3))
        self.distill_act = _activation(distill_act, option="distill_act")
        self.remain = nn.ModuleList(BSRB(channels, padding_mode=padding_mode) for _ in range(3))
        if last_remain == "bsconv_half":
            self.last = nn.Sequential(BSConvU(channels, dc, padding_mode=padding_mode), nn.ReLU(inplace=True))
            last_width = dc
        else:
            self.last = BSRB(channels, padding_mode=padding_mode)
            last_width = channels
        self.fuse = conv1x1(3 * dc + last_width, channels)
        self.esa = ESA(channels) if esa else nn.Identity()
        self.cca = CCA(channels, positive_int("cca_reduction", cca_reduction))
        self.block_residual = bool(block_residual)

    def _distilled(self, x: torch.Tensor) -> torch.Tensor:
        """The progressive distillation: the kept features of every step, fused (``N x C x H x W``)."""
        kept = []
        r = x
        for dist, remain in zip(self.distill, self.remain):
            kept.append(self.distill_act(dist(r)))
            r = remain(r)
        kept.append(self.last(r))
        return self.fuse(torch.cat(kept, dim=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.cca(self.esa(self._distilled(x)))
        return self._add_residual(out, x) if self.block_residual else out

    def _add_residual(self, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``out + x`` (the inference rewrite below adds in place)."""
        return out + x


#: Scales whose aggregation 3x3 conv (64 -> 64 channels at LR size, the largest dense conv of the
#: network) runs in bf16 under native bf16: measured on 4 whole 512 x 512 real CT slices (x2, bf16 vs
#: fp32): max 7.35 -> 7.69 HU (within the 8 HU bound), 1.17x faster per slice (3.10 -> 2.65 s, 1 thread).
#: Not x4: 7.78 -> 8.38 HU.
BF16_AGGREGATE_SCALES: tuple[int, ...] = (2,)

#: Scales whose blocks, in the fused bf16 body, run their fuse 1x1 conv as a sum of per-part convolutions
#: (:func:`fused.conv_of_concat`) instead of on the concatenation of the kept features (each partial sum
#: rounded to bf16; no 128-channel copy per block). Measured on whole 512 x 512 real CT slices (bf16 vs
#: fp32, Intel Xeon with AMX, 2 threads): x2 0.696 -> 0.631 s per slice; max error over 8 slices 8.00 HU
#: with the concatenation, 7.51 HU as a sum (per-slice maxima 5.5-8.0 either way); x4 7.08 -> 8.27 HU
#: on 4 slices, over the 8 HU bound: x4 and x8 keep the concatenation.
BF16_FUSE_AS_SUM_SCALES: tuple[int, ...] = (2,)


class MDRN(nn.Module):
    """MDRN (Fig. 1, Eqs. 1-4): ``N x 1 x h x w`` in [0, 1] -> ``N x 1 x (s h) x (s w)``.

    Args (keyword-only; defaults = networks.md 7.1-7.2):
        scale: any integer >= 2 (paper: 2, 4, 8), one conv + PixelShuffle(s) stage.
        channels: C (64; Mao et al.'s NTIRE MDRN uses 56).  n_blocks: number of FMDRBs (8).
        last_remain, block_residual, distill_act, cca_reduction, esa, padding_mode: see :class:`FMDRB`
            (``padding_mode`` is the depthwise convs' padding).
        agg_conv: the aggregation's 3x3, ``'conv'`` (standard) or ``'bsconv'`` (BSRN style).
        agg_act: activation between the aggregation's 1x1 and 3x3: None (paper) or ``'gelu'`` (BSRN).
    """

    #: Layers on the image path (the head, the aggregation's last conv, whose output joins the global
    #: skip, and the upsampler after it): kept in fp32 under bf16 (``rewrites``), so reduced precision
    #: only touches the residual branch (real CT, MDRN x4, bf16 vs fp32 max 10.4 -> 7.0 HU with ``aggregate.2``).
    #: At the scales in :data:`BF16_AGGREGATE_SCALES` the aggregation's 3x3 runs in bf16 too (instance value).
    full_precision_layers: tuple[str, ...] = ("head", "aggregate.2", "upsample")

    def __init__(self, *, scale: int, channels: int = 64, n_blocks: int = 8, last_remain: str = "bsconv_half",
                 block_residual: bool = True, distill_act: str | None = None, cca_reduction: int = 16,
                 esa: bool = False, agg_conv: str = "conv", agg_act: str | None = None,
                 padding_mode: str = "zeros") -> None:
        super().__init__()
        positive_int("scale", scale)
        positive_int("channels", channels)
        positive_int("n_blocks", n_blocks)
        choice("agg_conv", agg_conv, ("conv", "bsconv"))
        choice("agg_act", agg_act, (None, "gelu"))
        self.scale = scale
        if scale in BF16_AGGREGATE_SCALES:
            self.full_precision_layers = ("head", "upsample")
        fuse_as_sum = scale in BF16_FUSE_AS_SUM_SCALES
        self.min_size = ESA_MIN_SIZE if esa else MIN_LR_SIZE
        self.head = conv3x3(1, channels)
        self.blocks = nn.ModuleList(
            FMDRB(channels, last_remain=last_remain, block_residual=block_residual, distill_act=distill_act,
                  cca_reduction=cca_reduction, esa=esa, padding_mode=padding_mode)
            for _ in range(n_blocks)
        )
        for block in self.blocks:
            block.fuse_as_sum = fuse_as_sum
        self.aggregate = nn.Sequential(
            conv1x1(n_blocks * channels, channels),
            _activation(agg_act, option="agg_act"),
            conv3x3(channels, channels) if agg_conv == "conv" else BSConvU(channels, channels, padding_mode=padding_mode),
        )
        self.upsample = PixelShuffleHead(scale, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_lr_input(x, model="MDRN", min_size=self.min_size)
        f0 = self.head(x)
        outs = []
        f = f0
        for block in self.blocks:
            f = block(f)
            outs.append(f)
        return self.upsample(self.aggregate(torch.cat(outs, dim=1)) + f0)


register(ModelSpec(
    name="mdrn", network="MDRN", config="paper", paper=PAPER, modality="MR", scales=(2, 4, 8),
    factory=MDRN, options=dict(channels=64, n_blocks=8), min_lr_size=MIN_LR_SIZE,
    description="MDRN: multi-distillation residual blocks with BSConv and contrast-aware attention (MR); 0.33M params",
))


# ------------------------------------------------------------------------------ inference rewrites
# Exact, registered with :mod:`.rewrites` (applied by ``prepare_for_inference``; never for training).


class _InferenceBSRB(BSRB):
    """:class:`BSRB` with the skip added and the ReLU applied in place; in a bf16 body on the CPU both
    inside the depthwise convolution (:mod:`.fused`)."""

    def forward(self, x: torch.Tensor, *, consume: bool = False) -> torch.Tensor:
        """``consume``: ``x`` is dead after this block; a fused bf16 call writes the result into it."""
        if fused.applies(x) and isinstance(self.act, nn.ReLU):
            return fused.conv(self.conv.pw(x), self.conv.dw, add=x, add_is_scratch=consume, relu=True)
        return torch.relu_(add_(self.conv(x), x)) if isinstance(self.act, nn.ReLU) else self.act(self.conv(x) + x)


class _InferenceFMDRB(FMDRB):
    """:class:`FMDRB` with the block residual added in place; :meth:`branch_unscaled` is the block without
    its residual and without the contrast-aware attention's scale (statistic by :func:`_contrast`), run
    in a reduced dtype by :func:`reduced_block_chain`, which applies the scale with the residual add."""

    def _add_residual(self, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return add_(out, x)

    def _distilled(self, x: torch.Tensor, *, consume: bool = False) -> torch.Tensor:
        """``consume``: ``x`` is dead after this block (the fused bf16 path then writes into it)."""
        if not fused.applies(x) or not isinstance(self.distill_act, nn.Identity):
            return super()._distilled(x)
        # bf16 on the CPU: ReLUs and skips inside the convolutions. The fuse conv runs on the concatenation,
        # or as a sum of per-map convolutions where that was measured within the bound (fuse_as_sum, see
        # BF16_FUSE_AS_SUM_SCALES: each partial sum is rounded to bf16; x4 8.3 HU, x2 7.5).
        kept = []
        r = x
        for step, (dist, remain) in enumerate(zip(self.distill, self.remain)):
            kept.append(dist(r))
            r = remain(r, consume=consume or step > 0)  # a step's input is dead after its BSRB
        last = self.last
        if isinstance(last, nn.Sequential) and len(last) == 2 and isinstance(last[1], nn.ReLU):
            kept.append(fused.conv(last[0].pw(r), last[0].dw, relu=True))
        else:
            kept.append(last(r))
        del r
        if self.fuse_as_sum:
            return fused.conv_of_concat(kept, self.fuse)
        return fused.conv(torch.cat(kept, dim=1), self.fuse)

    def branch_unscaled(self, x: torch.Tensor, *, consume: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(out, scale)``: the block's output before its residual is ``out * scale``, ``scale`` the
        contrast-aware attention's fp32 ``N x C x 1 x 1`` weights (None: ``out`` is the output), for a
        caller that applies the scale in fp32 together with the residual add. ``consume``: the caller no
        longer needs ``x`` (its memory may be overwritten)."""
        out = self.esa(self._distilled(x, consume=consume))
        if type(self.cca) is not CCA:
            return self.cca(out), None
        return out, self.cca.fc(_contrast(out, self.cca.eps).to(out.dtype)).float()


def _contrast(x: torch.Tensor, eps: float) -> torch.Tensor:
    """CCA's statistic ``std + mean`` over H x W (``N x C x 1 x 1``, fp32).

    On a reduced-precision (bf16) channels_last map, by GEMMs: the mean ``m`` from :func:`.fused.channel_sums`;
    ``d = x - m_b`` (``m_b``: ``m`` rounded to the map's dtype) in one pass; the variance
    ``E[d^2] - (m - m_b)^2`` with ``E[d^2]`` from :func:`.fused.channel_square_sums` (Gram diagonals: one read
    of ``d``). Centred, so no cancellation when the std is a small fraction of the mean (measured on
    MDRN's real maps: 30-46 % of the channels have ``|mean| > 4 std``, up to 80x; an uncentred
    ``E[x^2] - E[x]^2`` lost the std of such channels). Two reads and one write of the map fewer than
    squaring ``d`` in place and summing it. Otherwise (fp32, or NCHW): one fp32 copy, centred in place."""
    n, c, h, w = x.shape
    if x.is_contiguous(memory_format=torch.channels_last) and x.dtype in (torch.bfloat16, torch.float16):
        v = x.permute(0, 2, 3, 1).reshape(n, h * w, c)  # a view of the NHWC memory
        mean = fused.channel_sums(v) / (h * w)
        rounded = mean.to(x.dtype)
        shift = mean - rounded.float()  # E[d] up to d's own (unbiased) rounding
        d = v - rounded.view(n, 1, c)
        var = (fused.channel_square_sums(d) / (h * w) - shift * shift).clamp_min_(0.0)
        return var.add_(eps).sqrt_().add_(mean).reshape(n, c, 1, 1)
    x32 = x.to(torch.float32, copy=True)  # centred in place below: never the caller's tensor
    mean = x32.mean(dim=(2, 3), keepdim=True)
    var = x32.sub_(mean).square_().mean(dim=(2, 3), keepdim=True)
    return var.add_(eps).sqrt_().add_(mean)


def reduced_block_chain(blocks: nn.ModuleList, f0: torch.Tensor, dtype: torch.dtype):
    """Yield ``(F_i in fp32, F_i in dtype)`` for a chain of :class:`_InferenceFMDRB` started at the fp32
    ``f0``: each block's branch runs in ``dtype`` (its input cast once), while the residual stream
    between blocks stays in fp32 (measured on real CT, MDRN x4: max 10.0 -> 7.0 HU against fp32 with
    the stream in bf16), so the per-block rounding does not accumulate along the chain. The contrast-aware
    attention's per-channel scale is applied in fp32 in the same pass as the residual add (``addcmul``)."""
    f, fb = f0, f0.to(dtype)
    for block in blocks:
        # the consumer has read the previous fb before asking for the next block: dead after this branch
        out, scale = block.branch_unscaled(fb, consume=fb.data_ptr() != f0.data_ptr())
        if block.block_residual:  # the attention's scale and the residual add in one fp32 pass
            f = add_to_stream(f, out, scale=scale)
        else:
            f = out.to(f0.dtype)
            if scale is not None:
                f.mul_(scale)
        del out
        fb = f.to(dtype)
        yield f, fb


class _InferenceMDRN(MDRN):
    """:class:`MDRN` whose aggregation 1x1 conv is a running sum over the blocks:
    ``conv1x1(concat(F_1..F_n))`` = ``sum_i conv1x1_i(F_i)``, so the n-wide concatenation (512 channels
    at full size) is never built and each block output is freed at once."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_lr_input(x, model="MDRN", min_size=self.min_size)
        fuse = self.aggregate[0]
        width = fuse.in_channels // len(self.blocks)
        f0 = self.head(x)
        dtype = body_dtype(self)
        if dtype is None or not all(type(b) is _InferenceFMDRB for b in self.blocks):
            chain = ((f, f) for f in _chain(self.blocks, to_body(self, f0)))
        else:  # a reduced_precision_copy: blocks in bf16, residual stream in fp32
            chain = reduced_block_chain(self.blocks, f0, dtype)
        total = None
        for i, (_, fb) in enumerate(chain):
            if fused.applies(fb):  # bf16 on the CPU: each part accumulated inside its convolution
                weight = fused.input_slice(fuse, i * width, (i + 1) * width)
                total = (fused.conv(fb, fuse, weight=weight) if total is None
                         else fused.conv_add_(total, fb, fuse, weight=weight, bias=False))
                continue
            part = pointwise_conv(fb, fuse.weight[:, i * width : (i + 1) * width], fuse.bias if i == 0 else None)
            total = part if total is None else add_(total, part)
        assert total is not None
        return self.upsample(self.aggregate[2](self.aggregate[1](total)).to(f0.dtype).add_(f0))


def _chain(blocks: nn.ModuleList, f: torch.Tensor):
    """Yield each block's output of the plain chain ``F_i = block_i(F_{i-1})``."""
    for block in blocks:
        f = block(f)
        yield f


register_swap(BSRB, _InferenceBSRB)
register_swap(FMDRB, _InferenceFMDRB)
register_swap(
    MDRN,
    _InferenceMDRN,
    condition=lambda m: isinstance(m.aggregate[0], nn.Conv2d)
    and m.aggregate[0].kernel_size == (1, 1)
    and m.aggregate[0].in_channels % len(m.blocks) == 0,
)
