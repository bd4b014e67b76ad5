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

from ..errors import GeometryError, InputFileError, UnsupportedImageError
from ..geometry import ijk_to_ras_matrix, volume_from_sitk
from ..volume import Volume
from ._itk import itk_error_message
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
    key = str(modality).strip().upper()
    if key not in ("CT", "MR"):
        raise ValueError(f"modality must be 'CT', 'MR' or None; got {modality!r}")
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
            f"{path.name} has {components} components per pixel (RGB/vector); convert it to a single greyscale channel first"
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
            reader.ReadImageInformation()
        except RuntimeError as exc:
            if fmt not in _ITK_IO or "Unable to determine ImageIO" not in str(exc):
                raise
            reader.SetImageIO(_ITK_IO[fmt])  # ITK matches some endings case-sensitively (.MHA)
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
        _check_nifti_length(path, reader)
    try:
        image = reader.Execute()
    except RuntimeError as exc:
        raise InputFileError(f"cannot read {path.name}: {itk_error_message(exc)}; the file may be truncated") from None
    metadata: dict[str, Any] = {"format": fmt, "n_files": 1}
    if fmt == "nifti":
        metadata.update(_nifti_metadata(path, reader, image))
    return image, metadata


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
        GeometryError: a sheared affine ITK refuses.
    """
    import SimpleITK as sitk

    fallback_modality = _check_modality_argument(modality)
    path = Path(path)
    if not path.exists():
        raise InputFileError(f"input not found: {path}; check the path")
    if not os.access(path, os.R_OK):
        raise InputFileError(f"input is not readable: {path}; check its permissions")
    if path.is_dir() or file_format(path) == "dicom" or is_dicom_file(path):
        info = find_series(path, series_uid=series_uid)
        image, metadata = read_dicom_series(info)
    else:
        if series_uid is not None:
            raise InputFileError(f"series_uid applies to DICOM input only; {path.name} is not DICOM (drop --series-uid)")
        image, metadata = _read_itk_file(path)
    image = _to_3d(image, path, metadata)
    volume = volume_from_sitk(image)
    dicom_modality = metadata.get("dicom_modality")
    chosen = dicom_modality if dicom_modality in ("CT", "MR") else fallback_modality
    metadata.setdefault("original_dtype", None)
    metadata.setdefault("rescale", None)
    metadata["original_dtype"] = metadata["original_dtype"] or str(volume.array.dtype)
    metadata.update(
        source_path=str(path.resolve()),
        dtype=str(volume.array.dtype),
        pixel_type=sitk.GetPixelIDValueAsString(image.GetPixelIDValue()),
    )
    return volume.with_array(volume.array, modality=chosen, metadata=metadata)
