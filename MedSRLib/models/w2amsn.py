"""W2AMSN: Wang, Hu, Zhao, Zhang, "Wide Weighted Attention Multi-Scale Network for Accurate MR Image
Super-Resolution" (IEEE TCSVT 2022), ../shared/papers/002_eaf9d17fc10a8218.txt.

Build and resolutions: ``../shared/design/networks.md`` Sections 5 and 15. Section numbers and
equations below are the paper's.

* SFE (Eq. 1): conv3x3 1 -> a, conv1x1 a -> a, conv3x3 a -> a (no activations); ``x_S = x_0``.
* t x :class:`W2AMSB` (Eqs. 2-3, 9-13), each block distinct (no weight sharing by default).
* Global attention (Eqs. 4-7): ``NCAB((t+1) a)`` on ``[x_0, x_1, ..., x_t]``.
* Reconstruction (Eq. 8): ``y = F_R(C_1^g(x_a) + x_S)``, C_1^g a 1x1 conv (t+1)a -> a,
  F_R = EDSR upsampler (conv + PixelShuffle stages) then conv3x3 a -> 1.

Tensors: ``N x 1 x h x w`` float in [0, 1] -> ``N x 1 x (s h) x (s w)``.
"""

from __future__ import annotations

import torch
from torch import nn

from . import fused
from .base import ModelSpec, register
from .blocks import NCAB, EDSRUpsampler, PixelShuffleHead, ShuffleTailFold, conv1x1, conv3x3
from ..errors import OptionError
from .checks import check_lr_input, positive_int
from .rewrites import add_, add_to_stream, body_dtype, register_swap, scale_conv_, to_body

__all__ = ["W2AMSB", "W2AMSN", "check_lr_input"]

PAPER = "Wang et al., Wide Weighted Attention Multi-Scale Network for Accurate MR Image SR (IEEE TCSVT 2022)"


