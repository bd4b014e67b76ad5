"""Small networks the engine tests run, and proofs of the properties those tests rely on.

``local_net`` has a receptive-field radius of exactly 3 LR px (three 3x3 convolutions), so the engine's
tiling must reproduce its untiled output exactly with the default 16 px overlap (radius <= overlap / 4).
``SymmetricNet`` commutes with every flip and 90-degree rotation, so its x8 self-ensemble equals a single
pass. ``FakeOOMNet`` raises ``torch.cuda.OutOfMemoryError`` above a pixel threshold (no GPU needed).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from MedSRLib.models.blocks import PixelShuffleHead, conv3x3

LOCAL_RADIUS = 3


def local_net(scale: int, *, channels: int = 8, seed: int = 0) -> nn.Module:
    """conv3x3 -> ReLU -> conv3x3 -> ReLU -> PixelShuffleHead (random weights, radius 3 LR px)."""
    torch.manual_seed(seed)
    return nn.Sequential(
        conv3x3(1, channels), nn.ReLU(), conv3x3(channels, channels), nn.ReLU(), PixelShuffleHead(scale, channels, 1)
    ).eval()


class SymmetricNet(nn.Module):
    """A D4-symmetric 3x3 convolution (zero padding), ReLU, then nearest x``scale``: flip/rotation-equivariant."""

    def __init__(self, scale: int) -> None:
        super().__init__()
        self.scale = scale
        kernel = torch.tensor([[0.05, 0.1, 0.05], [0.1, 0.4, 0.1], [0.05, 0.1, 0.05]])
        self.register_buffer("kernel", kernel.view(1, 1, 3, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(F.conv2d(x, self.kernel, padding=1) - 0.2)
        return F.interpolate(y, scale_factor=self.scale, mode="nearest")


class RecordingNet(nn.Module):
    """Wraps a network and records every input shape and the CPU thread count seen in forward."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.shapes: list[tuple[int, ...]] = []
        self.threads: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.shapes.append(tuple(x.shape))
        self.threads.append(torch.get_num_threads())
        return self.inner(x)


class FakeOOMNet(RecordingNet):
    """``local_net`` that raises ``torch.cuda.OutOfMemoryError`` when ``N*h*w > limit`` on a "GPU".

    ``gpu_types``: device types (as recorded by a patched ``engine.device._move`` in ``fake_device``) on which
    the limit applies; by default the limit applies everywhere (CPU included).
    """

    def __init__(self, scale: int, *, limit: int, gpu_types: tuple[str, ...] = ("cpu", "cuda")) -> None:
        super().__init__(local_net(scale))
        self.limit, self.gpu_types = limit, gpu_types
        self.fake_device = "cpu"
        self.failures: list[tuple[int, ...]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        if self.fake_device in self.gpu_types and n * h * w > self.limit:
            self.failures.append(tuple(x.shape))
            raise torch.cuda.OutOfMemoryError(f"CUDA out of memory (fake: {n * h * w} px > {self.limit})")
        return super().forward(x)


def test_local_net_receptive_field_radius_is_three_lr_pixels() -> None:
    scale = 2
    net = local_net(scale)
    x = torch.rand(1, 1, 31, 31, generator=torch.Generator().manual_seed(1))
    bumped = x.clone()
    bumped[0, 0, 15, 15] += 1.0
    with torch.inference_mode():
        changed = (net(bumped) - net(x)).abs()[0, 0] > 0
    rows, cols = np.nonzero(changed.numpy())
    centre = (np.arange(31 * scale) + 0.5) / scale  # output pixel centres in LR units
    assert changed.any()
    assert np.abs(centre[rows] - 15.5).max() <= LOCAL_RADIUS + 0.5
    assert np.abs(centre[cols] - 15.5).max() <= LOCAL_RADIUS + 0.5
    assert np.abs(centre[rows] - 15.5).max() > LOCAL_RADIUS - 0.5  # the radius is reached: not smaller


@pytest.mark.parametrize("turns,flip", [(1, False), (2, False), (3, True), (0, True)])
def test_symmetric_net_commutes_with_flips_and_rotations(turns: int, flip: bool) -> None:
    net = SymmetricNet(2)
    x = torch.rand(2, 1, 9, 14, generator=torch.Generator().manual_seed(2))

    def transform(t: torch.Tensor) -> torch.Tensor:
        return torch.rot90(t.flip(-1) if flip else t, turns, dims=(-2, -1))

    with torch.inference_mode():
        torch.testing.assert_close(net(transform(x)), transform(net(x)), rtol=0, atol=1e-6)
