"""MedSR: super-resolve a CT or MR volume in-plane with the networks of five papers (3D Slicer module).

A thin scripted module (Slicer's template: module, widget, logic, test). The numerics live in
MedSRLib: geometry conversion only through ``MedSRLib.geometry``, super-resolution only through
``MedSRLib.pipeline``, the data-consistency check only through ``MedSRLib.consistency``. MedSRLib is imported lazily (inside methods) because most of it needs torch,
which the PyTorch extension installs on request: the module must load before torch exists.

Conventions: Slicer volume nodes are RAS (mm) with an IJK-to-RAS matrix; ``arrayFromVolume`` arrays are
``(k, j, i)``; MedSRLib volumes are ITK LPS with ``(z, y, x)`` = ``(k, j, i)`` arrays.
"""

import logging
import threading
import time
import unittest
from typing import Annotated, Optional

import slicer
import vtk
from slicer import vtkMRMLScalarVolumeNode
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

from MedSRSlicerLib import consistency_view, dependencies, nodes, reporting  # also makes MedSRLib importable from a checkout
from MedSRLib.errors import CancelledError, MedSRError  # no torch needed

#: Choices offered in the panel (every model checks its own scales; bicubic/nearest take any of them).
SCALE_CHOICES = [2, 3, 4, 8]
#: "auto" = the axis with the largest spacing (the acquisition's slice axis); else the plane of the slices.
SLICE_AXIS_CHOICES = ["auto", "axial", "coronal", "sagittal"]
DEVICE_CHOICES = ["auto", "cpu", "cuda", "mps"]
APPLY_TEXT = "Super-resolve volume"


#
# MedSR
#


