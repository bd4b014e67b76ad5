"""SRDA: Wang, Han, Zhou, Chen, "Medical Image Super-Resolution via Diagnosis-Guided Attention"
(ICME 2023), ../shared/papers/003_c948c0b3fd7a763f.txt; official code github.com/WJingwei/SRDA (read
for widths only, nothing copied).

Build and resolutions: ``../shared/design/networks.md`` Sections 6 and 15.

* :class:`SRDA` -- the SR network (Section II-A, Fig. 2): DCNv1 1 -> C (no bias), the diagnosis-guided
  spatial attention ``W_sr`` (Eq. 1), 32 bias-free EDSR ResBlocks (res_scale 0.1) + conv3x3, a feature
  skip, ``EDSRUpsampler(4, C, bias=False)``, conv3x3 C -> 1.
* :class:`SRDADiagnosisNet` -- the training-only ResNet-50 classifier with its own attention ``W_diag``
  (Section II-B), written here (no torchvision).
* :func:`srda_joint_loss` -- Eqs. 2-5.

Tensors: LR ``N x 1 x h x w`` float in [0, 1] -> SR ``N x 1 x 4h x 4w``; both attention maps are
``N x 1 x h x w`` at x4.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ModelInputError, OptionError
from .base import ModelSpec, get_model, register
from .blocks import EDSRUpsampler, ResBlock, ShuffleTailFold, SpatialAttention7, conv3x3
from .deform import DeformConv2dV1
from .checks import check_lr_input, positive_int
from .rewrites import register_swap, to_body

__all__ = [
    "DIAGNOSIS_OPTIONS",
    "SRDA",
    "SRDADiagnosisNet",
    "attention_resize",
    "diagnosis_net_for",
    "srda_joint_loss",
]

PAPER = "Wang et al., Medical Image Super-Resolution via Diagnosis-Guided Attention (ICME 2023)"


class SRDA(nn.Module):
    """The SRDA super-resolution network, ``N x 1 x h x w -> N x 1 x (scale h) x (scale w)``.

    Args:
        scale: 4 in the paper (2, 3, 8 also build: EDSR upsampler).
        channels: C (official code 256).
        n_resblocks: number of ResBlocks (paper 32).
        res_scale: ResBlock residual scaling (code 0.1).
        modulated: DCNv2 modulation in the first layer (default False = DCNv1, 6.4 #2).
        offset_bias_init: ``'zero'`` (default) or ``'default'`` (PyTorch's random bias, as the code).
    """

    #: Layers that read and write the image (the deformable head -- its sampling positions must stay
    #: exact -- with its attention, and the tail): kept in fp32 under bf16/fp16 (``rewrites``). The
    #: upsampler (over half the MACs at x4) runs in the reduced dtype: bf16 vs fp32 on real CT, x4, max
    #: 2.5 -> 3.1 HU with it.
    full_precision_layers: tuple[str, ...] = ("dconv", "attention", "tail")

    def __init__(
        self,
        *,
        scale: int = 4,
        channels: int = 256,
        n_resblocks: int = 32,
        res_scale: float = 0.1,
        modulated: bool = False,
        offset_bias_init: str = "zero",
    ) -> None:
        super().__init__()
        if positive_int("scale", scale) != 3 and scale & (scale - 1):
            raise OptionError(f"SRDA's upsampler supports scales 2^n and 3; got {scale}")
        positive_int("channels", channels)
        positive_int("n_resblocks", n_resblocks)
        self.scale = scale
        self.dconv = DeformConv2dV1(1, channels, 3, bias=False, modulated=modulated, offset_bias_init=offset_bias_init)
        self.attention = SpatialAttention7()
        self.body = nn.Sequential(
            *(ResBlock(channels, bias=False, res_scale=res_scale) for _ in range(n_resblocks)),
            conv3x3(channels, channels),
        )
        self.upsampler = EDSRUpsampler(scale, channels, bias=False)
        self.tail = conv3x3(channels, 1)

    def forward_with_attention(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(I_sr, W_sr)``: the SR image ``N x 1 x sH x sW`` and the attention map ``N x 1 x H x W``."""
        check_lr_input(x, model="SRDA")
        features, w_sr = self.attention(self.dconv(x))
        features = features + self.body(features)
        return self.tail(self.upsampler(features)), w_sr

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The SR image ``N x 1 x sH x sW`` (what inference uses)."""
        return self.forward_with_attention(x)[0]


class _Bottleneck(nn.Module):
    """ResNet v1.5 bottleneck: 1x1 -> 3x3 (stride) -> 1x1 (x4), BN after each conv, ReLU, projection skip."""

    expansion = 4

    def __init__(self, c_in: int, planes: int, *, stride: int = 1) -> None:
        super().__init__()
        c_out = planes * self.expansion
        self.conv1 = nn.Conv2d(c_in, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, c_out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = (
            nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out))
            if stride != 1 or c_in != c_out
            else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class SRDADiagnosisNet(nn.Module):
    """SRDA's diagnosis network (Section II-B): ResNet-50 with a diagnosis-guided spatial attention.

    Input: the SR image ``N x 1 x H x W`` (H = 4 h_LR at x4). Output ``(logits N x n_classes,
    W_diag N x 1 x H/4 x W/4)`` -- after the stem (conv7x7/2 + maxpool/2) the map has the LR size.

    Args:
        n_classes: diagnosis classes (3: AD/MCI/NC or non/mild/very-mild demented).
        width_mult: channel multiplier of every stage (1 = ResNet-50; 0.25 for ``srda-small``).
        attention_at: ``'stem'`` (paper: on F_conv1, before layer1) or ``'layer1'`` (official code).
        stem_channels: stem output channels; default ``64 * width_mult``; 1 = the official code's stem.
        layers: bottleneck blocks per stage (ResNet-50: 3, 4, 6, 3).

    Convolutions use Kaiming-normal (fan_out, ReLU) init, BN weight 1 / bias 0 (as the code).
    """

    def __init__(
        self,
        *,
        n_classes: int = 3,
        width_mult: float = 1.0,
        attention_at: str | None = "stem",
        stem_channels: int | None = None,
        layers: tuple[int, int, int, int] = (3, 4, 6, 3),
    ) -> None:
        super().__init__()
        if positive_int("n_classes", n_classes) < 2:
            raise OptionError(f"n_classes must be at least 2; got {n_classes!r}")
        base = 64 * float(width_mult)
        if width_mult <= 0 or base != int(base):
            raise OptionError(f"width_mult must be positive and make 64 * width_mult an integer; got {width_mult!r}")
        base = int(base)
        if attention_at not in ("stem", "layer1", None):
            raise OptionError(f"attention_at must be 'stem', 'layer1' or None; got {attention_at!r}")
        stem = base if stem_channels is None else stem_channels
        positive_int("stem_channels", stem)
        if len(layers) != 4 or any(int(n) < 1 for n in layers):
            raise OptionError(f"layers must be four positive block counts; got {layers!r}")
        self.attention_at = attention_at
        self.stem = nn.Sequential(
            nn.Conv2d(1, stem, 7, stride=2, padding=3, bias=False),
            nn.BatchNorm2d(stem),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, stride=2, padding=1),
        )
        self.attention = SpatialAttention7() if attention_at is not None else None
        stages: list[nn.Module] = []
        c_in = stem
        for i, n_blocks in enumerate(layers):
            planes = base * 2**i
            blocks = []
            for j in range(int(n_blocks)):
                blocks.append(_Bottleneck(c_in, planes, stride=2 if (i > 0 and j == 0) else 1))
                c_in = planes * _Bottleneck.expansion
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.fc = nn.Linear(c_in, n_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(logits N x n_classes, W_diag N x 1 x H/4 x W/4)`` for an SR image ``N x 1 x H x W``
        (``W_diag`` is ``None`` without attention)."""
        check_lr_input(x, model="SRDADiagnosisNet")
        f = self.stem(x)
        w_diag = None
        if self.attention is None:
            f = self.layer1(f)
        elif self.attention_at == "stem":
            f, w_diag = self.attention(f)
            f = self.layer1(f)
        else:
            f, w_diag = self.attention(self.layer1(f))
        f = self.layer4(self.layer3(self.layer2(f)))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(f, 1), 1)), w_diag


