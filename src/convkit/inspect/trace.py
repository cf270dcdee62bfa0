"""One shape-only forward pass that records everything :func:`convkit.inspect.summary` reports.

The model runs once, on the meta device (tensors with shapes and dtypes but no memory), in training
mode with autograd on, under three instruments:

* global forward pre/post hooks on modules: which module runs, in what order, with which input and
  output shapes; the pre-hook checks conv/pool geometry first (:mod:`convkit.inspect.checks`);
* a ``TorchDispatchMode`` that sees every aten operator, including functional ones (``x + identity``,
  ``torch.cat``, ``torch.flatten``): it answers shapes fast (:mod:`convkit.inspect.fastmeta`), counts
  multiply-adds of convolutions and matrix products, propagates receptive fields tensor by tensor,
  and logs which storages each operator reads and writes (for the inference-memory liveness pass);
* ``torch.autograd.graph.saved_tensors_hooks``: every tensor autograd saves for the backward pass,
  deduplicated by storage, which is what training keeps in memory between forward and backward.

The user's module is not copied: its parameters and buffers are swapped for meta stand-ins in the
modules' own dictionaries for the duration of the call (as ``torch.func.functional_call`` does,
tied weights staying tied), then put back with the train/eval flags.
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from convkit.errors import ConvkitError
from convkit.inspect import receptive as R
from convkit.inspect.checks import check_module
from convkit.inspect.fastmeta import NOT_HANDLED, meta_rule
from convkit.layers.shapes import ShapeError, ShapeWarning

__all__ = ["Frame", "Trace", "MetaUnsupportedError", "trace_model"]

aten = torch.ops.aten


class MetaUnsupportedError(RuntimeError, ConvkitError):
    """The model's forward needs real values (``.item()``, data-dependent shapes): pass ``device="cpu"``."""


@dataclass(slots=True)
class Frame:
    """One call of one module during the traced forward."""

    index: int
    name: str
    module: nn.Module
    depth: int
    parent: int | None
    input_shapes: list[tuple[int, ...]]
    output_shapes: list[tuple[int, ...]] = field(default_factory=list)
    output_numel: int = 0
    output_bytes: int = 0
    output_dtype: torch.dtype | None = None
    outputs: tuple[tuple[int, int, int], ...] = ()  # (storage key, values, bytes) of each output tensor
    rf: tuple | None = None
    geometry: dict | None = None
    macs: int = 0
    saved_bytes: int = 0
    finished: int = -1  # order in which calls returned; -1 while running
    called: bool = True  # False: the module's parameters were used through a function call, not by calling it


@dataclass
class Trace:
    """What one traced forward recorded; figures are for the whole traced batch of ``batch`` samples."""

    batch: int
    frames: list[Frame]
    macs_total: int
    saved_bytes: int
    input_bytes: int
    peak_live_bytes: int
    warnings: list[str]
    input_key: int = 0  # the input's storage key (as in ``Frame.outputs``)


def _tensors(obj: Any) -> list[torch.Tensor]:
    """The tensors in a module's or an operator's arguments or result (nested lists, tuples, dicts)."""
    if isinstance(obj, torch.Tensor):
        return [obj]
    found: list[torch.Tensor] = []
    stack = [obj]
    while stack:
        item = stack.pop()
        if isinstance(item, torch.Tensor):
            found.append(item)
        elif isinstance(item, (list, tuple)):
            stack.extend(reversed(item))
        elif isinstance(item, dict):
            stack.extend(reversed(list(item.values())))
        elif isinstance(getattr(item, "tensors", None), torch.Tensor):  # torchvision's ImageList
            stack.append(item.tensors)
    return found


def _key(t: torch.Tensor) -> int:
    # the StorageImpl's address: shared by views, unique per allocation while the tensor lives
    # (meta tensors have data_ptr 0, so data_ptr cannot tell their storages apart)
    return t.untyped_storage()._cdata


def _conv_macs(args, out) -> int:
    x, w, transposed = args[0], args[1], args[6]
    # fvcore's and torchinfo's count: one multiply-add per weight per output position (per input
    # position for a transposed convolution); the bias add is not a multiply-add here
    positions = math.prod(x.shape[2:]) if transposed else math.prod(out.shape[2:])
    return x.shape[0] * positions * w.numel()


def _mm_macs(args, out) -> int:
    a = args[-2]
    return out.numel() * a.shape[-1]


def _attention_macs(args, out) -> int:
    # fused scaled-dot-product attention: Q K^T (L x S per head, E each) and A V (L x S, Ev each), as the
    # math path's two bmm count them; softmax and scaling are not multiply-adds here
    q, k, v = args[0], args[1], args[2]
    ls = math.prod(q.shape[:-1]) * k.shape[-2]
    return ls * q.shape[-1] + ls * v.shape[-1]


