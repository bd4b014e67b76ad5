"""The panel's choices on slicer-core's real MRML (issues 14, 18, 19, 20): what the panel shows for a real
parameter node and volume node, and what the logic runs with it.

* the model card under the model choice is MedSRLib's ``card_text`` and follows the model and the scale;
* the advanced settings are EngineOptions' fields, stored in the parameter node, validated by
  constructing EngineOptions: a bad value is one line in the panel and nothing runs;
* the precision that ran is read from the output's metadata and shown after the run;
* the plane choice: the auto rule from the volume's own spacing, and through-plane keywords reach
  ``super_resolve`` only when it takes them (else in-plane with a one-line note).
"""


import numpy as np
import pytest
from slicer_double import medsr  # noqa: F401  (fixture)


def volume_node(shape=(6, 20, 24), spacing=(0.9, 0.9, 3.0), name="Input"):
    """A real scalar volume node; ``spacing`` in Slicer's (i, j, k) order, voxels (k, j, i)."""
    import slicer

    voxels = (np.arange(int(np.prod(shape))).reshape(shape) % 97).astype(np.int16)
    return slicer.util.addVolumeFromArray(voxels, ijkToRAS=np.diag([-spacing[0], -spacing[1], spacing[2], 1.0]), name=name)


def scalar_volume_nodes():
    import slicer

    return [n.GetName() for n in slicer.util.getNodesByClass("vtkMRMLScalarVolumeNode")]


def panel(medsr, parameters):
    from MedSRSlicerLib import panel_text

    return panel_text.panelText(medsr.MedSRLogic(), parameters)


# -- model card ------------------------------------------------------------------------------------


def test_card_under_the_model_choice_is_MedSRLibs_card_text_and_follows_model_and_scale(medsr):
    from MedSRLib.models.cards import card_text

    parameters = medsr.MedSRLogic().getParameterNode()
    parameters.model, parameters.scale = "mdrn", 4
    x4 = panel(medsr, parameters).cardText
    assert x4 == card_text("mdrn", 4).rstrip("\n")
    for shown in ("Licence", "Training data", "Evaluation", "vs bicubic"):  # data, gain over bicubic, licence
        assert shown in x4
    parameters.scale = 2
    assert panel(medsr, parameters).cardText == card_text("mdrn", 2).rstrip("\n") != x4
    parameters.model = "dridsr"
    assert panel(medsr, parameters).cardText == card_text("dridsr", 2).rstrip("\n")
    parameters.model = "bicubic"
    assert "interpolation, not learned" in panel(medsr, parameters).cardText
    parameters.model, parameters.scale = "mdrn", 3  # MDRN has no x3: MedSRLib's reason, one line
    reason = panel(medsr, parameters).cardText
    assert "does not support scale 3" in reason and "\n" not in reason


# -- engine settings = EngineOptions fields ------------------------------------------------------------


def test_engine_settings_are_the_offered_EngineOptions_fields_stored_in_the_parameter_node(medsr):
    from MedSRSlicerLib import engine_settings

    from MedSRLib.engine import EngineOptions, option_fields

    logic = medsr.MedSRLogic()
    parameters = logic.getParameterNode()
    assert list(engine_settings.readValues(parameters)) == list(option_fields(offered_only=True))
    assert logic.engineOptions(engine_settings.readValues(parameters)) == EngineOptions()
    typed = {"device": "cpu", "batch_size": "3", "memory_budget_mb": "64", "tile": "48", "tile_overlap": "8",
             "ensemble": True, "precision": "bf16", "threads": "auto", "compile": True}
    for field, value in typed.items():
        setattr(parameters, field, value)
    # stored in the scene's parameter node under the field's own name, read back typed as the CLI reads the flag
    assert parameters.parameterNode.GetParameter("batch_size") == "3"
    assert parameters.parameterNode.GetParameter("ensemble") == "True"
    assert logic.engineOptions(engine_settings.readValues(parameters)) == EngineOptions(
        device="cpu", batch_size=3, memory_budget_mb=64.0, tile=48, tile_overlap=8, ensemble=True, precision="bf16",
        threads="auto", compile=True)
    with pytest.raises(ValueError):
        parameters.precision = "fp8"  # a choice field offers EngineOptions' own choices only


