"""Reading and writing volumes and 2D images (SimpleITK, pydicom, Pillow).

Public API::

    read_volume(path, *, series_uid=None, modality=None) -> Volume
    list_dicom_series(folder, *, recursive=True) -> list[DicomSeriesInfo]
    check_output_path(path, *, inputs=()) -> Path
    write_volume(volume, path, *, inputs=()) -> Path
    write_dicom_series(volume, folder, *, source=None, inputs=()) -> Path   # a derived DICOM series
    write_text_atomic(path, text) -> Path   # temporary file + rename (sidecars, batch summaries)
    read_image_2d(path, *, key=None) -> np.ndarray   # float32 (h, w)
    list_images_2d(folder, *, recursive=True) -> list[Path]

Arrays are numpy ``(z, y, x)``; geometry is ITK LPS (see :mod:`MedSRLib.volume`).
"""

from __future__ import annotations

from .dicom import DicomSeriesInfo, list_dicom_series
from .dicom_writer import check_dicom_output_folder, write_dicom_series
from .images import IMAGE_2D_SUFFIXES, list_images_2d, read_image_2d
from .readers import READ_FORMATS, read_volume
from .writers import WRITE_FORMATS, check_output_path, write_text_atomic, write_volume

__all__ = [
    "IMAGE_2D_SUFFIXES",
    "READ_FORMATS",
    "WRITE_FORMATS",
    "DicomSeriesInfo",
    "check_dicom_output_folder",
    "check_output_path",
    "list_dicom_series",
    "list_images_2d",
    "read_image_2d",
    "read_volume",
    "write_dicom_series",
    "write_text_atomic",
    "write_volume",
]