_MACS = {
    aten.convolution.default: _conv_macs,
    aten.mm.default: _mm_macs,
    aten.addmm.default: _mm_macs,
    aten.bmm.default: _mm_macs,
    aten.baddbmm.default: _mm_macs,
}
for _name in ("_scaled_dot_product_flash_attention_for_cpu", "_scaled_dot_product_flash_attention",
              "_scaled_dot_product_efficient_attention", "_scaled_dot_product_cudnn_attention"):
    if hasattr(aten, _name):
        _MACS[getattr(aten, _name).default] = _attention_macs


def _fused_attention(*args, **kwargs):
    """On the meta device, scaled-dot-product attention runs as CPU's fused kernel would.

    Meta tensors send ``F.scaled_dot_product_attention`` down the math path (bmm, softmax, bmm), whose
    autograd saves the L x S attention matrix; a real run uses the fused kernel, which saves q, k, v, the
    output and the log-sum-exp only. Without dropout and grouped-query heads, the fused CPU kernel is called
    here directly (it has a meta kernel), so saved activations are those of a real CPU run; a mask that needs a
    gradient (CoAtNet's learned position bias) keeps the math path, as a real CPU run does. Put in place of
    ``torch.nn.functional.scaled_dot_product_attention`` for the traced pass only.
    """
    q, k, v = (list(args) + [kwargs.get(n) for n in ("query", "key", "value")][len(args):])[:3]
    dropout = args[4] if len(args) > 4 else kwargs.get("dropout_p", 0.0)
    causal = args[5] if len(args) > 5 else kwargs.get("is_causal", False)
    mask = args[3] if len(args) > 3 else kwargs.get("attn_mask")
    if (q.device.type == "meta" and not dropout and not kwargs.get("enable_gqa") and q.dim() == 4 and k.dim() == 4
            and v.dim() == 4 and q.is_floating_point()
            and (mask is None or (mask.dtype == q.dtype and not mask.requires_grad))):
        return aten._scaled_dot_product_flash_attention_for_cpu(
            q, k, v, 0.0, bool(causal), attn_mask=mask, scale=kwargs.get("scale"))[0]
    return _SDPA(*args, **kwargs)


_SDPA = torch.nn.functional.scaled_dot_product_attention


_VIEWS = {aten.view.default, aten._unsafe_view.default, aten.reshape.default}


def _hw(t: torch.Tensor) -> tuple[int, int] | None:
    return (t.shape[-2], t.shape[-1]) if t.dim() >= 4 else None


def _hw_at(t: torch.Tensor, layout: tuple[int, int]) -> tuple[int, int] | None:
    """The map's size in a tensor whose (height, width) are the dimensions ``layout`` (from the end)."""
    return (t.shape[layout[0]], t.shape[layout[1]]) if t.dim() >= max(4, -min(layout)) else None


