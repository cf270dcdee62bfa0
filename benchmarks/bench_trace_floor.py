"""Where a summary's time goes, and how fast a shape pass could be: the floors under ``convkit.summary``.

Issue 11 asks for 10x torchinfo on the median of torchvision's classifiers, "and if the meta-device trace
cannot get there, find out what can". For each model this times, alternately in one run (median of
``--repeat`` rounds after a warm-up, wall-clock time, 2 threads):

* ``torchinfo``: ``torchinfo.summary`` on the eval-mode model at batch 1 (what bench_summary.py compares);
* ``eager``: a bare eager CPU forward at batch 1 under ``no_grad``, torchinfo's own floor;
* ``summary_train`` / ``summary_eval``: ``convkit.summary`` of the model in training mode (one pass) and
  in eval mode (an eval pass for the rows and a lighter training-mode pass for saved tensors);
* ``trace``: ``trace_model`` alone (one pass with all bookkeeping, no rows);
* ``meta_grad`` / ``meta_nograd``: the bare forward on meta through convkit's shape rules
  (``FastMetaMode``, a ``TorchDispatchMode``), with and without autograd: what any dispatch-level trace pays
  before it records anything;
* ``function_level``: a forward in which a ``TorchFunctionMode`` answers the Python-level calls
  (``F.conv2d``, ``F.batch_norm``, ``torch.relu_``, ``+=`` ...) with a meta tensor of the right shape
  before they reach the dispatcher or autograd; calls it has no rule for run normally on meta (their count is
  ``fallbacks``). A prototype for timing only: it records nothing.

Usage::

    python benchmarks/bench_trace_floor.py
    python benchmarks/bench_trace_floor.py --models resnet50 mobilenet_v3_large --repeat 7 --out floor.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
import warnings

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

DEFAULT_MODELS = ["alexnet", "vgg16", "resnet18", "resnet50", "densenet121", "mobilenet_v2", "mobilenet_v3_large",
                  "efficientnet_b0", "regnet_y_400mf", "shufflenet_v2_x1_0", "squeezenet1_1", "mnasnet1_0"]
_META = torch.device("meta")


def _pair(v):
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


def _window(size, k, s, p, d=1, ceil=False):
    span = size + 2 * p - d * (k - 1) - 1
    out = (-(-span // s) if ceil else span // s) + 1
    if ceil and (out - 1) * s >= size + p:
        out -= 1
    return out


def _conv(x, w, b=None, stride=1, padding=0, dilation=1, groups=1):
    if isinstance(padding, str) or x.dim() != 4:
        return NotImplemented
    s, p, d = _pair(stride), _pair(padding), _pair(dilation)
    h, wd = (_window(x.shape[2 + i], w.shape[2 + i], s[i], p[i], d[i]) for i in range(2))
    return torch.empty((x.shape[0], w.shape[0], h, wd), dtype=x.dtype, device=_META)


def _pool(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False, **_):
    k = _pair(kernel_size)
    s = _pair(stride) if stride not in (None, []) else k
    p, d = _pair(padding), _pair(dilation)
    h, w = (_window(x.shape[2 + i], k[i], s[i], p[i], d[i], ceil_mode) for i in range(2))
    out = torch.empty((*x.shape[:2], h, w), dtype=x.dtype, device=_META)
    return (out, torch.empty(out.shape, dtype=torch.int64, device=_META)) if return_indices else out


def _avg_pool(x, kernel_size, stride=None, padding=0, ceil_mode=False, *_, **__):
    return _pool(x, kernel_size, stride, padding, 1, ceil_mode)


def _adaptive(x, output_size, *_, **__):
    o = _pair(output_size)
    o = tuple(x.shape[2 + i] if v is None else v for i, v in enumerate(o))
    return torch.empty((*x.shape[:2], *o), dtype=x.dtype, device=_META)


def _same(x, *_, **__):
    return torch.empty(x.shape, dtype=x.dtype, device=_META)


def _inplace(x, *_, **__):
    return x


def _binary(a, b, *_, **__):
    if not isinstance(a, torch.Tensor) or not isinstance(b, torch.Tensor):
        return NotImplemented
    return torch.empty(torch.broadcast_shapes(a.shape, b.shape), dtype=a.dtype, device=_META)


def _flatten(x, start_dim=0, end_dim=-1):
    n = x.dim()
    start, end = start_dim % n, end_dim % n
    inner = 1
    for v in x.shape[start:end + 1]:
        inner *= v
    return torch.empty((*x.shape[:start], inner, *x.shape[end + 1:]), dtype=x.dtype, device=_META)


def _linear(x, w, b=None):
    return torch.empty((*x.shape[:-1], w.shape[0]), dtype=x.dtype, device=_META)


def _cat(tensors, dim=0):
    first = tensors[0]
    dim %= first.dim()
    shape = list(first.shape)
    shape[dim] = sum(t.shape[dim] for t in tensors)
    return torch.empty(shape, dtype=first.dtype, device=_META)


def _dropout(x, p=0.5, training=True, inplace=False):
    return x if inplace else torch.empty(x.shape, dtype=x.dtype, device=_META)


RULES = {
    F.conv2d: _conv, torch.conv2d: _conv, F.batch_norm: _same, torch.batch_norm: _same,
    F.relu: _same, torch.relu: _same, torch.relu_: _inplace, F.relu6: _same, F.hardtanh: _same,
    torch._C._nn.hardtanh_: _inplace, F.hardswish: _same, torch._C._nn.hardswish: _same,
    torch._C._nn.hardswish_: _inplace, F.hardsigmoid: _same, torch._C._nn.hardsigmoid: _same,
    torch._C._nn.hardsigmoid_: _inplace, F.silu: _same, torch._C._nn.silu: _same, torch._C._nn.silu_: _inplace,
    torch.sigmoid: _same, torch.Tensor.sigmoid: _same, F.sigmoid: _same,
    torch.Tensor.__add__: _binary, torch.Tensor.__iadd__: _inplace, torch.Tensor.add_: _inplace,
    torch.add: _binary, torch.Tensor.__mul__: _binary, torch.mul: _binary, torch.Tensor.mul: _binary,
    F.max_pool2d: _pool, F._max_pool2d: _pool, torch.max_pool2d: _pool, F.avg_pool2d: _avg_pool,
    torch._C._nn.avg_pool2d: _avg_pool, F.adaptive_avg_pool2d: _adaptive, torch._C._nn.adaptive_avg_pool2d: _adaptive,
    torch.flatten: _flatten, torch.Tensor.flatten: _flatten, F.linear: _linear, torch._C._nn.linear: _linear,
    torch.cat: _cat, F.dropout: _dropout, torch.dropout: _dropout,
}
# questions about a tensor: answered by torch itself, not counted as fallbacks
_QUERIES = {torch.Tensor.dim, torch.Tensor.size, torch.Tensor.shape.__get__, torch.Tensor.__len__,
            torch.Tensor.numel, torch.Tensor.dtype.__get__, torch.Tensor.device.__get__}


class FunctionLevelShapes(TorchFunctionMode):
    """Answer known Python-level calls with meta tensors of the right shape; count the others."""

    def __init__(self):
        super().__init__()
        self.fallbacks: dict[str, int] = {}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        rule = RULES.get(func)
        if rule is not None:
            out = rule(*args, **kwargs)
            if out is not NotImplemented:
                return out
        if func not in _QUERIES:
            name = getattr(func, "__qualname__", None) or getattr(func, "__name__", str(func))
            self.fallbacks[name] = self.fallbacks.get(name, 0) + 1
        return func(*args, **kwargs)


def _cpu_median(fns: dict, repeat: int) -> dict[str, float]:
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeat):
        for k, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - start)
    return {k: statistics.median(v) for k, v in times.items()}


def bench(name: str, repeat: int) -> dict:
    import torchinfo
    import torchvision

    from convkit.inspect import summary
    from convkit.inspect.fastmeta import FastMetaMode
    from convkit.inspect.trace import trace_model

    size = (3, 299, 299) if name.startswith("inception") else (3, 224, 224)
    model = torchvision.models.get_model(name, weights=None)
    meta = torchvision.models.get_model(name, weights=None).to("meta")
    x_meta = torch.empty((2, *size), device="meta")
    x_cpu = torch.randn(1, *size)

    def set_mode(m, training):
        m.train(training)
        return m

    def shapes(grad: bool):
        def run():
            with torch.set_grad_enabled(grad), FastMetaMode():
                meta(x_meta)
        return run

    probe = FunctionLevelShapes()

    def function_level():
        with torch.no_grad(), FunctionLevelShapes():
            meta(x_meta)

    def eager():
        with torch.no_grad():
            model(x_cpu)

    fns = {
        "torchinfo": lambda: torchinfo.summary(set_mode(model, False), input_size=(1, *size), verbose=0),
        "eager": lambda: eager() if not set_mode(model, False).training else None,
        "summary_train": lambda: summary(set_mode(model, True), size),
        "summary_eval": lambda: summary(set_mode(model, False), size),
        "trace": lambda: trace_model(set_mode(model, True), size),
        "meta_grad": shapes(True),
        "meta_nograd": shapes(False),
        "function_level": function_level,
    }
    with torch.no_grad(), probe:
        meta(x_meta)
    seconds = _cpu_median(fns, repeat)
    ti = seconds["torchinfo"]
    return {
        "ms": {k: round(v * 1e3, 2) for k, v in seconds.items()},
        "torchinfo_over": {k: round(ti / v, 2) for k, v in seconds.items() if k != "torchinfo"},
        "fallbacks": probe.fallbacks,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=DEFAULT_MODELS)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=None, help="also write the JSON here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")
    load_before = os.getloadavg()[0]
    results = {name: bench(name, args.repeat) for name in args.models}
    over = {k: statistics.median(r["torchinfo_over"][k] for r in results.values())
            for k in next(iter(results.values()))["torchinfo_over"]}
    report = {"torch": torch.__version__, "threads": args.threads, "repeat": args.repeat,
              "load_before": round(load_before, 2), "load_after": round(os.getloadavg()[0], 2),
              "median_torchinfo_over": {k: round(v, 2) for k, v in over.items()}, "models": results}
    text = json.dumps(report, indent=1)
    print(text)
    if args.out:
        from convkit.utils import atomic_write_text
        atomic_write_text(args.out, text + "\n")


if __name__ == "__main__":
    main()
