"""SRDA (Wang et al., ICME 2023): SR network and ResNet-50 diagnosis network have networks.md Section 1's
exact parameter counts and MACs; both attention maps have the LR size at x4; the joint loss (Eqs. 2-5)
reduces to L1 with zero weights and each of its terms reaches the SR network."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from MedSRLib.errors import InputSizeError, ModelInputError, OptionError
from MedSRLib.models import count_macs, get_model
from MedSRLib.models.srda import (
    DIAGNOSIS_OPTIONS,
    SRDA,
    SRDADiagnosisNet,
    attention_resize,
    diagnosis_net_for,
    srda_joint_loss,
)


def _count(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def test_sr_parameter_counts_match_design_doc():
    # paper: no count; networks.md (and the earlier analysis) "43.06M" for the official-code widths
    assert get_model("srda").num_parameters(4) == 43_062_296
    assert get_model("srda-small").num_parameters(4) == 923_096
    for name, config in [("srda", "paper"), ("srda-small", "small")]:
        spec = get_model(name)
        assert (spec.network, spec.config, spec.modality, spec.scales) == ("SRDA", config, "MR", (4,))


def test_sr_per_module_parameter_counts():
    with torch.device("meta"):
        net = get_model("srda").build(4)
    assert _count(net.dconv) == 2_484 and _count(net.dconv.offset_conv) == 180
    assert _count(net.attention) == 99
    assert _count(net.body[0]) == 1_179_648 and len(net.body) == 33 and _count(net.body[-1]) == 590_080
    assert _count(net.upsampler) == 4_718_592 and _count(net.tail) == 2_305


def test_diagnosis_parameter_counts_match_design_doc():
    with torch.device("meta"):
        paper = diagnosis_net_for("srda")
        code = diagnosis_net_for("srda", attention_at="layer1", stem_channels=1)
        small = diagnosis_net_for("srda-small")
    assert _count(paper) == 23_508_006  # ResNet-50, 1-channel stem, 3 classes, + attention (99)
    assert _count(code) == 23_484_633  # official code: Conv2d(1, 1, 7) stem, attention after layer1
    assert _count(small) == 1_481_046  # width 1/4
    assert DIAGNOSIS_OPTIONS["small"]["width_mult"] == 0.25


def test_macs_match_design_doc():
    # convolutions are linear in pixels: 32x32 scales exactly to 256x256 (x64)
    for name, expected, doc in [("srda-small", 90_047_774_720, 90.1), ("srda", 3_288_233_934_848, 3288.2)]:
        with torch.device("meta"):
            net = get_model(name).build(4)
        macs = count_macs(net, (32, 32), device="meta") * 64
        assert macs == expected
        assert abs(macs / 1e9 - doc) < 0.06  # doc's 90.1 is 90.048 rounded twice
    with torch.device("meta"):
        diag = diagnosis_net_for("srda-small")
    # networks.md: 5.4 GMACs for a 1024^2 SR input (256^2 LR)
    assert round(count_macs(diag, (1024, 1024), device="meta") / 1e9, 1) == 5.4


@pytest.mark.parametrize("lr_size", [(12, 10), (13, 11)])
@pytest.mark.parametrize("attention_at", ["stem", "layer1"])
def test_attention_maps_have_lr_size_at_x4(lr_size, attention_at):
    torch.manual_seed(0)
    sr_net = get_model("srda-small").build(4)
    diag = SRDADiagnosisNet(width_mult=0.125, attention_at=attention_at, layers=(1, 1, 1, 1))
    x = torch.rand(2, 1, *lr_size)
    sr, w_sr = sr_net.forward_with_attention(x)
    logits, w_diag = diag(sr)
    h, w = lr_size
    assert sr.shape == (2, 1, 4 * h, 4 * w)
    assert w_sr.shape == w_diag.shape == (2, 1, h, w)
    assert logits.shape == (2, 3)
    assert ((w_sr > 0) & (w_sr < 1)).all() and ((w_diag > 0) & (w_diag < 1)).all()


def test_forward_returns_the_sr_image_and_dcn_starts_with_zero_offsets():
    torch.manual_seed(0)
    net = get_model("srda-small").build(4).eval()
    x = torch.rand(1, 1, 9, 7)
    with torch.inference_mode():
        assert torch.equal(net(x), net.forward_with_attention(x)[0])
        assert net.dconv.offsets(x).abs().max() == 0
        f_plain = F.conv2d(x, net.dconv.weight, padding=1)
        assert (net.dconv(x) - f_plain).abs().max() < 1e-6


def test_paper_config_tiny_forward():
    net = get_model("srda").build(4).eval()
    with torch.inference_mode():
        sr, w_sr = net.forward_with_attention(torch.rand(1, 1, 8, 8))
    assert sr.shape == (1, 1, 32, 32) and w_sr.shape == (1, 1, 8, 8)


def test_loss_with_zero_weights_is_l1():
    g = torch.Generator().manual_seed(0)
    sr, hr = torch.rand(2, 1, 16, 16, generator=g), torch.rand(2, 1, 16, 16, generator=g)
    total, parts = srda_joint_loss(sr, hr, None, None, None, None, lambda1=0.0, lambda2=0.0)
    assert torch.equal(total, F.l1_loss(sr, hr)) and torch.equal(parts["sr"], total)


def test_loss_terms_and_reductions():
    g = torch.Generator().manual_seed(0)
    sr, hr = torch.rand(2, 1, 16, 16, generator=g), torch.rand(2, 1, 16, 16, generator=g)
    logits, labels = torch.randn(2, 3, generator=g), torch.tensor([0, 2])
    w_sr, w_diag = torch.rand(2, 1, 4, 4, generator=g), torch.rand(2, 1, 4, 4, generator=g)
    total, parts = srda_joint_loss(sr, hr, logits, labels, w_sr, w_diag)
    assert torch.allclose(parts["diag"], F.cross_entropy(logits, labels))
    assert torch.allclose(parts["atten"], ((w_sr - w_diag) ** 2).mean())
    assert torch.allclose(total, parts["sr"] + 6e-4 * parts["diag"] + 1e-4 * parts["atten"])
    _, summed = srda_joint_loss(sr, hr, logits, labels, w_sr, w_diag, atten_loss_reduction="sum")
    assert torch.allclose(summed["atten"], parts["atten"] * 16)  # per-image Frobenius^2, batch mean
    # W_diag of another size is resized to W_sr's (bilinear): a constant map stays constant
    _, resized = srda_joint_loss(sr, hr, logits, labels, torch.full((2, 1, 4, 4), 0.25),
                                 torch.full((2, 1, 8, 8), 0.75))
    assert torch.allclose(resized["atten"], torch.tensor(0.25))
    assert attention_resize(w_diag, (4, 4)) is w_diag


def test_every_loss_term_reaches_the_sr_network():
    torch.manual_seed(0)
    sr_net = get_model("srda-small").build(4, n_resblocks=1)
    diag = SRDADiagnosisNet(width_mult=0.125, layers=(1, 1, 1, 1))
    x, hr = torch.rand(2, 1, 8, 8), torch.rand(2, 1, 32, 32)
    sr, w_sr = sr_net.forward_with_attention(x)
    logits, w_diag = diag(sr)
    _, parts = srda_joint_loss(sr, hr, logits, torch.tensor([0, 1]), w_sr, w_diag)
    # the attention loss reaches the tail too: W_diag is computed from the SR image
    sr_params = [sr_net.dconv.weight, sr_net.attention.conv.weight, sr_net.tail.weight]
    for term in ("sr", "diag", "atten"):
        grads = torch.autograd.grad(parts[term], sr_params, retain_graph=True, allow_unused=True)
        for p, gr in zip(sr_params, grads):
            assert gr is not None and torch.isfinite(gr).all() and gr.abs().sum() > 0, (term, p.shape)
    # the attention loss trains the diagnosis network's attention too
    (g_diag,) = torch.autograd.grad(parts["atten"], [diag.attention.conv.weight])
    assert g_diag.abs().sum() > 0


def test_diagnosis_net_init_and_options():
    torch.manual_seed(0)
    net = SRDADiagnosisNet()
    conv = net.layer3[0].conv2  # 3x3, 256 -> 256: Kaiming normal fan_out std = sqrt(2 / (256 * 9))
    assert abs(conv.weight.std().item() / (2 / (256 * 9)) ** 0.5 - 1) < 0.05
    assert all(torch.all(m.weight == 1) for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert net.stem[0].in_channels == 1 and net.fc.out_features == 3
    with pytest.raises(OptionError, match="attention_at"):
        SRDADiagnosisNet(attention_at="layer2")
    with pytest.raises(OptionError, match="width_mult"):
        SRDADiagnosisNet(width_mult=0.3)
    with pytest.raises(OptionError, match="not an SRDA"):
        diagnosis_net_for("w2amsn")


@pytest.mark.parametrize("size", [(23, 17), (16, 12)])
def test_output_shape_odd_and_even_and_determinism(size):
    torch.manual_seed(5)
    a = get_model("srda-small").build(4).eval()
    torch.manual_seed(5)
    b = get_model("srda-small").build(4).eval()
    x = torch.rand(1, 1, *size)
    x0 = x.clone()
    with torch.inference_mode():
        ya = a(x)
        assert ya.shape == (1, 1, 4 * size[0], 4 * size[1])
        assert torch.equal(ya, b(x)) and torch.equal(ya, a(x))
    assert torch.equal(x, x0)


def test_bad_input_and_options():
    net = SRDA(channels=4, n_resblocks=1)
    with pytest.raises(ModelInputError, match="N x 1 x H x W"):
        net(torch.rand(8, 8))
    with pytest.raises(ModelInputError, match="channel"):
        net.forward_with_attention(torch.rand(1, 2, 8, 8))
    with pytest.raises(InputSizeError):
        net(torch.rand(1, 1, 8, 0))
    with pytest.raises(OptionError, match="channels"):
        SRDA(channels=0)
    with pytest.raises(OptionError, match="scales"):
        SRDA(scale=6)
    g = torch.rand(1, 1, 8, 8)
    with pytest.raises(OptionError, match="lambda1"):
        srda_joint_loss(g, g, None, None, None, None, lambda1=1e-3, lambda2=0.0)
    with pytest.raises(OptionError, match="atten_loss_reduction"):
        srda_joint_loss(g, g, None, None, None, None, lambda1=0.0, lambda2=0.0, atten_loss_reduction="max")
    with pytest.raises(ModelInputError, match="shapes differ"):
        srda_joint_loss(g, g[..., :4], None, None, None, None, lambda1=0.0, lambda2=0.0)
