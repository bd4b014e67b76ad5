"""Exact inference rewrites: :func:`prepare_for_inference` and the registry the model files fill.

Every rewrite computes the same function as the trained module (identical in exact arithmetic; in
float32 the results differ by rounding only, ~1e-6 relative) and keeps the state dict's meaning for
the layers it does not touch. They are applied in place to a module that is only used for inference.

Generic rewrites (this file; any network):

* **weight norm folded**: every ``torch.nn.utils.parametrize`` parametrisation of a weight
  (``weight_norm``, ``spectral_norm`` in eval) and every legacy ``torch.nn.utils.weight_norm`` hook
  becomes a plain weight holding the effective value (no ``g v / ||v||`` per forward).
* **1x1 convolutions on oneDNN** (CPU float32): PyTorch sends 1x1 kernels on one thread to its
  reference path, which is up to ~2x slower on channels_last tensors (measured: MDRN x2 on a 512^2
  slice 3.3-3.6 s -> 2.4-2.6 s); same arithmetic, different summation order.
* **image path in full precision** (every network that lists ``full_precision_layers``): those
  layers (the ones that read the image, and those after the global skip that carry it to the
  output) run with autocast disabled on float32 inputs. A no-op in fp32; under bf16/fp16 autocast
  only the residual branch is rounded (bf16 vs fp32 on real CT, HU: RMSE 3.1-3.8 -> 0.2-1.1, max
  15-27 -> 1.4-5 under autocast; ``tests/test_engine_bf16_accuracy.py``).

Block- and paper-specific rewrites live beside the code they rewrite and register here:
:func:`register_swap` (an exact inference subclass, with an optional weight rewrite before the swap)
and :func:`register_in_place` (an in-place change of matching modules, applied before the swaps):
``blocks.py`` (ResBlock residual scale folded, NCAB pooled first), ``deform.py`` (memory format
kept), ``idman.py`` (MAB centre taps), ``w2amsn.py`` (W2AMSB lambdas folded), ``mdrn.py`` (MDRN
aggregation as a running sum, in-place skips). A network file that registers nothing still gets the
generic rewrites.

**Reduced precision without autocast** (:func:`reduced_precision_copy`, used by the engine for bf16 on
a CPU): a copy of the prepared network whose body weights are cast once to bf16 while the
``full_precision_layers`` keep fp32 weights and cast their inputs to fp32. Each network's inference
forward (``_Inference*`` classes in its file) casts the body's input once (:func:`to_body`) and adds
the global skip in fp32 (``body(x).to(f0.dtype).add_(f0)``); MDRN, IDMAN and W2AMSN keep their
block-to-block residual streams in fp32 (:func:`add_to_stream`, one step of such a stream). Cheaper glue in the reduced body only (MDRN's
contrast-aware statistic accumulated in fp32 from one copy, the attention applied in place), so fp32
results stay bit-identical.
A body layer that still receives another dtype casts its input to its weights' dtype (a safety net;
``tests/test_engine_bf16_native.py`` checks that no op of the shipped networks mixes dtypes). The copy
is cached per module and dtype and rebuilt when the module's weights change. The result is in eval
mode. Not for training: use a fresh ``ModelSpec.load``.
:class:`MedSRLib.engine.Predictor` calls :func:`prepare_for_inference` once per loaded network.
"""

from __future__ import annotations

import copy
import weakref
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

__all__ = [
    "add_",
    "add_to_stream",
    "body_dtype",
    "reduced_precision_copy",
    "to_body",
    "fold_weight_norm",
    "pointwise_conv",
    "prepare_for_inference",
    "register_in_place",
    "register_swap",
    "scale_conv_",
]

#: Exact swaps: original class -> (inference subclass, weight rewrite before the swap, condition).
_SWAPS: list[tuple[type, type, Callable[[Any], None] | None, Callable[[Any], bool] | None]] = []
#: In-place rewrites: (class, rewrite, condition), applied to exact instances before the swaps.
_IN_PLACE: list[tuple[type, Callable[[Any], Any], Callable[[Any], bool] | None]] = []


def register_swap(
    original: type,
    fast: type,
    *,
    rewrite: Callable[[Any], None] | None = None,
    condition: Callable[[Any], bool] | None = None,
) -> None:
    """At inference, a module whose class is exactly ``original`` (and meets ``condition``) gets class
    ``fast`` (a subclass computing the same function) after ``rewrite(module)`` adapts its weights."""
    _SWAPS.append((original, fast, rewrite, condition))


def register_in_place(cls: type, rewrite: Callable[[Any], Any], *, condition: Callable[[Any], bool] | None = None) -> None:
    """At inference, ``rewrite(module)`` runs in place on every module whose class is exactly ``cls``."""
    _IN_PLACE.append((cls, rewrite, condition))


def prepare_for_inference(module: nn.Module) -> nn.Module:
    """Apply every exact inference rewrite to ``module`` in place (idempotent); returns it in eval mode."""
    module.eval()
    _fold_parametrizations(module)
    for m in list(module.modules()):
        for cls, rewrite, condition in _IN_PLACE:
            if type(m) is cls and (condition is None or condition(m)):
                rewrite(m)
    _swap_classes(module)
    for name in getattr(module, "full_precision_layers", ()):
        _run_in_full_precision(module.get_submodule(name))
    return module


