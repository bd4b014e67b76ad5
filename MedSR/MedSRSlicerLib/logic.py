"""MedSRLogic: super-resolution of Slicer volume nodes with MedSRLib, usable without the GUI.

Python console and batch scripts: ``slicer.util.getModuleLogic("MedSR")`` (the class is re-exported by
``MedSR.py``). Every number comes from MedSRLib: super-resolution from ``MedSRLib.pipeline.super_resolve``,
the data-consistency check from ``MedSRLib.consistency.check_consistency``, estimates from
``MedSRLib.pipeline.estimate_seconds``, geometry through ``nodes`` (which calls ``MedSRLib.geometry``).
MedSRLib parts that need torch are imported inside methods: the module must load before torch exists.

Conventions: Slicer volume nodes are RAS (mm) with an IJK-to-RAS matrix; ``arrayFromVolume`` arrays
are ``(k, j, i)``; MedSRLib volumes are ITK LPS with ``(z, y, x)`` = ``(k, j, i)`` arrays.
"""

import functools
import logging
import time
from typing import Any, Mapping, Optional, Union

from MedSRLib.errors import CancelledError, MedSRError
from slicer.i18n import tr as _
from slicer.ScriptedLoadableModule import ScriptedLoadableModuleLogic

from . import background, consistency_view, dependencies, engine_settings, model_catalog, nodes, reporting
from . import plane as planes
from .parameters import MedSRParameterNode


def _runInline(function):
    return function()


