"""The panel's choices on slicer-core's real MRML (issues 14, 18, 19, 20): what the panel shows for a real
parameter node and volume node, and what the logic runs with it.

* the model card under the model choice is MedSRLib's ``card_text`` and follows the model and the scale;
* the advanced settings are EngineOptions' fields, stored in the parameter node, validated by
  constructing EngineOptions: a bad value is one line in the panel and nothing runs;
* the precision that ran is read from the output's metadata and shown after the run;
* the plane choice: the auto rule from the volume's own spacing, the plan, the through-plane network and
  its card, and why Apply is disabled (the runs themselves: ``test_slicer_through_plane.py``).
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
    assert "-> 20 x 0.9 mm (x3.33), two orientations and two diagonals fused." in shown
    assert ("Through-plane network: tp-dridsr (Auto: MedSRLib's network for MR), run at x4" in shown
            or "No through-plane weights for MR are shipped in this MedSR (tp-dridsr): choose Direction: In-plane." in shown)
    parameters.plane = "in"
    assert "In-plane x2; the slice spacing (3 mm) is kept." in panel(medsr, parameters).planeText


def test_min_factor_ratio_and_keywords_agree_with_MedSRLib():
    from MedSRSlicerLib import plane

    from MedSRLib import geometry, throughplane
    from MedSRLib.models import default_model

    assert plane.MIN_THROUGH_PLANE_FACTOR == throughplane.MIN_FACTOR
    assert plane.AUTO_THROUGH_PLANE_RATIO == geometry.THICK_SLICE_RATIO
    for modality in ("MR", "CT"):  # Auto = the library's default through-plane network for the modality
        assert plane.throughPlaneNetworkName("auto", modality) == default_model(modality, plane="through").name
    assert plane.throughPlaneNetworkName("tp-dridsr-ct", "MR") == "tp-dridsr-ct"
    # an in-plane run gets no through-plane keywords (MedSRLib refuses them there); a through-plane run lets
    # MedSRLib pick its through-plane network for the volume's modality (model=None) unless one is chosen
    assert plane.superResolveKeywords("in", 1.5, 30, "tp-dridsr") == {"plane": "in"}
    assert plane.superResolveKeywords("through", 0.0, 0) == {"plane": "through", "model": None}
    assert plane.superResolveKeywords("through", 1.5, 30, "tp-dridsr-ct") == {
        "plane": "through", "model": "tp-dridsr-ct", "target_spacing": 1.5, "adapt_seconds": 30.0}


def test_apply_is_disabled_with_the_reason_when_a_through_plane_run_cannot_start(medsr):
    """No shipped through-plane weights for the volume's modality, or nothing to do, is one line before Apply
    (the run would refuse it); the in-plane model's own problems do not matter to a through-plane run."""
    from MedSRSlicerLib import model_catalog

    logic = medsr.MedSRLogic()
    node = volume_node(spacing=(0.9, 0.9, 3.0))  # MR values
    shipped = model_catalog.findThroughPlane("tp-dridsr").hasWeights(4)
    problem = logic.problemWith(node, None, "bicubic", 2, plane="through")
    assert (problem is None) if shipped else (
        problem == "No through-plane weights for MR are shipped in this MedSR (tp-dridsr): choose Direction: In-plane.")
    assert logic.problemWith(node, None, "mdrn", 3, plane="auto") == problem  # mdrn has no x3; not used here
    assert "nothing to do" in logic.problemWith(node, None, "bicubic", 2, plane="through", targetSpacingMM=2.8)
    assert "\n" not in logic.problemWith(node, None, "bicubic", 2, plane="through", targetSpacingMM=2.8)
    assert logic.problemWith(node, None, "bicubic", 2, plane="in", targetSpacingMM=2.8) is None
    assert "x8" in logic.problemWith(node, None, "bicubic", 2, plane="through", targetSpacingMM=0.3)  # x10 > x8
    thin = volume_node(spacing=(0.9, 0.9, 1.2), name="Thin")
    assert logic.problemWith(thin, None, "bicubic", 2, plane="auto") is None  # auto = in-plane here
    assert "Unknown through-plane network" in logic.problemWith(node, None, "bicubic", 2, plane="through",
                                                                 throughModel="tp-none")


