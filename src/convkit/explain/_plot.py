"""Shared drawing helpers: mosaics of tiles and figures saved atomically at a fixed pixel size."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from convkit.utils import atomic_write

DPI = 100


def new_figure(width_px: int, height_px: int):
    """A matplotlib Figure (object API, no pyplot: works headless) of exactly this many pixels once saved."""
    from matplotlib.figure import Figure

    return Figure(figsize=(width_px / DPI, height_px / DPI), dpi=DPI)


def save_figure(fig, path: str | os.PathLike) -> Path:
    """Writes a PNG atomically. Unlike `bbox_inches='tight'`, the size stays what `new_figure` was asked for."""
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=DPI))


def grid_shape(count: int, columns: int | None = None) -> tuple[int, int]:
    """(rows, columns) for `count` tiles: `columns` given, else a near-square grid (columns = ceil(sqrt))."""
    columns = max(1, columns or math.ceil(math.sqrt(count)))
    return max(1, math.ceil(count / columns)), columns


def mosaic(tiles: np.ndarray, columns: int | None = None, border: int = 1, fill: float = 1.0) -> np.ndarray:
    """Tiles (N, h, w[, 3]) -> one image, `border` pixels of `fill` around and between them, row by row.

    The size is rows * h + (rows + 1) * border by columns * w + (columns + 1) * border; cells without a tile
    are left `fill`.

    Example:
        >>> mosaic(np.zeros((6, 5, 5)), columns=3, border=1).shape    # 2 rows of 3 tiles, 1-pixel borders
        (13, 19)
    """
    tiles = np.asarray(tiles, dtype=np.float32)
    n, h, w = tiles.shape[:3]
    rows, columns = grid_shape(n, columns)
    out = np.full((rows * h + (rows + 1) * border, columns * w + (columns + 1) * border, *tiles.shape[3:]), fill,
                  dtype=np.float32)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, columns)
        top, left = border + r * (h + border), border + c * (w + border)
        out[top:top + h, left:left + w] = tile
    return out


def to_display(image_uint8) -> np.ndarray:
    """uint8 (C, H, W) tensor or array -> (H, W, 3) uint8 for imshow (gray repeated, extra channels dropped)."""
    a = np.asarray(image_uint8.detach().cpu() if hasattr(image_uint8, "detach") else image_uint8)
    a = np.moveaxis(a, 0, -1)
    if a.shape[-1] == 1:
        a = np.repeat(a, 3, axis=-1)
    return np.ascontiguousarray(a[..., :3]).astype(np.uint8)
