"""Animations of a convolution: the kernel slides over the padded input while the output fills in.

One frame per output position (row by row), then a final frame with the whole output. Each frame shows

* the padded input grid, padding cells shaded (for a transposed convolution also the zeros inserted
  between the input's pixels), the kernel's taps highlighted (only the taps: with dilation the cells
  between them are skipped), with the kernel's values beside the taps when numbers are shown;
* the kernel;
* the output grid filling in, the current cell highlighted;
* the output-size formula with the numbers substituted, and the sum that makes the current output.

A **transposed convolution** is drawn as its equivalent direct convolution (Dumoulin & Visin, "A guide to
convolution arithmetic for deep learning", 2016): the input dilated by the stride (``s - 1`` zeros between
pixels), padded by ``d(k-1) - p`` on each side (plus ``output_padding`` after), convolved with stride 1 and
the kernel flipped. Convolution here is cross-correlation, as in CNNs (the kernel is not flipped).

Numbers are shown when the grid is small (at most 12 cells a side, not cropped): the input is a fixed small-integer
example (the guide's 5x5 input and 3x3 kernel, tiled to other sizes), and every output value is computed by
torch (``conv2d`` through convkit's :class:`~convkit.layers.Conv2d`, or ``conv_transpose2d``) and checked
against the drawn grid. Large geometries (a 224x224 input) are drawn without numbers and cropped to the
top-left ``max_outputs x max_outputs`` outputs and the input cells they read; the frames say so.

>>> from convkit.explain.animate import ConvGeometry, save_animation
>>> g = ConvGeometry(input_size=5, kernel_size=3)                 # the lectures' 5x5 -> 3x3
>>> g.output_size
(3, 3)
>>> save_animation(g, "conv.gif")                                 # 9 + 1 frames
PosixPath('conv.gif')
>>> save_animation(ConvGeometry(3, 3, stride=2, padding=1, transposed=True), "up.gif")   # 3x3 -> 5x5
PosixPath('up.gif')
"""

from __future__ import annotations

import difflib
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw
from torch import nn

from convkit.errors import ConvkitError
from convkit.explain.kernels import _font
from convkit.layers.padding import normalize_padding_mode, pad2d
from convkit.layers.shapes import (
    conv_output_size,
    format_pair,
    format_shape,
    pair,
    transposed_output_size,
)

__all__ = [
    "FORMULA",
    "TRANSPOSED_FORMULA",
    "Animation",
    "UnknownLayerError",
    "AnimationData",
    "ConvGeometry",
    "animation_data",
    "example_values",
    "frames",
    "geometry_from_layer",
    "save_animation",
]

FORMULA = "\u230a(i + 2p \u2212 d(k\u22121) \u2212 1)/s\u230b + 1"
"""The output size of a convolution along one axis (input i, padding p each side, dilation d, kernel k, stride s)."""
TRANSPOSED_FORMULA = "(i\u22121)s \u2212 2p + d(k\u22121) + output_padding + 1"
"""The output size of a transposed convolution along one axis."""
_ASYMMETRIC_FORMULA = "\u230a(i + p_before + p_after \u2212 d(k\u22121) \u2212 1)/s\u230b + 1"

# the guide's example (Dumoulin & Visin 2016, figure 2.1): 5x5 input, 3x3 kernel -> 12 12 17 / 10 17 19 / 9 6 14
EXAMPLE_INPUT = ((3, 3, 2, 1, 0), (0, 0, 1, 3, 1), (3, 1, 2, 2, 3), (2, 0, 0, 2, 2), (2, 0, 0, 0, 1))
EXAMPLE_KERNEL = ((0, 1, 2), (2, 2, 0), (0, 1, 2))

NUMBERS_MAX_CELLS = 12  # numbers are drawn when the shown grid is at most this many cells a side
MAX_OUTPUTS = 8  # default: outputs drawn per axis; larger outputs are cropped to their top-left corner

# cell kinds of the (equivalent) padded input grid
INPUT, PADDING, INSERTED = 0, 1, 2

# colours (RGB)
BACKGROUND = (255, 255, 255)
INPUT_COLOR = (222, 235, 252)
PADDING_COLOR = (196, 196, 196)
INSERTED_COLOR = (238, 232, 206)
TAP_COLOR = (52, 110, 235)
EMPTY_COLOR = (255, 255, 255)
DONE_COLOR = (198, 234, 200)
CURRENT_COLOR = (34, 139, 34)
GRID_LINE = (120, 120, 120)
_KIND_COLORS = {INPUT: INPUT_COLOR, PADDING: PADDING_COLOR, INSERTED: INSERTED_COLOR}


def _pair(value: int | Sequence[int], name: str, minimum: int) -> tuple[int, int]:
    bools = isinstance(value, bool) or (isinstance(value, Sequence) and any(isinstance(v, bool) for v in value))
    try:
        result = pair(value, name)
    except TypeError:
        result = None
    if result is None or bools:
        raise ValueError(f"{name} must be an int or a pair of ints (height, width), got {value!r}")
    if min(result) < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {value!r}")
    return result


