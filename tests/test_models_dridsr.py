"""DRIDSR (Chen et al., COVID-CT) is the paper's network: exact parameter counts and MACs of
networks.md Section 1 (0.52M in the paper's Table 2), the 32 layers, the two paths and RIDM wiring
of Eqs. 2-14, the fixed Sobel operator, the options and their validation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage
from torch import nn

from MedSRLib.errors import OptionError
from MedSRLib.models import count_macs, get_model
from MedSRLib.models.blocks import ResBlock
from MedSRLib.models.dridsr import DRIDSR, IDB, RIDM, HighFrequencyPath, LowFrequencyPath, SobelGradient


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def seeded(**kwargs) -> DRIDSR:
    torch.manual_seed(0)
    return DRIDSR(**{"scale": 4, **kwargs}).eval()


# (ours, paper) per scale: the paper gives 0.52M for x4 (Table 2); x3 and x2 have no published count.
COUNTS = {2: 452_929, 3: 478_969, 4: 515_425}
GMACS_256 = {2: 29.6, 3: 31.4, 4: 33.9}  # networks.md Section 1, per 256 x 256 LR input


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_parameter_count_is_exact(scale: int) -> None:
    net = get_model("dridsr").build(scale)
    assert n_params(net) == COUNTS[scale]
    if scale == 4:
        assert round(n_params(net) / 1e6, 2) == 0.52  # paper, Table 2: 0.52M


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_macs_match_design_doc(scale: int) -> None:
    with torch.device("meta"):
        net = get_model("dridsr").build(scale)
    assert round(count_macs(net, (256, 256), device="meta") / 1e9, 1) == GMACS_256[scale]


def test_per_module_counts_localise_the_total() -> None:
    # networks.md 4.1 (C = 48, C' = 24)
    net = DRIDSR(scale=4)
    assert n_params(net.high.f1) == 480 and n_params(net.high.f2) == 480 and n_params(net.high.f3) == 1_176
    assert [n_params(rb) for rb in net.high.ridm.res_blocks] == [41_568] * 6
    assert [n_params(b) for b in net.high.ridm.idbs] == [25_416] * 5
    assert n_params(net.high.ridm.fusion) == 8_112 and net.high.ridm.fusion.in_channels == 5 * 24 + 48
    assert n_params(net.low) == 45_144
    assert n_params(net.upsample) == 83_328 and n_params(net.tail) == 217
    assert n_params(DRIDSR(scale=3).upsample) == 46_872 and n_params(DRIDSR(scale=2).upsample) == 20_832


def test_alternatives_have_the_design_doc_counts() -> None:
    assert n_params(DRIDSR(scale=4, sobel="xy")) == 515_857  # networks.md: +432 (2-channel f2)
    assert n_params(DRIDSR(scale=4, drop_unused_forward=True)) == 515_425 - 4_656  # the dead F_d^5 conv


def test_32_layers_as_in_table_2() -> None:
    """31 learned convolutions + the fixed Sobel operator = the paper's "Layers 32"."""
    net = DRIDSR(scale=4)
    assert sum(isinstance(m, nn.Conv2d) for m in net.modules()) == 31
    assert sum(isinstance(m, SobelGradient) for m in net.modules()) == 1


def test_reconstruction_is_one_pixel_shuffle_stage_then_a_conv() -> None:
    for scale in (2, 3, 4):
        net = DRIDSR(scale=scale)
        conv, shuffle = net.upsample
        assert conv.out_channels == scale * scale * 24 and shuffle.upscale_factor == scale
        assert net.tail.in_channels == 24 and net.tail.out_channels == 1


# ----------------------------------------------------------------------------------- Sobel


def test_sobel_is_a_fixed_buffer_not_a_parameter() -> None:
    net = seeded()
    sobel = net.high.sobel
    assert not any(p is sobel.kernel for p in net.parameters())
    assert not sobel.kernel.requires_grad
    assert not any("sobel" in k for k in net.state_dict())  # not stored in weights files
    x = torch.rand(1, 1, 9, 8, requires_grad=True)
    net(x).mean().backward()
    assert sobel.kernel.grad is None and x.grad is not None
    assert torch.equal(sobel.kernel[0, 0], torch.tensor([[-1.0, 0, 1], [-2, 0, 2], [-1, 0, 1]]))
    assert torch.equal(sobel.kernel[1, 0], sobel.kernel[0, 0].t())


def test_constant_image_gives_a_zero_edge_map() -> None:
    x = torch.full((2, 1, 7, 9), 0.37)
    assert SobelGradient("magnitude")(x).abs().max().item() < 1e-5  # sqrt(0 + 1e-12) = 1e-6
    assert SobelGradient("l1")(x).abs().max().item() < 1e-6
    assert SobelGradient("xy")(x).abs().max().item() < 1e-6


