"""MedSR module and logic on slicer-core's real MRML: metadata, parameters, a real MR file end to end,
dependency handling (ask first, never install in testing mode), warnings surfaced, progress and ETA.
"""

import sys

import numpy as np
import pytest
from conftest import REPO_ROOT, shared_path
from slicer_double import medsr  # noqa: F401  (fixture)


def ijk_to_ras(node):
    import slicer
    import vtk

    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    return slicer.util.arrayFromVTKMatrix(matrix)


def small_input(name="Input"):
    import slicer

    voxels = (np.arange(4 * 20 * 24).reshape(4, 20, 24) % 97).astype(np.int16)
    return slicer.util.addVolumeFromArray(voxels, ijkToRAS=np.diag([-0.9, -0.9, 3.0, 1.0]), name=name)


# -- module metadata and parameter node --------------------------------------------------------------


def test_help_says_what_the_networks_are_valid_for_and_that_output_is_no_acquisition(medsr):
    from types import SimpleNamespace

    parent = SimpleNamespace()
    medsr.MedSR(parent)
    help_text = " ".join(parent.helpText.split())
    assert "not a substitute for an acquisition at that resolution" in help_text
    assert "Valid for" in help_text and "Not valid for" in help_text
    for network in ("IDMAN", "DRIDSR", "W2AMSN", "SRDA", "MDRN"):
        assert network in help_text and network in parent.acknowledgementText
    # the generic Slicer test requires these to be non-empty
    assert parent.categories and parent.contributors and parent.acknowledgementText
    assert parent.dependencies == []  # PyTorchUtils is imported on demand, never required to load


def test_parameter_node_defaults_and_choices_are_accepted_by_MedSRLib(medsr):
    from MedSRSlicerLib import engine_settings
    from MedSRSlicerLib import logic as logic_module

    from MedSRLib.engine import EngineOptions, resolve_device
    from MedSRLib.geometry import resolve_slice_axis
    from MedSRLib.models import get_model
    from MedSRLib.volume import Volume

    parameters = medsr.MedSRLogic().getParameterNode()
    assert (parameters.model, parameters.scale, parameters.sliceAxis, parameters.device) == ("bicubic", 2, "auto", "auto")
    assert parameters.inputVolume is None and parameters.outputVolume is None
    assert (parameters.plane, parameters.targetSpacingMM, parameters.adaptSeconds) == ("auto", 0.0, 0)
    assert parameters.throughDiagonals is True  # MedSRLib's default fusion: 4 views
    assert medsr.MedSRLogic.engineOptions(engine_settings.readValues(parameters)) == EngineOptions()  # defaults = automatic
    for scale in medsr.SCALE_CHOICES:
        assert get_model(parameters.model).check_scale(scale) == scale
    volume = Volume(np.zeros((3, 4, 5)), (1.0, 1.0, 2.0), (0.0, 0.0, 0.0), np.eye(3))
    assert [resolve_slice_axis(volume, logic_module._sliceAxisArgument(a)) for a in medsr.SLICE_AXIS_CHOICES] == [0, 0, 1, 2]
    assert str(resolve_device("auto")) and str(resolve_device("cpu")) == "cpu"
    with pytest.raises(ValueError):
        parameters.device = "tpu"


# -- end to end on a real file --------------------------------------------------------------------