@pytest.mark.parametrize("field, value, says", [
    ("batch_size", "three", "Batch size must be a whole number"),
    ("threads", "0", "threads must be a positive integer"),
    ("memory_budget_mb", "-5", "memory_budget_mb must be a positive number"),
    ("tile", "8", "smaller than 2 x tile_overlap"),
])
def test_bad_engine_setting_is_one_line_in_the_panel_and_nothing_runs(medsr, field, value, says):
    import slicer
    from MedSRSlicerLib import engine_settings

    from MedSRLib.errors import MedSRError

    logic = medsr.MedSRLogic()
    parameters = logic.getParameterNode()
    parameters.inputVolume = volume_node()
    before = slicer.util.arrayFromVolume(parameters.inputVolume).copy()
    setattr(parameters, field, value)
    values = engine_settings.readValues(parameters)
    shown = panel(medsr, parameters).settingsProblem
    assert says in shown and "\n" not in shown
    assert says in logic.problemWith(parameters.inputVolume, None, "bicubic", 2, values)  # Apply disabled, reason shown
    assert says in logic.engineSettingsProblem(values, importTorch=True)
    with pytest.raises(MedSRError, match=says):
        logic.process(parameters.inputVolume, model="bicubic", scale=2, engine=values)
    assert scalar_volume_nodes() == ["Input"] and logic.lastRunInfo is None  # nothing created or written
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(parameters.inputVolume), before)


def test_device_the_python_api_gives_is_validated_by_EngineOptions(medsr):
    from MedSRLib.errors import DeviceError

    logic = medsr.MedSRLogic()
    with pytest.raises(DeviceError):
        logic.process(volume_node(), model="bicubic", scale=2, engine={"device": "tpu"})
    assert scalar_volume_nodes() == ["Input"]


# -- precision that ran ------------------------------------------------------------------------------------


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_precision_that_ran_is_read_from_the_output_and_shown_after_the_run(medsr, precision):
    from MedSRSlicerLib import engine_settings, reporting

    logic = medsr.MedSRLogic()
    parameters = logic.getParameterNode()
    parameters.precision, parameters.device, parameters.threads = precision, "cpu", "1"
    output = logic.process(volume_node(shape=(3, 16, 16)), model="mdrn", scale=2,
                           engine=engine_settings.readValues(parameters), check=False)
    assert output.GetImageData().GetDimensions() == (32, 32, 3)
    assert logic.lastRunInfo["precision"] == precision and logic.lastRunInfo["device"] == "cpu"
    assert reporting.describeRun(logic.lastRunInfo) == f"mdrn x2 ran in {precision} on cpu."


# -- plane choice ---------------------------------------------------------------------------------------


def test_auto_rule_is_computed_from_the_selected_volumes_spacing(medsr):
    logic = medsr.MedSRLogic()
    thick = logic.planFor(volume_node(spacing=(0.9, 0.9, 3.0)), "auto")
    assert (thick.sliceAxis, thick.resolved, thick.thick) == (0, "through", True)
    assert thick.ratio == pytest.approx(3.0 / 0.9)
    assert "at least 2x" in thick.ruleText() and thick.ruleText().endswith("through-plane.")
    # near-isotropic by default: 6 slices x 3 mm -> 20 x 0.9 mm (MedSRLib's plan rounds the count)
    assert (thick.targetSpacing, thick.outputSlices) == (pytest.approx(0.9), 20)
    assert thick.factor == pytest.approx(20 / 6)
    at_two = logic.planFor(volume_node(spacing=(0.9, 0.9, 3.0), name="T"), "through", targetSpacingMM=1.5)
    assert (at_two.factor, at_two.outputSlices) == (pytest.approx(2.0), 12)
    thin = logic.planFor(volume_node(spacing=(0.9, 0.9, 1.5), name="Thin"), "auto")
    assert (thin.resolved, thin.thick) == ("in", False) and thin.ruleText().endswith("in-plane.")
    assert logic.planFor(volume_node(spacing=(0.9, 0.9, 1.5), name="Thin2"), "through").resolved == "through"
    assert logic.planFor(volume_node(spacing=(0.9, 0.9, 3.0), name="In"), "in").resolved == "in"
    # the thick axis is MedSRLib's slice axis, whichever array axis it is (here J, numpy axis 1)
    coronal = logic.planFor(volume_node(shape=(20, 6, 24), spacing=(0.8, 4.0, 0.8), name="Coronal"), "auto")
    assert (coronal.sliceAxis, coronal.slices, coronal.resolved) == (1, 6, "through")
    assert "along J" in coronal.ruleText()


def test_plane_choices_are_stored_and_range_checked_in_the_parameter_node(medsr):
    from MedSRSlicerLib import plane

    parameters = medsr.MedSRLogic().getParameterNode()
    assert parameters.plane == "auto"  # thick-slice inputs go through-plane by default (issue 19 item 3)
    for choice in plane.PLANE_CHOICES:
        parameters.plane = choice
        assert parameters.parameterNode.GetParameter("plane") == choice
    assert plane.PLANE_LABELS == {"auto": "Auto", "in": "In-plane", "through": "Through-plane (slice axis)"}
    with pytest.raises(ValueError):
        parameters.plane = "oblique"
    with pytest.raises(ValueError):
        parameters.targetSpacingMM = -1.0
    parameters.targetSpacingMM, parameters.adaptSeconds = 1.25, 120
    assert (parameters.targetSpacingMM, parameters.adaptSeconds) == (1.25, 120)


