"""Cohorts: many volumes in, one output folder out, each network built once (``medsr run FOLDER OUT/``).

The steps, each a function of its own so a job scheduler or a notebook can use them separately:

1. **Inputs** (:func:`list_cohort`): a *cohort folder* or a *list file*.

   * A folder is walked in sorted name order (hidden names, those starting with ``.``, are skipped).
     Every NIfTI/NRRD/MetaImage file (``.nii``, ``.nii.gz``, ``.nrrd``, ``.nhdr``, ``.mha``, ``.mhd``)
     at any depth is one volume. A folder that directly holds DICOM files (a ``DICM`` preamble or a
     ``.dcm``/``.ima`` ending) is one DICOM series volume, read as ``medsr run THAT_FOLDER`` reads it
     (its subfolders included, so they are not walked further); a folder with several series fails
     with the list of series (give a list file of the series folders instead). So
     ``patient/study/series/*.dcm`` trees and flat ``series_a/``, ``series_b/`` layouts both give one
     volume per series folder. Other files (``.json``, ``.raw``, notes) are listed as ignored.
   * A list file (``.txt``, ``.lst``, ``.list``) holds one path per line: a volume file or a DICOM
     series folder; blank lines and lines whose first non-blank character is ``#`` are skipped;
     relative paths are relative to the list file's folder. A listed path that is missing is a
     failing volume (reported, not fatal); the same path listed twice is refused.

   Each volume has a *key*: its path relative to the cohort folder (list file: relative to the
   deepest folder common to all entries), with ``/`` separators. Volumes are sorted by key.

2. **Plan** (:func:`plan_cohort`): the output of a volume mirrors its key under the output folder:
   ``<key's folder>/<stem>_medsr.nii.gz`` (stem = the name without its image ending, a DICOM folder's
   name as is), or the folder ``<key's folder>/<stem>_medsr/`` with ``output_format='dicom'`` (one
   derived series per volume). The provenance sidecar is ``<stem>_medsr.medsr.json`` beside it
   (:func:`MedSRLib.provenance.sidecar_path`). Two volumes planned to the same output (compared
   case-insensitively, as on macOS/Windows disks) are refused before any work, and so are existing
   outputs unless ``resume`` (skip complete ones) or ``overwrite``.

3. **Parts** (:func:`split_parts`): ``num_parts`` N and ``part_id`` I (0-based) keep the volumes
   ``I, I + N, I + 2N, ...`` of the sorted list, so every volume is in exactly one part whatever
   machine computes the plan (a SLURM job array or a Kubernetes indexed job: docs/cohorts.md).

4. **Run** (:func:`run_cohort`): every volume goes through :func:`MedSRLib.run.run_volume`, the same
   flow as ``medsr run IN OUT``, with the same :class:`~MedSRLib.run.RunOptions` (plane, target
   spacing, thickness, adaptation included: ``plane='auto'`` sends thick-slice volumes through-plane).
   One :class:`~MedSRLib.engine.Predictor` per (model, plane, factor), built on first use and reused
   for every volume (a given in-plane ``model`` is built before the first volume, so a bad model,
   scale or weights file fails the whole run at once); without ``model`` each volume gets its
   modality's default model. A volume that fails (unreadable, refused by a safety check, ...) is
   recorded with its error and skipped. ``resume`` skips a volume whose output is complete
   (:func:`output_state`).

5. **Summary** (:class:`CohortSummary`): one row per volume (status, seconds, model, plane and grid
   plan, consistency PSNR and flagged slices when checked, error), written atomically as
   ``medsr_summary.csv`` and ``.json`` in the output folder (``medsr_summary_part<I>of<N>.*`` per part),
   also when the run is interrupted (then the volumes not finished say ``interrupted``/``not run``).

Array shapes and spacings in the summary are numpy order ``(z, y, x)``; spacings in mm.
"""

from __future__ import annotations

import csv
import io as _io
import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from .errors import InputFileError, MedSRError, OptionError, OutputPathError
from .run import DICOM_OUTPUT_FILE, RunOptions

