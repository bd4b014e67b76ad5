"""write_dicom_series: a super-resolved Volume as a derived DICOM series that a PACS accepts.

One file per output slice, uncompressed Explicit VR Little Endian, CT Image Storage or MR Image
Storage (by the volume's modality). From a DICOM source the Patient and Study are kept (same
StudyInstanceUID, FrameOfReferenceUID, patient and study attributes, the acquisition attributes that
stay true of a derived image); the series and every instance get new UIDs; ImageType is
``DERIVED\\SECONDARY`` (CT keeps the source's third value, e.g. ``AXIAL``); SeriesDescription names
MedSR, the model and the factor; DerivationDescription says what was done; ReferencedSeriesSequence
(Common Instance Reference) and each instance's SourceImageSequence point at the source images.
Without a DICOM source (NIfTI/NRRD/MHA input) a new Patient (``MedSR^Anonymous``, a generated ID)
and a new Study are made, so the series is still valid.

Geometry (DICOM and ITK are both **LPS**, mm): the series is cut into 2D images orthogonal to numpy
axis ``slice_axis`` of the ``(z, y, x)`` array (default: the axis the network worked across,
``volume.metadata["medsr"]["slice_axis"]``, else 0 = z). For each image, Rows/Columns are the array's
remaining axes, ImageOrientationPatient the LPS unit vectors of the column (along a row) and row (down
a column) index axes, PixelSpacing ``[row spacing, column spacing]`` mm, ImagePositionPatient the LPS
centre of the image's first voxel (:meth:`MedSRLib.volume.Volume.index_to_physical`), and
SpacingBetweenSlices the spacing along the slice axis. SliceThickness is the source's (in-plane
super-resolution does not make slices thinner), else the slice spacing.

Intensities: integer voxels that fit int16 (or uint16) are stored as they are with RescaleSlope 1 and
RescaleIntercept 0, so HU come back exactly; other voxels (float output) are stored as uint16 with
the slope/intercept that span their range (quantisation step = slope, stated in the description).

The series is written into a temporary folder beside ``folder`` and renamed into place, so a
failure leaves nothing behind.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import InputFileError, OutputPathError, UnsupportedImageError
from ..geometry import plane_geometry, radiological_view
from ..volume import Volume

__all__ = [
    "DerivedSeriesDescription",
    "check_dicom_output_folder",
    "dicom_source_files",
    "write_dicom_series",
]

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
_SOP_CLASS = {"CT": CT_IMAGE_STORAGE, "MR": MR_IMAGE_STORAGE}
#: DICOM DCM code 121322 "Source image for image processing operation" (CID 7202).
_PURPOSE_SOURCE_IMAGE = ("121322", "DCM", "Source image for image processing operation")

#: Attributes copied from the source (when present) because they stay true of the derived image.
_PATIENT = ("PatientName", "PatientID", "IssuerOfPatientID", "PatientBirthDate", "PatientSex", "PatientAge",
            "PatientSize", "PatientWeight", "PatientIdentityRemoved", "DeidentificationMethod")
_STUDY = ("StudyInstanceUID", "StudyDate", "StudyTime", "ReferringPhysicianName", "StudyID", "AccessionNumber",
          "StudyDescription")
_SERIES_KEPT = ("BodyPartExamined", "PatientPosition", "FrameOfReferenceUID", "PositionReferenceIndicator",
                "Laterality")
_ACQUISITION = {
    "CT": ("KVP", "AcquisitionNumber", "ConvolutionKernel", "ContrastBolusAgent", "AcquisitionDate",
           "AcquisitionTime"),
    "MR": ("ScanningSequence", "SequenceVariant", "ScanOptions", "MRAcquisitionType", "SequenceName",
           "RepetitionTime", "EchoTime", "InversionTime", "EchoTrainLength", "FlipAngle", "MagneticFieldStrength",
           "ImagingFrequency", "ImagedNucleus", "AcquisitionNumber", "ContrastBolusAgent", "AcquisitionDate",
           "AcquisitionTime"),
}
#: BodyPartExamined terms (DICOM CID 4031) of unpaired structures, for which Laterality must be absent.
_UNPAIRED_BODY_PARTS = {"HEAD", "BRAIN", "SKULL", "NECK", "HEADNECK", "CSPINE", "TSPINE", "LSPINE", "SSPINE",
                        "COCCYX", "SPINE", "WHOLESPINE", "CHEST", "THORAX", "HEART", "ABDOMEN", "LIVER",
                        "PANCREAS", "PELVIS", "ABDOMENPELVIS", "CHESTABDOMEN", "CHESTABDPELV", "PROSTATE",
                        "BLADDER", "WHOLEBODY"}
#: Type 1/2 attributes of the CT/MR Image modules when there is no source to copy them from.
_ACQUISITION_DEFAULTS = {
    "CT": {"KVP": None, "AcquisitionNumber": None},
    # RM = research mode, NONE = no sequence variant: what is honest for an image of unknown acquisition
    "MR": {"ScanningSequence": "RM", "SequenceVariant": "NONE", "ScanOptions": None, "MRAcquisitionType": None,
           "RepetitionTime": None, "EchoTime": None, "EchoTrainLength": None},
}


@dataclass(frozen=True)
class DerivedSeriesDescription:
    """What the derived series says about how it was made.

    Attributes:
        model: registry name of the model (``'dridsr'``).
        scale: the integer in-plane factor.
        details: extra words for DerivationDescription (weights sha256, precision, ...); may be empty.
        series_number: SeriesNumber of the new series (default: the source's + 1000, else 1000).
    """

    model: str
    scale: int
    details: str = ""
    series_number: int | None = None

    @classmethod
    def from_volume(cls, volume: Volume) -> "DerivedSeriesDescription":
        """From ``volume.metadata["medsr"]`` (what :func:`MedSRLib.pipeline.super_resolve` records)."""
        run = volume.metadata.get("medsr") or {}
        if "model" not in run or "scale" not in run:
            raise UnsupportedImageError(
                "the volume carries no MedSR run description (metadata['medsr']); pass description= to write_dicom_series"
            )
        details = []
        if run.get("weights"):
            details.append(f"weights sha256 {str(run['weights'])[:16]}")
        if run.get("ensemble"):
            details.append("x8 self-ensemble")
        return cls(model=str(run["model"]), scale=int(run["scale"]), details=", ".join(details))

    def series_description(self, source: str = "") -> str:
        """SeriesDescription (LO, at most 64 characters): ``MedSR <model> x<scale> <source description>``."""
        text = f"MedSR {self.model} x{self.scale}" + (f" {source}" if source else "")
        return text[:64]

    def derivation_description(self, plane: str) -> str:
        """DerivationDescription (ST): the operation (in ``plane``: axial/coronal/sagittal images), the
        model, the factor and what the output is not."""
        from .. import __version__

        extra = f" ({self.details})" if self.details else ""
        return (
            f"Super-resolved x{self.scale} in-plane ({plane} images) by MedSR {__version__} with model "
            f"{self.model}{extra}. A network's estimate, not an acquisition at this resolution."
        )[:1024]


def check_dicom_output_folder(path: str | os.PathLike[str], *, inputs: Sequence[str | os.PathLike[str]] = ()) -> Path:
    """Validate the output folder of a DICOM series before any computation; returns it absolute.

    The folder must not exist or be empty; its parent must exist and be writable; it must not be an
    input or lie inside an input folder.

    Raises:
        OutputPathError: any of the above.
    """
    target = Path(path).expanduser().resolve()
    parent = target.parent
    if target.exists() and not target.is_dir():
        raise OutputPathError(f"DICOM output must be a folder, and {target} is a file; give a folder path")
    if target.is_dir() and any(target.iterdir()):
        raise OutputPathError(f"DICOM output folder {target} is not empty; give a new or empty folder")
    if not parent.is_dir():
        raise OutputPathError(f"output folder's parent does not exist: {parent}; create it first")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputPathError(f"output folder's parent is not writable: {parent}; choose another output path")
    for source in inputs:
        source_path = Path(source).expanduser().resolve()
        if target == source_path or (source_path.is_dir() and source_path in target.parents):
            raise OutputPathError(f"DICOM output {target} is inside the input {source_path}; choose another folder")
        if source_path.is_file() and target == source_path.parent:
            raise OutputPathError(f"DICOM output {target} is the input's folder; choose another folder")
    return target


def dicom_source_files(volume: Volume) -> list[Path]:
    """The DICOM files a volume was read from (``metadata`` of :func:`MedSRLib.io.read_volume`), sorted
    along the slice normal as they were read; ``[]`` for a volume that did not come from DICOM."""
    meta = volume.metadata
    if meta.get("format") != "dicom" or not meta.get("source_path"):
        return []
    from .dicom import find_series

    info = find_series(meta["source_path"], series_uid=meta.get("series_uid"))
    return list(info.files)


def _read_sources(source: Sequence[Any]) -> list[Any]:
    import pydicom
    from pydicom.errors import InvalidDicomError

    datasets = []
    for item in source:
        if isinstance(item, pydicom.Dataset):
            datasets.append(item)
            continue
        try:
            datasets.append(pydicom.dcmread(item, stop_before_pixels=True))
        except (InvalidDicomError, OSError, EOFError, ValueError) as exc:
            raise InputFileError(f"cannot read source DICOM file {item}: {exc}; pass the series the volume came from") from None
    return datasets


def _uid_of(ds: Any, key: str, meta_key: str) -> str:
    """A UID from the data set, else from the file meta header (anonymised data sets empty them)."""
    value = str(ds.get(key, "") or "").strip()
    if not value and getattr(ds, "file_meta", None) is not None:
        value = str(ds.file_meta.get(meta_key, "") or "").strip()
    return value


def _ds(value: float) -> Any:
    from pydicom.valuerep import DSfloat

    return DSfloat(float(value), auto_format=True)


def _encoding(array: np.ndarray) -> tuple[np.dtype, float, float, str]:
    """``(stored dtype, slope, intercept, note)`` so that ``stored * slope + intercept`` = the voxels."""
    values = np.asarray(array)
    lo, hi = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    integral = np.issubdtype(values.dtype, np.integer) or bool(np.all(np.mod(values, 1) == 0))
    if integral and lo >= -32768 and hi <= 32767:
        return np.dtype("<i2"), 1.0, 0.0, ""
    if integral and lo >= 0 and hi <= 65535:
        return np.dtype("<u2"), 1.0, 0.0, ""
    slope = (hi - lo) / 65535.0 if hi > lo else 1.0
    return np.dtype("<u2"), slope, lo, f"voxels quantised to 16 bits, step {slope:.6g}"


def _code_item(code: tuple[str, str, str]) -> Any:
    from pydicom import Dataset

    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = code
    return item


def write_dicom_series(
    volume: Volume,
    folder: str | os.PathLike[str],
    *,
    source: Sequence[Any] | None = None,
    description: DerivedSeriesDescription | None = None,
    slice_axis: int | None = None,
    inputs: Sequence[str | os.PathLike[str]] = (),
) -> Path:
    """Write ``volume`` as a derived DICOM series into the new (or empty) folder ``folder``.

    Args:
        volume: the super-resolved volume, array ``(z, y, x)``, LPS geometry, modality ``'CT'``/``'MR'``.
        folder: the output folder (created; see :func:`check_dicom_output_folder`).
        source: the source series as file paths or pydicom data sets (headers suffice), in the order
            the volume was read; None: :func:`dicom_source_files` of ``volume`` (``[]`` for non-DICOM
            input, which makes a new Patient and Study).
        description: model and factor; None: from ``volume.metadata["medsr"]``.
        slice_axis: numpy axis (0 = z, 1 = y, 2 = x) the images are orthogonal to; None: the axis the
            network worked across, else 0.
        inputs: paths the output must not overwrite or lie inside.

    Returns:
        The absolute output folder; files ``IM00001.dcm`` ... in slice order.

    Raises:
        OutputPathError: see :func:`check_dicom_output_folder`, or the write failed.
        UnsupportedImageError: modality other than CT/MR, or no run description.
        InputFileError: a source file cannot be read.
    """
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.sequence import Sequence as DicomSequence
    from pydicom.uid import ExplicitVRLittleEndian, PYDICOM_IMPLEMENTATION_UID, generate_uid

    from .. import __version__

    target = check_dicom_output_folder(folder, inputs=inputs)
    modality = (volume.modality or "").upper()
    if modality not in _SOP_CLASS:
        raise UnsupportedImageError(
            f"a DICOM series needs modality CT or MR; this volume's is {volume.modality!r} (pass --modality CT|MR)"
        )
    description = description or DerivedSeriesDescription.from_volume(volume)
    if slice_axis is None:
        slice_axis = int((volume.metadata.get("medsr") or {}).get("slice_axis", 0))
    if slice_axis not in (0, 1, 2):
        raise UnsupportedImageError(f"slice_axis must be a numpy axis 0, 1 or 2 (z, y, x); got {slice_axis!r}")
    sources = _read_sources(dicom_source_files(volume) if source is None else list(source))
    first = sources[0] if sources else None

    plane = plane_geometry(volume, slice_axis)
    row_axis, col_axis = plane.row_axis, plane.col_axis  # numpy axes of image rows / columns
    n_slices = volume.shape[slice_axis]
    row_dir, col_dir = plane.along_row, plane.down_column  # DICOM ImageOrientationPatient (LPS)
    pixel_spacing, slice_spacing = plane.pixel_spacing, plane.slice_spacing
    stored_dtype, slope, intercept, note = _encoding(volume.array)

    now = datetime.now()
    date, time = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    series_uid = generate_uid()
    sop_class = _SOP_CLASS[modality]

    shared = Dataset()
    shared.SpecificCharacterSet = first.get("SpecificCharacterSet", "ISO_IR 100") if first is not None else "ISO_IR 100"
    if first is not None:
        for key in _PATIENT + _STUDY + _SERIES_KEPT + _ACQUISITION[modality]:
            if key in first and first[key].value not in (None, ""):
                shared[key] = first[key]
    else:
        shared.PatientName = "MedSR^Anonymous"
        shared.PatientID = f"MEDSR-{uuid.uuid4().hex[:12].upper()}"
        shared.StudyDate, shared.StudyTime = date, time
    for key in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
                "ReferringPhysicianName", "StudyID", "AccessionNumber"):
        _set_if_absent(shared, key, "")  # type 2: present, possibly empty
    if not str(shared.get("StudyInstanceUID", "") or "").strip():
        shared.StudyInstanceUID = generate_uid()  # the source has none (anonymised) or there is no source
        if not str(shared.get("StudyID", "") or "").strip():
            shared.StudyID = "MEDSR"  # a new study: name it (PACS and DICOMDIR list studies by ID)
    if not str(shared.get("FrameOfReferenceUID", "") or "").strip():
        shared.FrameOfReferenceUID = generate_uid()
    for key in ("PositionReferenceIndicator", "PatientPosition"):
        _set_if_absent(shared, key, "")  # type 2 / 2C: present, empty when unknown
    if str(shared.get("BodyPartExamined", "")).upper() not in _UNPAIRED_BODY_PARTS:
        _set_if_absent(shared, "Laterality", "")  # 2C: empty = unknown; must be absent for an unpaired body part
    for key, value in _ACQUISITION_DEFAULTS[modality].items():
        _set_if_absent(shared, key, value)
    shared.Modality = modality
    shared.SeriesInstanceUID = series_uid
    source_number = first.get("SeriesNumber") if first is not None else None
    shared.SeriesNumber = description.series_number if description.series_number is not None else (
        int(source_number) + 1000 if source_number not in (None, "") else 1000)
    shared.SeriesDescription = description.series_description(str(first.get("SeriesDescription", "") or "") if first else "")
    shared.SeriesDate, shared.SeriesTime = date, time
    shared.ContentDate, shared.ContentTime = date, time
    shared.InstanceCreationDate, shared.InstanceCreationTime = date, time
    shared.Manufacturer = "MedSR"
    shared.SoftwareVersions = f"MedSR {__version__}"
    # value 3 is required for CT (AXIAL/LOCALIZER) and MR (M, P, ..., OTHER): the source's, else a neutral one
    source_type = [str(v) for v in first.get("ImageType", [])] if first is not None else []
    third = source_type[2] if len(source_type) > 2 and source_type[2] else ""
    if modality == "CT" and third not in ("AXIAL", "LOCALIZER"):
        third = "AXIAL"
    shared.ImageType = ["DERIVED", "SECONDARY", third or "OTHER"]
    derivation = description.derivation_description(radiological_view(plane).plane)
    shared.DerivationDescription = (derivation + (f" {note[0].upper()}{note[1:]}." if note else ""))[:1024]
    shared.SOPClassUID = sop_class
    shared.ImageOrientationPatient = [_ds(v) for v in (*row_dir, *col_dir)]
    shared.PixelSpacing = [_ds(v) for v in pixel_spacing]
    thickness = first.get("SliceThickness") if first is not None and slice_axis == 0 else None
    shared.SliceThickness = _ds(float(thickness)) if thickness not in (None, "") else _ds(slice_spacing)
    shared.SpacingBetweenSlices = _ds(slice_spacing)
    shared.SamplesPerPixel = 1
    shared.PhotometricInterpretation = "MONOCHROME2"
    shared.Rows, shared.Columns = volume.shape[row_axis], volume.shape[col_axis]
    shared.BitsAllocated, shared.BitsStored, shared.HighBit = 16, 16, 15
    shared.PixelRepresentation = 1 if stored_dtype.kind == "i" else 0
    if modality == "CT" or slope != 1.0 or intercept != 0.0:
        # required by the CT Image module; outside it (MR) only when the stored values need it
        shared.RescaleIntercept, shared.RescaleSlope = _ds(intercept), _ds(slope)
    if modality == "CT":
        shared.RescaleType = "HU"
    if first is not None and "WindowCenter" in first and "WindowWidth" in first:
        shared.WindowCenter, shared.WindowWidth = first.WindowCenter, first.WindowWidth
    elif modality == "CT":
        shared.WindowCenter, shared.WindowWidth = _ds(40), _ds(400)  # soft tissue

    # references to the source: Common Instance Reference (series) and SourceImageSequence (instances)
    refs = [(_uid_of(ds, "SOPClassUID", "MediaStorageSOPClassUID"), _uid_of(ds, "SOPInstanceUID", "MediaStorageSOPInstanceUID"))
            for ds in sources]
    refs = [r for r in refs if r[0] and r[1]]
    source_series = str(first.get("SeriesInstanceUID", "") or "").strip() if first is not None else ""
    if source_series and refs:
        series_item = Dataset()
        series_item.SeriesInstanceUID = source_series
        series_item.ReferencedInstanceSequence = DicomSequence([_ref_item(c, i) for c, i in refs])
        shared.ReferencedSeriesSequence = DicomSequence([series_item])
    one_to_one = len(refs) == n_slices and slice_axis == 0

    temp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:12]}.partial")
    try:
        temp.mkdir()
        for n in range(n_slices):
            ds = Dataset()
            ds.update(shared)
            sop_uid = generate_uid()
            ds.SOPInstanceUID = sop_uid
            ds.InstanceNumber = n + 1
            index = [0, 0, 0]
            index[2 - slice_axis] = n  # ITK index order (i, j, k); numpy axis a is index axis 2 - a
            position = volume.index_to_physical(np.asarray(index, dtype=np.float64))
            ds.ImagePositionPatient = [_ds(v) for v in position]
            ds.SliceLocation = _ds(float(np.dot(position, plane.normal)))
            chosen = [refs[n]] if one_to_one else refs
            if chosen:
                items = [_ref_item(c, i) for c, i in chosen]
                for item in items:
                    item.PurposeOfReferenceCodeSequence = DicomSequence([_code_item(_PURPOSE_SOURCE_IMAGE)])
                ds.SourceImageSequence = DicomSequence(items)
            image2d = np.take(volume.array, n, axis=slice_axis)
            stored = image2d if slope == 1.0 and intercept == 0.0 else np.round((image2d.astype(np.float64) - intercept) / slope)
            ds.PixelData = np.ascontiguousarray(stored, dtype=stored_dtype).tobytes()
            ds["PixelData"].VR = "OW"
            meta = FileMetaDataset()
            meta.MediaStorageSOPClassUID = sop_class
            meta.MediaStorageSOPInstanceUID = sop_uid
            meta.TransferSyntaxUID = ExplicitVRLittleEndian
            meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
            meta.ImplementationVersionName = f"MEDSR_{__version__}"[:16]
            ds.file_meta = meta
            _save(ds, temp / f"IM{n + 1:05d}.dcm")
        if target.is_dir():
            target.rmdir()  # empty (checked); rename the finished series into its place
        os.replace(temp, target)
    except OSError as exc:
        raise OutputPathError(f"could not write the DICOM series to {target}: {exc}; check free space and permissions") from None
    finally:
        if temp.exists():
            for leftover in temp.iterdir():
                leftover.unlink()
            temp.rmdir()
    return target


def _set_if_absent(ds: Any, keyword: str, value: Any) -> None:
    """Set ``ds.<keyword> = value`` (None: an empty type 2 element) unless the data set has it."""
    if keyword not in ds:
        setattr(ds, keyword, "" if value is None else value)


def _save(ds: Any, path: Path) -> None:
    """Write a DICOM Part 10 file (preamble, file meta, Explicit VR Little Endian) with pydicom 2.4 or 3."""
    import pydicom

    if int(pydicom.__version__.split(".")[0]) >= 3:
        ds.save_as(path, enforce_file_format=True)
    else:  # pydicom 2.x (e.g. inside 3D Slicer): the encoding is set on the data set
        ds.is_little_endian, ds.is_implicit_VR = True, False
        ds.save_as(path, write_like_original=False)


def _ref_item(sop_class: str, sop_instance: str) -> Any:
    from pydicom import Dataset

    item = Dataset()
    item.ReferencedSOPClassUID = sop_class
    item.ReferencedSOPInstanceUID = sop_instance
    return item
