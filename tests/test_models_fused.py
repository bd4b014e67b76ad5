"""Fused oneDNN convolutions of the bf16 CPU body (models/fused.py): each fused call computes the same
map as the separate ops (to bf16 rounding), the fallback runs exactly the separate ops, and the bf16
DRIDSR, MDRN and IDMAN bodies run their ReLUs, skips (and DRIDSR its concatenations) inside the convolutions."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from MedSRLib.models import fused, get_model, mdrn
from MedSRLib.models.rewrites import prepare_for_inference, reduced_precision_copy

needs_onednn = pytest.mark.skipif(not fused._AVAILABLE, reason="this torch build has no oneDNN fused convolutions")
BF16_REL = 2.0**-7  # one bf16 rounding of the result, relative to the map's largest value


def _layer(c_in: int, c_out: int, k: int, groups: int = 1) -> nn.Conv2d:
    torch.manual_seed(c_in * 100 + c_out + k + groups)
    return nn.Conv2d(c_in, c_out, k, padding=k // 2, groups=groups).to(torch.bfloat16).to(memory_format=torch.channels_last)


def _map(c: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(1, c, 19, 23, generator=g).to(torch.bfloat16).contiguous(memory_format=torch.channels_last)


def _reference(x: torch.Tensor, layer: nn.Conv2d, *, relu: bool, add: torch.Tensor | None) -> torch.Tensor:
    """The same map in fp32 from the bf16 inputs and weights."""
    layer = layer.requires_grad_(False)
    y = nn.functional.conv2d(x.float(), layer.weight.float(), layer.bias.float(), layer.stride, layer.padding,
                             layer.dilation, layer.groups)
    if add is not None:
        y = y + add.float()
    return y.relu() if relu else y


def _close(got: torch.Tensor, want: torch.Tensor) -> None:
    assert got.dtype == torch.bfloat16 and got.shape == want.shape
    scale = float(want.abs().max())
    assert float((got.float() - want).abs().max()) <= 2 * BF16_REL * scale


@needs_onednn
@pytest.mark.parametrize("k,groups", [(1, 1), (3, 1), (3, 16)])
@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("with_add", [False, True])
def test_fused_conv_is_the_conv_with_its_add_and_relu(k, groups, relu, with_add):
    layer = _layer(16, 16, k, groups)
    x, other = _map(16, 1), _map(16, 2)
    add = other if with_add else None
    kept = other.clone()
    with torch.inference_mode():
        assert fused.applies(x)
        got = fused.conv(x, layer, relu=relu, add=add)
    _close(got, _reference(x, layer, relu=relu, add=add))
    assert torch.equal(other, kept)  # the added map is not written
    if relu:
        assert float(got.float().min()) >= 0.0


@needs_onednn
@pytest.mark.parametrize("relu", [False, True])
def test_conv_add_accumulates_in_place(relu):
    layer = _layer(8, 12, 3)
    x, acc = _map(8, 3), _map(12, 4)
    want = _reference(x, layer, relu=relu, add=acc)
    with torch.inference_mode():
        got = fused.conv_add_(acc, x, layer, relu=relu)
    assert got.data_ptr() == acc.data_ptr()
    _close(got, want)


@needs_onednn
@pytest.mark.parametrize("k", [1, 3])
def test_conv_of_concat_equals_the_conv_of_the_concatenation(k):
    parts = [_map(6, 5), _map(10, 6), _map(4, 7)]
    layer = _layer(20, 8, k)
    with torch.inference_mode():
        got = fused.conv_of_concat(parts, layer, relu=True)
    _close(got, _reference(torch.cat(parts, dim=1), layer, relu=True, add=None))
    with pytest.raises(ValueError, match="channels"):
        fused.conv_of_concat(parts[:2], layer)


def test_fallback_runs_the_separate_ops(monkeypatch):
    monkeypatch.setattr(fused, "_AVAILABLE", False)
    layer = _layer(16, 16, 3)
    x, other = _map(16, 1), _map(16, 2)
    with torch.inference_mode():
        assert not fused.applies(x)
        got = fused.conv(x, layer, relu=True, add=other)
        want = layer(x).add_(other).relu_()
        parts = [_map(6, 5), _map(10, 6)]
        cat_layer = _layer(16, 4, 1)
        got_cat = fused.conv_of_concat(parts, cat_layer)
        want_cat = cat_layer(torch.cat(parts, dim=1))
    assert torch.equal(got, want)
    _close(got_cat, want_cat.float())


def test_bit_pattern_relu_is_relu():
    x = torch.tensor([-3.5, -0.0, 0.0, 1e-30, -1e-30, 2.0, float("inf"), float("-inf")], dtype=torch.bfloat16)
    got = fused._relu_bf16_(x.clone())
    assert torch.equal(got, torch.relu(x))  # values (-0.0 == 0.0)
    assert not torch.signbit(got).any()


def test_fp32_and_autocast_are_left_to_the_separate_ops():
    x = _map(4, 0)
    assert not fused.applies(x.float())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not fused.applies(x)


class _OpNames(TorchDispatchMode):
    """Records each aten op's name (``names``) and the largest tensor argument's number of elements
    (``sizes``, in the same order)."""

    def __init__(self) -> None:
        super().__init__()
        self.names: list[str] = []
        self.sizes: list[int] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.append(func.overloadpacket.__name__)
        self.sizes.append(max((a.numel() for a in args if isinstance(a, torch.Tensor)), default=0))
        return func(*args, **(kwargs or {}))

    def on_maps(self, name: str, *, min_numel: int = 4096) -> int:
        """How many ``name`` ops had a tensor argument of at least ``min_numel`` elements (a feature map)."""
        return sum(n == name and size >= min_numel for n, size in zip(self.names, self.sizes))


@needs_onednn
@pytest.mark.parametrize(("name", "scale"), [("dridsr", 2), ("mdrn", 2), ("mdrn", 4), ("tp-dridsr", 2), ("idman-small", 2),
                                           ("w2amsn-small", 2)])
def test_bf16_bodies_fuse_their_glue_and_match_the_unfused_body(name, scale, monkeypatch):
    torch.manual_seed(0)
    # channels_last, as the engine runs them on a CPU
    module = prepare_for_inference(get_model(name).build(scale).eval()).to(memory_format=torch.channels_last)
    reduced = reduced_precision_copy(module, torch.bfloat16)
    x = torch.rand(1, 1, 40, 36).contiguous(memory_format=torch.channels_last)
    run = (lambda m: m(x, scale)) if getattr(module, "multi_scale", False) else (lambda m: m(x))
    with torch.inference_mode(), _OpNames() as ops:
        y = run(reduced)
    with torch.inference_mode():
        reference = run(module)
    monkeypatch.setattr(fused, "_AVAILABLE", False)
    with torch.inference_mode():
        unfused = run(reduced)
    assert any(n.startswith("_convolution_pointwise") for n in ops.names)
    if "dridsr" in name:
        assert "cat" not in ops.names  # concatenations became accumulating convolutions
    elif name == "mdrn":  # x4: one per block (its fuse conv, see FMDRB._distilled); x2: accumulated, none
        assert all(block.fuse_as_sum == (scale in mdrn.BF16_FUSE_AS_SUM_SCALES) for block in module.blocks)
        assert ops.names.count("cat") == (0 if scale in mdrn.BF16_FUSE_AS_SUM_SCALES else len(module.blocks))
    elif name == "w2amsn-small":  # one per block ([S1, W1], read by both stage-2 convs); its fuse conv as a sum
        assert ops.names.count("cat") == len(module.blocks) + 1  # + the global attention's (fp32) concatenation
        # the blocks' attentions folded into their 1x1 convs: only the fp32 global attention pools and scales
        assert ops.names.count("mul_") == 1 and ops.names.count("mean") == 1
    else:  # IDMAN: one per IDMAB (its fuse conv), the refinement steps' skips and ReLUs fused
        assert ops.names.count("cat") == sum(len(group.blocks) for group in module.body)
        assert "mean" not in ops.names and ops.on_maps("mul") == 0  # the MAB gates folded into the fuse convs
    assert float((y - unfused).abs().max()) < 0.05 and float((y - reference).abs().max()) < 0.05


@pytest.mark.parametrize("groups", [1, 16])
@pytest.mark.parametrize("available", [True, False])
def test_a_scratch_add_receives_the_result(groups, available, monkeypatch):
    if available and not fused._AVAILABLE:
        pytest.skip("this torch build has no oneDNN fused convolutions")
    monkeypatch.setattr(fused, "_AVAILABLE", available)
    layer = _layer(16, 16, 3, groups)
    x, other = _map(16, 1), _map(16, 2)
    with torch.inference_mode():
        fresh = fused.conv(x, layer, add=other, relu=True)
        scratch = other.clone()
        written = fused.conv(x, layer, add=scratch, add_is_scratch=True, relu=True)
    assert written.data_ptr() == scratch.data_ptr()
    assert torch.equal(written, fresh)


def test_a_scratch_add_that_is_the_input_is_not_overwritten_while_read():
    layer = _layer(16, 16, 3)
    x = _map(16, 1)
    with torch.inference_mode():
        want = fused.conv(x, layer, add=x, relu=True)
        got = fused.conv(x, layer, add=x, add_is_scratch=True, relu=True)
    assert torch.equal(got, want)


@needs_onednn
def test_channel_means_by_gemm_match_the_float64_mean_of_the_same_bf16_values():
    x = (torch.randn(2, 24, 37, 41) * 0.3 + torch.linspace(-2, 2, 24).view(1, 24, 1, 1)).to(torch.bfloat16)
    x = x.contiguous(memory_format=torch.channels_last)  # 1517 pixels: one 1024-pixel chunk and a remainder
    want = x.double().mean(dim=(2, 3))
    got = fused.channel_means(x)
    assert got.dtype == torch.float32 and got.shape == (2, 24)
    assert float((got.double() - want).abs().max()) <= 2.0**-8 * float(x.double().abs().mean(dim=(2, 3)).max())
    assert torch.allclose(fused.channel_means(x.float()).double(), want, atol=1e-6)


@needs_onednn
def test_fused_channel_attention_is_the_attention_of_each_sample_in_one_convolution():
    """NCAB in a bf16 body: ``softmax(upper(GAP x)) * lower(x) + x`` with the attention folded into ``lower``'s
    weights per sample (two samples with different attentions) equals the separate ops within bf16 rounding."""
    from MedSRLib.models.blocks import NCAB
    from MedSRLib.models.rewrites import prepare_for_inference

    torch.manual_seed(3)
    ncab = prepare_for_inference(NCAB(16).eval()).to(torch.bfloat16).to(memory_format=torch.channels_last)
    x = torch.cat([_map(16, 4), _map(16, 5) * 3.0])
    with torch.inference_mode(), _OpNames() as ops:
        got = ncab(x)
    assert "mul_" not in ops.names and any(n.startswith("_convolution_pointwise") for n in ops.names)
    with torch.inference_mode():
        xf = x.float()
        up, low = ncab.upper, ncab.lower
        att = torch.softmax(nn.functional.conv2d(xf.mean(dim=(2, 3), keepdim=True), up.weight.float(), up.bias.float()), dim=1)
        want = att * nn.functional.conv2d(xf, low.weight.float(), low.bias.float()) + xf
    assert not torch.allclose(att[0], att[1])  # the two samples' attentions differ
    _close(got, want)


@needs_onednn
@pytest.mark.parametrize("with_add", [False, True])
def test_conv_scaled_is_each_samples_scaled_conv(with_add):
    """``scale * conv(x) [+ add]`` per sample and output channel, within bf16 rounding; the inputs untouched."""
    layer = _layer(16, 8, 1)
    x = torch.cat([_map(16, 6), _map(16, 7)])
    add = torch.cat([_map(8, 8), _map(8, 9)]) if with_add else None
    scale = torch.rand(2, 8) + 0.5
    kept = x.clone()
    with torch.inference_mode():
        got = fused.conv_scaled(x, layer, scale, add=add)
        want = torch.cat([scale[i].view(1, -1, 1, 1) * _reference(x[i : i + 1], layer, relu=False, add=None)
                          + (add[i : i + 1].float() if add is not None else 0.0) for i in range(2)])
    _close(got, want)
    assert torch.equal(x, kept)


@needs_onednn
def test_a_consuming_residual_block_writes_into_its_input_and_gives_the_same_map():
    from MedSRLib.models.blocks import ResBlock
    from MedSRLib.models.rewrites import prepare_for_inference

    torch.manual_seed(5)
    block = prepare_for_inference(ResBlock(16).eval()).to(torch.bfloat16).to(memory_format=torch.channels_last)
    x = _map(16, 10)
    with torch.inference_mode():
        kept = block(x)
        scratch = x.clone()
        written = block(scratch, consume=True)
    assert written.data_ptr() == scratch.data_ptr()  # the result is in the input's memory
    assert torch.equal(written, kept)