__all__ = [
    "LIST_FILE_ENDINGS",
    "VOLUME_ENDINGS",
    "CohortPlan",
    "CohortReporter",
    "CohortSummary",
    "VolumeRecord",
    "WorkItem",
    "is_cohort_input",
    "list_cohort",
    "output_relpath",
    "output_state",
    "plan_cohort",
    "read_list_file",
    "run_cohort",
    "split_parts",
    "summary_paths",
]

#: File endings of volume files in a cohort folder (DICOM series are folders).
VOLUME_ENDINGS: tuple[str, ...] = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
#: File endings of list files (one input path per line).
LIST_FILE_ENDINGS: tuple[str, ...] = (".txt", ".lst", ".list")
#: Appended to an input's stem to name its output.
OUTPUT_SUFFIX = "_medsr"
#: The ending of volume outputs (``output_format='nifti'``).
NIFTI_ENDING = ".nii.gz"
#: Volume statuses in the summary.
STATUSES: tuple[str, ...] = ("done", "skipped", "failed", "interrupted", "not run")
#: Files :func:`MedSRLib.io.write_dicom_series` writes (a DICOM output folder holding only these may be replaced).
_DICOM_OUTPUT_FILE = re.compile(DICOM_OUTPUT_FILE)


def _volume_ending(name: str) -> str | None:
    lower = name.lower()
    return next((e for e in VOLUME_ENDINGS if lower.endswith(e) and len(lower) > len(e)), None)


def _visible(names: Sequence[str]) -> list[str]:
    return sorted(n for n in names if not n.startswith("."))


def _holds_dicom(folder: Path) -> bool:
    """True when ``folder`` directly holds a DICOM file (``DICM`` preamble, or a ``.dcm``/``.ima`` name)."""
    from .io.dicom import is_dicom_file

    try:
        entries = _visible(os.listdir(folder))
    except OSError:
        return False
    for name in entries:
        path = folder / name
        if path.is_file() and (name.lower().endswith((".dcm", ".ima")) or is_dicom_file(path)):
            return True
    return False


def is_cohort_input(path: str | os.PathLike[str], *, output: str | os.PathLike[str] | None = None,
                    output_format: str = "auto") -> bool:
    """True when ``path`` is a cohort (a list file, or a folder of volumes) rather than one volume.

    A folder that directly holds DICOM files is one series (not a cohort). A folder without DICOM
    files at its top is a cohort, except when ``output`` names a volume file (``.nii.gz``, ...) and
    ``output_format`` is not ``'dicom'``: then it is read as one DICOM series spread over subfolders,
    as before cohorts existed.

    Raises:
        OutputPathError: ``path`` holds volume files at its top and ``output`` names one file.
    """
    from .io.writers import WRITE_FORMATS

    source = Path(path).expanduser()
    if source.is_file():
        return source.name.lower().endswith(LIST_FILE_ENDINGS)
    if not source.is_dir() or _holds_dicom(source):
        return False
    one_file = output is not None and output_format != "dicom" and str(output).lower().endswith(tuple(WRITE_FORMATS))
    if one_file:
        volumes = [n for n in _visible(os.listdir(source)) if _volume_ending(n) and (source / n).is_file()]
        if volumes:
            raise OutputPathError(
                f"input {source} is a folder of {len(volumes)} volume file(s) (e.g. {volumes[0]}); "
                f"give an output folder, not the file {Path(output).name}"  # type: ignore[arg-type]
            )
        return False
    return True


@dataclass(frozen=True)
class WorkItem:
    """One volume of a cohort.

    Attributes:
        key: the input's path relative to the cohort folder (list file: to the entries' common folder),
            ``/``-separated; the summary's ``file`` column.
        source: the absolute input path (a volume file or a DICOM series folder; may not exist when listed).
        output: the absolute planned output (a file, or a folder with ``output_format='dicom'``).
    """

    key: str
    source: Path
    output: Path


def read_list_file(path: str | os.PathLike[str]) -> list[Path]:
    """The paths in a list file (see the module docstring), absolute, in file order.

    Raises:
        InputFileError: the list file cannot be read, is not UTF-8 text, or lists nothing.
    """
    listing = Path(path).expanduser()
    try:
        text = listing.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputFileError(f"cannot read the list file {listing}: {exc}; give a UTF-8 text file, one path per line") from None
    base = listing.resolve().parent
    entries = []
    for line in text.splitlines():
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        entries.append(Path(os.path.normpath(base / Path(entry).expanduser())))
    if not entries:
        raise InputFileError(f"the list file {listing} lists no paths (blank and '#' lines are skipped); add one path per line")
    return entries


