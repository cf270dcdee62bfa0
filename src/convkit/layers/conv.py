"""2-D convolution and transposed convolution with Keras-style arguments, any padding mode and lazy building.

:class:`Conv2d` is an ``nn.Conv2d`` (same ``weight``/``bias``, same ``state_dict`` keys, seen as a conv by
torchinfo, fvcore and Grad-CAM) that also takes

* ``padding="same"`` with TensorFlow's semantics for any stride: ``ceil(in / stride)`` outputs, the
  odd pixel of padding after (right/bottom), which torch's ``"same"`` (stride 1 only) does not do;
* explicit asymmetric padding ``(left, right, top, bottom)``;
* five border modes, including ``"symmetric"`` (see :mod:`convkit.layers.padding`);
* an ``activation`` applied after the convolution, as Keras does;
* no ``in_channels``: the weights are created by :meth:`Conv2d.build` (``convkit.Sequential`` calls it).

Like torch and every CNN paper, "convolution" is cross-correlation: the kernel is not flipped.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from convkit.layers.core import ActivationMixin, build_channels, build_in_place, require_built
from convkit.layers.padding import normalize_padding_mode, pad2d
from convkit.layers.shapes import ShapeError, conv_output_size, pair, same_padding, transposed_output_size

__all__ = ["Conv2d", "ConvTranspose2d"]

Pads = tuple[int, int, int, int]


def _positive_pair(value: int | Sequence[int], name: str) -> tuple[int, int]:
    result = pair(value, name)
    if min(result) < 1:
        raise ValueError(f"{name} must be positive, got {value!r}")
    return result


def _check_filters(filters: int, groups: int) -> None:
    if not isinstance(filters, int) or filters < 1:
        raise ValueError(f"filters must be a positive int, got {filters!r}")
    if not isinstance(groups, int) or groups < 1 or filters % groups:
        raise ValueError(f"groups must be a positive int dividing filters={filters}, got {groups!r}")


def _parse_padding(padding: int | str | Sequence[int]) -> str | Pads:
    """``"same"`` or ``(left, right, top, bottom)``."""
    if isinstance(padding, str):
        key = padding.lower()
        if key in ("same", "valid"):
            return "same" if key == "same" else (0, 0, 0, 0)
    elif isinstance(padding, Sequence) and len(padding) == 4:
        if all(isinstance(p, int) and p >= 0 for p in padding):
            return tuple(padding)  # type: ignore[return-value]
    else:
        try:
            ph, pw = pair(padding, "padding")
        except TypeError:
            ph = pw = -1
        if min(ph, pw) >= 0:
            return (pw, pw, ph, ph)
    raise ValueError(
        f"padding must be a non-negative int, a pair (pad_h, pad_w), 'valid', 'same' or "
        f"(left, right, top, bottom), got {padding!r}"
    )


def _torch_padding(pads: str | Pads) -> str | tuple[int, ...]:
    """What ``self.padding`` shows to code that reads it as torch's: a pair when symmetric."""
    if isinstance(pads, str):
        return pads
    left, right, top, bottom = pads
    return (top, left) if (left, top) == (right, bottom) else pads


def _spatial(input_shape: Sequence[int], name: str) -> tuple[int, int, int]:
    if len(input_shape) != 3:
        raise ShapeError(f"{name} expects a feature map (C, H, W), got {len(input_shape)} dimension(s)")
    channels, height, width = (int(s) for s in input_shape)
    return channels, height, width


def _check_channels(module: nn.Module, channels: int) -> None:
    name = type(module).__name__
    if module.in_channels is not None and channels != module.in_channels:
        raise ShapeError(f"{name} expects {module.in_channels} input channels, got {channels}")
    if channels % module.groups:
        raise ShapeError(f"{name}: input channels {channels} are not divisible by groups={module.groups}")


