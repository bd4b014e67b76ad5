"""The `medsr` CLI: real runs, the evaluate --json contract, and one-line errors with nothing written."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import shared_path
from MedSRLib.cli import main
from MedSRLib.io import read_volume


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_models_lists_every_registered_model(capsys) -> None:
    code, out, _ = run_cli(capsys, "models", "--json")
    assert code == 0
    rows = {row["name"]: row for row in json.loads(out)}
    assert {"bicubic", "nearest"} <= set(rows)
    assert rows["bicubic"]["parameters"]["x2"] == 0
    code, out, _ = run_cli(capsys, "models")
    assert code == 0 and "bicubic" in out and "weights" in out.splitlines()[0]


def test_run_bicubic_on_dicom_series_writes_volume_with_expected_geometry(tmp_path, capsys) -> None:
    series = shared_path("totalseg-ct", "example_ct_dicom")
    out = tmp_path / "ct_x2.nrrd"
    code, stdout, err = run_cli(capsys, "run", str(series), str(out), "--model", "bicubic", "--scale", "2", "--json", "--check")
    assert code == 0, err
    summary = json.loads(stdout)
    written = read_volume(out)
    assert written.shape == (20, 1024, 1024)
    assert written.spacing == pytest.approx((0.48828125, 0.48828125, 2.0))
    assert written.array.dtype == np.int16
    origin_in = np.array([-249.51, -437.51, -804.5])
    assert np.allclose(written.origin, origin_in + [-0.244140625, -0.244140625, 0.0], atol=0.01)
    consistency = summary["consistency"]
    assert consistency["units"] == "HU" and consistency["psnr"] > 40
    assert {"psnr", "ssim", "p99_abs_diff", "max_abs_diff", "worst_slices"} <= set(consistency)


def test_evaluate_json_contract_on_folder_of_real_images(tmp_path, capsys) -> None:
    source = shared_path("alzheimer-mri", "test", "NonDemented")
    folder = tmp_path / "hr"
    folder.mkdir()
    for path in sorted(source.iterdir())[:3]:
        shutil.copy(path, folder / path.name)
    code, out, err = run_cli(capsys, "evaluate", str(folder), "--model", "nearest", "--scale", "2", "--json")
    assert code == 0, err
    data = json.loads(out)
    assert list(data) == ["model", "scale", "convention", "n_images", "psnr", "ssim", "bicubic_psnr", "bicubic_ssim",
                          "precision", "device"]
    assert data["model"] == "nearest" and data["scale"] == 2 and data["n_images"] == 3
    assert data["precision"] in ("fp32", "bf16", "fp16") and data["device"]
    assert data["convention"] == "basicsr"
    assert data["bicubic_psnr"] > data["psnr"] > 20  # bicubic beats pixel replication on real MR


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize(
    "make_args, message",
    [
        (lambda d, src: ["run", str(d / "missing.nii.gz"), str(d / "o.nii.gz"), "--scale", "2"], "not found"),
        (lambda d, src: ["run", str(src), str(src), "--scale", "2", "--model", "bicubic"], "input"),
        (lambda d, src: ["run", str(src), str(d / "no_dir" / "o.nii.gz"), "--scale", "2"], "does not exist"),
        (lambda d, src: ["run", str(src), str(d / "o.txt"), "--scale", "2"], "unsupported file type"),
        (lambda d, src: ["run", str(src), str(d / "o.nii.gz"), "--scale", "2", "--model", "nope"], "unknown model"),
        (lambda d, src: ["run", str(src), str(d / "o.nii.gz"), "--scale", "1", "--model", "bicubic"], "scale"),
        (lambda d, src: ["run", str(src), str(d / "o.nii.gz"), "--scale", "2", "--batch-size", "0"], "batch_size"),
    ],
)
def test_bad_input_gives_one_line_error_and_writes_nothing(tmp_path, capsys, make_args, message) -> None:
    source = shared_path("mr-volumes", "t1_fl2d_sag_LPS.nii.gz")
    local = tmp_path / "in.nii.gz"
    shutil.copy(source, local)
    digest = sha(local)
    code, out, err = run_cli(capsys, *make_args(tmp_path, local))
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("medsr: error: ") and message in lines[0].lower(), err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.nii.gz"]
    assert sha(local) == digest


def test_4d_input_and_empty_dicom_folder_are_refused(tmp_path, capsys) -> None:
    four_d = shared_path("extras", "nibabel", "example4d.nii.gz")
    code, _, err = run_cli(capsys, "run", str(four_d), str(tmp_path / "o.nii.gz"), "--scale", "2")
    assert code == 2 and "4d" in err.lower()
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = run_cli(capsys, "run", str(empty), str(tmp_path / "o.nii.gz"), "--scale", "2")
    assert code == 2 and err.startswith("medsr: error:")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty"]


def test_check_refuses_pairs_whose_grids_do_not_correspond(tmp_path, capsys) -> None:
    source = shared_path("mr-volumes", "t1_fl2d_sag_LPS.nii.gz")
    sr = tmp_path / "sr.nii.gz"
    assert main(["run", str(source), str(sr), "--model", "bicubic", "--scale", "2", "--quiet"]) == 0
    capsys.readouterr()
    code, out, err = run_cli(capsys, "check", str(source), str(sr), "--scale", "2", "--json")
    assert code == 0, err
    assert json.loads(out)["psnr"] > 35
    code, _, err = run_cli(capsys, "check", str(source), str(sr), "--scale", "3")
    assert code == 2 and "scale" in err
    diff = tmp_path / "diff.nii.gz"
    code, _, err = run_cli(capsys, "check", str(source), str(sr), "--scale", "2", "--diff", str(source))
    assert code == 2 and not diff.exists()


def test_console_script_exits_nonzero_without_traceback(tmp_path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "MedSRLib.cli", "run", str(tmp_path / "nope.nii.gz"), str(tmp_path / "o.nii.gz"), "--scale", "2"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and proc.stderr.startswith("medsr: error:")