def _walk_folder(root: Path) -> tuple[list[Path], list[str]]:
    """Volume files and DICOM series folders under ``root`` (sorted walk), and the ignored files' keys."""
    found: list[Path] = []
    ignored: list[str] = []
    for folder, dirs, files in os.walk(root):
        here = Path(folder)
        dirs[:] = _visible(dirs)
        kept = []
        for name in dirs:
            if _holds_dicom(here / name):
                found.append(here / name)  # one series; read_volume reads its subfolders too
            else:
                kept.append(name)
        dirs[:] = kept
        for name in _visible(files):
            if _volume_ending(name):
                found.append(here / name)
            else:
                ignored.append((here / name).relative_to(root).as_posix())
    return found, ignored


def list_cohort(path: str | os.PathLike[str]) -> tuple[list[tuple[str, Path]], list[str]]:
    """The volumes of a cohort folder or list file as ``(key, absolute source)`` sorted by key, and the
    keys of ignored files (folder only).

    Raises:
        InputFileError: missing input, unreadable list file, no volumes, or a path listed twice.
    """
    source = Path(path).expanduser()
    if not source.exists():
        raise InputFileError(f"input not found: {source}; check the path")
    if source.is_dir():
        root = source.resolve()
        paths, ignored = _walk_folder(root)
        pairs = [(p.relative_to(root).as_posix(), p) for p in paths]
    else:
        paths = read_list_file(source)
        ignored = []
        seen: dict[Path, int] = {}
        for number, p in enumerate(paths, start=1):
            if p in seen:
                raise InputFileError(f"{source} lists {p} twice (entries {seen[p]} and {number}); list each volume once")
            seen[p] = number
        common = Path(os.path.commonpath([str(p.parent) for p in paths]))
        pairs = [(p.relative_to(common).as_posix(), p) for p in paths]
    if not pairs:
        raise InputFileError(
            f"no volumes in {source}: a cohort folder holds NIfTI/NRRD/MHA files ({', '.join(VOLUME_ENDINGS)}) "
            "or DICOM series folders"
        )
    return sorted(pairs, key=lambda kv: kv[0]), ignored


def output_relpath(key: str, *, output_format: str = "nifti") -> str:
    """The output of volume ``key`` relative to the output folder: ``a/t1.nii.gz`` -> ``a/t1_medsr.nii.gz``;
    a DICOM folder ``p1/series3`` -> ``p1/series3_medsr.nii.gz``; ``output_format='dicom'``: the folder
    ``a/t1_medsr``."""
    parent, _, name = key.rpartition("/")
    ending = _volume_ending(name)
    stem = name[: -len(ending)] if ending else name
    out = f"{stem}{OUTPUT_SUFFIX}" + ("" if output_format == "dicom" else NIFTI_ENDING)
    return f"{parent}/{out}" if parent else out


def split_parts(items: Sequence[Any], *, num_parts: int = 1, part_id: int = 0) -> list[Any]:
    """Part ``part_id`` (0-based) of ``num_parts`` of the sorted ``items``: ``items[part_id::num_parts]``.

    Every item is in exactly one part; parts differ in length by at most one.

    Raises:
        OptionError: ``num_parts`` < 1 or ``part_id`` outside ``0 .. num_parts - 1``.
    """
    if isinstance(num_parts, bool) or not isinstance(num_parts, int) or num_parts < 1:
        raise OptionError(f"num_parts must be a positive integer; got {num_parts!r}")
    if isinstance(part_id, bool) or not isinstance(part_id, int) or not 0 <= part_id < num_parts:
        raise OptionError(f"part_id must be an integer from 0 to num_parts - 1 = {num_parts - 1}; got {part_id!r}")
    return list(items)[part_id::num_parts]


