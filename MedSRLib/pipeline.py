"""Volume in, super-resolved volume out: the one place that ties I/O, geometry, intensity and engine.

``super_resolve`` cuts a :class:`~MedSRLib.volume.Volume` into 2D slices orthogonal to the chosen
axis, maps intensities to the networks' [0, 1] domain (:mod:`MedSRLib.intensity`), runs the model on
batches of slices (:mod:`MedSRLib.engine`), maps back to the input's units and dtype, and re-stacks
into a preallocated output whose geometry comes from :func:`MedSRLib.geometry.super_resolved_geometry`
(in-plane spacing / scale, slice spacing, direction unchanged, origin shifted to keep the field of view).

Slices are read lazily (normalised one batch at a time) and written straight into the output array,
so memory is the input + the output + one batch of activations.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .errors import InputSizeError
from .volume import Volume

ProgressCallback = Callable[[int, int], None]
CancelCallback = Callable[[], bool]


class _NormalisedSlices:
    """Lazy ``(n, h, w)`` float32 view of a volume's slices along one axis, mapped to [0, 1]."""

    def __init__(self, stack: np.ndarray, mapping: Any) -> None:
        self._stack = stack  # (n, h, w) view of the input array; never written
        self._mapping = mapping
        self.shape = stack.shape

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index: slice) -> np.ndarray:
        return np.ascontiguousarray(self._mapping.to_network(self._stack[index]), dtype=np.float32)  # issue 15: 5, 6


class _DenormalisingWriter:
    """Writes ``(b, sh, sw)`` [0, 1] results into a preallocated output stack in the input's units."""

    def __init__(self, stack: np.ndarray, mapping: Any, source: np.ndarray) -> None:
        self._stack = stack  # (n, sh, sw) view of the output array
        self._mapping = mapping
        self._source = source  # (n, h, w) view of the input (issue 15: checks, clipping, padding restore)
        self.shape = stack.shape

    def __len__(self) -> int:
        return self.shape[0]

    def __setitem__(self, index: slice, values: np.ndarray) -> None:
        self._stack[index] = self._mapping.from_network(values, self._source[index], dtype=self._stack.dtype,
                                                        first_slice=index.start or 0)


def _resolve_spec(model: Any) -> Any:
    from .models import get_model
    from .models.base import ModelSpec

    return model if isinstance(model, ModelSpec) else get_model(str(model))


def super_resolve(
    volume: Volume,
    *,
    model: Any = "bicubic",
    scale: int = 2,
    axis: int | str | None = None,
    device: str = "auto",
    batch_size: int | None = None,
    memory_budget_mb: float | None = None,
    tile: int | None = None,
    ensemble: bool = False,
    precision: str = "auto",
    output_dtype: str = "input",
    modality: str | None = None,
    weights: str | Path | None = None,
    allow_untrained: bool = False,
    progress: ProgressCallback | None = None,
    cancel: CancelCallback | None = None,
    clip_output: bool = True,
) -> Volume:
    """Super-resolve ``volume`` in the plane orthogonal to ``axis`` by integer ``scale``.

    Args:
        volume: the input (never modified).
        model: a registry name (``medsr models``) or a :class:`~MedSRLib.models.base.ModelSpec`.
        scale: integer factor applied to both in-plane axes; must be one of the model's scales.
        axis: slice axis: None (largest spacing), ``'axial'|'coronal'|'sagittal'`` or a numpy axis 0-2.
        device, batch_size, memory_budget_mb, tile, ensemble, precision: engine options
            (:class:`MedSRLib.engine.EngineOptions`).
        output_dtype: ``'input'`` (keep the input's dtype and units; integers rounded and clipped)
            or ``'float32'``.
        modality: ``'CT'``/``'MR'`` overrides the volume's own or guessed modality (intensity mapping).
        weights: a weights file overriding the shipped one.
        allow_untrained: run a learned network with random weights (tests and benchmarks only).
        progress: ``progress(done_slices, total_slices)`` after each batch.
        cancel: polled between batches; returning True raises :class:`~MedSRLib.errors.CancelledError`.
        clip_output: clip outputs to the physically possible range (CT >= -1024 HU outside padding, MR
            >= 0 when the input is); False keeps the network's raw values
            (:class:`~MedSRLib.intensity.NetworkIntensity`).

    Returns:
        A new :class:`Volume` on the super-resolved grid, same modality, with ``metadata["medsr"]``
        describing the run.
    """
    from .engine import EngineOptions, run_slices
    from .geometry import resolve_slice_axis, super_resolved_geometry
    from .intensity import IntensityMapping, NetworkIntensity, guess_modality
    from .safety import check_run_arguments, check_run_memory

    check_run_arguments(volume, scale=scale, modality=modality, allow_untrained=allow_untrained)  # issue 15: 14
    spec = _resolve_spec(model)
    scale = spec.check_scale(scale)
    if output_dtype not in ("input", "float32"):
        raise ValueError(f"output_dtype must be 'input' or 'float32'; got {output_dtype!r}")
    slice_axis = resolve_slice_axis(volume, axis)
    in_plane = [n for a, n in enumerate(volume.shape) if a != slice_axis]
    if min(in_plane) < spec.min_lr_size:
        raise InputSizeError(
            f"slices of {in_plane[0]}x{in_plane[1]} px are smaller than model '{spec.name}' needs "
            f"({spec.min_lr_size} px); choose another --axis or a model with a smaller minimum (e.g. bicubic)"
        )
    options = EngineOptions(
        device=device,
        batch_size=batch_size,
        memory_budget_mb=memory_budget_mb,
        tile=tile,
        ensemble=ensemble,
        precision=precision,
    )
    modality = (modality or volume.modality or guess_modality(volume)).upper()
    mapping = IntensityMapping.fit(volume.array, modality=modality)
    rules = NetworkIntensity.for_volume(volume.array, mapping, clip_output=clip_output)  # issue 15: 5, 6, 7
    from .models.reparam import prepare_for_inference

    module = prepare_for_inference(spec.load(scale, weights=weights, allow_untrained=allow_untrained))
    grid = super_resolved_geometry(volume, scale=scale, slice_axis=slice_axis)

    dtype = volume.array.dtype if output_dtype == "input" else np.dtype(np.float32)
    if not (np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.floating)):
        dtype = np.dtype(np.float32)
    check_run_memory(volume, scale, slice_axis=slice_axis, output_dtype=dtype)  # issue 15: 10
    out = np.empty(grid.shape, dtype=dtype)
    source = _NormalisedSlices(np.moveaxis(volume.array, slice_axis, 0), rules)
    sink = _DenormalisingWriter(np.moveaxis(out, slice_axis, 0), rules, np.moveaxis(volume.array, slice_axis, 0))
    run_slices(
        module, source, scale=scale, out=sink, options=options, progress=progress, cancel=cancel,
        min_lr_size=spec.min_lr_size,
    )

    run_info = {
        "model": spec.name,
        "network": spec.network,
        "config": spec.config,
        "scale": scale,
        "slice_axis": int(slice_axis),
        "modality": modality,
        "intensity": _jsonable(mapping),
        "intensity_rules": rules.as_dict(),
        "precision": precision,
        "device": str(device),
        "ensemble": bool(ensemble),
        "weights": (spec.card(scale) or {}).get("sha256") if weights is None and spec.learned else None,
    }
    return Volume(
        array=out,
        spacing=grid.spacing,
        origin=grid.origin,
        direction=grid.direction,
        modality=modality,
        metadata={**volume.metadata, "medsr": run_info},
    )