def test_real_thick_slice_MR_file_end_to_end_matches_MedSRLib(medsr):
    """t1_fl2d_sag (4.8 mm sagittal slices) read by MedSRLib, put in a node, super-resolved by the logic."""
    import slicer
    from MedSRLib.geometry import ijk_to_ras_matrix
    from MedSRLib.io import read_volume
    from MedSRLib.pipeline import super_resolve

    volume = read_volume(shared_path("mr-volumes", "t1_fl2d_sag_LPS.nii.gz"))
    input_node = slicer.util.addVolumeFromArray(volume.array, ijkToRAS=ijk_to_ras_matrix(volume), name="t1")
    input_image_mtime, input_matrix = input_node.GetImageData().GetMTime(), ijk_to_ras(input_node)

    output_node = medsr.MedSRLogic().process(input_node, model="bicubic", scale=2)

    expected = super_resolve(volume, model="bicubic", scale=2)
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(output_node), expected.array)
    np.testing.assert_allclose(ijk_to_ras(output_node), ijk_to_ras_matrix(expected), atol=1e-6)
    # read back from the node, independently of MedSRLib: 4.8 mm slices kept, in-plane spacing halved,
    # same outer voxel edges (origin moved by a quarter of the old in-plane spacing)
    np.testing.assert_allclose(output_node.GetSpacing(), (4.8, 1.015625 / 2, 1.015625 / 2), atol=1e-5)
    assert output_node.GetImageData().GetDimensions() == (35, 512, 512)
    shift = np.asarray(output_node.GetOrigin()) - np.asarray(input_node.GetOrigin())
    np.testing.assert_allclose(np.abs(shift), [0.0, 1.015625 / 4, 1.015625 / 4], atol=1e-5)
    # input voxels and geometry unchanged (the node's own MTime is not: real MRML bumps it when another node
    # observes the same transform)
    assert input_node.GetImageData().GetMTime() == input_image_mtime
    np.testing.assert_array_equal(ijk_to_ras(input_node), input_matrix)
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(input_node), volume.array)
    assert {background for background, _fg, _opacity in slicer.sliceLayers().values()} == {output_node.GetID()}


# -- warnings, dependencies ---------------------------------------------------------------------------


def test_out_of_memory_reported_by_the_engine_reaches_the_caller(medsr, monkeypatch):
    import torch
    from MedSRLib import engine

    real_process = engine.runner._Runner._process
    calls = []

    def fail_first_batch(self, batch):
        calls.append(len(batch))
        if len(calls) == 1:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_process(self, batch)

    monkeypatch.setattr(engine.runner._Runner, "_process", fail_first_batch)
    reported = []
    output_node = medsr.MedSRLogic().process(small_input(), model="bicubic", scale=2, onWarning=reported.append)
    assert any("out of memory" in message for message in reported), reported
    assert calls[1] < calls[0]  # the engine retried with a smaller batch and finished
    assert output_node.GetImageData().GetDimensions() == (48, 40, 4)


def test_without_torch_process_refuses_and_installs_nothing(medsr, monkeypatch):
    import slicer
    from MedSRSlicerLib import dependencies

    monkeypatch.setattr(dependencies, "isSatisfied", lambda requirement: not requirement.startswith("torch"))
    input_node = small_input()
    nodes_before = slicer.mrmlScene.GetNumberOfNodes()
    with pytest.raises(dependencies.MissingDependencyError, match="torch>=2.1"):
        medsr.MedSRLogic().process(input_node)
    assert slicer.mrmlScene.GetNumberOfNodes() == nodes_before
    # the panel lists the models from the cached catalog before torch is installed; Apply offers the install
    assert [name for name, _label in medsr.MedSRLogic.modelChoices()][:2] == ["bicubic", "nearest"]
    assert medsr.MedSRLogic.problemWith(input_node, None, "bicubic", 2) is None  # Apply stays enabled: it offers the install


def test_testing_mode_never_installs(medsr, monkeypatch):
    import PyTorchUtils
    import slicer
    import slicer.packaging
    from MedSRSlicerLib import dependencies

    monkeypatch.setattr(dependencies, "isSatisfied", lambda requirement: False)
    with pytest.raises(dependencies.MissingDependencyError, match="testing mode"):
        dependencies.ensureDependencies()
    assert PyTorchUtils.installTorchCalls == [] and slicer.util.shim.pipInstallCalls == [] and slicer.packaging.installCalls == []
    assert not any(kind == "confirm" for kind, _ in slicer.util.shim.displayedMessages)


def test_install_asks_once_then_uses_the_pytorch_extension_for_torch(medsr, monkeypatch):
    import PyTorchUtils
    import slicer
    from MedSRSlicerLib import dependencies

    slicer.app.setTestingEnabled(False)
    monkeypatch.setattr(dependencies, "isSatisfied", lambda requirement: not requirement.startswith("torch"))
    slicer.util.shim.confirmAnswer = False
    with pytest.raises(dependencies.MissingDependencyError, match="declined"):
        dependencies.ensureDependencies()
    assert PyTorchUtils.installTorchCalls == []
    slicer.util.shim.confirmAnswer = True
    with pytest.raises(dependencies.MissingDependencyError, match="PyTorch was not installed"):
        dependencies.ensureDependencies()  # the shim's installTorch installs nothing and returns None
    assert PyTorchUtils.installTorchCalls == [
        {"askConfirmation": False, "torchVersionRequirement": dependencies.TORCH_INSTALL_VERSION, "forceComputationBackend": None}
    ]
    assert [kind for kind, _ in slicer.util.shim.displayedMessages] == ["confirm", "confirm"]
    assert slicer.util.shim.pipInstallCalls == []


