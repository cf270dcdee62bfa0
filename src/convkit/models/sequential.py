"""``convkit.Sequential``: a layer stack whose input sizes are inferred from the input shape, as in Keras."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence

import torch
from torch import nn

from convkit.layers.base import is_built
from convkit.layers.shapes import ShapeError, infer_output_shape
from convkit.models.base import ClassifierNet, pool_blocks

__all__ = ["Sequential", "layer_prefix"]

# Names for auto-named layers, so that `--layer conv2` reads as the papers do.
_PREFIXES = [
    ("ConvTranspose", "deconv"), ("Conv", "conv"), ("Linear", "fc"), ("Dense", "fc"), ("MaxPool", "pool"),
    ("AvgPool", "pool"), ("SumPool", "pool"), ("GlobalAvg", "gap"), ("GlobalMax", "gmp"),
    ("AdaptiveAvg", "gap"), ("AdaptiveMax", "gmp"), ("BatchNorm", "bn"), ("LocalResponse", "lrn"),
    ("Dropout", "dropout"), ("Flatten", "flatten"), ("Softmax", "softmax"), ("BasicBlock", "res"),
    ("Bottleneck", "res"), ("Inception", "inception"), ("MLPConv", "mlpconv"),
]


def layer_prefix(module: nn.Module) -> str:
    """The short name that auto-named layers of this type get (``conv``, ``pool``, ``fc``...)."""
    type_name = type(module).__name__
    for key, prefix in _PREFIXES:
        if key in type_name:
            return prefix
    return type_name.lower()  # ReLU -> relu1, Tanh -> tanh1


def _auto_names(layers: Iterable[nn.Module]) -> OrderedDict[str, nn.Module]:
    counts: dict[str, int] = {}
    named: OrderedDict[str, nn.Module] = OrderedDict()
    for layer in layers:
        if not isinstance(layer, nn.Module):
            raise TypeError(f"Sequential takes nn.Module layers, got {type(layer).__name__}: {layer!r}")
        prefix = layer_prefix(layer)
        counts[prefix] = counts.get(prefix, 0) + 1
        named[f"{prefix}{counts[prefix]}"] = layer
    return named


def _has_uninitialized(module: nn.Module) -> bool:
    return any(isinstance(p, nn.parameter.UninitializedParameter) for p in module.parameters(recurse=True))


class Sequential(ClassifierNet, nn.Sequential):
    """A stack of layers whose input channels and features are inferred, as in Keras.

    Layers may be convkit layers declared without their input size (``Conv2d(32, 5)``, ``Dense(256)``),
    any other ``nn.Module`` (torch's own lazy modules included), or a mix. Given ``input_shape``, every
    layer is built at construction and each layer's output shape is known (``model.shapes``); a layer that
    cannot take its input raises :class:`~convkit.layers.ShapeError` naming it, its input shape and the
    output-size formula, before anything runs.

    Like the zoo's models it splits into ``forward_features`` (up to the last layer with a spatial output)
    and ``forward_head`` (the rest), and ``reset_classifier`` replaces its last dense layer.

    Args:
        layers: a list of modules (auto-named ``conv1``, ``pool1``, ``fc1``...) or a mapping name -> module.
        input_shape: per-sample input shape ``(C, H, W)``; when ``None``, build later with :meth:`build`.
        name: an optional model name (shown by ``summary``).

    Raises:
        ShapeError: a layer does not fit the shape that reaches it.

    Example:
        >>> from convkit.layers import Conv2d, MaxPool2d, Dense
        >>> net = Sequential([Conv2d(32, 5, activation="relu"), MaxPool2d(2), Dense(10)], input_shape=(1, 28, 28))
        >>> net.shapes["pool1"]
        (32, 12, 12)
    """

    def __init__(
        self,
        layers: Sequence[nn.Module] | Mapping[str, nn.Module],
        input_shape: Sequence[int] | None = None,
        name: str | None = None,
    ):
        named = OrderedDict(layers) if isinstance(layers, Mapping) else _auto_names(layers)
        nn.Sequential.__init__(self, named)
        self.model_name = name
        self.input_shape: tuple[int, ...] | None = None
        self.shapes: OrderedDict[str, tuple[int, ...]] = OrderedDict()
        self.num_classes = 0
        self.num_features = 0
        self._features_end = len(self)
        if input_shape is not None:
            self.build(input_shape)

    def build(self, input_shape: Sequence[int]) -> None:
        """Build every layer for a per-sample ``input_shape`` and record each layer's output shape.

        Raises:
            ShapeError: a layer does not fit; ``err.layer`` is the layer's name.
        """
        shape = tuple(int(s) for s in input_shape)
        self.input_shape = shape
        self.shapes.clear()
        for layer_name, layer in self.named_children():
            if not is_built(layer):
                layer.build(shape)
            elif _has_uninitialized(layer):  # torch's Lazy* modules materialise on their first call
                with torch.no_grad():
                    layer(torch.zeros((1, *shape)))
            try:
                shape = infer_output_shape(layer, shape, layer_name)
            except ShapeError as err:
                if err.layer != layer_name:
                    raise ShapeError(f"in {err}", layer_name, shape) from err
                raise
            self.shapes[layer_name] = shape
        self._split_head()

    def output_shape(self, input_shape: Sequence[int]) -> tuple[int, ...]:
        """Per-sample output shape for ``input_shape`` (building the layers if needed)."""
        if tuple(input_shape) != self.input_shape:
            self.build(input_shape)
        return next(reversed(self.shapes.values())) if self.shapes else tuple(input_shape)

    def _split_head(self) -> None:
        names = list(self.shapes)
        spatial = [i for i, n in enumerate(names) if len(self.shapes[n]) == 3]
        self._features_end = spatial[-1] + 1 if spatial else 0
        self.num_features = self.shapes[names[self._features_end - 1]][0] if spatial else 0
        dense = [n for n, m in self.named_children() if isinstance(m, nn.Linear)]
        if dense:
            self.classifier_name = dense[-1]
            self.num_classes = self.get_submodule(dense[-1]).out_features
        elif names:
            self.classifier_name = names[-1]
            self.num_classes = self.shapes[names[-1]][0]

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the last dense layer with a fresh one for ``num_classes`` classes (0: remove it)."""
        name, old = self.classifier_name, self.get_classifier()
        if num_classes > 0 and hasattr(old, "build") and isinstance(old, nn.Linear):
            # keep convkit's Dense, which flattens a feature map that reaches it directly
            new = type(old)(num_classes, bias=old.bias is not None, in_features=old.in_features)
            self.set_submodule(name, new.to(old.weight.device, old.weight.dtype))
        else:
            super().reset_classifier(num_classes)
        if self.input_shape is not None:
            self.build(self.input_shape)
        self.classifier_name, self.num_classes = name, num_classes  # the head stays where it was

    def stage_layout(self) -> list[tuple[str, list[str]]]:
        """The spatial layers split after each pooling layer (``block1``...), then each later layer with
        parameters as a stage of its own (named as the layer), the classifier (``classifier_name``) as ``head``."""
        stages = pool_blocks(self, "", stop=self._features_end)
        rest: list[str] = []
        for child_name, child in list(self.named_children())[self._features_end:]:
            rest.append(child_name)
            if child_name == self.classifier_name:
                stages.append(("head", rest))
                rest = []
            elif any(True for _ in child.parameters()):
                stages.append((child_name, rest))
                rest = []
        if rest and stages:
            stages[-1] = (stages[-1][0], stages[-1][1] + rest)
        return stages

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self:
            x = layer(x)
        return x

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Run the layers up to the last one with a spatial ``(C, H, W)`` output."""
        for layer in list(self)[: self._features_end]:
            x = layer(x)
        return x

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Run the remaining layers; with ``pre_logits`` stop before the last dense layer."""
        for layer_name, layer in list(self.named_children())[self._features_end :]:
            if pre_logits and layer_name == self.classifier_name:
                return x.flatten(1) if x.dim() > 2 else x
            x = layer(x)
        return x
