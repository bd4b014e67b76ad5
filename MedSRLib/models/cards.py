"""Model cards: the versioned card format (schema as data), its validation, and the card as text.

Every shipped weights file ``MedSRLib/weights/<name>_x<scale>.safetensors`` has a JSON card of the same
stem. Card version 2 (:data:`CARD_SCHEMA`) says what a reader needs to decide whether to use the
weights on their image: the paper and reference; the licence of the weights and of every training
dataset with its source; intended and out-of-scope use; the input specification (modality, units, the
intensity mapping applied in training and at inference, the spacing seen in training, the plane); the
training data (which images, how many, 8-bit or HU, split); the training budget beside the paper's
schedule; evaluations with their metric convention (held-out split, real volumes where measured);
limitations and known failure modes; the file's sha256. ``task`` (``in-plane`` or ``through-plane``)
and ``factors`` (every factor one file serves along its axis) make the same format fit a through-plane
network serving several factors.

This module is deliberately free of torch so that ``medsr models`` answers at once: the registry's
parameter and MAC counts come from a cached table (:data:`TABLE_FILE`) written by
``python -m MedSRLib.models.cards table`` from the registry (which builds the networks; a test checks
that the table matches). :func:`card_text` is what ``medsr models --card`` prints and what the Slicer
module shows under the model choice.
"""

from __future__ import annotations

import json
import re
import sys
import textwrap
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from ..errors import ModelNotFoundError, ScaleError, WeightsError

#: Version of the card schema below. Cards without ``card_version`` are version 1 (before issue 18).
CARD_VERSION = 2
#: Where the shipped weights and their cards live (the same folder as ``models.base.WEIGHTS_DIR``).
WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"
#: Cached registry table (parameters and MACs per model and scale) read by ``medsr models``.
TABLE_FILE = WEIGHTS_DIR / "model_table.json"
#: The command that regenerates :data:`TABLE_FILE` (builds every registered network).
TABLE_COMMAND = "python -m MedSRLib.models.cards table"
#: Tasks a card can describe: slices super-resolved within their plane, or along the slice axis.
TASKS = ("in-plane", "through-plane")
#: |gain_db - (psnr - bicubic_psnr)| allowed: scores copied at two decimals, gain from unrounded means.
GAIN_TOLERANCE_DB = 0.011
#: Width of :func:`card_text` lines.
TEXT_WIDTH = 100

_STR = {"type": "string", "minLength": 1}
_STR_LIST = {"type": "array", "minItems": 1, "items": _STR}
_NUM_OR_NULL = {"type": ["number", "null"]}
_INT_OR_NULL = {"type": ["integer", "null"], "minimum": 0}
_RANGE = {"type": ["array", "null"], "minItems": 2, "maxItems": 2, "items": {"type": "number", "minimum": 0}}
_SCORES = {
    "convention": _STR,
    "psnr": {"type": "number"},
    "ssim": {"type": "number"},
    "bicubic_psnr": {"type": "number"},
    "bicubic_ssim": {"type": "number"},
}

