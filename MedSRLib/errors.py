"""The exceptions MedSRLib raises.

Every error a user can cause by bad input derives from :class:`MedSRError`, carries a one-line
message that says what is wrong and what to do, and is raised *before* anything is written.
The CLI prints ``medsr: error: <message>`` and exits with status 2 for these; anything else is a bug.
"""

from __future__ import annotations


class MedSRError(Exception):
    """Base class of every user-facing MedSRLib error (one-line message, nothing written)."""


class InputFileError(MedSRError):
    """An input path is missing, unreadable, truncated or of an unsupported format."""


class DicomSeriesError(InputFileError):
    """A DICOM folder has no series, or several and none was chosen (the message lists them)."""


class UnsupportedImageError(MedSRError):
    """The image is not a single-component 3D (or 2D) scalar image: 4D, vector/RGB, complex, ..."""


class GeometryError(MedSRError):
    """Geometry that cannot be handled: non-orthonormal direction, mismatched grids, bad axis."""


class ScaleError(MedSRError):
    """The scale is not supported by the chosen model."""


class InputSizeError(MedSRError):
    """A slice or tile is smaller than the model (or tiling) needs."""


class ModelNotFoundError(MedSRError):
    """No model with that name is registered (the message lists the registered names)."""


class WeightsError(MedSRError):
    """A weights file is missing, corrupted (sha256 mismatch), or for another model/scale/shape."""


class OutputPathError(MedSRError):
    """The output path is not writable, has an unsupported extension, or equals an input path."""


class CancelledError(MedSRError):
    """The run was cancelled through the cancel callback; nothing was written."""


class OptionError(MedSRError, ValueError):
    """A run option has a bad value (batch size, memory budget, tile, precision, ...); names the option."""


class DeviceError(OptionError):
    """The requested compute device (``cuda``, ``cuda:N``, ``mps``) is not available or not understood."""


class ModelOutputError(MedSRError):
    """A network returned a tensor of the wrong shape for its input and scale (wrong model or scale)."""


class ModelInputError(MedSRError):
    """A tensor given to a network is not ``N x 1 x H x W`` floating point (wrong rank, channels or dtype)."""


class ResourceError(MedSRError):
    """The run needs more memory than is available (the message gives the estimate and what is available)."""


class ModalityError(UnsupportedImageError):
    """The image is not CT or MR (DICOM SEG/RTDOSE/CR/US/..., a label map) and no ``--modality`` says how to treat it."""


class NetworkOutputError(MedSRError):
    """A network returned NaN/Inf or a wiped (constant) slice for a non-constant input; names the slice."""
