"""Convolutions with their ReLU and residual add fused in, for the reduced-precision (bf16) body on a CPU.

A bf16 network body spends much of its time outside its convolutions when each ReLU, skip add and
channel concatenation is a separate aten op: measured on an Intel Xeon with AMX (1 thread, one
48-channel 512 x 512 bf16 channels_last map): ``relu_`` 12.6 ms, ``add_`` 17 ms, ``cat`` of two maps
21 ms, while a 3x3 48 -> 48 convolution takes 13 ms. oneDNN applies a ReLU and an elementwise add of
another map inside the convolution (post-ops) at almost no cost, and a convolution of a concatenation
is the sum of convolutions of its parts (the weight split along its input channels), so a
concatenation becomes an accumulation of post-op adds. Measured there: DRIDSR's distillation block
(cat, 1x1 + ReLU, 3x3 + ReLU) 63 -> 32 ms, its residual block 47 -> 31 ms.

Two more helpers of the bf16 body: per-channel sums and means of a map by bf16 GEMMs against a ones row
(:func:`channel_sums`, :func:`channel_means`; aten's ``mean`` of a bf16 map converts it to fp32 first) and
Gram-matrix diagonals (:func:`channel_square_sums`), and :func:`conv_scaled`, a convolution whose output
channels a per-sample attention scales, applied to its weight rows (W2AMSN's NCAB, IDMAN's MAB gate).

Same arithmetic as the separate ops: a ReLU or an add happens on the fp32 accumulator before the single
rounding to bf16 (the separate ops round the convolution first; a ReLU after an add is taken on the
rounded sum, which rounding cannot change in sign), so results differ from the unfused bf16 path by bf16
rounding only; a concatenation's partial sums are each rounded to bf16 (MDRN keeps its concatenation for
that reason, see ``mdrn._InferenceFMDRB``). Used only where :func:`applies` (bf16 CPU tensors, oneDNN
available, not under autocast or compilation); elsewhere each function runs the separate ops.
"""

from __future__ import annotations

import torch
from torch import nn


def _onednn_ops_available() -> bool:
    mkldnn = getattr(torch.ops, "mkldnn", None)
    return bool(torch.backends.mkldnn.is_available() and mkldnn is not None
                and hasattr(mkldnn, "_convolution_pointwise") and hasattr(mkldnn, "_convolution_pointwise_"))


_AVAILABLE = _onednn_ops_available()


def applies(x: torch.Tensor) -> bool:
    """True when ``x`` (an ``N x C x H x W`` map) is run by the fused oneDNN convolutions: bf16 on the CPU,
    outside autocast and ``torch.compile`` (which choose their own kernels)."""
    return (_AVAILABLE and x.device.type == "cpu" and x.dtype == torch.bfloat16 and x.dim() == 4
            and not torch.is_autocast_enabled("cpu") and not torch.compiler.is_compiling())


def _fusable(x: torch.Tensor, layer: nn.Conv2d) -> bool:
    """oneDNN runs ``layer`` on ``x`` with its post-ops: :func:`applies` and zero padding given as integers."""
    return applies(x) and layer.padding_mode == "zeros" and not isinstance(layer.padding, str)


def _geometry(layer: nn.Conv2d) -> tuple[list[int], list[int], list[int], int]:
    return list(layer.padding), list(layer.stride), list(layer.dilation), int(layer.groups)  # type: ignore[arg-type]


def _relu_bf16_(x: torch.Tensor) -> torch.Tensor:
    """ReLU of a bf16 tensor in place, on its bit patterns: a bf16 value is negative exactly when its int16
    view is (the sign bit), and 0 is +0.0, so ``clamp_min(0)`` of the int16 view is the ReLU (a NaN with
    the sign bit set becomes 0). Measured on the Xeon above: 0.9 ms vs aten's bf16 ``relu_`` 12.6 ms.
    Used after a fused add: oneDNN's add + ReLU post-op pair falls back, on some shapes, to an aten
    kernel that has no bf16 form."""
    x.view(torch.int16).clamp_min_(0)
    return x


def input_slice(layer: nn.Conv2d, start: int, stop: int) -> torch.Tensor:
    """``layer``'s weight for input channels ``start:stop`` (a convolution of a concatenation is the sum of
    the convolutions of its parts with these slices), contiguous in the layout the fused call wants."""
    return layer.weight[:, start:stop].contiguous(memory_format=torch.channels_last)


