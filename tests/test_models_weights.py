"""The weights format: safetensors + JSON card round trip, sha256 verification, model/scale checks,
damaged files, strict loading, and that loading never unpickles."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch
from torch import nn

from MedSRLib.errors import OutputPathError, ScaleError, WeightsError
from MedSRLib.models import get_model
from MedSRLib.models.base import WEIGHTS_DIR
from MedSRLib.models.weights import FORMAT_VERSION, INTENDED_USE, card_path, load_weights, read_card, save_weights

CARD = {
    "training": {"data": "COVID-CT train split, 32x32 crops", "iterations": 10, "wall_time_s": 1.5, "hardware": "2-core CPU"},
    "metrics": {"convention": "PSNR/SSIM on Y in [0,1], 4-px border crop", "psnr_db": 30.1},
}


def build(name: str, scale: int, seed: int = 0, **overrides) -> nn.Module:
    torch.manual_seed(seed)
    return get_model(name).build(scale, **overrides).eval()


def small_idman(scale: int = 2, seed: int = 0) -> nn.Module:
    """A tiny weight-normalised IDMAN ('idman-small' with one group of one block)."""
    return build("idman-small", scale, seed, n_groups=1, n_blocks=1)


def save(module: nn.Module, tmp_path: Path, name: str, scale: int, **kw) -> Path:
    path, _ = save_weights(module, tmp_path / f"{name}_x{scale}.safetensors", card={"name": name, "scale": scale, **CARD}, **kw)
    return path


def test_round_trip_fp16_gives_the_same_network_up_to_rounding(tmp_path: Path) -> None:
    src = build("dridsr", 4)
    path = save(src, tmp_path, "dridsr", 4)
    dst = build("dridsr", 4, seed=1)
    card = load_weights(dst, path, model_name="dridsr", scale=4)
    for key, value in src.state_dict().items():
        assert torch.equal(dst.state_dict()[key], value.half().float()), key
        assert dst.state_dict()[key].dtype == torch.float32
    x = torch.rand(1, 1, 12, 10)
    with torch.no_grad():
        assert (src(x) - dst(x)).abs().max().item() < 5e-3
    assert card["name"] == "dridsr" and card["scale"] == 4


def test_round_trip_fp32_is_exact_and_keeps_weight_norm_tensors(tmp_path: Path) -> None:
    src = small_idman()
    path = save(src, tmp_path, "idman-small", 2, half=False)
    dst = small_idman(seed=5)
    load_weights(dst, path, model_name="idman-small", scale=2)
    keys = list(src.state_dict())
    assert any(k.endswith("parametrizations.weight.original0") for k in keys)
    assert all(torch.equal(src.state_dict()[k], dst.state_dict()[k]) for k in keys)
    x = torch.rand(1, 1, 6, 7)
    with torch.no_grad():
        assert torch.equal(src(x), dst(x))


def test_card_records_what_the_weights_are(tmp_path: Path) -> None:
    src = build("mdrn", 4)
    path = save(src, tmp_path, "mdrn", 4)
    card = json.loads(card_path(path).read_text())
    import hashlib

    assert card["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert (card["name"], card["network"], card["config"], card["modality"], card["scale"]) == ("mdrn", "MDRN", "paper", "MR", 4)
    assert card["options"] == {"channels": 64, "n_blocks": 8}
    assert card["n_parameters"] == 332_848
    assert card["training"]["iterations"] == 10 and card["training"]["hardware"] == "2-core CPU"
    assert card["metrics"]["convention"].startswith("PSNR")
    assert card["intended_use"] == INTENDED_USE and "not a substitute" in card["intended_use"]
    assert card["format_version"] == FORMAT_VERSION and card["dtype"] == ["float16"]
    assert card["created"].endswith("+00:00") and card["weights_file"] == path.name
    assert read_card(path) == card


def test_model_spec_load_uses_verified_weights(tmp_path: Path) -> None:
    src = build("mdrn", 2)
    path = save(src, tmp_path, "mdrn", 2, half=False)
    loaded = get_model("mdrn").load(2, weights=path)
    assert not loaded.training
    assert all(torch.equal(src.state_dict()[k], v) for k, v in loaded.state_dict().items())


def test_flipped_byte_is_detected_by_sha256_and_nothing_is_loaded(tmp_path: Path) -> None:
    path = save(build("mdrn", 4), tmp_path, "mdrn", 4)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    dst = build("mdrn", 4, seed=3)
    before = {k: v.clone() for k, v in dst.state_dict().items()}
    with pytest.raises(WeightsError, match="corrupted or modified"):
        load_weights(dst, path, model_name="mdrn", scale=4)
    assert all(torch.equal(before[k], v) for k, v in dst.state_dict().items())


def test_truncated_file_raises_weights_error(tmp_path: Path) -> None:
    path = save(build("mdrn", 4), tmp_path, "mdrn", 4)
    data = path.read_bytes()[:1000]
    path.write_bytes(data)
    with pytest.raises(WeightsError, match="corrupted or modified"):
        load_weights(build("mdrn", 4), path, model_name="mdrn", scale=4)
    # even with a card rewritten to match the truncated bytes, the parser refuses it
    import hashlib

    card = json.loads(card_path(path).read_text())
    card["sha256"] = hashlib.sha256(data).hexdigest()
    card_path(path).write_text(json.dumps(card))
    with pytest.raises(WeightsError, match="cannot read weights"):
        load_weights(build("mdrn", 4), path, model_name="mdrn", scale=4)


def test_wrong_scale_or_model_names_both(tmp_path: Path) -> None:
    path = save(build("mdrn", 4), tmp_path, "mdrn", 4)
    with pytest.raises(WeightsError, match=r"'mdrn' x4.*expected 'mdrn' x2"):
        load_weights(build("mdrn", 2), path, model_name="mdrn", scale=2)
    with pytest.raises(WeightsError, match=r"'mdrn' x4.*expected 'dridsr' x4"):
        load_weights(build("dridsr", 4), path, model_name="dridsr", scale=4)
    with pytest.raises(WeightsError, match="mdrn"):
        get_model("dridsr").load(4, weights=path)


def test_missing_card_or_file_raises_weights_error(tmp_path: Path) -> None:
    path = save(build("mdrn", 2), tmp_path, "mdrn", 2)
    with pytest.raises(WeightsError, match="no weights file"):
        load_weights(build("mdrn", 2), tmp_path / "absent.safetensors", model_name="mdrn", scale=2)
    card_path(path).unlink()
    with pytest.raises(WeightsError, match="card"):
        load_weights(build("mdrn", 2), path, model_name="mdrn", scale=2)


def test_shape_or_key_mismatch_names_model_and_scale(tmp_path: Path) -> None:
    # weights of MDRN built with C = 56 under the 'mdrn' (C = 64) card: shapes differ
    path = save(build("mdrn", 4, channels=56), tmp_path, "mdrn", 4)
    with pytest.raises(WeightsError, match=r"model 'mdrn' x4.*shape"):
        load_weights(build("mdrn", 4), path, model_name="mdrn", scale=4)
    # weights of DRIDSR with 4 IDBs instead of 5: the fifth IDB's keys are missing
    path = save(build("dridsr", 4, n_idb=4), tmp_path, "dridsr", 4)
    with pytest.raises(WeightsError, match=r"model 'dridsr' x4.*missing keys"):
        load_weights(build("dridsr", 4), path, model_name="dridsr", scale=4)


def test_loading_never_unpickles(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = save(build("mdrn", 2), tmp_path, "mdrn", 2)
    head = path.read_bytes()[:16]
    header_len = int.from_bytes(head[:8], "little")
    assert 0 < header_len < path.stat().st_size and head[8:9] == b"{"  # safetensors layout, not a pickle

    def refuse(*_a, **_k):
        raise AssertionError("unpickling attempted")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "Unpickler", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    load_weights(build("mdrn", 2), path, model_name="mdrn", scale=2)


class _Payload:
    def __reduce__(self):
        return (print, ("this must never run",))


def _pt_with_card(tmp_path: Path, obj, name: str = "mdrn", scale: int = 2) -> Path:
    import hashlib

    path = tmp_path / f"{name}_x{scale}.pt"
    torch.save(obj, path)
    card_path(path).write_text(json.dumps({"name": name, "scale": scale, "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}))
    return path


def test_pt_files_load_only_with_weights_only(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    src = build("mdrn", 2)
    path = _pt_with_card(tmp_path, {"state_dict": src.state_dict()})
    dst = build("mdrn", 2, seed=4)
    load_weights(dst, path, model_name="mdrn", scale=2)
    assert all(torch.equal(src.state_dict()[k], v) for k, v in dst.state_dict().items())
    (tmp_path / "evil").mkdir()
    evil = _pt_with_card(tmp_path / "evil", {"x": _Payload()})
    with pytest.raises(WeightsError, match="cannot read weights"):
        load_weights(build("mdrn", 2), evil, model_name="mdrn", scale=2)
    assert "this must never run" not in capsys.readouterr().out


def test_save_rejects_bad_requests_and_writes_nothing(tmp_path: Path) -> None:
    net = build("mdrn", 2)
    with pytest.raises(OutputPathError, match="safetensors"):
        save_weights(net, tmp_path / "mdrn_x2.pt", card={"name": "mdrn", "scale": 2})
    with pytest.raises(WeightsError, match="name"):
        save_weights(net, tmp_path / "mdrn_x2.safetensors", card={"scale": 2})
    with pytest.raises(ScaleError, match="mdrn"):
        save_weights(net, tmp_path / "mdrn_x3.safetensors", card={"name": "mdrn", "scale": 3})
    with pytest.raises(WeightsError, match="x4"):
        save_weights(net, tmp_path / "mdrn_x4.safetensors", card={"name": "mdrn", "scale": 4})
    with pytest.raises(WeightsError, match="convention"):
        save_weights(net, tmp_path / "mdrn_x2.safetensors", card={"name": "mdrn", "scale": 2, "metrics": {"psnr_db": 30}})
    with torch.no_grad():
        net.head.bias[0] = 1e6  # does not fit float16
    with pytest.raises(WeightsError, match="float16"):
        save_weights(net, tmp_path / "mdrn_x2.safetensors", card={"name": "mdrn", "scale": 2})
    assert list(tmp_path.iterdir()) == []


SHIPPED = sorted(WEIGHTS_DIR.glob("*.safetensors"))


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_shipped_weights_verify_load_and_run(path: Path) -> None:
    """Every weights file shipped in MedSRLib/weights has a valid card, its sha256, and loads strictly."""
    card = read_card(path)
    spec = get_model(card["name"])
    from MedSRLib.models.cards import weights_file_name

    assert path.name == weights_file_name(spec.name, card["scale"], multi_scale=spec.multi_scale) == card["weights_file"]
    assert card["intended_use"] and card["training"]["iterations"] and card["n_parameters"] == spec.num_parameters(card["scale"])
    net = spec.load(card["scale"])
    with torch.inference_mode():
        y = net(torch.rand(1, 1, 12, 12))
    # a through-plane network (one file for factors x2-x8) upsamples the rows only
    width = 12 if spec.multi_scale else 12 * card["scale"]
    assert y.shape == (1, 1, 12 * card["scale"], width) and torch.isfinite(y).all()