class _Tracer(TorchDispatchMode):
    """Dispatch-level instrument: fast meta shapes, MACs, receptive fields, storage liveness."""

    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        # torch wraps __torch_dispatch__ to keep torch.compile out; nothing is compiled here and
        # the wrapper costs a few microseconds on each of the thousands of operators
        return False

    def __init__(self, fast: bool, state_ids: set[int], batch: int = 1, owners: dict | None = None,
                 frames: list | None = None, names: dict | None = None, layers: bool = True):
        super().__init__()
        self.fast = fast
        self.layers = layers  # False: module frames and saved bytes only (no operator bookkeeping)
        self.state_ids = state_ids  # ids of the parameters and buffers
        self.batch = batch
        self.derived: set[int] = set()  # ids of tensors computed from the input (work on them grows with the batch)
        self.owners = owners or {}  # parameter id -> the module that owns it
        self.owner_keys: dict[int, nn.Module] = {}  # parameter storage key -> owner
        self.frames = frames if frames is not None else []
        self.names = names or {}
        self.last_fn: Frame | None = None  # the frame of the last parameter read through a function call
        self.fn_open: Frame | None = None  # that frame, until a view of its output (once) gives its shape
        self.excluded: set[int] = set()  # their storages, found as operators read them
        self.keys: dict[int, int] = {}  # tensor id -> storage key (every tensor seen is kept alive)
        self.stack: list[Frame] = []
        self.macs_outside = 0
        self.rf: dict[int, tuple] = {}
        self.alive: list[torch.Tensor] = []  # keeps ids in self.rf and self.keys valid for the whole pass
        self.op_inputs: list[tuple[int, ...]] = []
        self.op_outputs: list[tuple[int, ...]] = []
        self.nbytes: dict[int, int] = {}
        self.rules: dict[Any, Any] = {}

    # -- the dispatch hook ------------------------------------------------------------------------

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if kwargs is None:
            kwargs = {}
        try:
            rule = self.rules[func]
        except KeyError:
            rule = self.rules[func] = meta_rule(func) if self.fast else None
        out = NOT_HANDLED if rule is None else rule(args, kwargs)
        if out is NOT_HANDLED:
            out = func(*args, **kwargs)
        if self.layers:
            self._record(func, args, out)
        return out

    def _record(self, func, args, out) -> None:
        tensor = torch.Tensor
        inputs = []
        for a in args:
            if isinstance(a, tensor):
                inputs.append(a)
            elif type(a) in (list, tuple) and a and isinstance(a[0], tensor):
                inputs.extend(a)
        outputs = [out] if isinstance(out, tensor) else _tensors(out)
        if not outputs:
            return
        excluded, nbytes, keys, alive = self.excluded, self.nbytes, self.keys, self.alive
        reads = None  # the module owning a parameter this operator reads
        ins = []
        for t in inputs:
            k = keys.get(id(t))
            if k is None:
                k = keys[id(t)] = t.untyped_storage()._cdata
                alive.append(t)
                if id(t) in self.state_ids:
                    excluded.add(k)
                    owner = self.owners.get(id(t))
                    if owner is not None:
                        self.owner_keys.setdefault(k, owner)
                elif k not in excluded and k not in nbytes:  # made before the pass: the input
                    nbytes[k] = t.untyped_storage().nbytes()
            if k not in excluded:
                ins.append(k)
            elif k in self.owner_keys:
                reads = self.owner_keys[k]
        outs = []
        for t in outputs:
            k = keys.get(id(t))
            if k is None:
                storage = t.untyped_storage()
                k = keys[id(t)] = storage._cdata
                alive.append(t)
                if k not in excluded and k not in nbytes:
                    nbytes[k] = storage.nbytes()
            if k not in excluded:
                outs.append(k)
        if not outs:
            return  # a view or an in-place update of a parameter or buffer
        fn = self.fn_open
        if (fn is not None and reads is None and func in _VIEWS and ins and fn.outputs
                and ins[0] == fn.outputs[0][0] and fn.output_shapes[0] == tuple(inputs[0].shape)):
            fn.output_shapes = [tuple(outputs[0].shape)]  # F.linear's flattened product viewed back
            self.fn_open = None
        derived = self.derived
        from_input = False
        for t in inputs:
            if id(t) in derived:
                from_input = True
                break
        if from_input:
            for t in outputs:
                derived.add(id(t))
        stack = self.stack
        target = stack[-1] if stack else None
        if reads is not None and target is not None and target.module is not reads:
            target = self._function_frame(reads, inputs, outputs)
        counter = _MACS.get(func)
        if counter is not None:
            macs = counter(args, outputs[0])
            if not from_input and not (outputs[0].dim() and outputs[0].shape[0] == self.batch):
                # work on tensors that do not come from the input (a buffer through an MLP) is done once per
                # forward pass whatever the batch: scaled so that per-sample figures hold it once; one made with
                # the batch's size (EdgeNeXt's position encoding of torch.zeros(B, H, W)) is done per sample
                macs *= self.batch
            if target is not None:
                target.macs += macs
            else:
                self.macs_outside += macs
        self._receptive(func, args, inputs, outputs)
        # liveness log: the storages this operator reads and the ones it writes
        self.op_inputs.append(ins)
        self.op_outputs.append(outs)

    def _function_frame(self, owner: nn.Module, inputs, outputs) -> Frame:
        """The frame of a module whose parameters are used through a function call (``F.linear(x,
        self.qkv.weight)``, ``F.multi_head_attention_forward``'s ``out_proj``), not by calling it.

        A module already running (on the stack) is its own frame; otherwise one frame per run of
        consecutive operators reading its parameters, a child of the running module.
        """
        stack = self.stack
        for f in reversed(stack):
            if f.module is owner:
                return f
        parent = stack[-1]
        frame = self.last_fn
        if frame is None or frame.module is not owner or frame.parent != parent.index:
            keys, excluded = self.keys, self.excluded
            name = self.names.get(id(owner))
            frame = Frame(len(self.frames), f"<{type(owner).__name__}>" if name is None else name, owner,
                          len(stack), parent.index,
                          [tuple(t.shape) for t in inputs if keys.get(id(t)) not in excluded], called=False)
            self.frames.append(frame)
            self.last_fn = frame
        frame.output_shapes = [tuple(t.shape) for t in outputs]
        numel = [t.numel() for t in outputs]
        sizes = [n * t.element_size() for n, t in zip(numel, outputs)]
        frame.output_numel, frame.output_bytes = sum(numel), sum(sizes)
        frame.outputs = tuple((self.keys[id(t)], n, b) for t, n, b in zip(outputs, numel, sizes))
        frame.output_dtype = outputs[0].dtype
        self.fn_open = frame
        return frame

    # -- receptive fields -------------------------------------------------------------------------

    def _receptive(self, func, args, inputs, outputs) -> None:
        rf_map = self.rf
        known = []
        for t in inputs:
            rf = rf_map.get(id(t))
            if rf is not None:
                known.append((rf, t))
        if not known:
            return
        if len(known) == 1 and len(outputs) == 1 and func in _SAME_FIELD:
            rf_map[id(outputs[0])] = known[0][0]
            return
        packet = func.overloadpacket
        first_rf, first = known[0]
        if (len(known) == 1 and first_rf[6] and packet not in _MOVES and outputs[0].shape == first.shape
                and _hw_at(first, first_rf[8]) is not None):
            # one map in, the same shape out (batch norm, dropout, an elementwise operator): the same field, as
            # the general rule below gives; its 1-D side outputs (batch statistics) are no map and nothing reads them
            for t in outputs:
                if t.shape == first.shape:
                    rf_map[id(t)] = first_rf
                elif t.dim() > 1:
                    rf_map[id(t)] = self._generic(func, known, t, self.stack[-1].name if self.stack else "")
            return
        new = None
        nchw = first_rf[6] and first_rf[8] == R.NCHW and _hw(first)
        if packet is aten.convolution and nchw and len(args[1].shape) == 4:
            w = args[1]
            k = (w.shape[2], w.shape[3])
            stride, padding, dilation = _pair(args[3]), _pair(args[4]), _pair(args[5])
            if args[6]:
                new = R.transposed_window(first_rf, k, stride, padding, dilation)
            else:
                new = R.window(first_rf, k, stride, padding, dilation)
        elif packet in _POOLS and nchw:
            new = _pool_rf(packet, first_rf, args)
        elif packet in _ADAPTIVE and nchw and _hw(outputs[0]):
            new = R.adaptive(first_rf, _hw(first), _hw(outputs[0]))
        elif packet is aten.slice and nchw:
            dim = args[1] if len(args) > 1 else 0
            dim %= first.dim()
            if dim >= first.dim() - 2:
                start = args[2] if len(args) > 2 and args[2] is not None else 0
                step = args[4] if len(args) > 4 else 1
                size = first.shape[dim]
                start = max(start + size, 0) if start < 0 else min(start, size)
                offsets, steps = [0, 0], [1, 1]
                offsets[dim - first.dim() + 2] = start
                steps[dim - first.dim() + 2] = step
                new = R.shift(first_rf, offsets, steps)
            else:
                new = first_rf
        elif packet in _PADS and nchw:
            pad = list(args[1])
            # aten lists pads from the last dimension backwards: (left, right, top, bottom, ...)
            left = pad[0] if len(pad) > 0 else 0
            top = pad[2] if len(pad) > 2 else 0
            new = R.shift(first_rf, (-top, -left))
        elif (packet in (aten.permute, aten.transpose) and first_rf[6] and len(known) == 1
              and _hw_at(first, first_rf[8])):
            # the map's dimensions move (NCHW <-> NHWC): the field stays, its layout follows
            nd = first.dim()
            if packet is aten.permute:
                order = [d % nd for d in args[1]]
            else:
                order = list(range(nd))
                a, b = args[1] % nd, args[2] % nd
                order[a], order[b] = order[b], order[a]
            layout = tuple(order.index(d % nd) - nd for d in first_rf[8])
            new = (*first_rf[:8], layout)
        for t in outputs:
            if new is not None and (t is outputs[0] or _hw(t) == _hw(outputs[0])):
                rf = new
            else:
                rf = self._generic(func, known, t, self.stack[-1].name if self.stack else "")
            rf_map[id(t)] = rf

    @staticmethod
    def _generic(func, known, out: torch.Tensor, where: str = "") -> tuple:
        """Any other operator: each output position sees the union of what it reads."""
        layout = next((rf[8] for rf, _ in known if rf[6]), R.NCHW)
        out_hw = _hw_at(out, layout)
        fields = []
        for rf, t in known:
            hw = _hw_at(t, rf[8]) if rf[6] else None
            if hw is None:
                # a value of no map (pooled, flattened), broadcast; an unknown one stays unknown
                fields.append(rf if rf[7] else R.globalize(rf))
            elif out_hw == hw and rf[8] == layout:
                fields.append(rf)
            elif out_hw is None and out.dim() == 2 and out.shape[0] == t.shape[0]:
                fields.append(R.globalize(rf))  # flatten: what reads it sees every position
            elif hw == (1, 1) or out_hw == (1, 1):
                fields.append(R.globalize(rf))  # a broadcast, or a reduction over the map
            elif out_hw is not None and out.dim() == t.dim() and layout == rf[8] == R.NCHW:
                fields.append(R.resize(rf, hw, out_hw))
            else:
                place = f" in {where}" if where else ""
                fields.append(R.unknown(rf, f"{func.overloadpacket.__name__}{place} rearranges the "
                                            f"{hw[0]}x{hw[1]} map into shape {tuple(out.shape)}"))
        return R.union(fields, out_hw is not None and any(f[6] for f in fields), layout)