@dataclass(frozen=True)
class CohortPlan:
    """What a cohort run will do (:func:`plan_cohort`).

    Attributes:
        input: the cohort folder or list file.
        output_folder: the absolute output folder.
        output_format: ``'nifti'`` (``<stem>_medsr.nii.gz``) or ``'dicom'`` (a series folder per volume).
        items: this part's volumes, sorted by key.
        n_total: volumes in the whole cohort (all parts).
        num_parts, part_id: the split (1, 0 = unsplit).
        ignored: keys of files in the cohort folder that are not volumes.
    """

    input: Path
    output_folder: Path
    output_format: str
    items: tuple[WorkItem, ...]
    n_total: int
    num_parts: int = 1
    part_id: int = 0
    ignored: tuple[str, ...] = ()


def _output_exists(path: Path) -> bool:
    from .provenance import sidecar_path

    if path.is_dir():
        return any(path.iterdir())
    return path.exists() or sidecar_path(path).exists()


def plan_cohort(
    input_path: str | os.PathLike[str],
    output_folder: str | os.PathLike[str],
    *,
    output_format: str = "nifti",
    num_parts: int = 1,
    part_id: int = 0,
    resume: bool = False,
    overwrite: bool = False,
) -> CohortPlan:
    """List the cohort, plan every output, split, and refuse what cannot work -- all before any work.

    Args:
        input_path: a cohort folder or a list file (module docstring).
        output_folder: where the outputs go (created by :func:`run_cohort`; its parent must exist);
            not the input folder nor inside it.
        output_format: ``'nifti'`` or ``'dicom'``.
        num_parts, part_id: run part ``part_id`` (0-based) of ``num_parts`` (:func:`split_parts`).
        resume: existing outputs are allowed (complete ones will be skipped; ``medsr run --continue``).
        overwrite: existing outputs are allowed (and replaced).

    Raises:
        InputFileError: see :func:`list_cohort`.
        OutputPathError: an output collision, an output folder that is a file, inside the input or
            without a parent, or existing outputs of this part without ``resume``/``overwrite``.
        OptionError: a bad ``output_format``, ``num_parts`` or ``part_id``.
    """
    if output_format not in ("nifti", "dicom"):
        raise OptionError(f"output_format must be 'nifti' or 'dicom'; got {output_format!r}")
    from .io.writers import WRITE_FORMATS

    split_parts([], num_parts=num_parts, part_id=part_id)  # validates before the (possibly long) walk
    source = Path(input_path).expanduser()
    pairs, ignored = list_cohort(source)
    out = Path(output_folder).expanduser().resolve()
    if out.name.lower().endswith(tuple(WRITE_FORMATS)) and not out.is_dir():
        raise OutputPathError(f"the output of a cohort is a folder; {out.name} names a volume file: give a folder path")
    if out.exists() and not out.is_dir():
        raise OutputPathError(f"the output of a cohort must be a folder, and {out} is a file; give a folder path")
    if not out.parent.is_dir():
        raise OutputPathError(f"output folder's parent does not exist: {out.parent}; create it first")
    if source.is_dir():
        root = source.resolve()
        if out == root or root in out.parents:
            raise OutputPathError(f"output folder {out} is inside the input folder {root}; choose a folder outside it "
                                  "(a rerun would read the outputs as inputs)")
    items: list[WorkItem] = []
    claimed: dict[str, str] = {}
    for key, path in pairs:
        rel = output_relpath(key, output_format=output_format)
        if rel.lower() in claimed:
            raise OutputPathError(
                f"{claimed[rel.lower()]} and {key} would both be written to {out / rel}; rename one input "
                "(outputs are named <stem>_medsr, mirroring the input's folders)"
            )
        claimed[rel.lower()] = key
        items.append(WorkItem(key=key, source=path, output=out / rel))
    mine = split_parts(items, num_parts=num_parts, part_id=part_id)
    if not (resume or overwrite):
        existing = [str(i.output) for i in mine if _output_exists(i.output)]
        if existing:
            raise OutputPathError(
                f"{len(existing)} output(s) exist already (e.g. {existing[0]}); pass --continue to skip the complete "
                "ones and redo the rest, or --overwrite to replace them"
            )
    return CohortPlan(input=source, output_folder=out, output_format=output_format, items=tuple(mine),
                      n_total=len(items), num_parts=num_parts, part_id=part_id, ignored=tuple(ignored))


