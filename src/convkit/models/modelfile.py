"""Model files: a CNN written by hand in YAML, in the papers' own notation or in a long form.

A model file names the input shape and lists the layers, one per line::

    name: vgg-cifar                 # optional
    input: 3x32x32                  # C x H x W (or [3, 32, 32])
    layers:
      - conv3-64                    # the VGG paper's notation: 3x3 conv, 64 filters, "same" padding, ReLU
      - conv3-64
      - maxpool                     # 2x2, stride 2
      - conv: {filters: 128, kernel: 3, padding: 1}     # long form, Keras-style arguments
      - residual-128/2              # a basic residual block, stride 2
      - inception: [64, 96, 128, 16, 32, 32]            # GoogLeNet's table: 1x1, 3x3 reduce, 3x3, 5x5 reduce, 5x5, pool proj
      - gap
      - FC-10
      - soft-max

The compact tokens, case-insensitive:

==============================  =====================================================================
``convK-N`` / ``convK-N/S``     K x K convolution, N filters, stride S (1), "same" padding, then ReLU
``FC-N`` (``dense-N``)          fully connected, N units (flattens a feature map first), then ReLU
``maxpool`` / ``maxpoolK/S``    max pooling, K x K window (2), stride S (K); ``avgpool``, ``sumpool`` alike
``gap``, ``gmp``                global average / max pooling
``LRN``                         AlexNet's local response normalisation (n=5, alpha=1e-4, beta=0.75, k=2)
``dropout`` / ``dropout-P``     dropout with rate P (0.5)
``bn``                          batch normalisation (2-D after convolutions, 1-D after FC layers)
``soft-max``, ``flatten``       as named; any activation name (``relu``, ``tanh``...) adds that activation
``residual-N[/S]``              basic residual block (ResNet-18/34); ``bottleneck-N[/S]`` (ResNet-50+, 4N out)
==============================  =====================================================================

As in the papers, every convolution and FC layer is followed by a ReLU except the last weight layer
(the classifier); the long form's ``activation:`` overrides this (``activation: none`` for none).
The long form's convolutions default to ``padding: 0`` (Keras' "valid"), like torch and Keras.

Every mistake is reported with the file, the line and what was expected.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from convkit import layers as L
from convkit.errors import ConvkitError
from convkit.layers.shapes import ShapeError
from convkit.models.sequential import Sequential
from convkit.utils import YAMLInputError, compose_yaml, shorten, yaml_value

__all__ = ["ModelFileError", "load_model_file", "parse_model_file"]


class ModelFileError(ValueError, ConvkitError):
    """A model file is malformed; ``path`` and ``line`` (1-based) say where."""

    def __init__(self, message: str, path: str = "<string>", line: int | None = None):
        self.path, self.line, self.message = path, line, message
        super().__init__(f"{path}:{line}: {message}" if line else f"{path}: {message}")


@dataclass
class LayerSpec:
    kind: str
    args: dict[str, Any]
    line: int
    text: str
    activation: Any = field(default="default")
    names: dict[str, str] = field(default_factory=dict)  # argument -> the key the file wrote (filters: planes)


WEIGHT_KINDS = {"conv", "fc", "residual", "bottleneck", "inception", "mlpconv", "deconv"}

# Long-form layer names -> kind, and each kind's arguments: accepted spellings -> constructor argument.
KIND_ALIASES = {
    "conv": "conv", "conv2d": "conv", "convolution": "conv", "fc": "fc", "dense": "fc", "linear": "fc",
    "maxpool": "maxpool", "max_pool": "maxpool", "avgpool": "avgpool", "avg_pool": "avgpool",
    "sumpool": "sumpool", "gap": "gap", "global_avgpool": "gap", "gmp": "gmp", "global_maxpool": "gmp",
    "lrn": "lrn", "dropout": "dropout", "softmax": "softmax", "soft-max": "softmax", "bn": "bn",
    "batchnorm": "bn", "flatten": "flatten", "activation": "activation", "residual": "residual",
    "basic": "residual", "bottleneck": "bottleneck", "inception": "inception", "mlpconv": "mlpconv",
    "deconv": "deconv", "conv_transpose": "deconv", "convtranspose": "deconv",
}
ARGUMENTS: dict[str, dict[str, str]] = {
    "conv": {"filters": "filters", "kernel": "kernel_size", "kernel_size": "kernel_size", "stride": "stride",
             "strides": "stride", "padding": "padding", "dilation": "dilation", "dilation_rate": "dilation",
             "groups": "groups", "bias": "bias", "use_bias": "bias", "activation": "activation",
             "padding_mode": "padding_mode"},
    "deconv": {"filters": "filters", "kernel": "kernel_size", "kernel_size": "kernel_size", "stride": "stride",
               "strides": "stride", "padding": "padding", "output_padding": "output_padding",
               "dilation": "dilation", "groups": "groups", "bias": "bias", "activation": "activation"},
    "fc": {"units": "units", "activation": "activation", "bias": "bias", "use_bias": "bias"},
    "maxpool": {"size": "pool_size", "pool_size": "pool_size", "kernel": "pool_size", "stride": "stride",
                "strides": "stride", "padding": "padding", "ceil_mode": "ceil_mode"},
    "dropout": {"rate": "rate", "p": "rate"},
    "lrn": {"size": "size", "n": "size", "alpha": "alpha", "beta": "beta", "k": "k"},
    "bn": {"eps": "eps", "momentum": "momentum"},
    "residual": {"filters": "planes", "planes": "planes", "stride": "stride", "groups": "groups",
                 "base_width": "base_width"},
    "inception": {"c1": "ch1x1", "1x1": "ch1x1", "c3r": "ch3x3red", "3x3reduce": "ch3x3red", "c3": "ch3x3",
                  "3x3": "ch3x3", "c5r": "ch5x5red", "5x5reduce": "ch5x5red", "c5": "ch5x5", "5x5": "ch5x5",
                  "pool": "pool_proj", "poolproj": "pool_proj", "batch_norm": "batch_norm"},
    "mlpconv": {"filters": "filters", "kernel": "kernel_size", "kernel_size": "kernel_size", "stride": "stride",
                "padding": "padding", "mlp_filters": "mlp_filters", "num_mlp": "num_mlp"},
    "gap": {}, "gmp": {}, "softmax": {}, "flatten": {},
}
ARGUMENTS["avgpool"] = ARGUMENTS["sumpool"] = ARGUMENTS["maxpool"]
ARGUMENTS["bottleneck"] = ARGUMENTS["residual"]
REQUIRED = {"conv": ["filters", "kernel_size"], "deconv": ["filters", "kernel_size"], "fc": ["units"],
            "residual": ["planes"], "bottleneck": ["planes"], "mlpconv": ["filters", "kernel_size"],
            "inception": ["ch1x1", "ch3x3red", "ch3x3", "ch5x5red", "ch5x5", "pool_proj"]}
INCEPTION_ORDER = REQUIRED["inception"]

COMPACT = [
    (re.compile(r"conv(\d+)(?:x\d+)?-(\d+)(?:/(\d+))?"), "conv"),
    (re.compile(r"(?:fc|dense)-(\d+)"), "fc"),
    (re.compile(r"(max|avg|sum)pool(?:(\d+)(?:/(\d+))?)?"), "pool"),
    (re.compile(r"(?:residual|basic)-(\d+)(?:/(\d+))?"), "residual"),
    (re.compile(r"bottleneck-(\d+)(?:/(\d+))?"), "bottleneck"),
    (re.compile(r"dropout(?:-([0-9]*\.?[0-9]+))?"), "dropout"),
]
COMPACT_WORDS = {"lrn": "lrn", "gap": "gap", "global-avgpool": "gap", "gmp": "gmp", "global-maxpool": "gmp",
                 "soft-max": "softmax", "softmax": "softmax", "bn": "bn", "batchnorm": "bn", "flatten": "flatten"}
# Sizes: whole numbers of at least 1 (or lists of them, e.g. kernel: [3, 5]); padding and num_mlp may be 0.
SIZE_ARGUMENTS = {"filters", "kernel_size", "stride", "dilation", "groups", "units", "pool_size", "planes",
                  "base_width", "size", "mlp_filters", "ch1x1", "ch3x3red", "ch3x3", "ch5x5red", "ch5x5",
                  "pool_proj"}
COUNT_ARGUMENTS = {"padding", "output_padding", "num_mlp"}
EXAMPLES = "conv3-64, conv7-64/2, FC-4096, maxpool, maxpool3/2, avgpool, gap, LRN, dropout, bn, soft-max, relu, residual-128/2, bottleneck-64"


def _parse_compact(token: str, line: int, path: str) -> LayerSpec:
    text = token.strip()
    word = re.sub(r"\s+", "", text.lower())
    for pattern, kind in COMPACT:
        m = pattern.fullmatch(word)
        if not m:
            continue
        g = m.groups()
        if kind == "conv":
            args = {"kernel_size": int(g[0]), "filters": int(g[1]), "stride": int(g[2] or 1), "padding": "same"}
        elif kind == "fc":
            args = {"units": int(g[0])}
        elif kind == "pool":
            size = int(g[1] or 2)
            kind, args = f"{g[0]}pool", {"pool_size": size, "stride": int(g[2] or size)}
        elif kind in ("residual", "bottleneck"):
            args = {"planes": int(g[0]), "stride": int(g[1] or 1)}
        else:
            args = {"rate": float(g[0])} if g[0] else {}
        return LayerSpec(kind, args, line, text)
    if word in COMPACT_WORDS:
        return LayerSpec(COMPACT_WORDS[word], {}, line, text)
    if word in L.ACTIVATIONS:
        return LayerSpec("activation", {"name": word}, line, text)
    words = [*COMPACT_WORDS, *KIND_ALIASES, "maxpool", "avgpool", "sumpool", "fc-4096", "conv3-64", *L.ACTIVATIONS]
    close = difflib.get_close_matches(word, words, n=3, cutoff=0.5)
    hint = f" (did you mean {', '.join(dict.fromkeys(close))}?)" if close else ""
    raise ModelFileError(f"unknown layer {shorten(text)}{hint}; expected one of: {EXAMPLES}, or a long form "
                         f"such as 'conv: {{filters: 96, kernel: 11, stride: 4}}'", path, line)


def _parse_long(node: yaml.MappingNode, path: str) -> LayerSpec:
    line = node.start_mark.line + 1
    if len(node.value) != 1:
        raise ModelFileError("a long-form layer is a mapping with one key, the layer's kind, e.g. "
                             "'conv: {filters: 64, kernel: 3}'", path, line)
    key_node, value_node = node.value[0]
    if not isinstance(key_node, yaml.ScalarNode):
        raise ModelFileError("a long-form layer's key is the layer's kind, a name such as 'conv'", path, line)
    name = str(key_node.value).strip().lower()
    kind = KIND_ALIASES.get(name)
    value = _value(value_node, path)
    text = f"{key_node.value}: {shorten(value)}"
    if kind is None:
        if name in L.ACTIVATIONS:
            return LayerSpec("activation", {"name": name}, line, text)
        close = difflib.get_close_matches(name, list(KIND_ALIASES), n=3, cutoff=0.5)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise ModelFileError(f"unknown layer kind {shorten(key_node.value)}{hint}; expected one of "
                             f"{', '.join(sorted(set(KIND_ALIASES.values())))}", path, line)
    if kind == "activation":
        return LayerSpec(kind, {"name": str(value)}, line, text)
    if kind == "inception" and isinstance(value, list):
        if len(value) != 6 or not all(isinstance(v, int) for v in value):
            raise ModelFileError("inception as a list takes six integers: #1x1, #3x3 reduce, #3x3, "
                                 "#5x5 reduce, #5x5, pool proj", path, line)
        value = dict(zip(INCEPTION_ORDER, value))
        return LayerSpec(kind, value, line, text)
    if kind == "dropout" and isinstance(value, (int, float)):
        value = {"rate": value}
    if kind in ("fc",) and isinstance(value, int):
        value = {"units": value}
    if value is None:
        value = {}
    if not isinstance(value, dict):
        raise ModelFileError(f"{kind} takes a mapping of arguments, got {shorten(value)}", path, line)
    allowed = ARGUMENTS[kind]
    args: dict[str, Any] = {}
    for raw_key, arg in value.items():
        key = re.sub(r"[#\s_]", "", str(raw_key).lower()) if kind == "inception" else str(raw_key).lower()
        if key not in allowed and kind == "inception":
            key = {"3x3red": "3x3reduce", "5x5red": "5x5reduce"}.get(key, key)
        if key not in allowed:
            raise ModelFileError(f"{kind} has no argument {shorten(raw_key)}; it takes {', '.join(sorted(allowed))}",
                                 path, line)
        args[allowed[key]] = arg
    missing = [a for a in REQUIRED.get(kind, []) if a not in args]
    if missing:
        raise ModelFileError(f"{kind} needs {', '.join(missing)}", path, line)
    names = {allowed[str(k).lower()]: str(k) for k in value if str(k).lower() in allowed}
    spec = LayerSpec(kind, args, line, text, names=names)
    if "activation" in args:
        activation = args.pop("activation")
        spec.activation = None if activation in (None, "none", "linear") else activation
    return spec


def _parse_input(value: Any, path: str, line: int) -> tuple[int, int, int]:
    if isinstance(value, str):
        parts = re.split(r"\s*[x×,]\s*", value.strip().lower())
    elif isinstance(value, list):
        parts = value
    else:
        parts = []
    try:
        shape = tuple(int(p) for p in parts)
    except (TypeError, ValueError):
        shape = ()
    if len(shape) != 3 or min(shape) < 1:
        raise ModelFileError(f"input must be C x H x W, e.g. 'input: 3x224x224' or [3, 224, 224]; got {shorten(value)}",
                             path, line)
    return shape  # type: ignore[return-value]


def _value(node: yaml.Node | None, path: str):
    """A node's Python value (`convkit.utils.yaml_value`), its errors as ModelFileErrors."""
    try:
        return yaml_value(node, path)
    except YAMLInputError as err:
        raise ModelFileError(err.problem, path, err.line) from None