def _pair(value) -> tuple[int, int]:
    value = list(value) if isinstance(value, (list, tuple)) else [value]
    return (int(value[0]), int(value[-1])) if value else (0, 0)


# elementwise operators of one map: the field passes through unchanged
_SAME_FIELD = {aten.relu.default, aten.relu_.default, aten.detach.default, aten.clone.default,
               aten.hardtanh_.default, aten.hardtanh.default, aten.sigmoid.default, aten.tanh.default,
               aten.silu.default, aten.silu_.default, aten.gelu.default, aten.leaky_relu.default,
               aten.leaky_relu_.default, aten.elu.default, aten.elu_.default}

_POOLS = {aten.max_pool2d_with_indices, aten.max_pool2d, aten.avg_pool2d, aten.avg_pool3d,
          aten.max_pool3d_with_indices}
_ADAPTIVE = {aten._adaptive_avg_pool2d, aten.adaptive_max_pool2d, aten._adaptive_avg_pool3d}
_PADS = {aten.constant_pad_nd, aten.reflection_pad2d, aten.replication_pad2d}
# operators that move positions (their own rules in _receptive), never taken as "same shape, same field"
_MOVES = {aten.convolution, aten.slice, aten.permute, aten.transpose, *_POOLS, *_ADAPTIVE, *_PADS}


