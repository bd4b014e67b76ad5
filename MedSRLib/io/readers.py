"""read_volume: NIfTI, NRRD, MetaImage, DICOM series / multi-frame files and 2D images -> Volume.

SimpleITK reads everything (ITK's LPS geometry, as Slicer's reader). Decisions:

* A **2D image** file (PNG, a single-slice DICOM, a 2D NIfTI, ...) becomes a volume of **one slice**
  (array ``(1, h, w)``, slice spacing 1 mm) so it can be super-resolved in-plane.
* A trailing singleton 4th dimension (``x, y, z, 1``) is squeezed; other **4D**, **vector/RGB** and
  **complex** images raise :class:`~MedSRLib.errors.UnsupportedImageError` (the pixel data is not loaded).
* A NIfTI whose sform is sheared and which has no qform is refused by ITK:
  :class:`~MedSRLib.errors.GeometryError`. When the sform is sheared but a qform exists, ITK (and so
  Slicer) silently uses the qform: MedSRLib does the same and warns, with
  ``metadata["nifti_sform_ignored"] = True``.
* ITK zero-fills a truncated NIfTI without an error, so NIfTI data length is checked first.
* **NIfTI headers are read one way only** (ITK's, checked against nibabel's in the tests): voxel sizes
  ``pixdim[1..3]`` must be finite and positive (ITK reads a negative one as a flip that nibabel does
  not apply, and a NaN one as 1 mm), and when both sform and qform are set and the sform is
  orthogonal they must place the voxels alike (nibabel uses the sform, ITK may use the qform); either
  is refused with :class:`~MedSRLib.errors.GeometryError` naming the field.
* **Direction matrices** must be orthonormal (no shear, no scaling folded in): an MHA/NRRD with a
  sheared or scaled direction is refused (:class:`~MedSRLib.errors.GeometryError`) instead of being
  written as an orthogonal NIfTI with voxels moved.
* **Size** is checked from the header before any voxel is read: a file whose data cannot be as large
  as its header says (shorter than raw data, or more than deflate's 1032:1 limit for compressed data)
  is refused as truncated, and one that does not fit in the available memory with
  :class:`~MedSRLib.errors.ResourceError`.
* **Modality**: DICOM whose Modality is not CT or MR (SEG, RTDOSE, CR, DX, NM, US, OT, ...) and NIfTI
  label maps (intent ``NIFTI_INTENT_LABEL``) raise :class:`~MedSRLib.errors.ModalityError` unless
  ``modality=`` says what to treat them as.
"""

from __future__ import annotations

import gzip
import os
import warnings
import zlib
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from ..errors import GeometryError, InputFileError, ModalityError, OptionError, UnsupportedImageError
from ..geometry import ijk_to_ras_matrix, volume_from_sitk
from ..volume import Volume
from ._itk import check_path_components, itk_error_message, native_stderr_silenced
from .dicom import find_series, is_dicom_file, read_dicom_series

__all__ = ["READ_FORMATS", "read_volume", "file_format"]

#: File name endings -> format names (longest ending first where they overlap).
READ_FORMATS: dict[str, str] = {
    ".nii.gz": "nifti",
    ".nii": "nifti",
    ".nrrd": "nrrd",
    ".nhdr": "nrrd",
    ".mha": "metaimage",
    ".mhd": "metaimage",
    ".dcm": "dicom",
    ".dicom": "dicom",
    ".ima": "dicom",
    ".png": "png",
    ".jpg": "jpeg",
    ".jpeg": "jpeg",
    ".bmp": "bmp",
    ".tif": "tiff",
    ".tiff": "tiff",
}

#: Format names -> ITK ImageIO class names (used when ITK does not recognise an upper-case ending).
_ITK_IO = {"nifti": "NiftiImageIO", "nrrd": "NrrdImageIO", "metaimage": "MetaImageIO", "png": "PNGImageIO",
           "jpeg": "JPEGImageIO", "bmp": "BMPImageIO", "tiff": "TIFFImageIO"}