def output_state(item: WorkItem, *, scale: int | None = None, model: str | None = None) -> tuple[str, str]:
    """Whether ``item``'s output is complete, from its provenance sidecar (``medsr run --continue``).

    Returns:
        ``(state, reason)``; ``state`` is ``'complete'`` (output and sidecar present, the sidecar is
        whole JSON naming this input with the same sha256, this scale and, when given, this model, and
        the output's size is the sidecar's), ``'missing'`` (no output), ``'incomplete'`` (redo: no or
        partial sidecar, input changed since, output size differs) or ``'conflict'`` (a complete output
        made with another scale or model; it is not replaced without ``overwrite``).
    """
    from .provenance import file_sha256, sidecar_path

    out = item.output
    if not out.exists() or (out.is_dir() and not any(out.iterdir())):
        return "missing", "no output yet"
    sidecar = sidecar_path(out)
    try:
        record = json.loads(sidecar.read_text(encoding="utf-8"))
        made_model, made_scale = record["model"]["model"], record["model"]["scale"]
        grid = record["output_grid"]
        shape = [int(n) for n in grid["shape_zyx"]]
        axis = int(grid.get("slice_axis") or 0)
        input_path, input_sha = record["input"]["path"], record["input"].get("sha256")
    except FileNotFoundError:
        return "incomplete", f"no provenance sidecar {sidecar.name}"
    except (OSError, ValueError, KeyError, TypeError, AttributeError, IndexError):
        return "incomplete", f"partial provenance sidecar {sidecar.name}"
    if (scale is not None and made_scale != scale) or (model is not None and made_model != model):
        return "conflict", (f"{out} was made with {made_model} x{made_scale}, not "
                            f"{model or 'the default model'} x{scale}; remove it or pass --overwrite")
    if input_path != str(item.source.resolve()):
        return "incomplete", f"made from another input ({input_path})"
    if input_sha and item.source.exists() and input_sha != file_sha256(item.source):
        return "incomplete", "the input changed since the output was made"
    if out.is_dir():
        n_files = sum(1 for p in out.iterdir() if _DICOM_OUTPUT_FILE.match(p.name))
        if axis not in (0, 1, 2) or n_files != shape[axis]:
            return "incomplete", f"{n_files} DICOM files, {shape[axis] if axis in (0, 1, 2) else '?'} expected"
        return "complete", "output and sidecar complete"
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(out))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        return "incomplete", "the output does not read back"
    if list(reversed(reader.GetSize())) != shape:
        return "incomplete", f"output size {tuple(reversed(reader.GetSize()))} is not the sidecar's {tuple(shape)}"
    return "complete", "output and sidecar complete"


@dataclass
class VolumeRecord:
    """One row of the cohort summary (shapes and spacings numpy ``(z, y, x)``, spacing mm).

    ``status``: ``done``, ``skipped`` (complete output, ``--continue``), ``failed`` (``error`` says
    why), ``interrupted`` (Ctrl-C during it; nothing written for it) or ``not run``. ``plane`` is the
    anatomical plane of the slices (axial, coronal, sagittal); ``run_plane`` the run made (``in``,
    ``through``, ``both``); ``scale`` the in-plane factor (None through-plane) and ``factor`` the
    slice-axis factor through-plane, else the in-plane scale (as ``medsr run --json``).
    """

    file: str
    input: str
    output: str
    status: str = "not run"
    seconds: float | None = None
    model: str | None = None
    scale: int | None = None
    modality: str | None = None
    plane: str | None = None
    run_plane: str | None = None
    factor: float | None = None
    slice_axis: int | None = None
    factors_zyx: list[float] | None = None
    input_shape_zyx: list[int] | None = None
    output_shape_zyx: list[int] | None = None
    output_spacing_zyx: list[float] | None = None
    precision: str | None = None
    device: str | None = None
    consistency_psnr: float | None = None
    flagged_slices: list[int] | None = None
    error: str | None = None

    def fill(self, run: Any) -> None:
        """The row of a volume that ran, from its :class:`~MedSRLib.run.VolumeRun` (the same summary
        ``medsr run --json`` prints for one volume)."""
        from .geometry import plane_geometry, radiological_view

        made = run.summary()
        self.model, self.scale, self.factor, self.run_plane = made["model"], made["scale"], made["factor"], made["plane"]
        self.modality = run.result.metadata["medsr"]["modality"]
        self.slice_axis = int(made["slice_axis"])
        self.plane = radiological_view(plane_geometry(run.volume, self.slice_axis)).plane
        self.factors_zyx = [float(f) for f in made["factors_zyx"]]
        self.input_shape_zyx, self.output_shape_zyx = made["input_shape_zyx"], made["output_shape_zyx"]
        self.output_spacing_zyx = [round(float(s), 6) for s in made["output_spacing_zyx"]]
        self.precision, self.device = made["precision"], made["device"]
        if run.consistency is not None:
            self.consistency_psnr = made["consistency"]["psnr"]
            self.flagged_slices = list(run.consistency.flagged_slices)

    def to_json(self) -> dict[str, Any]:
        """The record as a JSON-able dict (the summary JSON's ``volumes`` entries)."""
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


