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

Where paths join (a residual sum, Inception's concatenation) the field of a feature is the union of
the fields it sees along every path, so convkit takes the interval that covers them all: the maximum
over paths for the centred branches of ResNet and Inception.

A field that depends on a global operation is **global** (the whole input), not a number: global
pooling, flatten before a linear layer, and everything a pooled gate multiplies back (squeeze-and-
excitation); convkit still follows the *local path* (the field ignoring the global inputs) for
display. A linear layer over the channels of a channels-last map (ConvNeXt, Swin) is a 1x1
convolution. Where convkit cannot follow the positions (a map reshaped into windows or tokens) the
field is **unknown**, with the reason; never a made-up number. Global wins over unknown (any global
input makes the whole input visible), unknown wins over a number.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from convkit.layers.shapes import format_pair

__all__ = ["ReceptiveField", "receptive_field_chain"]

# Internally a field is a tuple (r_h, j_h, s_h, r_w, j_w, s_w, spatial, status, layout): tuples are cheap
# to make for every operator of the forward pass. status: "" a number, GLOBAL, anything else the reason
# it is unknown; layout: the (height, width) dimensions, counted from the end ((-2, -1) for NCHW,
# (-3, -2) for channels-last NHWC).
Axis = tuple[float, float, float]
RF = tuple

GLOBAL = "global"
NCHW = (-2, -1)
INPUT: RF = (1.0, 1.0, 0.0, 1.0, 1.0, 0.0, True, "", NCHW)


@dataclass(frozen=True)
class ReceptiveField:
    """The receptive field of a feature map on the input, per axis ``(height, width)``.

    Attributes:
        size: input pixels one feature sees.
        jump: input pixels between neighbouring features.
        start: input coordinate of the centre of the first feature's field (pixel centres at 0, 1, ...).
        spatial: ``False`` once the spatial layout is gone (after global pooling or flatten).
        kind: ``"numeric"``; ``"global"`` when a global operation is on the path (each feature sees the
            whole input; ``size``/``jump``/``start`` are then the local path's, ignoring the global
            inputs); ``"unknown"`` when convkit cannot follow the positions (``reason`` says why).
        reason: why the field is unknown.

    Example:
        >>> receptive_field_chain([(3, 1, 1)] * 3)[-1].size
        (7, 7)
    """

    size: tuple[float, float]
    jump: tuple[float, float]
    start: tuple[float, float]
    spatial: bool = True
    kind: str = "numeric"
    reason: str = ""

    @classmethod
    def from_tuple(cls, rf: RF) -> ReceptiveField:
        status = rf[7] if len(rf) > 7 else ""
        kind = "numeric" if not status else ("global" if status == GLOBAL else "unknown")
        values = [_num(v) if math.isfinite(v) else 0 for v in rf[:6]]
        return cls((values[0], values[3]), (values[1], values[4]), (values[2], values[5]), bool(rf[6]), kind,
                   status if kind == "unknown" else "")

    def to_dict(self) -> dict:
        return {"size": list(self.size), "jump": list(self.jump), "start": list(self.start), "spatial": self.spatial,
                "kind": self.kind, "reason": self.reason}

    @classmethod
    def from_dict(cls, data: dict) -> ReceptiveField:
        return cls(tuple(data["size"]), tuple(data["jump"]), tuple(data["start"]), bool(data.get("spatial", True)),
                   data.get("kind", "numeric"), data.get("reason", ""))

    def __str__(self) -> str:
        if self.kind != "numeric":
            return self.kind
        return f"{format_pair(self.size)}/{format_pair(self.jump)}/{format_pair(self.start)}"

    def describe(self) -> str:
        """One phrase for the field, e.g. ``"212 pixels"``, ``"global (local path 1,000 pixels)"``.

        Example:
            >>> ReceptiveField((7, 7), (1, 1), (0, 0)).describe()
            '7 pixels'
        """
        if self.kind == "unknown":
            return f"unknown ({self.reason})"
        if self.kind == "global":
            return f"global, the whole input (local path {format_pair(self.size)} pixels)"
        return f"{format_pair(self.size)} pixels"


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


def _join(h: Axis, w: Axis, spatial: bool, rest: tuple = ("", NCHW)) -> RF:
    return (*h, *w, spatial, *rest)


def _window(a: Axis, k: float, s: float, p: float, d: float) -> Axis:
    r, j, st = a
    return r + (k - 1) * d * j, j * s, st + ((k - 1) / 2 * d - p) * j


def window(rf: RF, kernel, stride, padding, dilation=(1, 1)) -> RF:
    """The field after a convolution or pooling window (pairs ``(h, w)``; ``padding`` before)."""
    h, w = _axes(rf)
    return _join(_window(h, kernel[0], stride[0], padding[0], dilation[0]),
                 _window(w, kernel[1], stride[1], padding[1], dilation[1]), rf[6], rf[7:])


def _transposed(a: Axis, k: float, s: float, p: float, d: float) -> Axis:
    # output o takes inputs i with o = i*s - p + t*d, t < k: a span of (k - 1)*d/s input steps
    r, j, st = a
    return r + (k - 1) * d / s * j, j / s, st + (p - (k - 1) * d / 2) / s * j


def transposed_window(rf: RF, kernel, stride, padding, dilation=(1, 1)) -> RF:
    """The field after a transposed convolution (the jump shrinks by the stride)."""
    h, w = _axes(rf)
    return _join(_transposed(h, kernel[0], stride[0], padding[0], dilation[0]),
                 _transposed(w, kernel[1], stride[1], padding[1], dilation[1]), rf[6], rf[7:])


def adaptive(rf: RF, in_hw: Sequence[int], out_hw: Sequence[int]) -> RF:
    """Adaptive pooling: output i pools input ``[floor(i*n/o), ceil((i+1)*n/o))``; the largest window counts."""
    axes = []
    for a, n, o in zip(_axes(rf), in_hw, out_hw):
        r, j, st = a
        n, o = int(n), int(o)
        widest = max(math.ceil((i + 1) * n / o) - (i * n) // o for i in range(o)) if o else 1
        first_end = math.ceil(n / o) if o else 1
        axes.append((r + (widest - 1) * j, j * n / max(o, 1), st + (first_end - 1) * j / 2))
    if tuple(out_hw) == (1, 1) and tuple(in_hw) != (1, 1):
        return _join(axes[0], axes[1], False, (GLOBAL, rf[8]))  # global pooling, even kept as a 1x1 map
    return _join(axes[0], axes[1], rf[6], rf[7:])


def globalize(rf: RF) -> RF:
    """The field of a feature that sees every position of a map: global; the numbers stay the local path's."""
    return (*rf[:6], False, GLOBAL, rf[8])


def unknown(rf: RF, reason: str) -> RF:
    """A field convkit cannot follow (global stays global)."""
    return rf if rf[7] else (*rf[:7], reason, rf[8])


def union(fields: Sequence[RF], spatial: bool, layout: tuple = NCHW) -> RF:
    """The interval covering every field (paths that join); the jump is the largest.

    Any global field makes the result global (its numbers: the union of the local fields, ignoring
    the global ones); otherwise any unknown field makes it unknown."""
    status = ""
    if any(f[7] == GLOBAL for f in fields):
        status = GLOBAL
        fields = [f for f in fields if not f[7]] or fields
    else:
        status = next((f[7] for f in fields if f[7]), "")
    if len(fields) == 1:
        f = fields[0]
        return (*f[:6], spatial, status, layout)
    axes = []
    for i in (0, 3):
        lo = min(f[i + 2] - (f[i] - 1) / 2 for f in fields)
        hi = max(f[i + 2] + (f[i] - 1) / 2 for f in fields)
        axes.append((hi - lo + 1, max(f[i + 1] for f in fields), (lo + hi) / 2))
    return _join(axes[0], axes[1], spatial, (status, layout))


def shift(rf: RF, offsets: Sequence[float], steps: Sequence[float] = (1, 1)) -> RF:
    """Output position 0 sits at input position ``offset`` and neighbours are ``step`` apart (slicing, padding)."""
    axes = []
    for (r, j, st), off, step in zip(_axes(rf), offsets, steps):
        axes.append((r, j * step, st + off * j))
    return _join(axes[0], axes[1], rf[6], rf[7:])


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