class MedSR(ScriptedLoadableModule):
    """Module metadata (shown in Slicer's Help & Acknowledgement panel)."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("MedSR Super-Resolution")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Filtering")]
        self.parent.dependencies = []  # PyTorchUtils is imported on demand (a hard dependency would stop loading)
        self.parent.contributors = ["MedSR developers"]
        self.parent.helpText = _(
            "Super-resolves a CT or MR volume <b>in-plane, slice by slice</b>, by an integer factor, with the "
            "networks of five papers: IDMAN and DRIDSR (CT; DRIDSR for lung CT), W2AMSN, SRDA and MDRN (brain MR), "
            "plus bicubic and nearest interpolation as baselines. The new volume covers exactly the input's field "
            "of view, keeps its units and data type, its parent transform and its place in the subject hierarchy; "
            "the input is never modified.<br><br>"
            "<b>Valid for</b>: single-component CT or MR scalar volumes that resemble the chosen network's training "
            "data (see the model card in the panel); sharper detail within the slice plane. The slice thickness "
            "(through-plane resolution) is not changed.<br>"
            "<b>Not valid for</b>: labelmaps or segmentations, vector/RGB, 4D or tensor volumes; images unlike the "
            "training data (other modality, anatomy or contrast); measurements or diagnosis of details the input "
            "does not resolve. The networks were trained on bicubic-downsampled images, not on real low-resolution "
            "acquisitions.<br><br>"
            "<b>The output is not a substitute for an acquisition at that resolution</b>: the added detail is an "
            "estimate made by a network.<br><br>"
            "After a run, <b>Data consistency</b> shows how well the output, degraded back to the input's resolution, "
            "matches the input (PSNR, SSIM, |difference|, beside bicubic upsampling), can show the difference as an "
            "overlay, and lists the slices that agree worst; good agreement does not prove the added detail is real.<br><br>"
            "Needs the PyTorch extension; the first run offers to install PyTorch and a few Python packages."
        )
        self.parent.acknowledgementText = _(
            "MedSR implements the networks of IDMAN (Zhao et al., Sensors 2021), DRIDSR (Chen et al.), "
            "W2AMSN (Wang et al.), SRDA (Wang et al., ICME 2023) and MDRN (Deng et al., AIMS 2024). "
            "Built on 3D Slicer's scripted module template and the PyTorch extension (SlicerPyTorch)."
        )


#
# MedSRParameterNode
#


@parameterNodeWrapper
class MedSRParameterNode:
    """What the panel edits (saved with the scene).

    inputVolume - the scalar volume to super-resolve (never modified).
    outputVolume - receives the result; None creates a new volume named <input>_<model>_x<scale>.
    model - MedSRLib registry name ("bicubic", "mdrn", "dridsr", ...); the panel lists the registry.
    scale - in-plane factor (the model must support it).
    sliceAxis - which slices are super-resolved: "auto" (largest spacing) or a plane.
    device - "auto" (CUDA, then MPS, then CPU), or one of them.
    selfEnsemble - average the 8 flips/rotations of each slice (8 times slower).
    memoryBudgetMB - memory for one batch of slices, MB; 0 = automatic.
    checkConsistency - after the run, degrade the output back and compare it with the input (MedSRLib.consistency).
    """

    inputVolume: vtkMRMLScalarVolumeNode
    outputVolume: vtkMRMLScalarVolumeNode
    model: str = "bicubic"
    scale: Annotated[int, Choice(SCALE_CHOICES)] = 2
    sliceAxis: Annotated[str, Choice(SLICE_AXIS_CHOICES)] = "auto"
    device: Annotated[str, Choice(DEVICE_CHOICES)] = "auto"
    selfEnsemble: bool = False
    memoryBudgetMB: Annotated[int, WithinRange(0, 1048576)] = 0
    checkConsistency: bool = True


#
# MedSRWidget
#


class MedSRWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """The panel: parameters bound to the parameter node, Apply/Cancel, progress, estimate, model card."""

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._running = False
        self._cancelRequested = False
        self._tracker = None
        self._estimateSeconds = None
        self._consistency = None  # (input node, ConsistencyReport, slice indices of the list rows) of the last run
        self._differenceVolume = None

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/MedSR.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)

        self.logic = MedSRLogic()
        self._populateModelComboBox()

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.ui.modelComboBox.connect("currentIndexChanged(int)", self.onModelSelected)
        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.ui.applyButton.text = _(APPLY_TEXT)
        self.ui.progressBar.setVisible(False)
        self.ui.showDifferenceButton.connect("clicked(bool)", self.onShowDifference)
        self.ui.consistencySliceList.connect("itemClicked(QListWidgetItem*)", self.onSliceItemClicked)
        self._showConsistency(None, None)

        self.initializeParameterNode()

    def cleanup(self) -> None:
        self._cancelRequested = True
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._onParameterNodeModified)

    def onSceneStartClose(self, caller, event) -> None:
        self._cancelRequested = True  # the scene goes away: a running job must not write into it
        self._showConsistency(None, None)
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputVolume:
            firstVolume = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
            if firstVolume and firstVolume.GetClassName() == nodes.SCALAR_VOLUME_CLASS:
                self._parameterNode.inputVolume = firstVolume

    def setParameterNode(self, parameterNode: Optional[MedSRParameterNode]) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._onParameterNodeModified)
        self._parameterNode = parameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._onParameterNodeModified)
            self._onParameterNodeModified()

    # -- panel state ------------------------------------------------------------------------------
    def _populateModelComboBox(self) -> None:
        """Fill the model list from MedSRLib's registry (needs torch; otherwise say how to get it)."""
        combo = self.ui.modelComboBox
        wasBlocked = combo.blockSignals(True)
        combo.clear()
        choices = self.logic.modelChoices()
        for name, label in choices:
            combo.addItem(label, name)
        if not choices:
            combo.addItem(_("PyTorch not installed: click 'Super-resolve volume' to install"), "bicubic")
        combo.enabled = bool(choices)
        combo.blockSignals(wasBlocked)

    def onModelSelected(self, index: int) -> None:
        if self._parameterNode and index >= 0 and self.ui.modelComboBox.enabled:
            self._parameterNode.model = self.ui.modelComboBox.itemData(index)

    def _onParameterNodeModified(self, caller=None, event=None) -> None:
        if not self._parameterNode or self._running:
            return
        parameters = self._parameterNode
        index = self.ui.modelComboBox.findData(parameters.model)
        if index >= 0 and index != self.ui.modelComboBox.currentIndex:
            wasBlocked = self.ui.modelComboBox.blockSignals(True)
            self.ui.modelComboBox.currentIndex = index
            self.ui.modelComboBox.blockSignals(wasBlocked)
        self.ui.modelCardLabel.text = self.logic.describeModel(parameters.model, parameters.scale)
        self._updateEstimate()
        self._checkCanApply()

    def _updateEstimate(self) -> None:
        parameters = self._parameterNode
        self._estimateSeconds = None
        if parameters.inputVolume is None:
            self.ui.estimateLabel.text = _("Select an input volume.")
            return
        try:
            self._estimateSeconds = self.logic.estimateSeconds(
                parameters.inputVolume, parameters.model, parameters.scale, device=parameters.device,
                ensemble=parameters.selfEnsemble,
            )
        except MedSRError as error:
            self.ui.estimateLabel.text = _("No estimate: {reason}").format(reason=error)
            return
        self.ui.estimateLabel.text = _("Estimated network time: about {duration} (m:ss) on {device}").format(
            duration=reporting.formatDuration(self._estimateSeconds), device=self.logic.deviceName(parameters.device)
        )

    def _checkCanApply(self) -> None:
        parameters = self._parameterNode
        problem = self.logic.problemWith(parameters.inputVolume, parameters.outputVolume, parameters.model, parameters.scale)
        self.ui.applyButton.enabled = problem is None
        self.ui.applyButton.toolTip = problem or _("Super-resolve the input volume (Cancel stops a running job).")

    # -- running ----------------------------------------------------------------------------------
    def onApplyButton(self) -> None:
        if self._running:
            self._cancelRequested = True
            self.ui.applyButton.text = _("Cancelling...")
            self.ui.applyButton.enabled = False
            return
        parameters = self._parameterNode
        inputVolume = parameters.inputVolume
        warningsSeen = []
        self._showConsistency(None, None)
        with slicer.util.tryWithErrorDisplay(_("Super-resolution failed."), waitCursor=False):
            dependencies.ensureDependencies()  # asks before installing anything
            self._populateModelComboBox()
            self._setRunning(True)
            startTime = time.monotonic()
            try:
                outputVolume, report = self.logic.processWithReport(
                    inputVolume,
                    parameters.outputVolume,
                    model=parameters.model,
                    scale=parameters.scale,
                    axis=parameters.sliceAxis,
                    device=parameters.device,
                    ensemble=parameters.selfEnsemble,
                    memoryBudgetMB=parameters.memoryBudgetMB,
                    progress=self._tracker,
                    cancel=lambda: self._cancelRequested,
                    runner=self._runKeepingGuiResponsive,
                    onWarning=warningsSeen.append,
                    check=parameters.checkConsistency,
                )
            except CancelledError:
                self.ui.statusLabel.text = _("Cancelled: nothing was written and the input is unchanged.")
                return
            finally:
                self._setRunning(False)
        self.ui.statusLabel.text = _("Done in {duration}: '{name}'.").format(
            duration=reporting.formatDuration(time.monotonic() - startTime), name=outputVolume.GetName()
        )
        self._showConsistency(inputVolume, report)
        if warningsSeen:  # e.g. the engine ran out of GPU memory and finished on the CPU
            self.ui.statusLabel.text += " " + _("Warnings: ") + " ".join(warningsSeen)
            slicer.util.warningDisplay("\n".join(warningsSeen), windowTitle=_("MedSR"))

    # -- data consistency -------------------------------------------------------------------------------
    def _showConsistency(self, inputVolume, report) -> None:
        """Fill the Data consistency section from ``report`` (None hides it)."""
        self._differenceVolume = None
        self._consistency = None
        self.ui.consistencyCollapsibleButton.setVisible(report is not None)
        self.ui.consistencySliceList.clear()
        if report is None:
            return
        self.ui.consistencyLabel.text = consistency_view.metricsHtml(report)
        title, entries = consistency_view.sliceListEntries(report)
        self.ui.consistencySlicesLabel.text = title
        for _index, text in entries:
            self.ui.consistencySliceList.addItem(text)
        self.ui.showDifferenceButton.enabled = report.difference is not None
        self._consistency = (inputVolume, report, [index for index, _text in entries])

    def onShowDifference(self) -> None:
        if self._consistency is None:
            return
        inputVolume, report, _indices = self._consistency
        with slicer.util.tryWithErrorDisplay(_("Cannot show the difference volume."), waitCursor=True):
            if self._differenceVolume is None or self._differenceVolume.GetScene() is None:
                self._differenceVolume = self.logic.createDifferenceNode(inputVolume, report)
            self.logic.showDifference(inputVolume, self._differenceVolume)

    def onSliceItemClicked(self, item) -> None:
        if self._consistency is None:
            return
        inputVolume, report, indices = self._consistency
        with slicer.util.tryWithErrorDisplay(_("Cannot show that slice.")):
            self.logic.jumpToSlice(inputVolume, indices[self.ui.consistencySliceList.row(item)], report.slice_axis)

    def _setRunning(self, running: bool) -> None:
        self._running = running
        self._cancelRequested = False
        for section in (self.ui.inputsCollapsibleButton, self.ui.outputsCollapsibleButton, self.ui.advancedCollapsibleButton):
            section.enabled = not running
        self.ui.applyButton.text = _("Cancel") if running else _(APPLY_TEXT)
        self.ui.applyButton.enabled = True
        self.ui.progressBar.setVisible(running)
        if running:
            self._tracker = reporting.ProgressTracker(self._estimateSeconds)
            self.ui.progressBar.value = 0
            self.ui.statusLabel.text = _("Starting...")
        else:
            self._onParameterNodeModified()

    def _refreshProgress(self) -> None:
        snapshot = self._tracker.snapshot()
        if snapshot.total:
            self.ui.progressBar.maximum = snapshot.total
            self.ui.progressBar.value = snapshot.done
        self.ui.statusLabel.text = reporting.describeProgress(snapshot)

    def _runKeepingGuiResponsive(self, function):
        """Run ``function`` (pure MedSRLib work, no MRML) in a thread; keep the GUI alive meanwhile.

        The main thread pumps Qt events and refreshes progress every 0.1 s (Slicer's own pattern in
        ``slicer.packaging``: background work, ``processEvents`` on the main thread).
        """
        outcome = {}

        def work():
            try:
                outcome["result"] = function()
            except BaseException as error:  # re-raised on the main thread
                outcome["error"] = error

        worker = threading.Thread(target=work, name="MedSR super-resolution", daemon=True)
        worker.start()
        while worker.is_alive():
            slicer.app.processEvents()
            self._refreshProgress()
            worker.join(0.1)
        if "error" in outcome:
            raise outcome["error"]
        return outcome["result"]