class MedSRLogic(ScriptedLoadableModuleLogic):
    """Super-resolution of volume nodes, usable without the GUI (Python console, batch scripts).

    Example::

        logic = slicer.util.getModuleLogic("MedSR")
        outputNode = logic.process(getNode("MRHead"), model="bicubic", scale=2)
        print(logic.lastConsistency.summary())          # the data-consistency report of that run

    Attributes:
        lastConsistency: the ``MedSRLib.consistency.ConsistencyReport`` of the last successful ``process``
            (None when it ran with ``check=False``, the check failed, or no run finished yet).
        lastRunInfo: the output's ``metadata["medsr"]`` of the last successful ``process`` (model, scale,
            the precision that ran, device, grid plan, ...), or None.
        lastNotes: one-line notes of the last ``process`` (e.g. the slice thickness a through-plane run assumed).
    """

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleLogic.__init__(self, parent)
        self.lastConsistency = None
        self.lastRunInfo: Optional[dict] = None
        self.lastNotes: list = []

    def getParameterNode(self) -> MedSRParameterNode:
        return MedSRParameterNode(super().getParameterNode())

    # -- information for the panel (cached metadata: no torch import, see model_catalog) -------------
    @staticmethod
    def modelChoices() -> list:
        """``[(registry name, label)]`` of every model, from the cached catalog (works before torch is installed)."""
        return [(m.name, f"{m.name}: {m.network} {m.config} ({m.modality})") for m in model_catalog.models()]

    @staticmethod
    def throughPlaneChoices() -> list:
        """``[(value, label)]`` of the through-plane network choice: Auto (MedSRLib's default for the volume's
        modality), then every catalogued ``tp-*`` network and whether its weights are shipped (cached catalog)."""
        choices = [(planes.AUTO_NETWORK, _("Auto (MedSRLib's network for the volume's modality)"))]
        for m in model_catalog.throughPlaneModels():
            shipped = _("weights shipped") if m.hasWeights(max(m.scales)) else _("no weights shipped")
            choices.append((m.name, f"{m.name}: {m.network} {m.config} ({m.modality}; {shipped})"))
        return choices

    @staticmethod
    def throughPlaneNetwork(inputVolume, choice: str = planes.AUTO_NETWORK) -> tuple:
        """``(network name, catalog model or None, modality)`` a through-plane run of ``inputVolume`` uses for
        the network ``choice`` ("auto" = MedSRLib's default for the volume's modality, as MedSRLib guesses it
        from the voxels: ``intensity.guess_modality``). Torch-free.

        Raises:
            NodeError: not a usable scalar volume.
        """
        nodes.checkInputVolume(inputVolume)
        modality = nodes.modalityOf(inputVolume)
        name = planes.throughPlaneNetworkName(choice, modality)
        return name, model_catalog.findThroughPlane(name), modality

    @staticmethod
    def throughPlaneCardText(networkName: str, factor: int) -> str:
        """The through-plane network's card at its network ``factor`` (``MedSRLib.models.cards.card_text``), or
        the one line saying that no weights (so no card) are shipped for it."""
        network = model_catalog.findThroughPlane(networkName)
        if network is not None and not network.hasWeights(factor):
            return planes.noWeightsMessage(network, network.modality)
        return _cardText(str(networkName), int(factor))

    @staticmethod
    def describeModel(modelName: str, scale: int) -> str:
        """The model card as HTML: paper, modality, scales, training data, metrics, intended use (cached catalog;
        in-plane models and through-plane networks)."""
        spec = model_catalog.find(modelName) or model_catalog.findThroughPlane(modelName)
        if spec is None:
            return _("Unknown model '{model}'.").format(model=modelName)
        lines = [
            f"<b>{spec.name}</b>: {spec.description or spec.network}",
            _("Paper: {paper}").format(paper=spec.paper) if spec.paper else "",
            _("Designed for: {modality}; scales: {scales}").format(
                modality=spec.modality, scales=", ".join(f"x{s}" for s in spec.scales)
            ),
        ]
        if not spec.learned:
            lines.append(_("Interpolation: no training data, no weights (a baseline)."))
        elif int(scale) not in spec.scales:
            lines.append(_("Not available at x{scale}.").format(scale=scale))
        else:
            card = spec.card(scale)
            if card is None:
                lines.append(_("No trained weights are shipped for x{scale}.").format(scale=scale))
            else:
                lines.append(_("Trained at x{scale} on: {data}").format(scale=card["scale"], data=card["trainingData"] or _("not recorded")))
                if card["metrics"]:
                    lines.append(_("Validation: {metrics}").format(metrics=", ".join(f"{k} {v}" for k, v in card["metrics"].items())))
                if card["intendedUse"]:
                    lines.append(_("Intended use: {use}").format(use=card["intendedUse"]))
        return "<br>".join(line for line in lines if line)

    @staticmethod
    def modelCardText(modelName: str, scale: int) -> str:
        """The model card as plain text, ``MedSRLib.models.cards.card_text`` (what ``medsr models --card
        NAME:SCALE`` prints: licence, input specification, training data, evaluation against bicubic,
        limitations); a one-line reason when there is none at ``scale``. Torch-free, cached per process."""
        return _cardText(str(modelName), int(scale))

    @staticmethod
    def deviceName(device: str) -> str:
        """What ``device`` ("auto", "cpu", "cuda", "mps") resolves to here, e.g. "cuda:0" or "cpu" (imports torch)."""
        from MedSRLib.engine import resolve_device

        try:
            return str(resolve_device(device))
        except MedSRError:
            return device

    @staticmethod
    def estimateSeconds(inputVolume, model: str, scale: int, axis="auto", device: str = "auto", ensemble: bool = False,
                        precision: str = "auto") -> float:
        """Rough network time in seconds for ``inputVolume`` (MedSRLib's estimate from the model's MACs, the
        device and the precision). Imports torch and builds the network once, so the panel uses
        :meth:`estimateInBackground`."""
        call = MedSRLogic.estimateInBackground(inputVolume, model, scale, axis, device, ensemble, precision)
        call.wait()
        return call.result()

    @staticmethod
    def estimateInBackground(inputVolume, model: str, scale: int, axis="auto", device: str = "auto",
                             ensemble: bool = False, precision: str = "auto", plane: str = "in",
                             targetSpacingMM: float = 0.0, throughModel: str = planes.AUTO_NETWORK,
                             throughDiagonals: bool = True) -> background.BackgroundCall:
        """:meth:`estimateSeconds` off the calling thread: the node is read here (MRML stays on the main thread),
        MedSRLib runs in the thread. ``result()`` of the returned call is the estimate in seconds or re-raises
        MedSRLib's error (e.g. ``ScaleError``). Raises ``NodeError``/``MissingDependencyError`` at once.
        ``plane="through"`` estimates the through-plane run (``throughModel``, ``targetSpacingMM``; 0 = the
        in-plane spacing; ``throughDiagonals``: 4 fused views, else 2) instead of ``model`` x ``scale``."""
        nodes.checkInputVolume(inputVolume)
        dependencies.checkDependencies()
        shapeKJI = tuple(reversed(inputVolume.GetImageData().GetDimensions()))
        spacing = tuple(inputVolume.GetSpacing())

        if plane == "through":
            model = MedSRLogic.throughPlaneNetwork(inputVolume, throughModel)[0]

        def estimate() -> float:
            from MedSRLib.pipeline import estimate_seconds

            return estimate_seconds(shapeKJI, spacing, model=model, scale=int(scale), axis=_sliceAxisArgument(axis),
                                    device=device, ensemble=ensemble, precision=precision,
                                    plane="through" if plane == "through" else "in",
                                    target_spacing=targetSpacingMM or None, views=4 if throughDiagonals else 2)

        return background.BackgroundCall(estimate, name="MedSR estimate")

    @staticmethod
    def engineSettingsProblem(values: Mapping[str, Any], importTorch: bool = False) -> Optional[str]:
        """Why the engine settings ``values`` (parameter-node fields named as ``EngineOptions`` fields) would
        be refused (one line), or None: ``engine_settings.problem``. ``importTorch=False`` (the panel) checks
        the device only once torch is loaded; ``process`` always validates everything before running."""
        return engine_settings.problem(values, importTorch=importTorch)

    @staticmethod
    def planFor(inputVolume, plane: str = "auto", targetSpacingMM: float = 0.0, axis="auto") -> planes.PlanePlan:
        """What a run on ``inputVolume`` would do in the slice direction (``plane.PlanePlan``: slice axis, the
        spacings, the auto rule's verdict, the through-plane factor). Reads geometry only, no voxels, no torch.

        Raises:
            NodeError: not a usable scalar volume. GeometryError, ScaleError: from MedSRLib.
        """
        nodes.checkInputVolume(inputVolume)
        return planes.planFor(nodes.gridFromNode(inputVolume), plane, targetSpacingMM, _sliceAxisArgument(axis))

    @staticmethod
    def engineOptions(engine: Union[None, Mapping[str, Any], Any] = None, **overrides: Any):
        """The validated ``MedSRLib.engine.EngineOptions`` of a run (imports torch).

        ``engine``: an ``EngineOptions``, the panel's stored settings (a mapping of field -> stored value,
        as ``engine_settings.readValues`` gives), or None (all automatic); ``overrides``: ``EngineOptions``
        fields replacing those values (None values are ignored).

        Raises:
            OptionError, DeviceError, InputSizeError: a bad value, in one line.
        """
        from MedSRLib.engine import EngineOptions, engine_options

        if engine is None:
            base = EngineOptions()
        elif isinstance(engine, EngineOptions):
            base = engine
        else:
            base = engine_settings.engineOptions(engine)
        return engine_options(base, **{k: v for k, v in overrides.items() if v is not None})

    @staticmethod
    def problemWith(inputVolume, outputVolume, model: str, scale: int,
                    engineValues: Optional[Mapping[str, Any]] = None, plane: str = "in",
                    targetSpacingMM: float = 0.0, axis="auto", throughModel: str = planes.AUTO_NETWORK) -> Optional[str]:
        """Why ``process`` would refuse these choices (one line), or None. Never installs, computes or imports
        torch; ``engineValues`` (the panel's engine settings) are checked with :meth:`engineSettingsProblem`;
        a run that resolves to through-plane with ``plane.throughPlaneProblem`` (factor, network, shipped
        weights for the volume's modality); the in-plane model and scale are then not used."""
        try:
            nodes.checkInputVolume(inputVolume)
            nodes.checkOutputVolume(outputVolume, inputVolume)
        except MedSRError as error:
            return str(error)
        if plane != "in":
            try:
                plan = MedSRLogic.planFor(inputVolume, plane, targetSpacingMM, axis)
            except MedSRError as error:
                return str(error)
            if plan.resolved == "through":
                _name, network, modality = MedSRLogic.throughPlaneNetwork(inputVolume, throughModel)
                problem = planes.throughPlaneProblem(plan, network, modality)
                if problem or engineValues is None:
                    return problem
                problem = engine_settings.problem(engineValues, importTorch=False)
                return _("Advanced settings: {problem}").format(problem=problem) if problem else None
        spec = model_catalog.find(model)
        if spec is None:
            return _("Unknown model '{model}': choose one from the list.").format(model=model)
        if int(scale) not in spec.scales:
            return _("'{model}' does not support x{scale}; it supports {scales}.").format(
                model=spec.name, scale=scale, scales=", ".join(f"x{s}" for s in spec.scales))
        if spec.learned and not spec.hasWeights(scale):
            return _("No trained weights for '{model}' at x{scale} are shipped: choose another model or scale.").format(
                model=spec.name, scale=scale
            )
        if engineValues is not None:
            problem = engine_settings.problem(engineValues, importTorch=False)
            if problem:
                return _("Advanced settings: {problem}").format(problem=problem)
        return None

    @staticmethod
    def runOptions(volume, *, model: str = "bicubic", scale: int = 2, axis="auto", plane: str = "in",
                   targetSpacingMM: float = 0.0, adaptSeconds: float = 0.0, throughModel: str = planes.AUTO_NETWORK,
                   throughDiagonals: bool = True, weights=None, check: bool = True, engine=None):
        """The ``MedSRLib.run.RunOptions`` of a panel run on ``volume`` (a MedSRLib ``Volume``): the one options
        type ``medsr run``, cohorts and this module share. ``plane`` "auto" is resolved on the volume first
        (``MedSRLib.pipeline.resolve_plane``) so that only the options of the run that happens are set: an
        in-plane run takes ``model`` and ``scale``; a through-plane run the network (``throughModel``),
        ``targetSpacingMM`` and ``adaptSeconds`` (0 = MedSRLib's default: near-isotropic, no adaptation) and
        ``views`` 2 when ``throughDiagonals`` is off (on: MedSRLib's default of 4).
        ``engine``: an ``EngineOptions`` (None = automatic). Output dtype: the input's, unless Slicer
        cannot store it (float32).

        Raises:
            OptionError, ScaleError, ModelNotFoundError: a value MedSRLib refuses, in one line.
        """
        from MedSRLib.engine import EngineOptions
        from MedSRLib.models import get_model
        from MedSRLib.run import RunOptions

        resolved = planes.resolvedPlane(volume, plane, axis=_sliceAxisArgument(axis))
        values = dict(plane=resolved, axis=_sliceAxisArgument(axis), output_dtype=nodes.outputDtypeFor(volume.array),
                      weights=None if weights is None else str(weights), check=bool(check),
                      engine=engine if engine is not None else EngineOptions())
        if resolved == "in":  # the in-plane model and scale matter to an in-plane run only
            spec = get_model(model)
            values.update(model=spec.name, scale=spec.check_scale(scale))
        else:
            keywords = planes.superResolveKeywords(resolved, targetSpacingMM, adaptSeconds, throughModel,
                                                   diagonals=throughDiagonals)
            values.update(model=keywords.get("model"), target_spacing=keywords.get("target_spacing"),
                          adapt_seconds=keywords.get("adapt_seconds"), views=keywords.get("views"))
        return RunOptions(**values)

    # -- processing ----------------------------------------------------------------------------------
    def process(
        self,
        inputVolume,
        outputVolume=None,
        model: str = "bicubic",
        scale: int = 2,
        axis="auto",
        device: Optional[str] = None,
        ensemble: Optional[bool] = None,
        memoryBudgetMB: Optional[float] = None,
        progress=None,
        cancel=None,
        showResult: bool = True,
        runner=None,
        onWarning=None,
        check: bool = True,
        engine=None,
        plane: str = "in",
        targetSpacingMM: float = 0.0,
        adaptSeconds: float = 0.0,
        throughModel: str = planes.AUTO_NETWORK,
        throughDiagonals: bool = True,
        weights=None,
    ):
        """Super-resolve ``inputVolume`` (in-plane by ``scale``, or along its slice axis) and return the output node.

        Args:
            inputVolume: ``vtkMRMLScalarVolumeNode`` (never modified).
            outputVolume: node to overwrite, or None to create ``<input>_<model>_x<scale>``.
            model: MedSRLib registry name; scale: integer factor the model supports.
            axis: "auto" (largest spacing), "axial", "coronal", "sagittal" or a numpy axis 0-2 of (k, j, i).
            engine: the engine options: an ``EngineOptions``, the panel's stored settings (field -> value,
                ``engine_settings.readValues``) or None (automatic); validated before anything runs.
            device, ensemble, memoryBudgetMB: shortcuts overriding ``engine``'s ``device``, ``ensemble`` and
                ``memory_budget_mb`` (None or 0 MB = keep ``engine``'s).
            progress: ``progress(done, total)``; cancel: ``cancel() -> bool`` polled between batches.
            showResult: show the output in the slice views.
            runner: ``runner(function) -> result`` runs the pure MedSRLib step (the panel uses a thread).
            onWarning: receives each warning of the run (e.g. GPU out of memory, finished on the CPU);
                default: ``logging.warning``.
            check: degrade the output back and compare it with the input
                (``MedSRLib.consistency.check_consistency``, bicubic reference, difference volume kept);
                the report is :attr:`lastConsistency`. A check that fails is reported through ``onWarning``.
            plane: "in" (default here, as before), "auto" (through-plane when the slice spacing is at least
                2x the in-plane spacing) or "through"; targetSpacingMM: through-plane output slice spacing
                (0 = the in-plane spacing); adaptSeconds: through-plane per-volume adaptation (0 = none);
                throughDiagonals: fuse the two voxel-diagonal views too (MedSRLib's default, 4 views; False:
                the two orientations only, about half the network time);
                throughModel: the through-plane network ("auto" = MedSRLib's for the volume's modality,
                or a ``tp-*`` name). MedSRLib's ``pipeline.resolve_plane`` decides what "auto" runs; a
                through-plane run ignores ``model`` and ``scale`` and writes MedSRLib's grid plan, named
                ``<input>_<tp network>_x<factor>``; its check is the slice-profile form.
            weights: a weights file for the network that runs (MedSRLib's ``weights``: overrides the
                shipped one; e.g. a through-plane network's own file); None = the shipped weights.

        Raises:
            NodeError, UnsupportedImageError: bad input/output node. MissingDependencyError: torch or a
            package is missing (never installs here). OptionError, DeviceError: bad engine settings.
            ScaleError, ModelNotFoundError, WeightsError, GeometryError, ...: from MedSRLib.
            CancelledError: ``cancel()`` returned True (also polled once after the check). In every case
            nothing is created or written and the input is unchanged.
        """
        self.lastConsistency = None
        self.lastRunInfo = None
        self.lastNotes = []
        nodes.checkInputVolume(inputVolume)
        nodes.checkOutputVolume(outputVolume, inputVolume)
        dependencies.checkDependencies()
        engineOptions = self.engineOptions(engine, device=device, ensemble=ensemble, memory_budget_mb=memoryBudgetMB or None)
        volume = nodes.volumeFromNode(inputVolume)
        runOptions = self.runOptions(volume, model=model, scale=scale, axis=axis, plane=plane,
                                     targetSpacingMM=targetSpacingMM, adaptSeconds=adaptSeconds,
                                     throughModel=throughModel, throughDiagonals=throughDiagonals, weights=weights,
                                     check=check, engine=engineOptions)
        startTime = time.monotonic()
        logging.info(f"MedSR: super-resolving '{inputVolume.GetName()}' " + (
            f"with {runOptions.model} x{runOptions.scale}" if runOptions.plane == "in" else "along its slice axis (through-plane)"))
        with reporting.capturedWarnings(onWarning or logging.warning):
            result, report, choiceNotes = (runner or _runInline)(lambda: _superResolveAndCheck(volume, runOptions, progress, cancel))
        if cancel is not None and cancel():
            raise CancelledError("Cancelled after super-resolution: nothing was written.")
        notes = choiceNotes + reporting.throughPlaneNotes(result.metadata.get("medsr") or {})
        nodes.checkStillInScene(inputVolume, outputVolume)  # deleted while the job ran: stop, write nothing
        outputVolume = nodes.prepareOutputNode(outputVolume, inputVolume, *_nameParts(result, model, runOptions.scale or scale))
        nodes.writeVolumeToNode(result, outputVolume)
        nodes.placeBesideInput(outputVolume, inputVolume)
        if showResult:
            nodes.showInSliceViews(outputVolume)
        logging.info(f"MedSR: '{outputVolume.GetName()}' done in {time.monotonic() - startTime:.1f} s")
        if report is not None:
            logging.info("MedSR: " + report.summary())
        for note in notes:
            logging.info("MedSR: " + note)
        self.lastConsistency = report
        self.lastRunInfo = dict(result.metadata.get("medsr") or {})
        self.lastNotes = notes
        return outputVolume

    def processWithReport(self, inputVolume, outputVolume=None, **options):
        """:meth:`process` (same arguments), returning ``(outputNode, ConsistencyReport or None)``."""
        outputVolume = self.process(inputVolume, outputVolume, **options)
        return outputVolume, self.lastConsistency

    # -- data consistency ------------------------------------------------------------------------------
    @staticmethod
    def createDifferenceNode(inputVolume, report):
        """A new scalar volume ``<input> MedSR difference`` holding ``report.difference`` (float32, input units).

        Same geometry, parent transform and subject-hierarchy folder as ``inputVolume``; displayed with the
        diverging blue-white-red colour table, level 0 and window +-p99 |difference|.

        Raises:
            NodeError: the input is not in the scene, the report kept no difference, or it is for another grid.
        """
        return consistency_view.createDifferenceNode(inputVolume, report)

    @staticmethod
    def showDifference(inputVolume, differenceVolume, opacity: float = consistency_view.DIFFERENCE_OPACITY) -> None:
        """Show the difference as the foreground layer (``opacity``) over the input in every slice view."""
        consistency_view.showDifference(inputVolume, differenceVolume, opacity)

    @staticmethod
    def jumpToSlice(inputVolume, sliceIndex: int, axis: int):
        """Centre the slice views on slice ``sliceIndex`` along numpy ``axis`` of the input; returns that world RAS point.

        Raises:
            NodeError: the input is not in the scene, ``axis`` is not 0-2 or the slice does not exist.
        """
        return consistency_view.jumpToSlice(inputVolume, sliceIndex, axis)


