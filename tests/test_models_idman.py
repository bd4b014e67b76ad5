"""IDMAN (Zhao et al., Sensors 2021) is the paper's network: exact parameter counts of networks.md
Section 1, the MAB's kxk/1x1 equivalence, weight norm on every conv, the local-feedback tail, the
exact inference re-parameterisations, the options and their validation."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from MedSRLib.errors import OptionError
from MedSRLib.models import count_macs, get_model
from MedSRLib.models.idman import IDMAB, IDMAG, IDMAN, MAB, apply_weight_norm, fold_weight_norm, mab_kxk_to_1x1


def n_params(module: nn.Module, *, gains: bool = True) -> int:
    """Parameter count; ``gains=False`` leaves out weight norm's g vectors (``...original0``)."""
    return sum(p.numel() for k, p in module.named_parameters() if gains or not k.endswith("original0"))


def meta(factory, **kwargs) -> nn.Module:
    """Build on the meta device: exact shapes, no memory, no init cost (IDMAN paper is 85M params)."""
    with torch.device("meta"):
        return factory(**kwargs)


def small(**overrides) -> IDMAN:
    torch.manual_seed(0)
    return IDMAN(scale=2, channels=16, n_groups=1, n_blocks=2, reduction=4, **overrides).eval()


# --------------------------------------------------------------------------- parameter counts

# networks.md Section 1. The paper reports no parameter count; the earlier analysis' "~85.3M" is the
# count without weight norm's gains, checked separately below.
PAPER_COUNTS = {2: 85_448_962, 3: 85_633_922, 4: 85_596_930}
PAPER_COUNTS_NO_GAINS = {2: 85_292_737, 3: 85_477_377, 4: 85_440_449}  # "~85.3M" (earlier analysis)
SMALL_COUNTS = {2: 919_746, 3: 966_146, 4: 956_866}


@pytest.fixture(scope="module")
def paper_x2() -> nn.Module:
    """The one real (CPU) build of the 85M-parameter paper network in this module."""
    torch.manual_seed(0)
    return get_model("idman").build(2).eval()


@pytest.fixture(scope="module")
def paper_meta() -> dict[int, nn.Module]:
    """The paper network at x3 and x4 on the meta device (shapes only, no memory)."""
    return {scale: meta(get_model("idman").build, scale=scale) for scale in (3, 4)}


def test_paper_config_parameter_count_is_exact(paper_x2: nn.Module, paper_meta: dict[int, nn.Module]) -> None:
    for scale, net in ((2, paper_x2), *paper_meta.items()):
        assert n_params(net) == PAPER_COUNTS[scale], f"x{scale} (paper: not reported)"
        assert n_params(net, gains=False) == PAPER_COUNTS_NO_GAINS[scale], f"x{scale} (earlier analysis ~85.3M)"


def test_paper_config_runs_at_a_tiny_size(paper_x2: nn.Module) -> None:
    with torch.inference_mode():
        y = paper_x2(torch.rand(1, 1, 3, 4))
    assert y.shape == (1, 1, 6, 8) and torch.isfinite(y).all()


def test_paper_config_macs_match_design_doc(paper_meta: dict[int, nn.Module]) -> None:
    # networks.md Section 1: GMACs per 256 x 256 LR input (x3 1928.1, x4 1955.2; small 23.2/26.4/33.3)
    for scale, gmacs in ((3, 1928.1), (4, 1955.2)):
        assert round(count_macs(paper_meta[scale], (256, 256), device="meta") / 1e9, 1) == gmacs
    for scale, gmacs in ((2, 23.2), (3, 26.4), (4, 33.3)):
        net = meta(get_model("idman-small").build, scale=scale)
        assert round(count_macs(net, (256, 256), device="meta") / 1e9, 1) == gmacs


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_small_config_parameter_count_is_exact(scale: int) -> None:
    assert n_params(meta(get_model("idman-small").build, scale=scale)) == SMALL_COUNTS[scale]


