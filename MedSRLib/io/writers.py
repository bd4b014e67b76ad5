"""check_output_path and write_volume: NIfTI, NRRD and MetaImage, atomic, verified, never over an input.

Output policy (README "Output policy"):

* **Never a bad file**: the volume is written to a temporary file in the target folder
  (``.medsr-<host>-<pid>-<hex>.partial<ending>``), flushed and fsync'ed, then *read back* (header: size,
  pixel type; NIfTI: the data length; a ``.nii.gz`` is ITK's uncompressed file deflated by MedSR on
  several threads, :mod:`MedSRLib.io.compress`, and read back by its size and gzip trailer) before
  it is renamed over the target. A
  full disk or any write error raises :class:`~MedSRLib.errors.OutputPathError` and leaves an
  existing file at the target untouched.
* **No silent overwrite**: an existing file is replaced only with ``overwrite=True`` (CLI
  ``--overwrite``); without it the final step is an atomic link that fails if another run created
  the file meanwhile.
* **No leftovers**: temporary files of runs that were killed (their process no longer exists) are
  removed by the next write into that folder.
"""

from __future__ import annotations

import errno
import json
import os
import re
import signal
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from ..errors import MedSRError, OutputPathError, UnsupportedImageError
from ..geometry import volume_to_sitk
from ..volume import Volume
from ._itk import check_path_components, itk_error_message

if TYPE_CHECKING:
    from .compress import GzipResult

__all__ = ["WRITE_FORMATS", "check_output_path", "remove_stale_partials", "write_text_atomic", "write_volume",
           "written_paths"]

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


#: Temporary names: ``.medsr-<pid>-<hex>.partial<ending>`` (short, whatever the target's name length).
_PARTIAL = re.compile(r"^\.medsr-([0-9a-f]{6})-(\d+)-[0-9a-f]{8}\.partial(\.nii\.gz|\.nii|\.nrrd|\.mha|\.json|\.csv)$", re.IGNORECASE)
#: Another machine's temporary file (shared folder) counts as left over after this many seconds.
_FOREIGN_PARTIAL_AGE_S = 24 * 3600


def _host_tag() -> str:
    """6 hex digits naming this machine in temporary names (a PID means nothing on another host)."""
    import hashlib
    import socket

    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:6]


def partial_name(ending: str) -> str:
    """A temporary file name ``.medsr-<host>-<pid>-<hex>.partial<ending>`` (short whatever the target's name)."""
    return f".medsr-{_host_tag()}-{os.getpid()}-{uuid.uuid4().hex[:8]}.partial{ending}"
#: What this process has written (read by the CLI to report an interrupt truthfully).
_WRITTEN: list[Path] = []


def written_paths() -> list[Path]:
    """Files this process has completely written and renamed into place, oldest first."""
    return list(_WRITTEN)


def _inputs_list(inputs: Any) -> list[str | os.PathLike[str]]:
    """``inputs`` as a list of paths; a single ``str``/``PathLike`` is one path (never iterated)."""
    if inputs is None:
        return []
    if isinstance(inputs, (str, bytes, os.PathLike)):
        return [inputs]  # type: ignore[list-item]
    try:
        items = list(inputs)
    except TypeError:
        raise TypeError(f"inputs must be a path or a sequence of paths; got {type(inputs).__name__}") from None
    for item in items:
        if not isinstance(item, (str, os.PathLike)):
            raise TypeError(f"inputs must hold paths (str or os.PathLike); got {item!r}")
    return items


