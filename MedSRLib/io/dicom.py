"""DICOM folders: find the series (pydicom headers), choose one, read it (SimpleITK / GDCM).

A *series* here is a group of image files sharing SeriesInstanceUID, SeriesNumber, image size and
orientation (an enhanced multi-frame file is a series of its own). Its identifier (``uid``, what
``series_uid=`` / ``--series-uid`` takes) is the SeriesInstanceUID -- possibly the empty string, as
in anonymised data -- or, when several series share one SeriesInstanceUID (e.g. the same image saved
in nine transfer syntaxes), ``"<SeriesInstanceUID>#<SeriesNumber>"`` (``#<n>`` = 1-based order when
even the series numbers clash).

Files are sorted by position along the slice normal (ImagePositionPatient projected on
ImageOrientationPatient's row x column), then InstanceNumber, then name. GDCM decodes every
transfer syntax (JPEG 2000, JPEG lossless, JPEG-LS, RLE, big endian) and applies
RescaleSlope/Intercept, so CT comes out in HU.
"""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DicomSeriesError, InputFileError, UnsupportedImageError
from ._itk import itk_error_message

__all__ = ["DicomSeriesInfo", "is_dicom_file", "list_dicom_series", "find_series", "read_dicom_series"]

#: SOP classes that hold no image (DICOMDIR media storage directory).
_NON_IMAGE_SOP = {"1.2.840.10008.1.3.10"}
#: Relative spread of slice gaps above which a series is reported as non-uniformly sampled.
_GAP_RTOL = 1e-2


@dataclass(frozen=True)
class DicomSeriesInfo:
    """One image series found in a DICOM folder.

    Attributes:
        uid: the identifier to pass as ``series_uid`` (see the module docstring; may be ``''``).
        series_instance_uid: the files' SeriesInstanceUID (``''`` when empty or missing).
        series_number: SeriesNumber, or None.
        description: SeriesDescription (``''`` when missing).
        modality: DICOM Modality (``'CT'``, ``'MR'``, ...; ``''`` when missing).
        n_files: number of files.
        size: ITK order ``(columns, rows, slices)``; slices = files, or frames of a multi-frame file.
        files: the files, sorted along the slice normal.
        slice_positions: mm along the slice normal of each file (empty when a file has no position).
        samples_per_pixel: 1 for greyscale, 3 for colour.
    """

    uid: str
    series_instance_uid: str
    series_number: int | None
    description: str
    modality: str
    n_files: int
    size: tuple[int, int, int]
    files: tuple[Path, ...] = field(repr=False)
    slice_positions: tuple[float, ...] = field(default=(), repr=False)
    samples_per_pixel: int = field(default=1, repr=False)

    def summary(self) -> str:
        """One line: ``uid='...' 'description' MR, 35 files, 256x256x35``."""
        n = "file" if self.n_files == 1 else "files"
        desc = f" '{self.description}'" if self.description else ""
        mod = f" {self.modality}," if self.modality else ","
        return f"uid='{self.uid}'{desc}{mod} {self.n_files} {n}, {'x'.join(str(v) for v in self.size)}"


def is_dicom_file(path: Path) -> bool:
    """True when ``path`` is a file with the DICOM Part 10 preamble (``DICM`` at byte 128)."""
    try:
        with open(path, "rb") as handle:
            handle.seek(128)
            return handle.read(4) == b"DICM"
    except OSError:
        return False


@dataclass
class _Header:
    path: Path
    series_instance_uid: str
    series_number: int | None
    description: str
    modality: str
    rows: int
    columns: int
    frames: int
    orientation: tuple[float, ...] | None
    position: tuple[float, float, float] | None
    instance: int | None
    sop_instance_uid: str
    samples: int


def _number(value: Any, kind: type = float) -> Any:
    try:
        return kind(value)
    except (TypeError, ValueError):
        return None