def test_panel_shows_the_rule_and_the_plan_for_the_selected_volume(medsr):
    parameters = medsr.MedSRLogic().getParameterNode()
    assert panel(medsr, parameters).planeText == ""  # no input, nothing to say
    parameters.inputVolume = volume_node(spacing=(0.9, 0.9, 3.0))
    shown = panel(medsr, parameters).planeText
    assert "Auto is through-plane when the slice spacing is at least 2x the in-plane spacing: through-plane." in shown
    assert "Through-plane networks: tp-" in shown
    parameters.plane = "in"
    assert "In-plane x2; the slice spacing (3 mm) is kept." in panel(medsr, parameters).planeText


def test_min_factor_and_keywords_agree_with_MedSRLib():
    from MedSRSlicerLib import plane

    from MedSRLib import throughplane

    assert plane.MIN_THROUGH_PLANE_FACTOR == throughplane.MIN_FACTOR
    # an in-plane run gets no through-plane keywords (MedSRLib refuses them there); a through-plane run lets
    # MedSRLib pick its through-plane network for the volume's modality (model=None)
    assert plane.superResolveKeywords("in", 1.5, 30) == {"plane": "in"}
    assert plane.superResolveKeywords("through", 0.0, 0) == {"plane": "through", "model": None}
    assert plane.superResolveKeywords("through", 1.5, 30) == {
        "plane": "through", "model": None, "target_spacing": 1.5, "adapt_seconds": 30.0}

    def takes_them(volume, *, plane="auto", target_spacing=None, adapt_seconds=None, **engine_keywords): ...

    def catch_all_only(volume, **engine_keywords): ...

    assert plane.libraryRunsThroughPlane(takes_them) and not plane.libraryRunsThroughPlane(catch_all_only)


def test_through_plane_with_the_installed_library_runs_in_plane_with_a_one_line_note(medsr):
    from MedSRSlicerLib import plane

    logic = medsr.MedSRLogic()
    if plane.libraryRunsThroughPlane():
        pytest.skip("the installed MedSRLib runs through-plane: see the keyword test below")
    output = logic.process(volume_node(), model="bicubic", scale=2, plane="auto", check=False)
    assert output.GetImageData().GetDimensions() == (48, 40, 6)  # in-plane x2, slices kept
    assert logic.lastNotes == [plane.NEEDS_NEWER_LIBRARY] and "\n" not in plane.NEEDS_NEWER_LIBRARY
    logic.process(volume_node(spacing=(0.9, 0.9, 1.2), name="Thin"), model="bicubic", scale=2, plane="auto", check=False)
    assert logic.lastNotes == []  # auto chose in-plane: nothing to say


def test_through_plane_choices_reach_a_super_resolve_that_takes_them(medsr, monkeypatch):
    """When MedSRLib's super_resolve names plane/target_spacing/adapt_seconds, the panel's values reach it, with
    the same progress and cancel callbacks, and its through-plane result is written on MedSRLib's grid plan.
    (A stand-in for the coming library function: it records the keywords and returns a volume on the
    through-plane grid plan, voxels repeated along the slice axis.)"""
    import slicer

    import MedSRLib.pipeline as pipeline
    from MedSRLib.geometry import ijk_to_ras_matrix, plan_output_grid
    from MedSRSlicerLib import logic as logic_module

    received = {}

    def super_resolve(volume, *, plane="auto", target_spacing=None, adapt_seconds=None, progress=None, cancel=None,
                      **keywords):
        received.update(plane=plane, target_spacing=target_spacing, adapt_seconds=adapt_seconds, cancel=cancel,
                        model=keywords["model"])
        plan = plan_output_grid(volume, [2.0, 1.0, 1.0])
        progress(1, 2), progress(2, 2)  # both orientations
        info = {"model": "tp-dridsr", "precision": "fp32", "device": "cpu", "grid": plan.to_json()}
        return plan.to_volume(np.repeat(volume.array, 2, axis=0), metadata={"medsr": info})

    monkeypatch.setattr(pipeline, "super_resolve", super_resolve)
    logic = medsr.MedSRLogic()
    progress, cancel, warned = [], (lambda: False), []
    input_node = volume_node()
    output = logic.process(input_node, model="bicubic", scale=2, plane="through", targetSpacingMM=1.5,
                           adaptSeconds=30, progress=lambda done, total: progress.append((done, total)), cancel=cancel,
                           onWarning=warned.append)
    assert received == {"plane": "through", "target_spacing": 1.5, "adapt_seconds": 30.0, "cancel": cancel, "model": None}
    assert progress == [(1, 2), (2, 2)]
    assert output.GetName() == "Input_tp-dridsr_x2" and output.GetImageData().GetDimensions() == (24, 20, 12)
    expected = ijk_to_ras_matrix(plan_output_grid(medsr_grid(input_node), [2.0, 1.0, 1.0]).to_volume(np.zeros((12, 20, 24))))
    np.testing.assert_allclose(slicer.util.arrayFromVTKMatrix(ijk_matrix(output)), expected, atol=1e-9)
    assert logic.lastRunInfo["precision"] == "fp32" and logic.lastConsistency is None
    # the in-plane check is not applied to it: a note in the status line, not a warning dialog
    assert logic.lastNotes == [logic_module.CHECK_IN_PLANE_ONLY] and warned == []


