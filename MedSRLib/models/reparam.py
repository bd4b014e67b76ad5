"""Exact inference re-parameterisations: :func:`prepare_for_inference`.

Every rewrite computes the same function as the trained module (identical in exact arithmetic; in
float32 the results differ by rounding only, ~1e-6 relative) and keeps the state dict's meaning for
the layers it does not touch. They are applied in place to a module that is only used for inference:

* **weight norm folded** (any network): every ``torch.nn.utils.parametrize`` parametrisation of a
  weight (``weight_norm``, ``spectral_norm`` in eval) and every legacy ``torch.nn.utils.weight_norm``
  hook becomes a plain weight holding the effective value (IDMAN: no ``g v / ||v||`` per forward).
* **IDMAN MAB centre taps**: with global pooling the MAB's kxk convolutions see a 1 x 1 map, so only
  their centre taps are used; they become 1x1 convolutions (``idman.mab_kxk_to_1x1``).
* **residual scale folded** (``blocks.ResBlock``: DRIDSR, SRDA): ``x + s * conv(...)`` -> the scale
  is folded into the last convolution and the skip is added in place (no extra full-size tensors).
* **NCAB pooled first** (W2AMSN): ``softmax(GAP(conv1x1(x)))`` = ``softmax(conv1x1(GAP(x)))``
  (the mean commutes with a linear map): one full-resolution 1x1 convolution fewer per NCAB.
* **W2AMSB**: the learnable lambdas and ``res_scale`` are folded into the fusion 1x1 convolution, and
  ``conv_w2``'s input channels are permuted so both stage-2 convolutions read one concatenation.
* **MDRN aggregation**: ``conv1x1(concat(F_1..F_n))`` = ``sum_i conv1x1_i(F_i)``, accumulated as the
  blocks run: the n-wide concatenation (512 channels at full size) is never built and each block
  output is freed at once.
* **1x1 convolutions on oneDNN** (any network, CPU float32): PyTorch sends 1x1 kernels on one thread
  to its reference path, which is up to ~2x slower on channels_last tensors (measured: MDRN x2 on a
  512^2 slice 3.3-3.6 s -> 2.4-2.6 s); same arithmetic, different summation order.
* **image path in full precision** (every network that lists ``full_precision_layers``): those
  layers (the ones that read the image, and those after the global skip that carry it to the
  output) run with autocast disabled on float32 inputs. A no-op in fp32; under bf16/fp16 autocast
  only the residual branch is rounded. Measured on real CT slices with the shipped weights (bf16 vs
  fp32, HU): RMSE 3.1-3.8 -> 0.2-1.1, max 15-27 -> 1.4-5 (``tests/test_engine_bf16_accuracy.py``
  pins dridsr and mdrn).
* **memory format kept** (SRDA's pure-torch deformable convolution): its output is returned in its
  input's memory format so a channels_last network does not convert every later layer's input.

A network unknown to this module still gets the generic rewrites (weight norm, residual scale, 1x1
convolutions, memory format). The result is in eval mode. Not for training: use a fresh
``ModelSpec.load``. Call it after ``ModelSpec.load`` and before :func:`MedSRLib.engine.run_slices`.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from .blocks import NCAB, ResBlock
from .deform import DeformConv2dV1
from .idman import MAB, fold_weight_norm, mab_kxk_to_1x1
from .mdrn import BSRB, FMDRB, MDRN
from .w2amsn import W2AMSB

__all__ = ["prepare_for_inference"]


def prepare_for_inference(module: nn.Module) -> nn.Module:
    """Apply every exact inference rewrite to ``module`` in place (idempotent); returns it in eval mode."""
    module.eval()
    _fold_parametrizations(module)
    for m in list(module.modules()):
        if isinstance(m, MAB) and m.pool == "global" and m.pooled_conv == "kxk":
            mab_kxk_to_1x1(m)
    _swap_classes(module)
    for m in module.modules():
        if isinstance(m, DeformConv2dV1) and not getattr(m, "_medsr_keeps_format", False):
            m.register_forward_hook(_same_memory_format)
            m._medsr_keeps_format = True
    for name in getattr(module, "full_precision_layers", ()):
        _run_in_full_precision(module.get_submodule(name))
    return module


_REDUCED = (torch.bfloat16, torch.float16)


def _run_in_full_precision(m: nn.Module) -> None:
    """Give ``m`` a subclass whose forward runs with autocast off on float32 inputs (bf16/fp16 inputs
    are cast up; names and state dict unchanged; idempotent)."""
    cls = type(m)
    if getattr(cls, "_medsr_full_precision", False):
        return
    inner = cls.forward

    def forward(self: nn.Module, *args: Any, **kwargs: Any) -> Any:
        device_type = next((a.device.type for a in args if isinstance(a, torch.Tensor)), "cpu")
        args = tuple(a.float() if isinstance(a, torch.Tensor) and a.dtype in _REDUCED else a for a in args)
        if not torch.is_autocast_enabled(device_type):
            return inner(self, *args, **kwargs)
        with torch.autocast(device_type=device_type, enabled=False):
            return inner(self, *args, **kwargs)

    m.__class__ = type(f"FullPrecision{cls.__name__}", (cls,), {"forward": forward, "_medsr_full_precision": True})


# ----------------------------------------------------------------------------------------- weights


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


def _scale_conv_(conv: nn.Conv2d, scale: torch.Tensor | float, *, dim: int = 0) -> None:
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


def _pointwise(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
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
    """A 1x1 ``nn.Conv2d`` (groups 1, no padding) run by :func:`_pointwise`."""

    def _conv_forward(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        return _pointwise(x, weight, bias, self.stride)


def _add_(y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``y + x``, written into ``y`` when that gives the same dtype and shape (``y`` must be a fresh tensor)."""
    if y.shape == x.shape and y.dtype == torch.result_type(y, x) and not y.requires_grad:
        return y.add_(x)
    return y + x


