"""prepare_for_inference: every rewrite is exact (float64 equality), idempotent, and really applied."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from MedSRLib.models import get_model
from MedSRLib.models.blocks import NCAB, ResBlock
from MedSRLib.models.dridsr import DRIDSR
from MedSRLib.models.idman import IDMAN, MAB
from MedSRLib.models.mdrn import MDRN
from MedSRLib.models.rewrites import prepare_for_inference
from MedSRLib.models.srda import SRDA
from MedSRLib.models.w2amsn import W2AMSB, W2AMSN

#: float64 rounding of networks with a few hundred thousand MACs per pixel stays far below this.
EXACT = dict(rtol=1e-10, atol=1e-10)


def _perturbed(module: nn.Module, seed: int = 0) -> nn.Module:
    """``module`` in float64 with every parameter randomised (zero inits such as the DCN offsets,
    W2AMSN's lambdas = 1 and res_scale = 1 would hide a wrong fold)."""
    gen = torch.Generator().manual_seed(seed)
    module = module.double().eval()
    with torch.no_grad():
        for p in module.parameters():
            noise = torch.randn(p.shape, generator=gen, dtype=p.dtype)
            p.copy_(noise / p[0].numel() ** 0.5 if p.dim() > 1 else 0.1 * noise + (1.0 if p.dim() == 0 else 0.0))
    for m in module.modules():
        if hasattr(m, "res_scale"):
            m.res_scale = 0.37
    return module


def _clone(module: nn.Module) -> nn.Module:
    """A deep copy (a legacy weight-norm module cannot be deep-copied: rebuilt from its pickle)."""
    try:
        return copy.deepcopy(module)
    except RuntimeError:
        import io

        buffer = io.BytesIO()
        torch.save(module, buffer)
        buffer.seek(0)
        return torch.load(buffer, weights_only=False)


def _compare(module: nn.Module, *, scale: int, side: int = 19, channels_last: bool = False) -> nn.Module:
    """Assert that ``prepare_for_inference`` keeps ``module``'s output; return the prepared copy."""
    x = torch.rand(2, 1, side, side + 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    fast = prepare_for_inference(_clone(module))
    if channels_last:
        fast = fast.to(memory_format=torch.channels_last)
        x_fast = x.contiguous(memory_format=torch.channels_last)
    else:
        x_fast = x
    with torch.inference_mode():
        expected = module(x)
        got = fast(x_fast)
    assert got.shape == (2, 1, scale * side, scale * (side + 3))
    torch.testing.assert_close(got, expected, **EXACT)
    return fast


CASES = {
    "idman": lambda: IDMAN(scale=2, channels=16, n_groups=2, n_blocks=2, reduction=4),
    "idman-local3": lambda: IDMAN(scale=3, channels=16, n_groups=1, n_blocks=2, reduction=4, mab_pool="local3"),
    "idman-split-nown": lambda: IDMAN(scale=4, channels=16, n_groups=1, n_blocks=1, reduction=4,
                                      distill_mode="split", weight_norm=False, mab_share_fc=True),
    "dridsr": lambda: DRIDSR(scale=2, channels=16, n_res_blocks=3, n_idb=2),
    "w2amsn": lambda: W2AMSN(scale=2, n_feats=8, n_blocks=2),
    "w2amsn-shared": lambda: W2AMSN(scale=3, n_feats=8, n_blocks=3, share_block_weights=True,
                                    share_block_attention=True, stage2_act=True),
    "w2amsn-per-branch": lambda: W2AMSN(scale=2, n_feats=4, n_blocks=1, width_mode="per_branch", upsampler="single"),
    "srda": lambda: SRDA(scale=4, channels=8, n_resblocks=2, res_scale=0.1, offset_bias_init="default"),
    "srda-modulated": lambda: SRDA(scale=2, channels=8, n_resblocks=1, modulated=True),
    "mdrn": lambda: MDRN(scale=2, channels=16, n_blocks=3),
    "mdrn-variants": lambda: MDRN(scale=4, channels=16, n_blocks=2, agg_conv="bsconv", agg_act="gelu", esa=True,
                                  distill_act="lrelu", last_remain="bsrb_full", padding_mode="reflect"),
    "mdrn-no-residual": lambda: MDRN(scale=2, channels=8, n_blocks=2, block_residual=False),
}
SCALES = {"idman-local3": 3, "idman-split-nown": 4, "w2amsn-shared": 3, "srda": 4, "mdrn-variants": 4}


@pytest.mark.parametrize("name", sorted(CASES))
def test_prepared_network_equals_the_original_in_float64(name: str) -> None:
    _compare(_perturbed(CASES[name]()), scale=SCALES.get(name, 2))


@pytest.mark.parametrize("name", ["idman", "srda", "w2amsn", "mdrn"])
def test_prepared_network_equals_the_original_in_channels_last(name: str) -> None:
    _compare(_perturbed(CASES[name]()), scale=SCALES.get(name, 2), channels_last=True)


@pytest.mark.parametrize("name", ["idman-small", "dridsr", "w2amsn-small", "srda-small", "mdrn"])
def test_registered_configs_are_unchanged_by_the_rewrites(name: str) -> None:
    spec = get_model(name)
    scale = spec.scales[0]
    torch.manual_seed(3)
    _compare(spec.build(scale).double().eval(), scale=scale, side=max(16, spec.min_lr_size))


def test_weight_norm_is_folded_and_mab_uses_centre_taps() -> None:
    net = _perturbed(CASES["idman"]())
    assert any(parametrize.is_parametrized(m) for m in net.modules())
    fast = _compare(net, scale=2)
    assert not any(parametrize.is_parametrized(m) for m in fast.modules())
    mabs = [m for m in fast.modules() if isinstance(m, MAB)]
    assert mabs and all(c.kernel_size == (1, 1) for m in mabs for c in [*m.conv_in, *m.conv_out])
    assert sum(p.numel() for p in fast.parameters()) < sum(p.numel() for p in net.parameters())
    assert not fast.training


def test_local_pooling_mab_keeps_its_kxk_convolutions() -> None:
    fast = _compare(_perturbed(CASES["idman-local3"]()), scale=3)
    assert any(c.kernel_size != (1, 1) for m in fast.modules() if isinstance(m, MAB) for c in m.conv_in)


def test_legacy_weight_norm_hooks_are_folded() -> None:
    import warnings

    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 1), nn.PixelShuffle(2)).double()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # the deprecated API is what is being tested
        torch.nn.utils.weight_norm(net[0])
    with torch.no_grad():
        net[0].weight_g.mul_(1.7)
    fast = _compare(net, scale=2)
    assert not hasattr(fast[0], "weight_g") and isinstance(fast[0].weight, nn.Parameter)
    assert not fast[0]._forward_pre_hooks


