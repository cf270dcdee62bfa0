"""Receptive fields: which input pixels a feature can see, for chains and for any graph.

For one axis a feature map is described by three numbers (Dang-Ha, "A guide to receptive field
arithmetic for CNNs", 2017; Araujo et al., "Computing Receptive Fields of CNNs", Distill 2019):

* ``size`` r: how many input pixels one feature sees;
* ``jump`` j: the distance in input pixels between two neighbouring features;
* ``start`` s: the input coordinate of the centre of the first feature's field (input pixel
  centres are at 0, 1, ..., W-1, so a field that starts left of 0 covers padding).

A window of kernel k, stride S, padding p (before) and dilation d maps them as::

    r_out = r_in + (k - 1) * d * j_in
    j_out = j_in * S
    s_out = s_in + ((k - 1) / 2 * d - p) * j_in

Where paths join (a residual sum, Inception's concatenation, a broadcast) the field of a feature is
the union of the fields it sees along every path, so convkit takes the interval that covers them all:
the maximum over paths for the centred branches of ResNet and Inception. Once the spatial layout is
gone (global pooling, flatten, a linear layer) a feature sees the union over all positions.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from convkit.layers.shapes import format_pair

__all__ = ["ReceptiveField", "receptive_field_chain"]

# Internally a field is a tuple (r_h, j_h, s_h, r_w, j_w, s_w, spatial): tuples are cheap to make
# for every operator of the forward pass.
Axis = tuple[float, float, float]
RF = tuple[float, float, float, float, float, float, bool]

INPUT: RF = (1.0, 1.0, 0.0, 1.0, 1.0, 0.0, True)


@dataclass(frozen=True)
class ReceptiveField:
    """The receptive field of a feature map on the input, per axis ``(height, width)``.

    Attributes:
        size: input pixels one feature sees.
        jump: input pixels between neighbouring features.
        start: input coordinate of the centre of the first feature's field (pixel centres at 0, 1, ...).
        spatial: ``False`` once the spatial layout is gone (after global pooling or flatten); the
            field then is the union over every position.

    Example:
        >>> receptive_field_chain([(3, 1, 1)] * 3)[-1].size
        (7, 7)
    """

    size: tuple[float, float]
    jump: tuple[float, float]
    start: tuple[float, float]
    spatial: bool = True

    @classmethod
    def from_tuple(cls, rf: RF) -> ReceptiveField:
        return cls((_num(rf[0]), _num(rf[3])), (_num(rf[1]), _num(rf[4])), (_num(rf[2]), _num(rf[5])), bool(rf[6]))

    def to_dict(self) -> dict:
        return {"size": list(self.size), "jump": list(self.jump), "start": list(self.start), "spatial": self.spatial}

    @classmethod
    def from_dict(cls, data: dict) -> ReceptiveField:
        return cls(tuple(data["size"]), tuple(data["jump"]), tuple(data["start"]), bool(data.get("spatial", True)))

    def __str__(self) -> str:
        return f"{format_pair(self.size)}/{format_pair(self.jump)}/{format_pair(self.start)}"


def _num(value: float) -> float | int:
    """Integers as ints (the usual case), fractions as floats rounded for display stability."""
    value = float(value)
    return int(value) if value.is_integer() else round(value, 4)


def receptive_field_chain(layers: Iterable[Sequence[int]]) -> list[ReceptiveField]:
    """Receptive fields after each window of a sequential chain, square windows.

    Args:
        layers: ``(kernel, stride, padding)`` or ``(kernel, stride, padding, dilation)`` per layer;
            activations and batch norm do not change the field and are left out.

    Returns:
        One :class:`ReceptiveField` per layer.

    Example:
        >>> [f.size[0] for f in receptive_field_chain([(11, 4, 2), (3, 2, 0), (5, 1, 2)])]   # AlexNet
        [11, 19, 51]
    """
    rf = INPUT
    out = []
    for layer in layers:
        k, s, p, d = (*layer, 1) if len(layer) == 3 else layer
        rf = window(rf, (k, k), (s, s), (p, p), (d, d))
        out.append(ReceptiveField.from_tuple(rf))
    return out


def _axes(rf: RF) -> tuple[Axis, Axis]:
    return (rf[0], rf[1], rf[2]), (rf[3], rf[4], rf[5])


def _join(h: Axis, w: Axis, spatial: bool) -> RF:
    return (*h, *w, spatial)


def _window(a: Axis, k: float, s: float, p: float, d: float) -> Axis:
    r, j, st = a
    return r + (k - 1) * d * j, j * s, st + ((k - 1) / 2 * d - p) * j


def window(rf: RF, kernel, stride, padding, dilation=(1, 1)) -> RF:
    """The field after a convolution or pooling window (pairs ``(h, w)``; ``padding`` before)."""
    h, w = _axes(rf)
    return _join(_window(h, kernel[0], stride[0], padding[0], dilation[0]),
                 _window(w, kernel[1], stride[1], padding[1], dilation[1]), rf[6])


def _transposed(a: Axis, k: float, s: float, p: float, d: float) -> Axis:
    # output o takes inputs i with o = i*s - p + t*d, t < k: a span of (k - 1)*d/s input steps
    r, j, st = a
    return r + (k - 1) * d / s * j, j / s, st + (p - (k - 1) * d / 2) / s * j


def transposed_window(rf: RF, kernel, stride, padding, dilation=(1, 1)) -> RF:
    """The field after a transposed convolution (the jump shrinks by the stride)."""
    h, w = _axes(rf)
    return _join(_transposed(h, kernel[0], stride[0], padding[0], dilation[0]),
                 _transposed(w, kernel[1], stride[1], padding[1], dilation[1]), rf[6])


def adaptive(rf: RF, in_hw: Sequence[int], out_hw: Sequence[int]) -> RF:
    """Adaptive pooling: output i pools input ``[floor(i*n/o), ceil((i+1)*n/o))``; the largest window counts."""
    axes = []
    for a, n, o in zip(_axes(rf), in_hw, out_hw):
        r, j, st = a
        n, o = int(n), int(o)
        widest = max(math.ceil((i + 1) * n / o) - (i * n) // o for i in range(o)) if o else 1
        first_end = math.ceil(n / o) if o else 1
        axes.append((r + (widest - 1) * j, j * n / max(o, 1), st + (first_end - 1) * j / 2))
    return _join(axes[0], axes[1], rf[6])


def globalize(rf: RF, hw: Sequence[int] | None) -> RF:
    """The union over every position of a ``hw`` map: the field of a feature that pools them all."""
    if not rf[6] or hw is None:
        return (*rf[:6], False)
    axes = []
    for (r, j, st), n in zip(_axes(rf), hw):
        axes.append((r + (n - 1) * j, j * n, st + (n - 1) * j / 2))
    return _join(axes[0], axes[1], False)


def union(fields: Sequence[RF], spatial: bool) -> RF:
    """The interval covering every field (paths that join); the jump is the largest."""
    if len(fields) == 1:
        f = fields[0]
        return f if f[6] == spatial else (*f[:6], spatial)
    axes = []
    for i in (0, 3):
        lo = min(f[i + 2] - (f[i] - 1) / 2 for f in fields)
        hi = max(f[i + 2] + (f[i] - 1) / 2 for f in fields)
        axes.append((hi - lo + 1, max(f[i + 1] for f in fields), (lo + hi) / 2))
    return _join(axes[0], axes[1], spatial)


def shift(rf: RF, offsets: Sequence[float], steps: Sequence[float] = (1, 1)) -> RF:
    """Output position 0 sits at input position ``offset`` and neighbours are ``step`` apart (slicing, padding)."""
    axes = []
    for (r, j, st), off, step in zip(_axes(rf), offsets, steps):
        axes.append((r, j * step, st + off * j))
    return _join(axes[0], axes[1], rf[6])


def resize(rf: RF, in_hw: Sequence[int], out_hw: Sequence[int]) -> RF:
    """An operator convkit has no rule for changed the map's size.

    It is taken as centred: growing by an even amount is symmetric padding (exact for the usual
    padding), otherwise a uniform rescale (interpolation)."""
    offsets, steps = [], []
    for n, o in zip(in_hw, out_hw):
        n, o = int(n), int(o)
        if (o - n) % 2 == 0 and abs(o - n) < max(n, 2):
            offsets.append(-(o - n) / 2)
            steps.append(1)
        else:
            scale = n / o
            offsets.append(0.5 * scale - 0.5)
            steps.append(scale)
    return shift(rf, offsets, steps)
