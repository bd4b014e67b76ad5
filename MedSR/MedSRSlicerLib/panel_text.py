"""What the panel's labels say for the current parameters, computed without Qt (so the tests can check it
on a real parameter node): the model summary and card, the slice-direction rule and plan, and why the
engine settings would be refused. ``MedSRWidget`` only copies these strings into its widgets.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional, Protocol

from MedSRLib.errors import MedSRError

from . import engine_settings, model_catalog
from . import plane as planes


class PanelLogic(Protocol):
    """The part of ``MedSRLogic`` the panel text needs (all torch-free)."""

    def describeModel(self, modelName: str, scale: int) -> str: ...
    def modelCardText(self, modelName: str, scale: int) -> str: ...
    def planFor(self, inputVolume: Any, plane: str = ..., targetSpacingMM: float = ..., axis: Any = ...) -> planes.PlanePlan: ...
    def libraryRunsThroughPlane(self) -> bool: ...


@dataclasses.dataclass(frozen=True)
class PanelText:
    """The strings the panel shows (each "" when there is nothing to say).

    modelSummary: the model's one-paragraph summary (HTML) under the model choice.
    cardText: the model card at the chosen scale (plain text, ``MedSRLib.models.cards.card_text``).
    planeText: the auto rule applied to the input's spacing and what the run will do (plain text).
    settingsProblem: why the advanced (engine) settings would be refused, one line.
    """

    modelSummary: str
    cardText: str
    planeText: str
    settingsProblem: str


def planeText(logic: PanelLogic, parameters: Any) -> str:
    """The rule and the plan for ``parameters.inputVolume`` ("" without an input; one line when it cannot be planned)."""
    if parameters.inputVolume is None:
        return ""
    try:
        plan = logic.planFor(parameters.inputVolume, parameters.plane, parameters.targetSpacingMM, parameters.sliceAxis)
    except MedSRError as error:
        return f"No plan: {error}"
    lines = [plan.ruleText(), plan.planText(parameters.scale, logic.libraryRunsThroughPlane())]
    if plan.resolved == "through":
        lines.append(throughPlaneNetworksText())
    return "\n".join(lines)


def throughPlaneNetworksText() -> str:
    """The through-plane networks of the cached catalog and whether their weights are shipped, one line."""
    networks = model_catalog.throughPlaneModels()
    if not networks:
        return "No through-plane networks in this MedSR."
    described = [f"{m.name} ({m.modality}, {'weights shipped' if m.hasWeights(max(m.scales)) else 'no weights shipped yet'})"
                 for m in networks]
    return "Through-plane networks: " + ", ".join(described) + "."


def panelText(logic: PanelLogic, parameters: Any, settingsProblem: Optional[str] = None) -> PanelText:
    """Every string of :class:`PanelText` for the parameter node ``parameters``.

    ``settingsProblem``: a problem already known (e.g. from a full validation); else the live check
    (``engine_settings.problem`` without importing torch).
    """
    problem = settingsProblem or engine_settings.problem(engine_settings.readValues(parameters), importTorch=False)
    return PanelText(
        modelSummary=logic.describeModel(parameters.model, parameters.scale),
        cardText=logic.modelCardText(parameters.model, parameters.scale),
        planeText=planeText(logic, parameters),
        settingsProblem=problem or "",
    )
