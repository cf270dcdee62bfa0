"""The feature maps an image produces at chosen layers, read with forward hooks.

A hook sees a module's output as the model computes it, so what is shown is what the next layer reads: for
convkit's `layers.Conv2d` with an activation that is the activated map, for `nn.Conv2d` the map before
batch norm and ReLU (name the ReLU or the block to see it after them).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch

from convkit.explain._plot import mosaic, new_figure, save_figure, to_display
from convkit.explain.source import (
    Explainable,
    LayerError,
    conv_layers,
    eval_mode,
    load_explainable,
    resolve_layer,
)
from convkit.layers.shapes import format_shape

__all__ = ["default_feature_layers", "feature_grid", "feature_maps", "save_feature_maps"]


def _first_tensor(output, name: str = "the layer"):
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, tuple | list) and output and isinstance(output[0], torch.Tensor):
        return output[0]  # e.g. (output, hidden) of modules returning several values
    raise LayerError(f"layer {name!r} returns {type(output).__name__}, not a feature map (a tensor); "
                     f"name a layer whose output is a tensor")


def feature_maps(model, images: torch.Tensor, layers: list[str]) -> dict[str, torch.Tensor]:
    """Runs the model once and returns the outputs of the named layers.

    Args:
        model: an ``nn.Module`` or an `Explainable`.
        images: the model's input (N, C, H, W), already normalised; uint8 images are normalised first when
            `model` is an `Explainable`.
        layers: names from `named_modules` (see `conv_layers`).

    Returns:
        {layer name: output tensor}, detached, in the order of `layers`, computed in eval mode (each module's
        mode is restored). The hooks are removed afterwards, also when the forward pass fails.

    Raises:
        LayerError: a name the model does not have (before anything runs).

    Example:
        >>> model, x = convkit.create_model("lenet5"), torch.zeros(1, 1, 32, 32)
        >>> maps = feature_maps(model, x, ["features.c1", "features.c3"])
        >>> maps["features.c1"].shape, maps["features.c3"].shape
        (torch.Size([1, 6, 28, 28]), torch.Size([1, 16, 10, 10]))
    """
    net = getattr(model, "model", model)
    if isinstance(model, Explainable) and not images.is_floating_point():
        images = model.normalize(images)
    modules = {name: resolve_layer(net, name)[1] for name in layers}
    captured: dict[str, torch.Tensor] = {}
    handles = []
    try:
        for name, module in modules.items():
            def hook(_module, _inputs, output, name=name):
                captured[name] = _first_tensor(output, name).detach()
            handles.append(module.register_forward_hook(hook))
        with torch.no_grad(), eval_mode(net):  # train mode would update batch norm's running statistics
            net(images)
    finally:
        for handle in handles:
            handle.remove()
    return {name: captured[name] for name in layers}


def default_feature_layers(model) -> list[str]:
    """The first and the last conv layer: the edges and blobs that the image starts as, and what is left."""
    names = conv_layers(getattr(model, "model", model))
    return list(dict.fromkeys(names[:1] + names[-1:]))


def feature_grid(maps: torch.Tensor, max_channels: int = 32, columns: int | None = None,
                 border: int = 1, fill: float = float("nan")) -> np.ndarray:
    """One sample's maps (C, h, w) -> a mosaic (H, W) in [0, 1] of the first `max_channels` channels.

    All channels share one min-max scale, so a channel that barely responds looks dark next to one that
    does (per-channel scaling would brighten noise).

    Returns:
        float32 (rows * h + (rows + 1) * border, columns * w + (columns + 1) * border), a near-square grid:
        maps in [0, 1], borders and empty cells `fill` (NaN: imshow leaves them to the background colour).

    Example:
        >>> feature_grid(torch.rand(16, 8, 8)).shape     # 4 x 4 maps of 8 x 8 with borders
        (37, 37)
    """
    maps = maps.detach().float().cpu()
    if maps.dim() == 2:
        maps = maps[None]
    if maps.dim() != 3:
        raise ValueError(f"expected one sample's maps (C, h, w), got shape {tuple(maps.shape)}")
    shown = maps[:max_channels].numpy()
    low, high = float(shown.min()), float(shown.max())
    scaled = (shown - low) / (high - low) if high > low else np.zeros_like(shown)
    return mosaic(scaled, columns or math.ceil(math.sqrt(len(shown))), border, fill=fill)


def save_feature_maps(model, image: torch.Tensor, layers: list[str] | None, path: str | os.PathLike, *,
                      max_channels: int = 32, title: str | None = None) -> Path:
    """Draws the input image and, one panel per layer, a grid of that layer's feature maps.

    Args:
        model: an `Explainable` (its normalisation is used) or an ``nn.Module`` (mean 0.5, std 0.5).
        image: uint8 (C, H, W), e.g. from `load_image`.
        layers: layer names; None: `default_feature_layers`.
        path: the PNG to write.
        max_channels: channels shown per layer (the first ones); the panel title says how many of how many.
        title: the figure's title (default: the model's name).

    Returns:
        The path written. Each panel is 300 x 330 pixels.

    Raises:
        LayerError: a name the model does not have.

    Example:
        >>> from convkit.explain import load_explainable
        >>> ex = load_explainable("fastcnn")    # untrained; a run folder gives the trained model's maps
        >>> shoe = convkit.data.load_default("test").images[5]     # a sneaker, uint8 (1, 28, 28)
        >>> save_feature_maps(ex, shoe, ["features.stage1"], "maps.png")
        PosixPath('maps.png')
    """
    ex = model if isinstance(model, Explainable) else load_explainable(model, input_shape=tuple(image.shape))
    layers = list(layers) if layers else default_feature_layers(ex)
    maps = feature_maps(ex, ex.normalize(image[None]), layers)
    panel_w, panel_h = 300, 330
    fig = new_figure(panel_w * (1 + len(layers)), panel_h + 30)
    axes = fig.subplots(1, 1 + len(layers), squeeze=False)[0]
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.02, top=0.82, wspace=0.05)
    axes[0].imshow(to_display(image), interpolation="nearest")
    axes[0].set_title(f"input {format_shape(image.shape)}", fontsize=8)
    for ax, (name, out) in zip(axes[1:], maps.items()):
        sample = out[0] if out.dim() == 4 else out[0].view(-1, 1, 1)  # a flat vector: one 1x1 map per unit
        ax.imshow(feature_grid(sample, max_channels), cmap="viridis", vmin=0, vmax=1, interpolation="nearest")
        count = sample.shape[0]
        shown = f"{min(count, max_channels)} of {count}" if count > max_channels else f"{count}"
        ax.set_title(f"{name}\n{shown} channels, {sample.shape[1]}x{sample.shape[2]}", fontsize=8)
    for ax in axes:
        ax.axis("off")
    fig.suptitle(title or f"{ex.name}: feature maps", fontsize=10)
    return save_figure(fig, path)
