"""Which pixels a prediction rests on: saliency, Grad-CAM, occlusion, guided backprop and deconvnet maps.

Every method is Captum's; this module picks the layer, the target class and the options, and turns each
method's output into one comparable heatmap per image: (H, W) at the input's size, non-negative, divided
by its maximum so that it spans [0, 1] (0 keeps meaning "no evidence"; an all-zero map stays zero).

* saliency (Simonyan et al., 2013): |d score / d pixel|, the maximum over colour channels.
* gradcam (Selvaraju et al., 2017): ReLU of the layer's maps weighted by their mean gradient, upsampled
  bilinearly. The default layer is the model's last feature map (`forward_features`' output, e.g. ResNet's
  layer4), else the last conv layer whose output is larger than 1x1.
* occlusion (Zeiler & Fergus, 2014): the drop of the score when a square window is replaced by the
  baseline (0 in the model's input, i.e. the dataset's mean colour); rises only are clipped to 0.
* guided-backprop (Springenberg et al., 2015) and deconvnet (Zeiler & Fergus, 2014): the gradient with
  the ReLUs' backward pass changed; |value|, maximum over channels. Captum changes ``nn.ReLU`` modules
  only: ReLUs called as functions (``F.relu``) and other activations keep their usual gradient (a model
  without ``nn.ReLU`` modules gets the plain gradient, with a warning). In-place ReLUs are switched to
  out-of-place for the duration, as Captum's hooks need.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from convkit.explain._plot import new_figure, save_figure, to_display
from convkit.explain.source import Explainable, LayerError, conv_layers, eval_mode, resolve_layer

__all__ = ["METHODS", "AttributionResult", "attribute", "explain_image", "gradcam_layer", "overlay",
           "plot_attribution", "save_attribution"]

METHODS = ("saliency", "gradcam", "occlusion", "guided-backprop", "deconvnet")
_OPTIONS = {"occlusion": {"window", "stride", "baseline", "batch"}}


@contextlib.contextmanager
def _prepared(model: nn.Module):
    """Eval mode and out-of-place ReLUs while attributing; the model's own settings come back afterwards."""
    inplace = [m for m in model.modules() if isinstance(m, nn.ReLU) and m.inplace]
    try:
        for m in inplace:
            m.inplace = False
        with eval_mode(model), warnings.catch_warnings(), torch.enable_grad():
            warnings.filterwarnings("ignore", message="Setting backward hooks on ReLU")
            yield
    finally:
        for m in inplace:
            m.inplace = True


def _outputs(model: nn.Module, x: torch.Tensor, names: Sequence[str], run) -> dict[str, torch.Tensor]:
    """Runs `run(x)` with hooks on the named modules; returns their (first tensor) outputs."""
    outs: dict[str, torch.Tensor] = {}
    handles = []
    try:
        for name in names:
            def hook(_m, _i, out, name=name):
                if isinstance(out, torch.Tensor):
                    outs.setdefault(name, out)
            handles.append(model.get_submodule(name).register_forward_hook(hook))
        with torch.no_grad():
            result = run(x)
    finally:
        for h in handles:
            h.remove()
    outs["__result__"] = result
    return outs


def _head_pools_globally(model: nn.Module, feats: torch.Tensor) -> bool:
    """Whether the logits' gradient with respect to the feature map is the same at every position.

    That holds for heads that average the map globally (ResNet, GoogLeNet, NiN), where Grad-CAM is exactly
    the class activation map. A head that flattens the map (fastcnn, VGG, AlexNet) weighs each position on
    its own; averaging its gradients over positions can cancel them, and Grad-CAM there is often zero.
    """
    f = feats[:1].detach().clone().requires_grad_(True)
    try:
        logits = model.forward_head(f)
    except Exception:  # a head that cannot take the map alone: judge by the conv layers instead
        return False
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2:
        return False
    (grad,) = torch.autograd.grad(logits[0, int(logits[0].argmax())], f)
    spread = (grad - grad.mean((-2, -1), keepdim=True)).abs().max()
    return bool(spread <= 1e-6 * max(float(grad.abs().max()), 1e-12))