_REDUCED = (torch.bfloat16, torch.float16)

#: Reduced copies per prepared module (weakly held): dtype -> (weights stamp, the copy).
_REDUCED_COPIES: "weakref.WeakKeyDictionary[nn.Module, dict[torch.dtype, tuple[tuple, nn.Module]]]" = weakref.WeakKeyDictionary()


def body_dtype(module: nn.Module) -> torch.dtype | None:
    """The dtype ``module``'s body runs in: the reduced dtype inside a :func:`reduced_precision_copy`,
    else None (the body runs in its input's dtype)."""
    return getattr(module, "_medsr_body_dtype", None)


def _cast_inputs_to_weights(m: nn.Module, args: tuple) -> tuple | None:
    """Forward pre-hook of a reduced body layer: floating inputs of another dtype are cast to its weights'."""
    dtype = next(m.parameters(recurse=False)).dtype
    if all(not isinstance(a, torch.Tensor) or not a.is_floating_point() or a.dtype == dtype for a in args):
        return None
    return tuple(a.to(dtype) if isinstance(a, torch.Tensor) and a.is_floating_point() else a for a in args)


def reduced_precision_copy(module: nn.Module, dtype: torch.dtype) -> nn.Module:
    """A copy of the prepared ``module`` for running without autocast in ``dtype`` (bf16 / fp16): the
    body's parameters and buffers cast once, the ``full_precision_layers`` kept in fp32 (their inputs
    cast up); cached per module and dtype (the copy is shared by every run of that module)."""
    if dtype == torch.float32:
        return module
    cache = _REDUCED_COPIES.setdefault(module, {})
    stamp = _weights_stamp(module)
    if dtype in cache and cache[dtype][0] == stamp:
        return cache[dtype][1]
    reduced = copy.deepcopy(module)
    keep: set[int] = set()
    for name in getattr(reduced, "full_precision_layers", ()):
        keep.update(id(m) for m in reduced.get_submodule(name).modules())
    for m in reduced.modules():
        if id(m) in keep:
            continue
        m._medsr_body_dtype = dtype
        for name, p in list(m.named_parameters(recurse=False)):
            if p.is_floating_point():
                p.data = p.data.to(dtype)
        for name, b in list(m.named_buffers(recurse=False)):
            if b is not None and b.is_floating_point():
                setattr(m, name, b.to(dtype))
        if any(True for _ in m.parameters(recurse=False)):
            m.register_forward_pre_hook(_cast_inputs_to_weights)
    cache[dtype] = (stamp, reduced)
    return reduced


def _weights_stamp(module: nn.Module) -> tuple:
    """Identity and in-place version of every parameter and buffer: a copy made from other weights
    (an optimiser step, ``load_state_dict``) is never reused."""
    return tuple((id(t), _version(t)) for t in (*module.parameters(), *module.buffers()))


def _version(t: torch.Tensor) -> int:
    try:
        return t._version
    except RuntimeError:  # an inference tensor has no version counter (and cannot change in place)
        return -1


