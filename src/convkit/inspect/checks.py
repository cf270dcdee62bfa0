"""Geometry of convolution and pooling layers, checked from the input shape before the layer runs.

The output-size formula and its wording come from :func:`convkit.layers.shapes.conv_output_size`.
A kernel larger than its padded input raises :class:`~convkit.layers.shapes.ShapeError`. A stride
that does not divide evenly warns (:class:`~convkit.layers.shapes.ShapeWarning`) only when it drops
real input pixels: every ResNet's 7x7/2 stem on 224 leaves one pixel uncovered, but that pixel is
its zero padding, which is the intended geometry and not worth a warning; and a window narrower than
its stride (a 1x1/2 shortcut) skips every other pixel by design, not just the border.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from convkit.layers.shapes import ShapeError, conv_output_size, pair, same_padding, transposed_output_size

__all__ = ["check_module", "layer_geometry"]

_WINDOWS = (nn.MaxPool2d, nn.AvgPool2d)


def _torch_pads(module: nn.Module, hw: Sequence[int]) -> tuple[tuple[int, int], tuple[int, int]] | None:
    """``((top, bottom), (left, right))`` a conv or pool adds to an input of height and width ``hw``."""
    # looked up on the type first: Module.__getattr__ raises (slowly) for the usual layer without it
    resolve = getattr(type(module), "resolve_padding", None) or module.__dict__.get("resolve_padding")
    if resolve is not None:
        resolve = module.resolve_padding  # convkit's Conv2d: "same" for any stride, asymmetric pads
        left, right, top, bottom = resolve(hw)
        return (top, bottom), (left, right)
    padding = module.padding
    if type(padding) is tuple and len(padding) == 2:  # torch's own layers: (ph, pw) already
        (ph, pw) = pair(padding)
        return (ph, ph), (pw, pw)
    if isinstance(padding, str):
        if padding == "valid":
            return (0, 0), (0, 0)
        if padding == "same":  # torch: stride 1 only; the odd pixel goes after
            (kh, kw), (dh, dw) = pair(module.kernel_size), pair(module.dilation)
            return same_padding(hw[0], kh, 1, dh), same_padding(hw[1], kw, 1, dw)
        return None
    if isinstance(padding, Sequence) and len(padding) == 4:
        left, right, top, bottom = (int(p) for p in padding)
        return (top, bottom), (left, right)
    ph, pw = pair(padding)
    return (ph, ph), (pw, pw)


# What kind of layer a type is, decided once per type: checked on every call of every module.
_LINEAR, _CONV, _CONV_T, _POOL = "linear", "conv", "conv_t", "pool"
_KINDS: dict[type, str | None] = {}


def _kind(module: nn.Module) -> str | None:
    cls = type(module)
    try:
        return _KINDS[cls]
    except KeyError:
        pass
    if isinstance(module, nn.Linear):
        kind = _LINEAR
    elif isinstance(module, nn.Conv2d):
        kind = _CONV
    elif isinstance(module, nn.ConvTranspose2d):
        kind = _CONV_T
    elif isinstance(module, (nn.MaxPool2d, nn.AvgPool2d)) or _is_windowed(module):
        kind = _POOL
    else:
        kind = None
    _KINDS[cls] = kind
    return kind


def _is_windowed(module: nn.Module) -> bool:
    # convkit's SumPool2d and look-alikes: a module with the pool attributes and no weights
    return (all(hasattr(module, a) for a in ("kernel_size", "stride", "padding", "ceil_mode"))
            and not isinstance(module, (nn.MaxPool1d, nn.AvgPool1d, nn.MaxPool3d, nn.AvgPool3d))
            and not any(True for _ in module.parameters(recurse=False)))


def layer_geometry(module: nn.Module, input_shape: Sequence[int] | None = None) -> dict | None:
    """Kernel, stride, padding, dilation and groups of a conv or pool layer, else ``None``.

    Args:
        module: any module; only convolutions and windowed pools have a geometry.
        input_shape: per-sample ``(C, H, W)``, needed to resolve ``"same"`` padding.

    Returns:
        ``{"kernel": (kh, kw), "stride": (sh, sw), "padding": (top, bottom, left, right),
        "dilation": (dh, dw), "groups": g, "ceil_mode": bool}``.

    Example:
        >>> layer_geometry(nn.Conv2d(3, 96, 11, stride=4, padding=2))["padding"]
        (2, 2, 2, 2)
    """
    kind = _kind(module)
    if kind in (_CONV, _CONV_T):
        hw = tuple(input_shape[-2:]) if input_shape is not None and len(input_shape) >= 2 else (0, 0)
        if kind == _CONV_T:
            ph, pw = pair(module.padding)
            pads = ((ph, ph), (pw, pw))
        else:
            pads = _torch_pads(module, hw)
        if pads is None:
            return None
        return {"kernel": pair(module.kernel_size), "stride": pair(module.stride),
                "padding": (*pads[0], *pads[1]), "dilation": pair(module.dilation), "groups": module.groups,
                "ceil_mode": False}
    if kind == _POOL:
        kernel = pair(module.kernel_size)
        stride = pair(module.stride) if module.stride not in (None, ()) else kernel
        ph, pw = pair(module.padding)
        dilation = pair(getattr(module, "dilation", 1))
        return {"kernel": kernel, "stride": stride, "padding": (ph, ph, pw, pw), "dilation": dilation,
                "groups": 1, "ceil_mode": bool(getattr(module, "ceil_mode", False))}
    return None


def check_module(module: nn.Module, name: str, input_shape: tuple[int, ...]) -> dict | None:
    """Check that ``module`` can take a per-sample ``input_shape``; called just before it runs.

    Returns:
        The layer's geometry (see :func:`layer_geometry`), or ``None`` for a layer without one.

    Raises:
        ShapeError: wrong number of channels or features, or a kernel larger than its padded input;
            the message names the layer, its input shape and the formula.

    Warns:
        ShapeWarning: the stride drops real border pixels (not only padding).
    """
    kind = _kind(module)
    if kind is None:
        return None
    label = name or type(module).__name__
    if kind == _LINEAR:
        own = getattr(module, "output_shape", None)
        if own is not None:  # convkit's Dense flattens (C, H, W) itself and words its own error
            try:
                own(input_shape)
            except ShapeError as err:
                raise ShapeError(str(err), label, input_shape) from None
            return None
        features = input_shape[-1] if input_shape else 0
        if features != module.in_features:
            raise ShapeError(
                f"{type(module).__name__} expects in_features={module.in_features} in the last dimension, "
                f"got {features}", label, input_shape)
        return None
    geometry = layer_geometry(module, input_shape)
    if geometry is None or len(input_shape) != 3:
        return geometry
    channels = input_shape[0]
    if kind in (_CONV, _CONV_T):
        expected = module.in_channels
        if expected is not None and channels != expected:
            raise ShapeError(f"{type(module).__name__} expects {expected} input channels, got {channels}",
                             label, input_shape)
    if kind == _CONV_T:
        for size, k, s, p, d, op, axis in zip(input_shape[1:], module.kernel_size, module.stride, module.padding,
                                              module.dilation, module.output_padding, ("height", "width")):
            transposed_output_size(size, k, s, p, op, d, layer=label, input_shape=input_shape, axis=axis)
        return geometry
    top, bottom, left, right = geometry["padding"]
    for size, k, s, (before, after), d, axis in zip(
        input_shape[1:], geometry["kernel"], geometry["stride"], ((top, bottom), (left, right)),
        geometry["dilation"], ("height", "width"),
    ):
        conv_output_size(size, k, s, (before, after), d, geometry["ceil_mode"], layer=label,
                         input_shape=input_shape, axis=axis)
    return geometry
