"""Through-plane training mode: on-the-fly slice-profile pairs, validation against the cubic B-spline,
resume identical to an uninterrupted run, export of one multi-factor weights file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from conftest import shared_path
from training.config import ConfigError, load_config, validate
from MedSRLib.throughplane import cut_pair
from training.throughplane import SliceStore, ThroughPlaneBatches, load_slices


def _config(tmp_path: Path, **train: object) -> dict:
    volume = str(shared_path("isotropic-mr", "sct-spine", "t2.nii.gz"))
    cfg = {
        "description": "test", "mode": "throughplane", "model": "tp-dridsr", "scale": 8, "seed": 3,
        "throughplane": {
            "factors": [2, 5], "lr_rows": 6, "min_std": 0.0,
            "sources": [{"kind": "volume", "path": volume, "axes": [0, 1, 2], "modality": "MR", "step": 4}],
            "val_sources": [{"kind": "volume", "path": volume, "axes": [0], "modality": "MR", "max_items": 2}],
            "val_factors": [2, 4],
        },
        "train": {"hr_patch": 24, "batch": 2, "iterations": 6, "loss": "l1", "threads": 1, "amp": False,
                  "optimizer": {"lr": 1.0e-3}, **train},
        "val": {"every": 3, "max_images": 2},
        "log": {"root": str(tmp_path / "runs"), "every": 1, "checkpoint_every": 1, "tensorboard": False},
    }
    path = tmp_path / "tp.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return load_config(path)


def test_pairs_are_the_profile_degradation_of_the_hr_rows_with_their_margins() -> None:
    from MedSRLib.resize import slice_profile_degrade

    image = np.random.default_rng(0).random((80, 40)).astype(np.float32)
    lr, hr = cut_pair(image, np.random.default_rng(1), r=4, thickness=3.6, profile="gaussian", lr_rows=5, cols=16)
    assert lr.shape == (5, 16) and hr.shape == (20, 16)
    # find where the patch came from and check the LR rows against degrading the whole slice
    for y in range(0, 80 - 36 + 1):
        for x in range(0, 40 - 16 + 1):
            if np.array_equal(image[y + 8 : y + 28, x : x + 16], hr):
                whole = slice_profile_degrade(image[:, x : x + 16], axis=0, factor=4, thickness=3.6)
                # y + 8 is a multiple of 4 only when the patch is on the whole slice's LR grid
                if (y + 8) % 4 == 0:
                    np.testing.assert_allclose(lr, whole[(y + 8) // 4 : (y + 8) // 4 + 5], atol=1e-6)
                block = image[y : y + 36, x : x + 16]
                np.testing.assert_allclose(lr, slice_profile_degrade(block, axis=0, factor=4, thickness=3.6)[2:-2], atol=1e-6)
                return
    pytest.fail("patch not found in the image")


def test_batches_have_one_factor_and_are_reproducible() -> None:
    store = SliceStore([np.random.default_rng(i).random((50, 60)).astype(np.float32) for i in range(3)], ["a", "b", "c"])
    tp = {"factors": [2, 8], "thickness": [0.8, 1.0], "profile": "gaussian", "lr_rows": 4, "min_std": 0.0}
    ds = ThroughPlaneBatches(store, tp, batch=3, cols=20, seed=0)
    ds.length = 10
    factors = set()
    for b in range(10):
        item = ds[b]
        r = item["hr"].shape[-2] // item["lr"].shape[-2]
        assert item["lr"].shape == (3, 1, 4, 20) and item["hr"].shape == (3, 1, 4 * r, 20)
        factors.add(r)
        torch.testing.assert_close(ds[b]["lr"], item["lr"])
    assert len(factors) >= 3 and factors <= set(range(2, 9))


def test_config_errors(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    cfg["throughplane"]["factors"] = [1, 4]
    with pytest.raises(ConfigError, match="factors"):
        validate(cfg)
    cfg = _config(tmp_path)
    cfg["model"] = "mdrn"
    with pytest.raises(ConfigError, match="through-plane model"):
        validate(cfg)
    cfg = _config(tmp_path)
    cfg["throughplane"]["sources"] = []
    with pytest.raises(ConfigError, match="sources"):
        validate(cfg)
    with pytest.raises(ConfigError, match="one process"):
        validate(_config(tmp_path), world_size=2)


def test_shipped_configs_hold_out_the_evaluation_volumes() -> None:
    for name in ("tp_mr_cpu", "tp_ct_cpu"):
        cfg = load_config(name)
        validate(cfg, need_data=False)
        paths = " ".join(str(s.get("path", s.get("root"))) for s in cfg["throughplane"]["sources"])
        assert "seg3d-mr" not in paths and "sct-spine/t1w" not in paths


def test_resume_equals_an_uninterrupted_run_and_export(tmp_path: Path) -> None:
    from training.loop import read_checkpoint
    from training.modes import export, train

    cfg = _config(tmp_path)
    full = train(load_config(tmp_path / "tp.yaml", overrides={"name": "full"}), resume=False, progress=False)
    assert full.iteration == 6 and full.best
    train(load_config(tmp_path / "tp.yaml", overrides={"name": "split"}), resume=False, progress=False, stop_at=4)
    split = train(load_config(tmp_path / "tp.yaml", overrides={"name": "split"}), resume=True, progress=False)
    assert split.iteration == 6
    a = read_checkpoint(full.run_dir / "last.pt")["model"]
    b = read_checkpoint(split.run_dir / "last.pt")["model"]
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=0, rtol=0)
    assert cfg["mode"] == "throughplane"
    weights, card_path, card = export(full.run_dir, out=tmp_path / "w")
    assert weights.name == "tp-dridsr.safetensors" and card["scales"] == [2, 3, 4, 5, 6, 7, 8]
    assert set(card["metrics"]["per_factor"]) == {str(r) for r in range(2, 9)}
    assert np.isfinite(card["metrics"]["psnr"]) and np.isfinite(card["metrics"]["bicubic_psnr"])
    from MedSRLib.models.cards import CARD_VERSION, validate_card

    assert validate_card(card) == [] and card["card_version"] == CARD_VERSION and card["task"] == "through-plane"
    assert card["training_data"][0]["dataset"].startswith("isotropic-mr") and card["training_data"][0]["n_train"] == 42
    assert "seg3d-mr" in card["training"]["held_out"]  # what was held out, not the config's description


def test_sources_read_real_volumes_in_every_orientation() -> None:
    path = shared_path("isotropic-mr", "sct-spine", "t2.nii.gz")
    store = load_slices([{"kind": "volume", "path": str(path), "axes": [0, 1, 2], "modality": "MR"}])
    assert len(store.planes) == 52 + 55 + 60
    assert {p.shape for p in store.planes} == {(55, 60), (52, 60), (52, 55)}
    assert all(0.0 <= float(p.min()) and float(p.max()) <= 1.0 for p in store.planes)


def test_results_section_is_replaced_in_place_and_kept_by_training_results() -> None:
    from training.throughplane import RESULTS_BEGIN, RESULTS_END, kept_results_section, replace_results_section

    section = f"{RESULTS_BEGIN}\n\n### Through-plane\n| a |\n{RESULTS_END}\n"
    text = replace_results_section("# results\n\n### in-plane\n", section)
    assert text.endswith(section) and text.startswith("# results")
    newer = section.replace("| a |", "| b |")
    again = replace_results_section(text + "\n### later\n", newer)
    assert again.count(RESULTS_BEGIN) == 1 and "| b |" in again and "| a |" not in again and again.endswith("### later\n")
    assert kept_results_section(again) == newer and kept_results_section("# none\n") == ""
