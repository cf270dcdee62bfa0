"""Weight files as safetensors: weights plus JSON metadata, and the whole training state for exact resumes.

Nothing here pickles or unpickles: a pickle (torch.save's format) runs code when loaded, so a checkpoint
from elsewhere could do anything. Tensors go in a safetensors file, everything else as JSON in its header:
nested state (optimizer, scheduler, RNG states) is flattened into named tensors plus a JSON skeleton that
says where each tensor goes back. A file that is not safetensors is refused after reading 8 bytes of it.

Files of a run folder:
    best.safetensors / last.safetensors: the (EMA, if on) weights + metadata (model spec, class names,
        normalisation, input shape, epoch, metrics); what `load_checkpoint`, evaluate and predict read.
    resume.safetensors: weights, optimizer, scheduler, scaler, EMA, RNG states and the data position.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from convkit.errors import ConvkitError
from convkit.utils import atomic_write

FORMAT = "convkit-checkpoint-1"
_MAX_HEADER = 100 << 20  # safetensors' own limit on the JSON header


class CheckpointError(ValueError, ConvkitError):
    """A checkpoint that cannot be used: not safetensors, not convkit's, or a model that cannot be rebuilt."""


# --- nested state <-> (JSON skeleton, flat tensors) -------------------------------------------------------

def flatten_state(obj, tensors: dict[str, torch.Tensor] | None = None, prefix: str = "s"):
    """Splits nested state (dicts, lists, tuples, numbers, strings, tensors, numpy arrays) into JSON and tensors.

    Args:
        obj: e.g. `optimizer.state_dict()`.
        tensors: the dict that collects the tensors (a new one when None).
        prefix: the name stem of the tensors.

    Returns:
        (skeleton, tensors): a JSON-able skeleton in which each tensor is {"__tensor__": name}.

    Raises:
        TypeError: an object that is neither (a function, a module...).

    Example:
        >>> weight = torch.nn.Parameter(torch.ones(2))
        >>> optimizer = torch.optim.Adam([weight])
        >>> weight.sum().backward()
        >>> optimizer.step()             # Adam's state appears with its first step
        >>> skeleton, tensors = flatten_state(optimizer.state_dict())
        >>> sorted(tensors)
        ['s.state.0.exp_avg', 's.state.0.exp_avg_sq', 's.state.0.step']
        >>> skeleton["param_groups"][0]["betas"]   # a tuple, kept a tuple
        {'__tuple__': [0.9, 0.999]}
        >>> optimizer.load_state_dict(unflatten_state(skeleton, tensors))
    """
    tensors = {} if tensors is None else tensors
    if isinstance(obj, torch.Tensor):
        # clone: safetensors refuses tensors that share storage, and the copy must not change under us
        tensors[prefix] = obj.detach().to("cpu", copy=True).contiguous()
        return {"__tensor__": prefix}, tensors
    if isinstance(obj, np.ndarray):
        tensors[prefix] = torch.from_numpy(obj.astype(np.int64) if obj.dtype.kind in "ui" else obj.copy())
        return {"__ndarray__": prefix, "dtype": obj.dtype.str}, tensors
    if isinstance(obj, np.generic):
        return obj.item(), tensors
    if isinstance(obj, dict):
        if all(isinstance(k, str) and not k.startswith("__") for k in obj):
            return {k: flatten_state(v, tensors, f"{prefix}.{k}")[0] for k, v in obj.items()}, tensors
        # int keys (optimizer state is keyed by parameter index) would become strings in JSON
        return {"__dict__": [[flatten_state(k, tensors, f"{prefix}.k{i}")[0],
                              flatten_state(v, tensors, f"{prefix}.{i}")[0]]
                             for i, (k, v) in enumerate(obj.items())]}, tensors
    if isinstance(obj, tuple):
        return {"__tuple__": [flatten_state(v, tensors, f"{prefix}.{i}")[0] for i, v in enumerate(obj)]}, tensors
    if isinstance(obj, list):
        return [flatten_state(v, tensors, f"{prefix}.{i}")[0] for i, v in enumerate(obj)], tensors
    if obj is None or isinstance(obj, bool | int | float | str):
        return obj, tensors
    raise TypeError(f"cannot store {type(obj).__name__} at {prefix} in a checkpoint (tensors, numbers, strings, "
                    "lists and dicts only)")


