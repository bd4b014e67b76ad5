"""Training checkpoints: reading one and building the network it holds (used by the loop, export
and evaluation; its own module so that evaluation does not import the loop)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from .config import ConfigError

CHECKPOINT_FORMAT = "medsr-train-checkpoint-1"


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """A checkpoint written by this loop (``weights_only=True``), or :class:`ConfigError`."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"checkpoint {path} does not exist; train first or check the run folder")
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ConfigError(f"{path} is not a MedSR training checkpoint ({CHECKPOINT_FORMAT})")
    return ckpt


def load_checkpoint_model(path: str | Path, *, spec: Any, scale: int) -> nn.Module:
    """The SR network stored in a checkpoint, built from ``spec`` at ``scale`` (eval mode, CPU)."""
    ckpt = read_checkpoint(path)
    if ckpt["model_name"] != spec.name or int(ckpt["scale"]) != int(scale):
        raise ConfigError(f"{path} holds {ckpt['model_name']} x{ckpt['scale']}, not {spec.name} x{scale}")
    module = spec.build(int(scale))
    module.load_state_dict(ckpt["model"])
    return module.eval()
