"""``convkit.summary``: shapes, parameters, multiply-adds, memory and receptive fields of any CNN, without running it.

Conventions (also in :data:`CONVENTIONS` and in every ``to_dict()``):

* **Multiply-adds (MACs)** count convolutions and matrix products (linear layers) only, one
  multiply-add counted once: a convolution costs ``weights x output positions`` (x input positions
  for a transposed convolution), a linear layer ``in_features x out_features`` per sample. The bias
  add is not counted, nor are batch norm, pooling, activations and residual sums. This is fvcore's
  count for conv and linear exactly; torchinfo adds one multiply-add per output value for the bias
  (``(weights + bias) x positions``) and ``2 x channels`` per batch-norm layer, so torchinfo's
  figure for a conv/linear layer is convkit's plus ``out_values`` when the layer has a bias.
  FLOPs = 2 x MACs.
* **Activations** of a layer: the values of its output, per image. The forward total counts the
  input and then each tensor once, as the lectures count (input + one map per conv, pool and fully
  connected layer): a layer that passes its input on adds nothing, whether in place (``ReLU(inplace=True)``),
  as a view or the identity (``Flatten``, ``Identity``, adaptive pooling to the size it is given), or as
  an activation function or dropout (elementwise maps that keep the shape: at inference dropout is the
  identity and an activation can run in place). Such rows show their output size in parentheses.
  Functional operations such as ``x + identity`` are not layers and add nothing.
* **Saved activations**: what autograd keeps from the forward pass for the backward pass, per
  image, measured on the meta device with ``saved_tensors_hooks`` and deduplicated by storage
  (a tensor saved by two operators counts once); parameters, buffers and the input are excluded.
* **Training memory** = weights + buffers + gradients + optimizer state (sgd 0, momentum 1, adam 2
  tensors per trainable parameter) + saved activations x batch + input x batch + the largest layer
  output x batch (a temporary live beside the saved tensors, such as a convolution's output before
  its activation).
* **Inference memory** = weights + buffers + the peak of live activations in the forward pass,
  each tensor freed after the operator that reads it last (as eager PyTorch frees them), the input
  held throughout.
* **Receptive field** (size, jump, start) on the input, per axis; where paths join, the union of
  the fields of every path (the maximum over paths for centred branches); see
  :mod:`convkit.inspect.receptive`.
* **Equivalent dense layer** of a convolution: ``in_values x out_values + out_values`` parameters.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from convkit.inspect.detection import detector_plan, part_totals, unwrap_detector
from convkit.inspect.memory import (
    bytes_per_element,
    dense_equivalent,
    format_count,
    inference_memory,
    optimizer_state_tensors,
    parse_dtype,
    training_memory,
)
from convkit.inspect.receptive import GLOBAL, ReceptiveField
from convkit.inspect.trace import Trace, prepare_trace, trace_model
from convkit.layers.shapes import ShapeWarning, format_pair, format_shape
from convkit.utils import format_bytes, shorten

__all__ = ["CONVENTIONS", "FINETUNE_FILE", "LayerRow", "Summary", "apply_run_freeze", "summary"]

CONVENTIONS = {
    "macs": "multiply-adds of convolutions and matrix products (linear layers), one multiply-add counted once, "
            "bias adds not counted; batch norm, pooling, activations and sums not counted (fvcore's conv/linear "
            "count; torchinfo adds out_values per biased layer); attention's Q K^T and A V products are matrix "
            "products and count (fvcore skips scaled_dot_product_attention); a weight used through a function "
            "call (F.linear(x, self.qkv.weight)) counts for the module that owns it; counted in the model's mode "
            "(Summary.mode); work on tensors that do not come from the input (an MLP on a buffer) counts once "
            "per forward pass, as in a batch-1 forward",
    "flops": "2 x macs",
    "activations": "output values of each layer, per image; the forward total is the input + the layer outputs, each "
                   "tensor once: a layer passing its input on (in place, a view or identity, adaptive pooling to its "
                   "input size, an activation function or dropout keeping the shape) adds nothing (the lectures' "
                   "input + one map per conv, pool and fc layer; such rows' Act. is in parentheses)",
    "saved_activation_bytes": "tensors autograd saves for the backward pass, per image, deduplicated by storage, "
                              "excluding parameters, buffers and the input, from a training-mode forward; fused "
                              "scaled-dot-product attention as CPU's kernel saves it (q, k, v, output, log-sum-exp)",
    "training_memory": "weights + buffers + gradients + optimizer state (sgd 0, momentum 1, adam 2 x trainable "
                       "parameters) + saved activations x batch + input x batch + largest layer output x batch",
    "inference_memory": "weights + buffers + peak of live activations x batch (each tensor freed after its last "
                        "use, input held)",
    "receptive_field": "size/jump/start on the input per axis (height, width); the union over paths where paths join; "
                       "'global' when a global operation (pooling, a pooled gate, flatten) is on the path, 'unknown' "
                       "when convkit cannot follow the positions",
    "dense_equivalent": "in_values x out_values + out_values: a fully connected layer with the conv's input and output",
    "per_image": "per-layer figures are per image; memory figures are for batch_size",
}

# The traced batch: 2, because batch norm in training mode needs more than one value per channel.
_TRACE_BATCH = 2


@dataclass
class LayerRow:
    """One call of one layer (a module without children, one that owns parameters, or one whose own forward
    does multiply-adds, such as timm's attention with its Q K^T and A V products).

    Attributes:
        name: qualified module name (``layer1.0.conv1``).
        type: class name.
        depth: nesting depth (the model is 0).
        input_shape, output_shape: per-sample shapes (first input / first output).
        kernel, stride, dilation: ``(h, w)`` pairs of a conv or pool layer, else ``None``.
        padding: ``(top, bottom, left, right)`` of a conv or pool layer, else ``None``.
        groups: of a convolution.
        params, trainable_params, frozen_params, param_bytes: parameters the module owns itself,
            counted at its first call only.
        macs: multiply-adds per image (see :data:`CONVENTIONS`).
        activations, activation_bytes: output values per image and their bytes.
        new_activations, new_activation_bytes: the part of them in tensors not counted before, which the
            forward total adds (0 for a layer that passes its input on: in place, a view, an activation
            function, dropout; see :data:`CONVENTIONS`).
        saved_bytes: bytes per image autograd saves for backward while this layer runs.
        receptive_field: of the output on the input.
        dense_equivalent: parameters of a dense layer with the same input and output (convolutions).
        repeat: the module was called before (shared weights); its parameters count once.
    """

    name: str
    type: str
    depth: int
    input_shape: tuple[int, ...] | None
    output_shape: tuple[int, ...] | None
    kernel: tuple[int, int] | None = None
    stride: tuple[int, int] | None = None
    padding: tuple[int, int, int, int] | None = None
    dilation: tuple[int, int] | None = None
    groups: int | None = None
    params: int = 0
    trainable_params: int = 0
    frozen_params: int = 0
    param_bytes: int = 0
    macs: int = 0
    activations: int = 0
    activation_bytes: int = 0
    new_activations: int = 0
    new_activation_bytes: int = 0
    saved_bytes: int = 0
    receptive_field: ReceptiveField | None = None
    dense_equivalent: int | None = None
    repeat: bool = False

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("input_shape", "output_shape", "kernel", "stride", "padding", "dilation"):
            if data[key] is not None:
                data[key] = list(data[key])
        data["receptive_field"] = self.receptive_field.to_dict() if self.receptive_field else None
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LayerRow:
        data = dict(data)
        for key in ("input_shape", "output_shape", "kernel", "stride", "padding", "dilation"):
            if data.get(key) is not None:
                data[key] = tuple(data[key])
        if data.get("receptive_field") is not None:
            data["receptive_field"] = ReceptiveField.from_dict(data["receptive_field"])
        return cls(**data)

    def geometry_text(self) -> str:
        """``'11x11/4/2'``: kernel/stride/padding; dilation and groups when not 1."""
        if self.kernel is None:
            return ""
        text = f"{format_shape(self.kernel)}/{format_pair(self.stride)}"
        top, bottom, left, right = self.padding
        if top == bottom and left == right:
            text += f"/{format_pair((top, left))}"
        else:
            text += f"/({top},{bottom},{left},{right})"
        if self.dilation and self.dilation != (1, 1):
            text += f" d{format_pair(self.dilation)}"
        if self.groups and self.groups != 1:
            text += f" g{self.groups}"
        return text


@dataclass
class Summary:
    """The result of :func:`summary`: one row per layer call, totals and memory.

    ``str(result)`` prints the table; :meth:`to_dict` gives JSON-ready data (with the
    conventions), :meth:`to_csv` the rows.

    Attributes:
        model: the model's name.
        input_size: per-sample input shape.
        batch_size, optimizer, dtype: what the memory figures assume.
        rows: :class:`LayerRow` per layer call, in call order.
        totals: parameters, multiply-adds, activations, receptive field (per image unless named ``_batch``).
        memory: ``{"training": {...}, "inference": {...}}`` in bytes for ``batch_size``.
        warnings: shape warnings met while tracing (border pixels dropped by a stride).
        mode: ``"training"`` or ``"eval"``: the mode the model was in, in which rows, multiply-adds and
            inference memory were counted (training memory always uses a training-mode forward).
        parts: a detector's parts, ``{"name", "params", "macs", "activation_bytes", "note"}`` each (per image;
            see `convkit.inspect.detection`); empty for other models.
        notes: how a detector was counted (what ran for real, the proposal count).
    """

    model: str
    input_size: tuple[int, ...]
    batch_size: int
    optimizer: str
    dtype: str
    rows: list[LayerRow]
    totals: dict[str, Any]
    memory: dict[str, dict[str, int]]
    warnings: list[str] = field(default_factory=list)
    mode: str = "training"
    parts: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def trainable_parameters(self) -> int:
        """Parameter elements with ``requires_grad=True`` (torchinfo's "Trainable params")."""
        return self.totals["trainable_parameters"]

    @property
    def frozen_parameters(self) -> int:
        """Parameter elements with ``requires_grad=False`` (torchinfo's "Non-trainable params"); when any,
        the table has a Trainable and a Frozen column (each row's ``trainable_params``, ``frozen_params``)."""
        return self.totals["frozen_parameters"]

    def __getitem__(self, name: str) -> LayerRow:
        """The first row of the layer called ``name``."""
        for row in self.rows:
            if row.name == name:
                return row
        raise KeyError(f"no layer named {name!r}; layers: {', '.join(r.name for r in self.rows[:8])}...")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: ``model, input_size, batch_size, optimizer, dtype, conventions, layers, totals, memory, warnings``."""
        return {
            "model": self.model,
            "input_size": list(self.input_size),
            "batch_size": self.batch_size,
            "optimizer": self.optimizer,
            "dtype": self.dtype,
            "conventions": dict(CONVENTIONS),
            "layers": [row.to_dict() for row in self.rows],
            "totals": dict(self.totals),
            "memory": {k: dict(v) for k, v in self.memory.items()},
            "warnings": list(self.warnings),
            "mode": self.mode,
            "parts": [dict(p) for p in self.parts],
            "notes": list(self.notes),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Summary:
        """The inverse of :meth:`to_dict` (e.g. of a ``convkit summary --json`` file)."""
        return cls(
            model=data["model"], input_size=tuple(data["input_size"]), batch_size=data["batch_size"],
            optimizer=data["optimizer"], dtype=data["dtype"],
            rows=[LayerRow.from_dict(r) for r in data["layers"]], totals=dict(data["totals"]),
            memory={k: dict(v) for k, v in data["memory"].items()}, warnings=list(data.get("warnings", [])),
            mode=data.get("mode", "training"), parts=[dict(p) for p in data.get("parts", [])],
            notes=list(data.get("notes", [])),
        )

    CSV_COLUMNS = (
        "name", "type", "depth", "input_shape", "output_shape", "kernel", "stride", "padding", "dilation", "groups",
        "params", "trainable_params", "frozen_params", "param_bytes", "macs", "activations", "activation_bytes",
        "new_activations", "new_activation_bytes", "saved_bytes", "rf_size", "rf_jump", "rf_start", "dense_equivalent",
        "repeat",
    )

    def to_csv(self, path: str | os.PathLike | None = None) -> str:
        """The rows as CSV (shapes as ``3x224x224``, pairs as ``HxW``, padding as ``top,bottom,left,right``).

        Args:
            path: also write the text to this file.

        Returns:
            The CSV text.
        """
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(self.CSV_COLUMNS)
        for r in self.rows:
            rf = r.receptive_field
            writer.writerow([
                r.name, r.type, r.depth, _shape(r.input_shape), _shape(r.output_shape), _shape(r.kernel),
                _shape(r.stride), ",".join(map(str, r.padding)) if r.padding else "", _shape(r.dilation),
                "" if r.groups is None else r.groups, r.params, r.trainable_params, r.frozen_params, r.param_bytes,
                r.macs, r.activations, r.activation_bytes, r.new_activations, r.new_activation_bytes,
                r.saved_bytes,
                format_pair(rf.size) if rf else "", format_pair(rf.jump) if rf else "", format_pair(rf.start) if rf else "",
                "" if r.dense_equivalent is None else r.dense_equivalent, int(r.repeat),
            ])
        text = buffer.getvalue()
        if path is not None:
            Path(path).write_text(text)
        return text

    def __str__(self) -> str:
        return _render(self)

    def __repr__(self) -> str:
        return (f"Summary(model={self.model!r}, input_size={self.input_size}, layers={len(self.rows)}, "
                f"parameters={self.totals['parameters']:,}, macs={self.totals['macs']:,})")


def _shape(shape) -> str:
    return "" if shape is None else format_shape(shape)


# -- building the result --------------------------------------------------------------------------------


def _is_layer(module: nn.Module) -> bool:
    has_children = any(c is not None for c in module._modules.values())
    owns_params = any(p is not None for p in module._parameters.values())
    return not has_children or owns_params


def _param_dtype_bytes(p: torch.Tensor, dtype: torch.dtype | None) -> int:
    d = dtype if (dtype is not None and p.is_floating_point()) else p.dtype
    return p.numel() * bytes_per_element(d)


# Layers that pass their input on as the same map (same shape): activation functions, which could run in
# place, and dropout, the identity at inference. Not the softmax family (normalises over a dimension) nor
# GLU (halves one).
_PASS_ON = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.RReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish,
    nn.Hardswish, nn.Hardsigmoid, nn.Hardtanh, nn.Hardshrink, nn.Softshrink, nn.Tanhshrink, nn.Sigmoid, nn.Tanh,
    nn.LogSigmoid, nn.Softplus, nn.Softsign, nn.Threshold, nn.Identity, nn.modules.dropout._DropoutNd,
)
_ADAPTIVE_POOLS = (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d, nn.AdaptiveMaxPool1d,
                   nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d)


def _passes_on(module: nn.Module, frame) -> bool:
    """Whether a layer's output is its input's map passed on (an activation, dropout, adaptive pooling to
    the size it is given); in-place layers, views and identities are found by storage in `_rows`."""
    if not isinstance(module, _PASS_ON + _ADAPTIVE_POOLS) or len(frame.output_shapes) != 1:
        return False
    return bool(frame.input_shapes) and frame.output_shapes[0] == frame.input_shapes[0]


def _rows(trace: Trace, dtype: torch.dtype | None) -> list[LayerRow]:
    n = trace.batch
    rows: list[LayerRow] = []
    counted: set[int] = {trace.input_key}  # storages already in the forward total
    seen_params: set[int] = set()
    seen_modules: set[int] = set()
    size_cache: dict[torch.dtype, int] = {}
    for frame in trace.frames:
        module = frame.module
        if not _is_layer(module) and not frame.macs:  # a container doing its own products (timm's attention) is one
            continue
        repeat = id(module) in seen_modules
        seen_modules.add(id(module))
        params = trainable = param_bytes = 0
        for p in module._parameters.values():
            if p is None or id(p) in seen_params:
                continue
            seen_params.add(id(p))
            params += p.numel()
            trainable += p.numel() if p.requires_grad else 0
            d = dtype if (dtype is not None and p.is_floating_point()) else p.dtype
            if d not in size_cache:
                size_cache[d] = bytes_per_element(d)
            param_bytes += p.numel() * size_cache[d]
        input_shape = frame.input_shapes[0][1:] if frame.input_shapes else None
        output_shape = frame.output_shapes[0][1:] if frame.output_shapes else None
        passes_on = _passes_on(module, frame)
        new_values = new_bytes = 0
        for key, values, size in frame.outputs:
            if key not in counted and not passes_on:
                new_values, new_bytes = new_values + values, new_bytes + size
            counted.add(key)
        row = LayerRow(
            name=frame.name or type(module).__name__, type=type(module).__name__, depth=frame.depth,
            input_shape=input_shape, output_shape=output_shape, params=params, trainable_params=trainable,
            frozen_params=params - trainable, param_bytes=param_bytes, macs=frame.macs // n,
            activations=frame.output_numel // n, activation_bytes=frame.output_bytes // n,
            new_activations=new_values // n, new_activation_bytes=new_bytes // n,
            saved_bytes=int(round(frame.saved_bytes / n)),
            receptive_field=ReceptiveField.from_tuple(frame.rf) if frame.rf is not None else None,
            repeat=repeat,
        )
        geometry = frame.geometry
        if geometry is not None:
            row.kernel, row.stride, row.padding = geometry["kernel"], geometry["stride"], geometry["padding"]
            row.dilation = geometry["dilation"]
            if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
                row.groups = geometry["groups"]
        if isinstance(module, nn.Conv2d) and input_shape is not None and output_shape is not None:
            row.dense_equivalent = dense_equivalent(input_shape, output_shape)
        rows.append(row)
    return rows


def _last_feature_map(trace: Trace):
    """The module call that returned the last feature map before global pooling: the model's receptive field.

    Global and adaptive pooling do not count, since they make every field the whole input. Containers count
    (an Inception module's output is the union of its branches, which no single layer returns). A map whose
    positions convkit could not follow (ViT's and Swin's tokens) counts too, so that the field is reported as
    unknown with its reason there, not as the number of an earlier map.
    """
    best = None
    for frame in trace.frames:
        rf = frame.rf
        if rf is None or frame.finished < 0 or not frame.output_shapes:
            continue
        shape = frame.output_shapes[0]
        unknown = rf[7] not in ("", GLOBAL)
        if not (rf[6] or (unknown and len(shape) >= 3)):
            continue
        if type(frame.module).__name__.startswith(("Adaptive", "Global")):
            continue
        if best is None or frame.finished > best.finished:
            best = frame
    return best


def _resolve(model: Any, model_kwargs: dict) -> tuple[nn.Module, str, tuple[int, ...]]:
    """A module for ``model`` (a module itself, unchanged; any other reference built on the meta device by
    `convkit.models.resolve_model`), its name and its own input size (read from its `ModelCfg`)."""
    from convkit.models.reference import model_cfg, resolve_model

    if isinstance(model, nn.Module):
        if model_kwargs:
            raise TypeError(f"model keyword arguments {sorted(model_kwargs)} only apply to a zoo name or a model file")
        module = model
    elif isinstance(model, (str, os.PathLike)):
        module = resolve_model(model, meta=True, **model_kwargs)
    else:
        raise TypeError(f"model must be an nn.Module, a zoo name, a model file, a run folder or a checkpoint, got "
                        f"{type(model).__name__}")
    cfg = model_cfg(module)
    size = cfg.input_shape
    if size is None:  # a module that says nothing: ImageNet's size, with its first convolution's channels
        first = next((m for m in module.modules() if isinstance(m, nn.Conv2d) and m.in_channels), None)
        size = (first.in_channels if first is not None else 3, 224, 224)
    return module, cfg.name, tuple(size)


def summary(
    model: nn.Module | str | os.PathLike,
    input_size: Sequence[int] | None = None,
    batch_size: int = 1,
    optimizer: str = "sgd",
    dtype: str | torch.dtype | None = None,
    *,
    device: str | torch.device = "meta",
    **model_kwargs,
) -> Summary:
    """Shapes, parameters, multiply-adds, memory and receptive fields of a CNN, computed without running it.

    The model runs once on the meta device (shapes only, no memory, no arithmetic) in the mode it is
    in (``result.mode``: an eval-mode GoogLeNet skips its auxiliary heads) with autograd on; an eval-mode
    model runs a second time in training mode, so that what autograd saves for training is measured
    exactly. The model itself is not modified (its parameters are swapped for meta stand-ins during the call).

    Args:
        model: an ``nn.Module`` (a zoo model, ``convkit.Sequential``, torchvision's or your own), a
            zoo name (``"vgg16"``) or a model file (``"net.yaml"``); names and files are built on the
            meta device.
        input_size: per-sample input shape ``(C, H, W)``; default: the model's own (zoo
            information, ``Sequential.input_shape``), else ``(3, 224, 224)``.
        batch_size: batch size of the memory figures.
        optimizer: ``"sgd"``, ``"momentum"`` or ``"adam"`` (also ``adamw``, ``nesterov``,
            ``rmsprop``, ``adagrad``): the optimizer state in training memory.
        dtype: dtype of parameters and activations (``"float32"``, ``"float16"``, ``torch.bfloat16``);
            default: the model's.
        device: ``"meta"``; a real device (``"cpu"``) only for a model whose forward needs values.
        **model_kwargs: for a zoo name or model file, e.g. ``num_classes=10``, ``in_channels=1``.

    Returns:
        A :class:`Summary`: ``str()`` prints the table, ``.to_dict()``, ``.to_csv()``.

    Raises:
        ShapeError: a layer cannot take its input; the message names the layer, its input shape and
            the output-size formula (a kernel larger than its padded input, wrong channels...).
        MetaUnsupportedError: the forward needs real values; pass ``device="cpu"``.
        UnknownModelError: no zoo model of that name.
        ValueError: bad ``input_size``, ``batch_size``, ``optimizer`` or ``dtype``.

    Warns:
        ShapeWarning: a stride that does not divide evenly drops border pixels of the input.

    Example:
        >>> result = summary("alexnet", batch_size=64, optimizer="adam")
        >>> result["features.0"].output_shape, result["features.0"].params
        ((64, 55, 55), 23296)
        >>> print(result)                         # the table and the totals
        convkit summary: alexnet  input 3x224x224  float32  batch 64  optimizer adam
        ...
        features.0    Conv2d             11x11/4/2   64x55x55       23,296   70,276,800  756.2 KiB          -  11/4/3
        ...
        Training memory:  1.2 GiB for batch 64 with adam = weights 233.1 MiB + ...
        ...
        >>> result.to_dict()["totals"]["parameters"]
        61100840
    """
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    optimizer_state_tensors(optimizer)  # fail before tracing on a misspelt optimizer
    dtype = parse_dtype(dtype)
    module, name, default_size = _resolve(model, model_kwargs)
    if input_size is None:
        input_size = default_size
    input_size = tuple(int(s) for s in input_size)
    if not input_size or min(input_size) < 1:
        raise ValueError(f"input_size must be positive ints per sample, e.g. (3, 224, 224), got {input_size}")

    # rows, multiply-adds and inference memory in the mode the model is in; training memory needs what a
    # training-mode forward saves (dropout masks, batch statistics, auxiliary heads): a second pass for an
    # eval-mode model, whose per-layer saved bytes then come from that pass
    # (that second pass records only module calls and saved bytes: the rows come from the first)
    module = unwrap_detector(module)  # a trained detector: the detector inside (its parts are known)
    plan = detector_plan(module)
    real = plan is not None and plan.device is not None  # torchvision's detectors: run for real, in eval mode
    if real and torch.device(device).type == "meta":
        device = plan.device
    mode = "training" if module.training and not real else "eval"
    prepared = prepare_trace(module, device, dtype)
    with plan.counting() if plan is not None else contextlib.nullcontext():
        trace = trace_model(module, input_size, batch=_TRACE_BATCH, dtype=dtype, device=device,
                            saved_tensors=mode == "training", prepared=prepared, training=False if real else None,
                            call=plan.call if plan is not None else None)
        saved_trace = trace
        if mode == "eval":
            saved_trace = trace_model(module, input_size, batch=_TRACE_BATCH, dtype=dtype, device=device,
                                      training=True, layers=False, prepared=prepared,
                                      call=plan.train_call if real else None)
        calls: dict[tuple[int, int], int] = {}
        counts: dict[int, int] = {}
        for frame in saved_trace.frames:
            i = counts[id(frame.module)] = counts.get(id(frame.module), 0) + 1
            calls[id(frame.module), i] = frame.saved_bytes
        counts.clear()
        for frame in trace.frames:
            if frame.called:  # function-call frames hold no saved bytes of their own
                i = counts[id(frame.module)] = counts.get(id(frame.module), 0) + 1
                frame.saved_bytes = calls.get((id(frame.module), i), 0)
    for message in trace.warnings:
        warnings.warn(message, ShapeWarning, stacklevel=2)
    rows = _rows(trace, dtype)
    n = trace.batch

    params = list(module.parameters())  # deduplicated by torch: tied weights count once
    total = sum(p.numel() for p in params)
    trainable = sum(p.numel() for p in params if p.requires_grad)
    param_bytes = sum(_param_dtype_bytes(p, dtype) for p in params)
    trainable_bytes = sum(_param_dtype_bytes(p, dtype) for p in params if p.requires_grad)
    buffers = [b for b in module.buffers() if b is not None]
    buffer_bytes = sum(_param_dtype_bytes(b, dtype) for b in buffers)
    saved = saved_trace.saved_bytes / n
    peak = trace.peak_live_bytes / n
    input_bytes = trace.input_bytes // n
    macs = trace.macs_total // n
    # the input, then each tensor once (see CONVENTIONS["activations"])
    forward = math.prod(input_size) + sum(r.new_activations for r in rows)
    forward_bytes = input_bytes + sum(r.new_activation_bytes for r in rows)
    last_map = _last_feature_map(trace)
    used_dtype = dtype or next((p.dtype for p in params if p.is_floating_point()), torch.get_default_dtype())
    totals = {
        "parameters": total,
        "trainable_parameters": trainable,
        "frozen_parameters": total - trainable,
        "parameter_bytes": param_bytes,
        "parameters_in_layers": sum(r.params for r in rows),
        "buffers": sum(b.numel() for b in buffers),
        "buffer_bytes": buffer_bytes,
        "macs": macs,
        "flops": 2 * macs,
        "macs_in_layers": sum(r.macs for r in rows),
        "forward_activations": forward,
        "forward_activation_bytes": forward_bytes,
        "saved_activation_bytes": int(round(saved)),
        "input_bytes": input_bytes,
        "peak_activation_bytes": int(round(peak)),
        "dense_equivalent_parameters": sum(r.dense_equivalent or 0 for r in rows if not r.repeat),
        "receptive_field": ReceptiveField.from_tuple(last_map.rf).to_dict() if last_map else None,
        "receptive_field_layer": (last_map.name or type(last_map.module).__name__) if last_map else None,
    }
    memory = {
        "training": training_memory(param_bytes, trainable_bytes, buffer_bytes, saved, input_bytes, batch_size,
                                    optimizer, max((r.activation_bytes for r in rows), default=0)),
        "inference": inference_memory(param_bytes, buffer_bytes, peak, batch_size),
    }
    return Summary(model=name, input_size=input_size, batch_size=batch_size, optimizer=str(optimizer).lower(),
                   dtype=str(used_dtype).removeprefix("torch."), rows=rows, totals=totals, memory=memory,
                   warnings=list(trace.warnings), mode=mode,
                   parts=part_totals(module, rows, plan.parts) if plan is not None else [],
                   notes=list(plan.notes) if plan is not None else [])


# -- a finetune run's frozen parameters ------------------------------------------------------------------------

#: The file of a finetune run folder that lists its phases and what each froze.
FINETUNE_FILE = "finetune.json"
_MAX_FINETUNE_BYTES = 32 * 2**20  # a few hundred parameter names per phase need kilobytes


def _finetune_phases(file: Path) -> list[dict]:
    """The phases of a finetune.json, checked: a list of ``{"name": str, "frozen_params": [str, ...], ...}``."""
    from convkit.reuse.freeze import FreezeError

    size = file.stat().st_size
    if size > _MAX_FINETUNE_BYTES:
        raise FreezeError(f"{file}: {size:,} bytes; a finetune.json is at most {_MAX_FINETUNE_BYTES:,}")
    try:
        data = json.loads(file.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as err:
        raise FreezeError(f"{file}: not UTF-8 text (byte {err.start}); expected the JSON a finetune run writes") from err
    except json.JSONDecodeError as err:
        raise FreezeError(f"{file}: not JSON (line {err.lineno}, column {err.colno}: {err.msg})") from err
    except RecursionError:
        raise FreezeError(f"{file}: JSON nested too deeply; expected {{\"phases\": [...]}}") from None
    if not isinstance(data, dict):
        raise FreezeError(f"{file}: expected an object {{\"phases\": [...], ...}}, found {shorten(data, 80)}")
    phases = data.get("phases")
    if not isinstance(phases, list) or not phases:
        found = shorten(phases, 80) if "phases" in data else "no \"phases\""
        raise FreezeError(f"{file}: \"phases\" must be a non-empty list of phases, found {found}")
    for i, phase in enumerate(phases):
        if not isinstance(phase, dict):
            raise FreezeError(f"{file}: phases[{i}] must be an object with name and frozen_params, found "
                              f"{shorten(phase, 80)}")
        if not isinstance(phase.get("name"), str):
            raise FreezeError(f"{file}: phases[{i}].name must be a string, found {shorten(phase.get('name'), 80)}")
        frozen = phase.get("frozen_params")
        if not isinstance(frozen, list) or not all(isinstance(n, str) for n in frozen):
            raise FreezeError(f"{file}: phases[{i}].frozen_params must be a list of parameter names, found "
                              f"{shorten(frozen, 80)}")
    return phases


def apply_run_freeze(model: nn.Module, run_dir: str | os.PathLike, phase: str | None = None) -> str | None:
    """Freezes ``model`` as a finetune run's phase had it: what ``convkit summary RUN`` shows.

    A finetune run folder holds ``finetune.json`` (:data:`FINETUNE_FILE`): ``{"phases": [{"name": ...,
    "frozen_params": [parameter names], "frozen_stages": [...], ...}, ...]}``. Its checkpoints load with every
    parameter trainable; this sets ``requires_grad=False`` on the phase's ``frozen_params`` and ``True`` on
    the others, so that :func:`summary` counts trainable and frozen parameters (and training memory) as
    that phase trained.

    Args:
        model: the run's model (built on the meta device or real).
        run_dir: the reference given for the model; anything but a folder with a finetune.json is left alone.
        phase: the phase's name; default: the last phase.

    Returns:
        One line saying what was frozen and from where, or None when ``run_dir`` is not a finetune run folder.

    Raises:
        FreezeError: ``phase`` is not a phase of the run (the message lists them) or given for a reference
            without a finetune.json; the finetune.json is not JSON, has fields of the wrong type, or freezes
            parameter names the model does not have (the message names the file).

    Example:
        >>> model = convkit.create_model("lenet5")
        >>> Path("run").mkdir()
        >>> phases = [{"name": "head", "frozen_params": ["features.c1.weight", "features.c1.bias"]},
        ...           {"name": "all", "frozen_params": []}]
        >>> _ = Path("run/finetune.json").write_text(json.dumps({"phases": phases}))
        >>> print(apply_run_freeze(model, "run", phase="head"))
        frozen as in phase 'head' of run (finetune.json): 156 of 61,706 parameters (2 tensors)
        >>> model.features.c1.weight.requires_grad, summary(model).frozen_parameters
        (False, 156)
    """
    from convkit.reuse.freeze import FreezeError

    file = Path(run_dir) / FINETUNE_FILE
    if not (Path(run_dir).is_dir() and file.is_file()):
        if phase is not None:
            raise FreezeError(f"phase {shorten(phase, 80)}: {shorten(str(run_dir), 200)} is not a finetune run "
                              f"folder (no {FINETUNE_FILE}); only a finetune run has phases")
        return None
    phases = _finetune_phases(file)
    names = [p["name"] for p in phases]
    if phase is None:
        chosen = phases[-1]
    elif phase in names:
        chosen = phases[names.index(phase)]
    else:
        raise FreezeError(f"phase {shorten(phase, 80)} is not a phase of {file}; its phases: "
                          f"{shorten(names, 300)}")
    frozen = set(chosen["frozen_params"])
    params = dict(model.named_parameters(remove_duplicate=False))
    unknown = [n for n in chosen["frozen_params"] if n not in params]
    if unknown:
        raise FreezeError(f"{file}: phase {chosen['name']!r} freezes {len(unknown)} parameters the model does not "
                          f"have: {shorten(unknown, 200)}; the model's are e.g. {shorten(list(params)[:3], 200)}")
    for p in params.values():
        p.requires_grad_(True)
    for name in frozen:  # a weight tied under two names is frozen when either is
        params[name].requires_grad_(False)
    unique = {id(p): p for p in params.values()}.values()  # tied weights once, as summary counts them
    frozen_elements = sum(p.numel() for p in unique if not p.requires_grad)
    stages = chosen.get("frozen_stages")
    stages = (f"; stages {shorten(stages, 200)}" if isinstance(stages, list) and stages
              and all(isinstance(s, str) for s in stages) else "")
    return (f"frozen as in phase {chosen['name']!r} of {run_dir} ({FINETUNE_FILE}): {frozen_elements:,} of "
            f"{sum(p.numel() for p in unique):,} parameters ({len(frozen)} tensors){stages}")


# -- the table ---------------------------------------------------------------------------------------------


def _parts_lines(s: Summary) -> list[str]:
    """A detector's "Parts:" table (per image) and how it was counted; nothing for other models."""
    if not s.parts:
        return []
    headers = ("Part", "Params", "MACs", "New act.", "Note")
    table = [(p["name"], f"{p['params']:,}", f"{p['macs']:,}", format_bytes(p["activation_bytes"]), p.get("note", ""))
             for p in s.parts]
    table.append(("total", f"{sum(p['params'] for p in s.parts):,}", f"{sum(p['macs'] for p in s.parts):,}",
                  format_bytes(sum(p["activation_bytes"] for p in s.parts)), ""))
    widths = [max(len(row[i]) for row in (headers, *table)) for i in range(len(headers))]

    def fmt(cells):
        return "  ".join(c.rjust(w) if 0 < i < 4 else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    rule = "-" * max(len(fmt(row).rstrip()) for row in (headers, *table))
    return ["Parts (per image; New act.: activations first made in the part):", rule, fmt(headers).rstrip(), rule,
            *(fmt(row).rstrip() for row in table[:-1]), rule, fmt(table[-1]).rstrip(),
            *(f"Note: {n}" for n in s.notes)]


def _render(s: Summary) -> str:
    # a model with frozen parameters gets a Trainable and a Frozen column after Params (torchinfo's totals below)
    frozen = s.totals.get("frozen_parameters", 0) > 0
    split = ("Trainable", "Frozen") if frozen else ()
    headers = ("Layer", "Type", "Kernel/S/P", "Output", "Params", *split, "MACs", "Act.", "Saved", "RF size/jump/start")
    table = []
    for r in s.rows:
        rf = r.receptive_field
        counts = (f"{r.trainable_params:,}" if r.trainable_params else "-",
                  f"{r.frozen_params:,}" if r.frozen_params else "-") if frozen else ()
        table.append((
            r.name + (" (again)" if r.repeat else ""),
            r.type,
            r.geometry_text(),
            _shape(r.output_shape),
            f"{r.params:,}" if r.params else ("(shared)" if r.repeat and r.macs else "-"),
            *counts,
            f"{r.macs:,}" if r.macs else "-",
            format_bytes(r.activation_bytes) if r.new_activations or not r.activations
            else f"({format_bytes(r.activation_bytes)})",
            format_bytes(r.saved_bytes) if r.saved_bytes else "-",
            str(rf) if rf else "",
        ))
    widths = [len(h) for h in headers]
    for line in table:
        widths = [max(w, len(c)) for w, c in zip(widths, line)]
    widths[0] = min(widths[0], 48)
    right = set(range(4, len(headers) - 1))  # the numbers: Params to Saved

    def fmt(cells):
        out = []
        for i, (c, w) in enumerate(zip(cells, widths)):
            c = c if len(c) <= w else c[: w - 1] + "~"
            out.append(c.rjust(w) if i in right else c.ljust(w))
        return "  ".join(out).rstrip()

    rule = "-" * len(fmt(headers))
    t, mem = s.totals, s.memory
    train, infer = mem["training"], mem["inference"]
    lines = [
        f"convkit summary: {s.model}  input {format_shape(s.input_size)}  {s.dtype}  batch {s.batch_size}  "
        f"optimizer {s.optimizer}",
        rule, fmt(headers), rule, *(fmt(line) for line in table), rule,
        f"Parameters:       {t['parameters']:,} ({t['trainable_parameters']:,} trainable, "
        f"{t['frozen_parameters']:,} frozen) = {format_bytes(t['parameter_bytes'])}; buffers {t['buffers']:,} "
        f"= {format_bytes(t['buffer_bytes'])}",
        *([f"Trainable params: {t['trainable_parameters']:,}",
           f"Non-trainable params: {t['frozen_parameters']:,}"] if frozen else []),
        f"Multiply-adds:    {t['macs']:,} per image ({format_count(t['macs'])} MACs; FLOPs = 2 x MACs = "
        f"{format_count(t['flops'])}) in {s.mode} mode. Convolutions and matrix products (linear layers, attention) "
        f"only, one multiply-add counted once, bias adds, BN, pooling and activations not counted (fvcore's "
        f"convention); work that does not depend on the input counted once per forward pass",
        f"Activations:      {t['forward_activations']:,} values per image, the input and each layer output once "
        f"(Act. in parentheses: passed on, not added) = "
        f"{format_bytes(t['forward_activation_bytes'])} (the x2 rule for backward: "
        f"{format_bytes(2 * t['forward_activation_bytes'])}); autograd saves "
        f"{format_bytes(t['saved_activation_bytes'])} per image for backward (in training mode)",
    ]
    if t["receptive_field"]:
        rf = ReceptiveField.from_dict(t["receptive_field"])
        if rf.kind == "numeric":
            lines.append(f"Receptive field:  {format_pair(rf.size)} pixels at {t['receptive_field_layer']} "
                         f"(jump {format_pair(rf.jump)}, start {format_pair(rf.start)})")
        elif rf.kind == "global":
            lines.append(f"Receptive field:  global (the whole input) at {t['receptive_field_layer']}: a global "
                         f"operation is on the path; local path {format_pair(rf.size)} pixels (jump "
                         f"{format_pair(rf.jump)})")
        else:
            lines.append(f"Receptive field:  unknown at {t['receptive_field_layer']}: {rf.reason}")
    lines += [
        f"Training memory:  {format_bytes(train['total'])} for batch {s.batch_size} with {s.optimizer} = weights "
        f"{format_bytes(train['weights'])} + buffers {format_bytes(train['buffers'])} + gradients "
        f"{format_bytes(train['gradients'])} + optimizer state {format_bytes(train['optimizer_state'])} + saved "
        f"activations {format_bytes(train['activations'])} + input {format_bytes(train['input'])} + largest layer "
        f"output {format_bytes(train['workspace'])}",
        f"Inference memory: {format_bytes(infer['total'])} for batch {s.batch_size} = weights "
        f"{format_bytes(infer['weights'])} + buffers {format_bytes(infer['buffers'])} + peak live activations "
        f"{format_bytes(infer['activations'])}",
    ]
    lines += _parts_lines(s)
    if t["parameters_in_layers"] != t["parameters"]:
        lines.append(f"Note: {t['parameters'] - t['parameters_in_layers']:,} parameters belong to modules the "
                     f"forward pass does not call")
    for w in s.warnings:
        lines.append(f"Warning: {w}")
    return "\n".join(lines)