#: CSV columns (lists are written space-separated).
CSV_COLUMNS: tuple[str, ...] = tuple(VolumeRecord.__dataclass_fields__)


@dataclass
class CohortSummary:
    """The outcome of :func:`run_cohort`.

    Attributes:
        plan: the plan that ran.
        records: one per volume of the part, in plan order.
        models_loaded: ``'<model> x<factor>'`` of every Predictor built (each once; ``' through-plane'``
            appended for a slice-axis network).
        seconds: wall time of the whole run.
        interrupted: the run was stopped by Ctrl-C / SIGTERM.
        in_progress: the run is still going (the summary is rewritten after every volume, so a run that
            is killed -- out of memory, a cluster's time limit -- leaves one that says how far it got;
            its ``exit_status`` is then provisional).
        paths: the summary CSV and JSON written (empty before :meth:`write`).
    """

    plan: CohortPlan
    records: list[VolumeRecord]
    models_loaded: list[str] = field(default_factory=list)
    seconds: float = 0.0
    interrupted: bool = False
    in_progress: bool = False
    paths: list[Path] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        """Volumes per status (every status present, 0 included)."""
        return {s: sum(r.status == s for r in self.records) for s in STATUSES}

    @property
    def exit_status(self) -> int:
        """``medsr run`` exit status of a cohort: 0 when every volume is done or skipped, 1 when any
        failed (the others were written), 130 when interrupted."""
        if self.interrupted:
            return 130
        return 1 if any(r.status == "failed" for r in self.records) else 0

    def to_json(self) -> dict[str, Any]:
        """The summary JSON: the run (input, output folder, part), counts, models loaded, volumes."""
        from . import __version__

        return {
            "medsr_version": __version__,
            "input": str(self.plan.input),
            "output_folder": str(self.plan.output_folder),
            "output_format": self.plan.output_format,
            "part_id": self.plan.part_id,
            "num_parts": self.plan.num_parts,
            "volumes_in_cohort": self.plan.n_total,
            "counts": self.counts(),
            "exit_status": self.exit_status,
            "interrupted": self.interrupted,
            "in_progress": self.in_progress,
            "models_loaded": list(self.models_loaded),
            "seconds": round(self.seconds, 3),
            "ignored_files": list(self.plan.ignored),
            "volumes": [r.to_json() for r in self.records],
        }

    def to_csv(self) -> str:
        """The summary CSV (header + one row per volume; lists space-separated, empty = not applicable)."""
        buffer = _io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(CSV_COLUMNS)
        for record in self.records:
            row = []
            for name in CSV_COLUMNS:
                value = getattr(record, name)
                row.append("" if value is None else " ".join(str(v) for v in value) if isinstance(value, list) else value)
            writer.writerow(row)
        return buffer.getvalue()

    def write(self) -> list[Path]:
        """Write the CSV and JSON into the output folder atomically (:func:`summary_paths`); returns them."""
        from .io.writers import write_text_atomic

        csv_path, json_path = summary_paths(self.plan)
        json_path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(csv_path, self.to_csv())
        write_text_atomic(json_path, json.dumps(self.to_json(), indent=2) + "\n")
        self.paths = [csv_path, json_path]
        return self.paths