def test_alternative_readings_have_the_design_doc_counts() -> None:
    assert n_params(meta(IDMAN, scale=2, mab_pooled_conv="1x1")) == 33_020_162  # networks.md: -52.4M vs kxk
    # Eq. 15 does not index W_D/W_U by branch: sharing one pair saves 580 per MAB, 116,000 over 200 MABs
    # (networks.md 15: 85,292,737 - 116,000 without gains)
    assert n_params(meta(MAB, channels=64, share_fc=True)) == 279_944 - 580
    assert n_params(small(mab_share_fc=True)) < n_params(small())
    # the local feedback adds no parameters (paper Eq. 4; networks.md 14)
    assert n_params(small(feedback_steps=0)) == n_params(small()) == n_params(small(feedback_steps=3))


def test_per_module_counts_localise_the_total() -> None:
    # networks.md 3.1: IDMAB 423,688 / 424,464 (WN), MAB 279,944 / 280,336, IDMAG 8,510,688 / 8,526,272
    block = meta(IDMAB, channels=64, reduction=16)
    assert n_params(block) == 423_688
    assert n_params(meta(MAB, channels=64, reduction=16)) == 279_944
    assert n_params(apply_weight_norm(block)) == 424_464
    assert n_params(apply_weight_norm(meta(MAB, channels=64))) == 280_336
    group = apply_weight_norm(meta(IDMAG, channels=64, n_blocks=20, reduction=16))
    assert n_params(group) == 8_526_272 and n_params(group, gains=False) == 8_510_688
    tails = {s: meta(IDMAN, scale=s, n_groups=1, n_blocks=1, weight_norm=False) for s in (2, 3, 4)}
    assert n_params(tails[2].rec) == 577
    assert [n_params(tails[s].upsample) for s in (2, 3, 4)] == [147_712, 332_352, 295_424]


# ------------------------------------------------------------------------------- structure


def test_every_conv_is_weight_normalised_with_one_gain_per_output_channel() -> None:
    net = small()
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    assert convs and all(parametrize.is_parametrized(c, "weight") for c in convs)
    for c in convs:
        g = c.parametrizations.weight.original0
        assert g.shape == (c.out_channels, 1, 1, 1)
    plain = small(weight_norm=False)
    assert not any(parametrize.is_parametrized(m, "weight") for m in plain.modules() if isinstance(m, nn.Conv2d))
    assert n_params(plain) == n_params(net, gains=False)


def test_idmab_follows_eq_10_to_12() -> None:
    torch.manual_seed(0)
    block = IDMAB(16, reduction=4).eval()
    x = torch.randn(2, 16, 7, 6)
    c, kept = x, []
    for dist, coarse in zip(block.distilled, block.coarse):
        kept.append(dist(c))
        c = torch.relu(coarse(c) + c)
    kept.append(block.last(c))
    expected = x + block.mab(block.fuse(torch.cat(kept, 1)))
    with torch.no_grad():
        assert torch.allclose(block(x), expected, atol=1e-6)
    assert [d.out_channels for d in block.distilled] == [8, 8, 8] and block.fuse.in_channels == 32


def test_mab_gate_is_a_channel_gate_with_two_branches() -> None:
    torch.manual_seed(0)
    mab = MAB(16, reduction=4).eval()
    assert mab.kernels == (3, 5)
    assert [c.kernel_size for c in mab.conv_in] == [(3, 3), (5, 5)]
    x = torch.randn(2, 16, 9, 7)
    with torch.no_grad():
        omega = mab.gate(x)
        assert omega.shape == (2, 16, 1, 1) and ((omega > 0) & (omega < 1)).all()
        assert torch.allclose(mab(x), omega * x)
        local = MAB(16, reduction=4, pool="local3").gate(x)
    assert local.shape == (2, 16, 9, 7)