def test_through_plane_network_choice_lists_auto_and_the_catalogs_networks_and_follows_the_modality(medsr):
    import slicer

    from MedSRLib.models import list_models

    logic = medsr.MedSRLogic()
    choices = logic.throughPlaneChoices()
    assert [value for value, _label in choices] == ["auto", *(s.name for s in list_models(through_plane=True))]
    assert {"tp-dridsr", "tp-dridsr-ct"} <= {value for value, _label in choices}
    mr = volume_node(spacing=(0.9, 0.9, 3.0), name="MR")
    ct_voxels = np.full((6, 20, 24), -1000, dtype=np.int16)
    ct_voxels[:, 5:15, 5:19] = 40
    ct = slicer.util.addVolumeFromArray(ct_voxels, ijkToRAS=np.diag([-0.9, -0.9, 3.0, 1.0]), name="CT")
    assert logic.throughPlaneNetwork(mr, "auto")[0::2] == ("tp-dridsr", "MR")
    assert logic.throughPlaneNetwork(ct, "auto")[0::2] == ("tp-dridsr-ct", "CT")
    name, network, modality = logic.throughPlaneNetwork(mr, "tp-dridsr-ct")
    assert (name, network.name, modality) == ("tp-dridsr-ct", "tp-dridsr-ct", "MR")
    parameters = logic.getParameterNode()
    assert parameters.throughModel == "auto"
    parameters.throughModel = "tp-dridsr-ct"
    assert parameters.parameterNode.GetParameter("throughModel") == "tp-dridsr-ct"


def test_card_of_a_through_plane_run_is_the_networks_card_at_its_factor_or_one_line_without_weights(medsr):
    """The summary and card under the model choice follow the run: for a through-plane run, the network's
    (``card_text`` at the network factor) when its weights are shipped, else one line saying none are."""
    from MedSRSlicerLib import model_catalog

    from MedSRLib.models.cards import card_text

    parameters = medsr.MedSRLogic().getParameterNode()
    parameters.model, parameters.scale = "mdrn", 2
    parameters.inputVolume = volume_node(spacing=(0.9, 0.9, 3.0))  # x3.33: the network runs at x4
    for choice, name in (("auto", "tp-dridsr"), ("tp-dridsr-ct", "tp-dridsr-ct")):
        parameters.throughModel = choice
        shown = panel(medsr, parameters)
        if model_catalog.findThroughPlane(name).hasWeights(4):
            assert shown.cardText == card_text(name, 4).rstrip("\n")
        else:
            assert shown.cardText == (f"No through-plane weights for {model_catalog.findThroughPlane(name).modality} "
                                      f"are shipped in this MedSR ({name}): choose Direction: In-plane.")
        assert shown.modelSummary.startswith(f"<b>{name}</b>")
    parameters.plane = "in"  # the in-plane model's card again
    assert panel(medsr, parameters).cardText == card_text("mdrn", 2).rstrip("\n")


@pytest.mark.parametrize("slice_spacing", [3.0, 1.8, 1.8 * (1 - 5e-4), 1.79, 1.2, 0.9])
def test_panels_auto_verdict_is_MedSRLibs_resolve_plane_at_and_around_the_2x_boundary(medsr, slice_spacing):
    """The panel plans from the node's grid without importing the pipeline; its Auto verdict is the one the
    run then takes (``pipeline.resolve_plane`` on the volume the logic passes), ties included."""
    from MedSRSlicerLib import nodes

    from MedSRLib.pipeline import resolve_plane

    node = volume_node(spacing=(0.9, 0.95, slice_spacing))
    assert medsr.MedSRLogic().planFor(node, "auto").resolved == resolve_plane(nodes.volumeFromNode(node), plane="auto")