def _same_memory_format(_module: nn.Module, inputs: tuple[Any, ...], output: torch.Tensor) -> torch.Tensor:
    """Forward hook: ``output`` in the memory format of the module's first input."""
    x = inputs[0]
    if output.dim() != 4 or not x.is_contiguous(memory_format=torch.channels_last):
        return output
    if x.is_contiguous() and not (x.shape[1] == 1 and x.device.type in ("cpu", "cuda")):
        return output  # plain NCHW (a 1-channel input is both: follow the engine's cpu/cuda default)
    return output.contiguous(memory_format=torch.channels_last)


class _ResBlock(ResBlock):
    """:class:`ResBlock` with ``res_scale`` folded into its last convolution and an in-place skip."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _add_(self.body(x), x)


class _NCAB(NCAB):
    """:class:`NCAB` whose attention pools before the 1x1 ``upper`` convolution; in-place tail."""

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.upper(x.mean(dim=(2, 3), keepdim=True)), dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.lower(x)
        att = self.attention(x)
        if y.dtype == torch.result_type(y, att):
            return _add_(y.mul_(att), x)
        return att * y + x


class _BSRB(BSRB):
    """:class:`BSRB` with the skip added and the ReLU applied in place."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu_(_add_(self.conv(x), x)) if isinstance(self.act, nn.ReLU) else self.act(self.conv(x) + x)


