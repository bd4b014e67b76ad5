"""Through-plane networks: a paper's lightweight body on the LR grid with a one-direction upsampling head.

For thick-slice volumes (issue 20) a 2D slice that contains the thick axis has one coarse direction
(numpy axis 0 of the slice = rows, ``h``) and one fine direction (columns, ``w``). The network maps
``N x 1 x h x w`` in [0, 1] to ``N x 1 x (r h) x w`` for any integer factor ``r`` in its ``scales``:

* **body** on the LR grid, imported from the paper's file (never copied):
  ``'mdrn'``: MDRN's shallow conv3x3, a chain of :class:`~MedSRLib.models.mdrn.FMDRB` blocks and
  MDRN's distillation aggregation (conv1x1 nC -> C, conv3x3) plus the shallow features (Eqs. 1-4);
  ``'dridsr'``: DRIDSR's low-frequency path plus its high-frequency path (RIDM + Sobel branch), with
  ``C`` output channels (Eqs. 2-12).
* **one-direction pixel-shuffle tail per factor** (MDSR-style: shared body, small per-``r`` tail):
  conv3x3 C -> r, channel ``k`` at LR row ``j`` becomes HR row ``j r + k``.
* **global residual**: the output is the tail plus the input interpolated to ``r h`` rows with the
  one-axis cubic B-spline of :func:`MedSRLib.resize.interpolation_matrix` (same position convention
  as :func:`MedSRLib.resize.slice_profile_degrade`: HR row ``i`` at LR coordinate ``(i + 0.5)/r - 0.5``).

One module serves every factor, so one weights file per modality (``<name>.safetensors``; see
:attr:`ModelSpec.multi_scale`). Call ``net(x, r)``; ``net(x)`` uses :attr:`ThroughPlaneNet.scale`
(the largest factor).
"""

from __future__ import annotations

import torch
from torch import nn

from ..resize import INTERPOLATIONS, interpolation_matrix
from .base import ModelSpec, register
from .blocks import conv1x1, conv3x3
from .checks import check_lr_input, choice, positive_int
from .rewrites import add_, body_dtype, register_swap
from .dridsr import PAPER as DRIDSR_PAPER
from .dridsr import HighFrequencyPath, LowFrequencyPath
from .mdrn import FMDRB, _InferenceFMDRB, reduced_block_chain
from .mdrn import PAPER as MDRN_PAPER

#: Integer factors one network serves.
FACTORS: tuple[int, ...] = (2, 3, 4, 5, 6, 7, 8)
#: Smallest LR side (rows and columns) the bodies accept (3x3 convs; DRIDSR's Sobel needs 2).
MIN_LR_SIZE = 2


