"""How an output was made: a provenance record stored in the output file and in a JSON sidecar.

The record (:func:`build_provenance`) holds the MedSR version, the model, its weights' sha256, the
precision that ran, the output grid (shape ``(z, y, x)``, spacing/origin in mm and direction, ITK
LPS order ``(i, j, k)``), the run options, the input path and its sha256, the intensity rules applied
(clipping, CT padding) and the data-consistency summary when the output was checked.

Where it goes (:func:`embed_provenance`; :func:`MedSRLib.io.writers.write_sidecar`):

* NIfTI: the 80-byte ``descrip`` field holds a one-line summary (``MedSR <version> <model> x<s> ...``);
* NRRD and MetaImage: a key ``medsr_provenance`` holds the whole record as compact JSON;
* always: ``<output stem>.medsr.json`` beside the output (e.g. ``t1_x2.medsr.json`` for
  ``t1_x2.nii.gz``), the whole record, indented.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np

__all__ = ["PROVENANCE_KEY", "build_provenance", "embed_provenance", "file_sha256", "sidecar_path", "write_sidecar"]

#: NRRD / MetaImage metadata key holding the JSON record.
PROVENANCE_KEY = "medsr_provenance"
_NIFTI_DESCRIP_BYTES = 80
_WRITE_ENDINGS = (".nii.gz", ".nii", ".nrrd", ".mha")


def file_sha256(path: str | os.PathLike[str]) -> str:
    """sha256 (hex) of a file, or of a folder: over each regular file's relative name and sha256, sorted."""
    path = Path(path)
    if path.is_dir():
        digest = hashlib.sha256()
        for file in sorted(p for p in path.rglob("*") if p.is_file()):
            digest.update(str(file.relative_to(path)).encode() + b"\0" + file_sha256(file).encode() + b"\n")
        return digest.hexdigest()
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return repr(value)


def build_provenance(
    result: Any,
    *,
    input_path: str | os.PathLike[str] | None = None,
    options: Mapping[str, Any] | None = None,
    consistency: Mapping[str, Any] | None = None,
    hash_input: bool = True,
) -> dict[str, Any]:
    """The provenance record of a super-resolved :class:`~MedSRLib.volume.Volume`.

    Args:
        result: the output volume; its ``metadata["medsr"]`` (written by the pipeline) gives the
            model, scale, slice axis, modality, intensity mapping, weights sha256 and precision.
        input_path: the input file or DICOM folder (its sha256 is recorded when ``hash_input``).
        options: the run options as given (CLI arguments, library keyword arguments).
        consistency: the data-consistency summary (``ConsistencyReport.to_json()``) when checked.
        hash_input: hash the input (a DICOM folder: every file in it).

    Returns:
        A JSON-able dict (keys: ``medsr_version``, ``created_utc``, ``model``, ``weights_sha256``,
        ``precision``, ``output_grid``, ``options``, ``input``, ``intensity``, ``consistency``).
    """
    from . import __version__

    run = dict(result.metadata.get("medsr", {}) or {})
    grid = {
        "shape_zyx": [int(n) for n in result.shape],
        "spacing_mm_ijk": [float(s) for s in result.spacing],
        "origin_lps_mm": [float(o) for o in result.origin],
        "direction_lps": np.asarray(result.direction, dtype=float).tolist(),
        "slice_axis": run.get("slice_axis"),
        "scale": run.get("scale"),
        "plane": run.get("plane", "in"),
        "plan": run.get("grid"),  # the GridPlan (geometry.plan_output_grid) as JSON
    }
    source = {"path": None, "sha256": None}
    if input_path is not None:
        source["path"] = os.fspath(Path(input_path).resolve())
        if hash_input and Path(input_path).exists():
            source["sha256"] = file_sha256(input_path)
    record = {
        "medsr_version": __version__,
        "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "model": {k: run.get(k) for k in ("model", "network", "config", "scale", "ensemble")},
        "weights_sha256": run.get("weights"),
        "precision": run.get("precision"),  # what ran (engine.Predictor), not what was asked
        "device": run.get("device"),
        "modality": run.get("modality"),
        "output_grid": grid,
        "output_dtype": str(np.asarray(result.array).dtype),
        "intensity": run.get("intensity"),
        "intensity_rules": run.get("intensity_rules"),
        "options": dict(options or {}),
        "input": source,
        "consistency": consistency,
    }
    if run.get("plane") in ("through", "both"):  # factor, thickness used (and whether assumed), adaptation
        steps = run.get("steps") or [run]
        record["through_plane"] = next((s.get("through_plane") for s in steps if s.get("plane") == "through"), None)
    return _jsonable(record)


def summary_line(record: Mapping[str, Any]) -> str:
    """A one-line summary of at most 80 bytes (ASCII) for NIfTI's ``descrip``."""
    model = record.get("model") or {}
    sha = (record.get("weights_sha256") or "")[:12]
    text = f"MedSR {record.get('medsr_version', '?')} {model.get('model', '?')} x{model.get('scale', '?')}"
    if record.get("precision"):
        text += f" {record['precision']}"
    if sha:
        text += f" w={sha}"
    text = text.encode("ascii", "replace").decode()
    return text[:_NIFTI_DESCRIP_BYTES - 1]


def embed_provenance(image: Any, record: Mapping[str, Any], ending: str) -> None:
    """Store ``record`` in a SimpleITK image's metadata before writing (see the module docstring)."""
    image.SetMetaData("ITK_FileNotes", summary_line(record))
    if not ending.lower().startswith(".nii"):
        image.SetMetaData(PROVENANCE_KEY, json.dumps(record, separators=(",", ":"), sort_keys=True))


def sidecar_path(output: str | os.PathLike[str]) -> Path:
    """``<output stem>.medsr.json`` beside ``output`` (``a/t1_x2.nii.gz`` -> ``a/t1_x2.medsr.json``)."""
    output = Path(output)
    name = output.name
    for ending in _WRITE_ENDINGS:
        if name.lower().endswith(ending):
            name = name[: -len(ending)]
            break
    return output.with_name(f"{name}.medsr.json")
