"""Issue 15 items 1, 9, 11, 12, 15: every output is complete or absent, never silently replaced, no leftovers,
and it records how it was made."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from MedSRLib.errors import OutputPathError
from MedSRLib.io import check_output_path, read_volume, write_volume
from MedSRLib.volume import Volume


def _volume(value: int = 7, shape=(6, 40, 48)) -> Volume:
    rng = np.random.default_rng(value)
    return Volume(array=rng.integers(-1000, 2000, size=shape).astype(np.int16), spacing=(0.7, 0.8, 2.5),
                  origin=(1, 2, 3), direction=np.eye(3))


@pytest.mark.parametrize("ending", [".nii", ".nii.gz", ".nrrd", ".mha"])
def test_a_write_that_is_cut_short_without_an_error_is_caught_and_the_old_file_kept(tmp_path, monkeypatch, ending):
    """ITK reports success when the disk fills during a NIfTI write; the writer must read the file back."""
    target = tmp_path / f"out{ending}"
    write_volume(_volume(1), target)
    before = target.read_bytes()
    real_write = sitk.WriteImage

    def short_write(image, name, *args, **kwargs):
        real_write(image, name, *args, **kwargs)
        size = os.path.getsize(name)
        with open(name, "r+b") as handle:  # what a full disk leaves: the first part only
            handle.truncate(size // 2)

    monkeypatch.setattr(sitk, "WriteImage", short_write)
    with pytest.raises(OutputPathError, match="could not write"):
        write_volume(_volume(2), target, overwrite=True)
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [target.name]


def _mount_tmpfs(where: Path, size: str) -> bool:
    where.mkdir()
    if os.geteuid() != 0:
        return False
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                          capture_output=True).returncode == 0


@pytest.mark.parametrize("ending", [".nii", ".nii.gz", ".nrrd", ".mha"])
def test_disk_full_on_a_real_small_tmpfs(tmp_path, ending):
    disk = tmp_path / "disk"
    if not _mount_tmpfs(disk, "96k"):
        pytest.skip("needs root to mount a 96 KiB tmpfs (the injected-error test above covers the logic)")
    try:
        small = disk / f"good{ending}"
        write_volume(_volume(1, shape=(2, 16, 16)), small)
        good = small.read_bytes()
        big = Volume(array=np.random.default_rng(0).normal(size=(8, 64, 64)).astype(np.float64),
                     spacing=(1, 1, 1), origin=(0, 0, 0), direction=np.eye(3))  # 256 KiB, incompressible
        with pytest.raises(OutputPathError, match="could not write .*space"):
            write_volume(big, small, overwrite=True)
        assert small.read_bytes() == good
        with pytest.raises(OutputPathError):
            write_volume(big, disk / f"new{ending}")
        assert sorted(p.name for p in disk.iterdir()) == [small.name]
    finally:
        subprocess.run(["umount", str(disk)], check=False)


def test_an_existing_output_needs_overwrite(tmp_path):
    target = tmp_path / "out.nrrd"
    target.write_bytes(b"previous result")
    with pytest.raises(OutputPathError, match="exists.*--overwrite"):
        check_output_path(target)
    with pytest.raises(OutputPathError, match="exists.*--overwrite"):
        write_volume(_volume(), target)
    assert target.read_bytes() == b"previous result"
    write_volume(_volume(), target, overwrite=True)
    np.testing.assert_array_equal(read_volume(target).array, _volume().array)


def test_a_file_created_meanwhile_by_another_run_is_not_replaced(tmp_path, monkeypatch):
    """Two concurrent runs to one path: the second one to finish must not say 'wrote' over the first."""
    target = tmp_path / "out.nii.gz"
    real_write = sitk.WriteImage

    def racing_write(image, name, *args, **kwargs):
        real_write(image, name, *args, **kwargs)
        if not target.exists():
            target.write_bytes(b"the other run's output")  # the other run renamed its file in between

    monkeypatch.setattr(sitk, "WriteImage", racing_write)
    with pytest.raises(OutputPathError, match="exists"):
        write_volume(_volume(), target)
    assert target.read_bytes() == b"the other run's output"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.nii.gz"]


def test_leftovers_of_killed_runs_are_removed_by_the_next_write(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    import socket
    import hashlib

    host = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:6]
    stale = tmp_path / f".medsr-{host}-{dead.pid}-{uuid.uuid4().hex[:8]}.partial.nii.gz"
    stale.write_bytes(b"half")
    other_host = "000000" if host != "000000" else "111111"
    foreign = tmp_path / f".medsr-{other_host}-{dead.pid}-{uuid.uuid4().hex[:8]}.partial.nrrd"
    foreign.write_bytes(b"another machine's write, maybe still running")  # recent: kept
    old_foreign = tmp_path / f".medsr-{other_host}-{dead.pid}-{uuid.uuid4().hex[:8]}.partial.mha"
    old_foreign.write_bytes(b"another machine's leftover")
    os.utime(old_foreign, (0, 0))
    old_style = tmp_path / f".out.nii.gz.{uuid.uuid4().hex[:12]}.partial.nii.gz"  # earlier versions' name
    old_style.write_bytes(b"half")
    alive = tmp_path / f".medsr-{host}-{os.getpid()}-{uuid.uuid4().hex[:8]}.partial.nrrd"  # a running write: kept
    alive.write_bytes(b"in progress")
    write_volume(_volume(), tmp_path / "next.mha")
    from MedSRLib.io.writers import remove_stale_partials

    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([alive.name, foreign.name, "next.mha"])
    assert remove_stale_partials(tmp_path) == []


@pytest.mark.parametrize("length", [227, 240, 250])
def test_legal_long_output_names_are_written(tmp_path, length):
    target = tmp_path / ("a" * (length - len(".nii.gz")) + ".nii.gz")
    assert len(target.name) == length
    write_volume(_volume(), target)
    np.testing.assert_array_equal(read_volume(target).array, _volume().array)


def test_over_long_names_are_refused_in_one_line(tmp_path):
    for target in (tmp_path / ("a" * 300 + ".nii.gz"), tmp_path / ("d" * 256) / "out.nii.gz"):
        with pytest.raises(OutputPathError, match="255") as err:
            check_output_path(target)
        assert "\n" not in str(err.value)
    from MedSRLib.errors import InputFileError

    with pytest.raises(InputFileError, match="255"):
        read_volume(tmp_path / ("b" * 300 + ".nii.gz"))


def test_an_output_path_that_is_a_folder_is_called_a_folder(tmp_path):
    with pytest.raises(OutputPathError, match="existing folder"):
        check_output_path(tmp_path)


def test_inputs_given_as_one_string_is_one_path(tmp_path):
    source = tmp_path / "in.nrrd"
    write_volume(_volume(), source)
    with pytest.raises(OutputPathError, match="the input"):
        write_volume(_volume(3), str(source), inputs=str(source), overwrite=True)
    with pytest.raises(TypeError, match="Volume"):
        write_volume(_volume().array, tmp_path / "x.nrrd")  # type: ignore[arg-type]


@pytest.mark.parametrize("ending", [".nii.gz", ".nrrd", ".mha"])
def test_provenance_is_stored_in_the_file_and_a_sidecar(tmp_path, ending):
    from MedSRLib.pipeline import super_resolve
    from MedSRLib.provenance import PROVENANCE_KEY, build_provenance, sidecar_path

    source = tmp_path / "in.nrrd"
    low = _volume(4, shape=(2, 12, 12))
    write_volume(low, source)
    result = super_resolve(read_volume(source, modality="CT"), model="bicubic", scale=2)
    record = build_provenance(result, input_path=source, options={"scale": 2, "model": "bicubic"})
    target = write_volume(result, tmp_path / f"out{ending}", provenance=record)
    side = json.loads(sidecar_path(target).read_text())
    import hashlib

    assert side["input"]["sha256"] == hashlib.sha256(source.read_bytes()).hexdigest()
    assert side["model"]["model"] == "bicubic" and side["model"]["scale"] == 2
    assert side["output_grid"]["shape_zyx"] == list(result.shape)
    assert side["medsr_version"] and side["options"] == {"scale": 2, "model": "bicubic"}
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(target))
    reader.ReadImageInformation()
    if ending == ".nii.gz":
        assert reader.GetMetaData("descrip").startswith("MedSR ") and "bicubic x2" in reader.GetMetaData("descrip")
    else:
        assert json.loads(reader.GetMetaData(PROVENANCE_KEY)) == side