class MDRNBody(nn.Module):
    """MDRN's feature extractor (Eqs. 1-4) without its upsampler: ``N x 1 x h x w`` -> ``N x C x h x w``."""

    def __init__(self, channels: int, n_blocks: int) -> None:
        super().__init__()
        self.head = conv3x3(1, channels)
        self.blocks = nn.ModuleList(FMDRB(channels) for _ in range(n_blocks))
        self.aggregate = nn.Sequential(conv1x1(n_blocks * channels, channels), conv3x3(channels, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f0 = self.head(x)
        outs, f = [], f0
        for block in self.blocks:
            f = block(f)
            outs.append(f)
        return self.aggregate(torch.cat(outs, dim=1)) + f0


class DRIDSRBody(nn.Module):
    """DRIDSR's two paths (Eqs. 2-12) without its upsampler: ``N x 1 x h x w`` -> ``N x C x h x w``."""

    def __init__(self, channels: int, n_blocks: int) -> None:
        super().__init__()
        self.low = LowFrequencyPath(channels, 2 * channels, channels)
        self.high = HighFrequencyPath(channels, channels, n_res_blocks=n_blocks, n_idb=min(5, n_blocks))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.low(x) + self.high(x)


BODIES = {"mdrn": MDRNBody, "dridsr": DRIDSRBody}


def shuffle_rows(x: torch.Tensor, r: int) -> torch.Tensor:
    """One-direction pixel shuffle: ``N x r x h x w`` -> ``N x 1 x (r h) x w``, channel ``k`` of LR row
    ``j`` -> HR row ``j r + k``."""
    n, c, h, w = x.shape
    return x.view(n, r, h, w).permute(0, 2, 1, 3).reshape(n, 1, h * r, w)


class ThroughPlaneNet(nn.Module):
    """Shared body + per-factor one-direction tails + cubic B-spline base (module docstring).

    Args (keyword-only):
        body: ``'mdrn'`` or ``'dridsr'``.
        channels: body width C.  n_blocks: FMDRBs (mdrn) or residual blocks (dridsr).
        scales: the integer factors (one tail each).
        base: ``'bspline3'`` or ``'linear'`` (the global residual's interpolation).
        scale: accepted for the registry's ``build(scale)``; the module always holds every factor.
    """

    #: One module for every factor in :attr:`scales` (``forward(x, r)``).
    multi_scale = True

    def __init__(self, *, body: str = "mdrn", channels: int = 32, n_blocks: int = 4,
                 scales: tuple[int, ...] = FACTORS, base: str = "bspline3", scale: int | None = None) -> None:
        super().__init__()
        choice("body", body, tuple(BODIES))
        choice("base", base, INTERPOLATIONS)
        positive_int("channels", channels)
        positive_int("n_blocks", n_blocks)
        self.scales = tuple(sorted(positive_int("scale", int(s)) for s in scales))
        if not self.scales or min(self.scales) < 2:
            raise ValueError(f"through-plane factors must be integers >= 2; got {scales!r}")
        if scale is not None and int(scale) not in self.scales:
            raise ValueError(f"scale {scale} is not one of the factors {self.scales}")
        self.scale = max(self.scales)
        self.base_kind = base
        self.min_size = MIN_LR_SIZE
        self.body = BODIES[body](channels, n_blocks)
        self.tails = nn.ModuleDict({str(r): conv3x3(channels, r) for r in self.scales})
        #: Layers on the image path (the ones reading the image, and the tails, whose output is added
        #: to the fp32 B-spline base): kept in fp32 under autocast (``rewrites.prepare_for_inference``).
        image_layers = ("head",) if body == "mdrn" else ("low", "high.f1", "high.f2", "high.sobel", "high.f3")
        self.full_precision_layers = tuple(f"body.{n}" for n in image_layers) + tuple(f"tails.{r}" for r in self.scales)
        for tail in self.tails.values():  # start exactly at the B-spline base (zero residual)
            nn.init.zeros_(tail.weight)
            nn.init.zeros_(tail.bias)

    def base(self, x: torch.Tensor, r: int) -> torch.Tensor:
        """``x`` (``N x 1 x h x w``) interpolated to ``r h`` rows (``N x 1 x r h x w``), fp32 or x's dtype."""
        h = x.shape[-2]
        m = torch.tensor(interpolation_matrix(h, r * h, self.base_kind), dtype=x.dtype, device=x.device)
        return torch.matmul(m, x)

    def forward(self, x: torch.Tensor, r: int | None = None) -> torch.Tensor:
        check_lr_input(x, model="ThroughPlaneNet", min_size=self.min_size)
        r = self.scale if r is None else int(r)
        if r not in self.scales:
            from ..errors import ScaleError

            raise ScaleError(f"through-plane network has factors {self.scales}; got {r}")
        residual = shuffle_rows(self.tails[str(r)](self.body(x)), r)
        return self.base(x.float(), r).to(residual.dtype) + residual



class _InferenceMDRNBody(MDRNBody):
    """:class:`MDRNBody` whose blocks and aggregation run in the reduced dtype of a
    ``reduced_precision_copy`` (:func:`~.mdrn.reduced_block_chain`; skip ``+ F0`` in fp32, in place);
    fp32 unchanged."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f0 = self.head(x)
        dtype = body_dtype(self)
        if dtype is None or not all(type(b) is _InferenceFMDRB for b in self.blocks):
            return super().forward(x)
        outs = [fb for _, fb in reduced_block_chain(self.blocks, f0, dtype)]  # blocks in bf16, stream in fp32
        return self.aggregate(torch.cat(outs, dim=1)).to(f0.dtype).add_(f0)


class _InferenceDRIDSRBody(DRIDSRBody):
    """:class:`DRIDSRBody` with the two paths summed in place."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return add_(self.low(x), self.high(x))


register_swap(MDRNBody, _InferenceMDRNBody)
register_swap(DRIDSRBody, _InferenceDRIDSRBody)

PAPERS = {"mdrn": MDRN_PAPER, "dridsr": DRIDSR_PAPER}
#: The shipped body (measured fastest per slice on a CPU: dense 3x3 convs, see benchmarks/bench_throughplane.py).
DEFAULT_OPTIONS = dict(body="dridsr", channels=32, n_blocks=4)
for _name, _modality, _opts in (
    ("tp-dridsr", "MR", DEFAULT_OPTIONS),
    ("tp-dridsr-ct", "CT", DEFAULT_OPTIONS),
    ("tp-mdrn", "MR", dict(body="mdrn", channels=32, n_blocks=4)),
):
    register(ModelSpec(
        name=_name, network=f"TP-{_opts['body'].upper()}", config="throughplane", paper=PAPERS[_opts["body"]],
        modality=_modality, scales=FACTORS, factory=ThroughPlaneNet, options=_opts, min_lr_size=MIN_LR_SIZE,
        description=(f"through-plane ({_modality}): {_opts['body'].upper()} body (C={_opts['channels']}, "
                     f"{_opts['n_blocks']} blocks) on the LR grid, one-direction shuffle x2-x8 over a cubic B-spline"),
        multi_scale=True,
    ))
