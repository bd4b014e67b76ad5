"""check_output_path and write_volume: NIfTI, NRRD and MetaImage, atomic, never over an input."""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import OutputPathError, UnsupportedImageError
from ..geometry import volume_to_sitk
from ..volume import Volume
from ._itk import itk_error_message

__all__ = ["WRITE_FORMATS", "check_output_path", "write_volume"]

#: Writable file endings -> format names.
WRITE_FORMATS: dict[str, str] = {".nii.gz": "nifti", ".nii": "nifti", ".nrrd": "nrrd", ".mha": "metaimage"}


def _ending(path: Path) -> str | None:
    name = path.name.lower()
    return next((e for e in WRITE_FORMATS if name.endswith(e) and len(name) > len(e)), None)


def _same_or_inside(target: Path, source: Path) -> bool:
    """True when ``target`` is ``source`` (after symlinks, hard links) or lies inside folder ``source``."""
    if target == source:
        return True
    try:
        if target.exists() and source.exists() and os.path.samefile(target, source):
            return True
    except OSError:
        pass
    return source.is_dir() and source in target.parents


def check_output_path(path: str | os.PathLike[str], *, inputs: Sequence[str | os.PathLike[str]] = ()) -> Path:
    """Validate an output file path before any computation; returns it absolute, symlinks resolved.

    Raises:
        OutputPathError: unsupported ending (writable: ``.nii``, ``.nii.gz``, ``.nrrd``, ``.mha``, in
            lower or upper case), a
            folder that does not exist or is not writable, an existing folder or read-only file at
            ``path``, or ``path`` equal to an input (or inside an input folder, e.g. a DICOM series).
    """
    raw = Path(path).expanduser()
    if _ending(raw) is None:
        raise OutputPathError(
            f"cannot write '{raw.name}': unsupported file type; use one of {', '.join(WRITE_FORMATS)}"
        )
    ending = raw.name[-len(_ending(raw) or ""):]
    if ending not in (ending.lower(), ending.upper()):
        raise OutputPathError(f"mixed-case ending '{ending}' is not readable by NIfTI/ITK readers; use '{ending.lower()}'")
    target = raw.resolve()
    folder = target.parent
    if not folder.is_dir():
        raise OutputPathError(f"output folder does not exist: {folder}; create it first")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputPathError(f"output folder is not writable: {folder}; choose another output path")
    if target.is_dir():
        raise OutputPathError(f"output path is an existing folder: {target}; give a file name")
    if target.exists() and not os.access(target, os.W_OK):
        raise OutputPathError(f"output file exists and is read-only: {target}; choose another output path")
    for source in inputs:
        source_path = Path(source).expanduser().resolve()
        if _same_or_inside(target, source_path):
            where = "inside the input folder" if target != source_path and source_path.is_dir() else "the input"
            raise OutputPathError(f"output {target} is {where} {source_path}; choose another output path so the input is kept")
    return target


def write_volume(
    volume: Volume,
    path: str | os.PathLike[str],
    *,
    inputs: Sequence[str | os.PathLike[str]] = (),
) -> Path:
    """Write ``volume`` as NIfTI (``.nii``/``.nii.gz``), NRRD (``.nrrd``) or MetaImage (``.mha``).

    The array dtype and the LPS geometry (spacing, origin, direction) are preserved (bool is written
    as uint8, float16 as float32). The file is written to a temporary name in the same folder and
    then renamed over ``path``, so a failure leaves nothing behind; an input is never overwritten.

    Returns:
        The absolute path written.

    Raises:
        OutputPathError: see :func:`check_output_path`, or the write itself failed.
        UnsupportedImageError: a dtype no format can store (complex, object, strings).
    """
    target = check_output_path(path, inputs=inputs)
    dtype = np.asarray(volume.array).dtype
    if not (np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.floating) or dtype == np.bool_):
        raise UnsupportedImageError(f"cannot write voxels of dtype {dtype}; convert to an integer or float dtype first")
    import SimpleITK as sitk

    image = volume_to_sitk(volume)
    compress = not target.name.lower().endswith(".nii")  # .nii.gz by its name; NRRD/MHA gzip-encoded
    temp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:12]}.partial{_ending(target)}")
    try:
        sitk.WriteImage(image, str(temp), useCompression=compress)
        os.replace(temp, target)
    except (RuntimeError, OSError) as exc:
        message = itk_error_message(exc) if isinstance(exc, RuntimeError) else str(exc)
        raise OutputPathError(f"could not write {target}: {message}; check free space and permissions") from None
    finally:
        if temp.exists():
            temp.unlink()
    return target