def _padding(value) -> tuple[tuple[int, int], tuple[int, int]]:
    """int, ``(ph, pw)`` or ``((top, bottom), (left, right))`` -> ``((top, bottom), (left, right))``."""
    if isinstance(value, Sequence) and len(value) == 2 and all(isinstance(v, Sequence) for v in value):
        pads = (_pair(tuple(value[0]), "padding (top, bottom)", 0), _pair(tuple(value[1]), "padding (left, right)", 0))
        return pads
    ph, pw = _pair(value, "padding", 0)
    return (ph, ph), (pw, pw)


@dataclass(frozen=True)
class ConvGeometry:
    """The geometry of one 2-D convolution or transposed convolution, per axis (height, width).

    Args:
        input_size: the input's spatial size: an int or ``(H, W)``.
        kernel_size, stride, dilation: an int or a pair.
        padding: an int or ``(ph, pw)`` (each side), or ``((top, bottom), (left, right))``; a transposed
            convolution pads both sides alike, as torch's.
        transposed: a transposed convolution ("deconvolution").
        output_padding: of a transposed convolution, added after (bottom/right); smaller than the stride
            or the dilation.
        padding_mode: the border mode of a convolution (``zeros``, ``replicate``, ``reflect``, ``symmetric``,
            ``circular``); it changes the values in the padding, not the sizes.
        layer: a name to show (e.g. ``"resnet18 conv1"``).

    Attributes:
        All the above normalised: pairs of ints, ``padding`` as ``((top, bottom), (left, right))``.
        output_size: ``(H_out, W_out)``.

    Raises:
        ValueError: a non-positive size, kernel, stride or dilation, negative padding, an output_padding
            that is too large, or a padding mode other than zeros for a transposed convolution.
        ShapeError: the geometry gives no output (the message holds the formula with the numbers).

    Example:
        >>> ConvGeometry(7, 3, dilation=2).output_size
        (3, 3)
        >>> ConvGeometry(3, 3, stride=2, padding=1, transposed=True).output_size
        (5, 5)
    """

    input_size: tuple[int, int]
    kernel_size: tuple[int, int] = (3, 3)
    stride: tuple[int, int] = (1, 1)
    padding: tuple[tuple[int, int], tuple[int, int]] = ((0, 0), (0, 0))
    dilation: tuple[int, int] = (1, 1)
    transposed: bool = False
    output_padding: tuple[int, int] = (0, 0)
    padding_mode: str = "zeros"
    layer: str | None = None
    output_size: tuple[int, int] = field(init=False)

    def __post_init__(self):
        normal = {
            "input_size": _pair(self.input_size, "input_size", 1),
            "kernel_size": _pair(self.kernel_size, "kernel_size", 1),
            "stride": _pair(self.stride, "stride", 1),
            "padding": _padding(self.padding),
            "dilation": _pair(self.dilation, "dilation", 1),
            "output_padding": _pair(self.output_padding, "output_padding", 0),
            "padding_mode": normalize_padding_mode(self.padding_mode),
            "transposed": bool(self.transposed),
        }
        for name, value in normal.items():
            object.__setattr__(self, name, value)
        if self.transposed:
            self._check_transposed()
        elif self.output_padding != (0, 0):
            raise ValueError(f"output_padding applies to a transposed convolution only, got {self.output_padding}")
        object.__setattr__(self, "output_size", tuple(self._output_length(a) for a in (0, 1)))

    def _check_transposed(self) -> None:
        if any(before != after for before, after in self.padding):
            raise ValueError(f"a transposed convolution pads both sides alike, got {self.padding}")
        if self.padding_mode != "zeros":
            raise ValueError(f"a transposed convolution has zero padding only, got {self.padding_mode!r}")
        for op, s, d in zip(self.output_padding, self.stride, self.dilation):
            if op >= max(s, d):  # torch's rule: otherwise the extra row would not depend on the input
                raise ValueError(f"output_padding must be smaller than the stride or the dilation, got "
                                 f"output_padding={self.output_padding}, stride={self.stride}, "
                                 f"dilation={self.dilation}")

    def _output_length(self, axis: int) -> int:
        i, k, s, d = self.input_size[axis], self.kernel_size[axis], self.stride[axis], self.dilation[axis]
        before, after = self.padding[axis]
        name = ("height", "width")[axis]
        if not self.transposed:
            return conv_output_size(i, k, s, (before, after), d, layer=self.layer, axis=name, warn=False)
        return transposed_output_size(i, k, s, before, self.output_padding[axis], d, layer=self.layer, axis=name)

    # -- text ------------------------------------------------------------------------------------------

    def formula(self) -> str:
        """The output-size formula in symbols (:data:`FORMULA` or :data:`TRANSPOSED_FORMULA`)."""
        if self.transposed:
            return TRANSPOSED_FORMULA
        return FORMULA if all(b == a for b, a in self.padding) else _ASYMMETRIC_FORMULA

    def _worked(self, axis: int, out: int) -> str:
        i, k, s, d = self.input_size[axis], self.kernel_size[axis], self.stride[axis], self.dilation[axis]
        before, after = self.padding[axis]
        if self.transposed:
            return (f"({i}\u22121)\u00b7{s} \u2212 2\u00b7{before} + {d}\u00b7({k}\u22121) + "
                    f"{self.output_padding[axis]} + 1 = {out}")
        pads = f"2\u00b7{before}" if before == after else f"{before} + {after}"
        return f"\u230a({i} + {pads} \u2212 {d}\u00b7({k}\u22121) \u2212 1)/{s}\u230b + 1 = {out}"

    def worked_formula(self) -> list[str]:
        """The formula with the numbers substituted: one line per axis, or one for both when they agree.

        Example:
            >>> ConvGeometry(5, 3, stride=2, padding=1).worked_formula()
            ['height = width = ⌊(5 + 2·1 − 1·(3−1) − 1)/2⌋ + 1 = 3']
        """
        lines = [self._worked(axis, self.output_size[axis]) for axis in (0, 1)]
        if lines[0] == lines[1]:
            return [f"height = width = {lines[0]}"]
        return [f"height = {lines[0]}", f"width = {lines[1]}"]

    def describe(self) -> str:
        """One line: ``'convolution: input 5x5, kernel 3x3, stride 2, padding 1, dilation 1 -> output 3x3'``."""
        (top, bottom), (left, right) = self.padding
        padding = format_pair((top, left)) if (top, left) == (bottom, right) else \
            f"(top {top}, bottom {bottom}, left {left}, right {right})"
        text = (f"{'transposed convolution' if self.transposed else 'convolution'}: input "
                f"{format_shape(self.input_size)}, kernel {format_shape(self.kernel_size)}, "
                f"stride {format_pair(self.stride)}, padding {padding}, dilation {format_pair(self.dilation)}")
        if self.transposed and self.output_padding != (0, 0):
            text += f", output_padding {format_pair(self.output_padding)}"
        if self.padding_mode != "zeros":
            text += f", padding mode {self.padding_mode}"
        text += f" \u2192 output {format_shape(self.output_size)}"
        return f"{self.layer}: {text}" if self.layer else text

    def to_dict(self) -> dict:
        """JSON-ready: every field, ``output_size``, the formula and the worked formula."""
        (top, bottom), (left, right) = self.padding
        return {
            "layer": self.layer, "transposed": self.transposed, "input_size": list(self.input_size),
            "kernel_size": list(self.kernel_size), "stride": list(self.stride),
            "padding": {"top": top, "bottom": bottom, "left": left, "right": right},
            "dilation": list(self.dilation), "output_padding": list(self.output_padding),
            "padding_mode": self.padding_mode, "output_size": list(self.output_size),
            "formula": self.formula(), "worked_formula": self.worked_formula(),
        }

    # -- the equivalent direct convolution ----------------------------------------------------------------

    def grid_padding(self) -> tuple[tuple[int, int], tuple[int, int]]:
        """Cells before/after the (dilated) input in the drawn grid: the padding, or for a transposed
        convolution ``d(k-1) - p`` (plus output_padding after); negative means the grid is cropped."""
        if not self.transposed:
            return self.padding
        pads = []
        for k, d, (p, _), op in zip(self.kernel_size, self.dilation, self.padding, self.output_padding):
            edge = d * (k - 1) - p
            pads.append((edge, edge + op))
        return tuple(pads)  # type: ignore[return-value]

    def grid_stride(self) -> tuple[int, int]:
        """The stride of the kernel over the drawn grid: 1 for a transposed convolution."""
        return (1, 1) if self.transposed else self.stride


