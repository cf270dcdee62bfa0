"""Activation maximisation: the input that most excites a filter or a class (Erhan et al., 2009;
Simonyan et al., 2013), regularised as in Yosinski et al. (2015) so that it looks like an image.

Gradient ascent on the input alone finds high-frequency patterns that excite a unit without resembling
anything. Two regularisers steer it towards images: each step sees the input shifted by a random offset
(jitter, `torch.roll`), so a pattern must excite the unit wherever it lands; and every few steps the input
is blurred (`torchvision.transforms.functional.gaussian_blur`), which removes the highest frequencies.
The input is optimised (Adam) in the model's normalised space and kept inside the range of real pixels.

Objectives:
    channel of a layer: the mean of that channel's map over all positions (of the unit, for a flat output).
    class: the class's logit, before the softmax: raising the softmax can be done by lowering the other
        classes, which says nothing about what the class looks like (Simonyan et al., 2013, Sec. 2).
"""

from __future__ import annotations

import math
import os
import textwrap
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from convkit.explain._plot import new_figure, save_figure
from convkit.explain.source import (
    UNTRAINED_MEAN,
    UNTRAINED_STD,
    Explainable,
    LayerError,
    eval_mode,
    resolve_layer,
)

__all__ = ["maximize", "objective_value", "plot_maximized", "save_maximized"]


class _Reached(Exception):
    """Raised by the hook once the layer's output is captured: the rest of the network need not run."""


def _stats(model, input_shape, mean, std):
    c = input_shape[0]
    if isinstance(model, Explainable):
        mean = model.mean if mean is None else mean
        std = model.std if std is None else std
    mean = torch.as_tensor(UNTRAINED_MEAN if mean is None else mean, dtype=torch.float32).expand(c).reshape(1, c, 1, 1)
    std = torch.as_tensor(UNTRAINED_STD if std is None else std, dtype=torch.float32).expand(c).reshape(1, c, 1, 1)
    return mean, std


def _check_target(net: nn.Module, layer, channel, target_class) -> tuple[str | None, nn.Module | None]:
    if (channel is None) == (target_class is None):
        raise ValueError("give either channel= (with a layer) or target_class=, not both and not neither")
    if target_class is not None:
        if layer is not None:
            raise ValueError("layer: a class is maximised at the model's output; drop layer or give channel=")
        return None, None
    if channel < 0:
        raise ValueError(f"channel: must be >= 0, got {channel}")
    return resolve_layer(net, layer, default="last")


def _objective(net: nn.Module, x: torch.Tensor, module: nn.Module | None, channel, target_class) -> torch.Tensor:
    """The quantity maximised, one value per image: the channel's mean activation or the class logit."""
    if module is None:
        logits = net(x)
        if not 0 <= target_class < logits.shape[1]:
            raise ValueError(f"target_class: {target_class} is out of range; the model has {logits.shape[1]} classes")
        return logits[:, target_class]
    captured = {}

    def hook(_m, _i, out):
        captured["out"] = out[0] if isinstance(out, tuple | list) else out
        raise _Reached

    handle = module.register_forward_hook(hook)
    try:
        net(x)
    except _Reached:
        pass
    finally:
        handle.remove()
    if "out" not in captured:
        raise LayerError("the layer is not run by the model's forward pass (an auxiliary head?); pick another")
    out = captured["out"]
    if channel >= out.shape[1]:
        raise ValueError(f"channel: {channel} is out of range; the layer has {out.shape[1]} channels (0..{out.shape[1] - 1})")
    return out[:, channel].flatten(1).mean(1)


def objective_value(model, images: torch.Tensor, *, layer: str | None = None, channel: int | None = None,
                    target_class: int | None = None, mean=None, std=None) -> torch.Tensor:
    """The objective `maximize` raises, for images on 0..1 (N, C, H, W) or (C, H, W): one value per image.

    Example:
        >>> model = convkit.create_model("lenet5")
        >>> objective_value(model, torch.full((1, 32, 32), 0.5), layer="features.c3", channel=2).shape
        torch.Size([1])
    """
    net = getattr(model, "model", model)
    images = images[None] if images.dim() == 3 else images
    mean, std = _stats(model, tuple(images.shape[1:]), mean, std)
    _, module = _check_target(net, layer, channel, target_class)
    with torch.no_grad(), eval_mode(net):
        return _objective(net, (images.float() - mean) / std, module, channel, target_class)


def _blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    from torchvision.transforms.functional import gaussian_blur

    size = 2 * math.ceil(3 * sigma) + 1  # odd, covers +-3 sigma
    return gaussian_blur(x, [size, size], [sigma, sigma])


