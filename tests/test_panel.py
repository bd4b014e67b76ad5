"""The comparison picture (MedSRLib.panel): layout, scores equal to evaluate's, crop inside the image.

Only the weight-free ``nearest`` and ``bicubic`` models are used, so this runs on a fresh clone.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import shared_path
from PIL import Image

from MedSRLib.errors import OptionError, OutputPathError
from MedSRLib.intensity import image_to_unit
from MedSRLib.evaluate import evaluate
from MedSRLib.io import list_images_2d, read_image_2d
from MedSRLib.metrics import evaluate_pair
from MedSRLib.panel import (
    BOX_COLOUR,
    GAP,
    TILE,
    PanelData,
    auto_crop,
    caption_lines,
    check_crop,
    comparison_panel,
    panel_for_path,
    render_panel,
    save_comparison_panel,
    super_resolve_and_score,
)
from MedSRLib.resize import degrade, imresize, modcrop
from MedSRLib.volume import Volume

MODELS = ["nearest", "bicubic"]


def _alzheimer_folder():
    return shared_path("alzheimer-mri", "test", "ModerateDemented")


def _alzheimer_image() -> np.ndarray:
    return image_to_unit(read_image_2d(list_images_2d(_alzheimer_folder())[0]))


def test_columns_are_lr_models_hr_in_order():
    """Four columns for two models, each showing its own image (distinct constant grey levels)."""
    levels = {"lr": 0.2, "nearest": 0.4, "bicubic": 0.6, "hr": 0.8}
    hr = np.full((96, 80), levels["hr"])
    data = PanelData(
        hr=hr,
        lr=np.full((48, 40), levels["lr"], dtype=np.float32),
        scale=2,
        convention="basicsr",
        outputs={m: np.full_like(hr, levels[m]) for m in MODELS},
        scores={m: {"psnr": 30.0, "ssim": 0.9} for m in MODELS},
    )
    panel = render_panel(data, crop=(10, 20, 32))
    assert panel.width == GAP + 4 * (TILE + GAP)
    pixels = np.asarray(panel)
    grey = pixels[..., 0]
    is_grey = (pixels[..., 0] == pixels[..., 1]) & (pixels[..., 1] == pixels[..., 2])
    for k, key in enumerate(["lr", "nearest", "bicubic", "hr"]):
        value = round(levels[key] * 255)
        cols = np.nonzero(is_grey & (grey == value))[1]
        left = GAP + k * (TILE + GAP)
        inside = (cols >= left) & (cols < left + TILE)
        # the whole image (80x96, shown x2) and the zoomed 32 px crop (x8), less the crop boxes
        assert inside.sum() > 0.9 * (160 * 192 + 256 * 256 - 4 * 4 * 256)
        assert inside.mean() > 0.99, f"column {k} ({key}) is not where its image is"


def test_real_panel_size_and_crop_box_inside():
    hr = _alzheimer_image()
    panel = comparison_panel(hr, scale=2, models=MODELS, title="test")
    assert panel.mode == "RGB"
    assert panel.width == GAP + 4 * (TILE + GAP)
    assert panel.height > hr.shape[0] + TILE  # whole image row + zoomed crop row + captions
    boxes = np.all(np.asarray(panel) == BOX_COLOUR, axis=-1)
    assert boxes.any()
    # every box pixel is inside one of the four columns (box on the whole tile, frame of the zoom)
    cols = np.nonzero(boxes)[1]
    assert all(any(GAP + k * (TILE + GAP) <= c < GAP + k * (TILE + GAP) + TILE for k in range(4)) for c in np.unique(cols))


def test_scores_are_evaluate_pair_on_project_degradation():
    hr = _alzheimer_image()
    data = super_resolve_and_score(hr, scale=2, models=MODELS, convention="srda")
    reference = modcrop(hr, 2)
    lr = degrade(reference, scale=2).astype(np.float32)  # the networks' input dtype, as in evaluate
    bicubic = evaluate_pair(np.clip(imresize(lr, scale=2), 0, 1), reference, scale=2, convention="srda")
    nearest = evaluate_pair(np.clip(np.kron(lr, np.ones((2, 2))), 0, 1), reference, scale=2, convention="srda")
    assert data.scores["bicubic"]["psnr"] == pytest.approx(bicubic["psnr"], abs=1e-4)
    assert data.scores["bicubic"]["ssim"] == pytest.approx(bicubic["ssim"], abs=1e-5)
    assert data.scores["nearest"]["psnr"] == pytest.approx(nearest["psnr"], abs=1e-4)
    assert data.scores["bicubic"]["psnr"] > data.scores["nearest"]["psnr"] + 1.0
    lines = caption_lines("bicubic", data.scores["bicubic"], data.convention)
    assert f"{bicubic['psnr']:.2f} dB" in lines[1] and "srda" in lines[1]
    assert f"{bicubic['ssim']:.4f}" in lines[2]


def test_panel_for_folder_matches_medsr_evaluate(tmp_path):
    """The panel of a folder shows its first image with the scores ``medsr evaluate`` gives it."""
    folder = _alzheimer_folder()
    out = tmp_path / "panel.png"
    scores = panel_for_path(folder, out, model="nearest", scale=2, convention="basicsr")
    row = evaluate(folder, model="nearest", scale=2, convention="basicsr", limit=1).per_image[0]
    assert list(scores) == [row["image"]]
    got = scores[row["image"]]
    assert got["nearest"]["psnr"] == pytest.approx(row["psnr"], abs=1e-4)
    assert got["bicubic"]["psnr"] == pytest.approx(row["bicubic_psnr"], abs=1e-4)
    assert got["bicubic"]["ssim"] == pytest.approx(row["bicubic_ssim"], abs=1e-5)
    with Image.open(out) as png:
        meta = json.loads(png.text["medsr-panel"])
        assert png.width == GAP + 4 * (TILE + GAP)
    assert meta["images"][0]["scores"]["bicubic"]["psnr"] == pytest.approx(row["bicubic_psnr"], abs=1e-4)


def test_save_comparison_panel_writes_png_with_scores(tmp_path):
    image = list_images_2d(_alzheimer_folder())[0]
    out = tmp_path / "one.png"
    scores = save_comparison_panel(image, out, scale=2, models=["bicubic"], crop=(40, 40, 64))
    with Image.open(out) as png:
        meta = json.loads(png.text["medsr-panel"])
        assert png.width == GAP + 3 * (TILE + GAP)  # LR, bicubic, HR
    assert meta["crop"] == [40, 40, 64] and meta["scores"] == json.loads(json.dumps(scores))
    with pytest.raises(OutputPathError, match="PNG"):
        save_comparison_panel(image, tmp_path / "one.jpg", scale=2, models=["bicubic"])


def test_panel_for_volume_uses_middle_slices(tmp_path):
    from MedSRLib.io import write_volume

    rng = np.random.default_rng(0)
    array = (rng.normal(0, 200, (7, 48, 40)) - 500).astype(np.int16)
    path = write_volume(Volume(array, (0.8, 0.8, 3.0), (0, 0, 0), np.eye(3), modality="CT"), tmp_path / "ct.nii.gz")
    scores = panel_for_path(path, tmp_path / "vol.png", model="bicubic", scale=2, limit=3)
    assert list(scores) == ["slice 2", "slice 3", "slice 4"]
    assert all(list(s) == ["bicubic"] for s in scores.values())


def test_auto_crop_is_inside_and_finds_texture():
    rng = np.random.default_rng(1)
    for shape, scale in [((101, 77), 3), ((64, 200), 4), ((30, 30), 2)]:
        image = np.zeros(shape)
        image[-12:, -12:] = rng.random((12, 12))  # texture in the bottom-right corner
        y, x, size = auto_crop(image, scale=scale)
        assert y % scale == 0 and x % scale == 0 and size % scale == 0 and size >= scale
        assert 0 <= y and y + size <= shape[0] and 0 <= x and x + size <= shape[1]
        assert y + size > shape[0] - 12 and x + size > shape[1] - 12


def test_check_crop_rejects_outside_and_snaps_to_scale():
    assert check_crop((5, 7, 33), scale=4, shape=(100, 100)) == (4, 4, 32)
    for bad in [(90, 0, 32), (0, -1, 16), (0, 0, 2), (0, 0)]:
        with pytest.raises(OptionError):
            check_crop(bad, scale=4, shape=(100, 100))


def test_through_plane_panel_stacks_one_render_panel_row_per_reformat(tmp_path) -> None:
    """The README's through-plane figure: the reformats that contain the thick axis (axial thick slices:
    coronal and sagittal), columns thick input, each method, ground truth, scores in the captions."""
    from MedSRLib.panel import save_through_plane_panel, through_plane_panel

    rng = np.random.default_rng(0)
    gt = np.zeros((40, 48, 44), np.float32)
    gt[5:35, 8:40, 6:38] = 0.6 + 0.2 * rng.random((30, 32, 32), dtype=np.float32)
    volume = Volume(gt * 1000.0, (1.0, 1.0, 1.0), (0, 0, 0), np.eye(3), modality="MR")
    thick = np.repeat(gt[::5], 5, axis=0)
    outputs = {"cubic B-spline": gt * 0.9, "MedSR": gt}
    scores = {"cubic B-spline": {"psnr": 30.0, "ssim": 0.9}, "MedSR": {"psnr": 33.0, "ssim": 0.95}}
    panel, meta = through_plane_panel(volume, gt, thick, outputs, scores, axis=0, label="5 mm slices")
    assert [r["plane"] for r in meta["reformats"]] == ["coronal", "sagittal"]
    assert panel.width == 6 + 4 * (256 + 6)  # thick input, two methods, ground truth
    out = save_through_plane_panel(tmp_path / "tp.png", volume, gt, thick, outputs, scores, axis=0, label="5 mm slices")
    assert json.loads(Image.open(out).text["medsr-panel"])["scores"]["MedSR"]["psnr"] == 33.0