def summary_paths(plan: CohortPlan) -> tuple[Path, Path]:
    """``(csv, json)``: ``medsr_summary.csv``/``.json`` in the output folder, ``medsr_summary_part<I>of<N>.*``
    when the cohort is split (``I`` 0-based)."""
    stem = "medsr_summary" if plan.num_parts == 1 else f"medsr_summary_part{plan.part_id}of{plan.num_parts}"
    return plan.output_folder / f"{stem}.csv", plan.output_folder / f"{stem}.json"


class CohortReporter:
    """Hooks :func:`run_cohort` calls around each volume (the CLI prints progress; the default is silent)."""

    def start(self, item: WorkItem, index: int, total: int) -> Callable[[int, int], None] | None:
        """Volume ``index`` (1-based) of ``total`` starts; may return a ``progress(done, total)`` slice callback."""
        return None

    def finish(self, record: VolumeRecord, index: int, total: int) -> None:
        """Volume ``index`` of ``total`` ended with ``record.status``."""

    def note(self, text: str) -> None:
        """A one-line note (which model runs and why)."""


def _fill_from_sidecar(record: VolumeRecord, output: Path) -> None:
    """A skipped volume's summary row from the provenance sidecar of its complete output."""
    from .provenance import sidecar_path

    made = json.loads(sidecar_path(output).read_text(encoding="utf-8"))
    grid = made.get("output_grid") or {}
    plan = grid.get("plan") or {}
    through = made.get("through_plane") or {}
    record.model, record.modality = made["model"].get("model"), made.get("modality")
    record.run_plane = grid.get("plane", "in")
    record.scale = made["model"].get("scale") if record.run_plane == "in" else None
    record.factor = through.get("factor") if through else made["model"].get("scale")
    record.precision, record.device = made.get("precision"), made.get("device")
    record.slice_axis = grid.get("slice_axis")
    record.factors_zyx = plan.get("factors_zyx")
    record.input_shape_zyx = (plan.get("input") or {}).get("shape_zyx")
    record.output_shape_zyx = grid.get("shape_zyx")
    record.output_spacing_zyx = [round(float(s), 6) for s in reversed(grid.get("spacing_mm_ijk") or [])] or None
    consistency = made.get("consistency") or {}
    record.consistency_psnr = consistency.get("psnr")
    record.flagged_slices = consistency.get("flagged_slices")