def check_output_path(
    path: str | os.PathLike[str],
    *,
    inputs: Sequence[str | os.PathLike[str]] = (),
    overwrite: bool = False,
    others: Sequence[str | os.PathLike[str]] = (),
) -> Path:
    """Validate an output file path before any computation; returns it absolute, symlinks resolved.

    Args:
        path: the output file.
        inputs: input paths the output must not be (or lie inside); a single path is accepted.
        overwrite: allow replacing an existing file (CLI ``--overwrite``).
        others: the run's other outputs (e.g. the super-resolved volume when checking ``--diff``).

    Raises:
        OutputPathError: empty path or a name over 255 bytes, an existing folder at ``path``,
            unsupported ending (writable: ``.nii``, ``.nii.gz``, ``.nrrd``, ``.mha``, in lower or
            upper case), a folder that does not exist or is not writable, an existing file without
            ``overwrite`` or read-only, or ``path`` equal to an input (or inside an input folder).
    """
    inputs = _inputs_list(inputs)
    raw = check_path_components(path, "output", OutputPathError).expanduser()
    if raw.is_dir():
        raise OutputPathError(f"output path is an existing folder: {raw}; give a file name such as {raw / 'out.nii.gz'}")
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
    for source in inputs:
        source_path = Path(source).expanduser().resolve()
        if _same_or_inside(target, source_path):
            where = "inside the input folder" if target != source_path and source_path.is_dir() else "the input"
            raise OutputPathError(f"output {target} is {where} {source_path}; choose another output path so the input is kept")
    for other in _inputs_list(others):
        if _same_or_inside(target, Path(other).expanduser().resolve()):
            raise OutputPathError(f"{target} is also the run's other output {Path(other)}; give each output its own path")
    if target.exists() and not overwrite:
        raise OutputPathError(f"output file exists: {target}; pass --overwrite (overwrite=True) to replace it")
    if target.exists() and not os.access(target, os.W_OK):
        raise OutputPathError(f"output file exists and is read-only: {target}; choose another output path")
    return target


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def remove_stale_partials(folder: str | os.PathLike[str]) -> list[Path]:
    """Remove temporary files left in ``folder`` by killed runs (their process is gone); returns them.

    Matches :func:`partial_name` files of this machine whose process no longer exists, those of another
    machine (a shared folder) older than a day, and ``.<name>.<12 hex>.partial<ending>`` (earlier
    versions). Files of a running process are kept.
    """
    import time

    removed = []
    try:
        entries = list(Path(folder).iterdir())
    except OSError:
        return removed
    old_style = re.compile(r"^\..+\.[0-9a-f]{12}\.partial(\.nii\.gz|\.nii|\.nrrd|\.mha)$", re.IGNORECASE)
    for entry in entries:
        match = _PARTIAL.match(entry.name)
        if match is None:
            stale = old_style.match(entry.name) is not None
        elif match.group(1).lower() == _host_tag():
            stale = not _pid_alive(int(match.group(2)))
        else:
            try:
                stale = time.time() - entry.stat().st_mtime > _FOREIGN_PARTIAL_AGE_S
            except OSError:
                stale = False
        if stale and entry.is_file():
            try:
                entry.unlink()
                removed.append(entry)
            except OSError:
                pass
    return removed


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _verify_written(temp: Path, image: Any, fmt_ending: str, *, raw_nifti: Path | None = None,
                    gz: "GzipResult | None" = None) -> None:
    """Read ``temp`` back: header size and pixel type as written, data complete; else raise OSError.

    NIfTI: the data length against the header, because ITK zero-fills short NIfTI data without an
    error: for a ``.nii.gz`` that MedSR compressed itself (``raw_nifti`` = ITK's uncompressed file,
    ``gz`` = what :func:`~MedSRLib.io.compress.gzip_file` wrote) the raw file's length, then the
    compressed file's size and gzip trailer (CRC-32 and length of exactly those bytes); otherwise the
    whole gzip stream. NRRD/MetaImage: a full read, which fails on short data.
    """
    import SimpleITK as sitk

    from .readers import _check_nifti_length

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(temp))
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        raise OSError(f"the written file does not read back ({itk_error_message(exc)})") from None
    if tuple(reader.GetSize()) != tuple(image.GetSize()) or reader.GetPixelID() != image.GetPixelID():
        raise OSError(f"the written file reads back as {reader.GetSize()} {sitk.GetPixelIDValueAsString(reader.GetPixelID())}")
    if fmt_ending.startswith(".nii"):
        try:
            _check_nifti_length(temp if raw_nifti is None else raw_nifti, reader)
        except MedSRError as exc:
            raise OSError(f"the written file is incomplete ({exc})") from None
        if gz is not None:
            from .compress import check_gzip_file

            check_gzip_file(temp, gz)
    else:
        try:
            reader.Execute()  # NRRD/MetaImage readers raise on short or corrupt data
        except RuntimeError as exc:
            raise OSError(f"the written file is incomplete ({itk_error_message(exc)})") from None