class _FMDRB(FMDRB):
    """:class:`FMDRB` with the block residual added in place."""

    def _add_residual(self, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return _add_(out, x)


class _MDRN(MDRN):
    """:class:`MDRN` whose aggregation 1x1 conv is a running sum over the blocks (no concatenation)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_lr_input(x, model="MDRN", min_size=self.min_size)
        fuse = self.aggregate[0]
        width = fuse.in_channels // len(self.blocks)
        f0 = self.head(x)
        f, total = f0, None
        for i, block in enumerate(self.blocks):
            f = block(f)
            part = _pointwise(f, fuse.weight[:, i * width : (i + 1) * width], fuse.bias if i == 0 else None)
            total = part if total is None else _add_(total, part)
        assert total is not None
        return self.upsample(_add_(self.aggregate[2](self.aggregate[1](total)), f0))


class _W2AMSB(W2AMSB):
    """:class:`W2AMSB` with lambdas and ``res_scale`` in ``fuse``, one stage-2 concatenation, in-place skip."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s1 = torch.relu_(self.conv_s1(x))
        w1 = torch.relu_(self.conv_w1(x))
        both = torch.cat([s1, w1], dim=1)
        del s1, w1
        s2, w2 = self.conv_s2(both), self.conv_w2(both)  # conv_w2's input channels were permuted
        del both
        if self.stage2_act:
            s2, w2 = torch.relu_(s2), torch.relu_(w2)
        return _add_(self.fuse(torch.cat([self.att_s(s2), self.att_w(w2)], dim=1)), x)


def _check_lr_input(x: torch.Tensor, *, model: str, min_size: int) -> None:
    from . import base, w2amsn  # the shared check may move from w2amsn to base

    check = getattr(base, "check_lr_input", None) or w2amsn.check_lr_input
    check(x, model=model, min_size=min_size)


def _prepare_w2amsb(m: W2AMSB) -> None:
    w1 = m.conv_s1.out_channels
    with torch.no_grad():
        m.conv_w2.weight.copy_(torch.cat([m.conv_w2.weight[:, w1:], m.conv_w2.weight[:, :w1]], dim=1))
    half = m.fuse.in_channels // 2
    scale = torch.cat([m.lambda1.detach().expand(half), m.lambda2.detach().expand(half)])
    _scale_conv_(m.fuse, scale, dim=1)
    _scale_conv_(m.fuse, m.res_scale, dim=0)
    with torch.no_grad():
        m.lambda1.fill_(1.0)
        m.lambda2.fill_(1.0)
    m.res_scale = 1.0


def _prepare_resblock(m: ResBlock) -> None:
    if m.res_scale != 1.0:
        _scale_conv_(m.body[-1], m.res_scale, dim=0)
        m.res_scale = 1.0


#: Exact swaps: original class -> (inference subclass, weight rewrite before the swap, condition).
_SWAPS: list[tuple[type, type, Any, Any]] = [
    (ResBlock, _ResBlock, _prepare_resblock, lambda m: isinstance(m.body[-1], nn.Conv2d)),
    (NCAB, _NCAB, None, lambda m: isinstance(m.upper, nn.Conv2d) and m.upper.kernel_size == (1, 1)),
    (BSRB, _BSRB, None, None),
    (FMDRB, _FMDRB, None, None),
    (
        MDRN,
        _MDRN,
        None,
        lambda m: isinstance(m.aggregate[0], nn.Conv2d)
        and m.aggregate[0].kernel_size == (1, 1)
        and m.aggregate[0].in_channels % len(m.blocks) == 0,
    ),
    (W2AMSB, _W2AMSB, _prepare_w2amsb, None),
]


def _is_pointwise(m: nn.Conv2d) -> bool:
    return m.kernel_size == (1, 1) and m.groups == 1 and m.padding in ((0, 0), "valid") and m.dilation == (1, 1)


_SWAPS.append((nn.Conv2d, _PointwiseConv2d, None, _is_pointwise))


def _swap_classes(module: nn.Module) -> None:
    """Give every module whose class is exactly a swappable class its inference subclass."""
    for m in list(module.modules()):
        for original, fast, rewrite, condition in _SWAPS:
            if type(m) is original and (condition is None or condition(m)):
                if rewrite is not None:
                    rewrite(m)
                m.__class__ = fast
                break
