"""The Predictor: the one way MedSRLib runs a network.

A :class:`Predictor` is built once from a model spec, its weights, the model's exact inference
rewrites (:func:`MedSRLib.models.rewrites.prepare_for_inference`), the engine options and the
resolved device and precision; it is then reused for every slice stack and volume (the pipeline,
``medsr evaluate``, comparison panels, training's validation and the benchmarks all run through it,
so the same images give the same outputs on every path).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import UnsupportedImageError
from .device import resolve_device
from .options import EngineOptions
from .precision import resolve_precision
from .runner import CancelCallback, ProgressCallback, _run

if TYPE_CHECKING:
    from torch import nn

    from ..models.base import ModelSpec


class Predictor:
    """A prepared network at one scale, with its engine options, device and precision.

    Through-plane (multi-factor, one-direction) networks (:attr:`ModelSpec.multi_scale`, ``tp-*``):
    one prepared module serves every factor of ``spec.scales``; :meth:`run` takes the factor ``r`` per
    call (``factor=``, default ``scale``) and maps an ``(n, h, w)`` stack to ``(n, r h, w)`` (rows =
    the slices' coarse direction), with the same batching, tiling, precision, out-of-memory fallback,
    progress and cancel as in-plane runs (:attr:`one_direction` is True).

    Args:
        model: a registry name (``medsr models``) or a :class:`~MedSRLib.models.base.ModelSpec`.
        scale: integer in-plane factor; one of the model's scales (else :class:`~MedSRLib.errors.ScaleError`);
            for a through-plane network, the default factor of :meth:`run`.
        weights: a weights file (.safetensors with its .json card) instead of the shipped one.
        options: :class:`EngineOptions` (default: all automatic).
        allow_untrained: a learned network without weights runs with random weights (tests, benchmarks).
        module: an already built module to use instead of loading ``model``'s weights (training's
            validation of the module being trained); it is prepared for inference in place unless
            ``prepare`` is False.

    Attributes:
        spec, scale, options: as given (options validated).
        device: the resolved ``torch.device``.
        precision: the precision the next run starts in (``'fp32'``, ``'bf16'``, ``'fp16'``; ``'auto'``
            resolved deterministically by :func:`MedSRLib.engine.precision.resolve_precision`).
        precision_ran: the precision the last run ended in (an fp16 overflow continues in fp32), or None
            before the first run.
        weights_sha256: sha256 of the shipped weights from the model card (None for interpolation models
            and for a weights file given by path).
    """

    def __init__(
        self,
        model: "ModelSpec | str",
        scale: int,
        *,
        weights: str | Path | None = None,
        options: EngineOptions | None = None,
        allow_untrained: bool = False,
        module: "nn.Module | None" = None,
        prepare: bool = True,
    ) -> None:
        from ..models import get_model
        from ..models.base import ModelSpec
        from ..models.rewrites import prepare_for_inference

        self.spec: ModelSpec = model if isinstance(model, ModelSpec) else get_model(str(model))
        self.scale: int = self.spec.check_scale(scale)
        self.options: EngineOptions = options if options is not None else EngineOptions()
        if not isinstance(self.options, EngineOptions):
            from ..errors import OptionError

            raise OptionError(f"options must be an EngineOptions; got {type(self.options).__name__}")
        self.device = resolve_device(self.options.device)
        self.precision: str = resolve_precision(self.options.precision, self.device, model=self.spec.name, scale=self.scale)
        self.precision_ran: str | None = None
        learned_default = weights is None and self.spec.learned and module is None
        self.weights_sha256: str | None = (self.spec.card(self.scale) or {}).get("sha256") if learned_default else None
        if module is None:
            module = self.spec.load(self.scale, weights=weights, allow_untrained=allow_untrained)
        self.module = prepare_for_inference(module) if prepare else module

    @property
    def one_direction(self) -> bool:
        """True for a through-plane network (one module, every factor; only the rows upsampled)."""
        return bool(self.spec.multi_scale)

    def with_options(self, options: EngineOptions) -> "Predictor":
        """A Predictor sharing this one's prepared module (no reload, no second rewrite) with other
        engine ``options`` (e.g. another precision or device)."""
        if not isinstance(options, EngineOptions):
            from ..errors import OptionError

            raise OptionError(f"options must be an EngineOptions; got {type(options).__name__}")
        clone = object.__new__(Predictor)
        clone.__dict__.update(self.__dict__)
        clone.options = options
        clone.device = resolve_device(options.device)
        clone.precision = resolve_precision(options.precision, clone.device, model=clone.spec.name, scale=clone.scale)
        clone.precision_ran = None
        return clone

    @property
    def min_lr_size(self) -> int:
        """Smallest LR side (px) the network accepts."""
        return int(self.spec.min_lr_size)

    def run(
        self,
        slices: Any,
        *,
        out: Any = None,
        progress: ProgressCallback | None = None,
        cancel: CancelCallback | None = None,
        factor: int | None = None,
    ) -> Any:
        """Super-resolve an ``(n, h, w)`` stack of [0, 1] float32 slices into ``out`` (``(n, s h, s w)``;
        a new float32 array when None); see :func:`MedSRLib.engine.run_slices` for the contract.

        ``factor``: through-plane networks only, the integer factor ``r`` of this call (one of
        ``spec.scales``; default :attr:`scale`); the stack then becomes ``(n, r h, w)``. Sets
        :attr:`scale` to the factor that ran."""
        if factor is not None and not self.one_direction and factor != self.scale:
            from ..errors import OptionError

            raise OptionError(f"{self.spec.name} is an in-plane network built for x{self.scale}; a per-call factor "
                              "applies to through-plane (tp-*) networks only")
        if factor is not None:
            self.scale = self.spec.check_scale(factor)
        out, self.precision_ran = _run(
            self.module, slices, scale=self.scale, out=out, options=self.options, progress=progress,
            cancel=cancel, min_lr_size=self.min_lr_size, one_direction=self.one_direction,
            model_name=self.spec.name,
        )
        return out

    def predict(self, lr: np.ndarray) -> np.ndarray:
        """One LR image ``(h, w)`` (or a stack ``(n, h, w)``) in [0, 1] -> float32 ``(s h, s w)``
        (``(n, s h, s w)``; through-plane networks: ``(s h, w)``); values are not clipped."""
        array = np.asarray(lr, dtype=np.float32)
        if array.ndim not in (2, 3):
            raise UnsupportedImageError(f"predict takes an (h, w) image or an (n, h, w) stack; got shape {array.shape}")
        result = self.run(array[None] if array.ndim == 2 else array)
        return result[0] if array.ndim == 2 else result

    def describe(self) -> dict[str, Any]:
        """What ran, for output metadata and JSON reports (``precision`` = what ran last, else planned)."""
        return {
            "model": self.spec.name,
            "network": self.spec.network,
            "config": self.spec.config,
            "scale": self.scale,
            "weights": self.weights_sha256,
            "device": str(self.device),
            "precision": self.precision_ran or self.precision,
            "ensemble": bool(self.options.ensemble),
            "one_direction": self.one_direction,
        }