#: Card version 2 as data: a JSON-Schema subset (type, required, properties, additionalProperties,
#: items, enum, const, minimum, minLength, minItems, maxItems, pattern) checked by :func:`validate_card`.
CARD_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": [
        "card_version", "format_version", "name", "scale", "task", "factors", "network", "config", "paper",
        "reference", "modality", "options", "n_parameters", "dtype", "weights_file", "sha256", "created",
        "licence", "intended_use", "out_of_scope_use", "input", "training_data", "training", "metrics",
        "evaluation", "limitations", "failure_modes",
    ],
    "properties": {
        "card_version": {"const": CARD_VERSION},
        "format_version": {"type": "integer", "minimum": 1},  # the weights layout (models.weights.FORMAT_VERSION)
        "name": _STR,
        "scale": {"type": "integer", "minimum": 2},  # the factor in the file name <name>_x<scale>
        "task": {"enum": list(TASKS)},
        "factors": {"type": "array", "minItems": 1, "items": {"type": "integer", "minimum": 2}},
        "network": _STR,
        "config": _STR,
        "paper": _STR,
        "reference": {
            "type": "object",
            "required": ["citation", "doi"],
            "properties": {"citation": _STR, "doi": {"type": ["string", "null"]}},
        },
        "modality": {"enum": ["CT", "MR", "any"]},
        "options": {"type": "object"},
        "n_parameters": {"type": "integer", "minimum": 1},
        "dtype": _STR_LIST,
        "weights_file": {"type": "string", "pattern": r"^[a-z0-9-]+(_x[0-9]+)?\.safetensors$"},
        "sha256": {"type": "string", "pattern": r"^[0-9a-f]{64}$"},
        "created": _STR,
        "licence": {
            "type": "object",
            "required": ["weights", "training_data"],
            "properties": {
                "weights": {"type": "object", "required": ["licence", "note"], "properties": {"licence": _STR, "note": _STR}},
                "training_data": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "required": ["dataset", "licence", "source"],
                        "properties": {"dataset": _STR, "licence": _STR, "source": _STR, "note": _STR},
                    },
                },
            },
        },
        "intended_use": _STR,
        "out_of_scope_use": _STR_LIST,
        "input": {
            "type": "object",
            "required": ["modality", "units", "intensity_mapping", "spacing_mm", "plane"],
            "properties": {
                "modality": {"enum": ["CT", "MR", "any"]},
                "units": _STR,
                "intensity_mapping": {
                    "type": "object",
                    "required": ["inference", "training"],
                    "properties": {"inference": _STR, "training": _STR},
                },
                "spacing_mm": {
                    "type": "object",
                    "required": ["in_plane", "through_plane", "note"],
                    "properties": {"in_plane": _RANGE, "through_plane": _RANGE, "note": _STR},
                },
                "plane": _STR,
                "min_lr_side_px": {"type": "integer", "minimum": 1},
            },
        },
        "training_data": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["dataset", "images", "values", "split", "n_train", "n_val", "n_test"],
                "properties": {
                    "dataset": _STR,
                    "images": _STR,
                    "values": _STR,
                    "split": _STR,
                    "n_train": {"type": "integer", "minimum": 1},
                    "n_val": _INT_OR_NULL,
                    "n_test": _INT_OR_NULL,
                },
            },
        },
        "training": {
            "type": "object",
            "required": ["data", "config", "iterations", "planned_iterations", "wall_time_s", "hardware", "paper_schedule"],
            "properties": {
                "data": _STR,
                "config": _STR,
                "iterations": {"type": "integer", "minimum": 1},
                "planned_iterations": {"type": "integer", "minimum": 1},
                "wall_time_s": {"type": "number", "minimum": 0},
                "hardware": _STR,
                "paper_schedule": {
                    "type": "object",
                    "required": ["config_file", "description", "iterations", "batch", "hr_patch", "fraction_of_paper_pixels"],
                    "properties": {
                        "config_file": _STR,
                        "description": _STR,
                        "iterations": {"type": "integer", "minimum": 1},
                        "batch": {"type": "integer", "minimum": 1},
                        "hr_patch": {"type": "integer", "minimum": 1},
                        "fraction_of_paper_pixels": {"type": "number", "minimum": 0},
                        "note": _STR,
                    },
                },
            },
        },
        "metrics": {  # the validation scores written at export (kept as in card version 1)
            "type": "object",
            "required": [*_SCORES, "split", "n_images"],
            "properties": {**_SCORES, "split": _STR, "n_images": {"type": "integer", "minimum": 1}},
        },
        "evaluation": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": [*_SCORES, "data", "split", "n_images", "scale", "gain_db", "source"],
                "properties": {
                    **_SCORES,
                    "data": _STR,
                    "split": _STR,
                    "n_images": {"type": "integer", "minimum": 1},
                    "scale": {"type": "integer", "minimum": 2},
                    "gain_db": {"type": "number"},
                    "ms_ssim": _NUM_OR_NULL,
                    "bicubic_ms_ssim": _NUM_OR_NULL,
                    "source": _STR,
                    "command": _STR,
                    "note": _STR,
                },
            },
        },
        "limitations": _STR_LIST,
        "failure_modes": _STR_LIST,
    },
}

_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "object": (dict,),
    "array": (list,),
    "null": (type(None),),
}


def _type_ok(value: Any, name: str) -> bool:
    if isinstance(value, bool) and name in ("integer", "number"):
        return False
    return isinstance(value, _JSON_TYPES[name])


