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
    for name in ("tp_mr_cpu", "tp_mr_cpu_ft", "tp_mr_cpu_diag", "tp_ct_cpu"):
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


def test_diagonal_planes_are_the_voxel_diagonals_with_the_axis_as_rows() -> None:
    from training.throughplane import DIAGONAL_MIN_COLUMNS, _diagonal_planes

    view = np.random.default_rng(0).random((3, 40, 36)).astype(np.float32)
    planes = _diagonal_planes(view, 1)
    long_enough = sum(min(40, 36, c + 1, 40 + 36 - 1 - c) >= DIAGONAL_MIN_COLUMNS for c in range(40 + 36 - 1))
    assert len(planes) == 2 * long_enough
    for plane, name in planes:
        assert plane.shape[0] == 3 and plane.shape[1] >= DIAGONAL_MIN_COLUMNS
        # every column is one voxel (i, j) of the grid; consecutive columns step one voxel in both axes
        hits = [np.flatnonzero((view[0] == plane[0, t]).ravel()) for t in range(plane.shape[1])]
        ij = np.array([divmod(int(h[0]), 36) for h in hits])
        steps = np.diff(ij, axis=0)
        assert (steps[:, 0] == 1).all() and (steps[:, 1] == (-1 if name.startswith("anti") else 1)).all()
        np.testing.assert_array_equal(plane, view[:, ij[:, 0], ij[:, 1]])
    assert len(_diagonal_planes(view, 3)) < len(planes) / 2


def test_upright_views_keep_the_rows_as_the_degraded_direction() -> None:
    from MedSRLib.throughplane import random_view

    image = np.arange(15, dtype=np.float32).reshape(3, 5)
    rng = np.random.default_rng(0)
    upright = {random_view(image, rng, upright=True).tobytes() for _ in range(64)}
    free = {random_view(image, rng).tobytes() for _ in range(64)}
    assert len(upright) == 4 and len(free) == 8
    for _ in range(16):
        view = random_view(image, rng, upright=True)
        assert view.shape == (3, 5)
        assert sorted(map(tuple, np.sort(view, axis=1))) == sorted(map(tuple, image))  # rows stay rows


def test_diagonal_sources_add_upright_planes_that_batches_keep_upright() -> None:
    path = shared_path("isotropic-mr", "sct-spine", "t2.nii.gz")
    store = load_slices([{"kind": "volume", "path": str(path), "axes": [0], "modality": "MR", "diagonals": 2},
                         {"kind": "volume", "path": str(path), "axes": [1], "modality": "MR"}])
    straight = 52 + 55  # numpy (z, y, x) = (52, 55, 60)
    assert len(store.upright) == len(store.planes) > straight and sum(store.upright) == len(store.planes) - straight
    assert all(p.shape[0] == 52 for p, u in zip(store.planes, store.upright) if u)  # numpy axis 0 is the rows
    tp = {"factors": [3, 3], "thickness": [1.0, 1.0], "profile": "gaussian", "lr_rows": 4, "min_std": 0.0}
    only_diagonals = SliceStore([p for p, u in zip(store.planes, store.upright) if u],
                                [n for n, u in zip(store.names, store.upright) if u], [True] * sum(store.upright))
    item = ThroughPlaneBatches(only_diagonals, tp, batch=8, cols=20, seed=0)[0]
    for hr in item["hr"][:, 0].numpy():
        # each HR patch is a block of one diagonal plane, flipped at most: rows of the plane stay rows
        assert any(_holds_block(plane, hr) for plane in only_diagonals.planes)


def _holds_block(plane: np.ndarray, block: np.ndarray) -> bool:
    for view in (plane, plane[::-1], plane[:, ::-1], plane[::-1, ::-1]):
        if view.shape[1] < block.shape[1]:
            continue
        for y in range(view.shape[0] - block.shape[0] + 1):
            for x in range(view.shape[1] - block.shape[1] + 1):
                if np.array_equal(view[y : y + block.shape[0], x : x + block.shape[1]], block):
                    return True
    return False


def test_diagonals_config_errors(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    cfg["throughplane"]["sources"][0]["diagonals"] = -1
    with pytest.raises(ConfigError, match="diagonals"):
        validate(cfg)
    cfg = _config(tmp_path)
    cfg["throughplane"]["sources"].append({"kind": "image", "path": cfg["throughplane"]["sources"][0]["path"], "diagonals": 2})
    with pytest.raises(ConfigError, match="diagonals"):
        validate(cfg)


def _gt_rows(mm_gain: dict[float, float], *, views: int = 4) -> list[dict]:
    """Minimal ``medsr evaluate --through-plane --json`` rows: B-spline at 20 dB, the network at 20 + gain."""
    rows = []
    for mm, gain in mm_gain.items():
        scores = {"bspline3": {"psnr": 20.0, "ssim": 0.5}, "linear": {"psnr": 19.0, "ssim": 0.4},
                  "network": {"psnr": 20.0 + gain, "ssim": 0.6}}
        rows.append({"model": "tp-dridsr", "mm": mm, "factor": mm, "scores": scores, "gain_db": {"network": gain},
                     "views": views, "precision": "fp32"})
    return rows


def test_results_section_compares_each_variant_with_the_default_and_states_the_target(tmp_path) -> None:
    import json

    from training.throughplane import results_section

    default = {"seg3d-mr": 2.2, "stroke-t1": 1.7}  # 5 mm gains: mean +1.95, below the +2 dB target
    with_ensemble = {"seg3d-mr": 2.25, "stroke-t1": 1.80}  # mean +2.025
    for key, gain in default.items():
        (tmp_path / f"{key}.json").write_text(json.dumps(_gt_rows({5.0: gain})), encoding="utf-8")
        (tmp_path / f"{key}_ensemble.json").write_text(json.dumps(_gt_rows({5.0: with_ensemble[key]})), encoding="utf-8")
    (tmp_path / "seg3d-mr_views2.json").write_text(json.dumps(_gt_rows({5.0: 2.1}, views=2)), encoding="utf-8")
    text = results_section(tmp_path, machine="test")
    assert "mean gain over cubic B-spline +1.95 dB over 2 volume(s)" in text and "NOT reached (+1.95 dB)" in text
    ensemble = next(line for line in text.splitlines() if line.startswith("* `--ensemble` at 5 mm"))
    assert "+2.02 dB vs the default's +1.95 dB" in ensemble and "seg3d-mr +0.050" in ensemble and "stroke-t1 +0.100" in ensemble
    assert "(held out: seg3d-mr +0.050)" in ensemble  # seg3d-mr is a held-out volume
    views = next(line for line in text.splitlines() if line.startswith("* `--views 2` at 5 mm"))
    assert "seg3d-mr -0.100" in views and "stroke-t1" not in views  # only the volume that has a views2 result
    assert "with `--ensemble` (shipped weights, 4x network time) on the 2 volume(s) run with it: reached (+2.025 dB" in text
