"""The non-learned models: ``bicubic`` (MATLAB imresize upscaling) and ``nearest`` (pixel replication).

Both map ``N x 1 x h x w`` to ``N x 1 x (s h) x (s w)`` for any integer scale in :data:`SCALES`, need
no weights and accept a 1-pixel-high slice. ``bicubic`` is :func:`MedSRLib.resize.imresize` (Keys
a = -0.5, symmetric borders, pixel-centre alignment), the baseline every paper compares against.
"""

from __future__ import annotations

import torch
from torch import nn

from ..resize import imresize
from .base import ModelSpec, register

#: Integer scales the interpolation models are registered for (any integer would work).
SCALES: tuple[int, ...] = tuple(range(2, 9))


class _Interpolation(nn.Module):
    """Base of the parameter-free upsamplers: keeps the integer ``scale``."""

    def __init__(self, *, scale: int) -> None:
        super().__init__()
        if isinstance(scale, bool) or not isinstance(scale, int) or scale < 1:
            raise ValueError(f"scale must be a positive integer; got {scale!r}")
        self.scale = scale

    def extra_repr(self) -> str:
        return f"scale={self.scale}"


class Bicubic(_Interpolation):
    """MATLAB ``imresize(x, s, 'bicubic')``: ``N x C x h x w`` -> ``N x C x (s h) x (s w)``, same dtype."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return imresize(x, scale=self.scale)


class Nearest(_Interpolation):
    """Pixel replication (each pixel becomes an ``s x s`` block): ``N x C x h x w`` -> ``N x C x s h x s w``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.repeat_interleave(self.scale, dim=-2).repeat_interleave(self.scale, dim=-1)


for _name, _factory, _config, _paper, _description in (
    ("bicubic", Bicubic, "matlab", "Keys 1981 cubic convolution (a = -0.5) as MATLAB imresize",
     "MATLAB-compatible bicubic interpolation (the papers' baseline); no weights"),
    ("nearest", Nearest, "replicate", "nearest-neighbour pixel replication",
     "nearest-neighbour pixel replication (blocky; for comparison); no weights"),
):  # fmt: skip
    register(
        ModelSpec(
            name=_name,
            network=_name,
            config=_config,
            paper=_paper,
            modality="any",
            scales=SCALES,
            factory=_factory,
            learned=False,
            min_lr_size=1,
            description=_description,
        )
    )
