"""Fitting a trained network to new data: other input channels, another input size, another class count.

Each change is returned as an :class:`Adaptation` with a one-line ``.text`` (what changed, from what to what)
and ``.to_dict()``, so that it is printed and recorded in the run folder.

* :func:`adapt_input_channels`: the first convolution's weights are summed over its input channels and spread
  evenly over the new ones, which is exact for images whose channels are all equal: a grey image replicated to
  3 channels gives the 3-channel net's output on the 1-channel net adapted from it, and the other way round.
* :func:`adapt_head`: a head that flattens a fixed-size map gets an adaptive pool to that size (or a first
  linear layer rebuilt for the new map size), and a new classifier for the class count. Sizes come from a
  shape-only pass on the meta device, never from real data.

>>> model = convkit.create_model("lenet5")
>>> for change in adapt_head(model, 5, (1, 64, 64)):
...     print(change.text)
input 1x32x32 -> 1x64x64: features.act5 now followed by AdaptiveAvgPool2d((1, 1)) (the map 120x9x9 -> 120x1x1, as classifier.f6 was built for)
classes 10 -> 5: classifier.output Linear(84 -> 10) replaced by a new Linear(84 -> 5)
"""

from __future__ import annotations

import dataclasses
import math
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from convkit.errors import ConvkitError
from convkit.inspect.fastmeta import FastMetaMode
from convkit.models.base import spread_input_channels
from convkit.models.reference import ModelCfg, model_cfg
from convkit.utils import shorten

__all__ = ["AdaptError", "Adaptation", "adapt_head", "adapt_input_channels", "replay_adaptations"]

HEAD_MODES = ("pool", "rebuild")


class AdaptError(ValueError, ConvkitError):
    """A model that cannot be adapted as asked (no convolution to adapt, grouped first convolution...)."""


@dataclass
class Adaptation:
    """One change made to a model to fit new data.

    Attributes:
        kind: ``"input_channels"``, ``"input_size"`` or ``"classes"``.
        layer: the qualified name of the layer that changed (or after which one was inserted).
        before, after: the value before and after (channels, ``[C, H, W]``, class count).
        text: one printable line: what changed, from what to what.
        details: further JSON-able facts (the new layer, the map sizes...).
    """

    kind: str
    layer: str
    before: object
    after: object
    text: str
    details: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        """The adaptation as JSON-able values."""
        return {"kind": self.kind, "layer": self.layer, "before": self.before, "after": self.after,
                "text": self.text, **({"details": self.details} if self.details else {})}

    def __str__(self) -> str:
        return self.text


def _first_conv(model: nn.Module) -> tuple[str, nn.Conv2d]:
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d) and not isinstance(module, nn.LazyConv2d):
            return name, module
    raise AdaptError(f"{type(model).__name__} has no Conv2d layer whose input channels could be adapted")


def _model_cfg(model: nn.Module) -> ModelCfg | None:
    cfg = getattr(model, "model_cfg", None)
    return cfg if isinstance(cfg, ModelCfg) else None


def _set_cfg(model: nn.Module, **changes) -> None:
    """Updates the ModelCfg the model carries (if any), its spec and a ``convkit.Sequential``'s input shape."""
    cfg = _model_cfg(model)
    spec_changes = {k: v for k, v in (("in_channels", changes.pop("spec_in_channels", None)),
                                       ("num_classes", changes.pop("spec_num_classes", None))) if v is not None}
    if cfg is not None:
        spec = dict(cfg.spec) if isinstance(cfg.spec, dict) else cfg.spec
        if isinstance(spec, dict):
            spec.update(spec_changes)
        model.model_cfg = dataclasses.replace(cfg, spec=spec, **changes)


def _spread(values: tuple[float, ...] | None, channels: int) -> tuple[float, ...] | None:
    if values is None or len(values) == channels:
        return values
    return (sum(values) / len(values),) * channels