def test_mab_1x1_with_centre_taps_equals_kxk() -> None:
    """networks.md 14: a '1x1' MAB given the centre taps of a weight-normalised 'kxk' MAB is identical."""
    torch.manual_seed(0)
    kxk = apply_weight_norm(MAB(32, reduction=8)).eval()
    one = MAB(32, reduction=8, pooled_conv="1x1").eval()
    with torch.no_grad():
        for src_list, dst_list in ((kxk.conv_in, one.conv_in), (kxk.conv_out, one.conv_out)):
            for src, dst in zip(src_list, dst_list):
                k = src.kernel_size[0]
                dst.weight.copy_(src.weight[:, :, k // 2, k // 2, None, None])
                dst.bias.copy_(src.bias)
        for src, dst in zip(kxk.fc, one.fc):
            dst.load_state_dict(_plain_state(src))
        x = torch.randn(2, 32, 11, 10)
        assert (kxk(x) - one(x)).abs().max().item() < 1e-5


def _plain_state(seq: nn.Sequential) -> dict[str, torch.Tensor]:
    """State dict of a (possibly weight-normalised) Sequential with effective weights under plain names."""
    out = {}
    for i, m in enumerate(seq):
        if isinstance(m, nn.Conv2d):
            out[f"{i}.weight"] = m.weight.detach().clone()
            out[f"{i}.bias"] = m.bias.detach().clone()
    return out


def test_fold_weight_norm_and_mab_kxk_to_1x1_preserve_the_output() -> None:
    net = small()
    x = torch.rand(2, 1, 9, 8)
    with torch.no_grad():
        ref = net(x)
        fold_weight_norm(net)
        assert not any(parametrize.is_parametrized(m, "weight") for m in net.modules() if isinstance(m, nn.Conv2d))
        assert (net(x) - ref).abs().max().item() < 1e-5
        before = n_params(net)
        mab_kxk_to_1x1(net)
        assert all(c.kernel_size == (1, 1) for m in net.modules() if isinstance(m, MAB) for c in m.conv_in)
        assert n_params(net) < before
        assert (net(x) - ref).abs().max().item() < 1e-5


def test_mab_kxk_to_1x1_works_on_weight_normalised_modules_and_refuses_local_pooling() -> None:
    net = small()
    x = torch.rand(1, 1, 8, 8)
    with torch.no_grad():
        ref = net(x)
        assert (mab_kxk_to_1x1(net)(x) - ref).abs().max().item() < 1e-5
    with pytest.raises(OptionError, match="global"):
        mab_kxk_to_1x1(small(mab_pool="local3"))


def test_local_feedback_reuses_the_reconstruction_conv() -> None:
    """feedback_steps=T: y_0 = rec(u), y_t = rec(u + y_{t-1}) (our reading of Eq. 4)."""
    net = small(feedback_steps=2)
    x = torch.rand(1, 1, 6, 5)
    with torch.no_grad():
        f0 = net.head(x)
        u = net.upsample(f0 + net.body_conv(net.body(f0)))
        y = net.rec(u)
        y0 = y
        for _ in range(2):
            y = net.rec(u + y)
        assert torch.allclose(net(x), y, atol=1e-6)
        net.feedback_steps = 0
        assert torch.allclose(net(x), y0, atol=1e-6)
        assert not torch.allclose(y, y0)


@pytest.mark.parametrize("overrides", [
    dict(distill_mode="split"), dict(distill_act="lrelu"), dict(mab_pool="local3"), dict(mab_share_fc=True),
    dict(mab_pooled_conv="1x1"), dict(upsampler="single"), dict(res_scale=0.1), dict(distill_ratio=0.25),
    dict(mab_kernels=(3, 5, 7)),
])
def test_options_build_and_run(overrides: dict) -> None:
    net = small(**overrides)
    with torch.no_grad():
        y = net(torch.rand(1, 1, 7, 6))
    assert y.shape == (1, 1, 14, 12) and torch.isfinite(y).all()


def test_split_mode_keeps_distilled_channels_and_refines_the_rest() -> None:
    block = IDMAB(16, reduction=4, distill_mode="split", distill_ratio=0.25)
    assert [d.in_channels for d in block.distilled] == [4, 4, 4]
    assert [c.in_channels for c in block.coarse] == [12, 12, 12] and block.coarse[0].out_channels == 16


@pytest.mark.parametrize("kwargs,option", [
    (dict(distill_mode="dense"), "distill_mode"), (dict(mab_pool="max"), "mab_pool"),
    (dict(mab_pooled_conv="3x3"), "mab_pooled_conv"), (dict(upsampler="deconv"), "upsampler"),
    (dict(feedback_steps=-1), "feedback_steps"), (dict(channels=0), "channels"),
    (dict(distill_ratio=1.0), "distill_ratio"), (dict(mab_kernels=(3, 4)), "mab_kernels"),
    (dict(scale=5), "upsampler"), (dict(distill_act="gelu"), "distill_act"),
])
def test_bad_options_are_rejected_by_name(kwargs: dict, option: str) -> None:
    with pytest.raises(OptionError, match=option):
        IDMAN(**{"scale": 2, "channels": 16, "n_groups": 1, "n_blocks": 1, **kwargs})