#: NIfTI datatype codes -> numpy dtype names (NIfTI-1 standard, ``nifti1.h``).
_NIFTI_DTYPES = {2: "uint8", 4: "int16", 8: "int32", 16: "float32", 64: "float64", 256: "int8",
                 512: "uint16", 768: "uint32", 1024: "int64", 1280: "uint64"}


def file_format(path: str | os.PathLike[str]) -> str | None:
    """The format name of a file from its name (``'nifti'``, ``'nrrd'``, ``'dicom'``, ...), or None."""
    name = Path(path).name.lower()
    for ending, fmt in READ_FORMATS.items():
        if name.endswith(ending):
            return fmt
    return None


def _check_modality_argument(modality: str | None) -> str | None:
    if modality is None:
        return None
    key = modality.strip().upper() if isinstance(modality, str) else None
    if key not in ("CT", "MR"):
        raise OptionError(f"modality must be 'CT', 'MR' or None; got {modality!r}")
    return key


def _meta(reader: Any, key: str) -> str | None:
    return reader.GetMetaData(key) if reader.HasMetaDataKey(key) else None


def _check_nifti_length(path: Path, reader: Any) -> None:
    """Raise InputFileError when the NIfTI voxel data is shorter than the header says."""
    try:
        ndim = int(_meta(reader, "dim[0]") or 0)
        dims = [int(_meta(reader, f"dim[{i}]") or 1) for i in range(1, ndim + 1)]
        expected = int(float(_meta(reader, "vox_offset") or 352)) + int(np.prod(dims)) * int(_meta(reader, "bitpix") or 0) // 8
    except ValueError:
        return
    if path.name.lower().endswith(".gz"):
        actual = 0
        try:
            with gzip.open(path, "rb") as handle:
                while chunk := handle.read(1 << 22):
                    actual += len(chunk)
        except (EOFError, OSError, zlib.error):
            raise InputFileError(f"{path} is truncated or corrupted (gzip stream ends early); re-export or re-download it") from None
    else:
        actual = path.stat().st_size
    if actual < expected:
        raise InputFileError(
            f"{path} is truncated: {actual} bytes of data where its header needs {expected}; re-export or re-download it"
        )


def _raw_nifti_pixdim(path: Path) -> np.ndarray | None:
    """``pixdim[0..7]`` as stored in a NIfTI-1/2 header (ITK's metadata shows them sanitised), or None."""
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    try:
        with opener(path, "rb") as handle:  # type: ignore[operator]
            head = handle.read(540)
    except (OSError, EOFError, zlib.error):
        return None
    for order in ("<", ">"):
        if len(head) >= 348 and np.frombuffer(head[:4], f"{order}i4")[0] == 348:
            return np.frombuffer(head[76:108], f"{order}f4").astype(np.float64)
        if len(head) >= 540 and np.frombuffer(head[:4], f"{order}i4")[0] == 540:
            return np.frombuffer(head[104:168], f"{order}f8")
    return None


def _check_nifti_header(path: Path, reader: Any) -> None:
    """Refuse NIfTI headers that ITK and nibabel read differently (see the module docstring)."""
    try:
        ndim = int(_meta(reader, "dim[0]") or 3)
    except ValueError:
        ndim = 3
    pixdim = _raw_nifti_pixdim(path)
    if pixdim is None:
        return
    for axis in range(1, min(max(ndim, 1), 3) + 1):
        value = float(pixdim[axis])
        if not (np.isfinite(value) and value > 0):
            raise GeometryError(
                f"{path.name}: invalid NIfTI header: pixdim[{axis}] = {value:g} (voxel sizes must be positive and "
                "finite; ITK and nibabel read it differently); fix the header, e.g. nibabel img.header.set_zooms(...)"
            )


#: deflate (gzip/zlib) cannot compress more than this (1032:1), so compressed data of N bytes holds at most N * 1032.
_DEFLATE_MAX_RATIO = 1032


