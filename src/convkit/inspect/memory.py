"""Memory arithmetic: bytes per dtype, optimizer state, training and inference memory, dense equivalents.

The lectures' rules, made exact:

* weights: every parameter once, in its dtype; buffers (batch-norm running statistics) beside them;
* gradients: one per trainable parameter (the weights' memory "x2 for the backward pass");
* optimizer state per trainable parameter: plain SGD none, SGD with momentum one velocity, Adam
  two moments (so weights + gradients + state are 2x, 3x and 4x the weights);
* activations: what autograd saves in the forward pass for the backward pass, per image, times the
  batch (measured on the meta device, see :mod:`convkit.inspect.trace`), plus the input batch.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import torch

from convkit.utils import format_bytes  # moved there; still importable from here

__all__ = [
    "OPTIMIZER_STATE",
    "bytes_per_element",
    "dense_equivalent",
    "format_bytes",
    "inference_memory",
    "parse_dtype",
    "training_memory",
]

#: Tensors of optimizer state per trainable parameter.
OPTIMIZER_STATE = {
    "sgd": 0,
    "momentum": 1,
    "sgd_momentum": 1,
    "nesterov": 1,
    "rmsprop": 1,
    "adagrad": 1,
    "adam": 2,
    "adamw": 2,
}


def parse_dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    """``"float16"``, ``"fp16"``, ``"half"``, ``torch.float16`` -> ``torch.float16``; ``None`` stays ``None``.

    Raises:
        ValueError: an unknown name or a dtype that is not floating point.
    """
    if dtype is None or isinstance(dtype, torch.dtype):
        result = dtype
    else:
        aliases = {"fp32": "float32", "float": "float32", "fp16": "float16", "half": "float16",
                   "bf16": "bfloat16", "fp64": "float64", "double": "float64"}
        name = aliases.get(str(dtype).lower().removeprefix("torch."), str(dtype).lower().removeprefix("torch."))
        result = getattr(torch, name, None)
        if not isinstance(result, torch.dtype):
            raise ValueError(f"unknown dtype {dtype!r}; use float32, float16, bfloat16 or float64")
    if result is not None and not result.is_floating_point:
        raise ValueError(f"dtype must be floating point, got {result}")
    return result


@functools.cache
def bytes_per_element(dtype: torch.dtype) -> int:
    """4 for float32, 2 for float16/bfloat16, 8 for float64 and int64, 1 for bool."""
    return torch.empty((), dtype=dtype, device="meta").element_size()


def optimizer_state_tensors(optimizer: str) -> int:
    """Tensors of state per trainable parameter: sgd 0, momentum 1, adam 2.

    Raises:
        ValueError: an unknown optimizer name.
    """
    key = str(optimizer).lower().replace("-", "_")
    if key not in OPTIMIZER_STATE:
        raise ValueError(f"unknown optimizer {optimizer!r}; choose one of {', '.join(OPTIMIZER_STATE)}")
    return OPTIMIZER_STATE[key]


def training_memory(param_bytes: int, trainable_bytes: int, buffer_bytes: int, saved_per_image: float,
                    input_per_image: int, batch_size: int, optimizer: str,
                    workspace_per_image: float = 0) -> dict[str, int]:
    """Bytes held during one training step, by kind.

    Returns:
        ``weights`` (all parameters), ``buffers``, ``gradients`` (trainable parameters),
        ``optimizer_state``, ``activations`` (saved for backward, whole batch), ``input`` (the
        batch), ``workspace`` (the largest layer output, whole batch: a temporary that is live while
        the saved tensors are, but is not saved itself, such as a convolution's output before its
        activation) and ``total``.
    """
    parts = {
        "weights": int(param_bytes),
        "buffers": int(buffer_bytes),
        "gradients": int(trainable_bytes),
        "optimizer_state": int(trainable_bytes) * optimizer_state_tensors(optimizer),
        "activations": int(round(saved_per_image * batch_size)),
        "input": int(input_per_image) * batch_size,
        "workspace": int(round(workspace_per_image * batch_size)),
    }
    parts["total"] = sum(parts.values())
    return parts


def inference_memory(param_bytes: int, buffer_bytes: int, peak_live_per_image: float, batch_size: int) -> dict[str, int]:
    """Bytes held during a forward pass without gradients: weights, buffers, and the peak of live activations."""
    parts = {
        "weights": int(param_bytes),
        "buffers": int(buffer_bytes),
        "activations": int(round(peak_live_per_image * batch_size)),
    }
    parts["total"] = sum(parts.values())
    return parts


def dense_equivalent(input_shape: Sequence[int], output_shape: Sequence[int], bias: bool = True) -> int:
    """Parameters of a fully connected layer mapping ``input_shape`` to ``output_shape``.

    What a convolution saves by sharing its weights: a dense layer needs one weight per
    (input value, output value) pair, plus one bias per output value.

    Args:
        input_shape: per-sample input shape, e.g. ``(3, 480, 640)``.
        output_shape: per-sample output shape, e.g. ``(1000,)``.
        bias: count one bias per output value.

    Returns:
        ``in_numel * out_numel (+ out_numel)``.

    Example:
        >>> dense_equivalent((3, 480, 640), (1000,))     # the lectures' Dense(1000) on a 640x480 RGB image
        921601000
    """
    n_in, n_out = math.prod(input_shape), math.prod(output_shape)
    return n_in * n_out + (n_out if bias else 0)


def format_count(n: float) -> str:
    """``138357544`` -> ``'138.4M'``."""
    n = float(n)
    for unit, size in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.1f}{unit}"
    return f"{n:.0f}"