def _check_sizes(spec: LayerSpec, path: str) -> None:
    """Refuses a size below 1 (a count below 0) before any layer is made: torch would fail on it with a
    traceback, or make an empty layer."""
    for arg, value in spec.args.items():
        least = 1 if arg in SIZE_ARGUMENTS else 0 if arg in COUNT_ARGUMENTS else None
        numbers = value if isinstance(value, (list, tuple)) else [value]
        if least is None or not all(isinstance(v, int) and not isinstance(v, bool) for v in numbers):
            continue  # other types: the layer's own check names them
        if any(v < least for v in numbers):
            what = "a whole number of at least 1" if least else "a whole number, 0 or more"
            name = spec.names.get(arg) or {"planes": "filters", "pool_size": "size"}.get(arg, arg)
            raise ModelFileError(f"{shorten(spec.text)}: {name} must be {what}, got {shorten(value)}", path,
                                 spec.line)


def _make_layer(spec: LayerSpec, spatial: bool):
    a, kind = dict(spec.args), spec.kind
    activation = spec.activation
    if kind == "conv":
        return L.Conv2d(a.pop("filters"), a.pop("kernel_size"), activation=activation, **a)
    if kind == "deconv":
        return L.ConvTranspose2d(a.pop("filters"), a.pop("kernel_size"), activation=activation, **a)
    if kind == "fc":
        return L.Dense(a.pop("units"), activation=activation, **a)
    if kind in ("maxpool", "avgpool", "sumpool"):
        cls = {"maxpool": L.MaxPool2d, "avgpool": L.AvgPool2d, "sumpool": L.SumPool2d}[kind]
        return cls(**a)
    if kind == "residual":
        return L.BasicBlock(a.pop("planes"), **a)
    if kind == "bottleneck":
        return L.Bottleneck(a.pop("planes"), **a)
    if kind == "inception":
        return L.InceptionModule(**a)
    if kind == "mlpconv":
        return L.MLPConv(a.pop("filters"), a.pop("kernel_size"), **a)
    simple = {
        "gap": L.GlobalAvgPool2d, "gmp": L.GlobalMaxPool2d, "lrn": L.LocalResponseNorm, "dropout": L.Dropout,
        "softmax": L.Softmax, "flatten": L.Flatten, "bn": L.BatchNorm2d if spatial else L.BatchNorm1d,
    }
    if kind == "activation":
        return L.get_activation(a["name"])
    return simple[kind](**a)


