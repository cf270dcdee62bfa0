"""The layer stack as boxes sized by their feature maps: the classic LeNet/VGG picture.

Every convolution, pooling and fully connected layer becomes a box, left to right: its height
follows the map's height, its depth (drawn in perspective) the map's width, and its thickness the
number of channels. Sizes are compressed (square root for the map, logarithm for the channels) so
that a 224x224x3 input and a 7x7x512 map both stay readable. Uses matplotlib's Agg canvas directly,
so it works without a display and leaves pyplot's global state alone.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from convkit.inspect.summary import LayerRow, Summary
from convkit.layers.shapes import format_shape

__all__ = ["plot_summary"]

_COLOURS = {
    "input": "#b0b0b0",
    "conv": "#4c78a8",
    "pool": "#f58518",
    "dense": "#54a24b",
    "other": "#b279a2",
}


def _kind(row: LayerRow) -> str | None:
    name = row.type.lower()
    if "conv" in name:
        return "conv"
    if "pool" in name:
        return "pool"
    if name in ("linear", "dense", "lazylinear"):
        return "dense"
    return None


def _pick(rows: list[LayerRow], max_layers: int) -> list[LayerRow]:
    picked = [r for r in rows if not r.repeat and _kind(r) is not None and r.output_shape]
    if len(picked) > max_layers:
        # keep the layers where the shape changes: the picture is about the shapes
        changed = [r for i, r in enumerate(picked) if i == 0 or r.output_shape != picked[i - 1].output_shape]
        picked = changed if len(changed) >= 2 else picked
    if len(picked) > max_layers:
        step = (len(picked) - 1) / (max_layers - 1)
        picked = [picked[round(i * step)] for i in range(max_layers)]
    return picked


def plot_summary(summary: Summary, path: str | os.PathLike, *, max_layers: int = 40, title: str | None = None,
                 dpi: int = 100) -> Path:
    """Draw the layer stack of a :func:`~convkit.inspect.summary` result as boxes and save it.

    Args:
        summary: the result of :func:`convkit.inspect.summary`.
        path: where to write the image; the format follows the suffix (``.png``, ``.svg``, ``.pdf``).
        max_layers: at most this many boxes besides the input; deeper models keep the layers where
            the shape changes, then an even sample.
        title: the figure's title; default: the model's name and input size.
        dpi: resolution of raster formats.

    Returns:
        The path written.

    Raises:
        ValueError: ``max_layers`` below 2.

    Example:
        >>> from convkit.inspect import summary
        >>> plot_summary(summary("lenet5"), "lenet5.png")
        PosixPath('lenet5.png')
    """
    if max_layers < 2:
        raise ValueError(f"max_layers must be at least 2, got {max_layers}")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Polygon

    rows = _pick(summary.rows, max_layers)
    boxes = [("input", "input", tuple(summary.input_size))] + [(r.name, _kind(r), tuple(r.output_shape)) for r in rows]
    spatial = [s for _, _, s in boxes if len(s) == 3]
    biggest = max((max(s[1], s[2]) for s in spatial), default=1)
    most_channels = max((s[0] for s in spatial), default=1)
    units = max((s[0] for _, _, s in boxes if len(s) == 1), default=1)

    def geometry(shape):
        # (height, thickness, depth) in drawing units
        if len(shape) == 3:
            c, h, w = shape
            height = 0.6 + 3.4 * math.sqrt(h / biggest)
            depth = 0.3 + 1.7 * math.sqrt(w / biggest)
            thickness = 0.08 + 0.9 * math.log2(c + 1) / math.log2(most_channels + 1)
            return height, thickness, depth
        n = math.prod(shape)
        return 0.6 + 3.4 * math.log2(n + 1) / math.log2(max(units, n) + 1), 0.15, 0.15

    figure = Figure(figsize=(min(4 + 0.9 * len(boxes), 40), 6), dpi=dpi)
    FigureCanvasAgg(figure)
    ax = figure.add_subplot()
    x = 0.0
    gap = 0.6
    top = 0.0
    for name, kind, shape in boxes:
        height, thickness, depth = geometry(shape)
        colour = _COLOURS.get(kind or "other", _COLOURS["other"])
        dx, dy = depth * 0.6, depth * 0.45  # the oblique projection of the map's width
        y0 = -height / 2
        front = [(x, y0), (x + thickness, y0), (x + thickness, y0 + height), (x, y0 + height)]
        top_face = [(x, y0 + height), (x + thickness, y0 + height), (x + thickness + dx, y0 + height + dy),
                    (x + dx, y0 + height + dy)]
        side = [(x + thickness, y0), (x + thickness + dx, y0 + dy), (x + thickness + dx, y0 + height + dy),
                (x + thickness, y0 + height)]
        for face, shade in ((side, 0.75), (top_face, 0.9), (front, 1.0)):
            ax.add_patch(Polygon(face, closed=True, facecolor=_shade(colour, shade), edgecolor="#333333",
                                 linewidth=0.6))
        label = (format_shape(shape) if len(shape) != 3 else f"{shape[0]}@{shape[1]}x{shape[2]}")
        ax.text(x + thickness / 2, y0 - 0.25, label, ha="center", va="top", fontsize=7, rotation=90)
        ax.text(x + thickness / 2 + dx / 2, y0 + height + dy + 0.15, name, ha="left", va="bottom", fontsize=6,
                rotation=45)
        top = max(top, y0 + height + dy)
        x += thickness + dx + gap
    ax.set_xlim(-0.5, x + 1.0)
    ax.set_ylim(-3.5, top + 2.5)
    ax.set_aspect("equal")
    ax.axis("off")
    legend = [Polygon([(0, 0)], facecolor=c, edgecolor="#333333", label=k) for k, c in _COLOURS.items()
              if k == "input" or any(kind == k for _, kind, _ in boxes)]
    ax.legend(handles=legend, loc="lower right", fontsize=8, frameon=False)
    ax.set_title(title or f"{summary.model}  ({format_shape(summary.input_size)} input)", fontsize=10)
    path = Path(path)
    figure.savefig(path, dpi=dpi, bbox_inches="tight", facecolor="white")
    return path


def _shade(colour: str, factor: float) -> tuple[float, float, float]:
    r, g, b = (int(colour[i:i + 2], 16) / 255 for i in (1, 3, 5))
    return (r * factor, g * factor, b * factor)
