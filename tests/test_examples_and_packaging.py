"""The shipped examples (byte-for-byte real data, reachable with `medsr example`), what the package
installs (weights and examples in the wheel, no top-level `training`), LICENSE, and `medsr-train`'s
one-line message without its extra."""

from __future__ import annotations

import hashlib
import importlib.util
import sys
import tomllib
import zipfile
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO_ROOT, shared_path
from MedSRLib import train_entry
from MedSRLib.cli import main
from MedSRLib.errors import InputFileError
from MedSRLib.examples import EXAMPLES, EXAMPLES_DIR, example_path, list_examples
from MedSRLib.io import read_volume

#: sha256 of every shipped example file (the data card, MedSRLib/examples/README.md, quotes them).
SHA256 = {
    "mr_neck_t2star_thick.nii.gz": "94941ac6edc95d36b03838591bea8427094d57228282167b0a7edf178e17fba9",
    "ct_abdomen_dicom/CT.1.3.12.2.1107.5.1.4.60064.30000022120808113428000016577": "c8d2c0dc05e414d47d3652c658d8fecc20c3cf7ce106c10d84ad033d39700bcc",
    "ct_abdomen_dicom/CT.1.3.12.2.1107.5.1.4.60064.30000022120808113428000016578": "0ee2c1d58e06cedd91483ca35c04da3c26fea0dbe88aaf1eaa950b57f38357d6",
    "ct_abdomen_dicom/CT.1.3.12.2.1107.5.1.4.60064.30000022120808113428000016579": "c76cf0818d4215b92883d109b8a0b62ae0a4d81637eed98738f9c62b6f49bb72",
    "ct_abdomen_dicom/CT.1.3.12.2.1107.5.1.4.60064.30000022120808113428000016580": "106e20514fd3ca66895e14dbfba96c01c1195e4ed890c035d4368dd71f3ee116",
    "ct_abdomen_dicom/CT.1.3.12.2.1107.5.1.4.60064.30000022120808113428000016581": "5804e6c4a50f4d5b20040ac82a1c6d79cba5f7267d71f10b0a1b49eda1bc13ff",
    "ct_abdomen_dicom/CT.1.3.12.2.1107.5.1.4.60064.30000022120808113428000016582": "bef219a16b22949224de4581a2d288863b2585d29556ac24021f03307378cb39",
    "ct_abdomen_dicom/CT.1.3.12.2.1107.5.1.4.60064.30000022120808113428000016583": "9de5a49e880417d5330fe299115fdb95831a98234216a31c5c0e9a0be9a6dcd3",
    "ct_abdomen_dicom/CT.1.3.12.2.1107.5.1.4.60064.30000022120808113428000016584": "fa00c8d81ec8aa0d0cfc4e05343782c3a75a4c60df8cccf9ff5db42ac454e61d",
    "ct_abdomen_dicom/CT.1.3.12.2.1107.5.1.4.60064.30000022120808113428000016585": "ebba0900b0f728db0c94c769db3e5ca38a0cd916386a727541eb3e56350770e5",
    "ct_abdomen_dicom/CT.1.3.12.2.1107.5.1.4.60064.30000022120808113428000016586": "f084ec95cfba25efb7cbe86e8b4966b051904037e8385f58fe398c5475693b89",
    "ct_abdomen_dicom/CT.1.3.12.2.1107.5.1.4.60064.30000022120808113428000016587": "20a9b88a30ea8a824ac65cb19c1ebf80964b41ff476497706ff2a286e5f27a25",
    "ct_abdomen_dicom/CT.1.3.12.2.1107.5.1.4.60064.30000022120808113428000016588": "2a515d3b60f3ff733aac1fc5414206c331e3ed2ccef8c2e0c30b844c538e3ed8",
}
#: Where each shipped file came from in ../shared/data (byte-for-byte copies).
SHARED_SOURCE = {
    "mr_neck_t2star_thick.nii.gz": ("thick-slice", "sct-t2s", "t2s_uncropped.nii.gz"),
    **{name: ("totalseg-ct", "example_ct_dicom", name.split("/")[1]) for name in SHA256 if name.startswith("ct_")},
}


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_example_files_are_the_pinned_bytes_and_nothing_else():
    shipped = {p.relative_to(EXAMPLES_DIR).as_posix() for p in EXAMPLES_DIR.rglob("*")
               if p.is_file() and p.suffix not in (".py", ".pyc", ".md", ".txt")}
    assert shipped == set(SHA256)
    for name, digest in SHA256.items():
        assert _sha256(EXAMPLES_DIR / name) == digest, name
    card = (EXAMPLES_DIR / "README.md").read_text()
    for name, digest in SHA256.items():
        assert digest[:12] in card, f"data card does not quote the sha256 of {name}"
    for example in list_examples():
        assert (EXAMPLES_DIR / example.licence_file).is_file()
    assert sum((EXAMPLES_DIR / n).stat().st_size for n in SHA256) < 4_000_000  # a few MB


def test_examples_are_byte_for_byte_copies_of_shared_data():
    for name, parts in SHARED_SOURCE.items():
        assert _sha256(shared_path(*parts)) == SHA256[name], name


@pytest.mark.parametrize("name", list(EXAMPLES))
def test_each_example_reads_as_its_card_says(name):
    example = EXAMPLES[name]
    volume = read_volume(example_path(name))
    assert volume.shape == example.shape_zyx
    assert volume.spacing == pytest.approx(example.spacing_xyz, rel=1e-5)
    assert volume.modality == example.modality or (example.modality == "MR" and volume.modality is None)
    assert np.ptp(volume.array) > 0
    if example.modality == "CT":
        assert volume.array.min() <= -1000 and volume.array.max() > 1000  # HU after the DICOM rescale