def parse_model_file(text: str, path: str = "<string>", num_classes: int | None = None,
                     in_channels: int | None = None) -> Sequential:
    """Build a :class:`~convkit.Sequential` from the text of a model file.

    Args:
        text: the YAML text (see this module's documentation for the notation).
        path: the file's name, used in error messages.
        num_classes: when given, replaces the units of the last FC layer.
        in_channels: when given, replaces the channels of ``input``.

    Returns:
        The built model; ``model.shapes`` holds each layer's output shape.

    Raises:
        ModelFileError: malformed YAML, an unknown layer or argument, or a layer that does not fit its
            input (the message then names the layer, its input shape and the output-size formula).

    >>> net = parse_model_file("input: 1x28x28\\nlayers: [conv5-32, maxpool, FC-10]")
    >>> net.shapes["fc1"]
    (10,)
    """
    try:
        root = compose_yaml(text, path)  # bounded: tags, nesting and aliases checked (file and line named)
    except YAMLInputError as err:
        raise ModelFileError(err.problem, path, err.line) from None
    if not isinstance(root, yaml.MappingNode):
        raise ModelFileError("a model file is a mapping with 'input:' and 'layers:' keys", path, 1)
    top = {str(k.value): v for k, v in root.value}
    unknown = set(top) - {"name", "input", "layers", "description", "num_classes"}
    if unknown:
        key = next(k for k, _ in root.value if k.value in unknown)
        raise ModelFileError(f"unknown key {shorten(key.value)}; a model file has name, description, input, layers",
                             path, key.start_mark.line + 1)
    for required in ("input", "layers"):
        if required not in top:
            raise ModelFileError(f"missing '{required}:'", path, 1)
    input_shape = _parse_input(_value(top["input"], path), path, top["input"].start_mark.line + 1)
    layers_node = top["layers"]
    if not isinstance(layers_node, yaml.SequenceNode) or not layers_node.value:
        raise ModelFileError("'layers:' must be a non-empty list, one layer per item", path,
                             layers_node.start_mark.line + 1)
    specs = []
    for item in layers_node.value:
        if isinstance(item, yaml.ScalarNode):
            specs.append(_parse_compact(str(item.value), item.start_mark.line + 1, path))
        elif isinstance(item, yaml.MappingNode):
            specs.append(_parse_long(item, path))
        else:
            raise ModelFileError("a layer is a token such as 'conv3-64' or a mapping such as "
                                 "'conv: {filters: 64, kernel: 3}'", path, item.start_mark.line + 1)
    return _build(specs, input_shape, path, num_classes, in_channels, top)


