"""Through-plane runs of the pipeline and the CLI (issue 20): plane choice, the one grid plan on real
orientations and a thick-slice DICOM series, non-integer factors, slice thickness, consistency, bad
input. Networks are untrained (``allow_untrained`` or a tiny weights file written here): these tests
check integration and geometry, not learned quality. Real volumes are cropped from index 0 (the
origin stays the file's) to keep the runs short."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from MedSRLib.errors import GeometryError, InputSizeError, OptionError, ScaleError, UnsupportedImageError, WeightsError
from MedSRLib.geometry import field_of_view, plan_output_grid
from MedSRLib.io import read_volume
from MedSRLib.models import default_model
from MedSRLib.pipeline import resolve_plane, super_resolve
from MedSRLib.volume import Volume

from conftest import shared_path


def _crop(volume: Volume, size: int = 40) -> Volume:
    """The first ``size`` voxels of every in-plane axis (longer than 48; the thick axes here have at
    most 35 slices) -- index 0 kept: same origin."""
    index = tuple(slice(0, size) if n > 48 else slice(None) for n in volume.shape)
    return volume.with_array(np.ascontiguousarray(volume.array[index]))


def _real(*parts: str, size: int = 40) -> Volume:
    return _crop(read_volume(shared_path(*parts)), size)


def _check_grid(volume: Volume, result: Volume, axis: int, factor: float) -> None:
    """Slice spacing = spacing / f, the rest of the grid unchanged, origin moved by (1/f - 1)/2 x the slice
    spacing along the slice direction, field of view and dtype kept."""
    n, n_out = volume.shape[axis], result.shape[axis]
    assert n_out == int(np.floor(n * factor + 0.5))
    f = n_out / n
    itk = 2 - axis
    spacing_in, spacing_out = np.asarray(volume.spacing), np.asarray(result.spacing)
    np.testing.assert_allclose(spacing_out[itk], spacing_in[itk] / f, rtol=1e-9)
    np.testing.assert_array_equal(np.delete(spacing_out, itk), np.delete(spacing_in, itk))
    assert [m for a, m in enumerate(result.shape) if a != axis] == [m for a, m in enumerate(volume.shape) if a != axis]
    np.testing.assert_array_equal(result.direction, volume.direction)
    shift = np.asarray(volume.direction)[:, itk] * (1.0 / f - 1.0) / 2.0 * spacing_in[itk]
    np.testing.assert_allclose(np.asarray(result.origin), np.asarray(volume.origin) + shift, atol=1e-6)
    for a, b in zip(field_of_view(volume), field_of_view(result)):
        np.testing.assert_allclose(a, b, atol=1e-6)
    assert result.array.dtype == volume.array.dtype
    run = result.metadata["medsr"]
    assert run["plane"] == "through" and run["slice_axis"] == axis
    plan = plan_output_grid(volume, [f if a == axis else 1.0 for a in range(3)]).to_json()
    assert run["grid"]["output"] == plan["output"] and run["grid"]["factors_zyx"] == plan["factors_zyx"]


@pytest.mark.parametrize("name", ["RAS", "LPS", "LAS"])
def test_geometry_on_real_orientations_of_the_thick_mr(name: str) -> None:
    volume = _real("mr-volumes", f"t1_fl2d_sag_{name}.nii.gz")  # 40 x 40 x 35 slices of 4.8 mm
    assert resolve_plane(volume) == "through"  # auto: 4.8 mm >= 2 x 1.016 mm
    result = super_resolve(volume, allow_untrained=True, precision="fp32")
    axis = 2
    _check_grid(volume, result, axis, 4.8 / 1.015625)
    tp = result.metadata["medsr"]["through_plane"]
    assert tp["thickness_assumed"] and tp["thickness_mm"] == pytest.approx(4.8) and tp["network_factor"] == 5
    assert result.metadata["medsr"]["model"] == "tp-dridsr"


@pytest.fixture(scope="module")
def zero_tail_weights(tmp_path_factory) -> Path:
    """A tp-dridsr weights file of the freshly built network (zero tails: exactly the cubic B-spline), so
    these tests do not depend on the shipped trained weights."""
    from MedSRLib.models import get_model
    from MedSRLib.models.weights import save_weights

    torch.manual_seed(0)
    path, _ = save_weights(get_model("tp-dridsr").build(8), tmp_path_factory.mktemp("w0") / "tp-dridsr.safetensors",
                           card={"name": "tp-dridsr", "scale": 8}, half=False)
    return path


def test_ras_and_lps_copies_give_the_same_voxels_flipped(zero_tail_weights) -> None:
    """Zero-tail networks are the cubic B-spline, which commutes with flips: the LPS copy's
    result is the RAS copy's flipped exactly as the inputs are (geometry does not depend on the order)."""
    ras = read_volume(shared_path("mr-volumes", "t1_fl2d_sag_RAS.nii.gz"))
    lps = read_volume(shared_path("mr-volumes", "t1_fl2d_sag_LPS.nii.gz"))
    assert np.array_equal(lps.array, ras.array[:, ::-1, ::-1])  # ITK i (the 4.8 mm axis) and j reversed
    a = super_resolve(ras.with_array(ras.array[:24, :24].copy()), weights=zero_tail_weights, precision="fp32",
                      target_spacing=2.4, output_dtype="float32")
    b = super_resolve(lps.with_array(lps.array[:24, -24:].copy()), weights=zero_tail_weights, precision="fp32",
                      target_spacing=2.4, output_dtype="float32")
    np.testing.assert_allclose(b.array, a.array[:, ::-1, ::-1], atol=1e-3)
    for x, y in zip(field_of_view(b), field_of_view(lps.with_array(lps.array[:24, -24:]))):
        np.testing.assert_allclose(x, y, atol=1e-6)


