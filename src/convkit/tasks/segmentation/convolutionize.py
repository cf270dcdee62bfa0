"""Convolutionize a classifier: its fully connected head becomes convolutions, so it slides over larger images.

`convolutionize(classifier)` keeps the classifier's trunk (its convolutions and pools, the same weights, shared)
and rewrites the head that follows the flatten: the first ``Linear`` becomes a k x k ``Conv2d`` over the last
map (k = that map's size at the training input size; the weights reshaped, exactly), the next ``Linear``s 1 x 1
convolutions, ``BatchNorm1d`` a ``BatchNorm2d`` with the same statistics, activations and dropout the same
elementwise modules. On a larger image the result gives a map of class scores, a coarse segmentation with no
extra training (Long, Shelhamer & Darrell, 2015, Sec. 3.1; Sermanet et al., 2014, OverFeat).

Pooling before the flatten. An adaptive average pool (fastcnn's ``pool=7``, VGG's and AlexNet's
``AdaptiveAvgPool2d``, ResNet's global average pool) is, at the training size, a fixed linear map from the m x m
trunk map to p x p bins; it is folded into the first linear layer, which becomes one m x m convolution (for a
global pool: the linear weights divided by m^2 at every tap, i.e. an average over the window, then the linear
layer). A global pool with no linear layer after it (Network-in-Network: the head is already convolutional up to
the pooling) becomes an m x m average pool with stride 1. An adaptive max pool becomes max pools of
(m / p) x (m / p) with stride 1 read by a dilated convolution (m divisible by p only). Either way every output
position sees one training-size window, so the identities below hold at every position, not just on a grid.

**What it computes.** Let s be the total stride of the trunk (`Convolutionized.stride`), R x R the classifier's
training input (`receptive_field`) and M the padding margin (`margin`), the sum over the layers of their padding
times the stride of their input, ``M = sum_l p_l * jump_l`` in input pixels (``(r - 1) / 2 - start`` of the
output's receptive field, `convkit.inspect.receptive`). For an input X of any size >= R, output (i, j) depends
exactly on the window ``X[..., i*s - M : i*s + R + M, j*s - M : j*s + R + M]`` (receptive field R + 2M).

* At the training size (X is R x R) the output is (N, K, 1, 1) and equals the classifier's logits (within
  float rounding, 1e-5).
* Without padding (M = 0: LeNet-5), output (i, j) equals the classifier applied to the crop
  ``X[..., i*s : i*s + R, j*s : j*s + R]``, exactly, at every position.
* With padding (M > 0: fastcnn, M = 13 px at 28 x 28, s = 4), output (i, j) is the classifier on that crop *with
  its real surroundings*: the classifier replaces the surroundings by zero padding at every layer, the
  convolutionized net sees the neighbouring pixels (and the features computed from them) instead. So the two
  differ in general (a random image: they differ by about the logits' own spread). They are equal when the
  padding is reproduced: X is zero within M pixels of the crop's border on both sides (outside: what padding
  replaces; inside: what the features at the padded positions are computed from; M is enough on both sides, fastcnn
  needs 9 px inside, measured) and the net maps a zero input to zero features (no bias after the convolutions: true of an untrained fastcnn in eval mode, not of a
  trained one). Positions with ``i*s >= M`` and ``i*s + R + M <= H`` (likewise for j) do not see the big image's
  own border padding: there the map is the classifier slid over the image with real context, independent of
  how far the image extends.

Example:
    >>> net = convolutionize("lenet5")
    >>> net.stride, net.receptive_field, net.margin
    (4, (32, 32), 0)
    >>> net.eval()(torch.zeros(1, 1, 48, 40)).shape          # (48 - 32) / 4 + 1 = 5, (40 - 32) / 4 + 1 = 3
    torch.Size([1, 10, 5, 3])
"""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.fx
import torch.nn.functional as F
from torch import nn

from convkit.models._registry import ModelArgumentError
from convkit.utils import shorten

__all__ = ["Convolutionized", "class_map", "convolutionize", "save_class_map"]

# Elementwise modules of a fully connected head: the same module works on (N, C, H, W).
_ELEMENTWISE = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish, nn.Tanh,
                nn.Sigmoid, nn.Hardswish, nn.Hardsigmoid, nn.Hardtanh, nn.Softplus, nn.Identity, nn.Dropout,
                nn.AlphaDropout, nn.PReLU)
