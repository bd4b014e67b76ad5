"""gzip a file on several threads into ONE standard gzip member (what ``.nii.gz`` readers expect).

The file is cut into chunks; each chunk is deflated on its own thread (zlib releases the GIL) and
ended with a sync flush, so the chunks' raw deflate streams concatenate into one valid deflate
stream (the technique of pigz, written here from the gzip format of RFC 1952); a final empty block
ends it. The CRC-32 and length of the whole input go in the one trailer, so any gzip reader (zlib's
``gzread`` in ITK/Slicer/FSL, Python's ``gzip`` in nibabel) reads the file. Memory: at most
``2 x threads`` chunks in flight.

Why: ITK's NIfTI writer deflates on one thread at its default level; for a 282 MiB x2 CT output
that was 6.1 s of a 122 s run (``benchmarks/RESULTS.md``).
"""

from __future__ import annotations

import os
import struct
import zlib
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

__all__ = ["DEFAULT_CHUNK_BYTES", "GzipResult", "check_gzip_file", "gzip_file", "gzip_threads"]

#: Bytes per independently deflated chunk (each loses its 32 KiB history at the start: about 0.1 %
#: larger output than one stream at 8 MiB).
DEFAULT_CHUNK_BYTES = 8 << 20

#: gzip header: magic, deflate, no flags, mtime 0 (reproducible bytes), no extra flags, OS unknown.
_HEADER = b"\x1f\x8b\x08\x00" + struct.pack("<I", 0) + b"\x00\xff"


@dataclass(frozen=True)
class GzipResult:
    """What :func:`gzip_file` wrote: the file's length, and the CRC-32 and length of the input (bytes)."""

    compressed: int
    crc: int
    size: int

    def trailer(self) -> bytes:
        """The 8 bytes that end the file: CRC-32 and length mod 2^32, little-endian (RFC 1952)."""
        return struct.pack("<II", self.crc & 0xFFFFFFFF, self.size & 0xFFFFFFFF)


def gzip_threads(threads: int | None = None) -> int:
    """``threads`` if given, else the CPUs this process may run on, at most 4 (at least 1)."""
    if threads is not None:
        return max(1, int(threads))
    try:
        available = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        available = os.cpu_count() or 1
    return max(1, min(4, available))


def _deflate(data: bytes, level: int) -> bytes:
    packer = zlib.compressobj(level, zlib.DEFLATED, -15, 9)
    return packer.compress(data) + packer.flush(zlib.Z_SYNC_FLUSH)


def gzip_file(source: str | os.PathLike[str], target: str | os.PathLike[str], *, level: int = 1,
              threads: int | None = None, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> GzipResult:
    """Write ``target`` = ``source`` gzip-compressed (one member) at zlib ``level`` (0-9) on ``threads``
    threads (:func:`gzip_threads`); ``target`` is created or truncated. Returns a :class:`GzipResult`.
    OSError on any read or write failure (the caller removes ``target``)."""
    if not 0 <= int(level) <= 9:
        raise ValueError(f"level must be 0-9; got {level!r}")
    if int(chunk_bytes) < 1:
        raise ValueError(f"chunk_bytes must be positive; got {chunk_bytes!r}")
    workers = gzip_threads(threads)
    crc, size, written = 0, 0, 0
    pending: deque[Future[bytes]] = deque()
    with open(source, "rb") as src, open(target, "wb") as dst, ThreadPoolExecutor(workers) as pool:
        dst.write(_HEADER)
        written += len(_HEADER)
        while True:
            data = src.read(int(chunk_bytes))
            if data:
                crc = zlib.crc32(data, crc)
                size += len(data)
                pending.append(pool.submit(_deflate, data, int(level)))
            while pending and (len(pending) >= 2 * workers or not data):
                block = pending.popleft().result()
                dst.write(block)
                written += len(block)
            if not data:
                break
        tail = zlib.compressobj(int(level), zlib.DEFLATED, -15, 9).flush(zlib.Z_FINISH)  # the final (empty) block
        result = GzipResult(written + len(tail) + 8, crc, size)
        dst.write(tail + result.trailer())
    return result


def check_gzip_file(path: str | os.PathLike[str], expected: GzipResult) -> None:
    """OSError unless ``path`` holds exactly ``expected.compressed`` bytes ending in ``expected``'s
    trailer (a cheap read-back of a file :func:`gzip_file` wrote: size and the last 8 bytes)."""
    path = Path(path)
    actual = path.stat().st_size
    if actual != expected.compressed:
        raise OSError(f"{path.name} holds {actual} bytes where {expected.compressed} were written")
    with open(path, "rb") as handle:
        handle.seek(-8, os.SEEK_END)
        if handle.read(8) != expected.trailer():
            raise OSError(f"{path.name} does not end with the gzip trailer that was written")
