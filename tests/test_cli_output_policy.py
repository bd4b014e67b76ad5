"""Issue 15 items 9, 11, 13 (argparse), 15 through the `medsr` command line (small generated volumes, bicubic)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from MedSRLib.cli import main
from MedSRLib.io import read_volume, write_volume
from MedSRLib.volume import Volume

import MedSRLib

REPO = Path(MedSRLib.__file__).resolve().parent.parent  # the MedSRLib under test, for subprocesses


def _input(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    volume = Volume(array=rng.integers(0, 1000, (3, 24, 20)).astype(np.int16), spacing=(0.9, 0.9, 3.0),
                    origin=(0, 0, 0), direction=np.eye(3), modality="MR")
    return write_volume(volume, tmp_path / "in.nrrd")


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    try:
        code = main(list(argv))
    except SystemExit as exc:  # argparse
        code = int(exc.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_argparse_errors_are_one_line(capsys):
    for argv in (["run", "a.nii", "b.nii", "--scale", "x"], ["run", "a.nii"], ["frobnicate"]):
        code, out, err = run_cli(capsys, *argv)
        assert code == 2 and out == ""
        assert err.startswith("medsr: error: ") and err.count("\n") == 1, err


def test_an_existing_output_needs_overwrite(tmp_path, capsys):
    source = _input(tmp_path)
    out = tmp_path / "out.nii.gz"
    out.write_bytes(b"an earlier result")
    code, _, err = run_cli(capsys, "run", str(source), str(out), "--model", "bicubic", "--scale", "2", "--quiet")
    assert code == 2 and "--overwrite" in err and err.count("\n") == 1
    assert out.read_bytes() == b"an earlier result"
    code, _, err = run_cli(capsys, "run", str(source), str(out), "--model", "bicubic", "--scale", "2", "--quiet",
                           "--overwrite")
    assert code == 0, err
    assert read_volume(out).shape == (3, 48, 40)


def test_provenance_sidecar_and_header_from_the_cli(tmp_path, capsys):
    import SimpleITK as sitk

    source = _input(tmp_path)
    out = tmp_path / "sr.nrrd"
    code, _, err = run_cli(capsys, "run", str(source), str(out), "--model", "bicubic", "--scale", "2", "--quiet",
                           "--check")
    assert code == 0, err
    side = json.loads((tmp_path / "sr.medsr.json").read_text())
    assert side["input"]["sha256"] == hashlib.sha256(source.read_bytes()).hexdigest()
    assert side["model"]["model"] == "bicubic" and side["options"]["scale"] == 2
    assert "psnr" in side["consistency"] and side["output_grid"]["spacing_mm_ijk"][0] == pytest.approx(0.45)
    assert side["precision"] in ("fp32", "bf16", "fp16")
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(out))
    reader.ReadImageInformation()
    assert json.loads(reader.GetMetaData("medsr_provenance")) == side


def test_an_interrupt_after_the_output_is_complete_says_so(tmp_path, capsys, monkeypatch):
    import MedSRLib.io as io

    source = _input(tmp_path)
    out = tmp_path / "out.mha"
    real = io.write_volume

    def write_then_ctrl_c(*args, **kwargs):
        real(*args, **kwargs)
        raise KeyboardInterrupt  # Ctrl-C right after the final rename

    monkeypatch.setattr(io, "write_volume", write_then_ctrl_c)
    code, _, err = run_cli(capsys, "run", str(source), str(out), "--model", "bicubic", "--scale", "2", "--quiet")
    assert code == 130 and out.exists()
    assert "nothing was written" not in err and f"after writing {out}" in err


def test_sigterm_during_the_write_exits_130_and_leaves_no_partial_file(tmp_path):
    source = _input(tmp_path)
    out = tmp_path / "out.nii.gz"
    script = textwrap.dedent(f"""
        import os, signal, sys
        import SimpleITK as sitk
        real = sitk.WriteImage
        def write_then_sigterm(image, name, *a, **k):
            real(image, name, *a, **k)
            os.kill(os.getpid(), signal.SIGTERM)  # terminated while the temporary file exists
        sitk.WriteImage = write_then_sigterm
        from MedSRLib.cli import main
        sys.exit(main(["run", {str(source)!r}, {str(out)!r}, "--model", "bicubic", "--scale", "2", "--quiet"]))
    """)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 130, done.stderr
    assert "Traceback" not in done.stderr and "nothing was written" in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.nrrd"]


def test_which_model_runs_and_why_is_said(tmp_path, capsys):
    source = _input(tmp_path)  # MR
    code, _, err = run_cli(capsys, "run", str(source), str(tmp_path / "a.nrrd"), "--model", "bicubic", "--scale", "2",
                           "--quiet", "--weights", str(tmp_path / "w.safetensors"))
    assert code == 2 and "--weights applies to trained networks" in err
    code, _, err = run_cli(capsys, "run", str(source), str(tmp_path / "b.nrrd"), "--scale", "3", "--quiet")
    assert code == 0 and "medsr: warning: no trained network for MR x3" in err and "running bicubic" in err
    code, _, err = run_cli(capsys, "run", str(source), str(tmp_path / "c.nrrd"), "--model", "dridsr", "--scale", "3",
                           "--quiet")
    assert code == 0 and "trained on CT but the input is MR" in err
    assert all(line.startswith("medsr: warning: ") for line in err.splitlines() if line)


def test_diff_equal_to_the_output_is_named_as_such(tmp_path, capsys):
    source = _input(tmp_path)
    out = tmp_path / "o.nrrd"
    code, _, err = run_cli(capsys, "run", str(source), str(out), "--model", "bicubic", "--scale", "2", "--quiet",
                           "--diff", str(out))
    assert code == 2 and "is the input" not in err and "other output" in err


def test_weights_messages_say_what_is_wrong(tmp_path, capsys):
    import shutil

    from MedSRLib.models import get_model

    source = _input(tmp_path)
    spec = get_model("mdrn")
    shipped = spec.weights_path(2)
    card = shipped.with_suffix(".json")
    code, _, err = run_cli(capsys, "run", str(source), str(tmp_path / "a.nrrd"), "--model", "mdrn", "--scale", "2",
                           "--quiet", "--weights", str(tmp_path / "missing.safetensors"))
    assert code == 2 and "train them" not in err and "no weights file at" in err
    code, _, err = run_cli(capsys, "run", str(source), str(tmp_path / "b.nrrd"), "--model", "mdrn", "--scale", "2",
                           "--quiet", "--weights", str(card))
    assert code == 2 and "is a model card" in err and "corrupted" not in err
    for key, value in (("scale", "2"), ("format_version", "1.0")):
        folder = tmp_path / key
        folder.mkdir()
        shutil.copy(shipped, folder / shipped.name)
        data = json.loads(card.read_text())
        data[key] = value
        (folder / card.name).write_text(json.dumps(data))
        code, _, err = run_cli(capsys, "run", str(source), str(tmp_path / f"{key}.nrrd"), "--model", "mdrn", "--scale",
                               "2", "--quiet", "--weights", str(folder / shipped.name))
        assert code == 2 and f"{key} {value!r}" in err and "Traceback" not in err, err


def test_itk_and_python_warnings_are_one_medsr_line_each(tmp_path, capfd):
    from conftest import shared_path

    source = shared_path("extras", "niivue", "shear.nii.gz")  # real sheared sform + qform: ITK warns in C++
    code = main(["run", str(source), str(tmp_path / "o.nrrd"), "--model", "bicubic", "--scale", "2", "--quiet"])
    err = capfd.readouterr().err
    assert code == 0, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines and all(line.startswith("medsr: warning: ") for line in lines), err
    assert "qform" in err and "itkNiftiImageIO" not in err and "SimpleITK-build" not in err