def _pool_rf(packet, rf, args) -> tuple:
    def last2(value, default):
        value = list(value) if isinstance(value, (list, tuple)) else ([value] if value is not None else [])
        if not value:
            return default
        return (int(value[-2]), int(value[-1])) if len(value) >= 2 else (int(value[0]), int(value[0]))

    kernel = last2(args[1], (1, 1))
    stride = last2(args[2] if len(args) > 2 else None, kernel)
    padding = last2(args[3] if len(args) > 3 else None, (0, 0))
    has_dilation = packet in (aten.max_pool2d_with_indices, aten.max_pool2d, aten.max_pool3d_with_indices)
    dilation = last2(args[4] if has_dilation and len(args) > 4 else None, (1, 1))
    return R.window(rf, kernel, stride, padding, dilation)


def _peak_live(tracer: _Tracer, input_key: int, output_keys: set[int]) -> int:
    """Peak bytes of live tensors if each is freed right after the operator that reads it last.

    The input is held by the caller for the whole pass and the outputs are returned; the other
    outputs of an operator that nothing reads (max-pool indices, batch-norm statistics, which an
    inference-mode forward does not even compute) are not counted.
    """
    first: dict[int, int] = {}
    last: dict[int, int] = {}
    for i, (ins, outs) in enumerate(zip(tracer.op_inputs, tracer.op_outputs)):
        for k in ins:
            first.setdefault(k, i)
            last[k] = i
        for n, k in enumerate(outs):
            if k not in first:
                first[k] = i
                if n > 0:
                    continue  # a secondary output: live only if something reads it later
            last[k] = i
    end = len(tracer.op_inputs)
    delta = [0] * (end + 2)
    for k, start in first.items():
        if k not in last:
            continue
        stop = end if (k == input_key or k in output_keys) else last[k]
        size = tracer.nbytes.get(k, 0)
        if k == input_key:
            start = 0
        delta[start] += size
        delta[stop + 1] -= size
    peak = live = 0
    for d in delta:
        live += d
        peak = max(peak, live)
    return peak


def _swaps(modules: list[nn.Module], meta: bool, dtype: torch.dtype | None) -> list[tuple[dict, str, Any]]:
    """What to put in the modules' parameter and buffer dictionaries for the traced pass.

    On the meta device every real parameter and buffer gets a meta stand-in (same shape and
    requires_grad; ``dtype`` for floating ones when given); one stand-in per tensor, so tied weights
    stay tied. A model already on meta keeps its own tensors. Batch norm's ``num_batches_tracked``
    becomes ``None`` either way, so its counter is not incremented (nor read with ``float()``, which
    meta tensors cannot answer when ``momentum=None``); on a real device that is all that changes.

    Returns:
        ``(dictionary, key, stand-in)`` triples; :func:`_apply` swaps them in and back.
    """
    stand_ins: dict[int, torch.Tensor] = {}
    swaps = []
    for module in modules:
        for store in (module._parameters, module._buffers):
            for key, t in store.items():
                if t is None:
                    continue
                if key == "num_batches_tracked" and isinstance(module, nn.modules.batchnorm._NormBase):
                    swaps.append((store, key, None))
                    continue
                if not meta:
                    continue
                if type(t) not in _PLAIN and isinstance(t, nn.parameter.UninitializedParameter):
                    raise ValueError(f"parameter {key!r} of {type(module).__name__} is not initialised yet (a lazy "
                                     f"module): build the model first, e.g. run it once or give convkit.Sequential "
                                     f"an input_shape")
                d = dtype if (dtype is not None and t.is_floating_point()) else t.dtype
                if t.device.type == "meta" and d == t.dtype:
                    continue
                new = stand_ins.get(id(t))
                if new is None:
                    # a plain tensor, as torch.func.functional_call puts in: cheaper than a Parameter
                    new = stand_ins[id(t)] = torch.empty(t.shape, dtype=d, device=_META,
                                                         requires_grad=t.requires_grad)
                swaps.append((store, key, new))
    return swaps