def test_prepare_is_idempotent() -> None:
    net = _perturbed(CASES["w2amsn"]())
    once = prepare_for_inference(copy.deepcopy(net))
    twice = prepare_for_inference(copy.deepcopy(once))
    x = torch.rand(1, 1, 12, 12, dtype=torch.float64)
    with torch.inference_mode():
        torch.testing.assert_close(twice(x), once(x), rtol=0, atol=0)
        torch.testing.assert_close(once(x), net(x), **EXACT)


def test_rewrites_are_applied_to_the_block_types() -> None:
    fast = prepare_for_inference(CASES["w2amsn"]())
    # (the global attention, kept fp32 under bf16, is the full-precision subclass of the swapped class)
    assert all(any(c.__name__.startswith("_Inference") for c in type(m).__mro__)
               for m in fast.modules() if isinstance(m, (NCAB, W2AMSB)))
    srda = prepare_for_inference(_perturbed(CASES["srda"]()))
    blocks = [m for m in srda.modules() if isinstance(m, ResBlock)]
    assert blocks and all(m.res_scale == 1.0 and type(m) is not ResBlock for m in blocks)


def test_deformable_layer_output_keeps_channels_last() -> None:
    fast = prepare_for_inference(SRDA(scale=2, channels=8, n_resblocks=1)).to(memory_format=torch.channels_last)
    x = torch.rand(1, 1, 10, 10).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        y = fast.dconv(x)
    assert y.is_contiguous(memory_format=torch.channels_last) and not y.is_contiguous()