def _bias(layer: nn.Conv2d, bias: bool | torch.Tensor) -> torch.Tensor | None:
    if isinstance(bias, torch.Tensor):
        return bias
    return layer.bias if bias else None


def conv(x: torch.Tensor, layer: nn.Conv2d, *, relu: bool = False, add: torch.Tensor | None = None,
         add_is_scratch: bool = False, weight: torch.Tensor | None = None,
         bias: bool | torch.Tensor = True) -> torch.Tensor:
    """``[ReLU](layer(x) [+ add])``: a new tensor, or ``add`` itself when ``add_is_scratch`` (the caller
    no longer needs it: the result is written into it, no copy; never when ``add`` shares memory with
    ``x``, which the convolution still reads); ``weight`` replaces ``layer.weight`` (e.g. an
    :func:`input_slice`), ``bias=False`` leaves ``layer.bias`` out, a tensor replaces it."""
    if add is not None and add_is_scratch and add.untyped_storage().data_ptr() == x.untyped_storage().data_ptr():
        add_is_scratch = False
    w = layer.weight if weight is None else weight
    b = _bias(layer, bias)
    if _fusable(x, layer):
        padding, stride, dilation, groups = _geometry(layer)
        if add is None:
            return torch.ops.mkldnn._convolution_pointwise(
                x, w, b, padding, stride, dilation, groups, "relu" if relu else "none", [], "")
        if groups == 1 and not add_is_scratch:
            y = torch.ops.mkldnn._convolution_pointwise.binary(
                x, add, w, b, padding, stride, dilation, groups, "add", None, None, [], None)
        else:  # in place (grouped, e.g. depthwise: the out-of-place form runs separate ops there)
            y = torch.ops.mkldnn._convolution_pointwise_.binary(
                add if add_is_scratch else add.clone(), x, w, b, padding, stride, dilation, groups, "add", None,
                None, [], None)
        return _relu_bf16_(y) if relu else y
    y = layer._conv_forward(x, w, b)
    if add is not None:
        y = add.add_(y) if add_is_scratch else y.add_(add)
    return y.relu_() if relu else y


def conv_add_(acc: torch.Tensor, x: torch.Tensor, layer: nn.Conv2d, *, relu: bool = False,
              weight: torch.Tensor | None = None, bias: bool | torch.Tensor = True) -> torch.Tensor:
    """``acc = [ReLU](acc + layer(x))`` written into ``acc`` (a fresh tensor of ``layer(x)``'s shape and
    dtype) and returned; ``weight``/``bias`` as for :func:`conv`."""
    w = layer.weight if weight is None else weight
    b = _bias(layer, bias)
    if _fusable(x, layer) and acc.dtype == x.dtype:
        padding, stride, dilation, groups = _geometry(layer)
        acc = torch.ops.mkldnn._convolution_pointwise_.binary(
            acc, x, w, b, padding, stride, dilation, groups, "add", None, None, [], None)
        return _relu_bf16_(acc) if relu else acc
    acc.add_(layer._conv_forward(x, w, b))
    return acc.relu_() if relu else acc


def conv_scaled(x: torch.Tensor, layer: nn.Conv2d, scale: torch.Tensor, *, add: torch.Tensor | None = None) -> torch.Tensor:
    """``scale * layer(x) [+ add]`` with ``scale`` an ``N x C_out`` per-sample, per-output-channel factor (a
    channel attention or gate known before the convolution): the scale multiplies ``layer``'s weight rows
    and bias (in fp32, rounded once to ``x``'s dtype), one convolution per sample, the add as its post-op,
    so the scaled map is written once instead of a convolution followed by a multiplying pass."""
    weight = layer.weight.float()
    bias = layer.bias.float() if layer.bias is not None else weight.new_zeros(weight.shape[0])
    scale = scale.float().reshape(x.shape[0], weight.shape[0])
    outs = []
    for i in range(x.shape[0]):
        rows = (weight * scale[i].view(-1, 1, 1, 1)).to(x.dtype).contiguous(memory_format=torch.channels_last)
        outs.append(conv(x[i : i + 1], layer, weight=rows, bias=(bias * scale[i]).to(x.dtype),
                         add=None if add is None else add[i : i + 1]))
    return outs[0] if len(outs) == 1 else torch.cat(outs)