def test_missing_pytorch_extension_is_explained_before_asking(medsr, monkeypatch):
    import slicer
    from MedSRSlicerLib import dependencies

    slicer.app.setTestingEnabled(False)
    monkeypatch.setattr(dependencies, "isSatisfied", lambda requirement: False)
    monkeypatch.setitem(sys.modules, "PyTorchUtils", None)  # extension not installed
    with pytest.raises(dependencies.MissingDependencyError, match="Extensions Manager"):
        dependencies.ensureDependencies()
    assert slicer.util.shim.displayedMessages == []


@pytest.mark.parametrize("slicer_has_packaging", [True, False], ids=["slicer-5.12", "slicer-5.10"])
def test_other_packages_installed_with_the_slicer_versions_pip_helper(medsr, monkeypatch, slicer_has_packaging):
    import slicer
    import slicer.packaging
    from MedSRSlicerLib import dependencies

    slicer.app.setTestingEnabled(False)
    slicer.util.shim.confirmAnswer = True
    monkeypatch.setattr(dependencies, "isSatisfied", lambda requirement: not requirement.startswith("scikit-image"))
    monkeypatch.setattr(slicer.packaging, "pip_check", lambda requirement: not str(requirement).startswith("scikit-image"))
    if not slicer_has_packaging:
        monkeypatch.setitem(sys.modules, "slicer.packaging", None)
    with pytest.raises(dependencies.MissingDependencyError, match="still missing"):  # the shim installs nothing
        dependencies.ensureDependencies()
    if slicer_has_packaging:
        assert slicer.packaging.installCalls == [["scikit-image>=0.21"]] and slicer.util.shim.pipInstallCalls == []
    else:
        assert slicer.util.shim.pipInstallCalls == [["scikit-image>=0.21"]] and slicer.packaging.installCalls == []


def test_requirements_exclude_what_slicer_ships_and_match_the_package(medsr):
    import re
    import tomllib

    from MedSRSlicerLib import dependencies

    names = {re.split(r"[<>=!~;\[ ]", r, maxsplit=1)[0].lower() for r in dependencies.readRequirements()}
    assert names and not names & dependencies.PROVIDED_BY_SLICER
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    declared = {re.split(r"[<>=!~;\[ ]", r, maxsplit=1)[0].lower() for r in pyproject["project"]["dependencies"]}
    assert names <= declared
    # every other dependency is installed, except those that never run in Slicer (test_slicer_requirements.py)
    assert declared - names - dependencies.PROVIDED_BY_SLICER == dependencies.NOT_USED_IN_SLICER


# -- what the panel shows --------------------------------------------------------------------------


def test_problemWith_explains_why_apply_is_disabled(medsr):
    from MedSRLib.models import list_models

    logic = medsr.MedSRLogic()
    input_node = small_input()
    assert "No input volume" in logic.problemWith(None, None, "bicubic", 2)
    assert "input volume" in logic.problemWith(input_node, input_node, "bicubic", 2)
    assert logic.problemWith(input_node, None, "bicubic", 2) is None
    assert "mdrn" in logic.problemWith(input_node, None, "mdrn", 3)  # MDRN has x2, x4, x8
    untrained = next(((s.name, n) for s in list_models() for n in s.scales if s.learned and not s.has_weights(n)), None)
    if untrained:
        assert "No trained weights" in logic.problemWith(input_node, None, *untrained)


def test_model_card_shows_training_data_modality_and_scale(medsr):
    """The panel's card (from the cached catalog, no torch) shows what MedSRLib's shipped card says."""
    from MedSRLib.models import get_model

    card = get_model("mdrn").card(4)
    assert card is not None, "mdrn x4 weights and card are shipped"
    text = medsr.MedSRLogic.describeModel("mdrn", 4)
    metrics = [f"{k} {v}" for k, v in card["metrics"].items() if k != "convention"]
    for expected in ("Deng", "Designed for: MR", "x2, x4, x8", f"Trained at x4 on: {card['training']['data']}", *metrics,
                     card["intended_use"]):
        assert expected in text
    assert "Not available at x3" in medsr.MedSRLogic.describeModel("mdrn", 3)
    assert "no training data" in medsr.MedSRLogic.describeModel("bicubic", 2)