@pytest.mark.parametrize("name", ["mdrn", "dridsr"])
def test_float32_channels_last_with_onednn_pointwise_convs_matches(name: str) -> None:
    torch.manual_seed(4)
    net = CASES[name]().eval()
    x = torch.rand(1, 1, 150, 160)  # large enough for the oneDNN path (> 20480 elements per 1x1 input)
    with torch.inference_mode():
        expected = net(x)
        fast = prepare_for_inference(copy.deepcopy(net)).to(memory_format=torch.channels_last)
        got = fast(x.contiguous(memory_format=torch.channels_last))
    assert any(type(m).__name__ == "_PointwiseConv2d" for m in fast.modules())
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)  # float32: summation order only


@pytest.mark.parametrize("scale", [2, 3, 4])
@pytest.mark.parametrize("hw", [(1, 5), (2, 8), (3, 3), (4, 7), (17, 12)])
def test_shuffle_tail_fold_equals_conv_shuffle_conv_everywhere_including_the_border(scale, hw) -> None:
    """The folded upsampler + tail (one 5x5 LR conv) is the same linear map as conv3x3 -> PixelShuffle
    -> conv3x3, on the border ring too (recomputed through the original layers)."""
    from MedSRLib.models.blocks import ShuffleTailFold, conv3x3

    torch.manual_seed(scale)
    head, tail = conv3x3(6, scale * scale * 3).double(), conv3x3(3, 2).double()
    fold = ShuffleTailFold(head, scale, tail)
    x = torch.randn(2, 6, *hw, dtype=torch.float64)
    with torch.no_grad():
        expected = tail(torch.nn.functional.pixel_shuffle(head(x), scale))
        torch.testing.assert_close(fold(x), expected, **EXACT)
        assert fold.weight.shape == (2 * scale * scale, 6, 5, 5)


def test_shuffle_tail_fold_counts_the_macs_it_removes() -> None:
    from MedSRLib.models.base import count_macs
    from MedSRLib.models.blocks import ShuffleTailFold, conv3x3

    head, tail = conv3x3(6, 4 * 3), conv3x3(3, 1)
    path = nn.Sequential(nn.Conv2d(1, 6, 1), head, nn.PixelShuffle(2), tail)
    unfolded = count_macs(path, (10, 12)) - 10 * 12 * 6  # minus the 1 -> 6 adapter
    folded = 10 * 12 * 25 * 6 * 4  # one 5x5 conv, 6 -> 2^2 x 1 channels, on the LR grid
    assert ShuffleTailFold(head, 2, tail).macs_removed(10, 12) == unfolded - folded


