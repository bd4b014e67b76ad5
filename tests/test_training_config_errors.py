"""Bad training configs fail with one clear line before any work starts; every shipped config validates."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from conftest import shared_path
from MedSRLib.errors import MedSRError, ModelNotFoundError, ScaleError
from training.__main__ import main
from training.config import ConfigError, available_configs, load_config, parse_duration, validate


def _cfg(tmp_path: Path, **overrides):
    root = shared_path("covid-ct")
    return load_config("dridsr_x4_cpu", overrides={"data.root": str(root), "log.root": str(tmp_path / "runs"), **overrides})


@pytest.mark.parametrize(
    ("overrides", "error", "words"),
    [
        ({"model": "no-such-net"}, ModelNotFoundError, "unknown model 'no-such-net'"),
        ({"model": "srda-small", "scale": 2}, ScaleError, "does not support scale 2"),
        ({"scale": 3, "model": "mdrn"}, ScaleError, "does not support scale 3"),
        ({"data.root": "/nonexistent/covid"}, ConfigError, "data folder /nonexistent/covid does not exist"),
        ({"train.hr_patch": 126}, ConfigError, "not divisible by the scale x4"),
        ({"train.batch": 0}, ConfigError, "train.batch must be a positive integer"),
        ({"train.time_budget": "soon"}, ConfigError, "not a duration"),
        ({"train.schedule": {"type": "cosine"}}, ConfigError, "train.schedule.type must be one of"),
        ({"val.convention": "psnr-y"}, ConfigError, "unknown metric convention"),
        ({"train.loss": "srda"}, ConfigError, "needs an SRDA model"),
    ],
)
def test_bad_config_raises_one_line(tmp_path, overrides, error, words):
    cfg = _cfg(tmp_path, **overrides)
    with pytest.raises(error) as info:
        validate(cfg)
    message = str(info.value)
    assert words in message and "\n" not in message


def test_unknown_key_and_config_name_are_rejected(tmp_path):
    with pytest.raises(ConfigError, match="unknown config key 'train.bacth'"):
        _cfg(tmp_path, **{"train.bacth": 4})
    with pytest.raises(ConfigError, match="unknown config 'dridsr_x5'; available: "):
        load_config("dridsr_x5")
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"model": "dridsr", "scale": 4, "trian": {}}))
    with pytest.raises(ConfigError, match="unknown config key 'trian'"):
        load_config(bad)


def test_cli_error_exits_2_before_any_work(tmp_path, capsys):
    shared_path("covid-ct")
    log_root = tmp_path / "runs"
    code = main(["train", "dridsr_x4_cpu", "--log-root", str(log_root), "--set", "train.hr_patch=130", "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("medsr-train: error: train.hr_patch 130 is not divisible by the scale x4")
    assert len(err.splitlines()) == 1
    assert not log_root.exists(), "nothing may be written for a bad config"
    assert main(["train", "dridsr_x4_cpu", "--log-root", str(log_root), "--set", "model=nope"]) == 2
    assert "unknown model 'nope'" in capsys.readouterr().err


def test_every_shipped_config_validates():
    names = available_configs()
    assert {"dridsr_x3", "dridsr_x4", "idman_x2", "w2amsn_x4", "srda_x4", "mdrn_x8", "dridsr_x4_cpu", "mdrn_x2_cpu"} <= set(names)
    for name in names:
        cfg = validate(load_config(name), need_data=False)
        if cfg["mode"] == "throughplane":  # pairs of any factor 2..8; no paper table (issue 20)
            continue
        assert cfg["train"]["hr_patch"] % cfg["scale"] == 0, name
        assert cfg["published"], f"{name} names no published table"


def test_paper_recipes_match_the_design_doc():
    """Spot checks against networks.md Section 9 (the configs are the recipes as data)."""
    d = load_config("dridsr_x4")["train"]
    assert (d["hr_patch"] // 4, d["batch"], d["epochs"], d["optimizer"]["lr"]) == (48, 64, 200, 1e-3)
    assert d["schedule"] == {"type": "step", "every": 0.15, "gamma": 0.5, "min_lr": 1e-5}
    m = load_config("mdrn_x4")["train"]
    assert m["optimizer"]["betas"] == [0.9, 0.99] and m["optimizer"]["lr"] == 5e-4 and m["hr_patch"] == 192
    s = load_config("srda_x4")["train"]
    assert s["loss"] == "srda" and s["loss_weights"] == {"diag": 0.0006, "atten": 0.0001} and s["batch"] == 8
    assert s["augment"] == {"hflip": False, "rot90": False} and s["schedule"]["type"] == "constant"
    w = load_config("w2amsn_x3")["train"]
    assert (w["hr_patch"] // 3, w["batch"], w["optimizer"]["lr"]) == (32, 96, 1e-4)
    i = load_config("idman_x2")["train"]
    assert (i["hr_patch"] // 2, i["batch"], i["schedule"]["every"] * i["iterations"]) == (48, 10, pytest.approx(2e5, rel=1e-3))


def test_durations_and_cli_overrides():
    assert parse_duration("25m") == 1500 and parse_duration("2h") == 7200 and parse_duration(90) == 90
    with pytest.raises(MedSRError):
        parse_duration(-1)
    cfg = load_config("dridsr_x4_cpu", overrides={"train.batch": 4, "val.every": 7})
    assert cfg["train"]["batch"] == 4 and cfg["val"]["every"] == 7
