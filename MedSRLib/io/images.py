"""2D images for evaluation and training: one grey ``(h, w)`` float32 array per file.

* PNG/JPEG/BMP/TIFF through Pillow. Colour modes (RGB, RGBA, P, LA, ...) become grey with Pillow's
  ``convert('L')`` (ITU-R BT.601 luma ``0.299 R + 0.587 G + 0.114 B``, alpha ignored), so a grey image
  stored as RGB keeps its exact values; 16-bit (``I;16``), 32-bit integer (``I``) and float (``F``)
  images keep their values.
* A single-slice DICOM file through SimpleITK (rescale slope/intercept applied; colour -> luma).
* NIfTI/NRRD/MetaImage with exactly one slice (through :func:`MedSRLib.io.read_volume`).
* MATLAB ``.mat`` (v5/v7, scipy): the variable ``key``, or the only variable when ``key`` is None.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import InputFileError, UnsupportedImageError
from ._itk import itk_error_message
from .dicom import is_dicom_file
from .readers import file_format, read_volume

__all__ = ["IMAGE_2D_SUFFIXES", "list_images_2d", "read_image_2d"]

#: File endings :func:`list_images_2d` collects (lower case).
IMAGE_2D_SUFFIXES: tuple[str, ...] = (
    ".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".dcm", ".nii", ".nii.gz", ".nrrd", ".mha", ".mat",
)
_PILLOW_FORMATS = ("png", "jpeg", "bmp", "tiff")
#: ITU-R BT.601 luma weights (what Pillow's convert('L') uses), for colour DICOM.
_LUMA = np.array([0.299, 0.587, 0.114])


def _squeeze_2d(array: np.ndarray, path: Path) -> np.ndarray:
    squeezed = np.squeeze(array)
    if squeezed.ndim != 2:
        raise UnsupportedImageError(
            f"{path.name} holds an array of shape {array.shape}, not one 2D slice; read volumes with read_volume"
        )
    return np.ascontiguousarray(squeezed, dtype=np.float32)


def _read_pillow(path: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            if getattr(image, "n_frames", 1) > 1:
                raise UnsupportedImageError(f"{path.name} has {image.n_frames} frames; save one 2D image per file")
            image.load()
            if image.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
                return np.asarray(image).astype(np.float32)
            if image.mode != "L":
                image = image.convert("L")
            return np.asarray(image, dtype=np.float32)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise InputFileError(f"cannot read image {path.name}: {exc}; the file may be truncated or not an image") from None


def _read_dicom_slice(path: Path) -> np.ndarray:
    import SimpleITK as sitk

    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise InputFileError(f"cannot read DICOM {path.name}: {itk_error_message(exc)}; the file may be truncated") from None
    array = sitk.GetArrayFromImage(image).astype(np.float64)
    if image.GetNumberOfComponentsPerPixel() == 3:
        array = array @ _LUMA
    elif image.GetNumberOfComponentsPerPixel() != 1:
        raise UnsupportedImageError(f"{path.name} has {image.GetNumberOfComponentsPerPixel()} components per pixel")
    return _squeeze_2d(array, path)


def _read_mat(path: Path, key: str | None) -> np.ndarray:
    try:
        from scipy.io import loadmat
    except ImportError:
        raise InputFileError("reading .mat files needs scipy; `pip install scipy`") from None
    try:
        data = loadmat(str(path))
    except NotImplementedError:
        raise InputFileError(f"{path.name} is a MATLAB v7.3 (HDF5) file; save it with `save -v7` and retry") from None
    except (ValueError, OSError, TypeError) as exc:
        raise InputFileError(f"cannot read {path.name}: {exc}; the file may be truncated") from None
    names = sorted(k for k in data if not k.startswith("__"))
    if key is None:
        if len(names) != 1:
            raise InputFileError(f"{path.name} holds variables {names}; pass key= to choose the image")
        key = names[0]
    if key not in data:
        raise InputFileError(f"{path.name} has no variable '{key}'; it holds {names}")
    array = np.asarray(data[key])
    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise UnsupportedImageError(f"variable '{key}' of {path.name} has dtype {array.dtype}, not a real image")
    return _squeeze_2d(array, path)


def read_image_2d(path: str | os.PathLike[str], *, key: str | None = None) -> np.ndarray:
    """One 2D image as a grey float32 array ``(h, w)`` (rows, columns) in the file's own units.

    Args:
        path: PNG/JPEG/BMP/TIFF, single-slice DICOM, single-slice NIfTI/NRRD/MHA, or ``.mat``.
        key: the ``.mat`` variable (default: the only one in the file).

    Raises:
        InputFileError: missing, truncated or unreadable file; a ``.mat`` key problem.
        UnsupportedImageError: more than one slice/frame, or non-real data.
    """
    path = Path(path)
    if not path.is_file():
        raise InputFileError(f"image not found: {path}; check the path")
    fmt = file_format(path)
    if path.name.lower().endswith(".mat"):
        return _read_mat(path, key)
    if fmt in _PILLOW_FORMATS:
        return _read_pillow(path)
    if fmt == "dicom" or is_dicom_file(path):
        return _read_dicom_slice(path)
    volume = read_volume(path)
    return _squeeze_2d(volume.array, path)


def list_images_2d(folder: str | os.PathLike[str], *, recursive: bool = True) -> list[Path]:
    """The 2D image files in ``folder`` (endings :data:`IMAGE_2D_SUFFIXES`), sorted by relative path.

    Hidden files and folders are skipped.

    Raises:
        InputFileError: ``folder`` is not an existing folder.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputFileError(f"image folder not found: {folder}; check the path")
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")] if recursive else []
        found.extend(
            Path(root) / name for name in files
            if not name.startswith(".") and name.lower().endswith(IMAGE_2D_SUFFIXES)
        )
    return sorted(found, key=lambda p: p.relative_to(folder).as_posix())
