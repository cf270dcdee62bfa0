"""Output shapes of the aten operators CNNs use, computed in a few microseconds.

Why this exists: on the meta device torch computes most output shapes with Python "meta kernels"
(``torch._meta_registrations``, ``torch._refs``). They cost 0.1-4 ms per call (batch norm is the
slowest), and the first one imports ``torch._dynamo`` (about 2 s). A ResNet-152 forward on meta then
takes close to a second. Inside a ``TorchDispatchMode`` the rules below answer those operators
directly with ``torch.empty(..., device="meta")``; any operator without a rule, or any call a rule
does not accept, goes to torch's own kernel, which also raises torch's own error message.

The rules sit below autograd, so autograd still records the graph and saves the tensors its formulas
name: what :mod:`convkit.inspect.trace` measures with ``saved_tensors_hooks`` is unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from convkit.layers.shapes import ShapeError, transposed_output_size, window_output_size

pool_output_size = window_output_size  # the name this module exported before the arithmetic moved to shapes

__all__ = ["FastMetaMode", "meta_rule", "pool_output_size"]

aten = torch.ops.aten
_META = torch.device("meta")
_FLOATS = {torch.float16, torch.bfloat16, torch.float32, torch.float64}
NOT_HANDLED: Any = NotImplemented

# pointwise operators whose result is bool (or otherwise not the input's dtype): left to torch
_NOT_SAME_DTYPE = {
    "eq", "ne", "lt", "le", "gt", "ge", "logical_and", "logical_or", "logical_xor", "logical_not", "isnan",
    "isinf", "isfinite", "isposinf", "isneginf", "signbit", "bitwise_and", "bitwise_or", "bitwise_xor",
    "bitwise_not", "where", "_to_copy", "type_as",
}


def _empty(shape: Sequence[int], dtype: torch.dtype, like: torch.Tensor | None = None) -> torch.Tensor:
    # Keep channels-last layouts channels-last, as torch's kernels do, so that later views behave alike.
    if (like is None or len(shape) != 4 or like.is_contiguous()
            or not like.is_contiguous(memory_format=torch.channels_last)):
        return torch.empty(shape, dtype=dtype, device=_META)
    return torch.empty(shape, dtype=dtype, device=_META, memory_format=torch.channels_last)


def _ints(value: Any, n: int, default: int | None = None) -> list[int] | None:
    """An int or a list of ints broadcast to ``n`` entries (aten accepts both)."""
    if value is None or (isinstance(value, (list, tuple)) and len(value) == 0):
        return None if default is None else [default] * n
    if isinstance(value, int):
        return [value] * n
    value = [int(v) for v in value]
    if len(value) == 1:
        return value * n
    return value if len(value) == n else None


def _conv(args, kwargs):
    x, w, _, stride, padding, dilation, transposed, output_padding, groups = args
    n = x.dim() - 2
    if n < 1 or w.dim() != x.dim():
        return NOT_HANDLED
    if n != 2 or len(stride) != 2 or len(padding) != 2 or len(dilation) != 2:  # the common 2-D call is as is
        stride, padding, dilation = _ints(stride, n, 1), _ints(padding, n, 0), _ints(dilation, n, 1)
        output_padding = _ints(output_padding, n, 0)
        if None in (stride, padding, dilation, output_padding):
            return NOT_HANDLED
    kernel = w.shape[2:]
    if transposed:
        output_padding = _ints(output_padding, n, 0)
        if x.shape[1] != w.shape[0]:
            return NOT_HANDLED
        channels = w.shape[1] * groups
        try:
            sizes = [transposed_output_size(i, k, s, p, op, d)
                     for i, k, s, p, d, op in zip(x.shape[2:], kernel, stride, padding, dilation, output_padding)]
        except ShapeError:
            return NOT_HANDLED  # torch raises its own error
    else:
        if x.shape[1] != w.shape[1] * groups:
            return NOT_HANDLED
        channels = w.shape[0]
        sizes = [window_output_size(i, k, s, p, d)
                 for i, k, s, p, d in zip(x.shape[2:], kernel, stride, padding, dilation)]
    if min(sizes) < 1:
        return NOT_HANDLED
    return _empty((x.shape[0], channels, *sizes), x.dtype, x)


def _pool(n: int, with_indices: bool, has_dilation: bool):
    def rule(args, kwargs):
        x = args[0]
        if x.dim() < n + 1:
            return NOT_HANDLED

        def get(i, key, default):
            return args[i] if len(args) > i else kwargs.get(key, default)

        kernel = _ints(get(1, "kernel_size", None), n)
        stride = _ints(get(2, "stride", None), n) or kernel
        padding = _ints(get(3, "padding", 0), n, 0)
        if has_dilation:
            dilation, ceil_mode = _ints(get(4, "dilation", 1), n, 1), bool(get(5, "ceil_mode", False))
        else:
            dilation, ceil_mode = [1] * n, bool(get(4, "ceil_mode", False))
        if None in (kernel, stride, padding, dilation):
            return NOT_HANDLED
        sizes = [window_output_size(i, k, s, p, d, ceil_mode)
                 for i, k, s, p, d in zip(x.shape[-n:], kernel, stride, padding, dilation)]
        if min(sizes) < 1:
            return NOT_HANDLED
        shape = (*x.shape[:-n], *sizes)
        out = _empty(shape, x.dtype, x)
        return (out, _empty(shape, torch.int64, x)) if with_indices else out

    return rule


def _adaptive(n: int, with_indices: bool):
    def rule(args, kwargs):
        x = args[0]
        size = _ints(args[1], n)
        if size is None or x.dim() < n + 1:
            return NOT_HANDLED
        shape = (*x.shape[:-n], *(s if s is not None else i for s, i in zip(size, x.shape[-n:])))
        out = _empty(shape, x.dtype, x)
        return (out, _empty(shape, torch.int64, x)) if with_indices else out

    return rule


def _batch_norm(args, kwargs):
    x, training = args[0], args[5]
    channels = x.shape[1] if x.dim() > 1 else 0
    # torch's meta kernel gives float32 statistics of length C; CPU gives length 0 in eval mode
    stats = channels if training else 0
    stat_dtype = torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype
    return _empty(x.shape, x.dtype, x), _empty((stats,), stat_dtype), _empty((stats,), stat_dtype)


def _broadcast(shapes: list[torch.Size]) -> list[int] | None:
    ndim = max(len(s) for s in shapes)
    out = [1] * ndim
    for shape in shapes:
        for i, size in enumerate(shape, ndim - len(shape)):
            if size != 1:
                if out[i] != 1 and out[i] != size:
                    return None
                out[i] = size
    return out


def _pointwise(args, kwargs):
    tensors = [a for a in args if isinstance(a, torch.Tensor)]
    tensors += [v for v in kwargs.values() if isinstance(v, torch.Tensor)]
    if not tensors or "dtype" in kwargs:
        return NOT_HANDLED
    dtype = tensors[0].dtype
    if dtype not in _FLOATS:
        return NOT_HANDLED
    for t in tensors[1:]:
        if t.dtype != dtype:
            return NOT_HANDLED
    first = tensors[0]
    if len(tensors) == 1 or all(t.shape == first.shape for t in tensors):
        return _empty(first.shape, dtype, first)
    shape = _broadcast([t.shape for t in tensors])
    return NOT_HANDLED if shape is None else _empty(shape, dtype)


def _in_place(args, kwargs):
    # the op writes into its first argument and returns it; on meta there is nothing to write
    return args[0]


def _like(args, kwargs):
    x = args[0]
    device = kwargs.get("device")
    if device is not None and torch.device(device) != _META:
        return NOT_HANDLED
    return _empty(x.shape, kwargs.get("dtype") or x.dtype, x)


def _mm(args, kwargs):
    a, b = args[-2], args[-1]
    if a.dim() != 2 or b.dim() != 2 or a.shape[1] != b.shape[0] or a.dtype != b.dtype:
        return NOT_HANDLED
    return _empty((a.shape[0], b.shape[1]), a.dtype)


def _addmm(args, kwargs):
    return _mm(args[1:3], kwargs)


def _bmm(args, kwargs):
    a, b = args[0], args[1]
    if a.dim() != 3 or b.dim() != 3 or a.shape[0] != b.shape[0] or a.shape[2] != b.shape[1]:
        return NOT_HANDLED
    return _empty((a.shape[0], a.shape[1], b.shape[2]), a.dtype)


def _reduce(args, kwargs):
    x = args[0]
    dims = args[1] if len(args) > 1 else kwargs.get("dim")
    keepdim = bool(args[2] if len(args) > 2 else kwargs.get("keepdim", False))
    dtype = (args[3] if len(args) > 3 else kwargs.get("dtype")) or x.dtype
    if dtype not in _FLOATS:
        return NOT_HANDLED
    if dims is None or (isinstance(dims, (list, tuple)) and len(dims) == 0):
        dims = range(x.dim())
    elif isinstance(dims, int):
        dims = [dims]
    dims = {d % max(x.dim(), 1) for d in dims}
    shape = [1 if i in dims else s for i, s in enumerate(x.shape) if keepdim or i not in dims]
    return _empty(shape, dtype)


def _cat(args, kwargs):
    tensors = [t for t in args[0] if not (t.dim() == 1 and t.shape[0] == 0)]  # legacy empty tensors
    dim = args[1] if len(args) > 1 else kwargs.get("dim", 0)
    if not tensors:
        return NOT_HANDLED
    first = tensors[0]
    dim %= first.dim()
    shape = list(first.shape)
    total = 0
    for t in tensors:
        if t.dim() != first.dim() or t.dtype != first.dtype:
            return NOT_HANDLED
        if any(a != b for i, (a, b) in enumerate(zip(t.shape, first.shape)) if i != dim):
            return NOT_HANDLED
        total += t.shape[dim]
    shape[dim] = total
    return _empty(shape, first.dtype, first)


def _pad(args, kwargs):
    x, pad = args[0], list(args[1])
    if len(pad) % 2 or len(pad) // 2 > x.dim():
        return NOT_HANDLED
    shape = list(x.shape)
    for i in range(len(pad) // 2):
        shape[-1 - i] += pad[2 * i] + pad[2 * i + 1]
    if min(shape, default=1) < 0:
        return NOT_HANDLED
    return _empty(shape, x.dtype, x)


def _softmax(args, kwargs):
    x, half_to_float = args[0], bool(args[2]) if len(args) > 2 else False
    return _empty(x.shape, torch.float32 if half_to_float else x.dtype, x)


def _dropout(args, kwargs):
    x = args[0]
    return _empty(x.shape, x.dtype, x), _empty(x.shape, torch.bool, x)


def _norm_stats(x: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    return _empty(shape, torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype)


def _group_norm(args, kwargs):
    x, n, groups = args[0], args[3], args[6]
    return _empty(x.shape, x.dtype, x), _norm_stats(x, (n, groups)), _norm_stats(x, (n, groups))


def _layer_norm(args, kwargs):
    x, normalized = args[0], list(args[1])
    stats = (*x.shape[: x.dim() - len(normalized)], *([1] * len(normalized)))
    return _empty(x.shape, x.dtype, x), _norm_stats(x, stats), _norm_stats(x, stats)


_RULES: dict[Any, Callable] = {
    aten.convolution.default: _conv,
    aten.max_pool2d_with_indices.default: _pool(2, True, True),
    aten.max_pool2d.default: _pool(2, False, True),
    aten.max_pool3d_with_indices.default: _pool(3, True, True),
    aten.avg_pool2d.default: _pool(2, False, False),
    aten.avg_pool3d.default: _pool(3, False, False),
    aten._adaptive_avg_pool2d.default: _adaptive(2, False),
    aten._adaptive_avg_pool3d.default: _adaptive(3, False),
    aten.adaptive_max_pool2d.default: _adaptive(2, True),
    aten.native_batch_norm.default: _batch_norm,
    aten.empty_like.default: _like,
    aten.clone.default: _like,
    aten.mm.default: _mm,
    aten.addmm.default: _addmm,
    aten.bmm.default: _bmm,
    aten.mean.dim: _reduce,
    aten.sum.dim_IntList: _reduce,
    aten.amax.default: _reduce,
    aten.amin.default: _reduce,
    aten.cat.default: _cat,
    aten.constant_pad_nd.default: _pad,
    aten._softmax.default: _softmax,
    aten._log_softmax.default: _softmax,
    aten.native_dropout.default: _dropout,
    aten.native_group_norm.default: _group_norm,
    aten.native_layer_norm.default: _layer_norm,
}
_CACHE: dict[Any, Callable | None] = {}


def meta_rule(func) -> Callable | None:
    """The fast shape rule for an aten overload, or ``None`` when torch's own kernel must run."""
    try:
        return _CACHE[func]
    except KeyError:
        pass
    rule = _RULES.get(func)
    if rule is None:
        schema = func._schema
        tags = func.tags
        first = schema.arguments[0] if schema.arguments else None
        writes_self = (first is not None and first.alias_info is not None and first.alias_info.is_write
                       and len(schema.returns) == 1 and torch.Tag.inplace_view not in tags)
        if writes_self:
            rule = _in_place
        elif (torch.Tag.pointwise in tags and not schema.is_mutable and len(schema.returns) == 1
              and schema.returns[0].alias_info is None and schema.name.split("::")[-1] not in _NOT_SAME_DTYPE):
            rule = _pointwise
    _CACHE[func] = rule
    return rule


def run_fast(func, args, kwargs):
    """Run ``func`` on meta tensors through its fast rule when it has one, else through torch."""
    rule = meta_rule(func)
    if rule is not None:
        out = rule(args, kwargs)
        if out is not NOT_HANDLED:
            return out
    return func(*args, **kwargs)


class FastMetaMode(TorchDispatchMode):
    """A dispatch mode that answers common operators on meta tensors with :func:`meta_rule`.

    Use it around code that only needs shapes (building a model on the meta device, a shape-only
    forward). Every tensor reaching it must be on the meta device.

    Example:
        >>> import torchvision
        >>> with torch.device("meta"), FastMetaMode():
        ...     model = torchvision.models.resnet152()   # initialisers become no-ops
        >>> model.fc.weight.device
        device(type='meta')
    """

    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        # torch wraps __torch_dispatch__ to keep torch.compile out; nothing is compiled here
        return False

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        return run_fast(func, args, kwargs or {})