_ELEMENTWISE_FUNCTIONS = {F.relu, torch.relu, torch.tanh, torch.sigmoid, F.gelu, F.silu, F.relu6, F.leaky_relu,
                          F.elu, F.dropout}
_POOLS = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.AvgPool2d, nn.MaxPool2d)


class _Function(nn.Module):
    """An elementwise function of the head (``F.relu``...) as a module."""

    def __init__(self, fn, kwargs: dict):
        super().__init__()
        self.fn, self.kwargs = fn, dict(kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x, **self.kwargs)

    def extra_repr(self) -> str:
        return getattr(self.fn, "__name__", str(self.fn))


class Convolutionized(nn.Module):
    """A classifier whose head is convolutional: ``forward(x)`` -> class scores ``(N, K, H', W')`` (logits).

    Built by `convolutionize`; see the module docstring for what output (i, j) equals.

    Attributes:
        trunk: the classifier's convolutions and pools (a ``torch.fx.GraphModule`` sharing its modules).
        head: the convolutional head (``nn.Sequential``).
        stride: the total stride s in input pixels (output (i, j) reads the crop at (i*s, j*s)).
        receptive_field: (R_h, R_w), the classifier's training input size: the crop each output stands for.
        margin: M, how far padding reaches in input pixels (0 without padding).
        classes: the class names from the classifier's model_cfg, or None.
        num_classes: K.
        input_shape: the classifier's training input (C, H, W).
        upsample: when True, ``forward`` resizes the map to the input's size (bilinear), the segmenter's form;
            the raw map by default.
        model_cfg: task "segment", spec ``{"kind": "segmenter", "segmenter": "convolutionized", "classifier":
            <the classifier's spec>, ...}``.
    """

    def __init__(self, trunk: nn.Module, head: nn.Sequential, input_shape: tuple[int, int, int], num_classes: int,
                 classes: list[str] | None = None, upsample: bool = False):
        super().__init__()
        self.trunk, self.head = trunk, head
        self.input_shape = tuple(int(v) for v in input_shape)
        self.receptive_field = self.input_shape[1:]
        self.num_classes = int(num_classes)
        self.classes = list(classes) if classes else None
        self.upsample = bool(upsample)
        self.stride, self.margin = 1, 0

    def forward(self, x: torch.Tensor, upsample: bool | None = None) -> torch.Tensor:
        """Normalised images (N, C, H, W), H, W >= the training size -> logits (N, K, H', W') (or (N, K, H, W)
        with ``upsample``)."""
        scores = self.head(self.trunk(x))
        if self.upsample if upsample is None else upsample:
            scores = F.interpolate(scores, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return scores

    def extra_repr(self) -> str:
        return (f"num_classes={self.num_classes}, stride={self.stride}, receptive_field={self.receptive_field}, "
                f"margin={self.margin}")


def _resolve_classifier(classifier: Any, input_shape: Sequence[int] | None) -> nn.Module:
    from convkit.models.reference import resolve_model

    if isinstance(classifier, nn.Module) and hasattr(classifier, "model_cfg"):
        return classifier
    if isinstance(classifier, nn.Module | str | os.PathLike):
        return resolve_model(classifier)
    raise ModelArgumentError(f"convolutionize: classifier {shorten(classifier)}: expected a zoo name, a run "
                             "folder, a checkpoint or a model (nn.Module)")


class _LeafTracer(torch.fx.Tracer):
    """torch.fx's tracer, with every subclass of a torch.nn layer a leaf (convkit's Conv2d, Dense, BatchNorm1d...:
    their checks of the input's shape cannot be traced)."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        containers = (nn.Sequential, nn.ModuleList, nn.ModuleDict)
        return super().is_leaf_module(m, qualname) or (
            not isinstance(m, containers) and any(c.__module__.startswith("torch.nn.modules") and c is not nn.Module
                                                  for c in type(m).__mro__[1:]))


class _Method(nn.Module):
    """One method of a model (``forward_features``, ``forward_head``) as a module."""

    def __init__(self, model: nn.Module, method: str):
        super().__init__()
        self.model, self.method = model, method

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return getattr(self.model, self.method)(x)


def _trace(model: nn.Module) -> torch.fx.GraphModule:
    return torch.fx.GraphModule(model, _LeafTracer().trace(model))


def _flattens(node: torch.fx.Node, modules: dict) -> bool:
    """A convkit Dense (an ``nn.Linear`` that flattens its input first)."""
    from convkit.layers.core import Dense

    return node.op == "call_module" and isinstance(modules.get(node.target), Dense)


def _is_flatten(node: torch.fx.Node, modules: dict) -> bool:
    if node.op == "call_function" and node.target is torch.flatten:
        return True
    if node.op == "call_method" and node.target in ("flatten", "view", "reshape"):
        return True
    return node.op == "call_module" and isinstance(modules.get(node.target), nn.Flatten)


def _refuse(name: str, why: str) -> ModelArgumentError:
    return ModelArgumentError(f"convolutionize: {name}: {why}; convolutionize takes a classifier whose head is "
                              "fully connected layers (with activations, dropout, BatchNorm1d) after a conv map, "
                              "possibly after an adaptive pool")


def convolutionize(classifier: Any, input_shape: Sequence[int] | None = None) -> Convolutionized:
    """A classifier -> the same network with a convolutional head (`Convolutionized`), to slide over larger images.

    See the module docstring for the construction and the exact statement of what each output equals.

    Args:
        classifier: a convkit model (``nn.Module``, with ``model_cfg`` or not), or anything
            `convkit.models.resolve_model` takes: a zoo name, a model file, a run folder, a checkpoint.
        input_shape: the classifier's training input (C, H, W); default: its ``model_cfg.input_shape``.

    Returns:
        A `Convolutionized` in the classifier's mode (call ``.eval()`` for inference), sharing its trunk's
        modules, with ``model_cfg`` (task "segment") whose spec rebuilds it.

    Raises:
        ModelArgumentError: a head that is not fully connected layers after a conv map (the message says what
            was found), a model torch.fx cannot trace, an unknown input size.
        UnknownModelError, CheckpointError, FileNotFoundError: from `convkit.models.resolve_model`.

    Example:
        >>> net = convolutionize("fastcnn")
        >>> net.stride, net.receptive_field, net.margin, net.head[-1]
        (4, (28, 28), 13, Conv2d(64, 10, kernel_size=(7, 7), stride=(1, 1)))
    """
    from dataclasses import replace

    from convkit.models.reference import ModelCfg

    model = _resolve_classifier(classifier, input_shape)
    cfg = model.model_cfg
    name = cfg.name
    shape = tuple(int(v) for v in (input_shape or cfg.input_shape or ()))
    if len(shape) != 3 or min(shape) < 1:
        raise ModelArgumentError(f"convolutionize: {name}: input_shape {shorten(input_shape or cfg.input_shape)}: "
                                 "expected the classifier's training input (C, H, W)")
    was_training = model.training
    model.eval()  # trace the inference graph (GoogLeNet's auxiliary heads only run in training)
    body = None
    try:
        graph_module = _trace(model)
    except Exception as err:
        # a forward torch.fx cannot follow (NiN slices its body): keep forward_features, trace forward_head alone
        if not callable(getattr(model, "forward_features", None)) or not callable(getattr(model, "forward_head",
                                                                                          None)):
            raise _refuse(name, f"torch.fx cannot trace it ({shorten(str(err), 150)})") from None
        try:
            graph_module, body = _trace(_Method(model, "forward_head")), _Method(model, "forward_features")
        except Exception:
            raise _refuse(name, f"torch.fx cannot trace it ({shorten(str(err), 150)})") from None
    finally:
        model.train(was_training)
    modules = dict(graph_module.named_modules())
    nodes = list(graph_module.graph.nodes)
    flat = next((n for n in nodes if _is_flatten(n, modules) or _flattens(n, modules)), None)
    if flat is None:
        raise _refuse(name, "no flatten before its head")
    pool_node = flat.args[0]
    if _flattens(flat, modules):  # convkit's Dense flattens its input itself: it is the head's first layer
        if len(pool_node.users) != 1:
            raise _refuse(name, f"{pool_node.name} feeds {len(pool_node.users)} operations")
        flat = pool_node
    pool = modules.get(pool_node.target) if pool_node.op == "call_module" else None
    if isinstance(pool, nn.AdaptiveAvgPool2d | nn.AdaptiveMaxPool2d) and len(pool_node.users) == 1:
        trunk_end = pool_node.args[0]
    else:
        pool, trunk_end = None, pool_node
    trunk = _cut(graph_module, trunk_end)
    if body is not None:
        trunk = nn.Sequential(body, trunk)
    head_ops = _head_ops(flat, modules, name)
    with torch.no_grad():
        trunk.eval()
        fmap = trunk(torch.zeros(1, *shape, device=_device(model)))
    if fmap.dim() != 4:
        raise _refuse(name, f"the map before the flatten has shape {tuple(fmap.shape)}, not (N, C, H, W)")
    channels, size = fmap.shape[1], tuple(fmap.shape[-2:])
    head = _convert_head(head_ops, pool, channels, size, name)
    net = Convolutionized(trunk, head, shape, num_classes=0, classes=cfg.classes)
    net.train(was_training)
    with torch.no_grad():
        out = head.eval()(fmap)
    head.train(was_training)
    if out.dim() != 4 or tuple(out.shape[-2:]) != (1, 1):
        raise _refuse(name, f"its head gives {tuple(out.shape)} at the training size, not one score vector")
    net.num_classes = int(out.shape[1])
    net.stride, net.margin = _stride_and_margin(net, shape)
    spec = {"kind": "segmenter", "segmenter": "convolutionized", "classifier": copy.deepcopy(cfg.spec),
            "num_classes": net.num_classes, "in_channels": shape[0], "image_size": list(shape[1:]), "kwargs": {}}
    net.model_cfg = replace(cfg, name=f"{name}-convolutionized", task="segment", input_shape=shape,
                            num_classes=net.num_classes, spec=spec, source="module") \
        if isinstance(cfg, ModelCfg) else None
    return net


def _device(model: nn.Module) -> torch.device:
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def _cut(graph_module: torch.fx.GraphModule, end: torch.fx.Node) -> torch.fx.GraphModule:
    """The graph up to `end` (its output), sharing the modules."""
    graph = torch.fx.Graph()
    env: dict[torch.fx.Node, torch.fx.Node] = {}
    for node in graph_module.graph.nodes:
        env[node] = graph.node_copy(node, lambda n: env[n])
        if node is end:
            break
    graph.output(env[end])
    trunk = torch.fx.GraphModule(graph_module, graph, class_name="Trunk")
    trunk.graph.eliminate_dead_code()
    trunk.recompile()
    return trunk


def _head_ops(flat: torch.fx.Node, modules: dict, name: str) -> list:
    """The chain of operations after the flatten, up to the output: modules, or (function, kwargs)."""
    ops, node = [], flat
    while True:
        users = list(node.users)
        if len(users) != 1:
            raise _refuse(name, f"{node.name} feeds {len(users)} operations")
        node = users[0]
        if node.op == "output":
            return ops
        if node.op == "call_module":
            module = modules[node.target]
            if not isinstance(module, (nn.Linear, nn.BatchNorm1d, *_ELEMENTWISE)):
                raise _refuse(name, f"its head has a {type(module).__name__} ({node.target})")
            ops.append(module)
        elif node.op == "call_function" and node.target in _ELEMENTWISE_FUNCTIONS:
            ops.append((node.target, {k: v for k, v in node.kwargs.items() if k != "input"}))
        else:
            raise _refuse(name, f"its head has the operation {node.op} {getattr(node.target, '__name__', node.target)}")
        if len(node.args) > 1 and node.op == "call_module":
            raise _refuse(name, f"{node.target} takes more than one input")


def _pool_matrix(n: int, bins: int) -> torch.Tensor:
    """(bins, n): adaptive average pooling of n values into bins, as a matrix (PyTorch's bin edges)."""
    matrix = torch.zeros(bins, n, dtype=torch.float64)
    for i in range(bins):
        start, end = (i * n) // bins, -((-(i + 1) * n) // bins)
        matrix[i, start:end] = 1.0 / (end - start)
    return matrix


def _convert_head(ops: list, pool: nn.Module | None, channels: int, size: tuple[int, int], name: str) -> nn.Sequential:
    layers: list[nn.Module] = []
    bins = size
    first = next((i for i, op in enumerate(ops) if isinstance(op, nn.Linear)), None)
    if pool is not None:
        bins = tuple(int(b) if b is not None else n for b, n in zip(_pair(pool.output_size), size))
        if isinstance(pool, nn.AdaptiveMaxPool2d) or first is None:
            if any(n % b for n, b in zip(size, bins)):
                raise _refuse(name, f"its {type(pool).__name__}({pool.output_size}) on a {size[0]}x{size[1]} map "
                              "has uneven windows")
            window = tuple(n // b for n, b in zip(size, bins))
            kind = nn.MaxPool2d if isinstance(pool, nn.AdaptiveMaxPool2d) else nn.AvgPool2d
            layers.append(kind(window, stride=1))
            dilation = window
        else:
            dilation = (1, 1)
    else:
        dilation = (1, 1)
    if first is not None and any(isinstance(op, nn.BatchNorm1d) for op in ops[:first]):
        raise _refuse(name, "a BatchNorm1d before its first linear layer")
    features = channels * bins[0] * bins[1]
    seen_linear = False
    for op in ops:
        if isinstance(op, nn.Linear):
            if not seen_linear:
                if op.in_features != features:
                    raise _refuse(name, f"its first linear layer takes {op.in_features} features, the flattened map "
                                  f"has {features} ({channels}x{bins[0]}x{bins[1]})")
                weight = op.weight.detach().reshape(op.out_features, channels, *bins)
                if pool is not None and isinstance(pool, nn.AdaptiveAvgPool2d):  # fold the pool into the weights
                    ph, pw = (_pool_matrix(n, b).to(weight.device) for n, b in zip(size, bins))
                    weight = torch.einsum("ocuv,ua,vb->ocab", weight.double(), ph, pw).to(op.weight.dtype)
                    conv = nn.Conv2d(channels, op.out_features, size, bias=op.bias is not None)
                else:
                    conv = nn.Conv2d(channels, op.out_features, bins, dilation=dilation, bias=op.bias is not None)
                seen_linear = True
            else:
                weight = op.weight.detach()[:, :, None, None]
                conv = nn.Conv2d(op.in_features, op.out_features, 1, bias=op.bias is not None)
            conv = conv.to(device=op.weight.device, dtype=op.weight.dtype)
            with torch.no_grad():
                conv.weight.copy_(weight)
                if op.bias is not None:
                    conv.bias.copy_(op.bias.detach())
            conv.requires_grad_(op.weight.requires_grad)
            layers.append(conv)
            if isinstance(getattr(op, "activation", None), nn.Module):  # convkit's Dense: its activation inside
                layers.append(copy.deepcopy(op.activation))
        elif isinstance(op, nn.BatchNorm1d):
            bn = nn.BatchNorm2d(op.num_features, op.eps, op.momentum, op.affine, op.track_running_stats)
            bn.load_state_dict(op.state_dict())
            layers.append(bn.to(next(iter(op.state_dict().values())).device))
        elif isinstance(op, nn.Module):
            layers.append(copy.deepcopy(op))
        else:
            layers.append(_Function(*op))
    if pool is not None and not seen_linear and isinstance(pool, nn.AdaptiveAvgPool2d) and bins != (1, 1):
        raise _refuse(name, f"an AdaptiveAvgPool2d({pool.output_size}) with no linear layer after it")
    return nn.Sequential(*layers)


def _pair(value) -> tuple:
    return tuple(value) if isinstance(value, Sequence) else (value, value)


def _stride_and_margin(net: Convolutionized, shape: tuple[int, int, int]) -> tuple[int, int]:
    """(s, M) from the output's receptive field (`convkit.inspect.summary`): jump, and (size - 1) / 2 - start."""
    import warnings

    from convkit.inspect import summary

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rf = summary(net, shape).totals["receptive_field"]
    if not rf or rf.get("kind") != "numeric":
        raise ModelArgumentError(f"convolutionize: the receptive field of the convolutionized net is "
                                 f"{shorten(rf)}: no stride to slide with")
    stride = [int(round(j)) for j in rf["jump"]]
    margin = [int(round((r - 1) / 2 - s)) for r, s in zip(rf["size"], rf["start"])]
    return (stride[0] if stride[0] == stride[1] else tuple(stride)), max(margin)


# --- the demo: a coarse class map -----------------------------------------------------------------------------

@torch.no_grad()
def class_map(model: Convolutionized, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A scene -> the convolutionized classifier's coarse class map and its probabilities.

    Args:
        model: a `Convolutionized` (its ``model_cfg`` normalises the image as the classifier was trained).
        image: a uint8 image (C, H, W) or (H, W), or floats on 0..255; at least the training size.

    Returns:
        ``(classes, probabilities)``: (H', W') int64 argmax class ids and (K, H', W') softmax probabilities.

    Raises:
        ModelArgumentError: an image smaller than the training size or with other channels.

    Example:
        >>> net = convolutionize("fastcnn")
        >>> ids, probs = class_map(net, torch.zeros(1, 60, 44, dtype=torch.uint8))
        >>> tuple(ids.shape), tuple(probs.shape)
        ((9, 5), (10, 9, 5))
    """
    x = image if image.dim() == 3 else image[None]
    c, h, w = model.input_shape
    if x.shape[0] != c or x.shape[1] < h or x.shape[2] < w:
        raise ModelArgumentError(f"class_map: image of shape {tuple(image.shape)}: expected {c} channel(s) and at "
                                 f"least {h}x{w} pixels (the classifier's training size)")
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        scores = model(model.model_cfg.normalize(x[None].to(device)), upsample=False)[0].float()
    finally:
        model.train(was_training)
    probabilities = scores.softmax(0).cpu()
    return probabilities.argmax(0), probabilities


def save_class_map(image: torch.Tensor, class_map: torch.Tensor, classes: Sequence[str] | None,
                   path: str | os.PathLike, title: str = "", stride: int | None = None,
                   receptive_field: Sequence[int] | None = None) -> Path:
    """A picture: the image | its coarse class map (each output cell coloured by class) with a legend.

    Args:
        image: uint8 (C, H, W) or (H, W).
        class_map: (H', W') class ids (from `class_map`).
        classes: class names (None: numbers).
        path: the PNG to write.
        title: the figure's title.
        stride, receptive_field: when given, each map cell is drawn at the centre of the crop it stands for
            (cell (i, j) covers the stride x stride square around the centre of the crop at (i*s, j*s)), so the
            map lines up with the image; otherwise the map is stretched over the image.

    Returns:
        The path written.

    Example:
        >>> save_class_map(torch.zeros(1, 40, 40, dtype=torch.uint8), torch.tensor([[0, 1], [1, 2]]),
        ...                ["bag", "boot", "coat"], "runs/x/class_map.png")
        PosixPath('runs/x/class_map.png')
    """
    import numpy as np
    from matplotlib.colors import ListedColormap
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    from convkit.train.runfolder import _save_figure

    img = image if image.dim() == 3 else image[None]
    img = img.detach().cpu().float().numpy().transpose(1, 2, 0) / 255.0
    ids = class_map.detach().cpu().numpy()
    count = max(len(classes) if classes else 0, int(ids.max()) + 1 if ids.size else 1)
    names = list(classes) if classes else [str(i) for i in range(count)]
    names += [str(i) for i in range(len(names), count)]
    colours = _palette(count)
    fig = Figure(figsize=(10, 4.5))
    ax_img, ax_map = fig.subplots(1, 2)
    height, width = img.shape[:2]
    picture = img[..., 0] if img.shape[2] == 1 else img
    ax_img.imshow(picture, cmap="gray", vmin=0, vmax=1, extent=(0, width, height, 0))  # pixel k spans [k, k + 1]
    ax_img.set_title("image")
    if stride is not None and receptive_field is not None:
        top = receptive_field[0] / 2 - stride / 2
        left = receptive_field[1] / 2 - stride / 2
        extent = (left, left + ids.shape[1] * stride, top + ids.shape[0] * stride, top)
    else:
        extent = (0, width, height, 0)
    ax_map.imshow(picture, cmap="gray", vmin=0, vmax=1, extent=(0, width, height, 0))
    ax_map.imshow(ids, cmap=ListedColormap(colours), vmin=-0.5, vmax=count - 0.5, interpolation="nearest",
                  extent=extent, alpha=0.6)
    ax_map.set_xlim(0, width)
    ax_map.set_ylim(height, 0)
    ax_map.set_title(f"class map {ids.shape[0]}x{ids.shape[1]}")
    for ax in (ax_img, ax_map):
        ax.set_xticks([])
        ax.set_yticks([])
    present = sorted(set(np.unique(ids).tolist()))
    ax_map.legend(handles=[Patch(color=colours[i], label=names[i]) for i in present], loc="upper left",
                  bbox_to_anchor=(1.02, 1.0), fontsize=8)
    if title:
        fig.suptitle(title)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return _save_figure(fig, path)


def _palette(count: int) -> list:
    from matplotlib import colormaps

    cmap = colormaps["tab20" if count > 10 else "tab10"]
    return [cmap(i % cmap.N) for i in range(count)]
