"""A conv layer's learned kernels as an image grid.

A first layer that reads an RGB image shows each kernel as one colour tile (its three input channels as
red, green and blue, as in Krizhevsky et al. 2012, Fig. 3). Deeper layers read feature maps, not colours,
so each kernel is drawn per input channel: one gray tile per (filter, input channel) pair, a row per filter.
Single-channel layers (grayscale input) draw one gray tile per filter.

Kernels are small (3x3, 5x5), so tiles are upscaled by an integer factor with nearest-neighbour
repetition: each weight stays a visible square, nothing is interpolated.
"""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import numpy as np
import torch
from torch import nn

from convkit.explain._plot import grid_shape, mosaic, new_figure, save_figure
from convkit.explain.source import LayerError, conv_layers, resolve_layer

__all__ = ["NORMALIZATIONS", "filter_grid", "filter_layout", "save_filters"]

NORMALIZATIONS = ("filter", "global")


def _module(model) -> nn.Module:
    return getattr(model, "model", model)  # an Explainable or a module


def filter_layout(model, layer: str | None = None, *, max_filters: int = 64, max_channels: int = 16,
                  rgb: bool | None = None) -> dict:
    """What `filter_grid` will draw for a layer, without drawing it.

    Returns:
        A dict: layer (name), weight_shape [out, in, kh, kw], mode ("rgb", "gray" or "per-channel"),
        filters / channels (how many are shown), columns and rows of the grid.

    Raises:
        LayerError: no such layer, or a layer without a 4-D weight.
    """
    net = _module(model)
    name, module = resolve_layer(net, layer, default="first")
    weight = getattr(module, "weight", None)
    if not isinstance(weight, torch.Tensor) or weight.dim() != 4:
        raise LayerError(f"layer {name!r} ({type(module).__name__}) has no 2-D convolution kernels; "
                         f"conv layers: {', '.join(conv_layers(net))}")
    out_ch, in_ch = weight.shape[:2]
    if rgb is None:  # colour only means something where the layer reads the image itself
        rgb = in_ch == 3 and conv_layers(net)[:1] == [name]
    if rgb and in_ch != 3:
        raise ValueError(f"rgb=True needs a layer with 3 input channels; {name!r} has {in_ch}")
    filters = min(out_ch, max_filters)
    if rgb or in_ch == 1:
        channels = in_ch
        rows, columns = grid_shape(filters)
        mode = "rgb" if rgb else "gray"
    else:
        channels = min(in_ch, max_channels)
        rows, columns = filters, channels
        mode = "per-channel"
    return {"layer": name, "weight_shape": list(weight.shape), "mode": mode, "filters": filters,
            "channels": channels, "rows": rows, "columns": columns}


def _scaled(weight: np.ndarray, normalize: str) -> np.ndarray:
    """Weights (O, I, kh, kw) -> 0..1 by min-max, per filter or over the layer; a flat range gives 0.5."""
    if normalize not in NORMALIZATIONS:
        raise ValueError(f"normalize must be one of {', '.join(NORMALIZATIONS)}, got {normalize!r}")
    axes = (1, 2, 3) if normalize == "filter" else None
    low = weight.min(axis=axes, keepdims=True)
    span = weight.max(axis=axes, keepdims=True) - low
    return np.where(span > 0, (weight - low) / np.where(span > 0, span, 1), 0.5).astype(np.float32)