def _bytes_per_pixel(reader: Any) -> int:
    import re

    import SimpleITK as sitk

    bits = re.search(r"(\d+)-bit", sitk.GetPixelIDValueAsString(reader.GetPixelID()))
    return (int(bits.group(1)) // 8 if bits else 8) * max(1, int(reader.GetNumberOfComponents()))


def _attached_header(path: Path, fmt: str) -> tuple[int, bool] | None:
    """``(header bytes, compressed)`` of an NRRD/MetaImage file holding its own data, else None."""
    with open(path, "rb") as handle:
        head = handle.read(1 << 16)
    if fmt == "nrrd":
        end = head.find(b"\n\n")
        if end < 0 or b"data file:" in head[:end] or b"datafile:" in head[:end]:
            return None
        encoding = next((line.split(b":", 1)[1].strip() for line in head[:end].splitlines()
                         if line.lower().startswith(b"encoding:")), b"raw")
        if encoding not in (b"raw", b"gzip", b"gz"):
            return None
        return end + 2, encoding != b"raw"
    marker = head.find(b"ElementDataFile")
    if marker < 0:
        return None
    line_end = head.find(b"\n", marker)
    if line_end < 0 or b"LOCAL" not in head[marker:line_end]:
        return None
    compressed = b"CompressedData = True" in head[:marker]
    return line_end + 1, compressed


def _check_size_from_header(path: Path, reader: Any, fmt: str) -> None:
    """Before reading voxels: refuse data that cannot be complete, or that does not fit in memory."""
    import SimpleITK as sitk

    from ..safety import check_memory

    size = [int(n) for n in reader.GetSize()]
    needed = float(np.prod(size, dtype=np.float64)) * _bytes_per_pixel(reader)
    described = f"{'x'.join(map(str, size))} {sitk.GetPixelIDValueAsString(reader.GetPixelID())}"
    if fmt in ("nrrd", "metaimage"):
        layout = _attached_header(path, fmt)
        if layout is not None:
            header, compressed = layout
            stored = path.stat().st_size - header
            most = stored * _DEFLATE_MAX_RATIO if compressed else stored
            if most < needed:
                raise InputFileError(
                    f"{path} is truncated: its header says {described} ({needed / 2**20:.0f} MiB) but the file holds "
                    f"{stored} bytes of data; re-export or re-download it"
                )
    check_memory(needed, f"reading {path.name} ({described})", advice="crop or downsample it first")


def _nifti_metadata(path: Path, reader: Any, image: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {}
    code = _meta(reader, "datatype")
    if code is not None and code.strip().isdigit():
        meta["original_dtype"] = _NIFTI_DTYPES.get(int(code))
    slope, inter = _meta(reader, "scl_slope"), _meta(reader, "scl_inter")
    try:
        slope_f, inter_f = float(slope or 0), float(inter or 0)
    except ValueError:
        slope_f, inter_f = 0.0, 0.0
    meta["rescale"] = {"slope": slope_f, "intercept": inter_f} if slope_f not in (0.0, 1.0) or inter_f else None
    rows = [_meta(reader, f"srow_{a}") for a in "xyz"]
    sform_code = _meta(reader, "sform_code")
    if all(rows) and sform_code not in (None, "0") and image.GetDimension() == 3:
        try:
            sform = np.array([[float(v) for v in r.split()] for r in rows])  # type: ignore[union-attr]
        except ValueError:
            return meta
        # NIfTI world is RAS, like Slicer's: compare with the geometry ITK chose (no voxel copy)
        chosen = SimpleNamespace(spacing=image.GetSpacing(), origin=image.GetOrigin(),
                                 direction=np.reshape(image.GetDirection(), (3, 3)))
        if sform.shape == (3, 4) and not np.allclose(sform, ijk_to_ras_matrix(chosen)[:3], atol=1e-3):
            columns = sform[:, :3] / np.linalg.norm(sform[:, :3], axis=0)
            if np.allclose(columns.T @ columns, np.eye(3), atol=1e-4):
                flips = [a for a in range(3) if float(np.dot(columns[:, a], np.asarray(chosen.direction)[:, a]
                                                               * np.array([-1.0, -1.0, 1.0]))) < 0]
                what = f"axis {'/'.join('ijk'[a] for a in flips)} flipped" if flips else "another position or rotation"
                raise GeometryError(
                    f"{path.name}: the NIfTI sform and qform disagree ({what}); nibabel-based tools use the sform, "
                    "ITK and 3D Slicer the qform: set sform_code or qform_code to 0 for the one that is wrong"
                )
            meta["nifti_sform_ignored"] = True
            warnings.warn(
                f"{path.name}: the NIfTI sform is sheared (gantry tilt?) and disagrees with the qform; like ITK and "
                "3D Slicer, MedSRLib places voxels with the qform",
                RuntimeWarning,
                stacklevel=3,
            )
    return meta


def _reject_non_scalar(reader_or_image: Any, path: Path) -> None:
    import SimpleITK as sitk

    components = (
        reader_or_image.GetNumberOfComponents()
        if hasattr(reader_or_image, "GetNumberOfComponents")
        else reader_or_image.GetNumberOfComponentsPerPixel()
    )
    pixel = sitk.GetPixelIDValueAsString(reader_or_image.GetPixelIDValue())
    if "complex" in pixel:
        raise UnsupportedImageError(f"{path.name} has complex pixels; save the magnitude image and read that")
    if components != 1:
        raise UnsupportedImageError(
            f"{path.name} has {components} components per pixel (complex, RGB or vector data); save a single "
            "greyscale channel (e.g. the magnitude) and read that"
        )


def _to_3d(image: Any, path: Path, metadata: dict[str, Any]) -> Any:
    """A 3D scalar image: 2D -> one slice, trailing singleton 4th dimension squeezed, else refused."""
    import SimpleITK as sitk

    _reject_non_scalar(image, path)
    dim, size = image.GetDimension(), list(image.GetSize())
    if dim == 2:
        metadata["image_2d"] = True
        return sitk.JoinSeries(image)
    if dim == 4 and size[3] == 1:
        metadata["squeezed_4d"] = True
        return sitk.Extract(image, size[:3] + [0], [0, 0, 0, 0])
    if dim != 3:
        raise UnsupportedImageError(
            f"{path.name} is a {dim}D image of size {'x'.join(map(str, size))}; MedSR handles one 3D (or 2D) "
            "volume: extract a single 3D volume (e.g. one time point) first"
        )
    return image


def _read_itk_file(path: Path) -> tuple[Any, dict[str, Any]]:
    import SimpleITK as sitk

    fmt = file_format(path) or "other"
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        try:
            with native_stderr_silenced():  # MetaIO prints multi-line parse errors itself
                reader.ReadImageInformation()
        except RuntimeError as exc:
            if fmt not in _ITK_IO or "Unable to determine ImageIO" not in str(exc):
                raise
            reader.SetImageIO(_ITK_IO[fmt])  # ITK matches some endings case-sensitively (.MHA)
            with native_stderr_silenced():
                reader.ReadImageInformation()
    except RuntimeError as exc:
        message = itk_error_message(exc)
        if "orthonormal" in message:
            raise GeometryError(
                f"{path.name} has a sheared (non-orthonormal) affine that ITK cannot represent; resample it onto an "
                "orthogonal grid first (e.g. nibabel.processing.resample_from_to)"
            ) from None
        if "Unable to determine ImageIO" in message:
            raise InputFileError(
                f"cannot read {path.name}: not a supported or intact image file (NIfTI .nii/.nii.gz, NRRD, MetaImage "
                ".mha/.mhd, DICOM, PNG/JPEG/BMP/TIFF)"
            ) from None
        raise InputFileError(f"cannot read {path.name}: {message}") from None
    _reject_non_scalar(reader, path)
    dim, size = reader.GetDimension(), reader.GetSize()
    if dim > 4 or (dim == 4 and size[3] != 1):
        raise UnsupportedImageError(
            f"{path.name} is a {dim}D image of size {'x'.join(map(str, size))}; MedSR handles one 3D (or 2D) "
            "volume: extract a single 3D volume (e.g. one time point) first"
        )
    if fmt == "nifti":
        _check_nifti_header(path, reader)
        _check_nifti_length(path, reader)
    _check_size_from_header(path, reader, fmt)
    spacing = tuple(reader.GetSpacing())[:3]
    if not all(np.isfinite(v) and v > 0 for v in spacing):  # ITK would fail in Execute() with a vague message
        raise GeometryError(f"{path.name} has an invalid voxel spacing {spacing} mm in its header (zero, negative or "
                            "not a number); fix the header")
    try:
        image = reader.Execute()
    except MemoryError:
        from ..errors import ResourceError

        raise ResourceError(f"not enough memory to read {path.name}; use a machine with more memory or crop it first") from None
    except RuntimeError as exc:
        message = itk_error_message(exc)
        if "memory" in message.lower() or "allocat" in message.lower():
            from ..errors import ResourceError

            raise ResourceError(f"not enough memory to read {path.name}: {message}") from None
        raise InputFileError(f"cannot read {path.name}: {message}; the file may be truncated") from None
    metadata: dict[str, Any] = {"format": fmt, "n_files": 1}
    if fmt == "nifti":
        metadata.update(_nifti_metadata(path, reader, image))
        if (_meta(reader, "intent_code") or "0").strip() == "1002":
            metadata["label_map"] = "NIfTI intent NIFTI_INTENT_LABEL"
    return image, metadata


def _read_series_or_named_file(path: Path, info: Any) -> tuple[Any, dict[str, Any]]:
    """Read ``info``'s series; when ``path`` names one file of a series that its sibling files make
    unreadable (copies at the same position, uneven or broken siblings), read that file alone and warn."""
    from dataclasses import replace

    from ..errors import DicomSeriesError

    try:
        return read_dicom_series(info)
    except (DicomSeriesError, InputFileError) as exc:
        if not path.is_file() or info.n_files == 1:
            raise
        alone = replace(info, files=(path,), n_files=1, size=(info.size[0], info.size[1], 1), slice_positions=())
        image, metadata = read_dicom_series(alone)
        warnings.warn(
            f"read {path.name} alone: its series cannot be read as one volume with the other files in {path.parent} "
            f"({str(exc).split(';')[0]})",
            RuntimeWarning,
            stacklevel=3,
        )
        metadata["read_alone"] = True
        return image, metadata


def _check_modality_known(path: Path, found: str | None, given: str | None, field: str) -> None:
    """Refuse non-CT/MR DICOM and label maps unless ``modality=`` (``--modality``) says what to treat them as."""
    if found is None or found in ("CT", "MR") or given is not None:
        return
    kind = {"SEG": "a segmentation (label map)", "RTDOSE": "a radiotherapy dose grid", "RTSTRUCT": "contours",
            "label map": "a label map"}.get(found, "not a CT or MR image")
    raise ModalityError(
        f"{path.name}: {field} is {found} ({kind}); MedSR super-resolves CT and MR images: pass --modality CT or MR "
        "(modality=) to treat it as one"
    )


def _check_direction_of(image: Any, path: Path) -> None:
    """Refuse non-finite or non-positive spacing, a non-finite origin, and a sheared or scaled direction
    matrix (ITK keeps it; NIfTI writers would coerce it and move the voxels)."""
    from ..geometry import ORTHONORMAL_ATOL

    spacing, origin = image.GetSpacing(), image.GetOrigin()
    if not all(np.isfinite(v) and v > 0 for v in spacing):
        raise GeometryError(f"{path.name} has an invalid voxel spacing {tuple(spacing)} mm; fix the header (positive, finite sizes)")
    if not all(np.isfinite(v) for v in origin):
        raise GeometryError(f"{path.name} has a non-finite origin {tuple(origin)}; fix the header")

    d = np.asarray(image.GetDirection(), dtype=np.float64).reshape(3, 3)
    if not np.all(np.isfinite(d)) or not np.allclose(d.T @ d, np.eye(3), atol=ORTHONORMAL_ATOL):
        norms = ", ".join(f"{n:.4g}" for n in np.linalg.norm(d, axis=0)) if np.all(np.isfinite(d)) else "NaN"
        raise GeometryError(
            f"{path.name} has a sheared or scaled direction matrix (column lengths {norms}, not orthonormal); "
            "MedSR places voxels only on orthogonal grids: resample it onto one first (e.g. sitk.Resample)"
        )


def read_volume(
    path: str | os.PathLike[str],
    *,
    series_uid: str | None = None,
    modality: str | None = None,
) -> Volume:
    """Read a 3D (or 2D, as one slice) scalar image into a :class:`Volume` (array ``(z, y, x)``, LPS).

    Args:
        path: a ``.nii``/``.nii.gz``, ``.nrrd``/``.nhdr``, ``.mha``/``.mhd`` file, a 2D image file, a
            DICOM folder (one series, or several with ``series_uid``), a DICOM file (reads its whole
            series) or an enhanced multi-frame DICOM file.
        series_uid: which series of a DICOM folder (see :func:`MedSRLib.io.list_dicom_series`; may be
            ``''`` for an empty SeriesInstanceUID).
        modality: ``'CT'``/``'MR'`` used when the file does not say (DICOM's Modality wins).

    Returns:
        The volume; DICOM rescale slope/intercept applied (CT in HU). ``metadata`` holds
        ``source_path``, ``format``, ``dtype``, ``original_dtype``, ``rescale``, ``n_files`` and, for
        DICOM, ``series_uid``, ``series_description``, ``dicom_modality``, ``transfer_syntax``.

    Raises:
        InputFileError: missing, unreadable, truncated or unsupported file.
        DicomSeriesError: empty folder / no DICOM, or several series and no (or an unknown) ``series_uid``.
        UnsupportedImageError: 4D, vector/RGB or complex image.
        ModalityError: DICOM Modality other than CT/MR, or a NIfTI label map, without ``modality``.
        GeometryError: a sheared or scaled direction, invalid NIfTI pixdim, sform/qform disagreement.
        ResourceError: the voxels would not fit in the available memory.
        OptionError: ``modality`` or ``series_uid`` of the wrong type or value.
    """
    import SimpleITK as sitk

    fallback_modality = _check_modality_argument(modality)
    path = check_path_components(path, "input", InputFileError)
    if series_uid is not None and not isinstance(series_uid, str):
        raise OptionError(f"series_uid must be a string; got {series_uid!r}")
    if not path.exists():
        raise InputFileError(f"input not found: {path}; check the path")
    if not os.access(path, os.R_OK):
        raise InputFileError(f"input is not readable: {path}; check its permissions")
    if path.is_dir() or file_format(path) == "dicom" or is_dicom_file(path):
        info = find_series(path, series_uid=series_uid)
        _check_modality_known(path, info.modality or None, fallback_modality, "DICOM Modality")
        image, metadata = _read_series_or_named_file(path, info)
    else:
        if series_uid is not None:
            raise InputFileError(f"series_uid applies to DICOM input only; {path.name} is not DICOM (drop --series-uid)")
        image, metadata = _read_itk_file(path)
        if metadata.get("label_map"):
            _check_modality_known(path, "label map", fallback_modality, metadata["label_map"])
    image = _to_3d(image, path, metadata)
    _check_direction_of(image, path)
    volume = volume_from_sitk(image)
    dicom_modality = metadata.get("dicom_modality")
    chosen = dicom_modality if dicom_modality in ("CT", "MR") else fallback_modality
    if dicom_modality and dicom_modality not in ("CT", "MR"):
        metadata["treated_as"] = fallback_modality
    metadata.setdefault("original_dtype", None)
    metadata.setdefault("rescale", None)
    metadata["original_dtype"] = metadata["original_dtype"] or str(volume.array.dtype)
    metadata.update(
        source_path=str(path.resolve()),
        dtype=str(volume.array.dtype),
        pixel_type=sitk.GetPixelIDValueAsString(image.GetPixelIDValue()),
    )
    return volume.with_array(volume.array, modality=chosen, metadata=metadata)