@functools.lru_cache(maxsize=64)
def _cardText(modelName: str, scale: int) -> str:
    from MedSRLib.errors import MedSRError as LibraryError
    from MedSRLib.models.cards import card_text  # torch-free: cards and the cached registry table

    try:
        return card_text(modelName, scale).rstrip("\n")
    except LibraryError as error:
        return str(error)


def _isInPlaneResult(result) -> bool:
    """True when MedSRLib's grid plan of ``result`` upsampled exactly two axes (in-plane SR)."""
    factors = ((result.metadata.get("medsr") or {}).get("grid") or {}).get("factors_zyx")
    return factors is None or sum(1 for f in factors if f > 1.0) == 2


def _nameParts(result, modelName: str, scale: int) -> tuple:
    """``(model, factor)`` for the output's name: the in-plane model and scale, or for a through-plane result
    the model and the slice-axis factor MedSRLib recorded (``metadata["medsr"]``)."""
    if _isInPlaneResult(result):
        return (result.metadata.get("medsr") or {}).get("model", modelName), scale
    runInfo = result.metadata.get("medsr") or {}
    return runInfo.get("model", modelName), max(runInfo["grid"]["factors_zyx"])


def _superResolveAndCheck(volume, runOptions, progress=None, cancel=None):
    """``(super-resolved Volume, ConsistencyReport or None, notes)``: pure MedSRLib work (runs in the worker
    thread) through the flow ``medsr run`` uses (``MedSRLib.run.super_resolve_with_options``); ``notes``:
    which model ran and why. A check that cannot run keeps the output and says why."""
    from MedSRLib.run import check_with_options, super_resolve_with_options

    notes = []
    done = super_resolve_with_options(volume, runOptions, note=notes.append, progress=lambda label: progress,
                                      cancel=cancel)
    if not runOptions.check:
        return done.result, None, notes
    try:
        return done.result, check_with_options(volume, done.result, runOptions, keep_difference=True), notes
    except MedSRError as error:  # the output itself is fine to keep; say why there are no numbers
        logging.getLogger("MedSRLib.consistency").warning(f"MedSR: the data-consistency check failed: {error}")
        return done.result, None, notes


def _sliceAxisArgument(axis):
    """The panel's "auto" is MedSRLib's None (largest spacing); planes and numpy axes pass through."""
    return None if axis in (None, "auto") else axis