def _read_header(path: Path) -> _Header | None:
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    except (InvalidDicomError, OSError, EOFError, ValueError, KeyError, TypeError):
        return None
    if "Rows" not in ds or "Columns" not in ds or str(ds.get("SOPClassUID", "")) in _NON_IMAGE_SOP:
        return None
    iop = ds.get("ImageOrientationPatient")
    ipp = ds.get("ImagePositionPatient")
    orientation = tuple(round(float(v), 4) for v in iop) if iop is not None and len(iop) == 6 else None
    position = tuple(float(v) for v in ipp) if ipp is not None and len(ipp) == 3 else None
    return _Header(
        path=path,
        series_instance_uid=str(ds.get("SeriesInstanceUID", "") or "").strip(),
        series_number=_number(ds.get("SeriesNumber"), int),
        description=str(ds.get("SeriesDescription", "") or "").strip(),
        modality=str(ds.get("Modality", "") or "").strip().upper(),
        rows=int(ds.Rows),
        columns=int(ds.Columns),
        frames=_number(ds.get("NumberOfFrames"), int) or 1,
        orientation=orientation,  # type: ignore[arg-type]
        position=position,  # type: ignore[arg-type]
        instance=_number(ds.get("InstanceNumber"), int),
        sop_instance_uid=str(ds.get("SOPInstanceUID", "") or ""),
        samples=_number(ds.get("SamplesPerPixel"), int) or 1,
    )


def _candidate_files(folder: Path, recursive: bool) -> list[Path]:
    if recursive:
        found = []
        for root, dirs, files in os.walk(folder):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            found.extend(Path(root) / f for f in sorted(files) if not f.startswith("."))
        return found
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))


def _slice_key(header: _Header) -> tuple[float, int, str]:
    along = 0.0
    if header.position is not None and header.orientation is not None:
        normal = np.cross(header.orientation[:3], header.orientation[3:])
        along = float(np.dot(normal, header.position))
    return (along, header.instance if header.instance is not None else 0, header.path.name)


def _series_from_headers(headers: list[_Header]) -> list[DicomSeriesInfo]:
    groups: dict[tuple, list[_Header]] = defaultdict(list)
    for h in headers:
        # a multi-frame file is a volume on its own
        key = (h.series_instance_uid, h.series_number, h.rows, h.columns, h.orientation,
               h.sop_instance_uid if h.frames > 1 else "")
        groups[key].append(h)
    by_uid: dict[str, list[tuple]] = defaultdict(list)
    for key in groups:
        by_uid[key[0]].append(key)
    infos = []
    for uid, keys in by_uid.items():
        keys.sort(key=lambda k: (k[1] if k[1] is not None else -1, min(str(h.path) for h in groups[k])))
        numbers = [k[1] for k in keys]
        distinct_numbers = None not in numbers and len(set(numbers)) == len(numbers)
        for index, key in enumerate(keys, start=1):
            members = sorted(groups[key], key=_slice_key)
            if len(keys) == 1:
                ident = uid
            else:
                ident = f"{uid}#{key[1] if distinct_numbers else index}"
            first = members[0]
            slices = first.frames if len(members) == 1 else len(members)
            located = all(h.position is not None and h.orientation is not None for h in members)
            infos.append(
                DicomSeriesInfo(
                    uid=ident,
                    series_instance_uid=uid,
                    series_number=first.series_number,
                    description=first.description,
                    modality=first.modality,
                    n_files=len(members),
                    size=(first.columns, first.rows, slices),
                    files=tuple(h.path for h in members),
                    slice_positions=tuple(_slice_key(h)[0] for h in members) if located else (),
                    samples_per_pixel=first.samples,
                )
            )
    infos.sort(key=lambda i: (i.series_number if i.series_number is not None else -1, i.uid))
    return infos


