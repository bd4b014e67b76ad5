"""Small real example volumes shipped inside the package, so a fresh install has something to run.

    medsr example --list              # names, what they are, licences
    medsr example mr-neck             # prints the path of the file
    medsr run "$(medsr example mr-neck)" mr_neck_x2.nii.gz --scale 2

Every file is a byte-for-byte copy of public data (sources, sha256 and licences in ``README.md``
beside this file, the data card; licence texts as ``LICENSE-*.txt``). Nothing here is synthetic.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import InputFileError

__all__ = ["EXAMPLES", "Example", "example_path", "list_examples"]

#: The folder that holds the example files (inside the installed package).
EXAMPLES_DIR = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Example:
    """One shipped example.

    Attributes:
        name: what ``medsr example NAME`` takes.
        relpath: file or DICOM folder, relative to :data:`EXAMPLES_DIR`.
        modality: ``'CT'`` or ``'MR'``.
        shape_zyx: numpy array shape ``(z, y, x)`` as :func:`MedSRLib.io.read_volume` returns it.
        spacing_xyz: voxel size in mm, ITK order ``(x, y, z)`` = index axes (i, j, k).
        what: one line: anatomy, sequence, acquisition.
        licence: SPDX identifier of the data's licence.
        licence_file: the licence text beside the data.
        command: a ``medsr run`` command line that super-resolves it (``{path}`` = the example path).
    """

    name: str
    relpath: str
    modality: str
    shape_zyx: tuple[int, int, int]
    spacing_xyz: tuple[float, float, float]
    what: str
    licence: str
    licence_file: str
    command: str

    @property
    def path(self) -> Path:
        """Absolute path of the file or DICOM folder."""
        return EXAMPLES_DIR / self.relpath


EXAMPLES: dict[str, Example] = {
    e.name: e
    for e in (
        Example(
            name="mr-neck",
            relpath="mr_neck_t2star_thick.nii.gz",
            modality="MR",
            shape_zyx=(11, 320, 320),
            spacing_xyz=(0.5, 0.5, 7.5),
            what="thick-slice axial T2*-weighted neck MR (cervical cord), 0.5 x 0.5 mm in-plane, 7.5 mm slices, 8-bit",
            licence="MIT",
            licence_file="LICENSE-sct_testing_data.txt",
            command='medsr run "{path}" mr_neck_x2.nii.gz --scale 2',
        ),
        Example(
            name="ct-abdomen",
            relpath="ct_abdomen_dicom",
            modality="CT",
            shape_zyx=(12, 512, 512),
            spacing_xyz=(0.9765625, 0.9765625, 2.0),
            what="contrast CT of the upper abdomen (liver, stomach, spine), 12 axial slices of a DICOM series "
                 "(JPEG 2000 lossless, HU)",
            licence="Apache-2.0",
            licence_file="LICENSE-TotalSegmentator.txt",
            command='medsr run "{path}" ct_abdomen_x2/ --scale 2 --output-format dicom',
        ),
    )
}


def list_examples() -> list[Example]:
    """The shipped examples, in a fixed order."""
    return list(EXAMPLES.values())


def example_path(name: str) -> Path:
    """The absolute path of example ``name`` (a file, or a DICOM folder).

    Raises:
        InputFileError: no example of that name (the message lists them), or its files are missing
            from this installation.
    """
    key = str(name).strip().lower()
    if key not in EXAMPLES:
        raise InputFileError(f"no example '{name}'; available: {', '.join(EXAMPLES)} (see `medsr example --list`)")
    path = EXAMPLES[key].path
    if not path.exists() or (path.is_dir() and not any(path.iterdir())):
        raise InputFileError(
            f"example '{key}' is missing from this installation ({path}); reinstall MedSRLib from a wheel or a clone"
        )
    return path