def to_body(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``x`` cast once to the dtype ``module``'s body runs in (``x`` itself outside a reduced copy)."""
    dtype = body_dtype(module)
    return x if dtype is None else x.to(dtype)


def _run_in_full_precision(m: nn.Module) -> None:
    """Give ``m`` a subclass whose forward runs with autocast off on float32 inputs (bf16/fp16 inputs
    are cast up, unless ``m`` says it casts its own inputs (``casts_own_inputs``, e.g. in bands to keep a
    large cast copy out of memory); names and state dict unchanged; idempotent)."""
    cls = type(m)
    if getattr(cls, "_medsr_full_precision", False):
        return
    inner = cls.forward

    def forward(self: nn.Module, *args: Any, **kwargs: Any) -> Any:
        device_type = next((a.device.type for a in args if isinstance(a, torch.Tensor)), "cpu")
        if not getattr(self, "casts_own_inputs", False):
            args = tuple(a.float() if isinstance(a, torch.Tensor) and a.dtype in _REDUCED else a for a in args)
        if not torch.is_autocast_enabled(device_type):
            return inner(self, *args, **kwargs)
        with torch.autocast(device_type=device_type, enabled=False):
            return inner(self, *args, **kwargs)

    m.__class__ = type(f"FullPrecision{cls.__name__}", (cls,), {"forward": forward, "_medsr_full_precision": True})


# ----------------------------------------------------------------------------------------- weights


def fold_weight_norm(module: nn.Module) -> nn.Module:
    """Replace every weight-normalised weight of ``module`` by a plain parameter holding the effective
    weight ``g v / ||v||`` (exact inference re-parameterisation, in place); returns ``module``."""
    for m in list(module.modules()):
        if parametrize.is_parametrized(m, "weight"):
            requires_grad = m.parametrizations.weight.original1.requires_grad
            with torch.no_grad():
                weight = m.weight.detach().clone()
            parametrize.remove_parametrizations(m, "weight", leave_parametrized=True)
            # under no_grad torch leaves a plain tensor here: always register a real Parameter
            m.weight = nn.Parameter(weight, requires_grad=requires_grad)
    return module


def _fold_parametrizations(module: nn.Module) -> None:
    """Fold parametrised weights (``parametrize``) and legacy weight-norm hooks into plain weights."""
    for m in module.modules():
        if parametrize.is_parametrized(m):
            # torch shares the generated Parametrized<...> class between deep copies, and removing a
            # parametrisation deletes its property from that class: give this module its own class.
            cls = type(m)
            body = {k: v for k, v in vars(cls).items() if k not in ("__dict__", "__weakref__")}
            m.__class__ = type(cls.__name__, cls.__bases__, body)
    fold_weight_norm(module)  # parametrize-based parametrisations of ``weight``
    for m in list(module.modules()):
        if parametrize.is_parametrized(m):
            for name in list(m.parametrizations.keys()):
                parametrize.remove_parametrizations(m, name, leave_parametrized=True)
        for hook in list(m._forward_pre_hooks.values()):
            if type(hook).__name__ == "WeightNorm":  # torch.nn.utils.weight_norm (deprecated API)
                torch.nn.utils.remove_weight_norm(m, hook.name)


def scale_conv_(conv: nn.Conv2d, scale: torch.Tensor | float, *, dim: int = 0) -> None:
    """Multiply ``conv``'s weight along ``dim`` (0 = output channels, also the bias) by ``scale`` in place."""
    with torch.no_grad():
        if dim == 0:
            conv.weight.mul_(torch.as_tensor(scale, dtype=conv.weight.dtype).reshape(-1, 1, 1, 1))
            if conv.bias is not None:
                conv.bias.mul_(torch.as_tensor(scale, dtype=conv.bias.dtype).reshape(-1))
        else:
            conv.weight.mul_(torch.as_tensor(scale, dtype=conv.weight.dtype).reshape(1, -1, 1, 1))


# -------------------------------------------------------------------------------------- forwards


#: PyTorch's own size limit below which oneDNN's call overhead outweighs its speed.
_ONEDNN_MIN_NUMEL = 20480


def pointwise_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                   stride: tuple[int, int] = (1, 1)) -> torch.Tensor:
    """A 1x1 convolution, on oneDNN for CPU float32 inputs outside autocast and compilation, else ``F.conv2d``."""
    if (
        x.device.type == "cpu"
        and x.dtype == weight.dtype == torch.float32
        and x.dim() == 4
        and x.numel() > _ONEDNN_MIN_NUMEL
        and not torch.is_autocast_enabled("cpu")
        and torch.backends.mkldnn.is_available()
        and not torch.compiler.is_compiling()  # torch.compile picks its own kernels
    ):
        return torch.ops.aten.mkldnn_convolution(x, weight, bias, [0, 0], list(stride), [1, 1], 1)
    return F.conv2d(x, weight, bias, stride)


class _PointwiseConv2d(nn.Conv2d):
    """A 1x1 ``nn.Conv2d`` (groups 1, no padding) run by :func:`pointwise_conv`."""

    def _conv_forward(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        return pointwise_conv(x, weight, bias, self.stride)


def add_to_stream(stream: torch.Tensor, out: torch.Tensor, *, scale: torch.Tensor | float | None = None) -> torch.Tensor:
    """One step of a reduced-precision body's full-precision residual stream: ``stream + scale * out``,
    computed in ``stream``'s dtype (fp32) from a branch output ``out`` in the reduced dtype, written into a
    fresh fp32 copy of ``out`` (``stream`` itself is not modified: callers keep earlier streams).
    ``scale``: None, a number (a block's ``res_scale``) or a per-channel tensor (an attention applied in
    the same pass as the add, ``addcmul``). Used by MDRN's, IDMAN's and W2AMSN's chains (each network
    keeps its stream in fp32 between bf16 branches: the per-block rounding does not accumulate)."""
    wide = out.to(stream.dtype)
    if isinstance(scale, torch.Tensor):
        return torch.addcmul(stream, wide, scale, out=wide)
    if scale is not None and scale != 1.0:
        wide.mul_(scale)
    return wide.add_(stream)


def add_(y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``y + x``, written into ``y`` when that gives the same dtype and shape (``y`` must be a fresh tensor)."""
    if y.shape == x.shape and y.dtype == torch.result_type(y, x) and not y.requires_grad:
        return y.add_(x)
    return y + x


def _is_pointwise(m: nn.Conv2d) -> bool:
    return m.kernel_size == (1, 1) and m.groups == 1 and m.padding in ((0, 0), "valid") and m.dilation == (1, 1)


register_swap(nn.Conv2d, _PointwiseConv2d, condition=_is_pointwise)


def _swap_classes(module: nn.Module) -> None:
    """Give every module whose class is exactly a swappable class its inference subclass."""
    for m in list(module.modules()):
        for original, fast, rewrite, condition in _SWAPS:
            if type(m) is original and (condition is None or condition(m)):
                if rewrite is not None:
                    rewrite(m)
                m.__class__ = fast
                break