def test_auto_on_thin_slices_passes_an_in_plane_run_without_through_plane_keywords(medsr, monkeypatch):
    import MedSRLib.pipeline as pipeline

    in_plane, received = pipeline.super_resolve, {}

    def super_resolve(volume, *, plane="auto", target_spacing=None, adapt_seconds=None, **keywords):
        received.update(plane=plane, target_spacing=target_spacing, adapt_seconds=adapt_seconds, model=keywords["model"].name)
        return in_plane(volume, **keywords)

    monkeypatch.setattr(pipeline, "super_resolve", super_resolve)
    logic = medsr.MedSRLogic()
    output = logic.process(volume_node(spacing=(0.9, 0.9, 1.2)), model="bicubic", scale=2, plane="auto",
                           targetSpacingMM=0.5, adaptSeconds=30)
    assert received == {"plane": "in", "target_spacing": None, "adapt_seconds": None, "model": "bicubic"}
    assert output.GetImageData().GetDimensions() == (48, 40, 6) and logic.lastConsistency is not None


def medsr_grid(node):
    from MedSRSlicerLib import nodes

    return nodes.gridFromNode(node)


def ijk_matrix(node):
    import vtk

    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    return matrix


def test_estimate_gets_the_plane_keywords_its_library_function_names():
    from MedSRSlicerLib import plane

    from MedSRLib.pipeline import estimate_seconds

    keywords = plane.superResolveKeywords("through", 1.5, 30)

    def newer(shape, spacing=None, *, model, scale, plane="auto", target_spacing=None, **rest): ...

    assert plane.keywordsTakenBy(newer, keywords, exclude=("model",)) == {"plane": "through", "target_spacing": 1.5}
    assert plane.keywordsTakenBy(estimate_seconds, keywords, exclude=("model",)) == {}  # today's estimate: in-plane only
    assert plane.libraryEstimatesThroughPlane(newer) and not plane.libraryEstimatesThroughPlane(estimate_seconds)


def test_apply_is_disabled_with_the_reason_when_a_through_plane_run_cannot_start(medsr, monkeypatch):
    """With a MedSRLib that runs through-plane: no shipped through-plane weights, or nothing to do, is one line
    before Apply (the run would refuse it); with today's MedSRLib the choice runs in-plane, so no problem."""
    import MedSRLib.pipeline as pipeline
    from MedSRSlicerLib import model_catalog

    logic = medsr.MedSRLogic()
    node = volume_node(spacing=(0.9, 0.9, 3.0))
    if not logic.libraryRunsThroughPlane():
        assert logic.problemWith(node, None, "bicubic", 2, plane="through") is None
        in_plane = pipeline.super_resolve
        monkeypatch.setattr(pipeline, "super_resolve", lambda volume, *, plane="auto", target_spacing=None,
                            adapt_seconds=None, **keywords: in_plane(volume, **keywords))
    shipped = any(n.hasWeights(max(n.scales)) for n in model_catalog.throughPlaneModels())
    problem = logic.problemWith(node, None, "bicubic", 2, plane="through")
    assert (problem is None) if shipped else ("No through-plane weights" in problem)
    assert "nothing to do" in logic.problemWith(node, None, "bicubic", 2, plane="through", targetSpacingMM=2.8)
    assert logic.problemWith(node, None, "bicubic", 2, plane="in", targetSpacingMM=2.8) is None
    thin = volume_node(spacing=(0.9, 0.9, 1.2), name="Thin")
    assert logic.problemWith(thin, None, "bicubic", 2, plane="auto") is None  # auto = in-plane here