def run_cohort(
    plan: CohortPlan,
    options: RunOptions | None = None,
    *,
    resume: bool = False,
    overwrite: bool = False,
    run_options: Mapping[str, Any] | None = None,
    reporter: CohortReporter | None = None,
    **changes: Any,
) -> CohortSummary:
    """Super-resolve every volume of ``plan`` with :func:`MedSRLib.run.run_volume`, each network built once;
    write outputs and the summary.

    Args:
        plan: from :func:`plan_cohort`.
        options: the :class:`~MedSRLib.run.RunOptions` of every volume (model, scale, plane, target spacing,
            thickness, adaptation, modality, axis, weights, output dtype, clipping, check, engine options);
            ``model`` None = each volume's modality default (one Predictor per model, plane and factor
            that occurs); ``plane`` ``'auto'`` decides per volume from its spacing.
        resume: skip volumes whose output is complete (:func:`output_state`), redo incomplete ones.
        overwrite: replace existing outputs.
        run_options: the options recorded in each output's provenance (e.g. the CLI arguments;
            default: ``options.to_json()``).
        reporter: progress hooks (:class:`CohortReporter`).
        **changes: :class:`~MedSRLib.run.RunOptions` field names replacing ``options``' values
            (``run_cohort(plan, scale=2, model='bicubic')``).

    Returns:
        The :class:`CohortSummary` (also written to the output folder).

    Raises:
        MedSRError: before any volume is read: a bad option, ``model``, ``scale`` or ``weights``.
        KeyboardInterrupt: after writing the summary (complete outputs stay; nothing partial is left).
    """
    from .models import default_model, get_model
    from .run import PredictorCache
    from .safety import explain_model_choice

    opts = options if options is not None else RunOptions()
    if not isinstance(opts, RunOptions):
        raise OptionError(f"options must be a MedSRLib.run.RunOptions; got {type(opts).__name__}")
    if changes:
        opts = opts.replace(**changes)
    reporter = reporter or CohortReporter()
    cache = PredictorCache(weights=opts.weights, engine=opts.engine)
    summary = CohortSummary(plan=plan, records=[VolumeRecord(file=i.key, input=str(i.source), output=str(i.output))
                                                for i in plan.items], models_loaded=cache.loaded)
    if opts.weights is not None and opts.model is None:
        raise OptionError("--weights (weights=) needs --model (model=): the weights of one network cannot serve "
                          "every modality's default model")
    fixed = opts.fixed_plane
    scale = 2 if opts.scale is None else opts.scale
    if opts.model is None and fixed == "in":  # a scale no default model supports fails once, here, not per volume
        for each in ((opts.modality,) if opts.modality else ("CT", "MR")):
            default_model(each, scale).check_scale(scale)
    elif opts.model is not None:  # fail fast, before anything is read or written
        spec = get_model(opts.model)
        explain_model_choice(spec, modality=spec.modality.upper(), scale=scale, weights=opts.weights)
        if fixed == "in" and not spec.multi_scale:
            spec.check_scale(scale)
            cache.get(spec, scale)
    noted: set[str] = set()

    def note(text: str) -> None:  # which model runs and why: once per model and modality
        if text not in noted:
            noted.add(text)
            reporter.note(text)

    plan.output_folder.mkdir(exist_ok=True)
    started = time.perf_counter()
    total = len(plan.items)
    index = 0
    try:
        for index, (item, record) in enumerate(zip(plan.items, summary.records), start=1):
            progress = reporter.start(item, index, total)
            t0 = time.perf_counter()
            try:
                _run_one(item, record, opts, resume=resume, overwrite=overwrite, run_options=run_options,
                         predictors=cache, note=note, output_format=plan.output_format, progress=progress)
            except MedSRError as exc:
                record.status, record.error = "failed", str(exc)
            except Exception as exc:  # noqa: BLE001 - one volume's unexpected failure must not stop the cohort
                record.status, record.error = "failed", f"internal error {type(exc).__name__}: {exc}"
            record.seconds = round(time.perf_counter() - t0, 3)
            reporter.finish(record, index, total)
            if index < total:  # how far the run got, should it be killed before the end
                summary.in_progress, summary.seconds = True, time.perf_counter() - started
                try:
                    summary.write()
                except (OSError, MedSRError) as exc:
                    note(f"the summary could not be updated after {item.key} ({exc}); it is written at the end")
    except KeyboardInterrupt:
        summary.in_progress = False
        summary.interrupted = True
        if index and summary.records[index - 1].status == "not run":
            summary.records[index - 1].status = "interrupted"
        summary.seconds = time.perf_counter() - started
        summary.write()
        raise
    summary.in_progress, summary.seconds = False, time.perf_counter() - started
    summary.write()
    return summary


def _run_one(
    item: WorkItem,
    record: VolumeRecord,
    options: RunOptions,
    *,
    resume: bool,
    overwrite: bool,
    run_options: Mapping[str, Any] | None,
    predictors: Any,
    note: Callable[[str], None],
    output_format: str,
    progress: Callable[[int, int], None] | None,
) -> None:
    """One volume: skip if complete (``resume``), else :func:`MedSRLib.run.run_volume`; fills ``record``."""
    from .run import run_volume

    replace_output = overwrite
    if resume and not overwrite:
        state, reason = output_state(item, scale=options.scale, model=options.model)
        if state == "complete":
            record.status = "skipped"
            _fill_from_sidecar(record, item.output)
            return
        if state == "conflict":
            raise OutputPathError(reason)
        replace_output = True  # an incomplete output, or a stale sidecar without output, is redone
    run = run_volume(item.source, item.output, options, output_format=output_format, overwrite=replace_output,
                     replace_dicom=replace_output, make_parents=True, predictors=predictors, record_options=run_options, note=note,
                     progress=lambda label: progress)
    record.fill(run)
    record.status = "done"