def maximize(model, *, layer: str | None = None, channel: int | None = None, target_class: int | None = None,
             input_shape: tuple[int, int, int] | None = None, steps: int = 200, lr: float = 0.05, jitter: int = 4,
             blur_every: int = 4, blur_sigma: float = 0.5, seed: int = 0, mean=None, std=None,
             progress: bool | Callable[[int, float], None] = False) -> torch.Tensor:
    """Finds an input that makes a channel of a layer, or a class, respond strongly.

    Args:
        model: an ``nn.Module`` or an `Explainable` (its normalisation and input shape are the defaults).
        layer: the layer of `channel` (default: the last conv layer).
        channel: maximise the mean of this channel's map at `layer`.
        target_class: maximise this class's logit instead (give `channel` or `target_class`).
        input_shape: (C, H, W); default: the Explainable's or the model's `input_shape`.
        steps: gradient-ascent steps (Adam).
        lr: Adam's step size, in the normalised input space.
        jitter: each step shifts the input by up to this many pixels in each direction (0: off).
        blur_every: blur the input every this many steps (0: never).
        blur_sigma: the blur's standard deviation in pixels.
        seed: seeds the starting image and the shifts: the same seed gives the same image.
        mean, std: per-channel normalisation on 0..1 (default: the Explainable's, else 0.5 and 0.5).
        progress: True for a progress bar, or a function called as progress(step, objective).

    Returns:
        float tensor (C, H, W) in [0, 1]. The model's parameters and modes are unchanged.

    Raises:
        ValueError: neither or both of channel and target_class; a channel or class out of range.
        LayerError: no such layer.

    Example:
        >>> model = convkit.create_model("lenet5")
        >>> image = maximize(model, layer="features.c3", channel=5, input_shape=(1, 32, 32), steps=20)
        >>> image.shape, float(image.min()) >= 0, float(image.max()) <= 1
        (torch.Size([1, 32, 32]), True, True)
        >>> start = objective_value(model, torch.full((1, 32, 32), 0.5), layer="features.c3", channel=5)
        >>> bool(objective_value(model, image, layer="features.c3", channel=5) > start)
        True
    """
    net = getattr(model, "model", model)
    shape = tuple(input_shape or getattr(model, "input_shape", None) or ())
    if len(shape) != 3:
        raise ValueError("input_shape: give (C, H, W); the model does not carry one")
    _, module = _check_target(net, layer, channel, target_class)
    device = next(net.parameters(), torch.empty(0)).device
    mean, std = (t.to(device) for t in _stats(model, shape, mean, std))
    low, high = (0 - mean) / std, (1 - mean) / std
    generator = torch.Generator().manual_seed(seed)
    start = 0.5 + 0.05 * torch.randn((1, *shape), generator=generator)  # gray with a little noise
    x = ((start.to(device) - mean) / std).requires_grad_(True)
    optimizer = torch.optim.Adam([x], lr=lr)
    bar = _progress_bar(progress, steps)
    with eval_mode(net), torch.enable_grad():
        for step in range(steps):
            dy, dx = (torch.randint(-jitter, jitter + 1, (2,), generator=generator).tolist() if jitter else (0, 0))
            value = _objective(net, torch.roll(x, (dy, dx), dims=(2, 3)), module, channel, target_class)[0]
            (grad,) = torch.autograd.grad(-value, x)  # the input's gradient only: no parameter is touched
            x.grad = grad
            optimizer.step()
            with torch.no_grad():
                if blur_every and (step + 1) % blur_every == 0:
                    x.copy_(_blur(x, blur_sigma))
                x.copy_(torch.maximum(torch.minimum(x, high), low))  # stay a real image
            bar(step, float(value.detach()))
    return (x.detach() * std + mean).clamp(0, 1)[0].cpu()


def _progress_bar(progress, steps: int) -> Callable[[int, float], None]:
    if callable(progress):
        return progress
    if not progress:
        return lambda step, value: None
    from tqdm import tqdm

    bar = tqdm(total=steps, desc="maximising", leave=False)

    def update(step: int, value: float) -> None:
        bar.set_postfix(objective=f"{value:.3g}")
        bar.update(1)
        if step == steps - 1:
            bar.close()

    return update


def plot_maximized(image: torch.Tensor, path: str | os.PathLike, title: str = "") -> Path:
    """Writes an image on 0..1 (C, H, W) as a 400 x 440 PNG (pixels drawn as squares), with a title."""
    fig = new_figure(400, 440)
    ax = fig.add_axes((0.05, 0.03, 0.9, 0.82))
    a = image.detach().cpu().clamp(0, 1).numpy()
    if a.shape[0] == 1:
        ax.imshow(a[0], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    else:
        ax.imshow(np.moveaxis(a[:3], 0, -1), interpolation="nearest")
    ax.axis("off")
    if title:
        fig.suptitle(textwrap.fill(title, 55), fontsize=9)
    return save_figure(fig, path)


def save_maximized(model, path: str | os.PathLike, *, layer: str | None = None, channel: int | None = None,
                   target_class: int | None = None, title: str | None = None, **options) -> Path:
    """`maximize`, then draws the image with the objective it reached in the title.

    Args:
        model, layer, channel, target_class: as `maximize`.
        path: the PNG to write (400 x 440 pixels).
        title: replaces the generated title.
        **options: the other arguments of `maximize` (input_shape, steps, lr, jitter, blur_every, ...).

    Returns:
        The path written.

    Example:
        >>> from convkit.explain import load_explainable
        >>> save_maximized(load_explainable("lenet5"), "c3-5.png", layer="features.c3", channel=5, steps=20)
        PosixPath('c3-5.png')
    """
    image = maximize(model, layer=layer, channel=channel, target_class=target_class, **options)
    stats = {k: options[k] for k in ("mean", "std") if k in options}
    value = float(objective_value(model, image, layer=layer, channel=channel, target_class=target_class, **stats)[0])
    if title is None:
        net = getattr(model, "model", model)
        if target_class is not None:
            name = model.class_name(target_class) if isinstance(model, Explainable) else f"class {target_class}"
            what = f"'{name}' (logit)" if name != f"class {target_class}" else f"{name} (logit)"
        else:
            what = f"{resolve_layer(net, layer, default='last')[0]}, channel {channel} (mean activation)"
        title = f"maximising {what}: objective {value:.3g}"
    return plot_maximized(image, path, title)