def filter_grid(model, layer: str | None = None, *, normalize: str = "filter", max_filters: int = 64,
                max_channels: int = 16, rgb: bool | None = None, min_tile: int = 20, border: int = 2) -> np.ndarray:
    """A conv layer's kernels as one image.

    Args:
        model: an ``nn.Module`` or an `Explainable`.
        layer: a conv layer's name (see `conv_layers`); None: the first conv layer.
        normalize: "filter" (default): each filter min-max scaled to 0..1 over all its input channels, so
            every filter shows its pattern at full contrast (under one scale for the layer, filters with
            small weights would be flat gray) while its channels keep their relative strength (the colour
            balance of an RGB tile). "global": one min-max scale for the layer, which shows which filters
            are strong.
        max_filters: at most this many filters (the first ones) are drawn.
        max_channels: at most this many input channels per filter in per-channel mode.
        rgb: draw 3-channel kernels as colour tiles; None: only for the model's first conv layer.
        min_tile: kernels are upscaled by ceil(min_tile / kernel size) (nearest), so a 3x3 kernel is 21 px.
        border: pixels of white between and around the tiles.

    Returns:
        float32 array (H, W, 3) in [0, 1]: tiles of kh*zoom x kw*zoom pixels, `rows` x `columns` of them
        (see `filter_layout`), H = rows * kh * zoom + (rows + 1) * border, likewise W.

    Raises:
        LayerError: no such layer or not a convolution.

    Example:
        >>> filter_grid(convkit.create_model("lenet5")).shape    # 6 filters 5x5 (zoom 4) in 2 rows of 3
        (46, 68, 3)
    """
    info = filter_layout(model, layer, max_filters=max_filters, max_channels=max_channels, rgb=rgb)
    module = _module(model).get_submodule(info["layer"])
    weight = _scaled(module.weight.detach().float().cpu().numpy(), normalize)[: info["filters"]]
    kh, kw = weight.shape[2:]
    zoom = max(1, -(-min_tile // max(kh, kw)))
    if info["mode"] == "rgb":
        tiles = np.moveaxis(weight, 1, -1)  # (O, kh, kw, 3)
    else:
        tiles = weight[:, : info["channels"]].reshape(-1, kh, kw)  # row-major: filter by filter
    tiles = tiles.repeat(zoom, axis=1).repeat(zoom, axis=2)
    grid = mosaic(tiles, info["columns"], border, fill=1.0)
    return np.repeat(grid[..., None], 3, axis=-1) if grid.ndim == 2 else grid


def _title(info: dict, normalize: str) -> str:
    out_ch, in_ch, kh, kw = info["weight_shape"]
    text = f"{info['layer']}: {info['filters']} of {out_ch} filters" if info["filters"] < out_ch else \
        f"{info['layer']}: {out_ch} filters"
    if info["mode"] == "per-channel":
        text += f" x {info['channels']} of {in_ch} input channels" if info["channels"] < in_ch else \
            f" x {in_ch} input channels"
        text += " (a row per filter)"
    elif info["mode"] == "rgb":
        text += " (RGB)"
    return f"{text}, {kh}x{kw}, normalised per {'filter' if normalize == 'filter' else 'layer'}"


def save_filters(model, path: str | os.PathLike, layer: str | None = None, *, normalize: str = "filter",
                 max_filters: int = 64, max_channels: int = 16, rgb: bool | None = None, title: str | None = None
                 ) -> Path:
    """Draws `filter_grid` to a PNG, its title saying which layer, how many filters and how they are scaled.

    Arguments are those of `filter_grid`; `title` replaces the generated one.

    Returns:
        The path written.

    Example:
        >>> from convkit.explain import load_explainable
        >>> ex = load_explainable("fastcnn")     # untrained; or a run folder
        >>> save_filters(ex, "filters.png", "features.stage1.0.conv")
        PosixPath('filters.png')
    """
    info = filter_layout(model, layer, max_filters=max_filters, max_channels=max_channels, rgb=rgb)
    grid = filter_grid(model, info["layer"], normalize=normalize, max_filters=max_filters,
                       max_channels=max_channels, rgb=rgb)
    h, w = grid.shape[:2]
    scale = max(1, min(4, 800 // max(h, w)))  # small grids drawn 2-4x, still pixel for pixel
    pad = 10
    fig_w = max(w * scale + 2 * pad, 480)
    text = textwrap.fill(title or _title(info, normalize), width=fig_w // 7)  # ~6 px a character at 9 pt
    fig_h = h * scale + 16 * (text.count("\n") + 1) + 3 * pad
    fig = new_figure(fig_w, fig_h)
    ax = fig.add_axes(((fig_w - w * scale) / 2 / fig_w, pad / fig_h, w * scale / fig_w, h * scale / fig_h))
    ax.imshow(grid, interpolation="nearest")
    ax.axis("off")
    fig.suptitle(text, fontsize=9, y=1 - 8 / fig_h, va="top")
    return save_figure(fig, path)