def _axis_cells(size: int, spacing: int, before: int, after: int) -> tuple[np.ndarray, np.ndarray]:
    """Kinds and input indices (-1 where none) of the grid cells along one axis.

    The input's ``size`` pixels stand ``spacing`` cells apart (the stride of a transposed convolution,
    else 1), with ``before``/``after`` cells around them; a negative count crops instead.
    """
    span = (size - 1) * spacing + 1
    g = np.arange(-before, span + after)
    inside = (g >= 0) & (g < span)
    on_pixel = inside & (g % spacing == 0)
    kinds = np.where(on_pixel, INPUT, np.where(inside, INSERTED, PADDING))
    return kinds, np.where(on_pixel, g // spacing, -1)


def example_values(height: int, width: int, base: Sequence[Sequence[int]] = EXAMPLE_INPUT) -> torch.Tensor:
    """The guide's small integers tiled to ``(height, width)``: reproducible and easy to add up.

    >>> example_values(2, 6)
    tensor([[3., 3., 2., 1., 0., 3.],
            [0., 0., 1., 3., 1., 0.]], dtype=torch.float64)
    """
    rows, cols = len(base), len(base[0])
    return torch.tensor([[base[r % rows][c % cols] for c in range(width)] for r in range(height)],
                        dtype=torch.float64)


@dataclass
class AnimationData:
    """What the frames draw, computed before drawing (tests check these numbers).

    Attributes:
        geometry: the :class:`ConvGeometry`.
        input_values: ``(H, W)`` float64, the input.
        kernel_values: ``(kh, kw)`` float64, the layer's kernel (for a transposed convolution, its weight).
        grid_values: the padded input (for a transposed convolution: dilated by the stride and padded), the
            grid the kernel slides over; padding values follow ``padding_mode``.
        grid_kinds: ``INPUT``, ``PADDING`` or ``INSERTED`` per grid cell (numpy int array).
        grid_source: ``(GH, GW, 2)`` input index ``(row, col)`` of each grid cell, -1 where none.
        applied_kernel: the kernel as it slides over the grid: ``kernel_values``, flipped for a
            transposed convolution.
        output: ``(H_out, W_out)`` float64, computed by torch.
        shown_output: ``(rows, cols)`` of the output drawn (the top-left corner when cropped).
        shown_grid: ``(rows, cols)`` of the grid drawn: the cells those outputs read.
    """

    geometry: ConvGeometry
    input_values: torch.Tensor
    kernel_values: torch.Tensor
    grid_values: torch.Tensor
    grid_kinds: np.ndarray
    grid_source: np.ndarray
    applied_kernel: torch.Tensor
    output: torch.Tensor
    shown_output: tuple[int, int]
    shown_grid: tuple[int, int]

    @property
    def cropped(self) -> bool:
        """Whether only the top-left part of the output is drawn."""
        return self.shown_output != tuple(self.output.shape)

    @property
    def positions(self) -> list[tuple[int, int]]:
        """The drawn output positions in frame order (row by row)."""
        rows, cols = self.shown_output
        return [(r, c) for r in range(rows) for c in range(cols)]

    def taps(self, row: int, col: int) -> list[tuple[int, int, int, int]]:
        """``(grid_row, grid_col, kernel_row, kernel_col)`` of each tap of the output at ``(row, col)``."""
        (sh, sw), (dh, dw) = self.geometry.grid_stride(), self.geometry.dilation
        kh, kw = self.applied_kernel.shape
        return [(row * sh + i * dh, col * sw + j * dw, i, j) for i in range(kh) for j in range(kw)]


def _as_values(values, shape: tuple[int, int], name: str) -> torch.Tensor:
    tensor = torch.as_tensor(np.asarray(values, dtype=np.float64))
    if tuple(tensor.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {shape}, got {tuple(tensor.shape)}")
    return tensor


def animation_data(geometry: ConvGeometry, input_values=None, kernel_values=None,
                   max_outputs: int = MAX_OUTPUTS) -> AnimationData:
    """The grid, kernel and output an animation draws, computed with torch and checked.

    Args:
        geometry: a :class:`ConvGeometry`.
        input_values: ``(H, W)`` numbers (tensor, array or nested lists); default: :func:`example_values`.
        kernel_values: ``(kh, kw)`` numbers; default: the guide's 3x3 kernel tiled to the kernel's size.
        max_outputs: outputs drawn per axis; a larger output is drawn cropped to its top-left corner.

    Returns:
        An :class:`AnimationData`.

    Raises:
        ValueError: values of the wrong shape.
        RuntimeError: torch's output disagrees with the drawn grid (a bug, not a user error).

    Example:
        >>> animation_data(ConvGeometry(5, 3)).output
        tensor([[12., 12., 17.],
                [10., 17., 19.],
                [ 9.,  6., 14.]], dtype=torch.float64)
    """
    g = geometry
    x = example_values(*g.input_size) if input_values is None else _as_values(input_values, g.input_size, "input_values")
    k = (example_values(*g.kernel_size, EXAMPLE_KERNEL) if kernel_values is None
         else _as_values(kernel_values, g.kernel_size, "kernel_values"))
    spacing = g.stride if g.transposed else (1, 1)
    rows = _axis_cells(g.input_size[0], spacing[0], *g.grid_padding()[0])
    cols = _axis_cells(g.input_size[1], spacing[1], *g.grid_padding()[1])
    either = lambda kind: (rows[0][:, None] == kind) | (cols[0][None, :] == kind)  # noqa: E731
    kinds = np.where(either(PADDING), PADDING, np.where(either(INSERTED), INSERTED, INPUT))
    source = np.stack(np.broadcast_arrays(rows[1][:, None], cols[1][None, :]), axis=-1)
    source = np.where((kinds == INPUT)[..., None], source, -1)
    if g.transposed:
        grid = torch.zeros(kinds.shape, dtype=torch.float64)
        on_pixel = kinds == INPUT
        grid[torch.from_numpy(on_pixel)] = x[torch.from_numpy(source[on_pixel][:, 0]),
                                             torch.from_numpy(source[on_pixel][:, 1])]
        applied = k.flip(0, 1)
    else:
        (top, bottom), (left, right) = g.padding
        grid = pad2d(x[None], (left, right, top, bottom), g.padding_mode)[0]
        applied = k
    output = _torch_output(g, x, k)
    _check_against_grid(g, grid, applied, output)
    shown_output = (min(g.output_size[0], max_outputs), min(g.output_size[1], max_outputs))
    shown_grid = tuple(min(n, (o - 1) * s + d * (kk - 1) + 1) for n, o, s, d, kk in zip(
        kinds.shape, shown_output, g.grid_stride(), g.dilation, g.kernel_size))
    return AnimationData(g, x, k, grid, kinds, source, applied, output, shown_output, shown_grid)  # type: ignore[arg-type]


def _torch_output(g: ConvGeometry, x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """The output as a network computes it: convkit's Conv2d, or torch's conv_transpose2d."""
    if g.transposed:
        out = F.conv_transpose2d(x[None, None], k[None, None], stride=g.stride,
                                 padding=(g.padding[0][0], g.padding[1][0]), output_padding=g.output_padding,
                                 dilation=g.dilation)
        return out[0, 0]
    from convkit.layers.conv import Conv2d

    (top, bottom), (left, right) = g.padding
    conv = Conv2d(1, g.kernel_size, g.stride, (left, right, top, bottom), g.dilation, bias=False,
                  padding_mode=g.padding_mode, in_channels=1, dtype=torch.float64)
    with torch.no_grad():
        conv.weight.copy_(k[None, None])
        return conv(x[None, None])[0, 0]


def _check_against_grid(g: ConvGeometry, grid: torch.Tensor, kernel: torch.Tensor, output: torch.Tensor) -> None:
    drawn = F.conv2d(grid[None, None], kernel[None, None], stride=g.grid_stride(), dilation=g.dilation)[0, 0]
    if drawn.shape != output.shape or not torch.allclose(drawn, output, rtol=1e-9, atol=1e-9):
        raise RuntimeError(f"convkit bug: the drawn grid does not reproduce torch's output for {g.describe()}")


# -- drawing -----------------------------------------------------------------------------------------------


def _number(value: float) -> str:
    value = float(value)
    if value.is_integer():
        return f"{value:.0f}".replace("-", "\u2212")
    return f"{value:.3g}".replace("-", "\u2212")


def _blend(a: Sequence[int], b: Sequence[int], t: float) -> tuple[int, int, int]:
    return tuple(round(x + (y - x) * t) for x, y in zip(a, b))  # type: ignore[return-value]


_MARGIN = 16
_LINE = 20
_FONT_SIZE = 14
_GAP = 36


class Animation:
    """The frames of one convolution's animation, and where each cell is drawn.

    Args:
        geometry: a :class:`ConvGeometry`.
        input_values, kernel_values, max_outputs: see :func:`animation_data`.
        numbers: draw the values in the cells; default: when the whole grid is drawn (not cropped) and
            it is at most :data:`NUMBERS_MAX_CELLS` cells a side.

    Attributes:
        data: the :class:`AnimationData` drawn.
        numbers: whether values are drawn.
        cell: the grid cells' side in pixels.
        size: ``(width, height)`` of every frame.

    Example:
        >>> anim = Animation(ConvGeometry(5, 3))
        >>> len(anim.frames()), anim.output_cell_box(0, 1)
        (10, ...)
    """

    def __init__(self, geometry: ConvGeometry, input_values=None, kernel_values=None, numbers: bool | None = None,
                 max_outputs: int = MAX_OUTPUTS):
        if max_outputs < 1:
            raise ValueError(f"max_outputs must be at least 1, got {max_outputs}")
        self.data = animation_data(geometry, input_values, kernel_values, max_outputs)
        small = max(self.data.shown_grid) <= NUMBERS_MAX_CELLS and not self.data.cropped
        self.numbers = small if numbers is None else bool(numbers)
        self.cell = 40 if self.numbers else int(np.clip(400 // max(self.data.shown_grid), 6, 24))
        self.kernel_cell = min(self.cell, 32 if self.numbers else 16)
        self.font = _font(_FONT_SIZE)
        self.cell_font = _font(max(8, int(self.cell * 0.38)))
        self.tap_font = _font(max(7, int(self.cell * 0.26)))
        self._layout()

    # -- layout ------------------------------------------------------------------------------------------

    def _header(self) -> list[str]:
        g, d = self.data.geometry, self.data
        lines = [g.describe()]
        if g.transposed:
            (pt, _), (pl, _) = g.grid_padding()
            pads = format_pair((pt, pl)).replace("-", "\u2212") + (" (negative: cropped)" if min(pt, pl) < 0 else "")
            extra = f" (+ output_padding {format_pair(g.output_padding)} after)" if any(g.output_padding) else ""
            lines += [f"drawn as the equivalent convolution: the input dilated by the stride {format_pair(g.stride)} "
                      f"(zeros inserted between pixels),",
                      f"padded by d(k\u22121)\u2212p = {pads}{extra}, slid with stride 1, kernel flipped"]
        if d.cropped:
            oh, ow = d.output.shape
            lines.append(f"showing the top-left {format_shape(d.shown_output)} of the {oh}x{ow} outputs "
                         f"and the {format_shape(d.shown_grid)} grid cells they read")
        return lines

    def _footer(self) -> list[str]:
        g = self.data.geometry
        return [f"output size = {g.formula()}", *g.worked_formula()]

    def _step_text(self, position: tuple[int, int] | None) -> str:
        d = self.data
        if position is None:
            oh, ow = d.output.shape
            return f"done: {oh}x{ow} output" + (" (values computed by torch)" if self.numbers else "")
        r, c = position
        taps = d.taps(r, c)
        if not self.numbers:
            rows, cols = (taps[0][0], taps[-1][0]), (taps[0][1], taps[-1][1])
            return f"out[{r}, {c}] reads grid rows {rows[0]}\u2013{rows[1]}, columns {cols[0]}\u2013{cols[1]}"
        value = _number(d.output[r, c])
        if len(taps) > 9:
            return f"out[{r}, {c}] = sum of {len(taps)} products = {value}"
        terms = " + ".join(f"{_number(d.grid_values[gr, gc])}\u00b7{_number(d.applied_kernel[i, j])}"
                           for gr, gc, i, j in taps)
        return f"out[{r}, {c}] = {terms} = {value}"

    def _layout(self) -> None:
        d, cell, kcell = self.data, self.cell, self.kernel_cell
        gh, gw = d.shown_grid
        oh, ow = d.shown_output
        kh, kw = d.applied_kernel.shape
        self.header, self.footer = self._header(), self._footer()
        self.steps = [self._step_text(p) for p in d.positions] + [self._step_text(None)]
        top = _MARGIN + len(self.header) * _LINE + _LINE // 2 + _LINE  # header, then the panels' labels
        self.input_origin = (_MARGIN, top)
        x_kernel = _MARGIN + gw * cell + _GAP
        kernel_width = max(kw * kcell, 110)
        self.kernel_origin = (x_kernel + (kernel_width - kw * kcell) // 2, top)
        self.output_origin = (x_kernel + kernel_width + _GAP, top)
        panels_bottom = top + max(gh * cell, kh * kcell, oh * cell)
        self.legend_y = panels_bottom + _LINE // 2
        self.footer_y = self.legend_y + _LINE + _LINE // 2
        texts = self.header + self.footer + self.steps
        widest = max(self.font.getlength(t) for t in texts)
        width = max(self.output_origin[0] + ow * cell, _MARGIN + widest, 560) + _MARGIN
        height = self.footer_y + (len(self.footer) + 1) * _LINE + _MARGIN
        self.size = (int(width), int(height))

    def input_cell_box(self, row: int, col: int) -> tuple[int, int, int, int]:
        """``(x0, y0, x1, y1)`` (inclusive) of a grid cell; row and col count from the grid's top-left."""
        x, y = self.input_origin
        return (x + col * self.cell, y + row * self.cell, x + (col + 1) * self.cell - 1, y + (row + 1) * self.cell - 1)

    def output_cell_box(self, row: int, col: int) -> tuple[int, int, int, int]:
        """``(x0, y0, x1, y1)`` (inclusive) of an output cell."""
        x, y = self.output_origin
        return (x + col * self.cell, y + row * self.cell, x + (col + 1) * self.cell - 1, y + (row + 1) * self.cell - 1)

    def kernel_cell_box(self, row: int, col: int) -> tuple[int, int, int, int]:
        """``(x0, y0, x1, y1)`` (inclusive) of a kernel cell (the kernel as applied: flipped if transposed)."""
        x, y, k = *self.kernel_origin, self.kernel_cell
        return (x + col * k, y + row * k, x + (col + 1) * k - 1, y + (row + 1) * k - 1)

    # -- drawing -----------------------------------------------------------------------------------------

    def _base(self) -> Image.Image:
        """What every frame shares: texts, the grid, the kernel, the empty output, the legend."""
        d, g = self.data, self.data.geometry
        image = Image.new("RGB", self.size, BACKGROUND)
        draw = ImageDraw.Draw(image)
        for n, line in enumerate(self.header):
            draw.text((_MARGIN, _MARGIN + n * _LINE), line, fill=(0, 0, 0), font=self.font)
        label_y = self.input_origin[1] - _LINE
        grid_label = "padded input" if not g.transposed else "dilated + padded input"
        draw.text((self.input_origin[0], label_y), f"{grid_label} {format_shape(d.grid_values.shape)}",
                  fill=(0, 0, 0), font=self.font)
        kernel_label = "kernel (flipped)" if g.transposed else "kernel"
        kx = self.kernel_origin[0] + d.applied_kernel.shape[1] * self.kernel_cell // 2
        draw.text((kx, label_y), kernel_label, fill=(0, 0, 0), font=self.font, anchor="ma")
        oh, ow = d.output.shape
        draw.text((self.output_origin[0], label_y), f"output {oh}x{ow}", fill=(0, 0, 0), font=self.font)
        for r in range(d.shown_grid[0]):
            for c in range(d.shown_grid[1]):
                self._grid_cell(draw, r, c, tapped=None)
        for i in range(d.applied_kernel.shape[0]):
            for j in range(d.applied_kernel.shape[1]):
                box = self.kernel_cell_box(i, j)
                draw.rectangle(box, fill=_blend(BACKGROUND, TAP_COLOR, 0.35), outline=GRID_LINE)
                if self.numbers:
                    draw.text(((box[0] + box[2]) / 2, (box[1] + box[3]) / 2), _number(d.applied_kernel[i, j]),
                              fill=(0, 0, 0), font=self.cell_font, anchor="mm")
        for r, c in d.positions:
            draw.rectangle(self.output_cell_box(r, c), fill=EMPTY_COLOR, outline=GRID_LINE)
        self._legend(draw)
        for n, line in enumerate(self.footer):
            draw.text((_MARGIN, self.footer_y + n * _LINE), line, fill=(0, 0, 0), font=self.font)
        return image

    def _legend(self, draw: ImageDraw.ImageDraw) -> None:
        entries = [("input", INPUT_COLOR), ("padding", PADDING_COLOR)]
        if self.data.geometry.transposed:
            entries.append(("inserted zero", INSERTED_COLOR))
        entries += [("kernel taps", _blend(INPUT_COLOR, TAP_COLOR, 0.55)), ("current output", CURRENT_COLOR)]
        x, y = _MARGIN, self.legend_y
        for text, colour in entries:
            draw.rectangle((x, y + 3, x + 12, y + 15), fill=colour, outline=GRID_LINE)
            draw.text((x + 18, y), text, fill=(0, 0, 0), font=self.font)
            x += 18 + int(self.font.getlength(text)) + 18

    def _grid_cell(self, draw: ImageDraw.ImageDraw, r: int, c: int, tapped: float | None) -> None:
        d = self.data
        kind = int(d.grid_kinds[r, c])
        colour = _KIND_COLORS[kind]
        box = self.input_cell_box(r, c)
        if tapped is not None:
            colour = _blend(colour, TAP_COLOR, 0.55)
        draw.rectangle(box, fill=colour, outline=TAP_COLOR if tapped is not None else GRID_LINE,
                       width=2 if tapped is not None and self.cell >= 12 else 1)
        if not self.numbers:
            return
        ink = (0, 0, 0) if kind == INPUT else (105, 105, 105)
        draw.text(((box[0] + box[2]) / 2, (box[1] + box[3]) / 2), _number(d.grid_values[r, c]), fill=ink,
                  font=self.cell_font, anchor="mm")
        if tapped is not None:  # the kernel's value at this tap, as in the guide's figures
            draw.text((box[2] - 3, box[3] - 2), f"\u00d7{_number(tapped)}", fill=(10, 40, 140), font=self.tap_font,
                      anchor="rd")

    def _output_cell(self, draw: ImageDraw.ImageDraw, r: int, c: int, current: bool) -> None:
        box = self.output_cell_box(r, c)
        draw.rectangle(box, fill=CURRENT_COLOR if current else DONE_COLOR, outline=GRID_LINE)
        if self.numbers:
            draw.text(((box[0] + box[2]) / 2, (box[1] + box[3]) / 2), _number(self.data.output[r, c]),
                      fill=(255, 255, 255) if current else (0, 0, 0), font=self.cell_font, anchor="mm")

    def frames(self) -> list[Image.Image]:
        """One RGB frame per drawn output position (row by row), then one with the whole output.

        Returns:
            ``len(data.positions) + 1`` images of size :attr:`size`.
        """
        d = self.data
        base = self._base()
        done = base.copy()  # the output cells filled so far
        images = []
        for n, (r, c) in enumerate(d.positions):
            frame = done.copy()
            draw = ImageDraw.Draw(frame)
            taps = d.taps(r, c)
            for gr, gc, i, j in taps:
                self._grid_cell(draw, gr, gc, tapped=float(d.applied_kernel[i, j]))
            if max(d.geometry.dilation) > 1:  # the window's span, so the skipped cells read as skipped
                first, last = self.input_cell_box(*taps[0][:2]), self.input_cell_box(*taps[-1][:2])
                draw.rectangle((first[0], first[1], last[2], last[3]), outline=TAP_COLOR)
            self._output_cell(draw, r, c, current=True)
            draw.text((_MARGIN, self.footer_y + len(self.footer) * _LINE), self.steps[n], fill=(0, 0, 0),
                      font=self.font)
            images.append(frame)
            self._output_cell(ImageDraw.Draw(done), r, c, current=False)
        final = done
        ImageDraw.Draw(final).text((_MARGIN, self.footer_y + len(self.footer) * _LINE), self.steps[-1],
                                   fill=(0, 0, 0), font=self.font)
        images.append(final)
        return images

    def save(self, path: str | os.PathLike, fps: float = 2.0) -> Path:
        """Write the frames as a looping GIF (atomically); the final frame stays three times as long.

        Raises:
            ValueError: a non-positive fps.
        """
        from convkit.utils import atomic_write

        if not fps > 0:
            raise ValueError(f"fps must be positive, got {fps}")
        images = _shared_palette(self.frames())
        step = max(20, round(1000 / fps))  # GIF viewers treat delays under 20 ms as 100 ms
        durations = [step] * (len(images) - 1) + [3 * step]
        return atomic_write(path, lambda tmp: images[0].save(
            tmp, format="GIF", save_all=True, append_images=images[1:], duration=durations, loop=0))


def _shared_palette(images: list[Image.Image]) -> list[Image.Image]:
    """Palette images sharing one palette, taken from the first and last frames (which hold every colour).

    Pillow would otherwise quantize each RGB frame on its own with median cut, some 60 ms a frame.
    """
    width, height = images[0].size
    sheet = Image.new("RGB", (width, 2 * height))
    sheet.paste(images[0], (0, 0))
    sheet.paste(images[-1], (0, height))
    palette = sheet.quantize(256, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE)
    return [image.quantize(palette=palette, dither=Image.Dither.NONE) for image in images]


def frames(geometry: ConvGeometry, input_values=None, kernel_values=None, numbers: bool | None = None,
           max_outputs: int = MAX_OUTPUTS) -> list[Image.Image]:
    """The animation's frames: one per output position, then one with the whole output.

    Args:
        geometry: a :class:`ConvGeometry`.
        input_values, kernel_values: ``(H, W)`` and ``(kh, kw)`` numbers; default: the guide's example.
        numbers: draw the values; default: when the grid is not cropped and at most 12 cells a side.
        max_outputs: outputs drawn per axis (larger outputs are cropped to their top-left corner).

    Returns:
        RGB images, all the same size: ``min(H_out, max_outputs) * min(W_out, max_outputs) + 1`` of them.

    Example:
        >>> len(frames(ConvGeometry(5, 3, stride=2, padding=1)))
        10
    """
    return Animation(geometry, input_values, kernel_values, numbers, max_outputs).frames()


def save_animation(geometry: ConvGeometry, path: str | os.PathLike, fps: float = 2.0, numbers: bool | None = None,
                   input_values=None, kernel_values=None, max_outputs: int = MAX_OUTPUTS) -> Path:
    """Write the animation as a looping GIF (Pillow); see :func:`frames` for the arguments.

    Returns:
        ``path`` as a Path.

    Example:
        >>> save_animation(ConvGeometry(5, 3), "conv.gif", fps=1)
        PosixPath('conv.gif')
    """
    return Animation(geometry, input_values, kernel_values, numbers, max_outputs).save(path, fps)


# -- a layer of a model ---------------------------------------------------------------------------------------


class UnknownLayerError(KeyError, ConvkitError):
    """A model has no layer of the name asked for; the message suggests close names."""

    def __str__(self) -> str:  # KeyError quotes its message; this one is a sentence
        return str(self.args[0])


def geometry_from_layer(model: nn.Module | str | os.PathLike, layer_name: str,
                        input_shape: Sequence[int] | None = None, **model_kwargs) -> ConvGeometry:
    """The geometry of one convolution of a model, at the input size it sees.

    The layer's input size comes from :func:`convkit.summary` (a shape trace on the meta device: nothing is
    computed, no memory is used); its kernel, stride, padding (``"same"`` resolved), dilation and padding
    mode from the layer. Groups and channels are not drawn (one channel, one filter).

    Args:
        model: an ``nn.Module``, a zoo name (``"resnet18"``) or a model file (``.yaml``).
        layer_name: the layer's qualified name, as ``convkit summary`` lists it (``"conv1"``,
            ``"features.c1"``, ``"layer1.0.conv1"``).
        input_shape: the model's per-sample input ``(C, H, W)`` (or ``(H, W)``); default: the model's own.
        **model_kwargs: for a zoo name or model file, e.g. ``in_channels=1``.

    Returns:
        A :class:`ConvGeometry` named ``"<model> <layer>"``.

    Raises:
        UnknownLayerError: (a KeyError) no layer of that name; the message suggests close names and lists
            the convolutions.
        ValueError: the layer is not a convolution or transposed convolution.
        UnknownModelError, ModelFileError: a bad zoo name or model file.
        ShapeError: the model cannot take ``input_shape``.

    Example:
        >>> geometry_from_layer("resnet18", "conv1").describe()
        'resnet18 conv1: convolution: input 224x224, kernel 7x7, stride 2, padding 3, dilation 1 → output 112x112'
    """
    from convkit.inspect import summary
    from convkit.models.reference import model_cfg, resolve_model

    module = model if isinstance(model, nn.Module) else resolve_model(model, meta=True, **model_kwargs)
    cfg = model_cfg(module)
    name, default = cfg.name, cfg.input_shape
    if input_shape is not None and len(input_shape) == 2:
        channels = (default or (3,))[0]
        first = next((m for m in module.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))
                      and m.in_channels), None)
        input_shape = (first.in_channels if first is not None else channels, *input_shape)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a stride that drops border pixels is not this function's news
        result = summary(module, input_size=input_shape or default)
    rows = {row.name: row for row in result.rows}
    convs = [r.name for r in result.rows if r.type and _is_conv(module, r.name)]
    if layer_name not in rows:
        close = difflib.get_close_matches(layer_name, list(rows), n=3, cutoff=0.5)
        hint = f"; did you mean {' or '.join(map(repr, close))}?" if close else "."
        listed = ", ".join(convs[:12]) + (", ..." if len(convs) > 12 else "")
        raise UnknownLayerError(f"{name} has no layer {layer_name!r}{hint} Its convolutions: {listed}")
    layer = module.get_submodule(layer_name)
    row = rows[layer_name]
    if not isinstance(layer, (nn.Conv2d, nn.ConvTranspose2d)):
        raise ValueError(f"{name} layer {layer_name!r} ({type(layer).__name__}) is not a 2-D convolution; "
                         f"animate draws convolutions (give its window with --kernel/--stride instead). "
                         f"Its convolutions: {', '.join(convs[:12])}")
    spatial = tuple(row.input_shape[-2:])
    label = f"{name} {layer_name}"
    if isinstance(layer, nn.ConvTranspose2d):
        return ConvGeometry(spatial, tuple(layer.kernel_size), tuple(layer.stride), tuple(layer.padding),
                            tuple(layer.dilation), transposed=True, output_padding=tuple(layer.output_padding),
                            layer=label)
    top, bottom, left, right = row.padding
    return ConvGeometry(spatial, tuple(layer.kernel_size), tuple(layer.stride), ((top, bottom), (left, right)),
                        tuple(layer.dilation), padding_mode=getattr(layer, "padding_mode", "zeros"), layer=label)


def _is_conv(model: nn.Module, name: str) -> bool:
    try:
        return isinstance(model.get_submodule(name), (nn.Conv2d, nn.ConvTranspose2d))
    except AttributeError:
        return False
