"""Tiling of large slices: tile positions, balanced tile sides and blending weights (LR pixel units).

Slices larger than the memory budget allows (or than ``tile``) are cut into ``tile x tile`` LR tiles
overlapping by at least ``tile_overlap`` LR px, spread evenly; the tiles' outputs are blended with
separable weights that are 0 within ``tile_overlap / 4`` LR px of an inner tile edge, rise as
``sin^2`` over the middle half of the overlap, and sum to exactly 1 at every output pixel.
"""

from __future__ import annotations

import math

import numpy as np


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """LR start positions of tiles of side ``tile`` covering ``[0, length)``, evenly spread, with
    neighbours overlapping by at least ``overlap`` px (one tile when ``length <= tile``)."""
    if length <= tile:
        return [0]
    count = math.ceil((length - overlap) / (tile - overlap))
    return [round(i * (length - tile) / (count - 1)) for i in range(count)]


def balanced_tile(length: int, largest: int, overlap: int, *, minimum: int = 1) -> int:
    """The smallest tile side (<= ``largest``) that covers ``length`` with as few tiles as ``largest`` does.

    E.g. 512 px with at most 344 px tiles and 16 px overlap: 2 tiles of 264 px, not 2 of 344 px
    (1.06x instead of 1.8x the untiled area per axis pair)."""
    if length <= largest:
        return largest
    count = math.ceil((length - overlap) / (largest - overlap))
    return min(largest, max(minimum, 2 * overlap, math.ceil((length - overlap) / count) + overlap))


def _rise(u: np.ndarray, centre: float, half_width: float) -> np.ndarray:
    """0 below ``centre - half_width``, 1 above ``centre + half_width``, ``sin^2`` ramp between."""
    if half_width <= 0:
        return (u >= centre).astype(np.float64)
    t = np.clip((u - centre + half_width) / (2.0 * half_width), 0.0, 1.0)
    return np.sin(0.5 * np.pi * t) ** 2


def tile_weights(starts: list[int], *, tile: int, length: int, overlap: int, scale: int) -> list[np.ndarray]:
    """Per tile, float32 blending weights over its ``scale * tile`` output pixels along one axis.

    Weights are evaluated at output-pixel centres (LR units ``(k + 0.5) / scale``); across tiles they
    sum to 1 at every output pixel, and a tile's weight is 0 within ``overlap / 4`` LR px of an inner edge.
    """
    u = (np.arange(length * scale) + 0.5) / scale
    ends = [min(s + tile, length) for s in starts]
    weights = []
    for i, (start, end) in enumerate(zip(starts, ends)):
        w = np.ones_like(u)
        if i > 0:
            w *= _rise(u, (start + ends[i - 1]) / 2.0, overlap / 4.0)
        if i + 1 < len(starts):
            w *= 1.0 - _rise(u, (starts[i + 1] + end) / 2.0, overlap / 4.0)
        weights.append(w[start * scale : end * scale].astype(np.float32))
    return weights

