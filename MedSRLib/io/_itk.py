"""Small SimpleITK helpers shared by the readers and writers (not public API)."""

from __future__ import annotations

import contextlib
import os
import re
from typing import Iterator
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
    return _no_file_bytes((informative or lines or [type(exc).__name__])[-1])


def _no_file_bytes(text: str) -> str:
    """``text`` without echoed file contents: quoted runs with unprintable characters or over 16
    characters (ITK's NRRD reader quotes the file's first bytes) become ``"<file bytes>"``."""

    def replace(match: "re.Match[str]") -> str:
        inner = match.group(1)
        return match.group(0) if len(inner) <= 16 and inner.isprintable() else '"<file bytes>"'

    text = re.sub(r'"([^"]*)"', replace, text)
    return "".join(ch if ch.isprintable() else "?" for ch in text)


@contextlib.contextmanager
def native_stderr_silenced() -> Iterator[None]:
    """Discard what C++ code (MetaIO, GDCM) prints straight to file descriptor 2 meanwhile; the
    readers raise their own one-line errors instead of those multi-line prints."""
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    try:
        with open(os.devnull, "wb") as sink:
            os.dup2(sink.fileno(), 2)
            try:
                yield
            finally:
                os.dup2(saved, 2)
    finally:
        os.close(saved)


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