def test_geometry_on_a_real_oblique_volume() -> None:
    volume = read_volume(shared_path("mr-volumes", "dipy", "aniso_vox.nii.gz"))  # 24 x 58 x 58, 4 x 4 x 5 mm, ~35 deg
    assert resolve_plane(volume) == "in"  # 5 mm < 2 x 4 mm: auto stays in-plane
    result = super_resolve(volume, plane="through", target_spacing=2.0, allow_untrained=True, precision="fp32")
    _check_grid(volume, result, 0, 2.5)


def test_geometry_and_thickness_of_a_thick_slice_dicom_series() -> None:
    """Real sagittal MR DICOM: 35 slices 4.8 mm apart, SliceThickness 4 mm (a 0.8 mm gap)."""
    full = read_volume(shared_path("mr-volumes", "dcm_qa_decubitus_HFS_t1_fl2d_sag"))
    assert full.metadata["slice_thickness_mm"] == 4.0 and full.metadata["spacing_between_slices_mm"] == pytest.approx(4.8)
    volume = _crop(full)
    axis = 0  # (35, 40, 40) array, 4.8 mm along numpy z
    result = super_resolve(volume, allow_untrained=True, precision="fp32", target_spacing=1.2)
    _check_grid(volume, result, axis, 4.0)
    tp = result.metadata["medsr"]["through_plane"]
    assert tp["thickness_mm"] == 4.0 and tp["thickness_source"] == "DICOM SliceThickness"
    assert not tp["thickness_assumed"] and tp["gap_mm"] == pytest.approx(0.8)
    assert tp["finish"] is None and tp["network_factor"] == 4


def test_ct_dicom_uses_the_ct_network_and_restores_padding_at_a_non_integer_factor() -> None:
    ct = _crop(read_volume(shared_path("totalseg-ct", "example_ct_dicom")), 48)  # 20 x 48 x 48, 2 mm, 3 mm thick
    assert default_model("CT", plane="through").name == "tp-dridsr-ct" and default_model("MR", plane="through").name == "tp-dridsr"
    result = super_resolve(ct, allow_untrained=True, precision="fp32")
    _check_grid(ct, result, 0, 2.0 / 0.9765625)
    run = result.metadata["medsr"]
    assert run["model"] == "tp-dridsr-ct" and run["modality"] == "CT"
    assert run["through_plane"]["thickness_mm"] == 3.0 and run["through_plane"]["finish"]
    assert result.array.min() >= -1024


