"""Pictures of volumes (MedSRLib.panel.volume_panel, `medsr run --panel`): radiological orientation
checked against the physical (LPS) position of the displayed pixels on real data in several voxel
orders, labelled CT windows, crops on anatomy (not the CT table), and the reformat across the slice
axis. Models are bicubic/nearest (no weights needed)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import shared_path
from PIL import Image

from MedSRLib.cli import main
from MedSRLib.errors import OptionError
from MedSRLib.examples import example_path
from MedSRLib.geometry import plane_geometry, radiological_view, resolve_slice_axis
from MedSRLib.io import read_volume
from MedSRLib.panel import (
    CT_WINDOWS,
    _orient,
    _to_screen,
    anatomy_mask,
    auto_crop,
    display_window,
    volume_panel,
)
from MedSRLib.pipeline import super_resolve
from MedSRLib.volume import Volume


def _display_lps(volume: Volume, axis: int, index: int, row: int, col: int) -> np.ndarray:
    """LPS (mm) of the voxel shown at display pixel (row, col) of slice ``index`` along numpy ``axis``."""
    plane = plane_geometry(volume, axis)
    view = radiological_view(plane)
    shown = _orient(np.take(volume.array, index, axis=axis), view)
    r, c = _to_screen(view, row, col, shown.shape)
    zyx = [0, 0, 0]
    zyx[axis], zyx[plane.row_axis], zyx[plane.col_axis] = index, r, c
    return volume.index_to_physical(np.array(zyx[::-1], dtype=np.float64))


def _check_radiological(volume: Volume, axis: int) -> str:
    """Screen right/down point where radiological convention says, in LPS (returns the plane)."""
    index = volume.shape[axis] // 2
    view = radiological_view(plane_geometry(volume, axis))
    h, w = _orient(np.take(volume.array, index, axis=axis), view).shape
    top_left = _display_lps(volume, axis, index, 0, 0)
    right = _display_lps(volume, axis, index, 0, w - 1) - top_left
    down = _display_lps(volume, axis, index, h - 1, 0) - top_left
    if view.plane == "axial":  # patient's left (+x) on the right, anterior (-y) up
        assert right[0] > 0.9 * np.linalg.norm(right) and down[1] > 0.9 * np.linalg.norm(down)
    elif view.plane == "coronal":  # left on the right, superior (+z) up
        assert right[0] > 0.9 * np.linalg.norm(right) and down[2] < -0.9 * np.linalg.norm(down)
    else:  # sagittal: anterior on the left (posterior +y on the right), superior up
        assert right[1] > 0.9 * np.linalg.norm(right) and down[2] < -0.9 * np.linalg.norm(down)
    return view.plane


def test_examples_show_in_radiological_orientation():
    ct = read_volume(example_path("ct-abdomen"))
    assert _check_radiological(ct, resolve_slice_axis(ct)) == "axial"
    neck = read_volume(example_path("mr-neck"))  # LAS, oblique: stored posterior-up
    assert _check_radiological(neck, resolve_slice_axis(neck)) == "axial"
    for axis in (1, 2):  # the reformat planes too
        _check_radiological(ct, axis)


def test_one_sagittal_slice_shows_the_same_in_every_voxel_order():
    """The same real acquisition as DICOM (PIR) and as RAS/LPS/LAS NIfTI copies: the displayed middle
    sagittal slice is identical, anterior on the left and superior up."""
    shown = []
    for name in ("dcm_qa_decubitus_HFS_t1_fl2d_sag", "t1_fl2d_sag_RAS.nii.gz", "t1_fl2d_sag_LPS.nii.gz",
                 "t1_fl2d_sag_LAS.nii.gz"):
        volume = read_volume(shared_path("mr-volumes", name))
        axis = resolve_slice_axis(volume)
        assert _check_radiological(volume, axis) == "sagittal"
        view = radiological_view(plane_geometry(volume, axis))
        shown.append(_orient(np.take(volume.array, volume.shape[axis] // 2, axis=axis), view).astype(np.int32))
    for other in shown[1:]:
        np.testing.assert_array_equal(other, shown[0])


def test_display_windows_are_labelled_and_not_the_full_range():
    ct = read_volume(example_path("ct-abdomen"))
    soft = display_window(ct.array, "CT")
    assert soft.label == "CT soft-tissue window (L 40 / W 400 HU)"
    np.testing.assert_allclose(soft.apply(np.array([-160.0, 40.0, 240.0, -1000.0, 1500.0])), [0, 0.5, 1, 0, 1])
    lung = display_window(ct.array, "CT", "lung")
    assert "lung" in lung.label and (lung.low, lung.high) == (-1350.0, 150.0)
    with pytest.raises(OptionError, match="unknown CT window"):
        display_window(ct.array, "CT", "liver")
    neck = read_volume(example_path("mr-neck"))
    mr = display_window(neck.array, "MR")
    assert mr.label.startswith("MR window p0.5-p99.5") and 0 <= mr.low < mr.high <= 255
    with pytest.raises(OptionError):
        display_window(neck.array, "MR", "lung")
    assert set(CT_WINDOWS) >= {"soft-tissue", "lung"}


def test_ct_crop_lands_on_the_patient_not_the_table():
    """On the CT example the crop lies inside the patient (anatomy mask); the former crop (most
    gradient of the full HU range, no mask) reached below the patient, onto the table."""
    ct = read_volume(example_path("ct-abdomen"))
    view = radiological_view(plane_geometry(ct, 0))
    for k in (0, 6, 11):
        hu = _orient(ct.array[k], view).astype(np.float64)
        mask = anatomy_mask(hu, "CT")
        rows = np.nonzero(mask.any(axis=1))[0]
        below = hu[rows.max() + 20 :]
        assert np.any(below > -300), "the table lies below the patient in this slice"
        y, x, size = auto_crop(display_window(ct.array, "CT").apply(hu), scale=1, weight=mask)
        assert mask[y + size // 2, x + size // 2]
        assert rows.min() <= y and y + size <= rows.max() + 1
        old_y, _, old_size = auto_crop((hu + 1024.0) / 4095.0, scale=1)
        assert old_y + old_size > rows.max() + 20


def test_volume_panel_rows_and_reformat(tmp_path):
    ct = read_volume(example_path("ct-abdomen"))
    results = {m: super_resolve(ct, model=m, scale=2) for m in ("bicubic", "nearest")}
    panel, meta = volume_panel(ct, results, name="ct")
    assert meta["plane"] == "axial" and meta["reformat_plane"] == "coronal"
    assert meta["window"] == "CT soft-tissue window (L 40 / W 400 HU)"
    assert meta["columns"] == ["ct (x2 pixels)", "bicubic", "nearest"]
    assert panel.width == 6 + 3 * (256 + 6)
    pixels = np.asarray(panel)
    assert (pixels == (255, 80, 40)).all(axis=-1).any()  # the crop boxes
    with pytest.raises(OptionError, match="outside"):
        volume_panel(ct, results, slice_index=12)


def test_cli_run_panel_says_where_it_was_written(tmp_path, capsys):
    out, png = tmp_path / "ct.nii.gz", tmp_path / "ct.png"
    code = main(["run", str(example_path("ct-abdomen")), str(out), "--scale", "2", "--model", "nearest", "--panel",
                 str(png), "--window", "lung", "--quiet"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert f"wrote panel {png.resolve()}" in captured.out
    with Image.open(png) as image:
        meta = json.loads(image.text["medsr-panel"])
    assert meta["window"].startswith("CT lung window") and meta["columns"][1:] == ["bicubic", "nearest"]
    code = main(["run", str(example_path("ct-abdomen")), str(tmp_path / "b.nii.gz"), "--scale", "2", "--model",
                 "nearest", "--panel", str(tmp_path / "b.png"), "--window", "liver"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("medsr: error: unknown CT window 'liver'") and err.count("\n") == 1
    assert not (tmp_path / "b.nii.gz").exists() and not (tmp_path / "b.png").exists()


def test_evaluate_panel_of_a_volume_is_windowed_and_radiological(tmp_path):
    """`medsr evaluate VOLUME --panel`: slices windowed (labelled), shown radiologically, scores as before."""
    from MedSRLib.evaluate import evaluate
    from MedSRLib.panel import panel_for_path

    source = example_path("ct-abdomen")
    out = tmp_path / "ct_eval.png"
    scores = panel_for_path(source, out, model="nearest", scale=2)
    with Image.open(out) as png:
        meta = json.loads(png.text["medsr-panel"])["images"][0]
    assert meta["window"] == "CT soft-tissue window (L 40 / W 400 HU)" and meta["plane"] == "axial"
    row = evaluate(source, model="nearest", scale=2).per_image[6]  # the middle one of 12 slices
    assert list(scores) == [row["image"]] and scores[row["image"]]["nearest"]["psnr"] == pytest.approx(row["psnr"], abs=1e-4)
