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
from typing import Any, Callable, NamedTuple

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


PLANES = ("auto", "in", "through", "both")


def resolve_plane(volume: Volume, *, plane: str | None = None, scale: Any = None, model: Any = None,
                  predictor: Any = None, axis: int | str | None = None) -> str:
    """Which run ``super_resolve`` makes: ``'in'`` (in-plane x ``scale``), ``'through'`` (the slice
    axis) or ``'both'`` (in-plane, then through-plane).

    ``plane=None`` keeps existing calls' meaning: an explicit ``scale``, an in-plane ``model`` or an
    in-plane ``predictor`` = ``'in'``; a through-plane model/predictor = ``'through'``; nothing = ``'auto'``.
    ``'auto'``: ``'through'`` when the slice spacing is >= 2x the in-plane spacing
    (:attr:`MedSRLib.geometry.ThickSlices.is_thick`) and the volume has more than one slice, else ``'in'``.
    """
    from .geometry import THICK_SLICE_RATIO, SPACING_TIE_RTOL, resolve_slice_axis

    if plane is not None and plane not in PLANES:
        raise OptionError(f"plane must be one of {', '.join(PLANES)}; got {plane!r}")
    if plane is None:
        spec = predictor.spec if predictor is not None else (_resolve_spec(model) if model is not None else None)
        if spec is not None:
            plane = "through" if spec.multi_scale else "in"
        else:
            plane = "in" if scale is not None else "auto"
    if plane != "auto":
        return plane
    a = resolve_slice_axis(volume, axis)
    spacing = [float(v) for v in volume.spacing[::-1]]
    in_plane = min(spacing[b] for b in range(3) if b != a)
    thick = volume.shape[a] > 1 and spacing[a] >= THICK_SLICE_RATIO * in_plane * (1.0 - SPACING_TIE_RTOL)
    return "through" if thick else "in"


