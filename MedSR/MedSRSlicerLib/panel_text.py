"""What the panel's labels say for the current parameters, computed without Qt (so the tests can check it
on a real parameter node): the model summary and card, the slice-direction rule and plan, and why the
engine settings would be refused. ``MedSRWidget`` only copies these strings into its widgets.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional, Protocol

from MedSRLib.errors import MedSRError

from . import engine_settings
from . import plane as planes


class PanelLogic(Protocol):
    """The part of ``MedSRLogic`` the panel text needs (all torch-free)."""

    def describeModel(self, modelName: str, scale: int) -> str: ...
    def modelCardText(self, modelName: str, scale: int) -> str: ...
    def throughPlaneCardText(self, networkName: str, factor: int) -> str: ...
    def throughPlaneNetwork(self, inputVolume: Any, choice: str = ...) -> tuple: ...
    def planFor(self, inputVolume: Any, plane: str = ..., targetSpacingMM: float = ..., axis: Any = ...) -> planes.PlanePlan: ...


@dataclasses.dataclass(frozen=True)
class PanelText:
    """The strings the panel shows (each "" when there is nothing to say).

    modelSummary: the summary (HTML) of the model that will run: the in-plane model, or for a run that
        resolves to through-plane the through-plane network.
    cardText: that model's card (plain text, ``MedSRLib.models.cards.card_text``): at the chosen scale, or
        at the through-plane network's factor; one line when none is shipped.
    planeText: the auto rule applied to the input's spacing and what the run will do (plain text).
    settingsProblem: why the advanced (engine) settings would be refused, one line.
    """

    modelSummary: str
    cardText: str
    planeText: str
    settingsProblem: str


def throughPlaneRun(logic: PanelLogic, parameters: Any) -> Optional[tuple]:
    """``(plan, network name, catalog model or None, modality)`` when the parameters make a through-plane run
    of ``parameters.inputVolume``; None for an in-plane run, no input, or a volume that cannot be planned."""
    if parameters.inputVolume is None:
        return None
    try:
        plan = logic.planFor(parameters.inputVolume, parameters.plane, parameters.targetSpacingMM, parameters.sliceAxis)
        if plan.resolved != "through":
            return None
        return (plan, *logic.throughPlaneNetwork(parameters.inputVolume, parameters.throughModel))
    except MedSRError:
        return None


def planeText(logic: PanelLogic, parameters: Any) -> str:
    """The rule and the plan for ``parameters.inputVolume`` ("" without an input; one line when it cannot be planned)."""
    if parameters.inputVolume is None:
        return ""
    try:
        plan = logic.planFor(parameters.inputVolume, parameters.plane, parameters.targetSpacingMM, parameters.sliceAxis)
    except MedSRError as error:
        return f"No plan: {error}"
    lines = [plan.ruleText(), plan.planText(parameters.scale, diagonals=parameters.throughDiagonals)]
    run = throughPlaneRun(logic, parameters)
    if run is not None:
        _plan, name, network, modality = run
        lines.append(throughPlaneNetworkText(plan, name, network, modality, parameters.throughModel))
    return "\n".join(lines)


def throughPlaneNetworkText(plan: planes.PlanePlan, name: str, network: Any, modality: str, choice: str) -> str:
    """Which through-plane network runs, at which factor, whether its weights are shipped, one line."""
    how = (f"Auto: MedSRLib's network for {modality}" if choice in (None, "", planes.AUTO_NETWORK) else "chosen")
    if network is None:
        return f"Through-plane network {name} ({how}) is not in this MedSR."
    if not network.hasWeights(plan.networkFactor):
        return planes.noWeightsMessage(network, modality)
    return (f"Through-plane network: {name} ({how}), run at x{plan.networkFactor}, weights shipped; "
            "the in-plane model and scale are not used.")


def panelText(logic: PanelLogic, parameters: Any, settingsProblem: Optional[str] = None) -> PanelText:
    """Every string of :class:`PanelText` for the parameter node ``parameters``.

    ``settingsProblem``: a problem already known (e.g. from a full validation); else the live check
    (``engine_settings.problem`` without importing torch).
    """
    problem = settingsProblem or engine_settings.problem(engine_settings.readValues(parameters), importTorch=False)
    run = throughPlaneRun(logic, parameters)
    if run is None:
        summary = logic.describeModel(parameters.model, parameters.scale)
        card = logic.modelCardText(parameters.model, parameters.scale)
    else:
        plan, name, _network, _modality = run
        summary = logic.describeModel(name, plan.networkFactor)
        card = logic.throughPlaneCardText(name, plan.networkFactor)
    return PanelText(
        modelSummary=summary,
        cardText=card,
        planeText=planeText(logic, parameters),
        settingsProblem=problem or "",
    )
