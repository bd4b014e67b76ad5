"""The weights format: a safetensors state dict plus a JSON model card of the same stem.

``<stem>.safetensors`` holds the module's ``state_dict()`` exactly as the module names it (weight-norm
parametrisations stay as ``...parametrizations.weight.original0/1``), in float16 by default. The card
``<stem>.json`` beside it says which registered model and scale the tensors are for, how they were
trained and evaluated, what they are for, and the file's sha256. Loading never unpickles: safetensors
files are parsed by ``safetensors``; a ``.pt``/``.pth`` file is read with
``torch.load(weights_only=True)``. Every failure raises :class:`WeightsError` naming the model and scale.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping

import torch
from safetensors.torch import load as _st_load
from safetensors.torch import save as _st_save
from torch import nn

from ..errors import MedSRError, OutputPathError, WeightsError
from .registry import get_model

#: Version of the card/weights layout written by :func:`save_weights`; loaders accept <= this.
FORMAT_VERSION = 1

#: What every card says about use (the networks' output is an estimate, not a measurement).
INTENDED_USE = (
    "research only: super-resolved slices are estimated from the low-resolution input by a network "
    "trained on other images; they are not a substitute for an acquisition at that resolution and not "
    "for diagnosis"
)

_TRAINING_KEYS = ("data", "iterations", "wall_time_s", "hardware")


def card_path(weights_path: str | Path) -> Path:
    """The JSON model card beside ``weights_path`` (same stem, ``.json``)."""
    return Path(weights_path).with_suffix(".json")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder (no partial file left)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_weights(module: nn.Module, path: str | Path, *, card: Mapping[str, Any], half: bool = True) -> tuple[Path, Path]:
    """Write ``module``'s state dict to ``path`` (``.safetensors``) and its model card beside it.

    Args:
        module: the network (any device/dtype; tensors are copied to CPU).
        path: target ``<stem>.safetensors``; the card goes to ``<stem>.json``. Parent folders are made.
        card: at least ``name`` (registry name) and ``scale``; optionally ``options`` (constructor
            overrides the module was built with), ``training`` (``data``, ``iterations``,
            ``wall_time_s``, ``hardware``, ...), ``metrics`` (must then include ``convention``) and
            any other JSON-able keys; a card with ``card_version`` (the sections of
            :mod:`MedSRLib.models.cards`, e.g. from ``training.export.card_sections``) must validate
            against that version or nothing is written. ``network``, ``config``, ``paper``, ``modality``,
            ``n_parameters``, ``dtype``, ``sha256``, ``format_version`` and ``created`` are filled in.
        half: store floating tensors as float16 (half the size; loading casts back).

    Returns:
        ``(weights_path, card_path)``.
    """
    path = Path(path)
    if path.suffix != ".safetensors":
        raise OutputPathError(f"weights must be saved as .safetensors; got '{path.name}'")
    if "name" not in card or "scale" not in card:
        raise WeightsError("the model card needs at least 'name' (registry name) and 'scale'")
    spec = get_model(str(card["name"]))
    scale = spec.check_scale(card["scale"])
    if spec.multi_scale:
        card = {**card, "scales": list(spec.scales)}
    module_scale = getattr(module, "scale", scale)
    if module_scale != scale:
        raise WeightsError(f"card says x{scale} but the module was built for x{module_scale}")
    metrics = dict(card.get("metrics") or {})
    if metrics and "convention" not in metrics:
        raise WeightsError("card 'metrics' must say their 'convention' (e.g. 'PSNR on [0,1], data range 1, 4-px crop')")

    state = module.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        t = value.detach().to("cpu")
        if half and t.is_floating_point():
            t = t.to(torch.float16)
            if not torch.isfinite(t).all():
                raise WeightsError(f"tensor '{key}' does not fit in float16 (|value| > 65504); save with half=False")
        tensors[key] = t.contiguous().clone()
    blob = _st_save(tensors, metadata={"name": spec.name, "scale": str(scale), "format_version": str(FORMAT_VERSION)})

    training = dict(card.get("training") or {})
    for key in _TRAINING_KEYS:
        training.setdefault(key, None)
    full_card: dict[str, Any] = {
        **{k: v for k, v in card.items() if k not in ("training", "metrics")},
        "format_version": FORMAT_VERSION,
        "name": spec.name,
        "network": spec.network,
        "config": spec.config,
        "paper": spec.paper,
        "modality": spec.modality,
        "scale": scale,
        "options": {**dict(spec.options), **dict(card.get("options") or {})},
        "n_parameters": sum(p.numel() for p in module.parameters()),
        "dtype": sorted({str(t.dtype).replace("torch.", "") for t in tensors.values() if t.is_floating_point()}),
        "training": training,
        "metrics": metrics,
        "intended_use": card.get("intended_use", INTENDED_USE),
        "weights_file": path.name,
        "sha256": _sha256(blob),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    if full_card.get("card_version") is not None:  # a versioned card (models.cards) must validate before anything is written
        from .cards import check_card

        check_card(full_card, f"model card of '{path.name}'")
    try:
        text = json.dumps(full_card, indent=2, sort_keys=False)
    except TypeError as exc:
        raise WeightsError(f"model card is not JSON-serialisable: {exc}") from None

    path.parent.mkdir(parents=True, exist_ok=True)
    cpath = card_path(path)
    _atomic_write(path, blob)
    _atomic_write(cpath, (text + "\n").encode("utf-8"))
    return path, cpath


def read_card(path: str | Path) -> dict[str, Any]:
    """The model card beside weights file ``path`` as a dict (:class:`WeightsError` if missing or invalid)."""
    cpath = card_path(path)
    if not cpath.is_file():
        raise WeightsError(f"model card '{cpath.name}' missing beside '{Path(path).name}'; weights need the JSON card written with them")
    try:
        card = json.loads(cpath.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WeightsError(f"model card '{cpath}' is not valid JSON ({exc}); re-export the weights") from None
    if not isinstance(card, dict) or not {"name", "scale", "sha256"} <= card.keys():
        raise WeightsError(f"model card '{cpath}' lacks 'name', 'scale' or 'sha256'; re-export the weights")
    for key in ("scale", "format_version"):  # issue 15 (12, 13): typed fields, named when wrong
        value = card.get(key, 1)
        if isinstance(value, bool) or not isinstance(value, int):
            raise WeightsError(f"model card '{cpath.name}' has {key} {value!r} ({type(value).__name__}); it must be an "
                               "integer: re-export the weights")
    return card


def _read_tensors(path: Path, blob: bytes, where: str) -> dict[str, torch.Tensor]:
    """Parse the weights without unpickling anything."""
    try:
        if path.suffix in (".pt", ".pth"):
            import io

            obj = torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)
            for key in ("state_dict", "model", "params"):
                if isinstance(obj, dict) and isinstance(obj.get(key), dict):
                    obj = obj[key]
                    break
        else:
            obj = _st_load(blob)
    except Exception as exc:  # safetensors/torch raise several types for damaged files
        if isinstance(exc, pickle.UnpicklingError):  # weights_only refused a non-tensor object
            reason = "holds objects other than tensors; only plain state dicts are loaded"
        else:
            reason = (str(exc).splitlines() or [""])[0]
        raise WeightsError(f"cannot read weights '{path.name}' for {where} ({type(exc).__name__}: {reason}); re-export them") from None
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"'{path.name}' does not hold a state dict of tensors for {where}")
    return obj


def load_weights(module: nn.Module, path: str | Path, *, model_name: str, scale: int) -> dict[str, Any]:
    """Verify and load weights into ``module`` (in place, strict); returns the model card.

    Checks, in order: the file and its card exist; the card is for ``model_name`` at ``scale``; the
    file's sha256 equals the card's; the tensors parse (safetensors, or ``torch.load(weights_only=True)``
    for ``.pt``/``.pth``); keys and shapes match the module exactly. Tensors are cast to the dtype of the
    module's own tensors. Any failure raises :class:`WeightsError` and leaves ``module`` unchanged.
    """
    path = Path(path)
    where = f"model '{model_name}' x{int(scale)}"
    if path.name.lower().endswith(".json"):
        raise WeightsError(f"'{path.name}' is a model card; pass the weights file beside it (.safetensors) as --weights")
    if not path.is_file():
        raise WeightsError(f"no weights file at '{path}' for {where}")
    card = read_card(path)
    found_name, found_scale = str(card["name"]).lower(), card["scale"]
    # a multi-scale file (through-plane networks) serves every factor its card lists under "scales"
    scale_ok = found_scale == int(scale) or int(scale) in (card.get("scales") or ())
    if found_name != str(model_name).lower() or not scale_ok:
        raise WeightsError(
            f"'{path.name}' holds weights for model '{card['name']}' x{found_scale}, expected '{model_name}' x{int(scale)}; "
            "choose the weights that match the model and scale"
        )
    if int(card.get("format_version", 1)) > FORMAT_VERSION:
        raise WeightsError(f"'{path.name}' uses weights format {card['format_version']}; this MedSRLib reads <= {FORMAT_VERSION}; update MedSRLib")
    blob = path.read_bytes()
    if _sha256(blob) != card["sha256"]:
        raise WeightsError(
            f"weights file '{path.name}' for {where} is corrupted or modified (sha256 does not match its card); "
            "re-download or re-export it"
        )
    tensors = _read_tensors(path, blob, where)

    own = module.state_dict()
    missing = sorted(own.keys() - tensors.keys())
    unexpected = sorted(tensors.keys() - own.keys())
    if missing or unexpected:
        raise WeightsError(
            f"'{path.name}' does not fit {where}: {len(missing)} missing keys {missing[:3]}, "
            f"{len(unexpected)} unexpected keys {unexpected[:3]} (built with other options?)"
        )
    bad = [f"{k} {tuple(tensors[k].shape)} vs {tuple(v.shape)}" for k, v in own.items() if tensors[k].shape != v.shape]
    if bad:
        raise WeightsError(f"'{path.name}' does not fit {where}: {len(bad)} shape mismatches, e.g. {bad[0]} (file vs module)")
    cast = {k: tensors[k].to(dtype=v.dtype) if v.is_floating_point() else tensors[k] for k, v in own.items()}
    try:
        module.load_state_dict(cast, strict=True)
    except (RuntimeError, MedSRError) as exc:
        raise WeightsError(f"'{path.name}' does not load into {where}: {str(exc).splitlines()[0]}") from None
    return card