class Conv2d(ActivationMixin, nn.Conv2d):
    """2-D convolution (cross-correlation) over ``(N, C, H, W)`` or ``(C, H, W)``, then an activation.

    Args:
        filters: output channels.
        kernel_size: an int or ``(kh, kw)``.
        stride: an int or ``(sh, sw)``.
        padding: an int or ``(ph, pw)`` (each side), ``"valid"`` (none), ``"same"`` (TensorFlow's rule:
            ``ceil(in / stride)`` outputs for any stride, the odd pixel after), or
            ``(left, right, top, bottom)``.
        dilation: an int or ``(dh, dw)``.
        groups: split input and output channels into this many groups.
        bias: learn an additive bias.
        padding_mode: ``zeros``, ``replicate``, ``reflect``, ``symmetric``, ``circular`` or an alias.
        activation: applied after the convolution (see :func:`~convkit.layers.core.get_activation`).
        in_channels: input channels; ``None`` defers creating the weights to :meth:`build`.
        device, dtype: of the weights.

    Attributes:
        padding: torch-style, a pair when the padding is symmetric, else ``"same"`` or the 4-tuple.
        padding_mode: the canonical mode name.
        activation: the activation module, or ``None``.

    Raises:
        ValueError: an invalid argument.
        NotBuiltError: called before it is built.

    Example:
        >>> conv = Conv2d(32, 3, stride=2, padding="same", activation="relu")
        >>> conv.build((3, 225, 225))
        >>> conv(torch.zeros(1, 3, 225, 225)).shape
        torch.Size([1, 32, 113, 113])
    """

    def __init__(
        self,
        filters: int,
        kernel_size: int | Sequence[int],
        stride: int | Sequence[int] = 1,
        padding: int | str | Sequence[int] = 0,
        dilation: int | Sequence[int] = 1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: str = "zeros",
        activation: str | nn.Module | type[nn.Module] | None = None,
        in_channels: int | None = None,
        device: Any = None,
        dtype: Any = None,
    ):
        _check_filters(filters, groups)
        # torch gets padding 0: the padding is applied in _conv_forward, which torch's cannot express
        self._init_args = {
            "out_channels": filters, "kernel_size": _positive_pair(kernel_size, "kernel_size"),
            "stride": _positive_pair(stride, "stride"), "padding": 0,
            "dilation": _positive_pair(dilation, "dilation"), "groups": groups, "bias": bias,
            "device": device, "dtype": dtype,
        }
        if in_channels is None:
            nn.Module.__init__(self)
            self.in_channels = None
            for name in ("out_channels", "kernel_size", "stride", "dilation", "groups"):
                setattr(self, name, self._init_args[name])
        else:
            self._torch_init(in_channels)
        self._pads = _parse_padding(padding)
        self.padding = _torch_padding(self._pads)
        self.padding_mode = normalize_padding_mode(padding_mode)
        self.set_activation(activation)

    def _torch_init(self, in_channels: int) -> None:
        if in_channels % self._init_args["groups"]:
            raise ValueError(f"in_channels={in_channels} is not divisible by groups={self._init_args['groups']}")
        nn.Conv2d.__init__(self, in_channels, **self._init_args)

    def build(self, input_shape: Sequence[int]) -> None:
        """Create the weights for a per-sample ``input_shape`` ``(C, H, W)``; a no-op once built.

        Raises:
            ShapeError: C is not divisible by ``groups``.
        """
        if self.in_channels is not None:
            return
        channels = build_channels(self, input_shape)
        _check_channels(self, channels)
        build_in_place(self, lambda: self._torch_init(channels), keep=("padding", "padding_mode"))

    def resolve_padding(self, in_hw: Sequence[int]) -> Pads:
        """The pixels added ``(left, right, top, bottom)`` for an input of height and width ``in_hw``.

        Args:
            in_hw: ``(H, W)``, or any shape ending with them.

        Example:
            >>> Conv2d(8, 3, stride=2, padding="same").resolve_padding((224, 224))
            (0, 1, 0, 1)
        """
        if self._pads != "same":
            return self._pads  # type: ignore[return-value]
        top, bottom = self._same_pads(in_hw[-2], 0)
        left, right = self._same_pads(in_hw[-1], 1)
        return (left, right, top, bottom)

    def _same_pads(self, size: int, axis: int) -> tuple[int, int]:
        kernel, stride, dilation = self.kernel_size[axis], self.stride[axis], self.dilation[axis]
        # with stride 1 same_padding never reads the size (it may be a torch.fx proxy): not made an int
        return same_padding(size if stride == 1 else int(size), kernel, stride, dilation)

    def _conv_forward(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        left, right, top, bottom = self.resolve_padding(x.shape)
        if self.padding_mode == "zeros" and (left, top) == (right, bottom):
            # F.conv2d pads symmetric zeros itself, without materialising a padded copy
            return F.conv2d(x, weight, bias, self.stride, (top, left), self.dilation, self.groups)
        x = pad2d(x, (left, right, top, bottom), self.padding_mode)
        return F.conv2d(x, weight, bias, self.stride, 0, self.dilation, self.groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        require_built(self, "in_channels")
        return self.activate(self._conv_forward(x, self.weight, self.bias))

    def output_shape(self, input_shape: Sequence[int]) -> tuple[int, int, int]:
        """Per-sample output shape ``(filters, H_out, W_out)`` for ``(C, H, W)``, computed analytically.

        Raises:
            ShapeError: wrong channels, or the kernel is larger than the padded input (the message
                holds the output-size formula).

        Warns:
            ShapeWarning: the stride leaves border pixels unused.
        """
        channels, height, width = _spatial(input_shape, type(self).__name__)
        _check_channels(self, channels)
        left, right, top, bottom = self.resolve_padding((height, width))
        sizes = [
            conv_output_size(size, k, s, pads, d, input_shape=input_shape, axis=axis)
            for size, k, s, pads, d, axis in zip(
                (height, width), self.kernel_size, self.stride, ((top, bottom), (left, right)), self.dilation,
                ("height", "width"),
            )
        ]
        return (self.out_channels, *sizes)

    def extra_repr(self) -> str:
        text = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}"
        if self._pads != (0, 0, 0, 0):
            text += f", padding={self.padding!r}"
        if self.padding_mode != "zeros":
            text += f", padding_mode={self.padding_mode!r}"
        if self.dilation != (1, 1):
            text += f", dilation={self.dilation}"
        if self.groups != 1:
            text += f", groups={self.groups}"
        if not self._init_args["bias"]:
            text += ", bias=False"
        return text + self.activation_repr()


class ConvTranspose2d(ActivationMixin, nn.ConvTranspose2d):
    """Transposed convolution ("deconvolution", Zeiler & Fergus) upsampling ``(N, C, H, W)``, then an activation.

    Output size per axis: ``(in - 1) * stride - 2 * padding + dilation * (kernel - 1) + output_padding + 1``.

    Args:
        filters: output channels.
        kernel_size, stride, dilation: an int or a pair.
        padding: an int or a pair, removed from each side of the output (as torch).
        output_padding: an int or a pair added to the bottom/right of the output, to pick one of the
            sizes a strided convolution maps to the same size; smaller than the stride or the dilation.
        groups, bias, device, dtype: as ``nn.ConvTranspose2d``.
        activation: applied after the transposed convolution.
        in_channels: input channels; ``None`` defers creating the weights to :meth:`build`.

    Raises:
        ValueError: an invalid argument.
        NotBuiltError: called before it is built.

    Example:
        >>> up = ConvTranspose2d(16, 4, stride=2, padding=1, in_channels=32)
        >>> up(torch.zeros(1, 32, 7, 7)).shape
        torch.Size([1, 16, 14, 14])
    """

    def __init__(
        self,
        filters: int,
        kernel_size: int | Sequence[int],
        stride: int | Sequence[int] = 1,
        padding: int | Sequence[int] = 0,
        output_padding: int | Sequence[int] = 0,
        dilation: int | Sequence[int] = 1,
        groups: int = 1,
        bias: bool = True,
        activation: str | nn.Module | type[nn.Module] | None = None,
        in_channels: int | None = None,
        device: Any = None,
        dtype: Any = None,
    ):
        _check_filters(filters, groups)
        args = {
            "out_channels": filters, "kernel_size": _positive_pair(kernel_size, "kernel_size"),
            "stride": _positive_pair(stride, "stride"), "padding": pair(padding, "padding"),
            "output_padding": pair(output_padding, "output_padding"),
            "dilation": _positive_pair(dilation, "dilation"), "groups": groups, "bias": bias,
            "device": device, "dtype": dtype,
        }
        if min(args["padding"] + args["output_padding"]) < 0:
            raise ValueError(f"padding and output_padding must be non-negative, got {padding!r}, {output_padding!r}")
        for op, s, d in zip(args["output_padding"], args["stride"], args["dilation"]):
            if op >= max(s, d):  # torch checks this only when called
                raise ValueError(f"output_padding must be smaller than the stride or the dilation, got "
                                 f"output_padding={output_padding!r}, stride={stride!r}, dilation={dilation!r}")
        self._init_args = args
        if in_channels is None:
            nn.Module.__init__(self)
            self.in_channels = None
            for name in ("out_channels", "kernel_size", "stride", "padding", "output_padding", "dilation", "groups"):
                setattr(self, name, args[name])
        else:
            self._torch_init(in_channels)
        self.set_activation(activation)

    def _torch_init(self, in_channels: int) -> None:
        if in_channels % self._init_args["groups"]:
            raise ValueError(f"in_channels={in_channels} is not divisible by groups={self._init_args['groups']}")
        nn.ConvTranspose2d.__init__(self, in_channels, **self._init_args)

    def build(self, input_shape: Sequence[int]) -> None:
        """Create the weights for a per-sample ``input_shape`` ``(C, H, W)``; a no-op once built.

        Raises:
            ShapeError: C is not divisible by ``groups``.
        """
        if self.in_channels is not None:
            return
        channels = build_channels(self, input_shape)
        _check_channels(self, channels)
        build_in_place(self, lambda: self._torch_init(channels))

    def forward(self, x: torch.Tensor, output_size: Sequence[int] | None = None) -> torch.Tensor:
        require_built(self, "in_channels")
        return self.activate(super().forward(x, output_size))

    def output_shape(self, input_shape: Sequence[int]) -> tuple[int, int, int]:
        """Per-sample output shape ``(filters, H_out, W_out)`` for ``(C, H, W)``.

        Raises:
            ShapeError: wrong channels, or a padding that leaves no output (the message holds the formula).
        """
        channels, height, width = _spatial(input_shape, type(self).__name__)
        _check_channels(self, channels)
        sizes = [
            transposed_output_size(size, k, s, p, op, d, axis=axis)
            for size, k, s, p, op, d, axis in zip((height, width), self.kernel_size, self.stride, self.padding,
                                                  self.output_padding, self.dilation, ("height", "width"))
        ]
        return (self.out_channels, *sizes)

    def extra_repr(self) -> str:
        text = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}"
        for name, default in (("padding", (0, 0)), ("output_padding", (0, 0)), ("dilation", (1, 1))):
            if getattr(self, name) != default:
                text += f", {name}={getattr(self, name)}"
        if self.groups != 1:
            text += f", groups={self.groups}"
        if not self._init_args["bias"]:
            text += ", bias=False"
        return text + self.activation_repr()