def gradcam_layer(model: nn.Module, inputs: torch.Tensor) -> str:
    """The layer Grad-CAM uses when none is named.

    The model's last feature map (the module whose output `forward_features` returns, e.g. "layer4" of a
    ResNet) when the head averages it globally, so that Grad-CAM's per-channel weights are exact. Otherwise
    (heads that flatten the map, such as fastcnn's, VGG's and AlexNet's; LeNet-5, whose last map is 1x1) the
    last conv layer whose output is larger than 1x1, taken before its normalisation and activation: there
    the averaged gradients still carry the class's evidence, where after the last ReLU they often cancel to
    an empty map.

    Raises:
        LayerError: no conv layer with a map larger than 1x1.
    """
    x = inputs[:1].detach()
    if callable(getattr(model, "forward_features", None)) and callable(getattr(model, "forward_head", None)):
        names = [n for n, _ in model.named_modules() if n]
        outs = _outputs(model, x, names, model.forward_features)
        feats = outs.pop("__result__")
        if isinstance(feats, torch.Tensor) and feats.dim() == 4 and feats.shape[-2:].numel() > 1:
            same = [n for n in names if outs.get(n) is feats]
            if same and _head_pools_globally(model, feats):
                return min(same, key=lambda n: n.count("."))
    convs = conv_layers(model)
    outs = _outputs(model, x, convs, model)
    spatial = [n for n in convs if n in outs and outs[n].dim() == 4 and outs[n].shape[-2:].numel() > 1]
    if not spatial:
        raise LayerError(f"{type(model).__name__} has no conv layer with a map larger than 1x1 at input "
                         f"{tuple(inputs.shape[1:])}; Grad-CAM needs one (name it with layer=)")
    return spatial[-1]


def _targets(model: nn.Module, inputs: torch.Tensor, target) -> torch.Tensor:
    n = len(inputs)
    if target is None:
        with torch.no_grad():
            return model(inputs).argmax(1)
    target = torch.as_tensor(target, dtype=torch.long, device=inputs.device).flatten()
    if target.numel() == 1:
        target = target.expand(n)
    if target.numel() != n:
        raise ValueError(f"target: one class or one per image ({n}), got {target.numel()}")
    return target.clone()