def test_medsr_example_prints_path_and_lists(capsys):
    assert main(["example", "mr-neck"]) == 0
    out = capsys.readouterr().out.strip()
    assert Path(out) == example_path("mr-neck") and Path(out).is_file()
    assert main(["example", "--list"]) == 0
    listing = capsys.readouterr().out
    for example in list_examples():
        assert example.name in listing and example.licence in listing
    assert main(["example", "no-such"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("medsr: error: no example 'no-such'") and "mr-neck" in err and err.count("\n") == 1
    with pytest.raises(InputFileError):
        example_path("no-such")


def test_readme_first_command_super_resolves_an_example(tmp_path, capsys):
    """The example's own command line (README's first command uses the MR one) runs, here with bicubic."""
    example = EXAMPLES["mr-neck"]
    out = tmp_path / "mr_neck_x2.nii.gz"
    assert main(["run", str(example.path), str(out), "--scale", "2", "--model", "bicubic", "--quiet"]) == 0
    result = read_volume(out)
    assert result.shape == (11, 640, 640) and result.spacing == pytest.approx((0.25, 0.25, 7.5), rel=1e-5)
    readme = (REPO_ROOT / "README.md").read_text()
    assert 'medsr example mr-neck' in readme


def _pyproject() -> dict:
    return tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())


def test_pyproject_metadata_and_license():
    project = _pyproject()["project"]
    assert project["license"] == "Apache-2.0"
    assert project["license-files"] == ["LICENSE.txt"]  # one licence file, shared with the Slicer extension
    license_text = (REPO_ROOT / "LICENSE.txt").read_text()
    assert "Apache License" in license_text and "Version 2.0, January 2004" in license_text
    assert "END OF TERMS AND CONDITIONS" in license_text  # the full text, not a pointer
    assert project["requires-python"].startswith(">=3.")
    assert any(c.startswith("Topic :: Scientific/Engineering :: Medical") for c in project["classifiers"])
    assert {"Homepage", "Source", "Issues"} <= set(project["urls"])
    core = " ".join(project["dependencies"]).lower()
    for extra_only in ("vtk", "tensorboard", "pytest", "pyyaml"):
        assert extra_only not in core, f"{extra_only} belongs to an extra, not the core install"
    assert {"test", "training"} <= set(project["optional-dependencies"])
    assert project["scripts"]["medsr-train"] == "MedSRLib.train_entry:main"
    assert _pyproject()["tool"]["setuptools"]["packages"]["find"]["include"] == ["MedSRLib*"]


def test_core_modules_import_only_core_dependencies():
    """What `medsr` imports at run time is in the core dependencies (read from the source files)."""
    import ast

    core = {"torch", "numpy", "SimpleITK", "pydicom", "skimage", "safetensors", "tqdm", "PIL", "scipy"}
    optional = {"pytorch_msssim", "psutil", "pylibjpeg", "openjpeg"}  # guarded imports / decoder plugins
    stdlib = set(sys.stdlib_module_names)
    for path in (REPO_ROOT / "MedSRLib").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name.split(".")[0] for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module.split(".")[0]]
            for name in names:
                assert name in core | optional | stdlib | {"MedSRLib", "training"}, f"{path.name} imports {name}"


@pytest.mark.slow
def test_wheel_holds_weights_and_examples_and_no_training(tmp_path):
    """`pip wheel --no-deps .`: the weights and examples are inside, the top-level `training` is not."""
    if importlib.util.find_spec("setuptools") is None:
        pytest.skip("setuptools is not installed in this environment (needed to build the wheel offline)")
    import shutil
    import subprocess

    # build from a copy of what the wheel is made of, so setuptools' build/ folder stays out of the checkout
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE.txt"):
        shutil.copy(REPO_ROOT / name, source / name)
    shutil.copytree(REPO_ROOT / "MedSRLib", source / "MedSRLib", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path),
         str(source)],
        capture_output=True, text=True, timeout=600,
    )
    if proc.returncode != 0 and "setuptools>=77" in proc.stderr:
        pytest.skip("setuptools >= 77 (SPDX license) is not installed here")
    assert proc.returncode == 0, proc.stderr[-2000:]
    wheel = next(tmp_path.glob("medsrlib-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    assert not any(n.startswith("training/") for n in names)
    for name in SHA256:
        assert f"MedSRLib/examples/{name}" in names
    assert {"MedSRLib/examples/README.md", "MedSRLib/examples/LICENSE-TotalSegmentator.txt"} <= names
    weights = {p.name for p in (REPO_ROOT / "MedSRLib" / "weights").iterdir()}
    assert weights and all(f"MedSRLib/weights/{w}" in names for w in weights)
    assert any(n.endswith(".dist-info/licenses/LICENSE.txt") for n in names)


def test_medsr_train_says_which_extra_in_one_line(monkeypatch, capsys):
    monkeypatch.setattr(train_entry, "_EXTRA_MODULES", ("yaml", "medsr_module_that_does_not_exist"))
    assert train_entry.main(["configs"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'training' extra" in err and "medsr_module_that_does_not_exist" in err
    assert 'pip install -e ".[training]"' in err
    monkeypatch.setattr(train_entry, "_repository_root", lambda: None)
    assert train_entry.main(["configs"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "clone" in err


def test_medsr_train_runs_training_from_the_clone(capsys):
    if train_entry.missing_extra_modules():
        pytest.skip(f"the training extra is not installed ({train_entry.missing_extra_modules()})")
    assert train_entry.main(["configs"]) == 0
    assert "dridsr_x4" in capsys.readouterr().out.split()