_PLAIN = (nn.Parameter, torch.Tensor)  # not lazy: skips the slower isinstance of Parameter's metaclass
_META = torch.device("meta")


def _apply(swaps: list[tuple[dict, str, Any]]) -> list[tuple[dict, str, Any]]:
    """Put each stand-in in place; returns the swaps that put the originals back."""
    undo = []
    for store, key, value in swaps:
        undo.append((store, key, store[key]))
        store[key] = value
    return undo


def _set_training(module: nn.Module, mode: bool) -> None:
    # what ``module.training = mode`` does, without Module.__setattr__'s checks (two calls per module)
    if type(module).__setattr__ is nn.Module.__setattr__:
        module.__dict__["training"] = mode
    else:
        module.training = mode


@dataclass
class PreparedTrace:
    """What a pass needs of the model, found once and shared by the passes of one summary (see `prepare_trace`)."""

    model: nn.Module
    key: tuple
    names: dict[int, str]
    modules: list[nn.Module]
    owners: dict[int, nn.Module]
    dtype_in: torch.dtype
    swaps: list[tuple[dict, str, Any]]


def prepare_trace(model: nn.Module, device: str | torch.device = "meta", dtype: torch.dtype | None = None,
                  names: dict[int, str] | None = None) -> PreparedTrace:
    """The module names, parameter owners, input dtype and meta stand-ins of ``model``, for `trace_model`.

    Args:
        model, device, dtype, names: as for `trace_model`.

    Returns:
        A `PreparedTrace`; valid while the model's modules and parameters stay as they are.

    Raises:
        ValueError: on a real device, a ``dtype`` other than the model's; a lazy module not built yet.

    Example:
        >>> import torchvision
        >>> model = torchvision.models.resnet18()
        >>> prepared = prepare_trace(model)
        >>> trace_model(model, (3, 224, 224), prepared=prepared).macs_total // 2
        1814073344
    """
    device = torch.device(device)
    meta = device.type == "meta"
    named = list(model.named_modules(remove_duplicate=False))
    if names is None:
        names = {}
        for n, m in named:
            names.setdefault(id(m), n)
    modules = list({id(m): m for _, m in named}.values())
    params = [p for m in modules for p in m._parameters.values() if p is not None]
    owners: dict[int, nn.Module] = {}
    for m in modules:
        for p in m._parameters.values():
            if p is not None:
                owners.setdefault(id(p), m)
    if dtype is None:
        dtype_in = next((p.dtype for p in params if p.is_floating_point()), torch.get_default_dtype())
    else:
        dtype_in = dtype
    if not meta and dtype is not None and any(p.is_floating_point() and p.dtype != dtype for p in params):
        raise ValueError(f"dtype={dtype} differs from the model's: on a real device convkit runs the model "
                         f"as it is; use the meta device to change the dtype")
    return PreparedTrace(model, (meta, dtype), names, modules, owners, dtype_in, _swaps(modules, meta, dtype))