#: zlib level of the ``.nii.gz`` files MedSR writes (deflated on :func:`~MedSRLib.io.compress.gzip_threads`
#: threads). Measured on a 1024 x 1024 x 141 int16 CT output, one thread (AMD EPYC): ITK's own writer
#: 5.6 s for 112 MiB; level 1 3.1 s / 119 MiB, level 2 3.5 s / 118 MiB, level 3 5.4 s / 113 MiB, level 6
#: 14.6 s / 113 MiB (plus 0.7 s for ITK's uncompressed write). With 2 threads the 141-slice x2 CT run
#: went from 122-124 s to 107-109 s together with DRIDSR's folded head (``benchmarks/RESULTS.md``).
NIFTI_GZIP_LEVEL = 1


def _write_nifti_gz(image: Any, temp: Path, threads: int | None) -> None:
    """``temp`` (a ``.nii.gz``) = ITK's uncompressed NIfTI of ``image``, gzip-compressed on several
    threads (ITK's own writer deflates on one), then fsync'ed and verified; the uncompressed file
    (a temporary in the same folder) is removed whatever happens."""
    import SimpleITK as sitk

    from .compress import gzip_file

    raw = temp.with_name(partial_name(".nii"))
    try:
        sitk.WriteImage(image, str(raw), useCompression=False)
        gz = gzip_file(raw, temp, level=NIFTI_GZIP_LEVEL, threads=threads)
        _fsync(temp)
        _verify_written(temp, image, ".nii.gz", raw_nifti=raw, gz=gz)
    finally:
        try:
            raw.unlink()
        except OSError:
            pass


def _blocked_signals() -> Any:
    """Context manager: SIGINT/SIGTERM held back (delivered after) so 'renamed' and 'recorded' go together."""
    import contextlib

    @contextlib.contextmanager
    def block() -> Any:
        if not hasattr(signal, "pthread_sigmask"):
            yield
            return
        old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        try:
            yield
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)

    return block()


