"""The panel's engine settings, derived from MedSRLib's one options type (issue 14 item 3).

Every field of :class:`MedSRLib.engine.EngineOptions` that ``medsr`` offers as a flag
(:func:`MedSRLib.engine.options.option_fields` with ``offered_only=True``) is one panel setting, stored in
the parameter node under the field's own name (``device``, ``batch_size``, ``memory_budget_mb``, ``tile``,
``tile_overlap``, ``ensemble``, ``precision``, ``threads``, ``compile``), so the CLI, the library and the
module name a setting the same way and a new field reaches the panel without editing this file. The
setting's kind follows the field's metadata:

* ``bool`` fields are check boxes;
* fields whose metadata lists ``choices`` (``precision``) are combo boxes with those choices;
  ``device`` offers :data:`DEVICE_CHOICES` (``cuda:N`` stays reachable through the Python API);
* every other field is a text box holding what the user would type after the ``medsr`` flag; empty
  means the field's default (None = automatic).

Values are converted with the field's own ``type`` (the one the CLI uses) and validated by constructing
``EngineOptions``: a bad value is a one-line :class:`MedSRLib.errors.OptionError`, shown in the panel, and
nothing runs. This module imports only ``MedSRLib.engine.options`` (numpy, no torch); constructing
``EngineOptions`` imports torch (device parsing), see :func:`problem`.
"""

from __future__ import annotations

import dataclasses
import sys
from typing import Any, Mapping, Optional

from MedSRLib.engine.options import EngineOptions, option_fields
from MedSRLib.errors import MedSRError, OptionError

#: The devices the panel's combo box offers (EngineOptions accepts these and ``cuda:N``).
DEVICE_CHOICES: tuple[str, ...] = ("auto", "cpu", "cuda", "mps")
#: Panel-only choice lists for fields whose metadata has none.
_OFFERED_CHOICES: dict[str, tuple[str, ...]] = {"device": DEVICE_CHOICES}
_WIDGET_SUFFIX = {"bool": "CheckBox", "choice": "ComboBox", "text": "LineEdit"}


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


@dataclasses.dataclass(frozen=True)
class EngineSetting:
    """One panel setting = one ``EngineOptions`` field.

    Attributes:
        field: the ``EngineOptions`` field name, also the parameter-node name.
        kind: ``"bool"``, ``"choice"`` or ``"text"``.
        label: what the panel's label says, e.g. ``"Memory budget (MB):"``.
        help: the field's help (the ``medsr`` flag's), used as the tooltip.
        flag: the ``medsr`` flag of the same option, e.g. ``"--memory-budget"``.
        choices: the combo box's choices (``kind == "choice"``).
        default: the parameter-node default: a bool, a choice, or the default as typed text ("" = None).
        convert: text -> value, the CLI's converter (``kind == "text"``).
    """

    field: str
    kind: str
    label: str
    help: str
    flag: str
    choices: tuple[str, ...]
    default: Any
    convert: Any

    @property
    def widgetName(self) -> str:
        """The widget's object name in ``MedSR.ui``, e.g. ``batchSizeLineEdit``."""
        return _camel(self.field) + _WIDGET_SUFFIX[self.kind]

    @property
    def labelName(self) -> str:
        """The label's object name in ``MedSR.ui``, e.g. ``batchSizeLabel``."""
        return _camel(self.field) + "Label"


def _setting(field: dataclasses.Field, meta: Mapping[str, Any]) -> EngineSetting:
    choices = tuple(meta.get("choices") or _OFFERED_CHOICES.get(field.name, ()))
    kind = "bool" if meta["type"] is bool else "choice" if choices else "text"
    if kind == "bool":
        default: Any = bool(field.default)
    elif kind == "choice":
        default = str(field.default)
    else:
        default = "" if field.default is None else str(field.default)
    words = field.name.replace("_mb", "").replace("_", " ")
    unit = f" ({meta['metavar']})" if meta.get("metavar") else ""
    return EngineSetting(
        field=field.name,
        kind=kind,
        label=f"{words[:1].upper()}{words[1:]}{unit}:",
        help=str(meta["help"]).replace("%%", "%"),
        flag=meta["flag"],
        choices=choices,
        default=default,
        convert=meta["type"],
    )


def _settings() -> tuple[EngineSetting, ...]:
    offered = option_fields(offered_only=True)
    return tuple(_setting(f, offered[f.name]) for f in dataclasses.fields(EngineOptions) if f.name in offered)


#: The panel's engine settings, in ``EngineOptions`` field order.
SETTINGS: tuple[EngineSetting, ...] = _settings()


def setting(field: str) -> EngineSetting:
    """The setting of ``EngineOptions`` field ``field``; KeyError if the panel does not offer it."""
    for candidate in SETTINGS:
        if candidate.field == field:
            return candidate
    raise KeyError(field)


def readValues(source: object) -> dict[str, Any]:
    """``{field: value as stored}`` of every setting, read from the parameter node ``source``."""
    return {s.field: getattr(source, s.field) for s in SETTINGS}


def _typed(s: EngineSetting, value: Any) -> Any:
    """The ``EngineOptions`` value of one stored setting (text converted as the CLI converts the flag)."""
    if s.kind != "text":
        return value
    text = str(value).strip()
    if not text:
        return None  # the field's default
    try:
        return s.convert(text)
    except (TypeError, ValueError):
        kind = {int: "a whole number", float: "a number"}.get(s.convert, "a valid value")
        raise OptionError(f"{s.label.rstrip(':')} must be {kind} or empty (automatic); got {text!r}") from None


def keywords(values: Mapping[str, Any]) -> dict[str, Any]:
    """The ``EngineOptions`` keywords of stored setting ``values`` (empty text = the field's default,
    so left out). Raises OptionError (one line) for text its field's converter refuses."""
    out = {}
    for s in SETTINGS:
        if s.field in values:
            value = _typed(s, values[s.field])
            if value is not None:
                out[s.field] = value
    return out


def engineOptions(values: Mapping[str, Any]) -> EngineOptions:
    """The validated ``EngineOptions`` of stored setting ``values`` (imports torch: device parsing).

    Raises:
        MedSRError (OptionError, DeviceError, InputSizeError): a bad value, in one line naming the setting.
    """
    return EngineOptions(**keywords(values))


def problem(values: Mapping[str, Any], *, importTorch: bool = True) -> Optional[str]:
    """Why these settings would be refused (one line), or None.

    ``importTorch=False`` (the panel's live check on the GUI thread): validate fully only when torch is
    already imported (constructing EngineOptions parses the device with torch, a few seconds the first
    time); before that only the text conversion is checked, and the run validates everything first.
    """
    try:
        typed = keywords(values)
        if importTorch or sys.modules.get("torch") is not None:
            EngineOptions(**typed)
    except MedSRError as error:
        return str(error).splitlines()[0] if str(error) else type(error).__name__
    return None