@pytest.mark.parametrize("hw", [(37, 41), (64, 48)])  # 1517 pixels: one 1024 chunk + a remainder; 3072: 3 chunks
def test_mdrn_contrast_statistic_on_bf16_maps_matches_float64_without_touching_the_map(hw) -> None:
    """The GEMM-based CCA statistic (std + mean per channel) of a bf16 channels_last map is within 3e-3 of
    its own size (std + |mean|) of the float64 statistic of the same bf16 values, for channels whose std
    is 1 % to 100 % of their mean and for channels of negative mean (the statistic near 0); the std itself
    within 2 % (centred: no cancellation); the map is left unchanged; the fp32 path matches to 1e-5."""
    from MedSRLib.models.mdrn import _contrast

    torch.manual_seed(0)
    c = 16
    scale = torch.linspace(0.01, 1.0, c).view(1, c, 1, 1)
    offset = torch.linspace(0.5, 2.0, c).view(1, c, 1, 1) * torch.tensor([1.0, -1.0]).repeat(c // 2).view(1, c, 1, 1)
    x = (torch.randn(2, c, *hw) * scale + offset).bfloat16().contiguous(memory_format=torch.channels_last)
    before = x.clone()
    d = x.double()
    mean = d.mean((2, 3), keepdim=True)
    std = ((d - mean) ** 2).mean((2, 3), keepdim=True).add(1e-12).sqrt()
    expected = std + mean
    got = _contrast(x, 1e-12)
    assert got.dtype == torch.float32 and got.shape == (2, c, 1, 1)
    assert ((got.double() - expected).abs() / (std + mean.abs())).max() < 3e-3
    assert ((got.double() - mean) / std - 1).abs().max() < 0.02  # the std itself, even where it is 1 % of the mean
    assert torch.equal(x, before)
    x32 = x.float()
    copy32 = x32.clone()
    assert torch.allclose(_contrast(x32, 1e-12).double(), expected, rtol=1e-5, atol=1e-6) and torch.equal(x32, copy32)


@pytest.mark.parametrize("pre, hw", [(2, (7, 9)), (2, (2, 5)), (3, (4, 3))])
def test_shuffle_tail_fold_reads_the_map_before_a_pixel_shuffle_exactly(pre, hw) -> None:
    """``fold(y, pre)`` == ``fold(PixelShuffle_pre(y))`` == the unfolded path, in float64, borders included
    (sizes where the shuffled map has fewer than 3 rows fall back to the unfolded path); the MACs it saves
    count its 3x3 conv on the unshuffled grid."""
    from MedSRLib.models.blocks import ShuffleTailFold

    torch.manual_seed(pre)
    head, tail = nn.Conv2d(6, 24, 3, padding=1).double(), nn.Conv2d(6, 1, 3, padding=1).double()
    fold = ShuffleTailFold(head, 2, tail)
    y = torch.randn(2, 6 * pre * pre, *hw, dtype=torch.float64)
    x = nn.functional.pixel_shuffle(y, pre)
    reference = fold.original(x)
    torch.testing.assert_close(fold(y, pre), reference, rtol=0, atol=1e-12)
    torch.testing.assert_close(fold(x), reference, rtol=0, atol=1e-12)
    k = ShuffleTailFold.unshuffled_kernel(pre)
    assert k == 3 and fold.unshuffled_weight(pre)[0].shape == (4 * pre * pre, 6 * pre * pre, 3, 3)
    h, w = hw
    extra = h * w * (9 * 6 * pre * pre * 4 * pre * pre - 25 * 6 * 4 * pre * pre)
    assert fold.macs_removed(h, w, pre) == fold.macs_removed(h * pre, w * pre) - extra


@pytest.mark.parametrize("scale", [None, 0.25, "per-channel"])
def test_a_full_precision_stream_step_adds_the_scaled_branch_in_fp32_and_keeps_the_old_stream(scale) -> None:
    from MedSRLib.models.rewrites import add_to_stream

    torch.manual_seed(0)
    stream = torch.randn(2, 8, 5, 6)
    out = torch.randn(2, 8, 5, 6).bfloat16()
    factor = torch.rand(2, 8, 1, 1) if scale == "per-channel" else scale
    before = stream.clone()
    got = add_to_stream(stream, out, scale=factor)
    want = stream.double() + (1.0 if factor is None else (factor.double() if isinstance(factor, torch.Tensor) else factor)) * out.double()
    assert got.dtype == torch.float32 and torch.equal(stream, before)
    assert torch.allclose(got.double(), want, rtol=1e-6, atol=1e-6)  # fp32 arithmetic on the bf16 values: no bf16 rounding