def adapt_input_channels(model: nn.Module, channels: int) -> Adaptation | None:
    """Makes ``model`` read images with ``channels`` channels, changing its first convolution.

    The new weights are the old ones summed over the input channels and divided evenly over the new ones,
    ``w'[:, j] = sum_c w[:, c] / channels``: 3 -> 1 sums them (a grey image replicated to 3 channels gives the
    3-channel net's output on the 1-channel net), 1 -> 3 replicates them divided by 3 (an RGB image whose
    channels are equal gives the 1-channel net's output). The model's ``model_cfg`` (when it carries one) gets
    the new input shape, mean and std (averaged over the old channels) and spec.

    Args:
        model: any ``nn.Module``; its first ``nn.Conv2d`` (in registration order) is the one changed, in place.
        channels: the new number of input channels.

    Returns:
        An :class:`Adaptation`, or None when the model already reads ``channels`` channels.

    Raises:
        AdaptError: no convolution, a grouped first convolution, or ``channels < 1``.

    >>> model = convkit.create_model("resnet18")
    >>> print(adapt_input_channels(model, 1))
    input channels 3 -> 1: conv1's weights (64, 3, 7, 7) summed over the input channels -> (64, 1, 7, 7)
    """
    if not isinstance(channels, int) or isinstance(channels, bool) or channels < 1:
        raise AdaptError(f"channels={channels!r}: expected a positive number of input channels")
    name, conv = _first_conv(model)
    old = conv.in_channels
    if old == channels:
        return None
    if conv.groups != 1:
        raise AdaptError(f"the first convolution {name} is grouped (groups={conv.groups}); convkit adapts only "
                         f"ungrouped ones (got {old} -> {channels} channels)")
    weight = conv.weight
    new = spread_input_channels(weight, channels)
    conv.weight = nn.Parameter(new, requires_grad=weight.requires_grad)
    conv.in_channels = channels
    how = "summed over the input channels" if channels == 1 else (
        f"replicated and divided by {channels}" if old == 1 else f"summed and spread over {channels} channels")
    cfg = _model_cfg(model)
    if cfg is not None:
        shape = (channels, *cfg.input_shape[1:]) if cfg.input_shape else None
        _set_cfg(model, input_shape=shape, mean=_spread(cfg.mean, channels), std=_spread(cfg.std, channels),
                 spec_in_channels=channels)
    shape = getattr(model, "input_shape", None)
    if isinstance(shape, tuple) and len(shape) == 3:  # convkit.Sequential
        model.input_shape = (channels, *shape[1:])
    return Adaptation("input_channels", name, old, channels,
                      f"input channels {old} -> {channels}: {name}'s weights {tuple(weight.shape)} {how} -> "
                      f"{tuple(new.shape)}", {"rule": "w'[:, j] = sum_c w[:, c] / channels"})


# --- shapes on the meta device -------------------------------------------------------------------------------

@dataclass
class _Pass:
    """What a shape-only forward saw: module calls in order, with input and output shapes."""

    calls: list[tuple[str, str, tuple | None]] = field(default_factory=list)  # (event, module name, shape)
    error: Exception | None = None
    output: tuple | None = None


def _meta_pass(model: nn.Module, input_shape: Sequence[int]) -> _Pass:
    """Runs ``model`` on one meta-device input (eval mode), recording each module's input and output shapes.

    The model's tensors are swapped for meta stand-ins (``torch.func.functional_call``), so nothing is copied
    and nothing real runs. A forward that fails (a linear layer given the wrong size) is recorded up to there.
    """
    seen = _Pass()
    names = {id(m): n for n, m in model.named_modules()}

    def first_shape(value):
        if isinstance(value, torch.Tensor):
            return tuple(value.shape)
        if isinstance(value, (tuple, list)) and value and isinstance(value[0], torch.Tensor):
            return tuple(value[0].shape)
        return None

    def pre(module, args):
        seen.calls.append(("in", names.get(id(module), "?"), first_shape(args)))

    def post(module, args, output):
        seen.calls.append(("out", names.get(id(module), "?"), first_shape(output)))

    handles = []
    for module in model.modules():
        if module is not model:
            handles += [module.register_forward_pre_hook(pre), module.register_forward_hook(post)]
    tensors = {n: torch.empty_like(t, device="meta") for n, t in
               [*model.named_parameters(), *model.named_buffers()]}
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        with FastMetaMode():  # convkit's shape rules: several times faster than torch's meta kernels
            out = torch.func.functional_call(model, tensors, (torch.empty(2, *input_shape, device="meta"),))
        seen.output = first_shape(out)
    except Exception as err:  # noqa: BLE001 - a shape mismatch is what this pass looks for
        seen.error = err
    finally:
        for h in handles:
            h.remove()
        for m, mode in modes.items():
            m.training = mode
    return seen