def _check(value: Any, schema: Mapping[str, Any], where: str, errors: list[str]) -> None:
    """Append to ``errors`` every way ``value`` breaks ``schema`` (the subset of :data:`CARD_SCHEMA`)."""
    if "const" in schema and value != schema["const"]:
        errors.append(f"{where}: must be {schema['const']!r}, got {value!r}")
        return
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{where}: must be one of {schema['enum']}, got {value!r}")
        return
    if "type" in schema:
        names = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        if not any(_type_ok(value, n) for n in names):
            errors.append(f"{where}: must be {' or '.join(names)}, got {type(value).__name__}")
            return
    if value is None:
        return
    if isinstance(value, str):
        if len(value.strip()) < schema.get("minLength", 0):
            errors.append(f"{where}: must not be empty")
        if "pattern" in schema and not re.search(schema["pattern"], value):
            errors.append(f"{where}: {value!r} does not match {schema['pattern']}")
    if isinstance(value, (int, float)) and not isinstance(value, bool) and "minimum" in schema and value < schema["minimum"]:
        errors.append(f"{where}: must be >= {schema['minimum']}, got {value}")
    if isinstance(value, list):
        if len(value) < schema.get("minItems", 0):
            errors.append(f"{where}: needs at least {schema['minItems']} item(s)")
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            errors.append(f"{where}: at most {schema['maxItems']} item(s)")
        for i, item in enumerate(value):
            _check(item, schema.get("items", {}), f"{where}[{i}]", errors)
    if isinstance(value, dict):
        for key in schema.get("required", ()):
            if key not in value:
                errors.append(f"{where}: missing '{key}'")
        for key, sub in schema.get("properties", {}).items():
            if key in value:
                _check(value[key], sub, f"{where}.{key}" if where else key, errors)


def weights_file_name(name: str, scale: int, *, multi_scale: bool = False) -> str:
    """The shipped weights file of model ``name`` at ``scale``: ``<name>_x<scale>.safetensors``, or for a
    multi-factor through-plane network (one file for every factor) ``<name>.safetensors``."""
    return f"{name}.safetensors" if multi_scale else f"{name}_x{int(scale)}.safetensors"


def validate_card(card: Mapping[str, Any]) -> list[str]:
    """Every problem of ``card`` against :data:`CARD_SCHEMA` and the rules between fields; [] when valid.

    Rules beyond the schema: ``scale`` is one of ``factors``; an in-plane card serves exactly its
    scale and its ``weights_file`` is ``<name>_x<scale>.safetensors``; a through-plane card (one module
    for every factor) has ``scale`` = its largest factor and ``weights_file`` ``<name>.safetensors``;
    ``input.modality`` equals ``modality``; every evaluation's ``gain_db`` is its PSNR minus bicubic's
    (to :data:`GAIN_TOLERANCE_DB`).
    """
    errors: list[str] = []
    if not isinstance(card, Mapping):
        return ["card: must be a JSON object"]
    _check(dict(card), CARD_SCHEMA, "", errors)
    if errors:
        return errors
    if card["scale"] not in card["factors"]:
        errors.append(f"factors: {card['factors']} must include scale {card['scale']}")
    if card["task"] == "in-plane" and card["factors"] != [card["scale"]]:
        errors.append(f"factors: an in-plane card serves its scale only ([{card['scale']}]), got {card['factors']}")
    expected = weights_file_name(card["name"], card["scale"], multi_scale=card["task"] == "through-plane")
    if card["weights_file"] != expected:
        errors.append(f"weights_file: '{card['weights_file']}' is not '{expected}'")
    if card["task"] == "through-plane" and card["scale"] != max(card["factors"]):
        errors.append(f"scale: a through-plane card's scale is its largest factor ({max(card['factors'])}), got {card['scale']}")
    if card["input"]["modality"] != card["modality"]:
        errors.append(f"input.modality: '{card['input']['modality']}' differs from modality '{card['modality']}'")
    for i, entry in enumerate(card["evaluation"]):
        if abs(entry["gain_db"] - (entry["psnr"] - entry["bicubic_psnr"])) > GAIN_TOLERANCE_DB:
            errors.append(f"evaluation[{i}].gain_db: {entry['gain_db']} is not psnr - bicubic_psnr")
    return errors