def test_sobel_matches_scipy_with_reflect_101_border() -> None:
    """scipy's mode='mirror' is OpenCV's BORDER_REFLECT_101 (edge pixel not repeated)."""
    img = np.random.default_rng(0).random((11, 13))
    gx = ndimage.sobel(img, axis=1, mode="mirror")
    gy = ndimage.sobel(img, axis=0, mode="mirror")
    x = torch.from_numpy(img)[None, None]
    xy = SobelGradient("xy")(x)[0].numpy()
    np.testing.assert_allclose(xy[0], gx, atol=1e-12)
    np.testing.assert_allclose(xy[1], gy, atol=1e-12)
    np.testing.assert_allclose(SobelGradient("magnitude")(x)[0, 0].numpy(), np.sqrt(gx**2 + gy**2 + 1e-12), atol=1e-12)
    np.testing.assert_allclose(SobelGradient("l1")(x)[0, 0].numpy(), np.abs(gx) + np.abs(gy), atol=1e-12)


# ----------------------------------------------------------------------------------- wiring


def test_forward_follows_eqs_2_to_14() -> None:
    net = seeded()
    x = torch.rand(2, 1, 10, 9)
    high = net.high
    with torch.no_grad():
        f0 = high.f1(x)
        feats, f = [], f0
        for rb in high.ridm.res_blocks:
            f = rb(f)
            feats.append(f)
        kept, fd = [], f0
        for i, idb in enumerate(high.ridm.idbs):  # Eqs. 7-8: IDB_i([F_d^{i-1}, F_i]), F_d^0 = F_0
            cat = torch.cat([fd, feats[i]], 1)
            fd, fr = torch.relu(idb.forward_conv(cat)), torch.relu(idb.keep(cat))
            kept.append(fr)
        f_m = high.ridm.fusion(torch.cat(kept + [feats[-1]], 1)) + f0  # Eq. 6
        f_h = high.f3(f_m + high.f2(high.sobel(x)))  # Eqs. 3-5
        f_l = net.low(x)  # Eq. 12
        expected = net.tail(net.upsample(f_l + f_h))  # Eqs. 13-14
        assert torch.allclose(net(x), expected, atol=1e-6)


def test_idb_keeps_the_3x3_output_and_forwards_the_1x1_output() -> None:
    idb = IDB(48, 24)
    assert idb.keep.kernel_size == (3, 3) and idb.keep.out_channels == 24
    assert idb.forward_conv.kernel_size == (1, 1) and idb.forward_conv.out_channels == 48
    swapped = IDB(48, 24, retain="1x1")
    assert swapped.keep.kernel_size == (1, 1) and swapped.forward_conv.kernel_size == (3, 3)


def test_paths_are_the_papers_layers() -> None:
    low = LowFrequencyPath(48, 96, 24)
    convs = [m for m in low if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size[0]) for c in convs] == [(1, 48, 5), (48, 96, 3), (96, 24, 1)]
    assert sum(isinstance(m, nn.ReLU) for m in low) == 2
    high = HighFrequencyPath(48, 24)
    assert isinstance(high.ridm, RIDM) and all(isinstance(rb, ResBlock) for rb in high.ridm.res_blocks)
    assert high.f2.in_channels == 1 and HighFrequencyPath(48, 24, sobel="xy").f2.in_channels == 2


@pytest.mark.parametrize("overrides", [
    dict(sobel="l1"), dict(sobel="xy"), dict(retain="1x1"), dict(drop_unused_forward=True), dict(idb_act=False),
    dict(channels=16, n_res_blocks=3, n_idb=2), dict(idb_keep_channels=8, channels=16), dict(res_scale=0.1),
    dict(low_mid=20, out_channels=10, channels=16),
])
def test_options_build_and_run(overrides: dict) -> None:
    net = seeded(**overrides)
    with torch.no_grad():
        y = net(torch.rand(1, 1, 5, 7))
    assert y.shape == (1, 1, 20, 28) and torch.isfinite(y).all()


@pytest.mark.parametrize("kwargs,option", [
    (dict(sobel="canny"), "sobel"), (dict(retain="both"), "retain"), (dict(n_idb=7), "n_idb"),
    (dict(channels=0), "channels"), (dict(out_channels=-1), "out_channels"), (dict(scale=0), "scale"),
])
def test_bad_options_are_rejected_by_name(kwargs: dict, option: str) -> None:
    with pytest.raises(OptionError, match=option):
        DRIDSR(**{"scale": 4, **kwargs})
