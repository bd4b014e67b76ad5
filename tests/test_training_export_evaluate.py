"""Export of a trained checkpoint to the shipped weights format, and the paper-style evaluation table."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from test_training_loop_resume import covid_folder, short_run, small_config  # noqa: F401  (fixtures)
from MedSRLib.models import get_model
from MedSRLib.models.cards import CARD_VERSION, validate_card
from training.__main__ import main
from training.export import export
from training.loop import read_checkpoint


@pytest.fixture(autouse=True)
def one_thread():
    """Inference on one thread: two threads spin-wait on a loaded 2-core machine (several x slower)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_export_writes_verified_weights_and_a_full_card(short_run, tmp_path):  # noqa: F811
    weights, card_path, card = export(short_run.run_dir, out=tmp_path)
    assert weights == tmp_path / "dridsr_x4.safetensors" and card_path == tmp_path / "dridsr_x4.json"
    assert json.loads(card_path.read_text())["sha256"] == card["sha256"]
    t, m = card["training"], card["metrics"]
    assert t["iterations"] == 30 and t["config"] == "dridsr_x4_cpu" and t["wall_time_s"] > 0 and t["hardware"]
    assert "10 images" in t["data"] and t["normalisation"] == "8-bit values / 255"
    assert m["convention"] == "dridsr-y" and m["split"] == "val" and m["n_images"] == 3
    assert m["basicsr"]["convention"] == "basicsr"
    assert m["bicubic_psnr"] > 25 and 0 < m["psnr"] < 60 and m["ms_ssim"] is not None
    assert validate_card(card) == [] and card["card_version"] == CARD_VERSION  # the card format of issue 18
    schedule = card["training"]["paper_schedule"]
    assert schedule["config_file"] == "training/configs/dridsr_x4.yaml" and schedule["iterations"] == 200 * 24
    assert schedule["fraction_of_paper_pixels"] == pytest.approx(30 * 4 * 64**2 / (4800 * 64 * 192**2), rel=1e-3)
    assert card["evaluation"][0]["psnr"] == pytest.approx(m["psnr"], abs=1e-4) and card["task"] == "in-plane"
    assert card["licence"]["training_data"][0]["licence"].startswith("not recorded")  # a tmp folder: facts unknown
    module = get_model("dridsr").load(4, weights=weights)  # registry load: sha256 and shapes checked
    ckpt = read_checkpoint(short_run.run_dir / "best.pt")
    for key, value in module.state_dict().items():  # float16 storage of the trained weights
        assert torch.allclose(value, ckpt["model"][key].half().float()), key
    weights.write_bytes(weights.read_bytes()[:-8] + b"\0" * 8)
    with pytest.raises(Exception, match="sha256"):
        get_model("dridsr").load(4, weights=weights)


def test_cli_export_and_paper_table(short_run, tmp_path, capsys):  # noqa: F811
    assert main(["export", str(short_run.run_dir), "--out", str(tmp_path / "w"), "--max-images", "1"]) == 0
    assert "wrote" in capsys.readouterr().out
    results = tmp_path / "RESULTS.md"
    config = short_run.run_dir / "config.yaml"
    code = main(["evaluate", str(config), "--checkpoint", str(short_run.run_dir), "--split", "val", "--out", str(results),
                 "--max-images", "2"])
    assert code == 0
    table = results.read_text()
    lines = [ln for ln in table.splitlines() if ln.startswith("| ")]
    assert lines[0].startswith("| x4 | PSNR (ours) | PSNR (paper) | SSIM (ours) | SSIM (paper) | MS-SSIM (ours)")
    bicubic = lines[1].split("|")
    assert bicubic[1].strip() == "Bicubic" and bicubic[3].strip() == "26.85" and bicubic[7].strip() == "0.9369"
    ours = lines[2].split("|")
    assert ours[1].strip() == "dridsr" and ours[3].strip() == "31.89"  # DRIDSRS, Table 1
    assert float(bicubic[2]) > 25 and np.isfinite(float(ours[2]))
    assert "dridsr-y" in table and "official COVID-CT test split" in table
    assert main(["evaluate", str(config), "--checkpoint", str(tmp_path / "nothing")]) == 2