def check_card(card: Mapping[str, Any], where: str = "model card") -> None:
    """Raise :class:`WeightsError` listing every problem when ``card`` does not validate."""
    errors = validate_card(card)
    if errors:
        shown = "; ".join(errors[:5]) + (f"; and {len(errors) - 5} more" if len(errors) > 5 else "")
        raise WeightsError(f"{where} does not follow model card version {CARD_VERSION}: {shown}")


def write_card(path: str | Path, card: Mapping[str, Any]) -> Path:
    """Validate ``card`` and write it as indented JSON to ``path`` (the card only: weights are untouched)."""
    path = Path(path)
    check_card(card, f"card '{path.name}'")
    path.write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
    return path


# --- shipped cards and the cached registry table (no torch) -------------------------------------------------


def shipped_cards() -> list[Path]:
    """The card files of every shipped weights file (``<stem>.json`` beside each ``.safetensors``: in-plane
    ``<name>_x<scale>``, multi-factor through-plane ``<name>``)."""
    return sorted(p.with_suffix(".json") for p in WEIGHTS_DIR.glob("*.safetensors"))


def read_table(path: str | Path = TABLE_FILE) -> dict[str, Any]:
    """The cached registry table (see :func:`compute_table`); :class:`WeightsError` when missing."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise WeightsError(f"model table '{path}' cannot be read ({exc}); regenerate it with `{TABLE_COMMAND}`") from None


def table_row(name: str, table: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The table row of model ``name`` (case-insensitive); :class:`ModelNotFoundError` if unknown."""
    rows = (table or read_table())["models"]
    for row in rows:
        if row["name"] == str(name).strip().lower():
            return row
    raise ModelNotFoundError(f"unknown model '{name}'; available: {', '.join(r['name'] for r in rows)}")


def load_card(name: str, scale: int | None = None) -> list[dict[str, Any]]:
    """The shipped card(s) of model ``name``: at ``scale``, or every scale with weights when None.

    A multi-factor through-plane network has one card for all its factors (returned for any of them).
    Raises :class:`ModelNotFoundError` for an unknown model, :class:`ScaleError` for a scale it does
    not support, :class:`WeightsError` when no weights (so no card) are shipped at that scale.
    An interpolation model has no card: ``[]``.
    """
    row = table_row(name)
    if not row["learned"]:
        return []
    if scale is not None and int(scale) not in row["scales"]:
        supported = ", ".join(f"x{s}" for s in row["scales"])
        raise ScaleError(f"model '{row['name']}' does not support scale {scale!r}; supported: {supported}")
    scales = row["scales"] if scale is None else [int(scale)]
    multi = bool(row.get("multi_scale"))
    if multi:  # one file (and card) serves every factor
        scales = scales[:1]
    cards = []
    for s in scales:
        path = WEIGHTS_DIR / weights_file_name(row["name"], s, multi_scale=multi)
        if path.with_suffix(".json").is_file():
            cards.append(json.loads(path.with_suffix(".json").read_text(encoding="utf-8")))
    if not cards:
        which = f"x{int(scale)}" if scale is not None else "any scale"
        raise WeightsError(f"no weights (hence no model card) are shipped for '{row['name']}' at {which}; see `medsr models`")
    return cards


# --- the card as text -------------------------------------------------------------------------------------------


def _wrap(text: str, indent: int = 2, bullet: str = "") -> list[str]:
    first = " " * indent + bullet
    rest = " " * (indent + len(bullet))
    return textwrap.wrap(str(text), TEXT_WIDTH, initial_indent=first, subsequent_indent=rest) or [first]


def _minutes(seconds: float | None) -> str:
    return "not recorded" if seconds is None else f"{seconds / 60:.0f} min"


def _range(value: Sequence[float] | None) -> str:
    return "not recorded" if value is None else f"{value[0]:g}-{value[1]:g} mm"


def _score_line(e: Mapping[str, Any]) -> str:
    gain = e.get("gain_db", e["psnr"] - e["bicubic_psnr"])
    return (f"PSNR {e['psnr']:.2f} dB / SSIM {e['ssim']:.4f} vs bicubic {e['bicubic_psnr']:.2f} / "
            f"{e['bicubic_ssim']:.4f} ({gain:+.2f} dB)")


