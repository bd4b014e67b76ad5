"""MedSR module and logic on the slicer double: metadata, parameters, a real MR file end to end,
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
    from MedSRLib.engine import resolve_device
    from MedSRLib.geometry import resolve_slice_axis
    from MedSRLib.models import get_model
    from MedSRLib.volume import Volume

    parameters = medsr.MedSRLogic().getParameterNode()
    assert (parameters.model, parameters.scale, parameters.sliceAxis, parameters.device) == ("bicubic", 2, "auto", "auto")
    assert parameters.inputVolume is None and parameters.outputVolume is None
    assert parameters.selfEnsemble is False and parameters.memoryBudgetMB == 0
    for scale in medsr.SCALE_CHOICES:
        assert get_model(parameters.model).check_scale(scale) == scale
    volume = Volume(np.zeros((3, 4, 5)), (1.0, 1.0, 2.0), (0.0, 0.0, 0.0), np.eye(3))
    assert [resolve_slice_axis(volume, medsr._sliceAxisArgument(a)) for a in medsr.SLICE_AXIS_CHOICES] == [0, 0, 1, 2]
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
    input_mtime = input_node.GetMTime()

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
    assert input_node.GetMTime() == input_mtime
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(input_node), volume.array)
    assert slicer.util.sliceViewerLayersCalls[-1]["background"] is output_node


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
    assert medsr.MedSRLogic.modelChoices() == []  # the panel shows how to install instead of models
    assert medsr.MedSRLogic.problemWith(input_node, None, "bicubic", 2) is None  # Apply stays enabled: it offers the install


def test_testing_mode_never_installs(medsr, monkeypatch):
    import PyTorchUtils
    import slicer
    import slicer.packaging
    from MedSRSlicerLib import dependencies

    monkeypatch.setattr(dependencies, "isSatisfied", lambda requirement: False)
    with pytest.raises(dependencies.MissingDependencyError, match="testing mode"):
        dependencies.ensureDependencies()
    assert PyTorchUtils.installTorchCalls == [] and slicer.util.pipInstallCalls == [] and slicer.packaging.installCalls == []
    assert not any(kind == "confirm" for kind, _ in slicer.util.displayedMessages)


def test_install_asks_once_then_uses_the_pytorch_extension_for_torch(medsr, monkeypatch):
    import PyTorchUtils
    import slicer
    from MedSRSlicerLib import dependencies

    slicer.app.setTestingEnabled(False)
    monkeypatch.setattr(dependencies, "isSatisfied", lambda requirement: not requirement.startswith("torch"))
    slicer.util.confirmAnswer = False
    with pytest.raises(dependencies.MissingDependencyError, match="declined"):
        dependencies.ensureDependencies()
    assert PyTorchUtils.installTorchCalls == []
    slicer.util.confirmAnswer = True
    with pytest.raises(dependencies.MissingDependencyError, match="PyTorch was not installed"):
        dependencies.ensureDependencies()  # the double's installTorch installs nothing and returns None
    assert PyTorchUtils.installTorchCalls == [
        {"askConfirmation": False, "torchVersionRequirement": ">=2.1", "forceComputationBackend": None}
    ]
    assert [kind for kind, _ in slicer.util.displayedMessages] == ["confirm", "confirm"]
    assert slicer.util.pipInstallCalls == []


def test_missing_pytorch_extension_is_explained_before_asking(medsr, monkeypatch):
    import slicer
    from MedSRSlicerLib import dependencies

    slicer.app.setTestingEnabled(False)
    monkeypatch.setattr(dependencies, "isSatisfied", lambda requirement: False)
    monkeypatch.setitem(sys.modules, "PyTorchUtils", None)  # extension not installed
    with pytest.raises(dependencies.MissingDependencyError, match="Extensions Manager"):
        dependencies.ensureDependencies()
    assert slicer.util.displayedMessages == []


@pytest.mark.parametrize("slicer_has_packaging", [True, False], ids=["slicer-5.12", "slicer-5.10"])
def test_other_packages_installed_with_the_slicer_versions_pip_helper(medsr, monkeypatch, slicer_has_packaging):
    import slicer
    import slicer.packaging
    from MedSRSlicerLib import dependencies

    slicer.app.setTestingEnabled(False)
    slicer.util.confirmAnswer = True
    monkeypatch.setattr(dependencies, "isSatisfied", lambda requirement: not requirement.startswith("tqdm"))
    monkeypatch.setattr(slicer.packaging, "pip_check", lambda requirement: not str(requirement).startswith("tqdm"))
    if not slicer_has_packaging:
        monkeypatch.setitem(sys.modules, "slicer.packaging", None)
    with pytest.raises(dependencies.MissingDependencyError, match="still missing"):  # the double installs nothing
        dependencies.ensureDependencies()
    if slicer_has_packaging:
        assert slicer.packaging.installCalls == [["tqdm>=4.60"]] and slicer.util.pipInstallCalls == []
    else:
        assert slicer.util.pipInstallCalls == [["tqdm>=4.60"]] and slicer.packaging.installCalls == []


def test_requirements_exclude_what_slicer_ships_and_match_the_package(medsr):
    import re
    import tomllib

    from MedSRSlicerLib import dependencies

    names = {re.split(r"[<>=!~;\[ ]", r, maxsplit=1)[0].lower() for r in dependencies.readRequirements()}
    assert names and not names & dependencies.PROVIDED_BY_SLICER
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    declared = {re.split(r"[<>=!~;\[ ]", r, maxsplit=1)[0].lower() for r in pyproject["project"]["dependencies"]}
    assert names <= declared
    assert declared - names - dependencies.PROVIDED_BY_SLICER == set()  # every other dependency is installed


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


def test_model_card_shows_training_data_modality_and_scale(medsr, monkeypatch):
    from MedSRLib.models.base import ModelSpec

    card = {"name": "mdrn", "scale": 4, "modality": "MR", "training": {"data": "Vestibular-Schwannoma T1, 200 slices"},
            "metrics": {"convention": "PSNR on [0,1]", "psnr": 31.2}, "intended_use": "research only"}
    monkeypatch.setattr(ModelSpec, "card", lambda self, scale: card)
    text = medsr.MedSRLogic.describeModel("mdrn", 4)
    for expected in ("Deng", "Designed for: MR", "x2, x4, x8", "Trained at x4 on: Vestibular-Schwannoma T1", "psnr 31.2", "research only"):
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