def _build(specs, input_shape, path, num_classes, in_channels, top) -> Sequential:
    weight_layers = [i for i, s in enumerate(specs) if s.kind in WEIGHT_KINDS]
    last_weight = weight_layers[-1] if weight_layers else -1
    for i, spec in enumerate(specs):
        if spec.kind in ("conv", "fc", "deconv") and spec.activation == "default":
            spec.activation = None if i == last_weight else "relu"
    if num_classes is not None:
        fcs = [s for s in specs if s.kind == "fc"]
        if not fcs:
            raise ModelFileError("num_classes was given but the model has no FC layer to set it on", path)
        fcs[-1].args["units"] = num_classes
    if in_channels is not None:
        input_shape = (in_channels, *input_shape[1:])
    modules, spatial = [], True
    for spec in specs:
        _check_sizes(spec, path)
        try:
            modules.append(_make_layer(spec, spatial))
        except (TypeError, ValueError, RuntimeError) as err:  # torch's RuntimeError: a size it cannot make
            raise ModelFileError(f"{shorten(spec.text)}: {str(err)[:300]}", path, spec.line) from None
        if spec.kind in ("fc", "gap", "gmp", "flatten"):
            spatial = False
    name_node = top.get("name")
    try:
        model = Sequential(modules, name=str(name_node.value) if name_node is not None else Path(path).stem)
        line_of = {layer_name: spec.line for layer_name, spec in zip(model._modules, specs)}
        model.build(input_shape)
    except ShapeError as err:
        line = line_of.get(err.layer)
        raise ModelFileError(str(err), path, line) from None
    model.source_lines = line_of
    return model


def load_model_file(path: str | Path, num_classes: int | None = None, in_channels: int | None = None,
                    **kwargs) -> Sequential:
    """Build the model that a YAML model file declares.

    Args:
        path: the model file.
        num_classes, in_channels: optional overrides (see :func:`parse_model_file`).

    Returns:
        A built :class:`~convkit.Sequential`.

    Raises:
        FileNotFoundError: no such file.
        ModelFileError: the file is malformed or a layer does not fit (file and line named).

    Example::

        model = convkit.load_model_file("examples/models/vgg_cifar.yaml", num_classes=10)
    """
    if kwargs:
        raise TypeError(f"model files take no builder options, got {', '.join(kwargs)}")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model file {str(path)!r} does not exist")
    return parse_model_file(path.read_text(encoding="utf-8"), str(path), num_classes, in_channels)