def conv_of_concat(parts: list[torch.Tensor], layer: nn.Conv2d, *, relu: bool = False) -> torch.Tensor:
    """``[ReLU](layer(cat(parts, dim=1)))`` without building the concatenation: the first part's
    convolution (with the bias), then each further part's added in place."""
    starts = [0]
    for p in parts:
        starts.append(starts[-1] + int(p.shape[1]))
    if layer.groups != 1 or starts[-1] != layer.in_channels:
        raise ValueError(f"the parts hold {starts[-1]} channels; {layer} takes {layer.in_channels} (groups 1)")
    last = len(parts) - 1
    acc = conv(parts[0], layer, weight=input_slice(layer, 0, starts[1]), relu=relu and last == 0)
    for i in range(1, len(parts)):
        acc = conv_add_(acc, parts[i], layer, weight=input_slice(layer, starts[i], starts[i + 1]), bias=False,
                        relu=relu and i == last)
    return acc


#: Pixels per partial sum of :func:`channel_sums` / :func:`channel_square_sums` on a reduced-precision map
#: (each partial sum is one GEMM output, rounded once to the map's dtype; the partial sums are added in fp32).
CHANNEL_SUM_CHUNK = 1024


def channel_sums(v: torch.Tensor) -> torch.Tensor:
    """``N x P x C`` (any float dtype; e.g. a channels_last map viewed as ``N x HW x C``) -> fp32 ``N x C``
    sums over P: GEMMs of a ones row with chunks of :data:`CHANNEL_SUM_CHUNK` pixels (accumulated in fp32
    inside the GEMM, each chunk's sum rounded once to ``v``'s dtype), the chunk sums added in fp32. A bf16
    GEMM reads the map once at full speed, where a reduction with ``dtype=torch.float32`` (what ``mean``
    of a bf16 map does) converts it first: measured on the AMX Xeon, 512 x 512 x 64, 2 threads: ~2 ms vs
    tens of ms."""
    n, p, c = v.shape
    full = p - p % CHANNEL_SUM_CHUNK
    total = v.new_zeros((n, c), dtype=torch.float32)
    if full:
        ones = v.new_ones((1, CHANNEL_SUM_CHUNK))
        total += torch.matmul(ones, v[:, :full].reshape(n, full // CHANNEL_SUM_CHUNK, CHANNEL_SUM_CHUNK, c)).float().sum((1, 2))
    if full < p:
        total += torch.matmul(v.new_ones((1, p - full)), v[:, full:]).float().sum(1)
    return total


def channel_square_sums(v: torch.Tensor) -> torch.Tensor:
    """``N x P x C`` (any float dtype) -> fp32 ``N x C`` sums of squares over P: the diagonals of the
    Gram matrices of chunks of :data:`CHANNEL_SUM_CHUNK` pixels (batched GEMMs, accumulated in fp32 inside
    the GEMM, each chunk's sum rounded once to ``v``'s dtype), added in fp32. One read of the map, where
    squaring it first is a read and a write. Centre the map first where the mean may dominate (the sum
    of squares is then a difference of large numbers)."""
    n, p, c = v.shape
    full = p - p % CHANNEL_SUM_CHUNK
    total = v.new_zeros((n, c), dtype=torch.float32)
    if full:
        chunks = v[:, :full].reshape(n * (full // CHANNEL_SUM_CHUNK), CHANNEL_SUM_CHUNK, c)
        gram = torch.bmm(chunks.transpose(1, 2), chunks)
        total += torch.diagonal(gram, dim1=1, dim2=2).float().view(n, full // CHANNEL_SUM_CHUNK, c).sum(1)
    if full < p:
        rest = v[:, full:]
        total += torch.diagonal(torch.bmm(rest.transpose(1, 2), rest), dim1=1, dim2=2).float()
    return total


def channel_means(x: torch.Tensor) -> torch.Tensor:
    """Per-channel mean over H x W of an ``N x C x H x W`` map, fp32 ``N x C``: by :func:`channel_sums` for a
    channels_last reduced-precision map, else ``x.float().mean``."""
    n, c, h, w = x.shape
    if x.is_contiguous(memory_format=torch.channels_last) and x.dtype in (torch.bfloat16, torch.float16):
        return channel_sums(x.permute(0, 2, 3, 1).reshape(n, h * w, c)) / (h * w)
    return x.float().mean(dim=(2, 3))


__all__ = ["CHANNEL_SUM_CHUNK", "applies", "channel_means", "channel_square_sums", "channel_sums", "conv", "conv_add_",
           "conv_of_concat", "conv_scaled", "input_slice"]
