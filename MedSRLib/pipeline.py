"""Volume in, super-resolved volume out: the one place that ties I/O, geometry, intensity and engine.

``super_resolve`` cuts a :class:`~MedSRLib.volume.Volume` into 2D slices orthogonal to the chosen
axis, maps intensities to the networks' [0, 1] domain (:mod:`MedSRLib.intensity`), runs the model on
batches of slices (:mod:`MedSRLib.engine`), maps back to the input's units and dtype, and re-stacks
into a preallocated output whose geometry is the :class:`MedSRLib.geometry.GridPlan` of
:func:`MedSRLib.geometry.in_plane_plan`; the network runs through one :class:`MedSRLib.engine.Predictor`
(in-plane spacing / scale, slice spacing, direction unchanged, origin shifted to keep the field of view).

Slices are read lazily (normalised one batch at a time) and written straight into the output array,
so memory is the input + the output + one batch of activations.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .errors import InputSizeError, OptionError
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
    model: Any = None,
    scale: int | None = None,
    axis: int | str | None = None,
    output_dtype: str = "input",
    modality: str | None = None,
    weights: str | Path | None = None,
    allow_untrained: bool = False,
    options: Any = None,
    predictor: Any = None,
    progress: ProgressCallback | None = None,
    cancel: CancelCallback | None = None,
    clip_output: bool = True,
    **engine_keywords: Any,
) -> Volume:
    """Super-resolve ``volume`` in the plane orthogonal to ``axis`` by integer ``scale``.

    Args:
        volume: the input (never modified).
        model: a registry name (``medsr models``) or a :class:`~MedSRLib.models.base.ModelSpec`;
            None = ``'bicubic'`` (or the predictor's model).
        scale: integer factor applied to both in-plane axes; must be one of the model's scales;
            None = 2 (or the predictor's scale).
        axis: slice axis: None (largest spacing), ``'axial'|'coronal'|'sagittal'`` or a numpy axis 0-2.
        output_dtype: ``'input'`` (keep the input's dtype and units; integers rounded and clipped)
            or ``'float32'``.
        modality: ``'CT'``/``'MR'`` overrides the volume's own or guessed modality (intensity mapping).
        weights: a weights file overriding the shipped one.
        allow_untrained: run a learned network with random weights (tests and benchmarks only).
        options: a :class:`MedSRLib.engine.EngineOptions` (default: all automatic).
        predictor: a :class:`MedSRLib.engine.Predictor` built once and reused across volumes (batch
            runs); then ``model``, ``scale``, ``weights``, ``options`` and engine keywords must not be given.
        progress: ``progress(done_slices, total_slices)`` after each batch.
        cancel: polled between batches; returning True raises :class:`~MedSRLib.errors.CancelledError`.
        **engine_keywords: :class:`~MedSRLib.engine.EngineOptions` fields (``device``, ``batch_size``,
            ``memory_budget_mb``, ``tile``, ``tile_overlap``, ``ensemble``, ``precision``, ``threads``,
            ``compile``, ``channels_last``) overriding ``options``; unknown names raise
            :class:`~MedSRLib.errors.OptionError`.
        clip_output: clip outputs to the physically possible range (CT >= -1024 HU outside padding, MR
            >= 0 when the input is); False keeps the network's raw values
            (:class:`~MedSRLib.intensity.NetworkIntensity`).

    Returns:
        A new :class:`Volume` on the super-resolved grid, same modality, with ``metadata["medsr"]``
        describing the run (model, scale, slice axis, intensity mapping, the precision that ran,
        device, and ``grid``: the :class:`~MedSRLib.geometry.GridPlan` as JSON).
    """
    from .engine import Predictor, engine_options
    from .geometry import in_plane_plan, resolve_slice_axis
    from .intensity import IntensityMapping, NetworkIntensity, guess_modality
    from .safety import check_run_arguments, check_run_memory

    if predictor is not None and not isinstance(predictor, Predictor):
        raise OptionError(f"predictor must be a MedSRLib.engine.Predictor; got {type(predictor).__name__}")
    default_scale = predictor.scale if predictor is not None else 2
    check_run_arguments(volume, scale=default_scale if scale is None else scale, modality=modality,
                        allow_untrained=allow_untrained)  # issue 15: 14
    if predictor is None:
        spec = _resolve_spec("bicubic" if model is None else model)
        scale = spec.check_scale(2 if scale is None else scale)
        opts = engine_options(options, **engine_keywords)
    else:
        if options is not None or engine_keywords or weights is not None or allow_untrained:
            raise OptionError("give either a predictor or options/engine keywords/weights, not both")
        spec = predictor.spec
        if (model is not None and _resolve_spec(model).name != spec.name) or (scale is not None and scale != predictor.scale):
            raise OptionError(f"the predictor runs {spec.name} x{predictor.scale}; do not pass another model or scale")
        scale = predictor.scale
    if output_dtype not in ("input", "float32"):
        raise OptionError(f"output_dtype must be 'input' or 'float32'; got {output_dtype!r}")
    slice_axis = resolve_slice_axis(volume, axis)
    in_plane = [n for a, n in enumerate(volume.shape) if a != slice_axis]
    if min(in_plane) < spec.min_lr_size:
        raise InputSizeError(
            f"slices of {in_plane[0]}x{in_plane[1]} px are smaller than model '{spec.name}' needs "
            f"({spec.min_lr_size} px); choose another --axis or a model with a smaller minimum (e.g. bicubic)"
        )
    modality = (modality or volume.modality or guess_modality(volume)).upper()
    mapping = IntensityMapping.fit(volume.array, modality=modality)
    rules = NetworkIntensity.for_volume(volume.array, mapping, clip_output=clip_output)  # issue 15: 5, 6, 7
    plan = in_plane_plan(volume, scale=scale, slice_axis=slice_axis)

    dtype = volume.array.dtype if output_dtype == "input" else np.dtype(np.float32)
    if not (np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.floating)):
        dtype = np.dtype(np.float32)
    check_run_memory(volume, scale, slice_axis=slice_axis, output_dtype=dtype)  # issue 15: 10
    if predictor is None:
        predictor = Predictor(spec, scale, weights=weights, options=opts, allow_untrained=allow_untrained)
    out = np.empty(plan.output.shape, dtype=dtype)
    source = _NormalisedSlices(np.moveaxis(volume.array, slice_axis, 0), rules)
    sink = _DenormalisingWriter(np.moveaxis(out, slice_axis, 0), rules, np.moveaxis(volume.array, slice_axis, 0))
    predictor.run(source, out=sink, progress=progress, cancel=cancel)

    ran = predictor.describe()
    run_info = {
        "model": spec.name,
        "network": spec.network,
        "config": spec.config,
        "scale": scale,
        "slice_axis": int(slice_axis),
        "modality": modality,
        "intensity": _jsonable(mapping),
        "intensity_rules": rules.as_dict(),
        "ensemble": ran["ensemble"],
        "weights": ran["weights"],
        "precision": ran["precision"],
        "device": ran["device"],
        "grid": plan.to_json(),
    }
    return plan.to_volume(out, modality=modality, metadata={**volume.metadata, "medsr": run_info})


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
    the precision (``'auto'`` resolved as the run would: :func:`MedSRLib.engine.resolve_precision`).

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
            model=spec.name,
            scale=scale,
        )
    )


def _jsonable(obj: Any) -> Any:
    try:
        data = asdict(obj)
    except TypeError:
        return repr(obj)
    return {k: (float(v) if isinstance(v, (np.floating, float)) else v) for k, v in data.items()}