def test_non_integer_factor_runs_the_next_integer_and_finishes_with_the_bspline() -> None:
    volume = _real("mr-volumes", "t1_fl2d_sag_RAS.nii.gz", size=24)
    result = super_resolve(volume, plane="through", target_spacing=1.1, allow_untrained=True, precision="fp32")
    _check_grid(volume, result, 2, 4.8 / 1.1)  # 4.36x: 35 -> 153 slices
    tp = result.metadata["medsr"]["through_plane"]
    assert tp["network_factor"] == 5 and "cubic B-spline" in tp["finish"] and tp["factor"] == pytest.approx(153 / 35)


def test_in_plane_then_through_plane_is_one_plan() -> None:
    volume = _real("mr-volumes", "t1_fl2d_sag_RAS.nii.gz", size=20)
    result = super_resolve(volume, plane="both", scale=2, allow_untrained=True, precision="fp32", target_spacing=2.4)
    run = result.metadata["medsr"]
    assert run["plane"] == "both" and [s["plane"] for s in run["steps"]] == ["in", "through"]
    assert result.shape == (40, 40, 70) and result.array.dtype == volume.array.dtype
    plan = plan_output_grid(volume, [2.0, 2.0, 2.0])
    assert run["grid"] == plan.to_json()
    np.testing.assert_allclose(result.origin, plan.output.origin, atol=1e-9)


def test_an_explicit_scale_keeps_the_in_plane_meaning() -> None:
    volume = _real("mr-volumes", "t1_fl2d_sag_RAS.nii.gz", size=20)
    assert resolve_plane(volume, scale=2) == "in" and resolve_plane(volume, model="mdrn") == "in"
    assert resolve_plane(volume, model="tp-mdrn") == "through" and resolve_plane(volume, plane="in") == "in"
    result = super_resolve(volume, scale=2)
    assert result.shape == (40, 40, 35) and result.metadata["medsr"]["plane"] == "in"
    iso = Volume(np.zeros((8, 8, 8), np.int16), (1.0, 1.0, 1.2), (0.0, 0.0, 0.0), np.eye(3))
    assert resolve_plane(iso) == "in"


def test_adaptation_is_recorded_and_repeatable(tiny_weights) -> None:
    volume = _real("mr-volumes", "t1_fl2d_sag_RAS.nii.gz", size=32)
    kw = dict(plane="through", target_spacing=2.4, weights=tiny_weights, precision="fp32", adapt_iterations=2)
    a, b = super_resolve(volume, **kw), super_resolve(volume, **kw)
    adapt = a.metadata["medsr"]["through_plane"]["adaptation"]
    assert adapt["iterations"] == 2 and adapt["seed"] == 0 and "heldout_gain_db" in adapt
    assert "do not measure the through-plane result" in adapt["caution"]  # the held-back score is no promise
    assert a.metadata["medsr"]["adapted"] and np.array_equal(a.array, b.array)


# -------------------------------------------------------------------------------------------------
# bad input: a specific exception with a one-line message, before anything is written


def _mr(shape=(40, 40, 35), spacing=(4.8, 1.0, 1.0), **metadata) -> Volume:
    array = np.random.default_rng(0).integers(0, 500, size=shape).astype(np.int16)
    return Volume(array, spacing, (0.0, 0.0, 0.0), np.eye(3), modality="MR", metadata=metadata)


@pytest.mark.parametrize("volume, kw, error, words", [
    (_mr(), dict(target_spacing=4.5), ScaleError, "nothing to do"),
    (_mr(), dict(target_spacing=0.5), ScaleError, "exceeds the x8"),
    (_mr(shape=(40, 40, 3)), {}, InputSizeError, "at least 4 slices"),
    (_mr(shape=(1, 40, 40), spacing=(1.0, 1.0, 5.0)), dict(plane="through"), UnsupportedImageError, "2D image"),
    (_mr(image_2d=True, shape=(40, 40, 5)), {}, UnsupportedImageError, "2D image"),
    (_mr(slice_thickness_mm=30.0), {}, GeometryError, "contradicts the slice spacing"),
    (_mr(), dict(thickness=-1.0), GeometryError, "positive number"),
    (_mr(format="dicom", spacing_between_slices_mm=3.0), {}, GeometryError, "SpacingBetweenSlices"),
    (_mr(), dict(model="mdrn", plane="through"), OptionError, "in-plane network"),
    (_mr(), dict(scale=2, target_spacing=1.0), OptionError, "through-plane runs"),
])
def test_bad_input_is_refused_with_one_line(volume, kw, error, words) -> None:
    with pytest.raises(error) as info:
        super_resolve(volume, allow_untrained=True, **kw)
    assert words in str(info.value) and "\n" not in str(info.value)