def unflatten_state(skeleton, tensors: dict[str, torch.Tensor]):
    """Inverse of `flatten_state`."""
    if isinstance(skeleton, dict):
        if "__tensor__" in skeleton:
            return tensors[skeleton["__tensor__"]]
        if "__ndarray__" in skeleton:
            return tensors[skeleton["__ndarray__"]].numpy().astype(np.dtype(skeleton["dtype"]))
        if "__dict__" in skeleton:
            return {_key(unflatten_state(k, tensors)): unflatten_state(v, tensors) for k, v in skeleton["__dict__"]}
        if "__tuple__" in skeleton:
            return tuple(unflatten_state(v, tensors) for v in skeleton["__tuple__"])
        return {k: unflatten_state(v, tensors) for k, v in skeleton.items()}
    if isinstance(skeleton, list):
        return [unflatten_state(v, tensors) for v in skeleton]
    return skeleton


def _key(k):
    return tuple(k) if isinstance(k, list) else k


# --- files -------------------------------------------------------------------------------------------------

def read_header(path: str | os.PathLike) -> dict:
    """The JSON header of a safetensors file, after checking that the file is one; reads no tensor data.

    A safetensors file starts with an 8-byte little-endian header length N, then N bytes of JSON (an
    object), then the tensor bytes. Anything else (a torch.save pickle or zip, a text file) is refused.

    Raises:
        CheckpointError: the file is not safetensors; the message names it and says what was found.
        FileNotFoundError: no such file.
    """
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        n = struct.unpack("<Q", head)[0] if len(head) == 8 else -1
        text = f.read(n) if 2 <= n <= min(_MAX_HEADER, size - 8) else b""
    try:
        header = json.loads(text.decode("utf-8")) if text[:1] == b"{" else None
    except (UnicodeDecodeError, json.JSONDecodeError):
        header = None
    if not isinstance(header, dict):
        kind = ("a pickle or zip file (torch.save's format)" if head[:1] == b"\x80" or head[:2] == b"PK"
                else "not a safetensors file")
        raise CheckpointError(f"{path}: {kind}; convkit loads only .safetensors checkpoints and never unpickles "
                              "files, which can run arbitrary code. Convert a trusted .pt file with "
                              "safetensors.torch.save_file(torch.load(f, weights_only=True), 'model.safetensors')")
    return header


def save_tensors(path: str | os.PathLike, tensors: dict[str, torch.Tensor], meta: dict) -> Path:
    """Writes tensors and JSON metadata to a safetensors file, atomically.

    Example:
        >>> save_tensors("w.safetensors", torch.nn.Linear(2, 1).state_dict(), {"epoch": 3})
        PosixPath('w.safetensors')
        >>> tensors, meta = load_tensors("w.safetensors")
        >>> sorted(tensors), meta
        (['bias', 'weight'], {'epoch': 3})
    """
    tensors = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in tensors.items()}
    header = {"format": "pt", "convkit": json.dumps(meta, allow_nan=True)}
    return atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=header))


def load_tensors(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict]:
    """Reads a safetensors file written by `save_tensors`: (tensors on CPU, metadata dict).

    Raises:
        CheckpointError: not a safetensors file.
    """
    meta = read_meta(path)
    return load_file(str(path)), meta


def read_meta(path: str | os.PathLike) -> dict:
    """The convkit metadata of a safetensors file ({} if it has none), without reading any tensor.

    Raises:
        CheckpointError: not a safetensors file.
    """
    return json.loads(read_header(path).get("__metadata__", {}).get("convkit", "{}"))


def save_state(path: str | os.PathLike, state: dict, meta: dict) -> Path:
    """Writes nested training state (see `flatten_state`) as one safetensors file, atomically."""
    skeleton, tensors = flatten_state(state)
    return save_tensors(path, tensors, {**meta, "format": FORMAT, "state": skeleton})


def load_state(path: str | os.PathLike) -> tuple[dict, dict]:
    """Reads a file written by `save_state`: (state, metadata)."""
    tensors, meta = load_tensors(path)
    if "state" not in meta:
        raise CheckpointError(f"{path}: holds no training state (is it a weights checkpoint? resume from the run "
                              "folder or its resume.safetensors)")
    return unflatten_state(meta.pop("state"), tensors), meta


def find_checkpoint(path_or_run_dir: str | os.PathLike, prefer: str = "best") -> Path:
    """A run folder -> its best.safetensors (else last.safetensors); a file -> itself.

    Raises:
        FileNotFoundError: no such file, or a folder without checkpoints.
    """
    path = Path(path_or_run_dir)
    if path.is_dir():
        for name in (f"{prefer}.safetensors", "best.safetensors", "last.safetensors"):
            if (path / name).is_file():
                return path / name
        raise FileNotFoundError(f"{path}: no best.safetensors or last.safetensors in this folder (is it a run "
                                "folder of `convkit train`?)")
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such checkpoint file or run folder")
    return path
