"""MedSR: super-resolve a CT or MR volume in-plane, or along the slice axis of a thick-slice volume (3D Slicer module).

A thin scripted module (as KitwareMedical/SlicerNNUnet arranges it): this file holds only the module
metadata, the panel's widget glue and the test entry. Everything else is in the ``MedSRSlicerLib``
package beside it, one concern per file:

* ``logic.py`` -- ``MedSRLogic`` (re-exported here: ``slicer.util.getModuleLogic("MedSR")``);
* ``parameters.py`` -- ``MedSRParameterNode`` and the panel's choices;
* ``nodes.py`` -- volume nodes <-> MedSRLib volumes (geometry only through ``MedSRLib.geometry``);
* ``consistency_view.py`` -- the data-consistency display; ``reporting.py`` -- progress and warnings;
* ``model_catalog.py`` -- the model list and cards from cached metadata (no torch import);
* ``background.py`` -- slow pure-Python work off the GUI thread; ``dependencies.py`` -- installs;
* ``selftest.py`` -- what ``MedSRTest`` checks (also run outside Slicer on real MRML by the tests).

No numerics here or in ``MedSRSlicerLib``: every number comes from MedSRLib.
"""

import time
import unittest
from typing import Optional

import slicer
import vtk
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.ScriptedLoadableModule import ScriptedLoadableModule, ScriptedLoadableModuleTest, ScriptedLoadableModuleWidget
from slicer.util import VTKObservationMixin

from MedSRSlicerLib import background, consistency_view, dependencies, nodes, reporting, selftest  # makes MedSRLib importable from a checkout
from MedSRSlicerLib import engine_settings, panel_text
from MedSRSlicerLib.logic import MedSRLogic  # noqa: F401  (Slicer finds the logic as <module>.MedSRLogic)
from MedSRSlicerLib.parameters import DEVICE_CHOICES, SCALE_CHOICES, SLICE_AXIS_CHOICES, MedSRParameterNode  # noqa: F401
from MedSRSlicerLib.plane import PLANE_CHOICES, PLANE_LABELS
from MedSRLib.errors import CancelledError, MedSRError  # no torch needed

