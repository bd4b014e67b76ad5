"""One volume file, end to end: the run options (:class:`RunOptions`) and the one flow (:func:`run_volume`).

``medsr run IN OUT`` and every volume of a cohort (:mod:`MedSRLib.batch`) go through :func:`run_volume`:

1. **read** the input (:func:`MedSRLib.io.read_volume`);
2. **plan**: the run (``in``, ``through`` or ``both``: :func:`MedSRLib.pipeline.resolve_plane`), the
   model (:func:`MedSRLib.models.default_model` unless one is chosen) and which model runs and why
   (notes); a :class:`~MedSRLib.engine.Predictor` from a :class:`PredictorCache` (built once per
   model, plane and factor, reused by every volume of a cohort);
3. **super-resolve** (:func:`MedSRLib.pipeline.super_resolve`);
4. the optional data-consistency **check** (:func:`MedSRLib.consistency.check_consistency`) and, for
   one volume, the difference volume and the comparison panel;
5. **provenance** (:func:`MedSRLib.provenance.build_provenance`) and **write**: NIfTI/NRRD/MHA with
   the provenance embedded and in a sidecar (:func:`MedSRLib.io.write_volume`), or a derived DICOM
   series and its sidecar (:func:`MedSRLib.io.write_dicom_series`, :func:`MedSRLib.io.writers.write_sidecar`);
6. a :class:`VolumeRun` record from which the ``medsr run`` summary (text and ``--json``) and a
   cohort's summary row (:class:`MedSRLib.batch.VolumeRecord`) are both made.

:class:`RunOptions` is the one options type of a run: model, scale, plane, target spacing, slice
thickness, adaptation, modality, slice axis, weights, output dtype, clipping, check, and the engine's
:class:`~MedSRLib.engine.EngineOptions`. It is frozen, keyword-only and validated by field name on
construction; the ``medsr run`` flags are derived from its fields (:func:`run_option_fields`), and
:func:`MedSRLib.batch.run_cohort` takes it, so a cohort offers every option one volume does.

Layer: beside :mod:`MedSRLib.pipeline` (it imports the pipeline, consistency, panel, io, models and
engine; :mod:`MedSRLib.batch` and :mod:`MedSRLib.cli` import it).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Mapping

from .engine.options import EngineOptions
from .errors import OptionError, OutputPathError

__all__ = ["PLANES", "OptionsRun", "PredictorCache", "RunOptions", "VolumeRun", "axis_value", "check_with_options",
           "run_option_fields", "run_summary", "run_volume", "summary_text", "super_resolve_with_options"]

#: The runs :func:`run_volume` makes (``None`` in :class:`RunOptions`: ``'in'`` when a scale is given, else ``'auto'``).
PLANES: tuple[str, ...] = ("auto", "in", "through", "both")
#: Anatomical slice-axis names :class:`RunOptions` accepts besides numpy axes 0-2.
AXIS_NAMES: tuple[str, ...] = ("axial", "coronal", "sagittal")
#: The through-plane fields and their ``medsr run`` flags (refused on an in-plane run).
THROUGH_FIELDS: tuple[str, ...] = ("target_spacing", "thickness", "adapt_seconds", "adapt_iterations", "views")
#: Files :func:`MedSRLib.io.write_dicom_series` writes (a DICOM output folder of only these may be replaced).
DICOM_OUTPUT_FILE = r"^IM\d{5}\.dcm$"


def axis_value(value: str) -> int | str:
    """``--axis``: a numpy array axis 0-2 or an anatomical plane name (validated by :class:`RunOptions`)."""
    return int(value) if value.strip().lstrip("-").isdigit() else value.strip().lower()


def _cli(flag: str, help: str, type: Any = str, metavar: str | None = None, choices: tuple[str, ...] | None = None,
         store: Any = None) -> dict[str, Any]:
    """Field metadata from which ``medsr run`` builds the flag; ``type`` bool = a switch that sets the
    field to ``store``."""
    return {"flag": flag, "help": help, "type": type, "metavar": metavar, "choices": choices, "store": store}


def _is_int(value: Any) -> bool:
    import numpy as np

    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    import numpy as np

    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool) \
        and math.isfinite(float(value))


@dataclass(frozen=True, kw_only=True)
class RunOptions:
    """The options of a run of one volume or a cohort (every field validated by name on construction).

    Attributes:
        model: a registered model name (``medsr models``); None = per modality and plane
            (:func:`MedSRLib.models.default_model`).
        scale: integer in-plane factor; None = 2 on in-plane runs. Given without ``plane``: an in-plane run.
        plane: ``'auto'`` (through-plane when the slice spacing is >= 2x the in-plane spacing, else in-plane),
            ``'in'``, ``'through'``, ``'both'`` (in-plane x ``scale``, then through-plane); None = ``'in'`` when
            ``scale`` or an in-plane ``model`` is given, ``'through'`` for a ``tp-*`` model, else ``'auto'``.
        target_spacing: through-plane output slice spacing in mm; None = the in-plane spacing.
        thickness: through-plane slice thickness in mm; None = DICOM SliceThickness, else the slice spacing.
        adapt_seconds: through-plane: fine-tune the network on the volume's own slices this long first.
        adapt_iterations: through-plane: adapt for exactly this many steps (reproducible to the bit).
        views: through-plane: the views fused, 4 (the two orthogonal orientations and the two voxel
            diagonals) or 2 (orthogonal only, about half the network time); None = 4.
        modality: ``'CT'``/``'MR'`` overriding the detected one; None = detected.
        axis: slice axis: None (largest spacing), ``'axial'|'coronal'|'sagittal'`` or a numpy axis 0-2.
        weights: a weights file of ``model`` instead of the shipped one (``plane='both'``: the through-plane one).
        output_dtype: ``'input'`` (the input's dtype) or ``'float32'``.
        clip_output: clip to the physically possible range (CT >= -1024 HU outside padding, MR >= 0).
        check: run the data-consistency check (the output degraded back, compared with the input).
        engine: the :class:`~MedSRLib.engine.EngineOptions` of every network run.
    """

    model: str | None = field(default=None, metadata=_cli(
        "--model", "registered model (see `medsr models`); default: per modality and scale (in-plane) or "
        "tp-dridsr (MR) / tp-dridsr-ct (CT) through-plane; with --plane both: the in-plane model"))
    scale: int | None = field(default=None, metadata=_cli(
        "--scale", "integer in-plane scale factor (given without --plane: an in-plane run, as before)", int))
    plane: str | None = field(default=None, metadata=_cli(
        "--plane", "auto (default; in-plane when --scale is given): through-plane when the slice spacing is "
        ">= 2x the in-plane spacing, else in-plane x2; in: in-plane x --scale; through: the slice "
        "axis to --target-spacing; both: in-plane x --scale (default 2), then through-plane", str, None, PLANES))
    target_spacing: float | None = field(default=None, metadata=_cli(
        "--target-spacing", "through-plane: output slice spacing in mm (default: the in-plane spacing, "
        "near-isotropic); any factor up to x8, integer or not", float, "MM"))
    thickness: float | None = field(default=None, metadata=_cli(
        "--thickness", "through-plane: slice thickness in mm (default: DICOM SliceThickness, else the slice "
        "spacing, said in the summary)", float, "MM"))
    adapt_seconds: float | None = field(default=None, metadata=_cli(
        "--adapt", "through-plane: fine-tune the network on this volume's own in-plane slices for SECONDS first "
        "(seeded; the summary gives the steps to repeat it exactly with --adapt-iterations)", float, "SECONDS"))
    adapt_iterations: int | None = field(default=None, metadata=_cli(
        "--adapt-iterations", "through-plane: adapt for exactly N steps (reproducible to the bit) instead of a "
        "time bound", int, "N"))
    views: int | None = field(default=None, metadata=_cli(
        "--views", "through-plane: views fused: 4 (default: the two in-plane orientations and the two voxel "
        "diagonals) or 2 (the two orientations only; about half the network time)", int, "N", (2, 4)))
    modality: str | None = field(default=None, metadata=_cli(
        "--modality", "override the detected modality", str.upper, None, ("CT", "MR")))
    axis: int | str | None = field(default=None, metadata=_cli(
        "--axis", "slice axis: axial|coronal|sagittal (through the direction matrix) or a numpy axis 0-2 "
        "(z,y,x); default: the axis with the largest spacing", axis_value))
    weights: str | os.PathLike[str] | None = field(default=None, metadata=_cli(
        "--weights", "a weights file (.safetensors with its .json card) instead of the shipped one (--plane both: "
        "the through-plane weights)"))
    output_dtype: str = field(default="input", metadata=_cli(
        "--float32", "write float32 instead of the input's dtype", bool, store="float32"))
    clip_output: bool = field(default=True, metadata=_cli(
        "--keep-raw-values", "keep the network's raw values (default: CT >= -1024 HU outside padding, MR >= 0 when "
        "the input is)", bool, store=False))
    check: bool = field(default=False, metadata=_cli(
        "--check", "data-consistency check: degrade the output back and compare with the input", bool, store=True))
    engine: EngineOptions = field(default_factory=EngineOptions, metadata={})  # its own fields are the engine flags

    def __post_init__(self) -> None:
        def refuse(name: str, what: str) -> None:
            flag = self.flag(name)
            raise OptionError(f"{name}{f' ({flag})' if flag else ''} must be {what}; got {getattr(self, name)!r}")

        if self.model is not None and (not isinstance(self.model, str) or not self.model.strip()):
            refuse("model", "a registered model name (see `medsr models`)")
        if self.scale is not None and not (_is_int(self.scale) and self.scale >= 1):
            refuse("scale", "a positive integer such as 2 or 4")
        if self.plane is not None and self.plane not in PLANES:
            refuse("plane", f"one of {', '.join(PLANES)}")
        for name in ("target_spacing", "thickness"):
            value = getattr(self, name)
            if value is not None and not (_is_number(value) and value > 0):
                refuse(name, "a positive number of mm")
        if self.adapt_seconds is not None and not (_is_number(self.adapt_seconds) and self.adapt_seconds >= 0):
            refuse("adapt_seconds", "a non-negative number of seconds")
        if self.adapt_iterations is not None and not (_is_int(self.adapt_iterations) and self.adapt_iterations >= 1):
            refuse("adapt_iterations", "a positive integer")
        if self.views is not None and not (_is_int(self.views) and self.views in (2, 4)):
            refuse("views", "2 or 4")
        if self.modality is not None:
            if not isinstance(self.modality, str) or self.modality.strip().upper() not in ("CT", "MR"):
                refuse("modality", "'CT' or 'MR'")
            object.__setattr__(self, "modality", self.modality.strip().upper())
        if self.axis is not None:
            if isinstance(self.axis, str) and self.axis.strip().lower() in AXIS_NAMES:
                object.__setattr__(self, "axis", self.axis.strip().lower())
            elif not (_is_int(self.axis) and 0 <= self.axis <= 2):
                refuse("axis", f"a numpy axis 0-2, or one of {', '.join(AXIS_NAMES)}")
        if self.weights is not None and not isinstance(self.weights, (str, os.PathLike)):
            refuse("weights", "a path to a .safetensors file")
        if self.output_dtype not in ("input", "float32"):
            refuse("output_dtype", "'input' or 'float32'")
        for name in ("clip_output", "check"):
            if not isinstance(getattr(self, name), bool):
                refuse(name, "True or False")
        if not isinstance(self.engine, EngineOptions):
            raise OptionError(f"engine must be a MedSRLib.engine.EngineOptions; got {type(self.engine).__name__}")
        self.check_plane(self.plane)

    def check_plane(self, plane: str | None, *, diff: bool = False, panel: bool = False) -> None:
        """Refuse the options that do not apply to a ``plane`` run (checked on construction for an explicit
        ``plane``, and by :func:`run_volume` again once ``'auto'`` is decided for a volume).

        Raises:
            OptionError: through-plane options on an in-plane run, ``scale`` on a through-plane run, the
                check (or a difference volume) on ``'both'``, a panel on a run that is not in-plane.
        """
        through = [self.flag(n) for n in THROUGH_FIELDS if getattr(self, n) is not None]
        if plane == "in" and through:
            raise OptionError(f"{', '.join(through)} apply to through-plane runs; this run is in-plane "
                              "(add --plane through or --plane both)")
        if plane == "through" and self.scale is not None:
            raise OptionError("--scale is the in-plane factor; a through-plane run takes --target-spacing "
                              "(or use --plane both)")
        if plane in ("through", "both") and panel:
            raise OptionError("--panel pictures in-plane runs only for now; drop --panel or add --plane in")
        if plane == "both" and (self.check or diff):
            raise OptionError("--check/--diff compare one step with its input; run --plane in and --plane through "
                              "separately to check each")

    @staticmethod
    def flag(name: str) -> str | None:
        """The ``medsr run`` flag of field ``name`` (None for ``engine``)."""
        return _FLAGS.get(name)

    def replace(self, **changes: Any) -> "RunOptions":
        """A copy with ``changes`` (field names; validated again); unknown names raise :class:`OptionError`."""
        known = {f.name for f in fields(RunOptions)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise OptionError(f"unknown run option(s) {', '.join(unknown)}; valid: {', '.join(sorted(known))}")
        return RunOptions(**{**{n: getattr(self, n) for n in known}, **changes})

    @property
    def fixed_plane(self) -> str | None:
        """The run's plane when it does not depend on the volume (``'in'``, ``'through'``, ``'both'``), else
        None (``'auto'``: decided per volume from its spacing)."""
        if self.plane is not None:
            return None if self.plane == "auto" else self.plane
        if self.model is not None:
            from .models import get_model

            return "through" if get_model(self.model).multi_scale else "in"
        return "in" if self.scale is not None else None

    def to_json(self) -> dict[str, Any]:
        """The options as a JSON-able dict (the engine's fields under ``engine``)."""
        out: dict[str, Any] = {}
        for f in fields(RunOptions):
            value = getattr(self, f.name)
            if f.name == "engine":
                value = {g.name: (str(getattr(value, g.name)) if g.name == "device" else getattr(value, g.name))
                         for g in fields(EngineOptions)}
            elif isinstance(value, os.PathLike):
                value = os.fspath(value)
            out[f.name] = value
        return out


def run_option_fields() -> dict[str, dict[str, Any]]:
    """``{field name: metadata}`` of the :class:`RunOptions` fields that are ``medsr run`` flags."""
    return {f.name: dict(f.metadata) for f in fields(RunOptions) if "flag" in f.metadata}


_FLAGS = {name: meta["flag"] for name, meta in run_option_fields().items()}


class PredictorCache:
    """Predictors built once per (model, plane, factor) and reused (a cohort's volumes share one).

    Attributes:
        weights: the weights file every network of the run uses (None = shipped weights).
        engine: the :class:`~MedSRLib.engine.EngineOptions` of every Predictor.
        loaded: ``'<model> x<factor>'`` (through-plane: ``'<model> x<factor> through-plane'``) of each
            Predictor built, in order.
    """

    def __init__(self, *, weights: Any = None, engine: EngineOptions | None = None) -> None:
        self.weights = weights
        self.engine = engine if engine is not None else EngineOptions()
        self.loaded: list[str] = []
        self._made: dict[tuple[str, str, int], Any] = {}
        self._broken: dict[tuple[str, str, int], str] = {}

    def get(self, spec: Any, factor: int, *, plane: str = "in") -> Any:
        """The Predictor of ``spec`` at integer ``factor`` (``plane='through'``: a ``tp-*`` network's
        network factor), built on first use; a build that failed fails again at once."""
        from .engine import Predictor
        from .errors import MedSRError

        key = (spec.name, plane, int(factor))
        if key in self._broken:
            raise OptionError(self._broken[key])
        if key not in self._made:
            try:
                self._made[key] = Predictor(spec, factor, weights=self.weights, options=self.engine)
            except MedSRError as exc:
                self._broken[key] = str(exc)
                raise
            self.loaded.append(f"{spec.name} x{factor}" + (" through-plane" if plane == "through" else ""))
        return self._made[key]


@dataclass
class VolumeRun:
    """What :func:`run_volume` did to one volume; :meth:`summary` is the ``medsr run --json`` object and
    the source of a cohort's summary row.

    Attributes:
        input: the input path as given.
        output: the path written (a file, or the DICOM series folder).
        plane: the run made: ``'in'``, ``'through'`` or ``'both'``.
        volume: the input volume; result: the super-resolved one (``metadata["medsr"]`` describes the run).
        notes: which model ran and why (one line each; also passed to ``note`` as they came).
        consistency: the :class:`~MedSRLib.consistency.ConsistencyReport` when checked, else None.
        provenance: the provenance record written beside the output.
        difference: the difference volume written (``diff``), else None.
        panel: the panel PNG written (``panel``), else None.
    """

    input: str
    output: Path
    plane: str
    volume: Any
    result: Any
    notes: list[str] = field(default_factory=list)
    consistency: Any = None
    provenance: dict[str, Any] = field(default_factory=dict)
    difference: Path | None = None
    panel: Path | None = None

    def summary(self) -> dict[str, Any]:
        """The ``medsr run --json`` object: :func:`run_summary` plus ``panel``, ``consistency`` and
        ``difference`` when made."""
        out = run_summary(self.volume, self.result, input_path=self.input, output_path=self.output)
        if self.panel is not None:
            out["panel"] = str(self.panel)
        if self.consistency is not None:
            out["consistency"] = self.consistency.to_json()
            if self.difference is not None:
                out["difference"] = str(self.difference)
        return out


def _check_targets(input_path: Any, output: Any, *, output_format: str, overwrite: bool, replace_dicom: bool,
                   make_parents: bool, diff: Any, panel: Any, window: str | None) -> tuple[Path, Path | None]:
    """Validate every output path before any work; returns the output and the difference target."""
    from .io import check_output_path

    if make_parents and not Path(output).expanduser().resolve().parent.exists():
        target = Path(output).expanduser().resolve()  # a new folder of a planned cohort (MedSRLib.batch.plan_cohort)
    elif output_format == "dicom":
        from .io.dicom_writer import check_dicom_output_folder

        folder = Path(output).expanduser().resolve()
        if replace_dicom and folder.is_dir() and any(folder.iterdir()):
            _check_replaceable_dicom(folder)
            target = folder
        else:
            target = check_dicom_output_folder(output, inputs=[input_path])
    else:
        target = check_output_path(output, inputs=[input_path], overwrite=overwrite)
    diff_target = None
    if diff is not None:
        diff_target = check_output_path(diff, inputs=[input_path], others=[output], overwrite=overwrite)
    if panel is not None:
        from .panel import check_panel_path

        check_panel_path(panel, [input_path, output], window=window)
    return target, diff_target


def _check_replaceable_dicom(folder: Path) -> None:
    import re

    if any(not (p.is_file() and re.match(DICOM_OUTPUT_FILE, p.name)) for p in folder.iterdir()):
        raise OutputPathError(f"{folder} holds files MedSR did not write; remove it by hand to redo this volume")


def remove_dicom_output(folder: Path) -> None:
    """Remove a DICOM output folder of a previous run before it is redone; only a folder holding nothing
    but ``IM#####.dcm`` files (what :func:`MedSRLib.io.write_dicom_series` writes) is removed."""
    import shutil

    _check_replaceable_dicom(folder)
    shutil.rmtree(folder)


@dataclass
class OptionsRun:
    """What :func:`super_resolve_with_options` made of one in-memory volume.

    Attributes:
        plane: the run made: ``'in'``, ``'through'`` or ``'both'``.
        spec: the model that ran (for ``'both'``: the in-plane one); scale: the in-plane factor (None
            for a through-plane run).
        result: the super-resolved :class:`~MedSRLib.volume.Volume` (``metadata["medsr"]`` describes the run).
        notes: which model ran and why, one line each.
    """

    plane: str
    spec: Any
    scale: int | None
    result: Any
    notes: list[str] = field(default_factory=list)


def super_resolve_with_options(
    volume: Any,
    options: RunOptions | None = None,
    *,
    predictors: PredictorCache | None = None,
    note: Callable[[str], None] | None = None,
    progress: Callable[[str], Callable[[int, int], None] | None] | None = None,
    cancel: Callable[[], bool] | None = None,
    diff: bool = False,
    panel: bool = False,
) -> OptionsRun:
    """Super-resolve an in-memory volume as :class:`RunOptions` say: THE decision flow from options to a
    run, shared by :func:`run_volume` (``medsr run``, cohorts) and the Slicer module (which has its
    volume from a node). Resolves the plane (``'auto'``: the volume's spacing), the model (per modality
    and plane unless named), refuses options that do not apply to the plane, explains the choice, and runs
    :func:`MedSRLib.pipeline.super_resolve` with networks from ``predictors`` (built once, reused).

    Args:
        volume: the input :class:`~MedSRLib.volume.Volume` (never modified).
        options: the :class:`RunOptions` (default: all automatic).
        predictors: a :class:`PredictorCache` (default: a new one for ``options.weights``/``options.engine``).
        note: called with each line saying which model runs and why (default: ``warnings.warn``).
        progress: ``progress(label)`` -> a ``(done, total)`` slice callback (or None) for this run.
        cancel: polled between batches; True raises :class:`~MedSRLib.errors.CancelledError`.
        diff, panel: a difference volume / panel will be made of this run (refused where they do not apply).

    Raises:
        MedSRError: a one-line user error (an option that does not apply, missing weights, ...).
    """
    import warnings

    from .intensity import guess_modality
    from .models import default_model, get_model
    from .pipeline import plan_through_plane, resolve_plane, super_resolve
    from .safety import explain_model_choice

    opts = options if options is not None else RunOptions()
    if not isinstance(opts, RunOptions):
        raise OptionError(f"options must be a MedSRLib.run.RunOptions; got {type(opts).__name__}")
    opts.check_plane(opts.plane, diff=diff, panel=panel)
    cache = predictors if predictors is not None else PredictorCache(weights=opts.weights, engine=opts.engine)
    chosen = get_model(opts.model) if opts.model is not None else None
    modality = (opts.modality or volume.modality or guess_modality(volume)).upper()
    plane = resolve_plane(volume, plane=opts.plane, scale=opts.scale, model=opts.model, axis=opts.axis)
    opts.check_plane(plane, diff=diff, panel=panel)
    scale = None if plane == "through" else (2 if opts.scale is None else opts.scale)
    if plane != "through" and chosen is not None and chosen.multi_scale:
        raise OptionError(f"model '{chosen.name}' is a through-plane network; run it with plane='through' "
                          "(--plane through)")
    through_spec = None
    if plane == "through":
        spec = chosen if chosen is not None else default_model(modality, plane="through")
        notes = explain_model_choice(spec, modality=modality, scale=0, weights=opts.weights, defaulted=False)
    else:
        spec = chosen if chosen is not None else default_model(modality, scale)
        spec.check_scale(scale)
        notes = explain_model_choice(spec, modality=modality, scale=scale, weights=opts.weights,
                                     defaulted=opts.model is None)
        if plane == "both":
            through_spec = default_model(modality, plane="through")
    if plane == "in" and opts.plane is None and resolve_plane(volume, axis=opts.axis) == "through":
        notes.append("the slice spacing is >= 2x the in-plane spacing: --plane through super-resolves the slice axis "
                     "(--scale without --plane stays in-plane)")
    for line in notes:
        (note or (lambda text: warnings.warn(text, UserWarning, stacklevel=3)))(line)
    label = f"{spec.name} through-plane" if plane == "through" else f"{spec.name} x{scale}"
    callback = progress(label) if progress is not None else None
    common = dict(axis=opts.axis, plane=plane, output_dtype=opts.output_dtype, modality=opts.modality,
                  progress=callback, cancel=cancel, clip_output=opts.clip_output)
    adapting = bool(opts.adapt_seconds or opts.adapt_iterations)
    if plane == "in":
        result = super_resolve(volume, predictor=cache.get(spec, scale), **common)
    elif plane == "through" and not adapting and spec.multi_scale:
        tp = plan_through_plane(volume, spec, axis=opts.axis, target_spacing=opts.target_spacing,
                                thickness=opts.thickness, modality=modality, weights=opts.weights)
        result = super_resolve(volume, predictor=cache.get(spec, tp.network_factor, plane="through"),
                               target_spacing=opts.target_spacing, thickness=opts.thickness, views=opts.views, **common)
    else:  # adaptation trains its own copy; 'both' builds its two networks
        result = super_resolve(volume, model=spec, scale=scale, target_spacing=opts.target_spacing,
                               thickness=opts.thickness, adapt_seconds=opts.adapt_seconds,
                               adapt_iterations=opts.adapt_iterations, views=opts.views, through_model=through_spec,
                               options=opts.engine, weights=opts.weights, **common)
    return OptionsRun(plane=plane, spec=spec, scale=scale, result=result, notes=notes)


def check_with_options(volume: Any, result: Any, options: RunOptions | None = None, *,
                       keep_difference: bool = False) -> Any:
    """The data-consistency check of a run of :func:`super_resolve_with_options` (``result`` made from
    ``volume``): degrade the output back along the axes the run super-resolved (in-plane: the bicubic
    degradation at the run's scale; through-plane: the slice profile at the run's thickness) and compare
    with the input. Returns the :class:`~MedSRLib.consistency.ConsistencyReport`.

    Raises:
        OptionError: a ``'both'`` run (check each step separately); MedSRError from the check.
    """
    from .consistency import check_consistency

    opts = options if options is not None else RunOptions()
    run_info = result.metadata["medsr"]
    plane = run_info.get("plane", "in")
    if plane == "both":
        opts.check_plane("both", diff=True)
    scale = None if plane == "through" else run_info.get("scale")
    return check_consistency(volume, result, scale=scale, axis=run_info["slice_axis"],
                             plane="through" if plane == "through" else "in", thickness=opts.thickness,
                             keep_difference=keep_difference)


def run_volume(
    input_path: str | os.PathLike[str],
    output: str | os.PathLike[str],
    options: RunOptions | None = None,
    *,
    output_format: str = "auto",
    series_uid: str | None = None,
    overwrite: bool = False,
    replace_dicom: bool = False,
    make_parents: bool = False,
    diff: str | os.PathLike[str] | None = None,
    panel: str | os.PathLike[str] | None = None,
    window: str | None = None,
    predictors: PredictorCache | None = None,
    record_options: Mapping[str, Any] | None = None,
    note: Callable[[str], None] | None = None,
    progress: Callable[[str], Callable[[int, int], None] | None] | None = None,
    cancel: Callable[[], bool] | None = None,
) -> VolumeRun:
    """Super-resolve one volume file or DICOM series folder and write the output with its provenance.

    Args:
        input_path: a volume file (.nii, .nii.gz, .nrrd, .mha, .mhd) or a DICOM series folder.
        output: the output file (NIfTI/NRRD/MHA), or with ``output_format='dicom'`` a new or empty folder.
        options: the :class:`RunOptions` (default: all automatic).
        output_format: ``'auto'`` or ``'nifti'`` (a volume file; the format from the output's ending) or
            ``'dicom'``.
        series_uid: the DICOM series to read when the folder holds several.
        overwrite: replace an existing output file (and difference volume).
        replace_dicom: a DICOM output folder holding only a previous run's ``IM#####.dcm`` files is
            replaced (cohorts' ``--continue``/``--overwrite``), and its sidecar too.
        make_parents: create the output's missing parent folders just before writing (a cohort's
            mirrored folders; nothing is created for a volume that fails).
        diff: also write the difference volume degrade(output) - input here (implies the check).
        panel: also write a comparison PNG (input, bicubic, the model; in-plane runs only).
        window: the CT display window of ``panel``.
        predictors: a :class:`PredictorCache` shared by the volumes of a cohort (default: a new one).
        record_options: the options recorded in the provenance (default: ``options.to_json()``).
        note: called with each line saying which model runs and why.
        progress: ``progress(label)`` -> a ``(done, total)`` slice callback (or None) for this run.
        cancel: polled between batches; returning True raises :class:`~MedSRLib.errors.CancelledError`
            and nothing is written.

    Returns:
        The :class:`VolumeRun`.

    Raises:
        MedSRError: a one-line user error (bad option for this volume, unreadable input, output path,
            missing weights, ...); nothing is written.
    """
    from .io import read_volume, write_volume

    opts = options if options is not None else RunOptions()
    if not isinstance(opts, RunOptions):
        raise OptionError(f"options must be a MedSRLib.run.RunOptions; got {type(opts).__name__}")
    if output_format not in ("auto", "nifti", "dicom"):
        raise OptionError(f"output_format must be 'auto' (from the output's ending), 'nifti' or 'dicom'; "
                          f"got {output_format!r}")
    opts.check_plane(opts.plane, diff=diff is not None, panel=panel is not None)
    target, diff_target = _check_targets(input_path, output, output_format=output_format, overwrite=overwrite,
                                         replace_dicom=replace_dicom, make_parents=make_parents, diff=diff,
                                         panel=panel, window=window)
    if opts.model is not None:
        from .models import get_model

        get_model(opts.model)  # an unknown model fails before reading
    volume = read_volume(input_path, series_uid=series_uid, modality=opts.modality)
    done = super_resolve_with_options(volume, opts, predictors=predictors, note=note, progress=progress, cancel=cancel,
                                      diff=diff_target is not None, panel=panel is not None)
    plane, spec, scale, result, notes = done.plane, done.spec, done.scale, done.result, done.notes
    run_info = result.metadata["medsr"]
    report = None
    if opts.check or diff_target is not None:
        report = check_with_options(volume, result, opts, keep_difference=diff_target is not None)
    panel_path = None
    if panel is not None:
        from .panel import save_volume_panel
        from .pipeline import super_resolve

        columns = {} if spec.name == "bicubic" else {"bicubic": super_resolve(
            volume, model="bicubic", scale=scale, axis=run_info["slice_axis"], modality=opts.modality)}
        panel_path = save_volume_panel(volume, {**columns, spec.name: result}, panel, window=window,
                                       inputs=[input_path])
    from .provenance import build_provenance

    record = build_provenance(result, input_path=input_path,
                              options=dict(record_options) if record_options is not None else opts.to_json(),
                              consistency=report.to_json() if report is not None else None)
    if make_parents:
        target.parent.mkdir(parents=True, exist_ok=True)
    if output_format == "dicom":
        from .io.dicom_writer import write_dicom_series
        from .io.writers import write_sidecar

        if replace_dicom and target.is_dir():
            remove_dicom_output(target)
        written = write_dicom_series(result, target, inputs=[input_path])
        write_sidecar(written, record, overwrite=replace_dicom)
    else:
        threads = opts.engine.threads if isinstance(opts.engine.threads, int) else None
        written = write_volume(result, target, inputs=[input_path], overwrite=overwrite, provenance=record, threads=threads)
    difference = None
    if diff_target is not None and report is not None and report.difference is not None:
        write_volume(report.difference, diff_target, inputs=[input_path], overwrite=overwrite)
        difference = diff_target
    return VolumeRun(input=str(input_path), output=Path(written), plane=plane, volume=volume, result=result,
                     notes=notes, consistency=report, provenance=record, difference=difference, panel=panel_path)


def run_summary(volume: Any, result: Any, *, input_path: Any, output_path: Any) -> dict[str, Any]:
    """The ``medsr run --json`` object of a run (from the result's ``metadata["medsr"]``): input/output,
    ``plane``, ``model``, ``axis`` (the numpy slice axis, also as ``slice_axis``), ``factor`` (the
    slice-axis factor through-plane, the in-plane scale otherwise), grids, precision, device, ``ensemble``; a
    through-plane run adds ``through_plane`` (network factor, finishing step, thickness used and
    whether it was assumed, target spacing, adaptation report)."""
    run_info = result.metadata["medsr"]
    plane = run_info.get("plane", "in")
    steps = run_info.get("steps") or [run_info]
    through = next((s["through_plane"] for s in steps if s.get("plane") == "through"), None)
    in_step = next((s for s in steps if s.get("plane") == "in"), None)
    summary: dict[str, Any] = {
        "input": str(input_path),
        "output": str(output_path),
        "plane": plane,
        "model": run_info["model"],
        "axis": run_info["slice_axis"],
        "factor": through["factor"] if through is not None else run_info["scale"],
        "scale": in_step["scale"] if in_step is not None else None,
        "slice_axis": run_info["slice_axis"],
        "precision": run_info["precision"],
        "device": run_info["device"],
        "ensemble": bool(any(s.get("ensemble") for s in steps)),
        "factors_zyx": run_info["grid"]["factors_zyx"],
        "input_shape_zyx": list(volume.shape),
        "output_shape_zyx": list(result.shape),
        "input_spacing_zyx": list(reversed(volume.spacing)),
        "output_spacing_zyx": list(reversed(result.spacing)),
        "output_origin_lps": list(result.origin),
        "dtype": str(result.array.dtype),
    }
    if through is not None:
        summary["through_plane"] = through
    return summary


def summary_text(summary: dict[str, Any]) -> str:
    """The human-readable lines of :func:`run_summary` (``medsr run`` without ``--json``)."""
    shape = f"array axes (z,y,x): shape {tuple(summary['input_shape_zyx'])} -> {tuple(summary['output_shape_zyx'])}"
    spacing = f"spacing {tuple(round(s, 4) for s in summary['output_spacing_zyx'])} mm"
    ran = f"({summary['precision']} on {summary['device']})"
    through = summary.get("through_plane")
    if through is None:
        ensemble = ", x8 self-ensemble" if summary.get("ensemble") else ""
        return f"wrote {summary['output']}: {summary['model']} x{summary['factor']}{ensemble} {ran}; {shape}, {spacing}"
    how = f"network x{through['network_factor']}" + (" + cubic B-spline finish" if through["finish"] else "")
    if through.get("views"):
        how += f", {through['views']} views fused"
    if summary.get("ensemble"):
        how += ", each on its 4 flips (self-ensemble)"
    prefix = f"in-plane x{summary['scale']}, then " if summary["plane"] == "both" else ""
    lines = [
        f"wrote {summary['output']}: {prefix}through-plane {summary['model']} along array axis {summary['axis']}, "
        f"factor {through['factor']:.3g} ({how}) {ran}; slice spacing {through['spacing_mm']:.4g} -> "
        f"{through['output_spacing_mm']:.4g} mm; {shape}, {spacing}",
        f"slice thickness {through['thickness_mm']:.4g} mm ({through['thickness_source']})"
        + (f", gap {through['gap_mm']:.3g} mm" if through["gap_mm"] > 0 else ""),
    ]
    projection = through.get("projection")
    if projection:
        lines.append(f"projected onto the input ({projection['steps']} back-projection steps): mean |input - re-degraded "
                     f"output| {projection['residual_before']:.4f} -> {projection['residual_after']:.4f} (0-1 units; "
                     f"before = the network's own consistency; cubic B-spline {projection['bspline_residual']:.4f})")
        if projection["suspect"]:
            lines.append("WARNING: the network output was less consistent with the input than cubic B-spline "
                         "interpolation: inspect it before use (a wrong network or weights, or a slice profile far from Gaussian)")
    adapt = through.get("adaptation")
    if adapt:
        lines.append(f"adapted {adapt['seconds']:.1f} s ({adapt['iterations']} steps, seed {adapt['seed']}; repeat exactly "
                     f"with --adapt-iterations {adapt['iterations']}): held-back patches {adapt['heldout_psnr_before']:.2f}"
                     f" -> {adapt['heldout_psnr_after']:.2f} dB ({adapt['heldout_gain_db']:+.2f} dB; cubic B-spline "
                     f"{adapt['heldout_bspline_psnr']:.2f} dB); kept the weights of step {adapt['kept_step']}"
                     + (" (the shipped ones: adaptation did not help its held-back patches)" if adapt["kept_step"] == 0 else "")
                     + ("" if adapt.get("used", True) else
                        f"; NOT used: its two orientations disagreed {adapt['disagreement_adapted']:.4f} vs the shipped "
                        f"network's {adapt['disagreement_shipped']:.4f} (more than x{adapt['max_disagreement_ratio']:g}), so the "
                        "output is the shipped network's")
                     + (f"; note: {adapt['caution']}" if adapt.get("caution") else ""))
    return "\n".join(lines)
