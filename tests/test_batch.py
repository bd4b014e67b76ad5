"""Cohorts (`medsr run FOLDER|LIST OUT/`, MedSRLib.batch): one model load for the whole folder, a bad
file reported and skipped with exit 1, --continue, parts, list files, the summary CSV/JSON, Ctrl-C.

Real volumes from ../shared/data (skipped with the reason when it is absent) and, for a fresh clone,
the examples shipped in the package. ``bicubic``/``nearest`` keep the runs fast; the networks' path is
the same Predictor (tests/test_engine_*.py)."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest

from conftest import shared_path
from MedSRLib import batch
from MedSRLib.cli import main
from MedSRLib.examples import example_path
from MedSRLib.io import read_volume
from MedSRLib.provenance import sidecar_path

KEYS = ["aniso_vox.nii.gz", "broken.nii.gz", "ct/example_ct_sm.nii.gz", "vsseg"]


@pytest.fixture
def cohort(tmp_path: Path) -> Path:
    """A folder of 3 real volumes (MR NIfTI, CT NIfTI in a subfolder, an MR DICOM series folder), one
    truncated NIfTI and a file that is not a volume."""
    folder = tmp_path / "cohort"
    (folder / "ct").mkdir(parents=True)
    shutil.copy(shared_path("mr-volumes", "dipy", "aniso_vox.nii.gz"), folder / "aniso_vox.nii.gz")
    shutil.copy(shared_path("totalseg-ct", "example_ct_sm.nii.gz"), folder / "ct" / "example_ct_sm.nii.gz")
    shutil.copytree(shared_path("mr-volumes", "vs-seg_VS-SEG-001_t1_3slices"), folder / "vsseg")
    whole = shared_path("totalseg-ct", "example_mr_sm.nii.gz").read_bytes()
    (folder / "broken.nii.gz").write_bytes(whole[: len(whole) // 3])
    (folder / "notes.md").write_text("not a volume\n")
    return folder


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def read_summary(folder: Path, stem: str = "medsr_summary") -> tuple[dict, list[dict[str, str]]]:
    data = json.loads((folder / f"{stem}.json").read_text())
    with open(folder / f"{stem}.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    return data, rows


def test_folder_runs_with_one_model_load_and_reports_the_bad_file(cohort, tmp_path, capsys, builds) -> None:
    out = tmp_path / "out"
    code, stdout, err = run_cli(capsys, "run", str(cohort), str(out), "--model", "bicubic", "--scale", "2",
                                "--check", "--threads", "1", "--json")
    assert code == 1, err  # one volume failed, the others were written
    assert len(builds) == 1 and builds[0].options.threads == 1  # one model load; --threads reached the engine
    assert "broken.nii.gz failed" in err and "truncated" in err
    data, rows = read_summary(out)
    assert json.loads(stdout) == data
    assert [r["file"] for r in data["volumes"]] == KEYS == [r["file"] for r in rows]
    assert data["counts"] == {"done": 3, "skipped": 0, "failed": 1, "interrupted": 0, "not run": 0}
    assert data["models_loaded"] == ["bicubic x2"] and data["exit_status"] == 1
    assert data["ignored_files"] == ["notes.md"]
    by_file = {r["file"]: r for r in data["volumes"]}
    assert "truncated" in by_file["broken.nii.gz"]["error"] and by_file["broken.nii.gz"]["status"] == "failed"
    ct = by_file["ct/example_ct_sm.nii.gz"]
    assert ct["output"] == str(out / "ct" / "example_ct_sm_medsr.nii.gz")  # the input's folders mirrored
    assert ct["modality"] == "CT" and ct["plane"] == "axial" and ct["factors_zyx"] == [1.0, 2.0, 2.0]
    assert ct["input_shape_zyx"] == [30, 101, 122] and ct["output_shape_zyx"] == [30, 202, 244]
    assert ct["consistency_psnr"] > 30 and ct["flagged_slices"] == [] and ct["seconds"] > 0
    assert read_volume(ct["output"]).shape == (30, 202, 244)
    assert by_file["vsseg"]["output"] == str(out / "vsseg_medsr.nii.gz")  # a DICOM series folder -> one volume
    csv_ct = next(r for r in rows if r["file"] == "ct/example_ct_sm.nii.gz")
    assert csv_ct["status"] == "done" and csv_ct["output_shape_zyx"] == "30 202 244" and float(csv_ct["consistency_psnr"]) > 30
    for volume in data["volumes"]:
        if volume["status"] == "done":
            record = json.loads(sidecar_path(volume["output"]).read_text())
            assert record["model"]["model"] == "bicubic" and record["consistency"]["psnr"] == volume["consistency_psnr"]
    assert not list(out.rglob(".medsr-*"))  # nothing partial left


def test_default_models_build_one_predictor_per_model(cohort, tmp_path, capsys, builds, monkeypatch) -> None:
    """Without --model each volume gets its modality's default; each model is built once (stand-ins:
    bicubic for MR, nearest for CT, so no network weights are needed)."""
    import MedSRLib.models as models

    monkeypatch.setattr(models, "default_model", lambda modality, scale: models.get_model(
        "nearest" if modality == "CT" else "bicubic"))
    (cohort / "broken.nii.gz").unlink()
    shutil.copy(cohort / "ct" / "example_ct_sm.nii.gz", cohort / "ct" / "second_ct.nii.gz")
    code, _, err = run_cli(capsys, "run", "-i", str(cohort), "-o", str(tmp_path / "out"), "--scale", "2", "--quiet")
    assert code == 0, err
    data, _ = read_summary(tmp_path / "out")
    assert sorted(p.spec.name for p in builds) == ["bicubic", "nearest"]
    assert sorted(data["models_loaded"]) == ["bicubic x2", "nearest x2"]
    assert {v["file"]: v["model"] for v in data["volumes"]} == {
        "aniso_vox.nii.gz": "bicubic", "ct/example_ct_sm.nii.gz": "nearest", "ct/second_ct.nii.gz": "nearest",
        "vsseg": "bicubic"}


def test_continue_skips_complete_outputs_and_redoes_incomplete_ones(cohort, tmp_path, capsys) -> None:
    out = tmp_path / "out"
    (cohort / "broken.nii.gz").unlink()
    args = ["run", str(cohort), str(out), "--model", "bicubic", "--scale", "2", "--quiet"]
    assert run_cli(capsys, *args)[0] == 0
    first = {p: p.stat().st_mtime_ns for p in out.rglob("*_medsr.nii.gz")}
    code, _, err = run_cli(capsys, *args)  # outputs exist: refused before any work
    assert code == 2 and "--continue" in err and "exist" in err
    sidecar_path(out / "aniso_vox_medsr.nii.gz").unlink()  # killed between the volume and its sidecar
    partial = sidecar_path(out / "vsseg_medsr.nii.gz")
    partial.write_text(partial.read_text()[:100])  # a partial sidecar
    code, _, err = run_cli(capsys, *args, "--continue")
    assert code == 0, err
    data, _ = read_summary(out)
    assert {v["file"]: v["status"] for v in data["volumes"]} == {
        "aniso_vox.nii.gz": "done", "ct/example_ct_sm.nii.gz": "skipped", "vsseg": "done"}
    skipped = data["volumes"][1]
    assert (skipped["model"], skipped["output_shape_zyx"], skipped["factors_zyx"]) == ("bicubic", [30, 202, 244], [1.0, 2.0, 2.0])
    ct = out / "ct" / "example_ct_sm_medsr.nii.gz"
    assert ct.stat().st_mtime_ns == first[ct]  # skipped: untouched
    for name in ("aniso_vox_medsr.nii.gz", "vsseg_medsr.nii.gz"):
        assert json.loads(sidecar_path(out / name).read_text())["model"]["model"] == "bicubic"
        assert batch.output_state(next(i for i in batch.plan_cohort(cohort, out, resume=True).items
                                       if i.output.name == name), scale=2)[0] == "complete"
    code, _, err = run_cli(capsys, *args[:-3], "--scale", "4", "--continue", "--quiet")  # other settings: not replaced
    assert code == 1 and "was made with bicubic x2" in err


def test_two_parts_cover_every_volume_exactly_once(cohort, tmp_path, capsys) -> None:
    out = tmp_path / "out"
    files = []
    for part in (0, 1):
        code, _, err = run_cli(capsys, "run", str(cohort), str(out), "--model", "bicubic", "--scale", "2", "--quiet",
                               "--num-parts", "2", "--part-id", str(part))
        assert code == (1 if part == 1 else 0), err  # broken.nii.gz is the 2nd volume: part 1
        data, _ = read_summary(out, f"medsr_summary_part{part}of2")
        assert (data["part_id"], data["num_parts"], data["volumes_in_cohort"]) == (part, 2, 4)
        files += [v["file"] for v in data["volumes"]]
    assert sorted(files) == KEYS and len(files) == len(set(files))
    for n in range(1, 7):  # the split itself, for any number of parts
        parts = [batch.split_parts(range(11), num_parts=n, part_id=i) for i in range(n)]
        assert sorted(x for p in parts for x in p) == list(range(11))
        assert max(map(len, parts)) - min(map(len, parts)) <= 1
    code, _, err = run_cli(capsys, "run", str(cohort), str(tmp_path / "o2"), "--scale", "2", "--num-parts", "2",
                           "--part-id", "2")
    assert code == 2 and "part_id" in err and not (tmp_path / "o2").exists()


def test_list_file_mirrors_entries_and_reports_a_missing_one(cohort, tmp_path, capsys) -> None:
    listing = tmp_path / "volumes.txt"
    listing.write_text(f"# two volumes and a path that is not there\n\ncohort/aniso_vox.nii.gz\n  {cohort / 'vsseg'}  \n"
                       "cohort/ct/missing.nii.gz   \n")
    out = tmp_path / "out"
    code, stdout, err = run_cli(capsys, "run", str(listing), str(out), "--model", "bicubic", "--scale", "2", "--json")
    assert code == 1 and "missing.nii.gz failed" in err and "not found" in err
    data = json.loads(stdout)
    assert {v["file"]: v["status"] for v in data["volumes"]} == {
        "aniso_vox.nii.gz": "done", "ct/missing.nii.gz": "failed", "vsseg": "done"}
    assert (out / "aniso_vox_medsr.nii.gz").is_file() and (out / "vsseg_medsr.nii.gz").is_file()
    listing.write_text(f"{cohort / 'vsseg'}\n{cohort / 'vsseg'}/\n")
    code, _, err = run_cli(capsys, "run", str(listing), str(tmp_path / "o2"), "--scale", "2")
    assert code == 2 and "twice" in err and not (tmp_path / "o2").exists()


def test_collisions_and_misuse_are_refused_before_any_work(cohort, tmp_path, capsys, builds) -> None:
    shutil.copy(cohort / "aniso_vox.nii.gz", cohort / "aniso_vox.nrrd")  # both would be aniso_vox_medsr.nii.gz
    out = tmp_path / "out"
    code, _, err = run_cli(capsys, "run", str(cohort), str(out), "--model", "bicubic", "--scale", "2")
    assert code == 2 and "aniso_vox.nii.gz and aniso_vox.nrrd would both be written" in err
    assert not out.exists() and not builds
    (cohort / "aniso_vox.nrrd").unlink()
    listing = tmp_path / "list.txt"
    listing.write_text("cohort/aniso_vox.nii.gz\n")
    cases = [
        (["run", str(cohort), str(cohort / "out")], "inside the input folder"),
        (["run", str(cohort), str(tmp_path / "x.nii.gz")], "give an output folder"),
        (["run", str(cohort), "-o", str(out), "-i", str(cohort)], "given twice"),
        (["run", str(listing), str(tmp_path / "x.nii.gz")], "names a volume file"),
        (["run", str(cohort)], "output is missing"),
        (["run", str(cohort / "aniso_vox.nii.gz"), str(tmp_path / "a.nii.gz"), "--continue"], "apply to a folder"),
        (["run", str(cohort), str(out), "--panel", str(tmp_path / "p.png")], "apply to one volume"),
        (["run", str(cohort), str(out), "--num-parts", "2"], "go together"),
        (["run", str(cohort), str(out), "--num-parts", "0", "--part-id", "0"], "num_parts must be a positive"),
        (["run", str(cohort), str(out), "--scale", "9"], "does not support scale 9"),
        (["run", str(cohort), str(out), "--weights", str(tmp_path / "w.safetensors")], "needs --model"),
    ]
    for argv, message in cases:
        code, _, err = run_cli(capsys, *argv, *([] if "--scale" in argv else ["--scale", "2"]), "--quiet")
        assert code == 2 and message in err and err.count("\n") == 1, (argv, err)
    assert not out.exists() and not builds
    assert not batch.is_cohort_input(shared_path("mr-volumes", "vs-seg_VS-SEG-001_t1_3slices"))  # a series folder


def test_interrupt_keeps_complete_outputs_and_writes_the_summary(cohort, tmp_path, capsys, monkeypatch) -> None:
    import MedSRLib.pipeline as pipeline

    real = pipeline.super_resolve
    calls = []

    def interrupted_on_the_second(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(pipeline, "super_resolve", interrupted_on_the_second)
    out = tmp_path / "out"
    code, _, err = run_cli(capsys, "run", str(cohort), str(out), "--model", "bicubic", "--scale", "2", "--quiet")
    assert code == 130
    assert f"interrupted after writing {out / 'aniso_vox_medsr.nii.gz'} (complete)" in err
    data, _ = read_summary(out)
    assert data["interrupted"] is True and data["exit_status"] == 130
    assert [v["status"] for v in data["volumes"]] == ["done", "failed", "interrupted", "not run"]
    assert not (out / "ct").exists() and not list(out.rglob(".medsr-*"))


def test_summary_on_disk_says_how_far_a_running_cohort_got(cohort, tmp_path) -> None:
    """A cohort killed mid-run (out of memory, a cluster's time limit) leaves a summary of what was done."""
    seen = []

    class Peek(batch.CohortReporter):
        def start(self, item, index, total):  # type: ignore[no-untyped-def]
            if index > 1:
                data, rows = read_summary(tmp_path / "out")
                seen.append((index, data["in_progress"], [v["status"] for v in data["volumes"]][: index - 1],
                             data["volumes"][index - 1]["status"], len(rows)))
            return None

    plan = batch.plan_cohort(cohort, tmp_path / "out")
    summary = batch.run_cohort(plan, model="bicubic", scale=2, reporter=Peek())
    total = len(plan.items)
    assert [s[0] for s in seen] == list(range(2, total + 1))
    for _index, in_progress, before, current, n_rows in seen:
        assert in_progress and current == "not run" and n_rows == total
        assert "not run" not in before  # every earlier volume has its outcome on disk
    final, _ = read_summary(tmp_path / "out")
    assert final["in_progress"] is False and summary.in_progress is False
    assert final["exit_status"] == summary.exit_status == 1  # the truncated file failed, the others were written


def test_shipped_examples_as_a_cohort_on_a_fresh_clone(tmp_path, capsys, builds) -> None:
    """No ../shared needed: a list file of the two shipped examples (NIfTI MR, DICOM CT), DICOM out."""
    listing = tmp_path / "examples.txt"
    listing.write_text(f"{example_path('mr-neck')}\n{example_path('ct-abdomen')}\n")
    out = tmp_path / "dicom_out"
    code, _, err = run_cli(capsys, "run", "-i", str(listing), "-o", str(out), "--model", "nearest", "--scale", "2",
                           "--output-format", "dicom", "--quiet")
    assert code == 0, err
    assert len(builds) == 1
    data, rows = read_summary(out)
    assert [v["file"] for v in data["volumes"]] == ["ct_abdomen_dicom", "mr_neck_t2star_thick.nii.gz"]
    ct, mr = (out / "ct_abdomen_dicom_medsr"), (out / "mr_neck_t2star_thick_medsr")
    assert read_volume(ct).shape == (12, 1024, 1024) and read_volume(mr).shape == (11, 640, 640)
    assert len(list(ct.glob("IM*.dcm"))) == 12 and sidecar_path(ct).is_file()
    assert batch.output_state(batch.WorkItem(key="x", source=example_path("ct-abdomen"), output=ct), scale=2)[0] == "complete"
    sidecar_path(ct).unlink()  # a DICOM series without its sidecar is redone: the folder is replaced
    first_mr = sorted(p.stat().st_mtime_ns for p in mr.iterdir())
    code, _, err = run_cli(capsys, "run", str(listing), str(out), "--model", "nearest", "--scale", "2",
                           "--output-format", "dicom", "--quiet", "--continue")
    assert code == 0, err
    data, _ = read_summary(out)
    assert [v["status"] for v in data["volumes"]] == ["done", "skipped"]
    assert data["volumes"][1]["output_shape_zyx"] == [11, 640, 640] and data["volumes"][1]["model"] == "nearest"
    assert sorted(p.stat().st_mtime_ns for p in mr.iterdir()) == first_mr
    assert len(list(ct.glob("IM*.dcm"))) == 12 and sidecar_path(ct).is_file()


@pytest.mark.parametrize("sidecar", ['{"model": {"model": "bicubic"', "[1, 2]", '{"model": "bicubic"}',
                                     '{"model": {"model": "bicubic", "scale": 2}, "output_grid": {"shape_zyx": []}}', ""])
def test_a_partial_or_malformed_sidecar_means_redo(tmp_path, sidecar) -> None:
    source, output = tmp_path / "in.nii.gz", tmp_path / "out" / "in_medsr.nii.gz"
    output.parent.mkdir()
    source.write_bytes(b"x")
    output.write_bytes(b"y")
    item = batch.WorkItem(key="in.nii.gz", source=source, output=output)
    assert batch.output_state(item, scale=2) == ("incomplete", "no provenance sidecar in_medsr.medsr.json")
    sidecar_path(output).write_text(sidecar)
    assert batch.output_state(item, scale=2) == ("incomplete", "partial provenance sidecar in_medsr.medsr.json")
