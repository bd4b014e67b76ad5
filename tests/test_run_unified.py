"""One flow for one volume (MedSRLib.run): ``medsr run IN OUT`` and every volume of a cohort go through
``run_volume`` with the same ``RunOptions``, so a one-volume cohort writes the same bytes and the same
summary as the single-volume command, and cohorts get the through-plane options (``--plane auto``,
``--target-spacing``, ``--thickness``, ``--adapt``) for free. Bad option values are refused by field
name before any work.

Through-plane networks are untrained here (the tiny tp-dridsr weights file of conftest's
``tiny_weights``): these tests check the flow, not learned quality. The thick-slice
MR is ../shared/data/mr-volumes/t1_fl2d_sag_RAS.nii.gz cropped in-plane to keep the runs short."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest

from conftest import shared_path
from MedSRLib.batch import CSV_COLUMNS, plan_cohort, run_cohort
from MedSRLib.cli import _run_options, build_parser, main
from MedSRLib.engine import EngineOptions
from MedSRLib.errors import OptionError
from MedSRLib.io import read_volume, write_volume
from MedSRLib.provenance import sidecar_path
from MedSRLib.run import RunOptions, run_option_fields, run_volume

#: Summary keys a cohort row shares with ``medsr run --json`` (``plane`` is the row's ``run_plane``).
SHARED_KEYS = ("model", "scale", "factor", "slice_axis", "factors_zyx", "input_shape_zyx", "output_shape_zyx",
               "precision", "device")


def _thick_mr(folder: Path, name: str = "thick.nii.gz", size: int = 24) -> Path:
    """A copy of the real 4.8 mm sagittal MR (35 slices), the first ``size`` voxels of each in-plane axis."""
    volume = read_volume(shared_path("mr-volumes", "t1_fl2d_sag_RAS.nii.gz"))
    index = tuple(slice(0, size) if n > 48 else slice(None) for n in volume.shape)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    write_volume(volume.with_array(np.ascontiguousarray(volume.array[index])), path)
    return path


def _cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _row(folder: Path) -> tuple[dict, dict[str, str]]:
    data = json.loads((folder / "medsr_summary.json").read_text())
    with open(folder / "medsr_summary.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(data["volumes"]) == len(rows) == 1
    return data, rows[0]


def _same_outputs(single: Path, single_summary: dict, cohort_out: Path, cohort_row: dict) -> None:
    """Byte-identical volumes, the same provenance (but times and the options' paths), equal summaries."""
    assert single.read_bytes() == cohort_out.read_bytes()
    a, b = (json.loads(sidecar_path(p).read_text()) for p in (single, cohort_out))
    for record in (a, b):
        del record["created_utc"], record["options"]
        (record.get("through_plane") or {}).pop("seconds", None)  # the network's wall time
    assert a == b
    for key in SHARED_KEYS:
        assert cohort_row[key] == single_summary[key], key
    assert cohort_row["run_plane"] == single_summary["plane"]
    assert cohort_row["output_spacing_zyx"] == pytest.approx(single_summary["output_spacing_zyx"], abs=1e-6)
    if "consistency" in single_summary:
        assert cohort_row["consistency_psnr"] == single_summary["consistency"]["psnr"]
        assert cohort_row["flagged_slices"] == single_summary["consistency"]["flagged_slices"]


@pytest.mark.parametrize("flags", [
    ("--model", "bicubic", "--scale", "2", "--check"),
    ("--model", "nearest", "--plane", "in", "--scale", "3", "--float32", "--keep-raw-values"),
])
def test_one_volume_cohort_equals_the_single_volume_command_in_plane(flags, tmp_path, capsys) -> None:
    source = shared_path("mr-volumes", "dipy", "aniso_vox.nii.gz")
    folder = tmp_path / "cohort"
    folder.mkdir()
    (folder / "aniso_vox.nii.gz").write_bytes(source.read_bytes())
    single = tmp_path / "single.nii.gz"
    code, out, err = _cli(capsys, "run", str(folder / "aniso_vox.nii.gz"), str(single), *flags, "--json", "--quiet")
    assert code == 0, err
    summary = json.loads(out)
    code, out, err = _cli(capsys, "run", str(folder), str(tmp_path / "out"), *flags, "--json", "--quiet")
    assert code == 0, err
    data, _ = _row(tmp_path / "out")
    assert json.loads(out) == data
    _same_outputs(single, summary, tmp_path / "out" / "aniso_vox_medsr.nii.gz", data["volumes"][0])


def test_one_volume_cohort_equals_the_single_volume_command_through_plane(tiny_weights, tmp_path, capsys) -> None:
    thick = _thick_mr(tmp_path / "cohort")
    flags = ("--plane", "auto", "--model", "tp-dridsr", "--weights", str(tiny_weights), "--target-spacing", "2.4",
             "--thickness", "4.8", "--precision", "fp32", "--check", "--json", "--quiet")
    single = tmp_path / "single.nii.gz"
    code, out, err = _cli(capsys, "run", str(thick), str(single), *flags)
    assert code == 0, err
    summary = json.loads(out)
    assert summary["plane"] == "through" and summary["factor"] == pytest.approx(2.0)
    code, out, err = _cli(capsys, "run", str(thick.parent), str(tmp_path / "out"), *flags)
    assert code == 0, err
    data, row = _row(tmp_path / "out")
    _same_outputs(single, summary, tmp_path / "out" / "thick_medsr.nii.gz", data["volumes"][0])
    assert row["run_plane"] == "through" and math.isclose(float(row["factor"]), 2.0) and row["scale"] == ""


def test_a_cohort_of_thick_slice_mr_runs_through_plane_under_plane_auto(tiny_weights, tmp_path, capsys, builds) -> None:
    """--plane auto sends each thick-slice volume through-plane; one Predictor serves every volume at the
    same network factor; the summary says the run, the factor and the consistency of each volume."""
    folder = tmp_path / "cohort"
    _thick_mr(folder, "a.nii.gz")
    _thick_mr(folder / "sub", "b.nii.gz", size=20)
    out = tmp_path / "out"
    code, stdout, err = _cli(capsys, "run", "-i", str(folder), "-o", str(out), "--plane", "auto", "--model", "tp-dridsr",
                             "--weights", str(tiny_weights), "--target-spacing", "1.6", "--precision", "fp32",
                             "--check", "--json")
    assert code == 0, err
    data = json.loads(stdout)
    assert data["counts"]["done"] == 2 and data["models_loaded"] == ["tp-dridsr x3 through-plane"] and len(builds) == 1
    for volume in data["volumes"]:
        assert volume["run_plane"] == "through" and volume["scale"] is None
        assert volume["factor"] == pytest.approx(3.0) and volume["slice_axis"] == 2
        assert volume["output_shape_zyx"][2] == 105 and volume["consistency_psnr"] > 10
        written = read_volume(volume["output"])
        assert written.shape == tuple(volume["output_shape_zyx"])
        np.testing.assert_allclose(written.spacing[0], 1.6, rtol=1e-6)
        record = json.loads(sidecar_path(volume["output"]).read_text())
        assert record["output_grid"]["plane"] == "through" and record["through_plane"]["thickness_assumed"]
    assert "through-plane" in err and "x3" in err
    # --continue reads the through-plane rows back from the sidecars
    code, stdout, err = _cli(capsys, "run", str(folder), str(out), "--plane", "auto", "--model", "tp-dridsr",
                             "--weights", str(tiny_weights), "--target-spacing", "1.6", "--continue", "--json")
    assert code == 0, err
    again = json.loads(stdout)
    assert again["counts"]["skipped"] == 2 and again["models_loaded"] == []
    for before, after in zip(data["volumes"], again["volumes"]):
        assert (after["run_plane"], after["factor"], after["output_shape_zyx"]) == (
            "through", pytest.approx(before["factor"]), before["output_shape_zyx"])


def test_run_cohort_takes_the_run_options(tiny_weights, tmp_path) -> None:
    """The library: run_cohort(plan, RunOptions(...)) -- the options type of one volume -- and field names
    as keywords replacing its values."""
    folder = tmp_path / "cohort"
    _thick_mr(folder)
    options = RunOptions(model="tp-dridsr", weights=tiny_weights, target_spacing=2.4,
                         engine=EngineOptions(precision="fp32", threads=1))
    summary = run_cohort(plan_cohort(folder, tmp_path / "out"), options)
    (record,) = summary.records
    assert record.status == "done" and record.run_plane == "through" and record.factor == pytest.approx(2.0)
    single = run_volume(folder / "thick.nii.gz", tmp_path / "single.nii.gz", options)
    assert single.output.read_bytes() == Path(record.output).read_bytes()
    redo = run_cohort(plan_cohort(folder, tmp_path / "out", overwrite=True), options, overwrite=True,
                      target_spacing=1.6)
    assert redo.records[0].factor == pytest.approx(3.0)
    assert set(CSV_COLUMNS) >= {"run_plane", "factor", "plane", "scale"}


@pytest.mark.parametrize("keywords, name", [
    ({"scale": 0}, "scale"),
    ({"scale": 2.5}, "scale"),
    ({"plane": "oblique"}, "plane"),
    ({"target_spacing": -1.0}, "target_spacing"),
    ({"target_spacing": float("nan")}, "target_spacing"),
    ({"thickness": 0}, "thickness"),
    ({"adapt_seconds": -5}, "adapt_seconds"),
    ({"adapt_iterations": 0}, "adapt_iterations"),
    ({"views": 3}, "views"),
    ({"views": True}, "views"),
    ({"modality": "PET"}, "modality"),
    ({"axis": 3}, "axis"),
    ({"axis": "diagonal"}, "axis"),
    ({"output_dtype": "int8"}, "output_dtype"),
    ({"clip_output": "no"}, "clip_output"),
    ({"check": 1}, "check"),
    ({"model": ""}, "model"),
    ({"weights": 3}, "weights"),
    ({"engine": "fast"}, "engine"),
])
def test_run_options_reject_bad_values_by_name(keywords, name) -> None:
    with pytest.raises(OptionError, match=rf"^{name}\b"):
        RunOptions(**keywords)


def test_run_options_are_keyword_only_frozen_normalised_and_cross_checked() -> None:
    with pytest.raises(TypeError):
        RunOptions("bicubic")  # type: ignore[misc]
    options = RunOptions(modality="ct", axis="Axial", scale=2)
    assert (options.modality, options.axis) == ("CT", "axial")
    with pytest.raises(Exception):
        options.scale = 3  # type: ignore[misc]
    with pytest.raises(OptionError, match="unknown run option.*scales"):
        options.replace(scales=3)
    assert options.replace(scale=4).scale == 4 and options.scale == 2
    with pytest.raises(OptionError, match="--target-spacing apply to through-plane runs"):
        RunOptions(plane="in", target_spacing=1.0)
    with pytest.raises(OptionError, match="--scale is the in-plane factor"):
        RunOptions(plane="through", scale=2)
    with pytest.raises(OptionError, match="--check/--diff"):
        RunOptions(plane="both", check=True)
    assert RunOptions(scale=2).fixed_plane == "in" and RunOptions().fixed_plane is None
    assert RunOptions(model="tp-dridsr").fixed_plane == "through" and RunOptions(plane="auto", scale=2).fixed_plane is None


def test_run_flags_are_derived_from_the_run_options() -> None:
    run = next(a for a in build_parser()._actions if a.dest == "command").choices["run"]
    flags = {a.dest: a.option_strings for a in run._actions}
    for name, meta in run_option_fields().items():
        assert flags[name] == [meta["flag"]], name
    args = build_parser().parse_args(["run", "in.nii", "out.nii", "--plane", "through", "--target-spacing", "1.5",
                                      "--thickness", "5", "--adapt", "30", "--adapt-iterations", "7", "--modality", "mr",
                                      "--axis", "2", "--weights", "w.safetensors", "--model", "tp-mdrn", "--float32",
                                      "--keep-raw-values", "--check", "--threads", "1", "--views", "2"])
    assert _run_options(args) == RunOptions(
        model="tp-mdrn", plane="through", target_spacing=1.5, thickness=5.0, adapt_seconds=30.0, adapt_iterations=7, views=2,
        modality="MR", axis=2, weights="w.safetensors", output_dtype="float32", clip_output=False, check=True,
        engine=EngineOptions(threads=1))


@pytest.mark.parametrize("args, words", [
    (["--target-spacing", "-1"], "target_spacing (--target-spacing) must be a positive number"),
    (["--adapt-iterations", "0"], "adapt_iterations (--adapt-iterations) must be a positive integer"),
    (["--scale", "0"], "scale (--scale) must be a positive integer"),
    (["--plane", "in", "--thickness", "3"], "--thickness apply to through-plane runs"),
    (["--plane", "in", "--views", "2"], "--views apply to through-plane runs"),
])
def test_bad_values_are_refused_by_name_before_any_work(args, words, tmp_path, capsys) -> None:
    """One volume and a cohort alike: one line, exit 2, nothing read or written (not even the output folder)."""
    folder = tmp_path / "cohort"
    folder.mkdir()
    (folder / "a.nii.gz").write_bytes(b"not read")  # reading it would fail with another message
    for target in (folder / "a.nii.gz", folder):
        out = tmp_path / ("out" if target == folder else "out.nii.gz")
        code, _, err = _cli(capsys, "run", str(target), str(out), *args)
        assert code == 2 and words in err and err.count("\n") == 1, err
        assert not out.exists()


def test_views_reach_the_run_and_its_record(tiny_weights, tmp_path, capsys) -> None:
    """--views 2 fuses the two orthogonal orientations only; the default fuses the two voxel diagonals too:
    both record what ran (JSON ``through_plane.views``/``fusion``, the summary line), and the outputs differ."""
    thick = _thick_mr(tmp_path / "in")
    flags = ("--plane", "through", "--model", "tp-dridsr", "--weights", str(tiny_weights), "--precision", "fp32", "--quiet")
    outputs = {}
    for views in (None, 2):
        out = tmp_path / f"views{views}.nii.gz"
        code, text, err = _cli(capsys, "run", str(thick), str(out), *flags, *(("--views", str(views)) if views else ()),
                               "--json")
        assert code == 0, err
        through = json.loads(text)["through_plane"]
        assert through["views"] == (views or 4)
        assert ("diagonals" in through["fusion"]) == (views is None)
        outputs[views] = out
    code, text, err = _cli(capsys, "run", str(thick), str(tmp_path / "text.nii.gz"), *flags)
    assert code == 0 and "4 views fused" in text, err
    from MedSRLib.io import read_volume

    assert not np.array_equal(read_volume(outputs[None]).array, read_volume(outputs[2]).array)


def test_the_flip_self_ensemble_is_said_in_the_json_and_the_summary_line(tiny_weights, tmp_path, capsys) -> None:
    """--ensemble through-plane (each view on its 4 flips) is recorded (JSON ``ensemble``, the summary line)
    and changes the output; without it the record says so too."""
    thick = _thick_mr(tmp_path / "in")
    flags = ("--plane", "through", "--model", "tp-dridsr", "--weights", str(tiny_weights), "--precision", "fp32", "--quiet")
    outputs = {}
    for ensemble in (False, True):
        out = tmp_path / f"ensemble{ensemble}.nii.gz"
        code, text, err = _cli(capsys, "run", str(thick), str(out), *flags, *(("--ensemble",) if ensemble else ()), "--json")
        assert code == 0, err
        assert json.loads(text)["ensemble"] is ensemble
        outputs[ensemble] = out
    code, text, err = _cli(capsys, "run", str(thick), str(tmp_path / "text.nii.gz"), *flags, "--ensemble")
    assert code == 0 and "each on its 4 flips (self-ensemble)" in text, err
    from MedSRLib.io import read_volume

    assert not np.array_equal(read_volume(outputs[False]).array, read_volume(outputs[True]).array)
