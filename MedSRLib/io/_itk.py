"""Small SimpleITK helpers shared by the readers and writers (not public API)."""

from __future__ import annotations

import re


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
