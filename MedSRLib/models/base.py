"""The model interface: :class:`ModelSpec`, MAC and parameter counts.

Every model MedSRLib can run -- the five papers' networks and the non-learned ``bicubic`` and
``nearest`` -- is described by a :class:`ModelSpec` registered under a unique name with
:func:`register` (the registry itself is :mod:`.registry`, which discovers the model files). A network module maps ``N x 1 x h x w`` float tensors with intensities in [0, 1]
(see :mod:`MedSRLib.intensity`) to ``N x 1 x (s*h) x (s*w)``.

Registry names are ``<network>`` for a paper's own configuration and ``<network>-<config>`` for the
others (``idman-small``, ``w2amsn-s``, ...). Weights live beside this package in
``MedSRLib/weights/<name>_x<scale>.safetensors`` with a JSON model card of the same stem
(:mod:`MedSRLib.models.weights`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from torch import nn

from ..errors import ScaleError, WeightsError
from .cards import WEIGHTS_DIR  # the one place that says where shipped weights live
from .registry import DEFAULT_PREFERENCE, default_model, get_model, list_models, register
from .weights import card_path, load_weights



@dataclass(frozen=True)
class ModelSpec:
    """What every registered model provides.

    Attributes:
        name: registry name (``"mdrn"``, ``"idman-small"``, ``"bicubic"``).
        network: the paper's network name (``"MDRN"``) or ``"bicubic"``/``"nearest"``.
        config: configuration name (``"paper"``, ``"small"``, ``"paper_s"``, ...).
        paper: short citation of the paper the network comes from.
        modality: ``"CT"``, ``"MR"`` or ``"any"`` (what it was designed/trained for).
        scales: the integer scale factors the model supports.
        factory: ``factory(scale=s, **options) -> nn.Module``.
        options: constructor keywords of this configuration (the design doc's defaults).
        learned: False for interpolation models (no weights needed).
        min_lr_size: smallest LR slice side (pixels) the network accepts.
        description: one line for ``medsr models`` and the Slicer module.
        multi_scale: one module serves every scale in ``scales`` (through-plane networks,
            ``forward(x, r)``): its weights are one file ``<name>.safetensors`` whose card has
            ``scale`` = the largest factor and ``scales`` = all of them.
    """

    name: str
    network: str
    config: str
    paper: str
    modality: str
    scales: tuple[int, ...]
    factory: Callable[..., nn.Module]
    options: Mapping[str, Any] = field(default_factory=dict)
    learned: bool = True
    min_lr_size: int = 1
    description: str = ""
    multi_scale: bool = False

    def check_scale(self, scale: int) -> int:
        """Return ``scale`` as int, or raise :class:`ScaleError` naming the supported scales."""
        if isinstance(scale, bool) or int(scale) != scale or int(scale) not in self.scales:
            supported = ", ".join(f"x{s}" for s in self.scales)
            raise ScaleError(f"model '{self.name}' does not support scale {scale!r}; supported: {supported}")
        return int(scale)

    def build(self, scale: int, **overrides: Any) -> nn.Module:
        """A freshly initialised module for ``scale`` (no weights loaded)."""
        scale = self.check_scale(scale)
        return self.factory(scale=scale, **{**dict(self.options), **overrides})

    def weights_path(self, scale: int) -> Path:
        """Where the shipped weights for ``scale`` live (the file may not exist)."""
        if self.multi_scale:
            return WEIGHTS_DIR / f"{self.name}.safetensors"
        return WEIGHTS_DIR / f"{self.name}_x{int(scale)}.safetensors"

    def has_weights(self, scale: int) -> bool:
        """True for interpolation models and for networks whose weights file is shipped."""
        return (not self.learned) or self.weights_path(scale).is_file()

    def card_path(self, scale: int) -> Path:
        """The JSON model card beside the weights file (may not exist)."""
        return card_path(self.weights_path(scale))

    def card(self, scale: int) -> dict[str, Any] | None:
        """The shipped model card for ``scale`` as a dict, or None when no weights are shipped."""
        import json

        path = self.card_path(scale)
        return json.loads(path.read_text()) if path.is_file() else None

    def load(self, scale: int, *, weights: str | Path | None = None, allow_untrained: bool = False) -> nn.Module:
        """Build the module for ``scale`` and load verified weights (eval mode, on CPU).

        ``weights`` overrides the shipped file. A learned model without weights raises
        :class:`WeightsError` unless ``allow_untrained`` (random weights: tests and benchmarks only).
        """
        module = self.build(scale)
        if self.learned:
            path = Path(weights) if weights is not None else self.weights_path(scale)
            if path.is_file() or weights is not None:  # issue 15 (13): a given file is checked by load_weights
                load_weights(module, path, model_name=self.name, scale=int(scale))
            elif not allow_untrained:
                raise WeightsError(
                    f"no weights for model '{self.name}' at x{scale} ({path}); "
                    "train them with `python -m training train` or pass a weights file"
                )
        return module.eval()

    def num_parameters(self, scale: int) -> int:
        """Number of parameters of the module at ``scale`` (weight-norm gains included)."""
        return _num_parameters(self.name, int(scale))

    def macs_per_lr_pixel(self, scale: int) -> float:
        """Conv/Linear multiply-accumulates per LR input pixel (the design doc's MAC convention)."""
        return _macs_per_lr_pixel(self.name, int(scale))


def count_macs(
    module: nn.Module,
    lr_shape: tuple[int, int] = (64, 64),
    *,
    device: torch.device | str = "cpu",
    where: Callable[[nn.Module], bool] | None = None,
) -> int:
    """Conv2d/Linear MACs of one forward pass on a ``1 x 1 x H x W`` input (design doc convention).

    Each conv adds ``out.numel() * in_channels / groups * kH * kW``; element-wise ops, pooling,
    pixel shuffle and deformable sampling are not counted. ``where``: count only the layers for which
    it returns True (e.g. the dense 3x3 convolutions).
    """
    total = 0

    def hook(mod: nn.Module, _inp: Any, out: torch.Tensor) -> None:
        nonlocal total
        if where is not None and not where(mod):
            return
        if isinstance(mod, nn.Conv2d):
            kh, kw = mod.kernel_size
            total += out.numel() * (mod.in_channels // mod.groups) * kh * kw
        elif isinstance(mod, nn.Linear):
            total += out.numel() * mod.in_features

    handles = [m.register_forward_hook(hook) for m in module.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    try:
        with torch.inference_mode():
            module.eval()(torch.zeros(1, 1, *lr_shape, device=device))
    finally:
        for h in handles:
            h.remove()
    return total


def _build_cheaply(spec: ModelSpec, scale: int) -> nn.Module:
    """Build on the meta device (no memory, no init cost) when the module allows it, else on CPU."""
    try:
        with torch.device("meta"):
            return spec.build(scale)
    except Exception:  # a module whose constructor needs real tensors
        return spec.build(scale)


@lru_cache(maxsize=None)
def _num_parameters(name: str, scale: int) -> int:
    return sum(p.numel() for p in _build_cheaply(get_model(name), scale).parameters())


@lru_cache(maxsize=None)
def _macs_per_lr_pixel(name: str, scale: int) -> float:
    spec = get_model(name)
    side = max(32, spec.min_lr_size)
    module = _build_cheaply(spec, scale)
    device = next((p.device for p in module.parameters()), torch.device("cpu"))
    try:
        macs = count_macs(module, (side, side), device=device)
    except Exception:  # an op without a meta kernel: count on CPU
        macs = count_macs(spec.build(scale), (side, side))
    return macs / float(side * side)


__all__ = ["DEFAULT_PREFERENCE", "ModelSpec", "count_macs", "default_model", "get_model", "list_models", "register"]