APPLY_TEXT = "Super-resolve volume"
#: How often the panel looks whether a background estimate finished, ms.
ESTIMATE_POLL_MS = 100


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
        self.parent.contributors = ["MedSR developers (MedSR project)"]  # "Name (Organization)"; see CMakeLists.txt
        self.parent.helpText = _(
            "Super-resolves a CT or MR volume <b>in-plane, slice by slice</b>, by an integer factor, with the "
            "networks of five papers: IDMAN and DRIDSR (CT; DRIDSR for lung CT), W2AMSN, SRDA and MDRN (brain MR), "
            "plus bicubic and nearest interpolation as baselines. The new volume covers exactly the input's field "
            "of view, keeps its units and data type, its parent transform and its place in the subject hierarchy; "
            "the input is never modified.<br><br>"
            "<b>Valid for</b>: single-component CT or MR scalar volumes that resemble the chosen network's training "
            "data (see the model card in the panel); sharper detail within the slice plane. In-plane runs keep the "
            "slice thickness; <b>Direction: Through-plane</b> (chosen by <i>Auto</i> when the slice spacing is at "
            "least 2x the in-plane spacing) super-resolves along the slice axis to the target spacing (default: the "
            "in-plane spacing, near-isotropic) with a through-plane network (<i>Auto</i>: MedSRLib's for the "
            "volume's modality), both orientations containing the slice axis fused.<br>"
            "<b>Not valid for</b>: labelmaps or segmentations, vector/RGB, 4D or tensor volumes; images unlike the "
            "training data (other modality, anatomy or contrast); measurements or diagnosis of details the input "
            "does not resolve. The networks were trained on bicubic-downsampled images, not on real low-resolution "
            "acquisitions.<br><br>"
            "<b>The output is not a substitute for an acquisition at that resolution</b>: the added detail is an "
            "estimate made by a network.<br><br>"
            "<b>Advanced</b> holds the engine options of the <tt>medsr</tt> command (device, batch size, memory "
            "budget, tiles, ensemble, precision, threads, compile), checked before anything runs; after a run the "
            "status line says which precision ran.<br><br>"
            "After a run, <b>Data consistency</b> shows how well the output, degraded back to the input's resolution, "
            "matches the input (PSNR, SSIM, |difference|, beside bicubic upsampling; for a through-plane run the "
            "slice profile along the slice axis, beside cubic B-spline), can show the difference as an "
            "overlay, and lists the slices that agree worst; good agreement does not prove the added detail is real.<br><br>"
            "Needs the PyTorch extension; the first run offers to install PyTorch and a few Python packages."
        )
        self.parent.acknowledgementText = _(
            "MedSR implements the networks of IDMAN (Zhao et al., Sensors 2021), DRIDSR (Chen et al.), "
            "W2AMSN (Wang et al.), SRDA (Wang et al., ICME 2023) and MDRN (Deng et al., AIMS 2024). "
            "Built on 3D Slicer's scripted module template and the PyTorch extension (SlicerPyTorch)."
        )



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
        self._estimateCall = None  # the background estimate the panel waits for
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
        self._populateThroughModelComboBox()
        for choice in PLANE_CHOICES:
            self.ui.planeComboBox.addItem(_(PLANE_LABELS[choice]), choice)

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.ui.modelComboBox.connect("currentIndexChanged(int)", self.onModelSelected)
        self.ui.planeComboBox.connect("currentIndexChanged(int)", self.onPlaneSelected)
        self.ui.throughModelComboBox.connect("currentIndexChanged(int)", self.onThroughModelSelected)
        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.ui.applyButton.text = _(APPLY_TEXT)
        self.ui.progressBar.setVisible(False)
        self.ui.showDifferenceButton.connect("clicked(bool)", self.onShowDifference)
        self.ui.consistencySliceList.connect("itemClicked(QListWidgetItem*)", self.onSliceItemClicked)
        self._showConsistency(None, None)

        self.initializeParameterNode()

    def cleanup(self) -> None:
        self._cancelRequested = True
        self._estimateCall = None  # a pending estimate timer then does nothing
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
        """Fill the model list from the cached model catalog (no torch import on the GUI thread)."""
        combo = self.ui.modelComboBox
        wasBlocked = combo.blockSignals(True)
        combo.clear()
        choices = self.logic.modelChoices()
        for name, label in choices:
            combo.addItem(label, name)
        if not choices:
            combo.addItem(_("No model catalog found: reinstall MedSR"), "bicubic")
        combo.enabled = bool(choices)
        combo.blockSignals(wasBlocked)

    def _populateThroughModelComboBox(self) -> None:
        """Fill the through-plane network list (Auto, then the catalog's tp-* networks; no torch import)."""
        combo = self.ui.throughModelComboBox
        wasBlocked = combo.blockSignals(True)
        combo.clear()
        for name, label in self.logic.throughPlaneChoices():
            combo.addItem(label, name)
        combo.blockSignals(wasBlocked)

    def onThroughModelSelected(self, index: int) -> None:
        if self._parameterNode and index >= 0:
            self._parameterNode.throughModel = self.ui.throughModelComboBox.itemData(index)

    def onModelSelected(self, index: int) -> None:
        if self._parameterNode and index >= 0 and self.ui.modelComboBox.enabled:
            self._parameterNode.model = self.ui.modelComboBox.itemData(index)

    def onPlaneSelected(self, index: int) -> None:
        if self._parameterNode and index >= 0:
            self._parameterNode.plane = self.ui.planeComboBox.itemData(index)

    def _selectData(self, combo, value) -> None:
        index = combo.findData(value)
        if index >= 0 and index != combo.currentIndex:
            wasBlocked = combo.blockSignals(True)
            combo.currentIndex = index
            combo.blockSignals(wasBlocked)

    def _onParameterNodeModified(self, caller=None, event=None) -> None:
        if not self._parameterNode or self._running:
            return
        parameters = self._parameterNode
        self._selectData(self.ui.modelComboBox, parameters.model)
        self._selectData(self.ui.planeComboBox, parameters.plane)
        self._selectData(self.ui.throughModelComboBox, parameters.throughModel)
        text = panel_text.panelText(self.logic, parameters)
        self.ui.modelCardLabel.text = text.modelSummary
        if self.ui.modelCardTextEdit.plainText != text.cardText:
            self.ui.modelCardTextEdit.plainText = text.cardText
        self.ui.planeRuleLabel.text = text.planeText
        self.ui.engineSettingsProblemLabel.text = text.settingsProblem
        self.ui.engineSettingsProblemLabel.setVisible(bool(text.settingsProblem))
        self._updateEstimate()
        self._checkCanApply()

    def _updateEstimate(self) -> None:
        """Start the time estimate in a background thread (it imports torch and builds the network the first
        time); a timer shows it when it is ready. A newer request replaces an older one."""
        parameters = self._parameterNode
        self._estimateSeconds = None
        self._estimateCall = None
        if parameters.inputVolume is None:
            self.ui.estimateLabel.text = _("Select an input volume.")
            return
        try:
            self._estimateCall = self.logic.estimateInBackground(
                parameters.inputVolume, parameters.model, parameters.scale, device=parameters.device,
                ensemble=parameters.ensemble, precision=parameters.precision, plane=self._resolvedPlane(),
                targetSpacingMM=parameters.targetSpacingMM, throughModel=parameters.throughModel,
                throughDiagonals=parameters.throughDiagonals,
            )
        except MedSRError as error:
            self.ui.estimateLabel.text = _("No estimate: {reason}").format(reason=error)
            return
        self.ui.estimateLabel.text = _("Estimating the network time...")
        self._pollEstimate(self._estimateCall)

    def _resolvedPlane(self) -> str:
        """"in" or "through": what the run would make of the plane choice (the panel's plan)."""
        parameters = self._parameterNode
        try:
            return self.logic.planFor(parameters.inputVolume, parameters.plane, parameters.targetSpacingMM, parameters.sliceAxis).resolved
        except MedSRError:
            return "in"

    def _pollEstimate(self, call) -> None:
        import qt

        if call is not self._estimateCall or self._parameterNode is None:
            return  # superseded by a newer request, or the scene closed
        if not call.done():
            qt.QTimer.singleShot(ESTIMATE_POLL_MS, lambda: self._pollEstimate(call))
            return
        self._checkCanApply()  # torch is loaded now: the device setting is checked too
        try:
            self._estimateSeconds = call.result()
        except MedSRError as error:
            self.ui.estimateLabel.text = _("No estimate: {reason}").format(reason=error)
            return
        self.ui.estimateLabel.text = _("Estimated network time: about {duration} (m:ss) on {device}").format(
            duration=reporting.formatDuration(self._estimateSeconds), device=self.logic.deviceName(self._parameterNode.device)
        )

    def _checkCanApply(self) -> None:
        parameters = self._parameterNode
        problem = self.logic.problemWith(parameters.inputVolume, parameters.outputVolume, parameters.model, parameters.scale,
                                         engine_settings.readValues(parameters), parameters.plane,
                                         parameters.targetSpacingMM, parameters.sliceAxis, parameters.throughModel)
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
            problem = self.logic.engineSettingsProblem(engine_settings.readValues(parameters), importTorch=True)
            if problem:  # one line in the panel, nothing runs
                self.ui.engineSettingsProblemLabel.text = problem
                self.ui.engineSettingsProblemLabel.setVisible(True)
                self.ui.statusLabel.text = _("Not run: advanced settings: {problem}").format(problem=problem)
                return
            self._setRunning(True)
            startTime = time.monotonic()
            try:
                outputVolume, report = self.logic.processWithReport(
                    inputVolume,
                    parameters.outputVolume,
                    model=parameters.model,
                    scale=parameters.scale,
                    axis=parameters.sliceAxis,
                    engine=engine_settings.readValues(parameters),  # validated (EngineOptions) before anything runs
                    plane=parameters.plane,
                    targetSpacingMM=parameters.targetSpacingMM,
                    adaptSeconds=parameters.adaptSeconds,
                    throughModel=parameters.throughModel,
                    throughDiagonals=parameters.throughDiagonals,
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
        self.ui.statusLabel.text = " ".join([_("Done in {duration}: '{name}'.").format(
            duration=reporting.formatDuration(time.monotonic() - startTime), name=outputVolume.GetName()
        ), reporting.describeRun(self.logic.lastRunInfo), *self.logic.lastNotes])
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
        call = background.BackgroundCall(function, name="MedSR super-resolution")
        while not call.wait(0.1):
            slicer.app.processEvents()
            self._refreshProgress()
        return call.result()


#
# MedSRTest
#


class MedSRTest(ScriptedLoadableModuleTest):
    """Runs in real Slicer (ctest ``py_MedSR`` or "Reload and Test"): SampleData MRHead and CTChest, x2; CTChest
    through-plane (Auto) when through-plane CT weights are shipped.

    Geometry is read from the loaded nodes at run time (SampleData records none). Needs the network
    (SampleData downloads) and torch; without torch the tests are skipped, never installing anything.
    """

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        """"Reload and Test" calls this directly: run every test, report skips instead of failing."""
        for test in (self.test_bicubic_MRHead, self.test_bicubic_CTChest, self.test_network_MRHead, self.test_network_CTChest,
                     self.test_throughPlane_CTChest):
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

    def test_throughPlane_CTChest(self):
        """CTChest's 2.5 mm slices are thick (>= 2x its pixels): Auto goes through-plane with the CT network."""
        import SampleData

        self._requireTorch()
        from MedSRLib.models import default_model

        spec = default_model("CT", plane="through")
        if not spec.has_weights(max(spec.scales)):
            self.skipTest(f"no through-plane weights for CT ({spec.name}) are shipped")
        inputVolume = SampleData.downloadSample("CTChest")
        self.delayDisplay(f"Super-resolving CTChest through-plane with {spec.name} (middle 64 x 64 of each slice)")
        selftest.throughPlaneAndVerify(self, inputVolume, size=64)
        self.delayDisplay("CTChest through-plane: grid plan, placement and slice-profile consistency verified")

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
        """Load a SampleData volume and run ``selftest.superResolveAndVerify`` (slab along the slice axis)."""
        import SampleData

        self._requireTorch()
        self.delayDisplay(f"Loading {sampleName}")
        inputVolume = SampleData.downloadSample(sampleName)
        self.delayDisplay(f"Super-resolving {sampleName} x{scale} with {model}")
        selftest.superResolveAndVerify(self, inputVolume, model, slices=slices, scale=scale)
        self.delayDisplay(f"{sampleName} {model} x{scale}: geometry, placement and consistency display verified")