def _occlusion(model, x, target, window=None, stride=None, baseline=0.0, batch=64) -> torch.Tensor:
    from captum.attr import Occlusion

    c, h, w = x.shape[1:]
    window = int(window or max(2, round(min(h, w) / 7)))  # with stride window / 2: about 170-200 windows
    stride = int(stride or max(1, window // 2))
    if not 1 <= window <= min(h, w):
        raise ValueError(f"window: must be 1..{min(h, w)} for a {h}x{w} input, got {window}")
    attr = Occlusion(model).attribute(x, sliding_window_shapes=(c, window, window), strides=(c, stride, stride),
                                      baselines=float(baseline), target=target, perturbations_per_eval=int(batch))
    return attr.mean(1)  # a window covers every channel: the same drop on each


def _gradcam(model, x, target, layer) -> tuple[torch.Tensor, str]:
    from captum.attr import LayerAttribution, LayerGradCam

    name = layer if layer is not None else gradcam_layer(model, x)
    name, module = resolve_layer(model, name)
    cam = LayerGradCam(model, module).attribute(x, target=target, relu_attributions=True)
    if cam.dim() != 4:
        raise LayerError(f"layer {name!r} gives no spatial maps (output {tuple(cam.shape)}); Grad-CAM needs a "
                         f"conv layer or block, e.g. {', '.join(conv_layers(model)[-3:])}")
    empty = (cam.flatten(1).amax(1) <= 0).nonzero().flatten().tolist()
    if empty:
        warnings.warn(f"Grad-CAM at layer {name!r} is zero everywhere for image(s) {empty}: the class's gradients, "
                      "averaged over positions, weigh every channel against it. Name an earlier layer "
                      f"(e.g. {', '.join(conv_layers(model)[-2:])}) or use --method occlusion", stacklevel=3)
    return LayerAttribution.interpolate(cam, tuple(x.shape[-2:]), interpolate_mode="bilinear")[:, 0], name


def _relu_modified(model, x, target, deconv: bool) -> torch.Tensor:
    from captum.attr import Deconvolution, GuidedBackprop

    if not any(isinstance(m, nn.ReLU) for m in model.modules()):
        warnings.warn(f"{type(model).__name__} has no nn.ReLU module: {'deconvnet' if deconv else 'guided backprop'} "
                      "equals the plain gradient here (only nn.ReLU modules are overridden)", stacklevel=3)
    method = Deconvolution(model) if deconv else GuidedBackprop(model)
    return method.attribute(x, target=target).abs().amax(1)


def _raw_maps(model, x, method, target, layer, options) -> tuple[torch.Tensor, str | None]:
    from captum.attr import Saliency

    if method == "saliency":
        return Saliency(model).attribute(x, target=target, abs=True).amax(1), None
    if method == "gradcam":
        return _gradcam(model, x, target, layer)
    if method == "occlusion":
        return _occlusion(model, x, target, **options), None
    return _relu_modified(model, x, target, deconv=method == "deconvnet"), None


def _check(method: str, options: dict) -> None:
    if method not in METHODS:
        raise ValueError(f"method: {method!r} is not one of {', '.join(METHODS)}")
    unknown = set(options) - _OPTIONS.get(method, set())
    if unknown:
        allowed = ", ".join(sorted(_OPTIONS.get(method, ()))) or "none"
        raise TypeError(f"{method} takes no option {', '.join(sorted(unknown))} (its options: {allowed})")


def attribute(model, inputs: torch.Tensor, method: str, target=None, layer: str | None = None, *,
              scale: bool = True, **options) -> torch.Tensor:
    """Attribution maps: how much each pixel matters to the score of a class.

    Args:
        model: an ``nn.Module`` returning class scores (logits), or an `Explainable`.
        inputs: the model's input (N, C, H, W), normalised (uint8 images are normalised when `model` is an
            `Explainable`).
        method: one of `METHODS` (see the module's docstring for what each computes).
        target: the class: an int, one per image, or None for each image's predicted class.
        layer: Grad-CAM's layer (default: `gradcam_layer`); ignored by the other methods.
        scale: divide each map by its maximum (default); False keeps the raw non-negative values.
        **options: occlusion only: `window` (pixels, default min(H, W) / 7, at least 2), `stride`
            (default window // 2), `baseline` (default 0, the mean colour), `batch` (windows per forward).

    Returns:
        float tensor (N, H, W), non-negative, each map in [0, 1] when `scale`. The model's train/eval mode
        and in-place ReLUs are as before afterwards.

    Raises:
        ValueError: an unknown method or a bad target. TypeError: an option the method does not take.
        LayerError: an unknown layer, or one without spatial maps (Grad-CAM).

    Example:
        >>> model, x = convkit.create_model("lenet5"), torch.rand(2, 1, 32, 32)
        >>> maps = attribute(model, x, "gradcam", target=3)    # (N, H, W)
        >>> maps.shape
        torch.Size([2, 32, 32])
        >>> y, x_ = divmod(int(maps[0].argmax()), maps.shape[-1])   # where it looks most
    """
    _check(method, options)
    return _attribute(model, inputs, method, target, layer, scale, options)[0]


def _attribute(model, inputs, method, target, layer, scale, options) -> tuple[torch.Tensor, torch.Tensor, str | None]:
    net = getattr(model, "model", model)
    if isinstance(model, Explainable) and not inputs.is_floating_point():
        inputs = model.normalize(inputs)
    if inputs.dim() != 4:
        raise ValueError(f"inputs: expected (N, C, H, W), got shape {tuple(inputs.shape)}")
    with _prepared(net):
        targets = _targets(net, inputs, target)
        x = inputs.detach().clone().requires_grad_(True)
        maps, used = _raw_maps(net, x, method, targets, layer, options)
    maps = maps.detach().float().clamp(min=0)
    if scale:
        peak = maps.flatten(1).amax(1).view(-1, 1, 1)
        maps = torch.where(peak > 0, maps / peak.clamp(min=torch.finfo(maps.dtype).tiny), maps)
    return maps, targets, used


def overlay(image: torch.Tensor | np.ndarray, heatmap: torch.Tensor | np.ndarray, alpha: float = 0.5,
            cmap: str = "jet") -> np.ndarray:
    """Blends a heatmap, coloured with a matplotlib colormap, over an image.

    Args:
        image: uint8 (C, H, W) with 1 or 3 channels (gray is shown as gray).
        heatmap: (h, w) in [0, 1] (clipped); resized bilinearly to (H, W) if its size differs.
        alpha: weight of the heatmap's colour: 0 gives the image, 1 the coloured map.
        cmap: a matplotlib colormap name; "jet" runs blue (0) to red (1).

    Returns:
        uint8 array (H, W, 3): round((1 - alpha) * image + alpha * 255 * cmap(heatmap)).

    Example:
        >>> image, heatmap = torch.zeros(3, 64, 64, dtype=torch.uint8), torch.rand(64, 64)
        >>> rgb = overlay(image, heatmap)
        >>> rgb.shape, rgb.dtype
        ((64, 64, 3), dtype('uint8'))
    """
    from matplotlib import colormaps

    rgb = to_display(image).astype(np.float32)
    heat = torch.as_tensor(np.asarray(heatmap, dtype=np.float32)).clamp(0, 1)
    if tuple(heat.shape) != rgb.shape[:2]:
        heat = F.interpolate(heat[None, None], size=rgb.shape[:2], mode="bilinear", align_corners=False)[0, 0]
    colour = colormaps[cmap](heat.clamp(0, 1).numpy())[..., :3].astype(np.float32) * 255
    return np.rint((1 - alpha) * rgb + alpha * colour).clip(0, 255).astype(np.uint8)


@dataclass
class AttributionResult:
    """One image's attribution map and what it is about.

    Attributes:
        heatmap: (H, W) in [0, 1].
        method: the method used.
        target, target_name, probability: the class explained, its name and its softmax probability.
        predicted, predicted_name, predicted_probability: the model's top class.
        layer: Grad-CAM's layer (None for the other methods).
        peak: (row, column) of the map's maximum.
    """

    heatmap: torch.Tensor
    method: str
    target: int
    target_name: str
    probability: float
    predicted: int
    predicted_name: str
    predicted_probability: float
    layer: str | None
    peak: tuple[int, int]

    def to_dict(self) -> dict:
        """Everything but the map, JSON-ready."""
        h, w = self.heatmap.shape
        return {"method": self.method, "class": self.target, "class_name": self.target_name,
                "probability": self.probability, "predicted": self.predicted,
                "predicted_name": self.predicted_name, "predicted_probability": self.predicted_probability,
                "layer": self.layer, "peak": list(self.peak), "size": [h, w],
                "mean": float(self.heatmap.mean())}


def explain_image(explainable: Explainable, image: torch.Tensor, method: str, target: int | str | None = None,
                  layer: str | None = None, **options) -> AttributionResult:
    """`attribute` for one uint8 image (C, H, W), with the prediction and the map's peak.

    `target` may be a class index or a class name (None: the predicted class).

    Example:
        >>> from convkit.explain import load_explainable
        >>> ex = load_explainable(tiny_run)   # a run folder: convkit.train(epochs=1, limit=128).run_dir
        >>> shoe = convkit.data.load_default("test").images[5]     # a sneaker, uint8 (1, 28, 28)
        >>> r = explain_image(ex, shoe, "occlusion")
        >>> r.method, r.heatmap.shape, r.predicted_name in ex.classes, r.target == r.predicted
        ('occlusion', torch.Size([28, 28]), True, True)
        >>> r = explain_image(ex, shoe, "saliency", target="Sneaker")   # a class by name or index
        >>> r.target, r.target_name, r.layer                          # layer: Grad-CAM's only
        (7, 'Sneaker', None)
    """
    _check(method, options)
    x = explainable.normalize(image[None])
    with torch.no_grad(), eval_mode(explainable.model):
        probs = explainable.model(x).float().softmax(1)[0]
    target = None if target is None else explainable.class_index(target)
    maps, targets, used = _attribute(explainable, x, method, target, layer, True, options)
    heat, t, top = maps[0], int(targets[0]), int(probs.argmax())
    peak = divmod(int(heat.argmax()), heat.shape[-1])
    return AttributionResult(heat, method, t, explainable.class_name(t), float(probs[t]), top,
                             explainable.class_name(top), float(probs[top]), used, (int(peak[0]), int(peak[1])))


def plot_attribution(result: AttributionResult, image: torch.Tensor, path: str | os.PathLike,
                     title: str | None = None, alpha: float = 0.5) -> Path:
    """Writes a 900 x 340 PNG: the image | the map (peak marked +) | the map over the image."""
    fig = new_figure(900, 340)
    axes = fig.subplots(1, 3)
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.02, top=0.8, wspace=0.04)
    heat = result.heatmap.cpu().numpy()
    axes[0].imshow(to_display(image), interpolation="nearest")
    axes[0].set_title("image", fontsize=9)
    axes[1].imshow(heat, cmap="jet", vmin=0, vmax=1, interpolation="nearest")
    axes[1].plot([result.peak[1]], [result.peak[0]], "w+", markersize=10, markeredgewidth=2)
    axes[1].set_title(result.method + (f" ({result.layer})" if result.layer else ""), fontsize=9)
    axes[2].imshow(overlay(image, heat, alpha), interpolation="nearest")
    axes[2].set_title("overlay", fontsize=9)
    for ax in axes:
        ax.axis("off")
    explained = f"'{result.target_name}' ({100 * result.probability:.1f}%)"
    if result.target != result.predicted:
        explained += f"; predicted '{result.predicted_name}' ({100 * result.predicted_probability:.1f}%)"
    else:
        explained += ", the predicted class"
    fig.suptitle(title or f"{result.method} for {explained}", fontsize=10)
    return save_figure(fig, path)


def save_attribution(explainable: Explainable, image: torch.Tensor, method: str, path: str | os.PathLike,
                     target: int | str | None = None, layer: str | None = None, **options) -> Path:
    """Computes an attribution map for one image and writes image | map | overlay as a PNG (900 x 340).

    The title names the class explained with its probability (and the predicted class when it differs).

    Args:
        explainable: from `load_explainable`.
        image: uint8 (C, H, W), e.g. from `load_image`.
        method: one of `METHODS`.
        path: the PNG to write.
        target: class index or name; None: the predicted class.
        layer: Grad-CAM's layer (default: `gradcam_layer`).
        **options: see `attribute`.

    Returns:
        The path written.

    Example:
        >>> from PIL import Image
        >>> from convkit.explain import load_explainable, load_image
        >>> ex = load_explainable(tiny_run)   # a run folder: convkit.train(epochs=1, limit=128).run_dir
        >>> Image.fromarray(convkit.data.load_default("test").images[5, 0].numpy()).save("shoe.png")
        >>> save_attribution(ex, load_image("shoe.png", ex.input_shape), "gradcam", "gradcam.png")
        PosixPath('gradcam.png')
    """
    return plot_attribution(explain_image(explainable, image, method, target, layer, **options), image, path)