def write_volume(
    volume: Volume,
    path: str | os.PathLike[str],
    *,
    inputs: Sequence[str | os.PathLike[str]] = (),
    overwrite: bool = False,
    provenance: Mapping[str, Any] | None = None,
    threads: int | None = None,
) -> Path:
    """Write ``volume`` as NIfTI (``.nii``/``.nii.gz``), NRRD (``.nrrd``) or MetaImage (``.mha``).

    The array dtype and the LPS geometry (spacing, origin, direction) are preserved (bool is written
    as uint8, float16 as float32). The file is written to a temporary name in the same folder,
    fsync'ed, read back (see the module docstring) and only then renamed to ``path``, so a failure
    (full disk included) leaves nothing behind and an existing file untouched; an input is never
    overwritten, an existing file only with ``overwrite=True``.

    Args:
        volume: the volume (array ``(z, y, x)``, LPS geometry).
        path: the output file.
        inputs: input path(s) the output must not replace.
        overwrite: replace an existing file at ``path``.
        provenance: how the volume was made (:func:`MedSRLib.provenance.build_provenance`): stored in
            the file (NIfTI ``descrip``: a summary; NRRD/MHA: key ``medsr_provenance`` = the JSON) and
            as a JSON sidecar beside it (:func:`MedSRLib.provenance.sidecar_path`).
        threads: threads that deflate a ``.nii.gz`` (None: :func:`MedSRLib.io.compress.gzip_threads`).

    Returns:
        The absolute path written.

    Raises:
        OutputPathError: see :func:`check_output_path`, or the write itself failed.
        UnsupportedImageError: a dtype no format can store (complex, object, strings).
        GeometryError: a sheared or scaled direction to be written as NIfTI (NRRD/MHA hold it exactly).
        TypeError: ``volume`` is not a :class:`Volume`.
    """
    if not isinstance(volume, Volume):
        raise TypeError(f"write_volume needs a MedSRLib Volume; got {type(volume).__name__}")
    target = check_output_path(path, inputs=inputs, overwrite=overwrite)
    dtype = np.asarray(volume.array).dtype
    if not (np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.floating) or dtype == np.bool_):
        raise UnsupportedImageError(f"cannot write voxels of dtype {dtype}; convert to an integer or float dtype first")
    direction = np.asarray(volume.direction, dtype=np.float64)
    if target.name.lower().endswith((".nii", ".nii.gz")) and not np.allclose(direction.T @ direction, np.eye(3), atol=1e-4):
        from ..errors import GeometryError

        raise GeometryError(f"NIfTI cannot hold the sheared or scaled direction of this volume (its writer would move "
                            f"the voxels); write {target.name.split('.')[0]}.nrrd or .mha instead")
    import SimpleITK as sitk

    from ..provenance import embed_provenance

    remove_stale_partials(target.parent)
    image = volume_to_sitk(volume)
    ending = _ending(target) or ""
    if provenance is not None:
        embed_provenance(image, provenance, ending)
    compress = not target.name.lower().endswith(".nii")  # .nii.gz by its name; NRRD/MHA gzip-encoded
    temp = target.with_name(partial_name(ending))
    try:
        try:
            if ending.lower() == ".nii.gz":
                _write_nifti_gz(image, temp, threads)
            else:
                sitk.WriteImage(image, str(temp), useCompression=compress)
                _fsync(temp)
                _verify_written(temp, image, ending.lower())
            with _blocked_signals():
                if overwrite:
                    os.replace(temp, target)
                else:
                    try:
                        os.link(temp, target)  # atomic; fails if another run wrote the file meanwhile
                    except FileExistsError:
                        raise OutputPathError(
                            f"output file exists: {target} (another run wrote it meanwhile?); pass --overwrite to replace it"
                        ) from None
                    except OSError as exc:
                        if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
                            raise
                        if target.exists():
                            raise OutputPathError(f"output file exists: {target}; pass --overwrite to replace it") from None
                        os.replace(temp, target)
                _WRITTEN.append(target)
            try:
                _fsync(target.parent)  # the rename itself survives a crash
            except OSError:
                pass
            if provenance is not None:
                write_sidecar(target, provenance, overwrite=True)
        except (RuntimeError, OSError) as exc:
            message = itk_error_message(exc) if isinstance(exc, RuntimeError) else (exc.strerror or str(exc))
            raise OutputPathError(f"could not write {target}: {message}; check free space and permissions") from None
    finally:
        try:
            if temp.exists():
                temp.unlink()
        except OSError:
            pass
    return target


def write_sidecar(output: str | os.PathLike[str], record: Mapping[str, Any], *, overwrite: bool = True) -> Path:
    """Write a provenance ``record`` (JSON-able, :func:`MedSRLib.provenance.build_provenance`) as indented
    JSON to :func:`MedSRLib.provenance.sidecar_path` of ``output``, atomically (temporary file + rename).

    Raises:
        OutputPathError: the sidecar exists and ``overwrite`` is False.
    """
    from ..provenance import sidecar_path

    target = sidecar_path(output)
    if target.exists() and not overwrite:
        raise OutputPathError(f"provenance sidecar {target} already exists; remove it or pass --overwrite")
    return write_text_atomic(target, json.dumps(record, indent=2, sort_keys=True) + "\n")


def write_text_atomic(path: str | os.PathLike[str], text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically: a temporary file in the same folder (:func:`partial_name`),
    flushed and fsync'ed, then renamed over ``path`` (replacing it); a reader sees the old or the new file,
    never a part. Used for provenance sidecars and batch summaries (CSV, JSON)."""
    target = Path(path)
    ending = ".csv" if target.name.lower().endswith(".csv") else ".json"
    temp = target.with_name(partial_name(ending))
    try:
        with open(temp, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, target)
    finally:
        if temp.exists():
            temp.unlink()
    return target