def list_dicom_series(folder: str | os.PathLike[str], *, recursive: bool = True) -> list[DicomSeriesInfo]:
    """Every image series in ``folder`` (and its subfolders when ``recursive``), by series number.

    Files without the DICOM preamble or without pixel rows/columns (DICOMDIR, reports) are skipped.

    Raises:
        InputFileError: ``folder`` does not exist or is not a folder.
        DicomSeriesError: no DICOM image file was found.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputFileError(f"DICOM folder not found: {folder}; check the path")
    headers = [h for h in (_read_header(p) for p in _candidate_files(folder, recursive) if is_dicom_file(p)) if h]
    if not headers:
        raise DicomSeriesError(f"no DICOM image files in {folder}; choose the folder that holds the series' files")
    return _series_from_headers(headers)


def _listing(infos: list[DicomSeriesInfo]) -> str:
    return "; ".join(i.summary() for i in infos)


def _why_not_an_image(path: Path) -> str:
    """One line saying why the named file ``path`` is not a readable DICOM image (no bytes echoed)."""
    import pydicom

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=False, force=True)
    except Exception:  # noqa: BLE001 - any parse failure means "not DICOM"
        return f"{path.name} is not a DICOM file (no DICOM header could be parsed); check the file or pass its folder"
    modality = str(ds.get("Modality", "") or "").strip() or "not given"
    preamble = "" if is_dicom_file(path) else " and has no DICOM preamble ('DICM' at byte 128)"
    if "PixelData" not in ds or "Rows" not in ds:
        return f"{path.name} is a DICOM object without image pixels (Modality {modality}){preamble}; pass an image file or series folder"
    return (f"{path.name} is a DICOM image{preamble} that GDCM cannot read; re-save it as a DICOM Part 10 file "
            "(e.g. pydicom: ds.save_as(name, enforce_file_format=True))")


def find_series(path: str | os.PathLike[str], *, series_uid: str | None = None) -> DicomSeriesInfo:
    """The series to read from a DICOM folder, or the series of a single DICOM file.

    A folder with one series needs no ``series_uid``; with several, ``series_uid`` picks one (the
    ``uid`` of :class:`DicomSeriesInfo`; a SeriesInstanceUID shared by several series is ambiguous).
    A file selects its own series among the files of its folder (not its subfolders).

    Raises:
        DicomSeriesError: no series, several and none chosen, or ``series_uid`` not found (the message
            lists the series found).
    """
    path = Path(path)
    if path.is_file():
        try:
            infos = list_dicom_series(path.parent, recursive=False)
        except DicomSeriesError:
            infos = []
        resolved = path.resolve()
        mine = [i for i in infos if any(f.resolve() == resolved for f in i.files)]
        if not mine:
            raise DicomSeriesError(_why_not_an_image(path))
        info = mine[0]
        if series_uid is not None and series_uid not in (info.uid, info.series_instance_uid):
            raise DicomSeriesError(
                f"{path} belongs to series '{info.uid}', not '{series_uid}'; pass the folder to choose another series"
            )
        return info
    infos = list_dicom_series(path)
    if series_uid is None:
        if len(infos) == 1:
            return infos[0]
        raise DicomSeriesError(
            f"{path} holds {len(infos)} DICOM series; choose one with --series-uid (series_uid=): {_listing(infos)}"
        )
    exact = [i for i in infos if i.uid == series_uid]
    if exact:
        return exact[0]
    shared = [i for i in infos if i.series_instance_uid == series_uid]
    if len(shared) == 1:
        return shared[0]
    if shared:
        raise DicomSeriesError(
            f"SeriesInstanceUID '{series_uid}' is shared by {len(shared)} series in {path}; "
            f"pass --series-uid with one of: {_listing(shared)}"
        )
    raise DicomSeriesError(f"no DICOM series '{series_uid}' in {path}; available: {_listing(infos)}")


def _stored_dtype(path: Path) -> tuple[str | None, dict[str, float] | None, str]:
    import pydicom

    ds = pydicom.dcmread(path, stop_before_pixels=True)
    bits = _number(ds.get("BitsAllocated"), int)
    signed = _number(ds.get("PixelRepresentation"), int)
    dtype = f"{'int' if signed else 'uint'}{bits}" if bits in (8, 16, 32) else None
    slope, intercept = _number(ds.get("RescaleSlope")), _number(ds.get("RescaleIntercept"))
    rescale = None
    if slope is not None or intercept is not None:
        rescale = {"slope": 1.0 if slope is None else slope, "intercept": 0.0 if intercept is None else intercept}
    syntax = str(getattr(ds.file_meta, "TransferSyntaxUID", "")) if hasattr(ds, "file_meta") else ""
    return dtype, rescale, syntax


def _slice_tags(path: Path) -> dict[str, float | None]:
    """``slice_thickness_mm`` (SliceThickness, 0018,0050) and ``spacing_between_slices_mm``
    (SpacingBetweenSlices, 0018,0088) of a file; None when missing, empty or not positive."""
    import pydicom

    ds = pydicom.dcmread(path, stop_before_pixels=True)

    def positive(keyword: str) -> float | None:
        value = _number(ds.get(keyword))
        return float(value) if value is not None and np.isfinite(value) and value > 0 else None

    return {"slice_thickness_mm": positive("SliceThickness"), "spacing_between_slices_mm": positive("SpacingBetweenSlices")}


def _check_gaps(info: DicomSeriesInfo) -> None:
    """Refuse a multi-file series whose slice positions are not evenly spaced (a volume has one spacing).

    A missing slice, or a far slice in the same series, would otherwise be placed on a uniform grid
    millimetres (or centimetres) from where it was acquired.

    Raises:
        DicomSeriesError: two files share a slice position (echoes, phases, time points), or the gaps
            between consecutive positions differ by more than 1 % of the median gap (the message lists
            the positions that disagree, mm along the slice normal).
    """
    if info.n_files < 2 or len(info.slice_positions) != info.n_files:
        return
    positions = np.asarray(info.slice_positions)
    gaps = np.diff(positions)
    if np.any(np.abs(gaps) < 1e-6):
        raise DicomSeriesError(
            f"series '{info.uid}' has several files at the same slice position (echoes, phases or time points); "
            "export one volume per series, or choose another series"
        )
    step = float(np.median(gaps))
    bad = np.flatnonzero(np.abs(gaps - step) > _GAP_RTOL * abs(step))
    if bad.size:
        listed = "; ".join(
            f"{info.files[i].name} at {positions[i]:.2f} mm -> {info.files[i + 1].name} at {positions[i + 1]:.2f} mm "
            f"(gap {gaps[i]:.2f})" for i in bad[:4]
        )
        more = f" and {bad.size - 4} more" if bad.size > 4 else ""
        raise DicomSeriesError(
            f"DICOM series '{info.uid}' is not evenly spaced (usual gap {step:.3g} mm): {listed}{more}; a missing or "
            "stray slice would be misplaced: remove the stray files or read a complete series"
        )


def read_dicom_series(info: DicomSeriesInfo) -> tuple[Any, dict[str, Any]]:
    """Read a series with SimpleITK: ``(sitk.Image, metadata)`` (rescale applied by GDCM).

    Raises:
        UnsupportedImageError: colour (RGB/YBR) pixels.
        DicomSeriesError: several files at one slice position, or unevenly spaced slices.
        InputFileError: GDCM cannot decode the files (truncated, unknown compression).
    """
    import SimpleITK as sitk

    if info.samples_per_pixel > 1:
        raise UnsupportedImageError(
            f"DICOM series '{info.uid}' has colour pixels ({info.samples_per_pixel} samples per pixel); "
            "only greyscale CT/MR can be super-resolved"
        )
    _check_gaps(info)
    names = [str(p) for p in info.files]
    try:
        if len(names) == 1:
            image = sitk.ReadImage(names[0])
        else:
            reader = sitk.ImageSeriesReader()
            reader.SetFileNames(names)
            image = reader.Execute()
    except RuntimeError as exc:
        raise InputFileError(
            f"cannot decode DICOM series '{info.uid}' ({info.n_files} files in {info.files[0].parent}): "
            f"{itk_error_message(exc)}; check that the files are complete"
        ) from None
    original_dtype, rescale, syntax = _stored_dtype(info.files[0])
    metadata = {
        **_slice_tags(info.files[0]),
        "format": "dicom",
        "series_uid": info.uid,
        "series_instance_uid": info.series_instance_uid,
        "series_number": info.series_number,
        "series_description": info.description,
        "dicom_modality": info.modality or None,
        "n_files": info.n_files,
        "rescale": rescale,
        "original_dtype": original_dtype,
        "transfer_syntax": syntax,
    }
    return image, metadata