def super_resolve(
    volume: Volume,
    *,
    model: Any = None,
    scale: int | None = None,
    axis: int | str | None = None,
    plane: str | None = None,
    target_spacing: float | None = None,
    thickness: float | None = None,
    adapt_seconds: float | None = None,
    adapt_iterations: int | None = None,
    adapt_seed: int = 0,
    views: int | None = None,
    through_model: Any = None,
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
    """Super-resolve ``volume`` in the plane orthogonal to ``axis`` by integer ``scale`` (in-plane),
    along the slice axis to ``target_spacing`` (through-plane), or both.

    Through-plane (issue 20): the slice axis ``a`` (``axis``, default the largest spacing) is
    super-resolved by ``f = slice spacing / target_spacing`` (any value >= 1.2; default target = the
    finest in-plane spacing, near-isotropic) with a through-plane network (``tp-*``, default per
    modality: :func:`MedSRLib.models.default_model` with ``plane='through'``) run at the integer factor
    ``r = ceil(n_out / n)`` on the slices of both in-plane orientations (fused by averaging), a
    non-integer factor finished by the one-axis cubic B-spline (:mod:`MedSRLib.resize`). The output
    grid is :func:`MedSRLib.geometry.plan_output_grid`'s (``n_out = round(n f)`` slices, spacing
    ``n/n_out x`` the slice spacing, in-plane grid and direction unchanged, origin moved by
    ``(1/f - 1)/2 x`` the slice spacing along the slice direction: field of view kept); dtype kept.
    Memory: the input + a float32 output (+ the output in the input dtype) + one batch.

    Args:
        volume: the input (never modified).
        model: a registry name (``medsr models``) or a :class:`~MedSRLib.models.base.ModelSpec`;
            None = ``'bicubic'`` (or the predictor's model).
        scale: integer factor applied to both in-plane axes; must be one of the model's scales;
            None = 2 (or the predictor's scale).
        axis: slice axis: None (largest spacing), ``'axial'|'coronal'|'sagittal'`` or a numpy axis 0-2.
        plane: ``'auto'``, ``'in'``, ``'through'`` or ``'both'`` (in-plane x ``scale``, default 2, then
            through-plane); None = as before this option existed (see :func:`resolve_plane`).
        target_spacing: through-plane: the output slice spacing in mm (default: the finest in-plane
            spacing of the input).
        thickness: through-plane: the slice thickness in mm (default: DICOM SliceThickness, else the
            slice spacing, recorded as assumed); used by the adaptation and recorded for the
            consistency check.
        adapt_seconds: through-plane: fine-tune a copy of the network on the volume's own in-plane
            slices for this many seconds first (:func:`MedSRLib.throughplane.adapt_through_plane`);
            ``adapt_iterations`` runs exactly that many steps instead (reproducible to the bit);
            ``adapt_seed`` seeds it. The adapted network is used only when its two orientations agree
            about as well as the shipped network's (:func:`MedSRLib.throughplane.use_adapted`); the
            record's ``through_plane.adaptation.used`` says which ran.
        views: through-plane: the views fused, 4 (default: the two orthogonal orientations and the two
            voxel diagonals; :data:`MedSRLib.throughplane.DEFAULT_VIEWS`) or 2 (the orthogonal ones only,
            about half the network time).
        through_model: with ``plane='both'``: the through-plane model (``model`` is the in-plane one).
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
        describing the run (``plane``, model, scale, slice axis, intensity mapping, the precision that
        ran, device, and ``grid``: the :class:`~MedSRLib.geometry.GridPlan` as JSON; through-plane
        adds ``through_plane``: factor, network factor, finishing step, thickness used and whether
        it was assumed, target spacing, adaptation report; ``'both'`` adds ``steps``).
    """
    chosen = resolve_plane(volume, plane=plane, scale=scale, model=model, predictor=predictor, axis=axis)
    common = dict(output_dtype=output_dtype, modality=modality, progress=progress, cancel=cancel, clip_output=clip_output)
    if chosen == "through":
        return _super_resolve_through_plane(
            volume, model=model, axis=axis, target_spacing=target_spacing, thickness=thickness,
            adapt_seconds=adapt_seconds, adapt_iterations=adapt_iterations, adapt_seed=adapt_seed, views=views,
            weights=weights, allow_untrained=allow_untrained, options=options, predictor=predictor,
            engine_keywords=engine_keywords, **common)
    if any(v is not None for v in (target_spacing, thickness, adapt_seconds, adapt_iterations, views)) and chosen == "in":
        raise OptionError("target_spacing, thickness, adapt_* and views apply to through-plane runs; this run is in-plane "
                          "(pass plane='through' or 'both')")
    if chosen == "both":
        if predictor is not None:
            raise OptionError("plane='both' builds its two predictors; do not pass one")
        first = _super_resolve_in_plane(volume, model=model, scale=2 if scale is None else scale, axis=axis,
                                        weights=None, allow_untrained=allow_untrained, options=options,
                                        predictor=None, engine_keywords=engine_keywords,
                                        **{**common, "output_dtype": "float32"})
        in_plane_spacing = min(float(v) for a, v in enumerate(volume.spacing[::-1]) if a != first.metadata["medsr"]["slice_axis"])
        second = _super_resolve_through_plane(
            first.with_array(first.array, metadata={**volume.metadata}), model=through_model,
            axis=first.metadata["medsr"]["slice_axis"],
            target_spacing=in_plane_spacing if target_spacing is None else target_spacing, thickness=thickness,
            adapt_seconds=adapt_seconds, adapt_iterations=adapt_iterations, adapt_seed=adapt_seed, views=views,
            weights=weights, allow_untrained=allow_untrained, options=options, predictor=None,
            engine_keywords=engine_keywords, source_units=volume, **common)
        return _combine_steps(volume, first, second)
    return _super_resolve_in_plane(volume, model=model, scale=scale, axis=axis, weights=weights,
                                   allow_untrained=allow_untrained, options=options, predictor=predictor,
                                   engine_keywords=engine_keywords, **common)


def _super_resolve_in_plane(
    volume: Volume,
    *,
    model: Any,
    scale: int | None,
    axis: int | str | None,
    output_dtype: str,
    modality: str | None,
    weights: str | Path | None,
    allow_untrained: bool,
    options: Any,
    predictor: Any,
    progress: ProgressCallback | None,
    cancel: CancelCallback | None,
    clip_output: bool,
    engine_keywords: dict[str, Any],
) -> Volume:
    """The in-plane run of :func:`super_resolve` (integer ``scale`` on the two axes other than ``axis``)."""
    from .engine import Predictor, engine_options
    from .geometry import in_plane_plan, resolve_slice_axis
    from .intensity import IntensityMapping, NetworkIntensity, guess_modality
    from .safety import check_run_arguments, check_run_memory

    if predictor is not None and not isinstance(predictor, Predictor):
        raise OptionError(f"predictor must be a MedSRLib.engine.Predictor; got {type(predictor).__name__}")
    if predictor is not None and predictor.one_direction or model is not None and _resolve_spec(model).multi_scale:
        name = predictor.spec.name if predictor is not None else _resolve_spec(model).name
        raise OptionError(f"model '{name}' is a through-plane network; run it with plane='through' (--plane through)")
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
        "plane": "in",
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


class ThroughPlanePlan(NamedTuple):
    """What a through-plane run of one volume does (:func:`plan_through_plane`): the slice facts
    (:func:`MedSRLib.geometry.thick_slices`), the target spacing (mm), the requested factor, the output
    :class:`~MedSRLib.geometry.GridPlan`, the output slice count, the factor that count gives and the
    integer network factor ``r`` it runs at (a Predictor of a ``tp-*`` network is cached per ``r``)."""

    facts: Any
    target_spacing: float
    requested_factor: float
    plan: Any
    n_out: int
    factor: float
    network_factor: int


def plan_through_plane(volume: Volume, spec: Any, *, axis: int | str | None = None, target_spacing: float | None = None,
                       thickness: float | None = None, modality: str | None = None, weights: Any = None,
                       check_weights: bool = True) -> ThroughPlanePlan:
    """The through-plane plan of ``volume`` with the ``tp-*`` model ``spec`` (no network is built).

    Raises:
        ScaleError: a factor below :data:`MedSRLib.throughplane.MIN_FACTOR` or above the model's largest,
            or slices smaller than the model's minimum.
        WeightsError: ``check_weights`` and the model has no shipped weights at the network factor
            (and no ``weights`` file is given).
    """
    import math

    from .errors import ScaleError, WeightsError
    from .geometry import plan_output_grid, thick_slices
    from .throughplane import MIN_FACTOR

    facts = thick_slices(volume, axis=axis, thickness=thickness)
    target = facts.in_plane if target_spacing is None else float(target_spacing)
    requested = facts.spacing / target
    if requested < MIN_FACTOR:
        raise ScaleError(f"the slice spacing {facts.spacing:.4g} mm is within {MIN_FACTOR}x of the target {target:.4g} mm: "
                         "nothing to do through-plane (use --plane in, or a smaller --target-spacing)")
    factors = [1.0, 1.0, 1.0]
    factors[facts.axis] = requested
    plan = plan_output_grid(volume, factors)
    n, n_out = facts.n_slices, plan.output.shape[facts.axis]
    factor = n_out / n
    r = int(math.ceil(factor - 1e-9))
    if r > max(spec.scales):
        finest = facts.spacing / max(spec.scales)
        raise ScaleError(f"factor {requested:.3g} ({facts.spacing:.4g} -> {target:.4g} mm) exceeds the x{max(spec.scales)} "
                         f"of {spec.name}; choose --target-spacing >= {finest:.3g} mm")
    if check_weights and spec.learned and weights is None and not spec.has_weights(r):
        raise WeightsError(f"no through-plane weights for {modality} ({spec.name}: {spec.weights_path(r).name} is not "
                           "shipped yet); pass --weights FILE, or --plane in for in-plane super-resolution")
    others = [b for b in (0, 1, 2) if b != facts.axis]
    if min(volume.shape[b] for b in others) < spec.min_lr_size:
        raise ScaleError(f"the in-plane size {tuple(volume.shape[b] for b in others)} is below {spec.name}'s minimum "
                         f"of {spec.min_lr_size} px")
    return ThroughPlanePlan(facts, target, requested, plan, n_out, factor, r)


def _super_resolve_through_plane(
    volume: Volume,
    *,
    model: Any,
    axis: int | str | None,
    target_spacing: float | None,
    thickness: float | None,
    adapt_seconds: float | None,
    adapt_iterations: int | None,
    adapt_seed: int,
    views: int | None,
    output_dtype: str,
    modality: str | None,
    weights: str | Path | None,
    allow_untrained: bool,
    options: Any,
    predictor: Any,
    progress: ProgressCallback | None,
    cancel: CancelCallback | None,
    clip_output: bool,
    engine_keywords: dict[str, Any],
    source_units: Volume | None = None,
) -> Volume:
    """The through-plane run of :func:`super_resolve` (see its docstring). ``source_units``: the volume
    whose intensities and dtype define the mapping and the output (``plane='both'``: the original)."""
    import math
    import time

    from .engine import Predictor, engine_options
    from .intensity import IntensityMapping, NetworkIntensity, guess_modality
    from .models import default_model
    from .safety import check_memory, check_run_arguments
    from .throughplane import adapt_through_plane, resolve_views, super_resolve_through_plane, use_adapted

    check_run_arguments(volume, scale=1, modality=modality, allow_untrained=allow_untrained)
    units = source_units if source_units is not None else volume
    modality = (modality or units.modality or guess_modality(units)).upper()
    if predictor is not None:
        if not isinstance(predictor, Predictor) or not predictor.one_direction:
            raise OptionError("a through-plane run needs a Predictor of a through-plane network (tp-*)")
        if options is not None or engine_keywords or weights is not None or allow_untrained:
            raise OptionError("give either a predictor or options/engine keywords/weights, not both")
        if adapt_seconds or adapt_iterations:
            raise OptionError("adaptation trains its own copy of the network; do not pass a predictor with adapt_*")
        spec = predictor.spec
    else:
        spec = default_model(modality, plane="through") if model is None else _resolve_spec(model)
        if not spec.multi_scale:
            raise OptionError(f"model '{spec.name}' is an in-plane network; through-plane models: "
                              "tp-dridsr (MR), tp-dridsr-ct (CT), tp-mdrn (see `medsr models`)")
        opts = engine_options(options, **engine_keywords)
    for name, value in (("target_spacing", target_spacing), ("adapt_seconds", adapt_seconds)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating))
                                  or not math.isfinite(value) or value < 0 or (name == "target_spacing" and value == 0)):
            raise OptionError(f"{name} must be a positive number (mm / seconds); got {value!r}")
    if adapt_iterations is not None and (isinstance(adapt_iterations, bool) or not isinstance(adapt_iterations, int)
                                         or adapt_iterations < 1):
        raise OptionError(f"adapt_iterations must be a positive integer; got {adapt_iterations!r}")
    if output_dtype not in ("input", "float32"):
        raise OptionError(f"output_dtype must be 'input' or 'float32'; got {output_dtype!r}")
    views = resolve_views(views)
    tp = plan_through_plane(volume, spec, axis=axis, target_spacing=target_spacing, thickness=thickness,
                            modality=modality, weights=weights, check_weights=predictor is None and not allow_untrained)
    facts, target, requested, plan, n_out, factor, r = (tp.facts, tp.target_spacing, tp.requested_factor, tp.plan,
                                                        tp.n_out, tp.factor, tp.network_factor)
    n = facts.n_slices
    others = [b for b in (0, 1, 2) if b != facts.axis]
    mapping = IntensityMapping.fit(units.array, modality=modality)
    rules = NetworkIntensity.for_volume(units.array, mapping, clip_output=clip_output)
    dtype = units.array.dtype if output_dtype == "input" else np.dtype(np.float32)
    if not (np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.floating)):
        dtype = np.dtype(np.float32)
    n_voxels_out = int(np.prod(plan.output.shape, dtype=np.float64))
    extra = 0 if dtype == np.float32 else n_voxels_out * np.dtype(dtype).itemsize
    adapt_bytes = volume.array.size * 4 if (adapt_seconds or adapt_iterations) else 0
    from .safety import WORKING_BYTES

    check_memory(volume.array.nbytes + 4 * n_voxels_out + extra + adapt_bytes + WORKING_BYTES,
                 f"through-plane x{factor:.3g} of a {'x'.join(map(str, volume.shape))} (z,y,x) volume "
                 f"(output {'x'.join(map(str, plan.output.shape))})",
                 advice="choose a larger --target-spacing or crop the input")
    adaptation = None
    if predictor is None:
        if adapt_seconds or adapt_iterations:
            module = spec.load(r, weights=weights, allow_untrained=allow_untrained)
            unit = rules.to_network(volume.array)
            module, report = adapt_through_plane(module, unit, axis=facts.axis, factor=factor,
                                                 seconds=float(adapt_seconds or 0.0), iterations=adapt_iterations,
                                                 thickness=facts.thickness / facts.spacing, seed=int(adapt_seed),
                                                 threads=opts.threads, precision=opts.precision)
            del unit
            shipped = Predictor(spec, r, weights=weights, options=opts, allow_untrained=allow_untrained)
            adapted = Predictor(spec, r, module=module, options=opts)
            predictor = adapted if use_adapted(volume.array, report, axis=facts.axis, factor=factor, shipped=shipped,
                                               adapted=adapted, normalise=rules.to_network) else shipped
            adaptation = report.to_json()
        else:
            predictor = Predictor(spec, r, weights=weights, options=opts, allow_untrained=allow_untrained)
    started = time.perf_counter()
    projection: list[Any] = []
    fused = super_resolve_through_plane(volume.array, axis=facts.axis, factor=factor, predictor=predictor, n_out=n_out,
                                        normalise=rules.to_network, progress=progress, cancel=cancel, views=views,
                                        thickness=facts.thickness / facts.spacing, on_projection=projection.append)
    seconds = time.perf_counter() - started
    out = fused if dtype == np.float32 else np.empty(plan.output.shape, dtype=dtype)
    cut = others[0]
    src_view, dst_view = np.moveaxis(volume.array, cut, 0), np.moveaxis(out, cut, 0)
    fused_view = np.moveaxis(fused, cut, 0)
    step = 16
    for k in range(0, src_view.shape[0], step):
        dst_view[k : k + step] = rules.from_network(fused_view[k : k + step], src_view[k : k + step], dtype=dtype,
                                                    first_slice=k)
    del fused, fused_view
    ran = predictor.describe()
    through = {
        **facts.to_json(),
        "factor": factor,
        "requested_factor": requested,
        "target_spacing_mm": target,
        "output_spacing_mm": facts.spacing / factor,
        "network_factor": r,
        "finish": None if n_out == r * n else f"cubic B-spline along axis {facts.axis} ({r * n} -> {n_out} samples)",
        "fusion": ("mean of the two in-plane orientations and the two voxel diagonals" if views == 4
                   else "mean of the two in-plane orientations"),
        "views": views,
        "profile": "gaussian (FWHM = thickness)",
        "projection": projection[0].to_json() if projection else None,
        "adaptation": adaptation,
        "seconds": seconds,
    }
    run_info = {
        "plane": "through",
        "model": spec.name,
        "network": spec.network,
        "config": spec.config,
        "scale": r,
        "factor": factor,
        "slice_axis": int(facts.axis),
        "modality": modality,
        "intensity": _jsonable(mapping),
        "intensity_rules": rules.as_dict(),
        "ensemble": ran["ensemble"],
        "weights": ran["weights"] if adaptation is None or not adaptation["used"] else None,
        "adapted": adaptation is not None and bool(adaptation["used"]),
        "precision": ran["precision"],
        "device": ran["device"],
        "through_plane": through,
        "grid": plan.to_json(),
    }
    metadata = {k: v for k, v in volume.metadata.items() if k != "medsr"}
    return plan.to_volume(out, modality=modality, metadata={**metadata, "medsr": run_info})


