"""Through-plane networks: one-direction head, B-spline base, every factor, multi-factor weights file."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from MedSRLib.errors import ScaleError, WeightsError
from MedSRLib.models import get_model
from MedSRLib.models.throughplane import FACTORS, ThroughPlaneNet, shuffle_rows
from MedSRLib.models.weights import read_card, save_weights
from MedSRLib.resize import interpolate_axis


def test_shuffle_rows_puts_channel_k_of_row_j_at_row_jr_plus_k() -> None:
    x = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).reshape(2, 3, 4, 5)
    y = shuffle_rows(x, 3)
    assert y.shape == (2, 1, 12, 5)
    for j in range(4):
        for k in range(3):
            assert torch.equal(y[:, 0, j * 3 + k], x[:, k, j])


@pytest.mark.parametrize("name", ["tp-dridsr", "tp-mdrn"])
def test_every_factor_upsamples_rows_only_and_starts_at_the_bspline(name: str) -> None:
    torch.manual_seed(0)
    net = get_model(name).build(8).eval()
    x = torch.rand(2, 1, 9, 13)
    for r in FACTORS:
        with torch.no_grad():
            y = net(x, r)
        assert y.shape == (2, 1, 9 * r, 13)
        # freshly built: zero tails, so the output is exactly the one-axis cubic B-spline of the input
        ref = interpolate_axis(x.numpy().astype(np.float64), axis=2, n_out=9 * r, kind="bspline3")
        np.testing.assert_allclose(y.numpy(), ref, atol=1e-5)
    with pytest.raises(ScaleError):
        net(x, 9)


def test_tails_are_separate_and_the_body_is_shared() -> None:
    net = ThroughPlaneNet(body="dridsr", channels=8, n_blocks=2)
    names = {k.split(".")[0] for k, _ in net.named_parameters()}
    assert names == {"body", "tails"}
    assert sorted(int(k) for k in net.tails) == list(FACTORS)
    assert all(net.tails[str(r)].out_channels == r for r in FACTORS)
    torch.manual_seed(1)
    for p in net.tails.parameters():
        torch.nn.init.normal_(p, std=0.1)
    x = torch.rand(1, 1, 6, 10)
    y3, y5 = net(x, 3), net(x, 5)
    y3.sum().backward()
    assert net.tails["5"].weight.grad is None and net.tails["3"].weight.grad is not None
    assert y5.shape[-2] == 30


def test_multi_factor_weights_file_round_trip(tmp_path) -> None:
    spec = get_model("tp-dridsr")
    assert spec.multi_scale and spec.weights_path(3).name == "tp-dridsr.safetensors" == spec.weights_path(7).name
    torch.manual_seed(2)
    net = spec.build(8)
    for p in net.parameters():
        torch.nn.init.normal_(p, std=0.05)
    path, _ = save_weights(net, tmp_path / "tp-dridsr.safetensors", card={"name": "tp-dridsr", "scale": 8})
    card = read_card(path)
    assert card["scales"] == list(FACTORS) and card["scale"] == 8
    x = torch.rand(1, 1, 7, 12)
    for r in (2, 5):  # one file loads for every factor
        loaded = spec.load(r, weights=path)
        with torch.no_grad():
            torch.testing.assert_close(loaded(x, r), net.half().float()(x, r), atol=1e-5, rtol=0)
    with pytest.raises(WeightsError):  # an in-plane model's name does not load it
        get_model("tp-mdrn").load(5, weights=path)


@pytest.mark.parametrize("name", ["tp-dridsr", "tp-mdrn"])
def test_inference_rewrites_keep_the_image_path_in_fp32(name: str) -> None:
    from MedSRLib.models.rewrites import prepare_for_inference

    torch.manual_seed(4)
    net = get_model(name).build(8)
    for p in net.tails.parameters():
        torch.nn.init.normal_(p, std=0.05)
    x = torch.rand(1, 1, 8, 16)
    with torch.no_grad():
        ref = net.eval()(x, 4)
        fast = prepare_for_inference(net)
        torch.testing.assert_close(fast(x, 4), ref, atol=1e-6, rtol=0)
        for layer in fast.full_precision_layers:
            assert getattr(type(fast.get_submodule(layer)), "_medsr_full_precision", False), layer
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = fast(x, 4)
    assert low.dtype == torch.float32 and (low - ref).abs().max() < 0.05
