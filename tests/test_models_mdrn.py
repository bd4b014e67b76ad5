"""MDRN (Deng et al., AIMS 2024) is the paper's network: exact parameter counts and MACs of
networks.md Section 1 (the paper publishes none), the FMDRB of Eq. 5 with BSRB/BSConvU and CCA, the
distillation connections and aggregation of Eqs. 2-4, the single-stage head, NaN-free gradients on
flat input, the options and their validation."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from MedSRLib.errors import InputSizeError, OptionError
from MedSRLib.models import count_macs, get_model
from MedSRLib.models.blocks import CCA, BSConvU
from MedSRLib.models.mdrn import BSRB, ESA_MIN_SIZE, FMDRB, MDRN


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def seeded(**kwargs) -> MDRN:
    torch.manual_seed(0)
    return MDRN(**{"scale": 2, "channels": 16, "n_blocks": 2, **kwargs}).eval()


# The paper reports no parameter or FLOP count (networks.md 7.4): ours are pinned from networks.md 1.
COUNTS = {2: 325_924, 4: 332_848, 8: 360_544}
GMACS_256 = {2: 20.8, 4: 21.3, 8: 23.1}  # per 256 x 256 LR input


@pytest.mark.parametrize("scale", [2, 4, 8])
def test_parameter_count_is_exact(scale: int) -> None:
    assert n_params(get_model("mdrn").build(scale)) == COUNTS[scale]  # paper: not reported


@pytest.mark.parametrize("scale", [2, 4, 8])
def test_macs_match_design_doc(scale: int) -> None:
    with torch.device("meta"):
        net = get_model("mdrn").build(scale)
    assert round(count_macs(net, (256, 256), device="meta") / 1e9, 1) == GMACS_256[scale]


def test_alternatives_have_the_design_doc_counts() -> None:
    assert n_params(MDRN(scale=4, channels=56)) == 257_640  # Mao et al.'s NTIRE width
    assert n_params(MDRN(scale=4, agg_conv="bsconv")) == 300_656  # BSRN-style aggregation, -32,192


def test_per_module_counts_localise_the_total() -> None:
    # networks.md 7.1 (C = 64)
    block = FMDRB(64)
    assert n_params(block) == 31_652
    assert [n_params(d) for d in block.distill] == [2_080] * 3
    assert [n_params(r) for r in block.remain] == [4_736] * 3
    assert n_params(block.last) == 2_368 and n_params(block.fuse) == 8_256 and n_params(block.cca) == 580
    net = MDRN(scale=4)
    assert n_params(net.head) == 640
    assert [n_params(m) for m in net.aggregate] == [32_832, 0, 36_928]
    assert n_params(net.upsample) == 9_232
    assert n_params(MDRN(scale=2).upsample) == 2_308 and n_params(MDRN(scale=8).upsample) == 36_928


def test_blocks_are_bsconv_residual_units_with_cca_tail() -> None:
    block = FMDRB(64)
    assert all(isinstance(r, BSRB) and isinstance(r.conv, BSConvU) for r in block.remain)
    assert isinstance(block.last[0], BSConvU) and block.last[0].dw.out_channels == 32
    assert isinstance(block.cca, CCA)
    assert block.fuse.in_channels == 4 * 32
    assert FMDRB(64, last_remain="bsrb_full").fuse.in_channels == 5 * 32


def test_fmdrb_follows_eq_5() -> None:
    torch.manual_seed(0)
    block = FMDRB(16).eval()
    x = torch.randn(2, 16, 9, 8)
    with torch.no_grad():
        r, kept = x, []
        for d, rb in zip(block.distill, block.remain):
            kept.append(d(r))
            r = torch.relu(rb.conv(r) + r)
        kept.append(torch.relu(block.last[0](r)))
        expected = block.cca(block.fuse(torch.cat(kept, 1))) + x
        assert torch.allclose(block(x), expected, atol=1e-6)


def test_distillation_connections_and_aggregation_follow_eqs_2_to_4() -> None:
    net = seeded(scale=4, n_blocks=3)
    x = torch.rand(1, 1, 7, 6)
    with torch.no_grad():
        f0 = net.head(x)
        outs, f = [], f0
        for block in net.blocks:
            f = block(f)
            outs.append(f)
        fusion = net.aggregate[2](net.aggregate[0](torch.cat(outs, 1)))
        expected = nn.functional.pixel_shuffle(net.upsample[0](fusion + f0), 4)
        assert torch.allclose(net(x), expected, atol=1e-6)


@pytest.mark.parametrize("scale", [2, 4, 8])
def test_reconstruction_is_a_single_pixel_shuffle_stage(scale: int) -> None:
    net = MDRN(scale=scale)
    conv, shuffle = net.upsample
    assert conv.out_channels == scale * scale and conv.kernel_size == (3, 3) and shuffle.upscale_factor == scale
    assert sum(isinstance(m, nn.PixelShuffle) for m in net.modules()) == 1


def test_cca_on_a_constant_map_is_finite_with_nan_free_gradients() -> None:
    """networks.md 14: the std's eps keeps a flat channel (blank background) from giving NaN gradients."""
    torch.manual_seed(0)
    cca = CCA(16, 4)
    x = torch.full((2, 16, 6, 5), 0.3, requires_grad=True)
    y = cca(x)
    y.sum().backward()
    assert torch.isfinite(y).all() and torch.isfinite(x.grad).all()
    assert all(torch.isfinite(p.grad).all() for p in cca.parameters())
    net = seeded()
    flat = torch.zeros(1, 1, 8, 8)
    out = net(flat)
    out.mean().backward()
    assert torch.isfinite(out).all()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())


def test_esa_option_raises_the_minimum_size() -> None:
    net = seeded(esa=True)
    assert net.min_size == ESA_MIN_SIZE
    with torch.no_grad():
        assert net(torch.rand(1, 1, ESA_MIN_SIZE, ESA_MIN_SIZE + 2)).shape == (1, 1, 2 * ESA_MIN_SIZE, 2 * ESA_MIN_SIZE + 4)
        with pytest.raises(InputSizeError, match=str(ESA_MIN_SIZE)):
            net(torch.rand(1, 1, ESA_MIN_SIZE - 1, 20))


@pytest.mark.parametrize("overrides", [
    dict(last_remain="bsrb_full"), dict(block_residual=False), dict(distill_act="gelu"), dict(cca_reduction=4),
    dict(agg_conv="bsconv"), dict(agg_act="gelu"), dict(padding_mode="reflect"), dict(scale=8), dict(scale=3),
])
def test_options_build_and_run(overrides: dict) -> None:
    net = seeded(**overrides)
    with torch.no_grad():
        y = net(torch.rand(1, 1, 5, 6))
    assert y.shape == (1, 1, 5 * net.scale, 6 * net.scale) and torch.isfinite(y).all()


@pytest.mark.parametrize("kwargs,option", [
    (dict(last_remain="conv"), "last_remain"), (dict(agg_conv="dense"), "agg_conv"), (dict(agg_act="relu"), "agg_act"),
    (dict(padding_mode="mirror"), "padding_mode"), (dict(channels=0), "channels"), (dict(n_blocks=0), "n_blocks"),
    (dict(cca_reduction=0), "cca_reduction"), (dict(distill_act="tanh"), "distill_act"),
])
def test_bad_options_are_rejected_by_name(kwargs: dict, option: str) -> None:
    with pytest.raises(OptionError, match=option):
        MDRN(**{"scale": 4, **kwargs})