def test_missing_weights_are_a_one_line_error_never_a_fallback(tmp_path, monkeypatch) -> None:
    import MedSRLib.models.base as base

    monkeypatch.setattr(base, "WEIGHTS_DIR", tmp_path)  # an install without through-plane weights
    assert not default_model("MR", plane="through").has_weights(5)
    with pytest.raises(WeightsError, match="no through-plane weights for MR") as refused:
        super_resolve(_mr())
    assert "\n" not in str(refused.value)


# -------------------------------------------------------------------------------------------------
# CLI


@pytest.fixture(scope="module")
def small_thick_mr(tmp_path_factory) -> Path:
    from MedSRLib.io import write_volume

    path = tmp_path_factory.mktemp("in") / "thick.nii.gz"
    write_volume(_real("mr-volumes", "t1_fl2d_sag_RAS.nii.gz", size=32), path)
    return path


def test_cli_run_json_and_text_say_plane_axis_factor_model_thickness(tiny_weights, small_thick_mr, tmp_path, capsys) -> None:
    from MedSRLib.cli import main

    out = tmp_path / "sr.nii.gz"
    assert main(["run", str(small_thick_mr), str(out), "--weights", str(tiny_weights), "--json", "--check",
                 "--precision", "fp32"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["plane"] == "through" and summary["model"] == "tp-dridsr" and summary["axis"] == 2
    assert summary["factor"] == pytest.approx(4.8 / 1.015625, rel=0.01)
    tp = summary["through_plane"]
    assert tp["network_factor"] == 5 and tp["thickness_assumed"] and tp["thickness_mm"] == pytest.approx(4.8)
    projection = tp["projection"]  # back-projected onto the input; the network's own residual kept
    assert projection["steps"] == 3 and projection["residual_after"] < projection["residual_before"]
    assert projection["bspline_residual"] > 0 and isinstance(projection["suspect"], bool)
    assert summary["consistency"]["plane"] == "through" and "slice profile" in summary["consistency"]["degradation"]
    assert read_volume(out).shape == tuple(summary["output_shape_zyx"])
    record = json.loads((tmp_path / "sr.medsr.json").read_text())  # the provenance sidecar
    assert record["output_grid"]["plane"] == "through" and record["through_plane"]["network_factor"] == 5
    out2 = tmp_path / "sr2.nii.gz"
    assert main(["run", str(small_thick_mr), str(out2), "--weights", str(tiny_weights), "--target-spacing", "1.6",
                 "--quiet", "--precision", "fp32"]) == 0
    text = capsys.readouterr().out
    assert "through-plane tp-dridsr along array axis 2, factor 3" in text
    assert "slice thickness 4.8 mm (assumed = slice spacing)" in text
    assert "projected onto the input (3 back-projection steps)" in text


def test_cli_check_infers_a_through_plane_pair(tiny_weights, small_thick_mr, tmp_path, capsys) -> None:
    from MedSRLib.cli import main

    out = tmp_path / "sr.nii.gz"
    assert main(["run", str(small_thick_mr), str(out), "--weights", str(tiny_weights), "--quiet", "--target-spacing", "2.4"]) == 0
    capsys.readouterr()
    assert main(["check", str(small_thick_mr), str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["plane"] == "through" and report["factor"] == pytest.approx(2.0) and report["psnr"] > 15
    assert "bspline_reference" in report


@pytest.mark.parametrize("args, words", [
    (["--target-spacing", "4.6"], "nothing to do"),
    (["--scale", "2", "--adapt", "5"], "apply to through-plane runs"),
    (["--plane", "through", "--scale", "2"], "--scale is the in-plane factor"),
])
def test_cli_bad_input_writes_nothing(args, words, tiny_weights, small_thick_mr, tmp_path, capsys) -> None:
    from MedSRLib.cli import main

    out = tmp_path / "sr.nii.gz"
    assert main(["run", str(small_thick_mr), str(out), "--weights", str(tiny_weights), "--quiet", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("medsr: error:") and words in err and "\n" not in err
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_cli_uneven_dicom_slices_are_refused(tmp_path, capsys) -> None:
    from MedSRLib.cli import main

    series = shared_path("mr-volumes", "dcm_qa_decubitus_HFS_t1_fl2d_sag")
    copy = tmp_path / "series"
    copy.mkdir()
    files = sorted(series.glob("*.dcm"))
    for f in files[:10] + files[11:]:  # one slice missing: positions no longer evenly spaced
        shutil.copy(f, copy / f.name)
    out = tmp_path / "sr.nii.gz"
    assert main(["run", str(copy), str(out), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert "not evenly spaced" in err and "\n" not in err and not out.exists()


def test_cli_evaluate_through_plane_scores_network_and_interpolations(tiny_weights, capsys) -> None:
    from MedSRLib.cli import main

    volume = shared_path("isotropic-mr", "sct-spine", "t2.nii.gz")
    assert main(["evaluate", str(volume), "--through-plane", "--mm", "4", "--weights", str(tiny_weights), "--json",
                 "--precision", "fp32"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["mm"] == 4 and row["factor"] == pytest.approx(4.0) and row["model"] == "tp-dridsr"
    assert set(row["scores"]) == {"bspline3", "linear", "network"} and 0 < row["mask_fraction"] < 1
    assert row["scores"]["bspline3"]["psnr"] > row["scores"]["linear"]["psnr"]
    assert row["gain_db"]["network"] == pytest.approx(row["scores"]["network"]["psnr"] - row["scores"]["bspline3"]["psnr"])
    assert main(["evaluate", str(volume), "--through-plane", "--mm", "0.5", "--weights", str(tiny_weights)]) == 2
    assert "--mm must give" in capsys.readouterr().err


def test_a_through_plane_predictor_is_reused_across_volumes_and_factors(tiny_weights) -> None:
    from MedSRLib.engine import EngineOptions, Predictor

    predictor = Predictor("tp-dridsr", 8, weights=tiny_weights, options=EngineOptions(precision="fp32"))
    volume = _real("mr-volumes", "t1_fl2d_sag_RAS.nii.gz", size=16)
    a = super_resolve(volume, predictor=predictor, target_spacing=2.4)  # plane from the predictor: through
    b = super_resolve(volume, predictor=predictor, target_spacing=1.6)
    assert a.shape[2] == 70 and b.shape[2] == 105 and a.metadata["medsr"]["scale"] == 2 and predictor.scale == 3
    same = super_resolve(volume, weights=tiny_weights, precision="fp32", target_spacing=2.4)
    assert np.array_equal(a.array, same.array)
    with pytest.raises(OptionError, match="through-plane network"):
        super_resolve(volume, predictor=predictor, plane="in")


def test_ct_padding_is_restored_on_the_through_plane_grid() -> None:
    """NetworkIntensity's padding rule on a non-integer through-plane grid: each output voxel whose
    nearest input voxel is CT padding keeps the padding value (real CT, a padded corner added)."""
    ct = _crop(read_volume(shared_path("totalseg-ct", "example_ct_dicom")), 32)
    array = ct.array.copy()
    array[:, :8, :8] = -3024
    volume = ct.with_array(array)
    result = super_resolve(volume, allow_untrained=True, precision="fp32")  # 20 x 2 mm -> 41 x 0.976 mm
    assert result.shape[0] == 41
    assert np.all(result.array[:, :8, :8] == -3024) and result.array[:, 8:, 8:].min() >= -1024


def test_the_flip_ensemble_keeps_the_coarse_direction(zero_tail_weights) -> None:
    """One-direction self-ensemble averages the 4 flips (no quarter turns): on a zero-tail network (the
    cubic B-spline, which commutes with flips) it equals the single pass."""
    volume = _real("mr-volumes", "t1_fl2d_sag_RAS.nii.gz", size=16)
    kw = dict(plane="through", target_spacing=1.6, weights=zero_tail_weights, precision="fp32", output_dtype="float32")
    torch.manual_seed(0)
    single = super_resolve(volume, **kw)
    torch.manual_seed(0)
    ensemble = super_resolve(volume, ensemble=True, **kw)
    assert ensemble.metadata["medsr"]["ensemble"]
    np.testing.assert_allclose(ensemble.array, single.array, atol=2e-3)


def test_dicom_output_of_a_through_plane_run(tiny_weights, tmp_path, capsys) -> None:
    from MedSRLib.cli import main
    from MedSRLib.io import write_volume

    source = tmp_path / "thick.nii.gz"
    write_volume(_real("mr-volumes", "t1_fl2d_sag_RAS.nii.gz", size=16), source)
    out = tmp_path / "dicom_out"
    assert main(["run", str(source), str(out), "--weights", str(tiny_weights), "--quiet", "--target-spacing", "2.4",
                 "--output-format", "dicom"]) == 0
    back = read_volume(out)
    assert back.shape[2] == 70 or back.shape[0] == 70
    np.testing.assert_allclose(sorted(back.spacing), sorted((1.015625, 1.015625, 2.4)), rtol=1e-4)


def test_cli_scale_on_a_thick_volume_stays_in_plane_and_says_so(small_thick_mr, tmp_path, capsys) -> None:
    from MedSRLib.cli import main

    out = tmp_path / "x2.nii.gz"
    assert main(["run", str(small_thick_mr), str(out), "--scale", "2", "--model", "bicubic", "--json"]) == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    assert summary["plane"] == "in" and summary["factor"] == 2 and summary["output_shape_zyx"] == [64, 64, 35]
    assert "--plane through super-resolves the slice axis" in captured.err


def test_time_estimate_of_a_through_plane_run_counts_every_view_at_the_network_factor() -> None:
    """35 sagittal 4.8 mm slices of 1 mm pixels to 1 mm: the network runs x5 over both orientations (views=2),
    and by default over both voxel diagonals too, as padded to their width buckets."""
    from MedSRLib.engine import estimate_seconds as engine_estimate
    from MedSRLib.engine import resolve_device
    from MedSRLib.models import get_model
    from MedSRLib.pipeline import estimate_seconds

    shape_zyx, spacing_xyz = (35, 64, 64), (1.0, 1.0, 4.8)
    seconds = estimate_seconds(shape_zyx, spacing_xyz, model="tp-dridsr", scale=2, plane="through", precision="fp32",
                               views=2)
    expected = engine_estimate(macs_per_lr_pixel=get_model("tp-dridsr").macs_per_lr_pixel(5),
                               lr_pixels_total=2 * 35 * 64 * 64, device=resolve_device("auto"), ensemble=False,
                               precision="fp32")
    assert seconds == pytest.approx(expected) and seconds > 0
    # 4 views: per diagonal direction 127 diagonals of 1..64 voxels, padded to 32 (64 of them, lengths 1-32)
    # or 64 columns (63, lengths 33-64): 64 x 32 + 63 x 64 = 6080 columns
    four = estimate_seconds(shape_zyx, spacing_xyz, model="tp-dridsr", scale=2, plane="through", precision="fp32")
    assert four == pytest.approx(seconds * (2 * 64 * 64 + 2 * 6080) / (2 * 64 * 64))
    in_plane = estimate_seconds(shape_zyx, spacing_xyz, model="tp-dridsr", scale=2, plane="in", precision="fp32")
    assert seconds == pytest.approx(2 * in_plane)  # both orientations: every voxel is read twice
    with pytest.raises(OptionError, match="spacing"):
        estimate_seconds(shape_zyx, None, model="tp-dridsr", scale=2, plane="through")