def trace_model(
    model: nn.Module,
    input_size: tuple[int, ...],
    batch: int = 2,
    dtype: torch.dtype | None = None,
    device: str | torch.device = "meta",
    names: dict[int, str] | None = None,
    training: bool | None = None,
    saved_tensors: bool = True,
    layers: bool = True,
    prepared: PreparedTrace | None = None,
    call: Any = None,
) -> Trace:
    """Run ``model`` once on a batch of ``batch`` inputs of per-sample shape ``input_size``, instrumented.

    Args:
        model: any ``nn.Module``; left unchanged (parameters, buffers, hooks, train/eval flags).
        input_size: per-sample input shape, e.g. ``(3, 224, 224)``.
        batch: samples in the traced batch (2: batch norm in training mode needs more than one value
            per channel; per-sample figures are divided by it).
        dtype: dtype of the input and of floating parameters; ``None`` keeps the model's (on a real
            device it must be the model's own).
        device: ``"meta"`` (default, no memory, no compute), or a real device for a model whose
            forward needs values; then the real parameters are used and buffers are restored after.
        names: module id -> qualified name; computed when ``None``.
        training: ``None`` (default) runs each module in the mode it is in (an eval-mode GoogLeNet skips its
            auxiliary heads); ``True`` or ``False`` set every module's mode for the pass (restored after).
        saved_tensors: measure what autograd saves for backward (``saved_tensors_hooks``); ``False`` leaves
            ``saved_bytes`` at 0 and runs without autograd (and without ``nn.MultiheadAttention``'s inference
            fast path, so that attention takes the operators training takes).
        layers: the per-operator bookkeeping (output shapes, multiply-adds, receptive fields, liveness);
            ``False`` records only module calls and their saved bytes, for a second pass that needs no more.
        prepared: `prepare_trace`'s result for this model, device and dtype, to share between passes.
        call: the batch tensor -> the model's positional arguments (a detector's list of images and targets);
            ``None``: the batch itself.

    Returns:
        A :class:`Trace`.

    Raises:
        ShapeError: a layer cannot take its input (named, with its input shape and the formula).
        MetaUnsupportedError: the forward needs real values on the meta device.

    Example:
        >>> import torchvision
        >>> trace = trace_model(torchvision.models.resnet18(), (3, 224, 224))
        >>> trace.macs_total // trace.batch
        1814073344
    """
    device = torch.device(device)
    meta = device.type == "meta"
    if prepared is None or prepared.model is not model or prepared.key != (meta, dtype):
        prepared = prepare_trace(model, device, dtype, names)
    names, modules, owners, dtype_in, swaps = (prepared.names, prepared.modules, prepared.owners,
                                               prepared.dtype_in, prepared.swaps)

    frames: list[Frame] = []
    saved: dict[int, int] = {}
    seen_warnings: list[str] = []
    finish_order = itertools.count()
    tensor = torch.Tensor

    def pre_hook(module, args):
        stack = tracer.stack
        if not layers:
            frame = Frame(len(frames), "", module, len(stack), stack[-1].index if stack else None, [])
            frames.append(frame)
            stack.append(frame)
            return
        firsts = args if (len(args) == 1 and isinstance(args[0], tensor)) else _tensors(args)
        shapes = [tuple(t.shape) for t in firsts]
        name = names.get(id(module))
        frame = Frame(len(frames), f"<{type(module).__name__}>" if name is None else name, module, len(stack),
                      stack[-1].index if stack else None, shapes)
        tracer.last_fn = None
        frames.append(frame)
        stack.append(frame)
        if shapes:
            frame.geometry = check_module(module, frame.name, shapes[0][1:])

    def post_hook(module, args, output):
        stack = tracer.stack
        if not stack or stack[-1].module is not module:
            return  # a module called outside the traced forward
        frame = stack.pop()
        frame.finished = next(finish_order)
        if not layers:
            return
        outs = [output] if isinstance(output, tensor) else _tensors(output)
        if outs:
            frame.output_shapes = [tuple(t.shape) for t in outs]
            numel = [t.numel() for t in outs]
            sizes = [n * t.element_size() for n, t in zip(numel, outs)]
            frame.output_numel = sum(numel)
            frame.output_bytes = sum(sizes)
            frame.outputs = tuple((_key(t), n, b) for t, n, b in zip(outs, numel, sizes))
            frame.output_dtype = outs[0].dtype
            if isinstance(module, nn.Linear) and args and isinstance(args[0], tensor):
                # over the channels of a channels-last map (ConvNeXt, Swin): a 1x1 convolution
                rf = tracer.rf.get(id(args[0]))
                if (rf is not None and rf[6] and -1 not in rf[8] and outs[0].shape[:-1] == args[0].shape[:-1]):
                    tracer.rf[id(outs[0])] = rf
            frame.rf = tracer.rf.get(id(outs[0]))

    def pack(t: torch.Tensor):
        k = tracer.keys.get(id(t))
        if k is None:
            k = t.untyped_storage()._cdata
            if id(t) in state_ids:
                tracer.excluded.add(k)
        if k not in tracer.excluded and k != input_key and k not in saved:
            size = saved[k] = t.untyped_storage().nbytes()
            if tracer.stack:
                tracer.stack[-1].saved_bytes += size
        return t

    modes = [(m, m.training) for m in modules]
    buffers = {} if meta else {n: b.detach().clone() for n, b in model.named_buffers() if b is not None}
    undo: list = []
    try:
        with ExitStack() as stack:
            undo = _apply(swaps)
            state = [t for m in modules for store in (m._parameters, m._buffers) for t in store.values()
                     if t is not None]
            state_ids = {id(t) for t in state}
            # stand-ins swapped in for the parameters: their owners by the stand-in's id
            owner_ids = {id(new): owners[id(old)] for (_, _, new), (_, _, old) in zip(swaps, undo)
                         if new is not None and id(old) in owners}
            owners.update(owner_ids)
            tracer = _Tracer(fast=meta, state_ids=state_ids, batch=batch, owners=owners, frames=frames,
                             names=names, layers=layers)
            if not layers:  # no operator reads them into ``excluded``: every parameter and buffer storage now
                tracer.excluded.update(_key(t) for t in state)
            if meta:
                x = torch.empty((batch, *input_size), dtype=dtype_in, device="meta")
            else:
                x = torch.zeros((batch, *input_size), dtype=dtype_in, device=device)
            tracer.rf[id(x)] = R.INPUT
            tracer.derived.add(id(x))
            tracer.alive.append(x)
            input_key = tracer.keys[id(x)] = _key(x)
            tracer.nbytes[input_key] = x.untyped_storage().nbytes()

            caught = stack.enter_context(warnings.catch_warnings(record=True))
            warnings.simplefilter("always", ShapeWarning)
            if saved_tensors:
                stack.enter_context(torch.enable_grad())
                stack.enter_context(torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t))
            else:  # no graph to record; attention keeps the path training takes, not inference's fused one
                stack.enter_context(torch.no_grad())
                fastpath = torch.backends.mha.get_fastpath_enabled()
                torch.backends.mha.set_fastpath_enabled(False)
                stack.callback(torch.backends.mha.set_fastpath_enabled, fastpath)
            handles = [nn.modules.module.register_module_forward_pre_hook(pre_hook),
                       nn.modules.module.register_module_forward_hook(post_hook)]
            for h in handles:
                stack.callback(h.remove)
            if training is not None:
                for m in modules:
                    _set_training(m, training)
            if meta:
                torch.nn.functional.scaled_dot_product_attention = _fused_attention
                stack.callback(setattr, torch.nn.functional, "scaled_dot_product_attention", _SDPA)
            try:
                with tracer:
                    output = model(x) if call is None else model(*call(x))
            except ShapeError:
                raise
            except Exception as err:  # torch words shape errors in many ways: keep its words, add ours
                raise _wrap(err, tracer.stack) from err
            for w in caught:
                if issubclass(w.category, ShapeWarning):
                    seen_warnings.append(str(w.message))
                else:  # not ours to swallow
                    warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    finally:
        _apply(undo)
        for m, mode in modes:
            _set_training(m, mode)
        if buffers:
            with torch.no_grad():
                for n, b in model.named_buffers():
                    if n in buffers:
                        b.copy_(buffers[n])
    output_keys = {_key(t) for t in _tensors(output)}
    return Trace(
        batch=batch,
        frames=frames,
        macs_total=sum(f.macs for f in frames) + tracer.macs_outside,
        saved_bytes=sum(saved.values()),
        input_bytes=x.numel() * x.element_size(),
        peak_live_bytes=_peak_live(tracer, input_key, output_keys),
        warnings=seen_warnings,
        input_key=input_key,
    )