#
# MedSRLogic
#


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
    """

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleLogic.__init__(self, parent)
        self.lastConsistency = None

    def getParameterNode(self) -> MedSRParameterNode:
        return MedSRParameterNode(super().getParameterNode())

    # -- information for the panel -----------------------------------------------------------------
    @staticmethod
    def modelChoices() -> list:
        """``[(registry name, label)]`` of every registered model; empty when torch is missing."""
        if dependencies.missingRequirements():
            return []
        from MedSRLib.models import list_models

        return [(spec.name, f"{spec.name}: {spec.network} {spec.config} ({spec.modality})") for spec in list_models()]

    @staticmethod
    def describeModel(modelName: str, scale: int) -> str:
        """The model card as HTML: paper, modality, scales, training data, metrics, intended use."""
        if dependencies.missingRequirements():
            return _("Model information needs PyTorch (installed on the first run).")
        from MedSRLib.models import get_model

        try:
            spec = get_model(modelName)
        except MedSRError as error:
            return str(error)
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
                training = card.get("training") or {}
                lines.append(_("Trained at x{scale} on: {data}").format(scale=card.get("scale", scale), data=training.get("data") or _("not recorded")))
                metrics = {k: v for k, v in (card.get("metrics") or {}).items() if k != "convention"}
                if metrics:
                    lines.append(_("Validation: {metrics}").format(metrics=", ".join(f"{k} {v}" for k, v in metrics.items())))
                if card.get("intended_use"):
                    lines.append(_("Intended use: {use}").format(use=card["intended_use"]))
        return "<br>".join(line for line in lines if line)

    @staticmethod
    def deviceName(device: str) -> str:
        """What ``device`` ("auto", "cpu", "cuda", "mps") resolves to here, e.g. "cuda:0" or "cpu"."""
        from MedSRLib.engine import resolve_device

        try:
            return str(resolve_device(device))
        except MedSRError:
            return device

    @staticmethod
    def estimateSeconds(inputVolume, model: str, scale: int, axis="auto", device: str = "auto", ensemble: bool = False) -> float:
        """Rough network time in seconds for ``inputVolume`` (from the model's MACs and the device)."""
        nodes.checkInputVolume(inputVolume)
        dependencies.checkDependencies()
        from MedSRLib.pipeline import estimate_seconds

        shapeKJI = tuple(reversed(inputVolume.GetImageData().GetDimensions()))
        return estimate_seconds(shapeKJI, inputVolume.GetSpacing(), model=model, scale=int(scale),
                                axis=_sliceAxisArgument(axis), device=device, ensemble=ensemble)

    @staticmethod
    def problemWith(inputVolume, outputVolume, model: str, scale: int) -> Optional[str]:
        """Why ``process`` would refuse these choices (one line), or None. Never installs or computes."""
        try:
            nodes.checkInputVolume(inputVolume)
            nodes.checkOutputVolume(outputVolume, inputVolume)
            if not dependencies.missingRequirements():  # the model can only be checked with torch
                from MedSRLib.models import get_model

                spec = get_model(model)
                spec.check_scale(scale)
                if not spec.has_weights(scale):
                    return _("No trained weights for '{model}' at x{scale} are shipped: choose another model or scale.").format(
                        model=spec.name, scale=scale
                    )
        except MedSRError as error:
            return str(error)
        return None

    # -- processing ----------------------------------------------------------------------------------
    def process(
        self,
        inputVolume,
        outputVolume=None,
        model: str = "bicubic",
        scale: int = 2,
        axis="auto",
        device: str = "auto",
        ensemble: bool = False,
        memoryBudgetMB: int = 0,
        progress=None,
        cancel=None,
        showResult: bool = True,
        runner=None,
        onWarning=None,
        check: bool = True,
    ):
        """Super-resolve ``inputVolume`` in-plane by ``scale`` and return the output volume node.

        Args:
            inputVolume: ``vtkMRMLScalarVolumeNode`` (never modified).
            outputVolume: node to overwrite, or None to create ``<input>_<model>_x<scale>``.
            model: MedSRLib registry name; scale: integer factor the model supports.
            axis: "auto" (largest spacing), "axial", "coronal", "sagittal" or a numpy axis 0-2 of (k, j, i).
            device: "auto", "cpu", "cuda", "mps"; ensemble: 8-fold self-ensemble.
            memoryBudgetMB: memory for one batch, MB (0 = automatic).
            progress: ``progress(done_slices, total_slices)``; cancel: ``cancel() -> bool`` polled between batches.
            showResult: show the output in the slice views.
            runner: ``runner(function) -> result`` runs the pure MedSRLib step (the panel uses a thread).
            onWarning: receives each warning of the run (e.g. GPU out of memory, finished on the CPU);
                default: ``logging.warning``.
            check: degrade the output back and compare it with the input
                (``MedSRLib.consistency.check_consistency``, bicubic reference, difference volume kept);
                the report is :attr:`lastConsistency`. A check that fails is reported through ``onWarning``.

        Raises:
            NodeError, UnsupportedImageError: bad input/output node. MissingDependencyError: torch or a
            package is missing (never installs here). ScaleError, ModelNotFoundError, WeightsError,
            GeometryError, ...: from MedSRLib. CancelledError: ``cancel()`` returned True (also polled
            once after the check). In every case nothing is created or written and the input is unchanged.
        """
        self.lastConsistency = None
        nodes.checkInputVolume(inputVolume)
        nodes.checkOutputVolume(outputVolume, inputVolume)
        dependencies.checkDependencies()
        from MedSRLib.models import get_model

        spec = get_model(model)
        scale = spec.check_scale(scale)
        volume = nodes.volumeFromNode(inputVolume)
        options = dict(
            model=spec,
            scale=scale,
            axis=_sliceAxisArgument(axis),
            device=device,
            ensemble=bool(ensemble),
            memory_budget_mb=memoryBudgetMB or None,
            output_dtype=nodes.outputDtypeFor(volume.array),
            progress=progress,
            cancel=cancel,
        )
        startTime = time.monotonic()
        logging.info(f"MedSR: super-resolving '{inputVolume.GetName()}' with {spec.name} x{scale}")
        with reporting.capturedWarnings(onWarning or logging.warning):
            result, report = (runner or _runInline)(lambda: _superResolveAndCheck(volume, options, check))
        if cancel is not None and cancel():
            raise CancelledError("Cancelled after super-resolution: nothing was written.")
        outputVolume = nodes.prepareOutputNode(outputVolume, inputVolume, spec.name, scale)
        nodes.writeVolumeToNode(result, outputVolume)
        nodes.placeBesideInput(outputVolume, inputVolume)
        if showResult:
            nodes.showInSliceViews(outputVolume)
        logging.info(f"MedSR: '{outputVolume.GetName()}' done in {time.monotonic() - startTime:.1f} s")
        if report is not None:
            logging.info("MedSR: " + report.summary())
        self.lastConsistency = report
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


def _superResolveAndCheck(volume, options, check: bool):
    """``(super-resolved Volume, ConsistencyReport or None)``: pure MedSRLib work (runs in the worker thread)."""
    from MedSRLib.consistency import check_consistency
    from MedSRLib.pipeline import super_resolve

    result = super_resolve(volume, **options)
    if not check:
        return result, None
    try:
        return result, check_consistency(volume, result, scale=options["scale"], axis=options["axis"])
    except MedSRError as error:  # the output itself is fine to keep; say why there are no numbers
        logging.getLogger("MedSRLib.consistency").warning(f"MedSR: the data-consistency check failed: {error}")
        return result, None


def _sliceAxisArgument(axis):
    """The panel's "auto" is MedSRLib's None (largest spacing); planes and numpy axes pass through."""
    return None if axis in (None, "auto") else axis


#
# MedSRTest
#


class MedSRTest(ScriptedLoadableModuleTest):
    """Runs in real Slicer (ctest ``py_MedSR`` or "Reload and Test"): SampleData MRHead and CTChest, x2.

    Geometry is read from the loaded nodes at run time (SampleData records none). Needs the network
    (SampleData downloads) and torch; without torch the tests are skipped, never installing anything.
    """

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        """"Reload and Test" calls this directly: run every test, report skips instead of failing."""
        for test in (self.test_bicubic_MRHead, self.test_bicubic_CTChest, self.test_network_MRHead, self.test_network_CTChest):
            self.setUp()
            try:
                test()
            except unittest.SkipTest as reason:
                self.delayDisplay(f"Skipped {test.__name__}: {reason}")

    def test_bicubic_MRHead(self):
        self._superResolveSample("MRHead", "bicubic")

    def test_bicubic_CTChest(self):
        self._superResolveSample("CTChest", "bicubic")

    def test_network_MRHead(self):
        self._superResolveSample("MRHead", self._trainedNetwork("MR"), slices=3)

    def test_network_CTChest(self):
        self._superResolveSample("CTChest", self._trainedNetwork("CT"), slices=3)

    # -- helpers ---------------------------------------------------------------------------------------
    def _requireTorch(self):
        try:
            import PyTorchUtils
        except ModuleNotFoundError:
            self.skipTest("the PyTorch extension is not installed")
        if not PyTorchUtils.PyTorchUtilsLogic.torchInstalled():
            self.skipTest("torch is not installed (tests never install it)")
        if dependencies.missingRequirements():
            self.skipTest(f"missing Python packages: {dependencies.missingRequirements()}")

    def _trainedNetwork(self, modality):
        self._requireTorch()
        from MedSRLib.models import default_model

        spec = default_model(modality, 2)
        if not spec.learned:
            self.skipTest(f"no trained {modality} network with x2 weights is shipped")
        return spec.name

    def _superResolveSample(self, sampleName, model, slices=None, scale=2):
        import numpy as np
        import SampleData

        self._requireTorch()
        self.delayDisplay(f"Loading {sampleName}")
        inputVolume = SampleData.downloadSample(sampleName)
        if slices:  # networks on CPU are slow: keep a slab of the middle slices (geometry shifted to match)
            fullMatrix = nodes.ijkToRasArray(inputVolume)
            first = inputVolume.GetImageData().GetDimensions()[2] // 2
            slabMatrix = fullMatrix.copy()
            slabMatrix[:3, 3] = (fullMatrix @ [0, 0, first, 1])[:3]
            slab = slicer.util.arrayFromVolume(inputVolume)[first:first + slices]
            inputVolume = slicer.util.addVolumeFromArray(slab, ijkToRAS=slabMatrix, name=f"{sampleName}_slab")
        transform = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "MedSRTestTransform")
        inputVolume.SetAndObserveTransformNodeID(transform.GetID())

        inputMatrix = nodes.ijkToRasArray(inputVolume)  # geometry read at run time
        inputDims = np.array(inputVolume.GetImageData().GetDimensions())
        inputVoxels = slicer.util.arrayFromVolume(inputVolume).copy()
        spacing = np.array(inputVolume.GetSpacing())
        sliceAxisIJK = int(np.argmax(spacing)) if inputDims.min() > 1 else int(np.argmin(inputDims))
        factors = np.where(np.arange(3) == sliceAxisIJK, 1, scale)

        self.delayDisplay(f"Super-resolving {sampleName} x{scale} with {model}")
        logic = MedSRLogic()
        outputVolume = logic.process(inputVolume, model=model, scale=scale, axis=2 - sliceAxisIJK)

        # output index i' maps to input index (i' + 0.5) / f - 0.5: same field of view (outer voxel edges)
        indexMap = np.eye(4)
        indexMap[:3, :3] = np.diag(1.0 / factors)
        indexMap[:3, 3] = (1.0 / factors - 1.0) / 2.0
        np.testing.assert_allclose(nodes.ijkToRasArray(outputVolume), inputMatrix @ indexMap, atol=1e-6)
        np.testing.assert_array_equal(outputVolume.GetImageData().GetDimensions(), inputDims * factors)
        outputVoxels = slicer.util.arrayFromVolume(outputVolume)
        self.assertEqual(outputVoxels.dtype, inputVoxels.dtype)
        self.assertLess(abs(float(outputVoxels.mean()) - float(inputVoxels.mean())), 0.05 * float(np.ptp(inputVoxels)))
        # input untouched, output beside it
        np.testing.assert_array_equal(slicer.util.arrayFromVolume(inputVolume), inputVoxels)
        np.testing.assert_array_equal(nodes.ijkToRasArray(inputVolume), inputMatrix)
        self.assertEqual(outputVolume.GetTransformNodeID(), transform.GetID())
        shNode = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(slicer.mrmlScene)
        self.assertEqual(shNode.GetItemParent(shNode.GetItemByDataNode(outputVolume)),
                         shNode.GetItemParent(shNode.GetItemByDataNode(inputVolume)))
        self.assertTrue(outputVolume.GetName().startswith(f"{inputVolume.GetName()}_{model}_x{scale}"))
        self._checkConsistencyDisplay(logic, inputVolume, inputMatrix, sliceAxisIJK)
        self.delayDisplay(f"{sampleName} {model} x{scale}: geometry, placement and consistency display verified")

    def _checkConsistencyDisplay(self, logic, inputVolume, inputMatrix, sliceAxisIJK):
        """The report exists; the difference node sits on the input grid with Slicer's diverging colour table."""
        import numpy as np

        report = logic.lastConsistency
        self.assertIsNotNone(report)
        self.assertEqual(report.slice_axis, 2 - sliceAxisIJK)
        differenceVolume = logic.createDifferenceNode(inputVolume, report)
        np.testing.assert_allclose(nodes.ijkToRasArray(differenceVolume), inputMatrix, atol=1e-4)
        colorNodeID = differenceVolume.GetDisplayNode().GetColorNodeID()
        self.assertIsNotNone(slicer.mrmlScene.GetNodeByID(colorNodeID), f"no colour node {colorNodeID} in this Slicer")
        self.assertAlmostEqual(differenceVolume.GetDisplayNode().GetLevel(), 0.0)
        logic.showDifference(inputVolume, differenceVolume)
        ras = logic.jumpToSlice(inputVolume, 0, report.slice_axis)
        if slicer.app.layoutManager():  # slice views exist only with a main window
            redSliceToRAS = slicer.app.layoutManager().sliceWidget("Red").mrmlSliceNode().GetSliceToRAS()
            np.testing.assert_allclose([redSliceToRAS.GetElement(row, 3) for row in range(3)], ras, atol=1e-3)
