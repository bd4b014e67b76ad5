"""The two training modes, one entry point each: :func:`train` and :func:`export` pick the trainer and
the exporter from a config's ``mode`` (``inplane``: :mod:`training.loop` / :mod:`training.export`;
``throughplane``: :mod:`training.throughplane`). This module sits above both, so neither imports the
other's mode."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from .export import export as export_inplane
from .export import find_checkpoint
from .loop import TrainResult, read_checkpoint
from .loop import _Trainer as InPlaneTrainer
from .loop import train as _train_with
from .throughplane import ThroughPlaneTrainer, export_throughplane


def trainer_for(cfg: dict[str, Any]) -> type:
    """The trainer class of ``cfg["mode"]`` (``inplane`` by default)."""
    return ThroughPlaneTrainer if cfg.get("mode") == "throughplane" else InPlaneTrainer


def train(cfg: dict[str, Any], *, resume: bool = True, progress: bool | None = None,
          stop_at: int | None = None) -> TrainResult:
    """Train ``cfg`` with its mode's trainer (see :func:`training.loop.train` for the arguments)."""
    return _train_with(cfg, resume=resume, progress=progress, stop_at=stop_at, trainer_class=trainer_for(cfg))


def export(checkpoint: str | Path, *, out: str | Path | None = None, **inplane_options: Any
           ) -> tuple[Path, Path, dict[str, Any]]:
    """Weights file + card of a run or checkpoint, with its mode's exporter; returns ``(weights, card, card dict)``.

    ``inplane_options`` (``split``, ``max_images``, ``data_root``, ``progress``) apply to in-plane runs;
    through-plane cards are scored on the config's own validation slices.
    """
    path = find_checkpoint(checkpoint)
    if yaml.safe_load(read_checkpoint(path)["config"]).get("mode") == "throughplane":
        return export_throughplane(path, out=out)
    return export_inplane(path, out=out, **inplane_options)