def super_resolve_file(
    input_path: str | Path,
    output_path: str | Path,
    *,
    series_uid: str | None = None,
    overwrite: bool = False,
    **options: Any,
) -> tuple[Volume, Path]:
    """Read ``input_path``, super-resolve (``options`` as :func:`super_resolve`), write ``output_path``.

    The output path is checked (writable, supported extension, not an input, not an existing file
    unless ``overwrite``) before any work; on any error or cancel nothing is written. The output
    records its provenance (:mod:`MedSRLib.provenance`).
    """
    from .io import check_output_path, read_volume, write_volume
    from .provenance import build_provenance

    target = check_output_path(output_path, inputs=[input_path], overwrite=overwrite)
    volume = read_volume(input_path, series_uid=series_uid)
    result = super_resolve(volume, **options)
    record = build_provenance(result, input_path=input_path, options=options)  # issue 15: 15
    written = write_volume(result, target, inputs=[input_path], overwrite=overwrite, provenance=record)
    return result, written


def estimate_seconds(
    volume_shape_zyx: tuple[int, int, int],
    spacing: Any = None,
    *,
    model: Any,
    scale: int,
    axis: int | str | None = None,
    device: str = "auto",
    ensemble: bool = False,
    precision: str = "auto",
) -> float:
    """Rough run time in seconds before starting, from the model's MACs per LR pixel, the device and
    the precision (``'auto'`` runs bf16 where :func:`MedSRLib.engine.cpu_bf16_pays`: faster).

    Every voxel belongs to exactly one slice whatever the axis, so the LR pixel count is the voxel
    count; ``spacing`` and ``axis`` are accepted for API symmetry and do not change the estimate.
    """
    from .engine import estimate_seconds as engine_estimate
    from .engine import resolve_device

    spec = _resolve_spec(model)
    scale = spec.check_scale(scale)
    n_pixels = int(np.prod([int(n) for n in volume_shape_zyx]))
    return float(
        engine_estimate(
            macs_per_lr_pixel=spec.macs_per_lr_pixel(scale),
            lr_pixels_total=n_pixels,
            device=resolve_device(device),
            ensemble=ensemble,
            precision=precision,
        )
    )


def _jsonable(obj: Any) -> Any:
    try:
        data = asdict(obj)
    except TypeError:
        return repr(obj)
    return {k: (float(v) if isinstance(v, (np.floating, float)) else v) for k, v in data.items()}