def _first_linear(model: nn.Module, seen: _Pass) -> tuple[str, tuple | None, tuple | None] | None:
    """(name, input shape, (leaf name, 4-D map shape) made last before it) of the first linear layer called.

    None when no linear layer runs (a fully convolutional head, or a forward that failed before).
    """
    last_map: tuple | None = None
    for event, name, shape in seen.calls:
        module = model.get_submodule(name) if name != "?" else None
        if event == "in" and isinstance(module, nn.Linear):
            return name, shape, last_map
        if event == "out" and shape is not None and len(shape) == 4 and module is not None \
                and not any(True for _ in module.children()):
            last_map = (name, shape)
    return None


def _insert_after(model: nn.Module, name: str, new_name: str, layer: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    if child not in parent._modules:
        raise AdaptError(f"{type(model).__name__} has no layer {name} to insert a pool after")
    if not isinstance(parent, nn.Sequential):
        raise AdaptError(f"cannot insert a pool after {name}: its parent is a {type(parent).__name__}, not a "
                         f"Sequential; use mode='rebuild' to rebuild the head's first linear layer instead")
    modules = OrderedDict()
    for key, module in parent._modules.items():
        modules[key] = module
        if key == child:
            modules[new_name] = layer
    parent._modules = modules


def _map_size(features: int, channels: int, reference: tuple | None) -> tuple[int, int] | None:
    if reference is not None and reference[1] == channels and reference[1] * reference[2] * reference[3] == features:
        return reference[2], reference[3]
    if features % channels:
        return None
    side = math.isqrt(features // channels)
    return (side, side) if side * side * channels == features else None


def adapt_head(model: nn.Module, num_classes: int | None, input_shape: Sequence[int] | None = None,
               mode: str = "pool", new_head: bool = False) -> list[Adaptation]:
    """Fits the head of ``model`` to a new input size and class count.

    The input size: when the head's first linear layer reads a flattened map of a fixed size (LeNet-5, a
    model file's ``flatten`` then ``dense``), another input size gives another map size. ``mode="pool"``
    (the default) inserts an ``nn.AdaptiveAvgPool2d`` to the size the head was built for after the last layer
    that makes the map (the weights are all kept); ``mode="rebuild"`` replaces that linear layer with a new one
    for the new map size (its weights are lost). Heads that pool globally or adaptively (ResNet, VGG,
    AlexNet) take any size and are left alone. Sizes come from a shape-only pass on the meta device.
    The class count: ``reset_classifier(num_classes)`` (or, for a bare module, a new last linear layer).

    Args:
        model: the model, changed in place.
        num_classes: classes of the new data (None: keep the head's).
        input_shape: ``(C, H, W)`` of the new images (None: keep the size); C is not changed here (see
            :func:`adapt_input_channels`).
        mode: ``"pool"`` or ``"rebuild"``.
        new_head: replace the classifier even when it already has ``num_classes`` outputs (new data whose
            classes are other ones: the old class scores mean nothing there).

    Returns:
        The :class:`Adaptation` list (empty when nothing had to change).

    Raises:
        AdaptError: an unknown mode, a head that cannot be adapted, or a model that still cannot take the
            input size afterwards (named layer and shapes).

    >>> model = convkit.create_model("resnet18", num_classes=1000)
    >>> [a.text for a in adapt_head(model, 10, (3, 64, 64))]
    ['classes 1000 -> 10: fc Linear(512 -> 1000) replaced by a new Linear(512 -> 10)']
    """
    if mode not in HEAD_MODES:
        raise AdaptError(f"mode={mode!r}: expected one of {', '.join(HEAD_MODES)}")
    if num_classes is not None and (not isinstance(num_classes, int) or num_classes < 1):
        raise AdaptError(f"num_classes={num_classes!r}: expected a positive number of classes")
    changes: list[Adaptation] = []
    cfg = _model_cfg(model)
    _, conv = _first_conv(model)
    channels = conv.in_channels
    if input_shape is not None:
        if len(input_shape) != 3:
            raise AdaptError(f"input_shape={tuple(input_shape)}: expected (C, H, W)")
        size = (channels, int(input_shape[1]), int(input_shape[2]))
        changes += _adapt_size(model, size, cfg, mode)
    if num_classes is not None:
        change = _adapt_classes(model, num_classes, new_head)
        if change is not None:
            changes.append(change)
    if input_shape is not None:
        seen = _meta_pass(model, (channels, int(input_shape[1]), int(input_shape[2])))
        if seen.error is not None:
            raise AdaptError(f"{type(model).__name__} still cannot take {channels}x{input_shape[1]}x"
                             f"{input_shape[2]} inputs after adaptation: {seen.error}") from seen.error
    return changes


def _adapt_size(model: nn.Module, size: tuple[int, int, int], cfg: ModelCfg | None, mode: str) -> list[Adaptation]:
    seen = _meta_pass(model, size)
    found = _first_linear(model, seen)
    if found is None:
        if seen.error is not None:
            raise AdaptError(f"{type(model).__name__} cannot take {'x'.join(map(str, size))} inputs: "
                             f"{seen.error}") from seen.error
        return []  # no linear layer: a fully convolutional head (NiN) takes any size
    name, in_shape, last_map = found
    linear = model.get_submodule(name)
    old_shape = model_cfg(model).input_shape
    if in_shape is not None and in_shape[-1] == linear.in_features:
        if cfg is not None and old_shape is not None and tuple(old_shape[1:]) != size[1:]:
            _set_cfg(model, input_shape=(old_shape[0], *size[1:]))
        return []  # the head pools to a fixed size already (or the map happens to fit)
    if last_map is None:
        raise AdaptError(f"{name} gets {in_shape} for {size} inputs but expects {linear.in_features} features, "
                         "and no feature map precedes it to pool")
    map_layer, map_shape = last_map
    reference = None
    if old_shape is not None:
        found = _first_linear(model, _meta_pass(model, (size[0], *old_shape[1:])))
        reference = found[2][1] if found is not None and found[2] is not None else None
    before = f"{'x'.join(map(str, old_shape))}" if old_shape else "its old size"
    after = "x".join(map(str, size))
    c, h, w = map_shape[1:]
    if mode == "pool":
        target = _map_size(linear.in_features, c, reference)
        if target is None:
            raise AdaptError(f"{name} expects {linear.in_features} features, which is not {c} maps of a size "
                             f"convkit can tell; use mode='rebuild'")
        pool = nn.AdaptiveAvgPool2d(target)
        _insert_after(model, map_layer, "adapt_pool", pool)
        if hasattr(model, "build") and getattr(model, "input_shape", None) is not None:
            model.build(size)  # convkit.Sequential: its shapes and head split
        text = (f"input {before} -> {after}: {map_layer} now followed by AdaptiveAvgPool2d({target}) (the map "
                f"{c}x{h}x{w} -> {c}x{target[0]}x{target[1]}, as {name} was built for)")
        change = Adaptation("input_size", map_layer, list(old_shape) if old_shape else None, list(size), text,
                            {"inserted": "AdaptiveAvgPool2d", "output_size": list(target), "map": [c, h, w]})
    else:
        new = nn.Linear(c * h * w, linear.out_features, bias=linear.bias is not None)
        new = new.to(device=linear.weight.device, dtype=linear.weight.dtype)
        model.set_submodule(name, new)
        if hasattr(model, "build") and getattr(model, "input_shape", None) is not None:
            model.build(size)
        text = (f"input {before} -> {after}: {name} Linear({linear.in_features} -> {linear.out_features}) "
                f"replaced by a new Linear({c * h * w} -> {linear.out_features}) for the {c}x{h}x{w} map")
        change = Adaptation("input_size", name, list(old_shape) if old_shape else None, list(size), text,
                            {"rebuilt": name, "in_features": [linear.in_features, c * h * w]})
    if cfg is not None:
        _set_cfg(model, input_shape=size)
    return [change]


def _adapt_classes(model: nn.Module, num_classes: int, force: bool = False) -> Adaptation | None:
    if hasattr(model, "reset_classifier") and hasattr(model, "get_classifier"):
        name = model.classifier_name
        old_layer = model.get_classifier()
        old = getattr(model, "num_classes", None)
        if old == num_classes and not force:
            return None
        model.reset_classifier(num_classes)
        new_layer = model.get_classifier()
    else:
        linears = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
        if not linears:
            raise AdaptError(f"{type(model).__name__} has no classifier to replace (no reset_classifier, no Linear)")
        name, old_layer = linears[-1]
        old = old_layer.out_features
        if old == num_classes and not force:
            return None
        new_layer = nn.Linear(old_layer.in_features, num_classes, bias=old_layer.bias is not None)
        new_layer = new_layer.to(device=old_layer.weight.device, dtype=old_layer.weight.dtype)
        model.set_submodule(name, new_layer)
    cfg = _model_cfg(model)
    if cfg is not None:
        _set_cfg(model, num_classes=num_classes, classes=None, spec_num_classes=num_classes)
    why = " (other classes than the source's)" if old == num_classes else ""
    text = (f"classes {old} -> {num_classes}{why}: {name} {_describe(old_layer)} replaced by a new "
            f"{_describe(new_layer)}")
    return Adaptation("classes", name, old, num_classes, text)


def _describe(layer: nn.Module) -> str:
    if isinstance(layer, nn.Linear):
        return f"Linear({layer.in_features} -> {layer.out_features})"
    if isinstance(layer, nn.Conv2d):
        return f"Conv2d({layer.in_channels} -> {layer.out_channels}, {layer.kernel_size[0]}x{layer.kernel_size[1]})"
    return type(layer).__name__


def replay_adaptations(model: nn.Module, adaptations: Sequence[dict]) -> nn.Module:
    """Makes the layer changes of recorded input-size adaptations again, on a model just built from its spec.

    A checkpoint of an adapted model records its architecture as the source's spec (with the new class count
    and input channels, which the builder takes) plus the ``input_size`` adaptations (``Adaptation.to_dict()``),
    which no builder argument expresses: an inserted pool or a rebuilt linear layer. This repeats exactly those
    changes, from the recorded names and sizes (no shape pass), so the checkpoint's weights load.

    Args:
        model: the model built from the spec (any device, the meta device too).
        adaptations: the recorded dicts; kinds other than ``input_size`` are skipped.

    Returns:
        ``model``, changed in place.

    Raises:
        AdaptError: a record that names a layer the model lacks, or lacks its sizes.

    >>> model = convkit.create_model("lenet5")
    >>> records = [a.to_dict() for a in adapt_head(model, None, (1, 64, 64))]
    >>> rebuilt = replay_adaptations(convkit.create_model("lenet5"), records)
    >>> rebuilt(torch.zeros(1, 1, 64, 64)).shape
    torch.Size([1, 10])
    """
    for record in adaptations:
        if not isinstance(record, dict) or record.get("kind") != "input_size":
            continue
        details, layer = record.get("details") or {}, record.get("layer")
        size = record.get("after")
        try:
            if "inserted" in details:
                target = tuple(int(v) for v in details["output_size"])
                _insert_after(model, str(layer), "adapt_pool", nn.AdaptiveAvgPool2d(target))
            elif "rebuilt" in details:
                old = model.get_submodule(str(details["rebuilt"]))
                new = nn.Linear(int(details["in_features"][1]), old.out_features, bias=old.bias is not None)
                model.set_submodule(str(details["rebuilt"]), new.to(device=old.weight.device,
                                                                    dtype=old.weight.dtype))
            else:
                raise KeyError("inserted or rebuilt")
        except (AttributeError, KeyError, TypeError, ValueError, IndexError) as err:
            raise AdaptError(f"a recorded adaptation does not fit {type(model).__name__}: {shorten(record)} "
                             f"({err})") from None
        if hasattr(model, "build") and getattr(model, "input_shape", None) is not None and size:
            model.build(tuple(int(v) for v in size))
    return model