def test_estimated_time_grows_with_model_cost_and_ensemble(medsr):
    logic = medsr.MedSRLogic()
    input_node = small_input()
    single = logic.estimateSeconds(input_node, "idman-small", 2, device="cpu")
    assert single > logic.estimateSeconds(input_node, "bicubic", 2, device="cpu") >= 0
    assert logic.estimateSeconds(input_node, "idman-small", 2, device="cpu", ensemble=True) == pytest.approx(8 * single)


def test_progress_eta_before_and_after_the_first_batch(medsr):
    from MedSRSlicerLib import reporting

    now = [100.0]
    tracker = reporting.ProgressTracker(initialEstimateSeconds=60.0, clock=lambda: now[0])
    now[0] = 110.0
    assert tracker.snapshot().remainingSeconds == pytest.approx(50.0)  # the estimate counts down
    tracker(0, 40)
    now[0] = 120.0
    tracker(10, 40)  # 2 s per slice observed
    now[0] = 125.0
    snapshot = tracker.snapshot()
    assert (snapshot.done, snapshot.total, snapshot.elapsedSeconds) == (10, 40, 25.0)
    assert snapshot.remainingSeconds == pytest.approx(2.0 * 30 - 5.0)
    assert reporting.describeProgress(snapshot) == "10 / 40 slices, 0:25 elapsed, about 0:55 left"
    assert reporting.formatDuration(3723) == "1:02:03" and reporting.formatDuration(None) == "unknown"
    assert reporting.ProgressTracker(clock=lambda: 0.0).snapshot().remainingSeconds is None


def test_captured_warnings_are_reported_once_even_when_the_run_fails(medsr):
    import logging
    import warnings

    from MedSRSlicerLib import reporting

    reported = []
    with pytest.raises(RuntimeError):
        with reporting.capturedWarnings(reported.append):
            message = "MedSR: out of memory on cuda:0; continuing on the CPU (slower)"
            warnings.warn(message, RuntimeWarning)
            logging.getLogger("MedSRLib.engine").warning(message)
            logging.getLogger("MedSRLib.engine").info("not a warning")
            raise RuntimeError("later failure")
    assert reported == ["MedSR: out of memory on cuda:0; continuing on the CPU (slower)"]


# -- a node deleted while the job runs (issue 19) -----------------------------------------------------


@pytest.mark.parametrize("deleted", ["output", "input"])
def test_node_deleted_during_the_run_stops_cleanly_and_writes_nothing(medsr, deleted):
    """Deleting the chosen output (or the input) while MedSRLib runs: NodeError, no node gets the result."""
    import slicer
    from MedSRSlicerLib import nodes

    input_node = small_input()
    output_node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "Chosen output")
    names_before = {slicer.mrmlScene.GetNthNodeByClass(i, "vtkMRMLScalarVolumeNode").GetName()
                    for i in range(slicer.mrmlScene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode"))}

    def runner(function):  # the job runs; meanwhile the user deletes a node
        result = function()
        slicer.mrmlScene.RemoveNode(output_node if deleted == "output" else input_node)
        return result

    with pytest.raises(nodes.NodeError, match="was deleted while MedSR ran: nothing was written"):
        medsr.MedSRLogic().process(input_node, output_node, model="bicubic", scale=2, runner=runner)
    assert output_node.GetImageData() is None  # the removed node did not receive the result
    names_after = {slicer.mrmlScene.GetNthNodeByClass(i, "vtkMRMLScalarVolumeNode").GetName()
                   for i in range(slicer.mrmlScene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode"))}
    assert names_after == names_before - {"Chosen output" if deleted == "output" else "Input"}


def test_output_or_input_outside_the_scene_is_refused_before_running(medsr):
    import slicer
    from MedSRSlicerLib import nodes

    input_node = small_input()
    orphan = slicer.vtkMRMLScalarVolumeNode()  # never added to the scene
    assert "not in the scene" in medsr.MedSRLogic.problemWith(input_node, orphan, "bicubic", 2)
    slicer.mrmlScene.RemoveNode(input_node)
    with pytest.raises(nodes.NodeError, match="not in the scene"):
        medsr.MedSRLogic().process(input_node, model="bicubic", scale=2)