def fit_error(model: nn.Module, input_shape: Sequence[int], training: bool | None = None) -> ShapeError | None:
    """Why ``model`` cannot take inputs of per-sample shape ``input_shape``, found by one pass on the meta device.

    Milliseconds, before any real work, where the first real batch would end in a torch traceback.

    Args:
        model: any ``nn.Module``; left unchanged.
        input_shape: per-sample input shape, e.g. ``(1, 28, 28)``.
        training: as for `trace_model` (``True``: as training runs it, auxiliary heads included).

    Returns:
        The `ShapeError` naming the layer, its input shape and the formula; ``None`` when the model fits, or when
        its forward needs real values (the meta device cannot tell; the first real batch will).

    Example:
        >>> import convkit
        >>> print(fit_error(convkit.create_model("lenet5"), (1, 32, 32)))
        None
        >>> fit_error(convkit.create_model("lenet5"), (1, 8, 8)) is not None
        True
    """
    try:
        trace_model(model, tuple(input_shape), training=training)
    except MetaUnsupportedError:
        return None
    except ShapeError as err:
        return err
    return None


def _wrap(err: Exception, stack: list[Frame]) -> Exception:
    text = f"{type(err).__name__}: {err}"
    meta_words = ("meta tensor", "on meta", "meta device", "data-dependent", "item()")
    if isinstance(err, NotImplementedError) or any(w in str(err) for w in meta_words):
        where = f" of {stack[-1].name or type(stack[-1].module).__name__!r}" if stack else ""
        return MetaUnsupportedError(
            f"the forward{where} needs real values, which the meta device does not have ({text}); "
            f"run the summary with device='cpu' instead"
        )
    if not stack:
        return ShapeError(text, "(model)")
    frame = stack[-1]
    shape = frame.input_shapes[0][1:] if frame.input_shapes else None
    return ShapeError(text, frame.name or type(frame.module).__name__, shape)
