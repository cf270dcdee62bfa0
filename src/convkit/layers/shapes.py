"""Output-size arithmetic for convolution and pooling, and shape inference for any module.

The lectures' formula, generalised to dilation and ceil mode::

    out = floor((in + pad_before + pad_after - dilation * (kernel - 1) - 1) / stride) + 1

(with ``ceil`` instead of ``floor`` for pooling in ceil mode). Every shape problem is reported as a
:class:`ShapeError` that names the layer, its input shape and the formula with the numbers filled in.

This module is the one place for that arithmetic: convolution, pooling and transposed-convolution output
sizes, "same" padding, int-or-pair arguments and how shapes and pairs print. Layers, ``convkit.inspect``
and ``convkit.explain`` call these helpers rather than repeating a formula.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Sequence
from numbers import Integral

import torch
from torch import nn

from convkit.errors import ConvkitError

__all__ = [
    "ShapeError",
    "ShapeWarning",
    "conv_output_size",
    "format_pair",
    "format_shape",
    "infer_output_shape",
    "pair",
    "same_padding",
    "transposed_output_size",
    "window_output_size",
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
    """A shape or size as people write it: the numbers joined by ``x``.

    Args:
        shape: any sequence of ints (a tensor's shape, a kernel size).

    Returns:
        The text, empty for an empty shape.

    Example:
        >>> format_shape((3, 224, 224))
        '3x224x224'
    """
    return "x".join(str(int(s)) for s in shape)


def format_pair(values: Sequence[float]) -> str:
    """A (height, width) pair as one number when both agree, else ``HxW``; fractions in their shortest form.

    Args:
        values: two numbers, ints or floats (a stride, a padding, a receptive field).

    Returns:
        The text.

    Example:
        >>> format_pair((2, 2)), format_pair((3, 5)), format_pair((1.5, 1.5))
        ('2', '3x5', '1.5')
    """
    a, b = (str(v) if isinstance(v, int) else f"{v:g}" for v in values)
    return a if a == b else f"{a}x{b}"


def pair(value: int | Sequence[int], name: str = "value") -> tuple[int, int]:
    """Turn an int or a pair into a pair of ints, as torch and Keras accept both.

    Args:
        value: an int, or a sequence of two ints (numpy ints too).
        name: the argument's name, for the error.

    Returns:
        ``(first, second)`` as Python ints.

    Raises:
        TypeError: anything else (a bool, a float, a sequence of another length).

    Example:
        >>> pair(3), pair((3, 5))
        ((3, 3), (3, 5))
    """
    # the hot path (every conv and pool call in inspect): ints and pairs of ints, as torch stores them
    if type(value) is int:
        return (value, value)
    if type(value) is tuple and len(value) == 2 and type(value[0]) is int and type(value[1]) is int:
        return value  # type: ignore[return-value]
    if isinstance(value, Integral) and not isinstance(value, bool):
        return (int(value), int(value))
    if isinstance(value, Sequence) and len(value) == 2 and all(isinstance(v, Integral) for v in value):
        return (int(value[0]), int(value[1]))
    raise TypeError(f"{name} must be an int or a pair of ints, got {value!r}")


def window_output_size(
    size: int,
    kernel: int,
    stride: int = 1,
    padding: int | tuple[int, int] = 0,
    dilation: int = 1,
    ceil_mode: bool = False,
) -> int:
    """Output length of a convolution or pooling window along one axis: the bare arithmetic, no checks.

    torch's own rule (``pooling_output_shape``, which its convolutions share with ``ceil_mode=False``)::

        out = floor_or_ceil((size + before + after - dilation * (kernel - 1) - 1) / stride) + 1

    With ``ceil_mode`` the last window must still start inside the input or the left padding, so a
    window that would start in the right padding is dropped. :func:`conv_output_size` wraps this with
    worded errors and warnings; :mod:`convkit.inspect.fastmeta` calls it directly for speed.

    Args:
        size: input length along the axis.
        kernel, stride, dilation: the window's geometry along the axis.
        padding: pixels added on each side (an int), or ``(before, after)``.
        ceil_mode: round up instead of down (pooling's ``ceil_mode``).

    Returns:
        The output length; less than 1 when the window does not fit (torch raises then).

    Example:
        >>> window_output_size(224, 7, 2, 3)          # ResNet's stem
        112
        >>> window_output_size(6, 3, 2, ceil_mode=True), window_output_size(6, 3, 2)
        (3, 2)
    """
    if type(padding) is int:
        before = after = padding
    else:
        before, after = padding
    numerator = size + before + after - dilation * (kernel - 1) - 1
    if not ceil_mode:
        return numerator // stride + 1
    out = (numerator + stride - 1) // stride + 1
    if (out - 1) * stride >= size + before:  # the last window would start in the right padding
        out -= 1
    return out


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
    """Output length of a convolution or pooling window along one axis, checked and worded.

    The arithmetic is :func:`window_output_size`'s (torch's); this adds a :class:`ShapeError` that shows
    the formula with the numbers filled in, and a :class:`ShapeWarning` when input pixels are dropped.

    Args:
        size: input length along the axis.
        kernel, stride, dilation: the window's geometry along the axis.
        padding: pixels added on each side (an int), or ``(before, after)``.
        ceil_mode: round up instead of down (pooling's ``ceil_mode``); like torch, a window that
            would start entirely in the right padding is dropped, and a last window may hang over the end.
        layer, input_shape, axis: used only to word errors and warnings.
        warn: emit a :class:`ShapeWarning` when the stride leaves input pixels unused.

    Returns:
        The output length.

    Raises:
        ShapeError: the (dilated) kernel is larger than the padded input (in ceil mode: by a stride or more).

    Example:
        >>> conv_output_size(227, 11, stride=4)          # AlexNet's first layer
        55
        >>> conv_output_size(224, 7, 2, 3)               # ResNet's stem
        112
    """
    before, after = (padding, padding) if isinstance(padding, int) else padding
    out = window_output_size(size, kernel, stride, (before, after), dilation, ceil_mode)
    span = dilation * (kernel - 1) + 1
    padded = size + before + after
    # Warn only when input pixels, not just padding, fall off the end, and only when windows tile or
    # overlap: a window narrower than its stride (ResNet's 1x1/2 shortcut) skips pixels by design.
    dropped = (padded - span) % stride - after
    if out >= 1 and (ceil_mode or not warn or dropped <= 0 or span < stride):
        return out  # the common case: the formula is worded only for an error or a warning
    formula = (
        f"({size} + {before} + {after} - {dilation}*({kernel} - 1) - 1) / {stride} + 1"
        if dilation != 1
        else f"({size} + {before + after} - {kernel}) / {stride} + 1"
    )
    where = f" along {axis}" if axis else ""
    if out < 1:
        raise ShapeError(
            f"kernel {kernel}" + (f" (dilated to {span})" if dilation != 1 else "")
            + f" is larger than the padded input {padded}{where}: out = {formula} < 1",
            layer,
            input_shape,
        )
    warnings.warn(
        _prefix(layer, input_shape)
        + f"stride {stride} does not divide evenly{where}: out = floor({formula}) = {out}; "
        f"the last {dropped} input pixel(s) are never covered and are dropped",
        ShapeWarning,
        stacklevel=2,
    )
    return out


def transposed_output_size(
    size: int,
    kernel: int,
    stride: int = 1,
    padding: int = 0,
    output_padding: int = 0,
    dilation: int = 1,
    *,
    layer: str | None = None,
    input_shape: Sequence[int] | None = None,
    axis: str = "",
) -> int:
    """Output length of a transposed convolution along one axis, as torch computes it.

    ``out = (size - 1) * stride - 2 * padding + dilation * (kernel - 1) + output_padding + 1``

    Args:
        size: input length along the axis.
        kernel, stride, dilation: the kernel's geometry along the axis.
        padding: pixels removed from each side of the output.
        output_padding: pixels added after (bottom/right).
        layer, input_shape, axis: used only to word the error.

    Returns:
        The output length.

    Raises:
        ShapeError: the padding leaves no output; the message holds the formula with the numbers.

    Example:
        >>> transposed_output_size(7, 4, stride=2, padding=1)    # 7x7 -> 14x14
        14
    """
    out = (size - 1) * stride - 2 * padding + dilation * (kernel - 1) + output_padding + 1
    if out < 1:
        where = f" along {axis}" if axis else ""
        raise ShapeError(f"padding {padding} leaves no output{where}: out = ({size} - 1)*{stride} - 2*{padding} "
                         f"+ {dilation}*({kernel} - 1) + {output_padding} + 1 = {out} < 1", layer, input_shape)
    return out


def same_padding(size: int, kernel: int, stride: int = 1, dilation: int = 1) -> tuple[int, int]:
    """``(before, after)`` padding that gives ``ceil(size / stride)`` outputs, as TensorFlow/Keras "same" does.

    When the total is odd the extra pixel goes after (right/bottom), as in TensorFlow and in torch's own
    ``padding="same"`` (stride 1 only). With stride 1 the size is never read (the total is
    ``dilation * (kernel - 1)`` whatever it is), which keeps ``torch.fx`` tracing working.

    Args:
        size: input length along the axis.
        kernel, stride, dilation: the convolution's geometry along the axis.

    Returns:
        ``(before, after)``.

    Example:
        >>> same_padding(224, 7, stride=2)
        (2, 3)
        >>> same_padding(28, 4)
        (1, 2)
    """
    if stride == 1:
        total = dilation * (kernel - 1)
    else:
        out = -(-size // stride)
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