def format_card(card: Mapping[str, Any]) -> str:
    """``card`` (version 2) as readable plain text; a version-1 card gets the fields it has."""
    out: list[str] = []
    factors = card.get("factors") or [card.get("scale")]
    task = card.get("task", "in-plane")
    title = f"{card['name']} x{card['scale']}: {card.get('network', '')} ({card.get('config', '')}), {card.get('modality', '')}, {task}"
    if len(factors) > 1:
        title += f", factors {', '.join(f'x{f}' for f in factors)}"
    out += [title, "=" * min(len(title), TEXT_WIDTH)]
    ref = card.get("reference") or {}
    out += _wrap(f"Paper: {ref.get('citation') or card.get('paper', '')}" + (f" (doi:{ref['doi']})" if ref.get("doi") else ""), 0)
    out += _wrap(f"Weights: {card.get('weights_file')}, {card.get('n_parameters', 0):,} parameters, "
                 f"{'/'.join(card.get('dtype') or [])}, sha256 {card.get('sha256')}", 0)
    if card.get("card_version") != CARD_VERSION:
        out += _wrap(f"(card version {card.get('card_version', 1)}: licence, input specification and limitations "
                     "are not recorded in this card)", 0)

    lic = card.get("licence")
    if lic:
        out += ["", "Licence"]
        out += _wrap(f"weights: {lic['weights']['licence']}. {lic['weights']['note']}", 2, "- ")
        for d in lic["training_data"]:
            note = f" {d['note']}" if d.get("note") else ""
            out += _wrap(f"training data, {d['dataset']}: {d['licence']}. Source: {d['source']}.{note}", 2, "- ")

    out += ["", "Intended use"]
    out += _wrap(card.get("intended_use", "not recorded"))
    if card.get("out_of_scope_use"):
        out += ["", "Out of scope"]
        for item in card["out_of_scope_use"]:
            out += _wrap(item, 2, "- ")

    inp = card.get("input")
    if inp:
        out += ["", "Input"]
        out += _wrap(f"modality and units: {inp['modality']}, {inp['units']}", 2, "- ")
        out += _wrap(f"intensity mapping at inference: {inp['intensity_mapping']['inference']}", 2, "- ")
        out += _wrap(f"intensity mapping in training: {inp['intensity_mapping']['training']}", 2, "- ")
        sp = inp["spacing_mm"]
        out += _wrap(f"spacing seen in training: in-plane {_range(sp['in_plane'])}, through-plane "
                     f"{_range(sp['through_plane'])}. {sp['note']}", 2, "- ")
        out += _wrap(f"plane: {inp['plane']}", 2, "- ")
        if inp.get("min_lr_side_px"):
            out += _wrap(f"smallest input slice side: {inp['min_lr_side_px']} px", 2, "- ")

    out += ["", "Training data"]
    for d in card.get("training_data") or []:
        counts = f"{d['n_train']} train / {d['n_val'] if d['n_val'] is not None else '-'} val / " \
                 f"{d['n_test'] if d['n_test'] is not None else '-'} test images"
        out += _wrap(f"{d['dataset']}: {d['images']} ({counts}; {d['values']}). Split: {d['split']}", 2, "- ")
    if not card.get("training_data"):
        out += _wrap((card.get("training") or {}).get("data") or "not recorded", 2, "- ")

    t = card.get("training") or {}
    out += ["", "Training budget"]
    out += _wrap(f"{t.get('iterations', 0):,} of {t.get('planned_iterations', 0):,} planned iterations "
                 f"(config {t.get('config')}: batch {t.get('batch')}, HR patch {t.get('hr_patch')} px), "
                 f"{_minutes(t.get('wall_time_s'))} on {t.get('hardware')}"
                 + (f", warm start from {t['init_from']}" if t.get("init_from") else ""), 2, "- ")
    ps = t.get("paper_schedule")
    if ps:
        out += _wrap(f"paper's schedule ({ps['config_file']}): {ps['description']}; {ps['iterations']:,} iterations "
                     f"of batch {ps['batch']} x {ps['hr_patch']} px. This run saw "
                     f"{100 * ps['fraction_of_paper_pixels']:.2g} % of the HR pixels the paper's schedule shows the network."
                     + (f" {ps['note']}" if ps.get("note") else ""), 2, "- ")

    out += ["", "Evaluation"]
    for e in card.get("evaluation") or []:
        line = f"{e['data']}, {e['split']}, {e['n_images']} images, x{e['scale']}, convention {e['convention']}: {_score_line(e)}"
        if e.get("ms_ssim") is not None:
            line += f"; MS-SSIM {e['ms_ssim']:.4f} vs {e['bicubic_ms_ssim']:.4f}"
        line += f". Source: {e['source']}."
        if e.get("command"):
            line += f" Command: `{e['command']}`."
        if e.get("note"):
            line += f" {e['note']}"
        out += _wrap(line, 2, "- ")
    m = card.get("metrics") or {}
    if m.get("psnr") is not None and not card.get("evaluation"):  # version 1: the validation scores only
        out += _wrap(f"validation at export ({m.get('split')}, {m.get('n_images')} images, convention "
                     f"{m.get('convention')}): {_score_line(m)}", 2, "- ")

    for key, heading in (("limitations", "Limitations"), ("failure_modes", "Known failure modes")):
        if card.get(key):
            out += ["", heading]
            for item in card[key]:
                out += _wrap(item, 2, "- ")
    return "\n".join(out) + "\n"