class W2AMSB(nn.Module):
    """Wide weighted attention multi-scale block (Fig. 1(b)), ``N x a x H x W -> N x a x H x W``.

    * channel widening (Eq. 9): ``S1 = conv3x3(x)``, ``W1 = conv5x5(x)``;
    * multi-scale (Eq. 10): ``S2 = conv3x3([relu S1, relu W1])``, ``W2 = conv5x5([relu W1, relu S1])``;
    * attention (Eq. 11): ``S3 = NCAB_s(S2)``, ``W3 = NCAB_w(W2)``;
    * weighted fusion (Eq. 12): ``S' = conv1x1([lambda1 S3, lambda2 W3])`` (lambdas learnable, init 1);
    * local skip (Eq. 13): ``x + res_scale * S'``.

    ``width_mode='aggregate'`` (default, networks.md 5.2 #1): the paper's 4a / 8a are the widths of the
    concatenations, so S1, W1 have 2a channels and S2, W2 4a. ``'per_branch'`` (literal Eqs. 9-10): each
    branch convolution outputs 4a (stage 1) and 8a (stage 2) channels.

    Args:
        n_feats: a, the block's input/output channels.
        width_mode: ``'aggregate'`` or ``'per_branch'``.
        share_attention: one NCAB for both branches (default: two separate ones, 5.2 #3).
        stage2_act: ReLU after S2 and W2 (default off: Eq. 10 has none, 5.2 #4).
        res_scale: scale of S' in the local skip (default 1, 5.2 #7).
    """

    def __init__(
        self,
        n_feats: int,
        *,
        width_mode: str = "aggregate",
        share_attention: bool = False,
        stage2_act: bool = False,
        res_scale: float = 1.0,
    ) -> None:
        super().__init__()
        a = positive_int("n_feats", n_feats)
        if width_mode == "aggregate":
            w1, w2 = 2 * a, 4 * a
        elif width_mode == "per_branch":
            w1, w2 = 4 * a, 8 * a
        else:
            raise OptionError(f"width_mode must be 'aggregate' or 'per_branch'; got {width_mode!r}")
        self.conv_s1 = nn.Conv2d(a, w1, 3, padding=1)
        self.conv_w1 = nn.Conv2d(a, w1, 5, padding=2)
        self.conv_s2 = nn.Conv2d(2 * w1, w2, 3, padding=1)
        self.conv_w2 = nn.Conv2d(2 * w1, w2, 5, padding=2)
        self.att_s = NCAB(w2)
        self.att_w = self.att_s if share_attention else NCAB(w2)
        self.lambda1 = nn.Parameter(torch.ones(()))
        self.lambda2 = nn.Parameter(torch.ones(()))
        self.fuse = conv1x1(2 * w2, a)
        self.act = nn.ReLU(inplace=False)
        self.stage2_act = bool(stage2_act)
        self.res_scale = float(res_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s1 = self.act(self.conv_s1(x))
        w1 = self.act(self.conv_w1(x))
        s2 = self.conv_s2(torch.cat([s1, w1], dim=1))
        w2 = self.conv_w2(torch.cat([w1, s1], dim=1))
        if self.stage2_act:
            s2, w2 = self.act(s2), self.act(w2)
        s3 = self.att_s(s2)
        w3 = self.att_w(w2)
        fused = self.fuse(torch.cat([self.lambda1 * s3, self.lambda2 * w3], dim=1))
        return x + self.res_scale * fused


class W2AMSN(nn.Module):
    """The W2AMSN network (Fig. 1(a)), ``N x 1 x h x w -> N x 1 x (scale h) x (scale w)``.

    Args:
        scale: 2, 3 or 4 with ``upsampler='edsr'`` (also 8); any integer >= 1 with ``'single'``.
        n_feats: a (paper 32).
        n_blocks: t (paper 20; W2AMSN-S 8).
        width_mode: ``'aggregate'`` (default) or ``'per_branch'`` (literal Eqs. 9-10), see :class:`W2AMSB`.
        share_block_weights: one W2AMSB applied t times ("recurrent framework" read literally);
            default False: t distinct blocks (5.2 #2b).
        share_block_attention: one NCAB for both branches of each block (default False).
        stage2_act: ReLU after the stage-2 convolutions (default False).
        upsampler: ``'edsr'`` (default; x4 = two conv + PixelShuffle(2) stages) or ``'single'``
            (one conv a -> s^2 a + PixelShuffle(s), the text's "a pixel-shuffle layer").
        res_scale: scale of each block's residual branch (default 1).
    """

    #: Layers on the image path (the shallow features, and the fusion, upsampler and tail around the global skip): kept in fp32 under bf16/fp16 autocast
    #: (``rewrites.prepare_for_inference``), so reduced precision only touches the residual branch.
    full_precision_layers: tuple[str, ...] = ("sfe", "global_fuse", "upsampler", "tail")

    def __init__(
        self,
        *,
        scale: int = 2,
        n_feats: int = 32,
        n_blocks: int = 20,
        width_mode: str = "aggregate",
        share_block_weights: bool = False,
        share_block_attention: bool = False,
        stage2_act: bool = False,
        upsampler: str = "edsr",
        res_scale: float = 1.0,
    ) -> None:
        super().__init__()
        scale = positive_int("scale", scale)
        a = positive_int("n_feats", n_feats)
        t = positive_int("n_blocks", n_blocks)
        self.scale = scale
        self.n_blocks = t
        self.share_block_weights = bool(share_block_weights)
        self.sfe = nn.Sequential(conv3x3(1, a), conv1x1(a, a), conv3x3(a, a))
        n_distinct = 1 if share_block_weights else t
        self.blocks = nn.ModuleList(
            W2AMSB(
                a,
                width_mode=width_mode,
                share_attention=share_block_attention,
                stage2_act=stage2_act,
                res_scale=res_scale,
            )
            for _ in range(n_distinct)
        )
        self.global_attention = NCAB((t + 1) * a)
        self.global_fuse = conv1x1((t + 1) * a, a)
        if upsampler == "edsr":
            if scale != 3 and scale & (scale - 1):
                raise OptionError(f"upsampler='edsr' supports scales 2^n and 3; got {scale}; use upsampler='single'")
            self.upsampler: nn.Module = EDSRUpsampler(scale, a)
        elif upsampler == "single":
            self.upsampler = PixelShuffleHead(scale, a, a)
        else:
            raise OptionError(f"upsampler must be 'edsr' or 'single'; got {upsampler!r}")
        self.tail = conv3x3(a, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_lr_input(x, model="W2AMSN")
        x_s = self.sfe(x)
        features = [x_s]
        h = x_s
        for i in range(self.n_blocks):
            h = self.blocks[0 if self.share_block_weights else i](h)
            features.append(h)
        x_a = self.global_attention(torch.cat(features, dim=1))
        return self.tail(self.upsampler(self.global_fuse(x_a) + x_s))


def _w2amsn(*, scale: int, **options: object) -> W2AMSN:
    return W2AMSN(scale=scale, **options)  # type: ignore[arg-type]


_COMMON = dict(network="W2AMSN", paper=PAPER, modality="MR", scales=(2, 3, 4), factory=_w2amsn)

register(
    ModelSpec(
        name="w2amsn",
        config="paper",
        options={"n_feats": 32, "n_blocks": 20},
        description="W2AMSN as published (a=32, t=20 blocks), IXI MR; ~15.0M parameters",
        **_COMMON,
    )
)
register(
    ModelSpec(
        name="w2amsn-s",
        config="paper_s",
        options={"n_feats": 32, "n_blocks": 8},
        description="W2AMSN-S from the paper (a=32, t=8 blocks), MR; ~5.8M parameters",
        **_COMMON,
    )
)
register(
    ModelSpec(
        name="w2amsn-small",
        config="small",
        options={"n_feats": 16, "n_blocks": 4},
        description="W2AMSN shrunk for CPU (a=16, t=4 blocks), MR; ~0.73M parameters",
        **_COMMON,
    )
)
register(
    ModelSpec(
        name="w2amsn-literal",
        config="paper_literal",
        options={"n_feats": 32, "n_blocks": 8, "width_mode": "per_branch"},
        description="W2AMSN-S with the literal Eq. 9-10 branch widths (4a/8a per conv), MR; ~21.4M parameters",
        **_COMMON,
    )
)


# ------------------------------------------------------------------------------- inference rewrite
# Exact, registered with :mod:`.rewrites` (applied by ``prepare_for_inference``; never for training).


class _InferenceW2AMSB(W2AMSB):
    """:class:`W2AMSB` with lambdas and ``res_scale`` in ``fuse``, one stage-2 concatenation, in-place skip."""

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        """The block's output before its skip (a fresh tensor); in a bf16 body on the CPU the ReLUs run
        inside the convolutions and the attentions fold into theirs (:mod:`.fused`, ``_InferenceNCAB``)."""
        if fused.applies(x):
            s1 = fused.conv(x, self.conv_s1, relu=True)
            w1 = fused.conv(x, self.conv_w1, relu=True)
            both = torch.cat([s1, w1], dim=1)
            del s1, w1
            s2 = fused.conv(both, self.conv_s2, relu=self.stage2_act)
            w2 = fused.conv(both, self.conv_w2, relu=self.stage2_act)
            del both
            # the fuse conv as a sum of per-part convolutions (no 128-channel copy): w2amsn-small x2
            # 0.341 -> 0.315 s per slice, max 6.2 -> 6.9 HU on 4 real CT slices (AMX Xeon, 2 threads)
            return fused.conv_of_concat([self.att_s(s2), self.att_w(w2)], self.fuse)
        s1 = torch.relu_(self.conv_s1(x))
        w1 = torch.relu_(self.conv_w1(x))
        both = torch.cat([s1, w1], dim=1)
        del s1, w1
        s2, w2 = self.conv_s2(both), self.conv_w2(both)  # conv_w2's input channels were permuted
        del both
        if self.stage2_act:
            s2, w2 = torch.relu_(s2), torch.relu_(w2)
        return self.fuse(torch.cat([self.att_s(s2), self.att_w(w2)], dim=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return add_(self.branch(x), x)


def _fold_w2amsb(m: W2AMSB) -> None:
    """Fold the learnable lambdas and ``res_scale`` into ``fuse``; permute ``conv_w2``'s input channels
    so both stage-2 convolutions read one concatenation ``[s1, w1]``."""
    w1 = m.conv_s1.out_channels
    with torch.no_grad():
        m.conv_w2.weight.copy_(torch.cat([m.conv_w2.weight[:, w1:], m.conv_w2.weight[:, :w1]], dim=1))
    half = m.fuse.in_channels // 2
    scale = torch.cat([m.lambda1.detach().expand(half), m.lambda2.detach().expand(half)])
    scale_conv_(m.fuse, scale, dim=1)
    scale_conv_(m.fuse, m.res_scale, dim=0)
    with torch.no_grad():
        m.lambda1.fill_(1.0)
        m.lambda2.fill_(1.0)
    m.res_scale = 1.0


register_swap(W2AMSB, _InferenceW2AMSB, rewrite=_fold_w2amsb)


class _InferenceW2AMSN(W2AMSN):
    """:class:`W2AMSN` whose blocks run in the reduced dtype of a ``reduced_precision_copy`` with the
    residual stream between them, the global attention, ``global_fuse`` and the global skip in fp32 (as
    MDRN's and IDMAN's chains: w2amsn-small x2 max 9.4 -> 6.7 HU against fp32 on 4 whole real CT slices,
    w2amsn-s x2 / x4 5.6 / 5.9 -> 4.7 / 4.9 HU); fp32 unchanged. The upsampler's last stage and the
    tail run as one folded LR conv (``shuffle_tail``)."""

    full_precision_layers = W2AMSN.full_precision_layers + ("shuffle_tail", "global_attention")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_lr_input(x, model="W2AMSN")
        x_s = self.sfe(x)
        dtype = body_dtype(self)
        h = to_body(self, x_s)
        features = [x_s if dtype is not None else h]
        stream = x_s
        for i in range(self.n_blocks):
            block = self.blocks[0 if self.share_block_weights else i]
            if dtype is None or not isinstance(block, _InferenceW2AMSB):
                h = block(h)
                features.append(h if dtype is None else h.to(x_s.dtype))
            else:  # a reduced_precision_copy: the block in bf16, the residual stream between blocks in fp32
                stream = add_to_stream(stream, block.branch(h))
                h = stream.to(dtype)
                features.append(stream)
        del h, stream
        x_a = self.global_attention(torch.cat(features, dim=1))
        del features
        return self.shuffle_tail.after_stages(self.upsampler, self.global_fuse(x_a).to(x_s.dtype).add_(x_s))


def _fold_last_stage_and_tail(model: W2AMSN) -> None:
    """The upsampler's last conv + PixelShuffle and the tail as one LR conv (:class:`~.blocks.ShuffleTailFold`;
    w2amsn-small x2, 512^2, fp32, 1 thread: ~100 ms of 3.9 s)."""
    model.shuffle_tail = ShuffleTailFold.of(model.upsampler, model.tail)


register_swap(W2AMSN, _InferenceW2AMSN, rewrite=_fold_last_stage_and_tail,
              condition=lambda m: ShuffleTailFold.applies(m.upsampler, m.tail))
