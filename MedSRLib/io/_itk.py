"""Small SimpleITK helpers shared by the readers and writers (not public API)."""

from __future__ import annotations

import os
import re
from pathlib import Path

#: Longest file name (bytes) most file systems accept (ext4, XFS, APFS, NTFS: 255).
NAME_MAX = 255


def itk_error_message(exc: BaseException) -> str:
    """The informative part of a SimpleITK/ITK exception, on one line, without source paths.

    ITK messages look like ``Exception thrown in ...: /path/file.cxx:99:\\nITK ERROR: Class(0x..): text``.
    """
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    for line in lines:
        match = re.match(r"^(?:sitk::|ITK )?ERROR:\s*(?:\w+\(0x[0-9a-fA-F]+\):\s*)?(.*)$", line)
        if match and match.group(1):
            return match.group(1).strip()
    informative = [line for line in lines if not line.startswith("Exception thrown in")]
    return (informative or lines or [type(exc).__name__])[-1]


def check_path_components(path: "str | os.PathLike[str]", what: str, error: type[Exception]) -> Path:
    """``path`` as a Path; raises ``error`` when it is empty (``''`` is not the current folder) or a
    component is longer than :data:`NAME_MAX` bytes (which would end in an OSError traceback)."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{what} path must be a str or os.PathLike; got {type(path).__name__}")
    if os.fspath(path).strip() == "":
        raise error(f"{what} path is empty; give a file or folder name")
    path = Path(path)
    for part in path.parts:
        if len(os.fsencode(part)) > NAME_MAX:
            raise error(
                f"{what} path has a name of {len(os.fsencode(part))} bytes ('{part[:40]}...'); file systems allow "
                f"{NAME_MAX}: use a shorter name"
            )
    return path