def _combine_steps(volume: Volume, first: Volume, second: Volume) -> Volume:
    """``plane='both'``: the through-plane result, its ``metadata["medsr"]`` describing both steps and
    the grid as one :func:`MedSRLib.geometry.plan_output_grid` plan from the input (per-axis factors)."""
    from .geometry import plan_output_grid

    in_run, through_run = first.metadata["medsr"], second.metadata["medsr"]
    factors = [a * b for a, b in zip(in_run["grid"]["factors_zyx"], through_run["grid"]["factors_zyx"])]
    plan = plan_output_grid(volume, factors)
    run_info = {**through_run, "plane": "both", "steps": [in_run, through_run], "grid": plan.to_json(),
                "model": f"{in_run['model']} + {through_run['model']}"}
    return plan.to_volume(second.array, modality=second.modality, metadata={**second.metadata, "medsr": run_info})


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
    plane: str = "in",
    target_spacing: float | None = None,
    views: int | None = None,
) -> float:
    """Rough run time in seconds before starting, from the model's MACs per LR pixel, the device and
    the precision (``'auto'`` resolved as the run would: :func:`MedSRLib.engine.resolve_precision`).

    In-plane (``plane='in'``): every voxel belongs to exactly one slice whatever the axis, so the LR
    pixel count is the voxel count; ``spacing`` and ``axis`` do not change the estimate.
    Through-plane (``plane='through'``, ``model`` a ``tp-*`` network, ``scale`` ignored): ``spacing`` is
    the voxel size in mm in ITK order ``(x, y, z)`` (required); the slice axis is ``axis`` (numpy index
    0..2 of ``volume_shape_zyx``) or the one with the largest spacing; the network runs at
    ``r = ceil(slice spacing / target)`` (target: ``target_spacing``, else the finest other spacing) on
    the slices of every view (``views``, default 4: :func:`MedSRLib.throughplane.view_columns`; 2 views:
    twice the voxel count; the multi-factor network's MACs are counted with every tail built: an upper
    bound at small factors).
    """
    import math

    from .engine import estimate_seconds as engine_estimate
    from .engine import resolve_device

    spec = _resolve_spec(model)
    n_voxels = int(np.prod([int(n) for n in volume_shape_zyx]))
    if plane == "through":
        if spacing is None or len(tuple(spacing)) != 3:
            raise OptionError("a through-plane estimate needs the voxel spacing (x, y, z) in mm")
        zyx = [float(v) for v in reversed(tuple(spacing))]
        slice_axis = int(axis) if isinstance(axis, (int, np.integer)) else int(np.argmax(zyx))
        others = [zyx[a] for a in range(3) if a != slice_axis]
        target = float(target_spacing) if target_spacing else min(others)
        r = int(math.ceil(zyx[slice_axis] / target - 1e-9))
        scale = spec.check_scale(min(max(r, min(spec.scales)), max(spec.scales)))
        from .throughplane import resolve_views, view_columns

        big_p, big_q = (int(volume_shape_zyx[a]) for a in range(3) if a != slice_axis)
        lr_pixels = int(volume_shape_zyx[slice_axis]) * view_columns(big_p, big_q, views=resolve_views(views))
    elif plane == "in":
        scale = spec.check_scale(scale)
        lr_pixels = n_voxels
    else:
        raise OptionError(f"plane must be 'in' or 'through' for an estimate; got {plane!r}")
    return float(
        engine_estimate(
            macs_per_lr_pixel=spec.macs_per_lr_pixel(scale),
            lr_pixels_total=lr_pixels,
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