#: Diagnosis-network options for each SRDA configuration (``ModelSpec.config``); training reads these.
DIAGNOSIS_OPTIONS: dict[str, dict[str, Any]] = {
    "paper": {"n_classes": 3, "width_mult": 1.0, "attention_at": "stem"},
    "small": {"n_classes": 3, "width_mult": 0.25, "attention_at": "stem"},
}


def diagnosis_net_for(model_name: str, **overrides: Any) -> SRDADiagnosisNet:
    """A fresh diagnosis network for the registered SRDA model ``model_name`` (``'srda'``, ``'srda-small'``).

    ``overrides`` replace :data:`DIAGNOSIS_OPTIONS` entries (e.g. ``attention_at='layer1',
    stem_channels=1`` for the official code's variant, or ``n_classes``).
    """
    spec = get_model(model_name)
    if spec.network != "SRDA":
        raise OptionError(f"model '{model_name}' is not an SRDA configuration; use 'srda' or 'srda-small'")
    return SRDADiagnosisNet(**{**DIAGNOSIS_OPTIONS[spec.config], **overrides})


def attention_resize(w_diag: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``w_diag`` (``N x 1 x H' x W'``) resized bilinearly to ``size`` = (H, W) of ``W_sr`` (no-op if equal)."""
    if tuple(w_diag.shape[-2:]) == tuple(size):
        return w_diag
    return F.interpolate(w_diag, size=tuple(size), mode="bilinear", align_corners=False)


def srda_joint_loss(
    sr: torch.Tensor,
    hr: torch.Tensor,
    logits: torch.Tensor | None,
    labels: torch.Tensor | None,
    w_sr: torch.Tensor | None,
    w_diag: torch.Tensor | None,
    *,
    lambda1: float = 6e-4,
    lambda2: float = 1e-4,
    atten_loss_reduction: str = "mean",
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """SRDA's total loss (Eq. 5): ``L1(sr, hr) + lambda1 * CE(logits, labels) + lambda2 * L_atten``.

    Args:
        sr, hr: ``N x 1 x H x W`` SR output and ground truth (L_SR: mean absolute error, Eq. 3).
        logits: ``N x M`` diagnosis logits of ``sr``; labels: ``N`` class indices (L_Diag: cross
            entropy, Eq. 4 with its sign fixed). May be None when ``lambda1 == 0``.
        w_sr, w_diag: ``N x 1 x h x w`` attention maps (Eq. 2); ``w_diag`` is resized to ``w_sr``'s size
            when they differ (:func:`attention_resize`). May be None when ``lambda2 == 0``.
        atten_loss_reduction: ``'mean'`` (official code, default) or ``'sum'`` (Eq. 2's squared
            Frobenius norm per image, averaged over the batch).

    Returns:
        ``(total, {"sr": ..., "diag": ..., "atten": ...})``; a term not computed is a zero tensor.
    """
    if atten_loss_reduction not in ("mean", "sum"):
        raise OptionError(f"atten_loss_reduction must be 'mean' or 'sum'; got {atten_loss_reduction!r}")
    if lambda1 < 0 or lambda2 < 0:
        raise OptionError(f"lambda1 and lambda2 must be >= 0; got {lambda1}, {lambda2}")
    if sr.shape != hr.shape:
        raise ModelInputError(f"sr and hr shapes differ: {tuple(sr.shape)} vs {tuple(hr.shape)}")
    l_sr = F.l1_loss(sr, hr)
    zero = l_sr.new_zeros(())
    l_diag = zero
    if lambda1 > 0:
        if logits is None or labels is None:
            raise OptionError("lambda1 > 0 needs the diagnosis logits and labels; pass them or set lambda1=0")
        l_diag = F.cross_entropy(logits, labels)
    l_atten = zero
    if lambda2 > 0:
        if w_sr is None or w_diag is None:
            raise OptionError("lambda2 > 0 needs both attention maps; pass them or set lambda2=0")
        diff = w_sr - attention_resize(w_diag, tuple(w_sr.shape[-2:]))
        l_atten = diff.pow(2).mean() if atten_loss_reduction == "mean" else diff.pow(2).sum() / diff.shape[0]
    total = l_sr + lambda1 * l_diag + lambda2 * l_atten
    return total, {"sr": l_sr, "diag": l_diag, "atten": l_atten}


def _srda(*, scale: int, **options: Any) -> SRDA:
    return SRDA(scale=scale, **options)


_COMMON: dict[str, Any] = dict(network="SRDA", paper=PAPER, modality="MR", scales=(4,), factory=_srda)


class _InferenceSRDA(SRDA):
    """:class:`SRDA` whose residual body and upsampler's first stages run in the reduced dtype of a
    ``reduced_precision_copy`` (the global skip added in fp32 between them), and whose last upsampler
    stage (conv3x3 C -> 4C + PixelShuffle(2), the largest conv of the network: at x4 it runs at 2x
    the LR size) and tail are one fp32 LR conv (:class:`~.blocks.ShuffleTailFold`): the C-channel map
    at the output size is never built. Measured (srda-small x4, 512^2 CT, 1 thread): upsampler + tail
    were 2.8 s of 4.9 s. At x4 the fold reads the first stage's conv output before its PixelShuffle
    (``ShuffleTailFold.forward(y, pre)``: a 3x3 conv on the LR grid), so the C-channel map at 2x the LR
    size is not built either: measured (2 threads, one slice) its shuffle, fp32 cast and 5x5 conv took
    ~0.6 s of ~1.7 s."""

    full_precision_layers = SRDA.full_precision_layers + ("shuffle_tail",)

    def forward_with_attention(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        check_lr_input(x, model="SRDA")
        features, w_sr = self.attention(self.dconv(x))
        features = self.body(to_body(self, features)).to(features.dtype).add_(features)  # skip in fp32
        return self.shuffle_tail.after_stages(self.upsampler, to_body(self, features)), w_sr


def _fold_last_stage_and_tail(model: SRDA) -> None:
    model.shuffle_tail = ShuffleTailFold.of(model.upsampler, model.tail)


register_swap(SRDA, _InferenceSRDA, rewrite=_fold_last_stage_and_tail,
              condition=lambda m: ShuffleTailFold.applies(m.upsampler, m.tail))

register(
    ModelSpec(
        name="srda",
        config="paper",
        options={"channels": 256, "n_resblocks": 32, "res_scale": 0.1},
        description="SRDA as published (C=256, 32 ResBlocks, deformable conv + attention), MR x4; ~43.1M parameters",
        **_COMMON,
    )
)
register(
    ModelSpec(
        name="srda-small",
        config="small",
        options={"channels": 64, "n_resblocks": 8, "res_scale": 1.0},
        description="SRDA shrunk for CPU (C=64, 8 ResBlocks), MR x4; ~0.92M parameters",
        **_COMMON,
    )
)
