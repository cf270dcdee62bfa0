"""Pooling with Keras-style arguments: max, average, sum, and global average/max.

The windowed pools subclass torch's, with the stride defaulting to the window (``MaxPool2d(2)`` halves
the input) and ``output_shape`` computed from the output-size formula. None needs its input size.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from convkit.layers.shapes import ShapeError, conv_output_size, pair

__all__ = ["AvgPool2d", "GlobalAvgPool2d", "GlobalMaxPool2d", "MaxPool2d", "SumPool2d"]


def _geometry(pool_size, stride, padding, dilation=1) -> tuple[tuple[int, int], ...]:
    """Pairs ``(kernel, stride, padding, dilation)``, checked as torch would check them when called."""
    kernel = pair(pool_size, "pool_size")
    stride = kernel if stride is None else pair(stride, "stride")
    padding, dilation = pair(padding, "padding"), pair(dilation, "dilation")
    if min(kernel + stride + dilation) < 1 or min(padding) < 0:
        raise ValueError(f"pool_size, stride and dilation must be positive and padding non-negative, got "
                         f"pool_size={pool_size!r}, stride={stride!r}, padding={padding!r}, dilation={dilation!r}")
    if any(p > k // 2 for p, k in zip(padding, kernel)):
        raise ValueError(f"padding must be at most half the pool size (torch pads only so that every window "
                         f"overlaps the input), got padding={padding} for pool_size={kernel}")
    return kernel, stride, padding, dilation


def _pool_output_shape(module: nn.Module, input_shape: Sequence[int], dilation=(1, 1)) -> tuple[int, int, int]:
    if len(input_shape) != 3:
        raise ShapeError(f"{type(module).__name__} expects a feature map (C, H, W), got {len(input_shape)} dimension(s)")
    channels, height, width = (int(s) for s in input_shape)
    kernel, stride, padding = (pair(v) for v in (module.kernel_size, module.stride, module.padding))
    sizes = [
        conv_output_size(size, k, s, p, d, module.ceil_mode, input_shape=input_shape, axis=axis)
        for size, k, s, p, d, axis in zip((height, width), kernel, stride, padding, dilation, ("height", "width"))
    ]
    return (channels, *sizes)


class MaxPool2d(nn.MaxPool2d):
    """Maximum over each ``pool_size`` window of ``(N, C, H, W)`` or ``(C, H, W)``.

    Args:
        pool_size: the window, an int or a pair.
        stride: an int or a pair; defaults to ``pool_size`` (non-overlapping windows).
        padding: implicit ``-inf`` padding on each side, at most half the window.
        dilation: spacing between window elements.
        ceil_mode: round the output size up, keeping a partial window at the end.
        return_indices: also return the argmax indices (for ``nn.MaxUnpool2d``).

    Raises:
        ValueError: ``padding`` larger than half the window, or a non-positive size.

    Example:
        >>> MaxPool2d(2)(torch.tensor([[[[1., 2.], [3., 4.]]]]))
        tensor([[[[4.]]]])
    """

    def __init__(self, pool_size=2, stride=None, padding=0, dilation=1, ceil_mode: bool = False,
                 return_indices: bool = False):
        kernel, stride, padding, dilation = _geometry(pool_size, stride, padding, dilation)
        super().__init__(kernel, stride, padding, dilation, return_indices=return_indices, ceil_mode=ceil_mode)

    def output_shape(self, input_shape: Sequence[int]) -> tuple[int, int, int]:
        """Per-sample output shape ``(C, H_out, W_out)`` for ``(C, H, W)``.

        Raises:
            ShapeError: the window is larger than the padded input.
        """
        return _pool_output_shape(self, input_shape, pair(self.dilation))


class AvgPool2d(nn.AvgPool2d):
    """Mean over each ``pool_size`` window of ``(N, C, H, W)`` or ``(C, H, W)``.

    Args:
        pool_size: the window, an int or a pair.
        stride: an int or a pair; defaults to ``pool_size``.
        padding: implicit zero padding on each side, at most half the window.
        ceil_mode: round the output size up, keeping a partial window at the end.
        count_include_pad: count padded zeros in the divisor.
        divisor_override: divide every window by this instead.

    Raises:
        ValueError: ``padding`` larger than half the window, or a non-positive size.

    Example:
        >>> AvgPool2d(2)(torch.tensor([[[[1., 2.], [3., 4.]]]]))
        tensor([[[[2.5000]]]])
    """

    def __init__(self, pool_size=2, stride=None, padding=0, ceil_mode: bool = False,
                 count_include_pad: bool = True, divisor_override: int | None = None):
        kernel, stride, padding, _ = _geometry(pool_size, stride, padding)
        super().__init__(kernel, stride, padding, ceil_mode, count_include_pad, divisor_override)

    def output_shape(self, input_shape: Sequence[int]) -> tuple[int, int, int]:
        """Per-sample output shape ``(C, H_out, W_out)`` for ``(C, H, W)``.

        Raises:
            ShapeError: the window is larger than the padded input.
        """
        return _pool_output_shape(self, input_shape)


class SumPool2d(nn.Module):
    """Sum over each ``pool_size`` window (LeNet-5's subsampling, before its trainable scale).

    Args:
        pool_size: the window, an int or a pair.
        stride: an int or a pair; defaults to ``pool_size``.
        padding: implicit zero padding on each side, at most half the window.
        ceil_mode: round the output size up, keeping a partial window at the end.

    Raises:
        ValueError: ``padding`` larger than half the window, or a non-positive size.

    Example:
        >>> SumPool2d(2)(torch.tensor([[[[1., 2.], [3., 4.]]]]))
        tensor([[[[10.]]]])
    """

    def __init__(self, pool_size=2, stride=None, padding=0, ceil_mode: bool = False):
        super().__init__()
        self.kernel_size, self.stride, self.padding, _ = _geometry(pool_size, stride, padding)
        self.ceil_mode = ceil_mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # a divisor of 1 turns torch's average into the sum
        return F.avg_pool2d(x, self.kernel_size, self.stride, self.padding, self.ceil_mode,
                            count_include_pad=True, divisor_override=1)

    def output_shape(self, input_shape: Sequence[int]) -> tuple[int, int, int]:
        """Per-sample output shape ``(C, H_out, W_out)`` for ``(C, H, W)``.

        Raises:
            ShapeError: the window is larger than the padded input.
        """
        return _pool_output_shape(self, input_shape)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, ceil_mode={self.ceil_mode}"


class _GlobalPool:
    """What the two global pools share: one output per channel, flattened unless ``keepdims``."""

    def __init__(self, keepdims: bool = False):
        super().__init__(1)  # the adaptive pool's output size: 1x1
        self.keepdims = keepdims

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = super().forward(x)
        return y if self.keepdims else y.flatten(-3)

    def output_shape(self, input_shape: Sequence[int]) -> tuple[int, ...]:
        """``(C,)``, or ``(C, 1, 1)`` with ``keepdims``, for ``(C, H, W)``."""
        if len(input_shape) != 3:
            raise ShapeError(f"{type(self).__name__} expects a feature map (C, H, W), got {len(input_shape)} "
                             "dimension(s)")
        channels = int(input_shape[0])
        return (channels, 1, 1) if self.keepdims else (channels,)

    def extra_repr(self) -> str:
        return f"keepdims={self.keepdims}"


class GlobalAvgPool2d(_GlobalPool, nn.AdaptiveAvgPool2d):
    """Mean over all positions of each channel: ``(N, C, H, W) -> (N, C)`` (NIN, GoogLeNet, ResNet).

    Args:
        keepdims: keep the spatial dimensions, ``(N, C, 1, 1)``.

    Example:
        >>> GlobalAvgPool2d()(torch.ones(2, 8, 7, 7)).shape
        torch.Size([2, 8])
    """


class GlobalMaxPool2d(_GlobalPool, nn.AdaptiveMaxPool2d):
    """Maximum over all positions of each channel: ``(N, C, H, W) -> (N, C)``.

    Args:
        keepdims: keep the spatial dimensions, ``(N, C, 1, 1)``.

    Example:
        >>> GlobalMaxPool2d(keepdims=True)(torch.ones(2, 8, 7, 7)).shape
        torch.Size([2, 8, 1, 1])
    """