def card_text(name: str, scale: int | None = None) -> str:
    """The shipped card(s) of model ``name`` at ``scale`` (every scale with weights when None) as text.

    This is what ``medsr models --card NAME[:SCALE]`` prints and what the Slicer module shows under
    the model choice. Interpolation models get a one-paragraph note (no weights, no training data).
    Errors as :func:`load_card`.
    """
    cards = load_card(name, scale)
    if not cards:
        row = table_row(name)
        return (f"{row['name']}: {row['description'] or row['network']} -- interpolation, not learned: "
                "no weights, no training data, no card. A baseline for the networks.\n")
    return "\n\n".join(format_card(c) for c in cards)


# --- the cached registry table -------------------------------------------------------------------------------


def compute_table() -> dict[str, Any]:
    """The registry as a table: every model's identity, scales, parameters and MACs per LR pixel; in-plane
    models (``list_models()``) then the multi-factor through-plane networks (``multi_scale``: one weights
    file ``<name>.safetensors`` for every factor; MACs counted at the largest factor).

    Builds every registered network at every scale (meta device where possible; imports torch), so it
    takes seconds to minutes; ``medsr models`` reads the cached copy (:data:`TABLE_FILE`) instead.
    """
    from . import list_models

    rows = []
    for spec in list_models() + list_models(through_plane=True):
        rows.append(
            {
                "name": spec.name,
                "network": spec.network,
                "config": spec.config,
                "paper": spec.paper,
                "modality": spec.modality,
                "scales": list(spec.scales),
                "learned": bool(spec.learned),
                "min_lr_size": int(spec.min_lr_size),
                "multi_scale": bool(spec.multi_scale),
                "description": spec.description,
                "parameters": {f"x{s}": int(spec.num_parameters(s)) for s in spec.scales},
                "macs_per_lr_pixel": {f"x{s}": round(float(spec.macs_per_lr_pixel(s)), 3) for s in spec.scales},
            }
        )
    return {
        "generated_by": TABLE_COMMAND,
        "macs": "Conv2d/Linear multiply-accumulates per LR input pixel (models.base.count_macs)",
        "models": rows,
    }


def write_table(path: str | Path = TABLE_FILE) -> Path:
    """Recompute the registry table and write it to ``path``."""
    path = Path(path)
    path.write_text(json.dumps(compute_table(), indent=2) + "\n", encoding="utf-8")
    return path


def main(argv: Iterable[str] | None = None) -> int:
    """``python -m MedSRLib.models.cards table`` (rewrite the cached table) or ``validate`` (every shipped card)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args == ["table"]:
        print(f"wrote {write_table()}")
        return 0
    if args == ["validate"]:
        bad = 0
        for path in shipped_cards():
            errors = validate_card(json.loads(path.read_text(encoding="utf-8"))) if path.is_file() else ["card missing"]
            bad += bool(errors)
            print(f"{path.name}: {'ok' if not errors else '; '.join(errors)}")
        return 1 if bad else 0
    print("usage: python -m MedSRLib.models.cards table|validate", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
