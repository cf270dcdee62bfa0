"""Output-size arithmetic for convolution and pooling, and shape inference for any module.

The lectures' formula, generalised to dilation and ceil mode::

    out = floor((in + pad_before + pad_after - dilation * (kernel - 1) - 1) / stride) + 1

(with ``ceil`` instead of ``floor`` for pooling in ceil mode). Every shape problem is reported as a
:class:`ShapeError` that names the layer, its input shape and the formula with the numbers filled in.
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Sequence

import torch
from torch import nn

from convkit.errors import ConvkitError

__all__ = [
    "ShapeError",
    "ShapeWarning",
    "conv_output_size",
    "same_padding",
    "infer_output_shape",
    "pair",
]


class ShapeError(ValueError, ConvkitError):
    """A layer cannot take its input shape.

    Attributes:
        layer: the layer's name (or type) as the user would recognise it.
        input_shape: the per-sample input shape (no batch dimension).
    """

    def __init__(self, message: str, layer: str | None = None, input_shape: Sequence[int] | None = None):
        self.layer = layer
        self.input_shape = tuple(input_shape) if input_shape is not None else None
        super().__init__(_prefix(layer, input_shape) + message)


def _prefix(layer: str | None, input_shape: Sequence[int] | None) -> str:
    if layer is None:
        return ""
    shape = f" (input shape {format_shape(input_shape)})" if input_shape is not None else ""
    return f"layer {layer}{shape}: "


class ShapeWarning(UserWarning):
    """A layer fits its input but silently drops border pixels (the stride does not divide evenly)."""


def format_shape(shape: Sequence[int]) -> str:
    """``(3, 224, 224)`` -> ``'3x224x224'``."""
    return "x".join(str(int(s)) for s in shape)


def pair(value: int | Sequence[int], name: str = "value") -> tuple[int, int]:
    """Turn an int or a pair into a pair of ints, as torch and Keras accept both.

    >>> pair(3), pair((3, 5))
    ((3, 3), (3, 5))
    """
    if isinstance(value, int) and not isinstance(value, bool):
        return (value, value)
    if isinstance(value, Sequence) and len(value) == 2 and all(isinstance(v, int) for v in value):
        return (int(value[0]), int(value[1]))
    raise TypeError(f"{name} must be an int or a pair of ints, got {value!r}")


def conv_output_size(
    size: int,
    kernel: int,
    stride: int = 1,
    padding: int | tuple[int, int] = 0,
    dilation: int = 1,
    ceil_mode: bool = False,
    *,
    layer: str | None = None,
    input_shape: Sequence[int] | None = None,
    axis: str = "",
    warn: bool = True,
) -> int:
    """Output length of a convolution or pooling window along one axis.

    Args:
        size: input length along the axis.
        kernel, stride, dilation: the window's geometry along the axis.
        padding: pixels added on each side (an int), or ``(before, after)``.
        ceil_mode: round up instead of down (pooling's ``ceil_mode``); like torch, a window that
            would start entirely in the right padding is dropped.
        layer, input_shape, axis: used only to word errors and warnings.
        warn: emit a :class:`ShapeWarning` when the stride leaves input pixels unused.

    Returns:
        The output length.

    Raises:
        ShapeError: the (dilated) kernel is larger than the padded input.

    >>> conv_output_size(227, 11, stride=4)          # AlexNet's first layer
    55
    >>> conv_output_size(5, 3, padding=1)
    5
    """
    before, after = (padding, padding) if isinstance(padding, int) else padding
    span = dilation * (kernel - 1) + 1
    padded = size + before + after
    formula = (
        f"({size} + {before} + {after} - {dilation}*({kernel} - 1) - 1) / {stride} + 1"
        if dilation != 1
        else f"({size} + {before + after} - {kernel}) / {stride} + 1"
    )
    where = f" along {axis}" if axis else ""
    if span > padded:
        raise ShapeError(
            f"kernel {kernel}" + (f" (dilated to {span})" if dilation != 1 else "")
            + f" is larger than the padded input {padded}{where}: out = {formula} < 1",
            layer,
            input_shape,
        )
    if ceil_mode:
        out = math.ceil((padded - span) / stride) + 1
        if (out - 1) * stride >= size + before:  # torch: the last window must start inside input or left pad
            out -= 1
        return out
    out = (padded - span) // stride + 1
    # Warn only when input pixels, not just padding, fall off the end, and only when windows tile or
    # overlap: a window narrower than its stride (ResNet's 1x1/2 shortcut) skips pixels by design.
    dropped = (padded - span) % stride - after
    if dropped > 0 and span >= stride and warn:
        warnings.warn(
            _prefix(layer, input_shape)
            + f"stride {stride} does not divide evenly{where}: out = floor({formula}) = {out}; "
            f"the last {dropped} input pixel(s) are never covered and are dropped",
            ShapeWarning,
            stacklevel=2,
        )
    return out


def same_padding(size: int, kernel: int, stride: int = 1, dilation: int = 1) -> tuple[int, int]:
    """``(before, after)`` padding that gives ``ceil(size / stride)`` outputs, as TensorFlow/Keras "same" does.

    When the total is odd the extra pixel goes after (right/bottom), as in TensorFlow.

    >>> same_padding(224, 7, stride=2)
    (2, 3)
    """
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + dilation * (kernel - 1) + 1 - size, 0)
    return total // 2, total - total // 2


def infer_output_shape(module: nn.Module, input_shape: Sequence[int], name: str | None = None) -> tuple[int, ...]:
    """Per-sample output shape of ``module`` for a per-sample ``input_shape``, without real compute.

    Uses the module's own ``output_shape(input_shape)`` when it has one (convkit layers do, and word
    their errors with the formula); otherwise runs a copy of the module on the meta device, which
    allocates no memory.

    Raises:
        ShapeError: the module cannot take that input shape.
    """
    input_shape = tuple(int(s) for s in input_shape)
    label = name or type(module).__name__
    own = getattr(module, "output_shape", None)
    if callable(own):
        try:
            return tuple(own(input_shape))
        except ShapeError as err:
            if err.layer is None:
                raise ShapeError(str(err), label, input_shape) from None
            raise
    try:
        meta = copy.deepcopy(module).to("meta")
        with torch.no_grad():
            out = meta(torch.empty((1, *input_shape), device="meta"))
    except ShapeError:
        raise
    except Exception as err:  # torch words these in many ways; keep its words, add ours
        raise ShapeError(f"{type(err).__name__}: {err}", label, input_shape) from err
    if not isinstance(out, torch.Tensor):
        raise ShapeError(f"returned {type(out).__name__}, not a tensor", label, input_shape)
    return tuple(out.shape[1:])
