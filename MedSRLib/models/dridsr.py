"""DRIDSR: double-path network with residual information distillation (lung CT).

Chen et al., "Double paths network with residual information distillation for improving lung CT
image super resolution" (``../shared/papers/001_*.txt``, Section 3, Eqs. 2-14). The paper's tables
call it "DRIDSRS". Build, ambiguities and options: ``../shared/design/networks.md`` Sections 4, 8, 15.

* High-frequency path (Eqs. 2-5): ``F_H = f3(RIDM(f1(x)) + f2(Sobel(x)))``.
* Low-frequency path (Eq. 12): conv5x5 1 -> C, ReLU, conv3x3 C -> 2C, ReLU, conv1x1 2C -> C'.
* Reconstruction (Eqs. 13-14): ``conv3x3(PixelShuffle_s(conv3x3(F_L + F_H)))``, one stage at any scale.

Defaults C = 48, C' = 24 reproduce the paper's 0.52M parameters exactly (515,425 at x4).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import OptionError
from . import fused
from .base import ModelSpec, register
from .blocks import PixelShuffleHead, ResBlock, ShuffleTailFold, _InferenceResBlock, conv1x1, conv3x3
from .idman import MIN_LR_SIZE
from .checks import check_lr_input, choice, positive_int
from .rewrites import add_, body_dtype, register_swap, to_body

PAPER = ("Chen et al., Double paths network with residual information distillation for improving "
         "lung CT image super resolution (COVID-CT)")


class SobelGradient(nn.Module):
    """Fixed 3x3 Sobel edge map of an ``N x 1 x H x W`` image (Section 3.2, Eq. 3), reflect-101 padding.

    ``Gx = [[-1,0,1],[-2,0,2],[-1,0,1]]``, ``Gy = Gx^T`` (unnormalised), kept in a non-persistent
    buffer (not a parameter, never trained, not in the state dict). Modes: ``'magnitude'``
    ``sqrt(Gx^2 + Gy^2 + eps)`` -> ``N x 1 x H x W``; ``'l1'`` ``|Gx| + |Gy|`` -> ``N x 1 x H x W``;
    ``'xy'`` ``[Gx, Gy]`` -> ``N x 2 x H x W``. Needs H, W >= 2 (reflect-101 border).
    """

    def __init__(self, mode: str = "magnitude", *, eps: float = 1e-12) -> None:
        super().__init__()
        choice("sobel", mode, ("magnitude", "l1", "xy"))
        self.mode = mode
        self.eps = float(eps)
        gx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
        self.register_buffer("kernel", torch.stack([gx, gx.t()])[:, None], persistent=False)

    @property
    def out_channels(self) -> int:
        """1 for ``'magnitude'``/``'l1'``, 2 for ``'xy'``."""
        return 2 if self.mode == "xy" else 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="reflect"), self.kernel.to(x.dtype))
        if self.mode == "xy":
            return g
        if self.mode == "l1":
            return g.abs().sum(dim=1, keepdim=True)
        return torch.sqrt(g.pow(2).sum(dim=1, keepdim=True) + self.eps)


class IDB(nn.Module):
    """Simple information distillation block (Section 3.4, Eqs. 10-11, Fig. 3b).

    Input ``[X1, X2]`` (2C channels); ``F_d = ReLU(conv1x1)``, ``F_r = ReLU(conv3x3)``; returns
    ``(forwarded, kept)``. With ``retain='3x3'`` (Eqs. 6, 8) the 3x3 output is kept (``keep``
    channels) and the 1x1 output forwarded (C channels); ``retain='1x1'`` swaps roles and widths
    (IMDN/RFDN convention). ``forward_out=False`` drops the forwarded conv (returns ``None`` for it).
    """

    def __init__(self, channels: int, keep: int, *, retain: str = "3x3", act: bool = True,
                 forward_out: bool = True) -> None:
        super().__init__()
        choice("retain", retain, ("3x3", "1x1"))
        keep_conv, fwd_conv = (conv3x3, conv1x1) if retain == "3x3" else (conv1x1, conv3x3)
        self.keep = keep_conv(2 * channels, keep)
        self.forward_conv = fwd_conv(2 * channels, channels) if forward_out else None
        self.act = nn.ReLU(inplace=True) if act else nn.Identity()

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor]:
        x = torch.cat([x1, x2], dim=1)
        fwd = self.act(self.forward_conv(x)) if self.forward_conv is not None else None
        return fwd, self.act(self.keep(x))


class RIDM(nn.Module):
    """Residual information distillation module (Section 3.3, Eqs. 6-8), ``N x C x H x W`` -> same.

    ``F_i = RB_i(F_{i-1})`` (i = 1..n_res_blocks); ``IDB_1([F0, F1])``, ``IDB_i([F_d^{i-1}, F_i])``;
    ``F_M = conv1x1([F_r^1 .. F_r^m, F_n]) + F0``.
    """

    def __init__(self, channels: int, *, n_res_blocks: int = 6, n_idb: int = 5, keep: int | None = None,
                 retain: str = "3x3", idb_act: bool = True, drop_unused_forward: bool = False,
                 res_scale: float = 1.0) -> None:
        super().__init__()
        positive_int("n_res_blocks", n_res_blocks)
        positive_int("n_idb", n_idb)
        if n_idb > n_res_blocks:
            raise OptionError(f"n_idb ({n_idb}) must not exceed n_res_blocks ({n_res_blocks}): IDB i reads RB i")
        keep = channels // 2 if keep is None else positive_int("idb_keep_channels", keep)
        self.res_blocks = nn.ModuleList(ResBlock(channels, res_scale=res_scale) for _ in range(n_res_blocks))
        self.idbs = nn.ModuleList(
            IDB(channels, keep, retain=retain, act=idb_act,
                forward_out=not (drop_unused_forward and i == n_idb - 1))
            for i in range(n_idb)
        )
        self.fusion = conv1x1(n_idb * keep + channels, channels)

    def forward(self, f0: torch.Tensor) -> torch.Tensor:
        kept = []
        f, carry = f0, f0
        for i, rb in enumerate(self.res_blocks):
            f = rb(f)
            if i < len(self.idbs):
                carry, r = self.idbs[i](carry, f)
                kept.append(r)
        return self.fusion(torch.cat(kept + [f], dim=1)) + f0


class HighFrequencyPath(nn.Module):
    """High-frequency path (Section 3.2, Eqs. 2-5): ``f3(RIDM(f1(x)) + f2(Sobel(x)))``,
    ``N x 1 x H x W`` -> ``N x C' x H x W``."""

    def __init__(self, channels: int, out_channels: int, *, sobel: str = "magnitude", **ridm_options: object) -> None:
        super().__init__()
        self.f1 = conv3x3(1, channels)
        self.ridm = RIDM(channels, **ridm_options)
        self.sobel = SobelGradient(sobel)
        self.f2 = conv3x3(self.sobel.out_channels, channels)
        self.f3 = conv1x1(channels, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.f3(self.ridm(self.f1(x)) + self.f2(self.sobel(x)))


class LowFrequencyPath(nn.Sequential):
    """Low-frequency path (Section 3.5, Eq. 12): conv5x5 1 -> C, ReLU, conv3x3 C -> mid, ReLU,
    conv1x1 mid -> C'; ``N x 1 x H x W`` -> ``N x C' x H x W``."""

    def __init__(self, channels: int, mid: int, out_channels: int) -> None:
        super().__init__(
            nn.Conv2d(1, channels, 5, padding=2), nn.ReLU(inplace=True),
            conv3x3(channels, mid), nn.ReLU(inplace=True),
            conv1x1(mid, out_channels),
        )


class DRIDSR(nn.Module):
    """DRIDSR (Fig. 1): ``N x 1 x h x w`` in [0, 1] -> ``N x out_ch x (s h) x (s w)``.

    Args (keyword-only; defaults = networks.md 4.1-4.2):
        scale: any integer >= 2 (paper: 3 and 4; x2 registered as an extension).
        channels: C (not stated in the paper; 48 fits its 0.52M exactly).
        out_channels: C' of both paths' outputs and the shuffle (default C/2).
        low_mid: width of the low path's 3x3 conv (default 2C).
        n_res_blocks, n_idb: 6 residual blocks and 5 IDBs (Eq. 6).
        retain: which IDB output is kept, ``'3x3'`` (Eqs. 6-11) or ``'1x1'``.
        idb_keep_channels: kept IDB width (default C/2).
        drop_unused_forward: drop the last IDB's forwarded conv, which Eq. 6 never reads.
        idb_act: ReLU on both IDB outputs.
        sobel: ``'magnitude'``, ``'l1'`` or ``'xy'`` (see :class:`SobelGradient`).
        out_ch: output channels (1: grey CT).
        res_scale: residual scaling in the residual blocks (none in the paper: 1.0).
    """

    #: Layers on the image path (both paths' image-reading layers, the Sobel map, the high path's 1x1
    #: after its skip, and the upsampler and tail after the paths' sum): kept in fp32 under bf16/fp16
    #: (``rewrites``). The low path's inner convs (~10 % of the MACs) run in the reduced dtype (bf16 vs
    #: fp32 on real CT: max 4.6-5.0 HU); the upsampler in bf16 too measured up to 7.1 HU at x4.
    full_precision_layers: tuple[str, ...] = ("low.0", "high.f1", "high.f2", "high.sobel", "high.f3", "upsample", "tail")

    def __init__(self, *, scale: int, channels: int = 48, out_channels: int | None = None,
                 low_mid: int | None = None, n_res_blocks: int = 6, n_idb: int = 5, retain: str = "3x3",
                 idb_keep_channels: int | None = None, drop_unused_forward: bool = False, idb_act: bool = True,
                 sobel: str = "magnitude", out_ch: int = 1, res_scale: float = 1.0) -> None:
        super().__init__()
        positive_int("scale", scale)
        positive_int("channels", channels)
        positive_int("out_ch", out_ch)
        c_out = channels // 2 if out_channels is None else positive_int("out_channels", out_channels)
        mid = 2 * channels if low_mid is None else positive_int("low_mid", low_mid)
        self.scale = scale
        self.min_size = MIN_LR_SIZE
        self.low = LowFrequencyPath(channels, mid, c_out)
        self.high = HighFrequencyPath(
            channels, c_out, sobel=sobel, n_res_blocks=n_res_blocks, n_idb=n_idb, keep=idb_keep_channels,
            retain=retain, idb_act=idb_act, drop_unused_forward=drop_unused_forward, res_scale=res_scale,
        )
        self.upsample = PixelShuffleHead(scale, c_out, c_out)
        self.tail = conv3x3(c_out, out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_lr_input(x, model="DRIDSR", min_size=self.min_size)
        return self.tail(self.upsample(self.low(x) + self.high(x)))


register(ModelSpec(
    name="dridsr", network="DRIDSR", config="paper", paper=PAPER, modality="CT", scales=(2, 3, 4),
    factory=DRIDSR, options=dict(channels=48), min_lr_size=MIN_LR_SIZE,
    description="DRIDSR: low/high-frequency paths, residual distillation, Sobel edges (CT; x2 is an extension); 0.52M params",
))


# ------------------------------------------------------------------------------ inference rewrites
# Exact, registered with :mod:`.rewrites` (applied by ``prepare_for_inference``; never for training).


class _InferenceIDB(IDB):
    """:class:`IDB` that, in a bf16 body on the CPU, never builds ``[X1, X2]``: each conv of the
    concatenation is the conv of ``X1`` plus the conv of ``X2`` (weights split by input channel), the
    second added and the ReLU applied inside the convolution (:func:`.fused.conv_of_concat`)."""

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor]:
        if not fused.applies(x1):
            return super().forward(x1, x2)
        relu = isinstance(self.act, nn.ReLU)
        fwd = fused.conv_of_concat([x1, x2], self.forward_conv, relu=relu) if self.forward_conv is not None else None
        return fwd, fused.conv_of_concat([x1, x2], self.keep, relu=relu)


class _InferenceRIDM(RIDM):
    """:class:`RIDM` whose body runs in the reduced dtype of a ``reduced_precision_copy`` (its input
    cast once; the skip ``+ F0`` added in fp32, in place); in a bf16 body on the CPU the fusion conv of
    the kept maps is a sum of per-map convolutions (:func:`.fused.conv_of_concat`, no concatenation)."""

    def forward(self, f0: torch.Tensor) -> torch.Tensor:
        kept = []
        f = carry = to_body(self, f0)
        for i, rb in enumerate(self.res_blocks):
            # F_{i-1} is dead after RB_i except the first (F_0 is also IDB_1's carry): written into in place
            f = rb(f, consume=i > 0) if isinstance(rb, _InferenceResBlock) else rb(f)
            if i < len(self.idbs):
                carry, r = self.idbs[i](carry, f)
                kept.append(r)
        kept.append(f)
        del carry, f
        fusion = fused.conv_of_concat(kept, self.fusion) if fused.applies(kept[-1]) else self.fusion(torch.cat(kept, dim=1))
        del kept
        return fusion.to(f0.dtype).add_(f0)


class _InferenceHighFrequencyPath(HighFrequencyPath):
    """:class:`HighFrequencyPath` with the two branches summed in place."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.f3(add_(self.ridm(self.f1(x)), self.f2(self.sobel(x))))


class _InferenceDRIDSR(DRIDSR):
    """:class:`DRIDSR` with the two paths summed in place and the upsampler + tail folded into one LR
    conv (:class:`~.blocks.ShuffleTailFold`, fp32: per 512^2 slice at x2, 1 thread, 193 -> ~60 ms); in a
    ``reduced_precision_copy`` the low path after its first conv runs in the reduced dtype (the sum
    and the folded head in fp32)."""

    full_precision_layers = DRIDSR.full_precision_layers + ("shuffle_tail",)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_lr_input(x, model="DRIDSR", min_size=self.min_size)
        if body_dtype(self) is None:
            return self.shuffle_tail(add_(self.low(x), self.high(x)))
        layers = list(self.low)
        low = to_body(self, layers[1](layers[0](x)))
        if fused.applies(low) and len(layers) == 5 and isinstance(layers[3], nn.ReLU):  # conv3x3 + ReLU as one call
            low = layers[4](fused.conv(low, layers[2], relu=True))
        else:
            for layer in layers[2:]:
                low = layer(low)
        return self.shuffle_tail(add_(self.high(x), low.to(x.dtype)))


def _fold_upsampler_and_tail(model: DRIDSR) -> None:
    model.shuffle_tail = ShuffleTailFold.of(model.upsample, model.tail)


register_swap(IDB, _InferenceIDB)
register_swap(RIDM, _InferenceRIDM)
register_swap(HighFrequencyPath, _InferenceHighFrequencyPath)
register_swap(DRIDSR, _InferenceDRIDSR, rewrite=_fold_upsampler_and_tail)
