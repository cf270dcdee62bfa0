"""Weight files as safetensors: weights plus JSON metadata, and the whole training state for exact resumes.

Nothing here pickles or unpickles: a pickle (torch.save's format) runs code when loaded, so a checkpoint
from elsewhere could do anything. Tensors go in a safetensors file, everything else as JSON in its header:
nested state (optimizer, scheduler, RNG states) is flattened into named tensors plus a JSON skeleton that
says where each tensor goes back. A file that is not safetensors is refused after reading 8 bytes of it; a
damaged one (truncated, a header that is not JSON or too long, offsets out of range) before safetensors
reads it (`read_header`); metadata that inference would misuse by `check_meta`, on every load.

Files of a run folder:
    best.safetensors / last.safetensors: the (EMA, if on) weights + metadata (model spec, class names,
        normalisation, input shape, epoch, metrics); what `load_checkpoint`, evaluate and predict read.
    resume.safetensors: weights, optimizer, scheduler, scaler, EMA, RNG states and the data position.
"""

from __future__ import annotations

import json
import math
import os
import struct
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from convkit.errors import ConvkitError
from convkit.utils import atomic_write, shorten

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
    """The JSON header of a safetensors file, after checking the file against it; reads no tensor data.

    A safetensors file starts with an 8-byte little-endian header length N, then N bytes of JSON (an
    object), then the tensor bytes. Anything else (a torch.save pickle or zip, a text file) is refused, and
    so is a damaged file: the header length is bounded (100 MiB) before the header is read, and every
    tensor's dtype, shape and data offsets are checked against each other and against the file's size, so
    safetensors is never handed a file it would fail on.

    Args:
        path: the file.

    Returns:
        The header: ``{tensor name: {"dtype", "shape", "data_offsets"}, "__metadata__": {str: str}}``.

    Raises:
        CheckpointError: not a safetensors file, or a damaged one (truncated, an absurd header length, a
            header that is not JSON, offsets out of range or overlapping); the message names the file and
            says what was found and what was expected.
        FileNotFoundError: no such file.

    Example:
        >>> _ = save_tensors("w.safetensors", {"w": torch.zeros(2)}, {})
        >>> read_header("w.safetensors")["w"]
        {'dtype': 'F32', 'shape': [2], 'data_offsets': [0, 8]}
        >>> Path("cut.safetensors").write_bytes(Path("w.safetensors").read_bytes()[:-4])
        116
        >>> read_header("cut.safetensors")
        Traceback (most recent call last):
        convkit.models.weights.CheckpointError: cut.safetensors: truncated: expected 120 bytes (the header and the tensors it describes), found 116
    """
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        n = struct.unpack("<Q", head)[0] if len(head) == 8 else None
        text = f.read(n) if n is not None and n <= _MAX_HEADER and 8 + n <= size else b""
    if text[:1] != b"{":  # the header length is bounded before anything more is read
        if head[:1] == b"\x80" and head[1:2] in (b"\2", b"\3", b"\4", b"\5") or head[:2] == b"PK":
            raise _not_safetensors(path, "a pickle or zip file (torch.save's format)")
        if n is None:
            raise CheckpointError(f"{path}: truncated or not a safetensors file: expected at least 8 bytes (the "
                                  f"header length), found {size}")
        if n > _MAX_HEADER:
            raise CheckpointError(f"{path}: not a safetensors file, or a damaged one: its first 8 bytes give a "
                                  f"header length of {n:,} bytes, expected at most {_MAX_HEADER:,} (100 MiB)")
        if 8 + n > size:
            raise CheckpointError(f"{path}: truncated: expected at least {8 + n:,} bytes (8 + its {n:,}-byte "
                                  f"header), found {size:,}")
        raise _not_safetensors(path, "not a safetensors file")
    try:
        header = json.loads(text.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as err:
        raise CheckpointError(f"{path}: damaged: its {n:,}-byte header is not valid JSON ({_reason(err)})") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: damaged: its header is JSON but not an object: {shorten(header)}")
    _check_layout(path, header, size, data_size=size - 8 - n)
    return header


def _not_safetensors(path: Path, kind: str) -> CheckpointError:
    return CheckpointError(f"{path}: {kind}; convkit loads only .safetensors checkpoints and never unpickles "
                           "files, which can run arbitrary code. Convert a trusted .pt file with "
                           "safetensors.torch.save_file(torch.load(f, weights_only=True), 'model.safetensors')")


def _reason(err: BaseException) -> str:
    return "nested too deeply" if isinstance(err, RecursionError) else shorten(str(err), 120).strip("'\"")


# bytes per element of each dtype safetensors writes
_DTYPE_SIZES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
                "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8, "C64": 8}


def _check_layout(path: Path, header: dict, size: int, data_size: int) -> None:
    """The tensors a header describes fit the file: known dtypes, sizes that match their shapes, offsets that
    tile the data exactly (no overlap, no gap, nothing past the end, nothing left over)."""
    def bad(name, what):
        return CheckpointError(f"{path}: damaged: tensor {shorten(name, 80)} {what}")

    spans = []
    for name, entry in header.items():
        if name == "__metadata__":
            if not isinstance(entry, dict) or not all(isinstance(v, str) for v in entry.values()):
                raise CheckpointError(f"{path}: damaged: its __metadata__ must map names to strings, found "
                                      f"{shorten(entry)}")
            continue
        if not isinstance(entry, dict):
            raise bad(name, f"is described by {shorten(entry)}, expected {{dtype, shape, data_offsets}}")
        dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
        if dtype not in _DTYPE_SIZES:
            raise bad(name, f"has dtype {shorten(dtype)}, expected one of {', '.join(_DTYPE_SIZES)}")
        if not isinstance(shape, list) or not all(_is_int(s) and s >= 0 for s in shape):
            raise bad(name, f"has shape {shorten(shape)}, expected a list of sizes >= 0")
        if (not isinstance(offsets, list) or len(offsets) != 2 or not all(_is_int(o) for o in offsets)
                or not 0 <= offsets[0] <= offsets[1]):
            raise bad(name, f"has data_offsets {shorten(offsets)}, expected [begin, end] with 0 <= begin <= end")
        spans.append((offsets[0], offsets[1], name, math.prod(shape) * _DTYPE_SIZES[dtype], dtype, shape))
    total = sum(s[3] for s in spans)
    if total > data_size:
        raise CheckpointError(f"{path}: truncated: expected {size - data_size + total:,} bytes (the header and the "
                              f"tensors it describes), found {size:,}")
    position, previous = 0, None
    for begin, stop, name, need, dtype, shape in sorted(spans, key=lambda s: s[:2]):
        if stop > data_size:
            raise bad(name, f"has data_offsets [{begin:,}, {stop:,}], out of range: the tensor data holds "
                      f"{data_size:,} bytes")
        if stop - begin != need:
            raise bad(name, f"has data_offsets [{begin:,}, {stop:,}] ({stop - begin:,} bytes), but its shape "
                      f"{shorten(shape)} of {dtype} takes {need:,} bytes")
        if begin != position:
            where = (f"overlap tensor {shorten(previous, 80)}, which ends at {position:,}" if begin < position
                     else f"leave {begin - position:,} bytes unused before it")
            raise bad(name, f"has data_offsets [{begin:,}, {stop:,}] that {where}; expected it to start at "
                      f"{position:,}")
        position, previous = stop, name
    if position != data_size:
        raise CheckpointError(f"{path}: damaged: {data_size - position:,} bytes follow the last tensor its header "
                              f"describes (the file has {size:,} bytes, expected {size - data_size + position:,})")


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


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

    Args:
        path: the file.

    Returns:
        (tensors by name, the metadata, checked by `check_meta`).

    Raises:
        CheckpointError: not a safetensors file, a damaged one, or metadata that `check_meta` refuses.

    Example:
        >>> _ = save_tensors("w.safetensors", {"w": torch.ones(2)}, {"epoch": 1})
        >>> load_tensors("w.safetensors")
        ({'w': tensor([1., 1.])}, {'epoch': 1})
    """
    meta = read_meta(path)  # reads and checks the header first: safetensors only sees files that fit it
    try:
        return load_file(str(path)), meta
    except SafetensorError as err:  # changed on disk since, or a case the header check does not know
        raise CheckpointError(f"{path}: unreadable: {shorten(str(err), 300)}") from None


def read_meta(path: str | os.PathLike) -> dict:
    """The convkit metadata of a safetensors file ({} if it has none), checked, without reading any tensor.

    Args:
        path: the file.

    Returns:
        The metadata dict (see `check_meta`).

    Raises:
        CheckpointError: not a safetensors file, a damaged one, or metadata that is not a JSON object or that
            `check_meta` refuses.

    Example:
        >>> _ = save_tensors("w.safetensors", {"w": torch.ones(2)}, {"epoch": 1})
        >>> read_meta("w.safetensors")
        {'epoch': 1}
    """
    text = read_header(path).get("__metadata__", {}).get("convkit", "{}")
    try:
        meta = json.loads(text)
    except (ValueError, RecursionError) as err:
        raise CheckpointError(f"{path}: damaged: its convkit metadata is not valid JSON ({_reason(err)})") from None
    return check_meta(meta, path)


# --- the metadata ------------------------------------------------------------------------------------------

MAX_CLASSES = 100_000  # more outputs than any classifier has (ImageNet-21k: 21,841)
MAX_CHANNELS = 1024
MAX_SIDE = 16384  # pixels on a side of the input image
_SPEC_KEYS = {"kind", "name", "kwargs", "num_classes", "in_channels", "path", "text", "class", "adapt"}
_SPEC_KINDS = ("zoo", "file", "python", "detector", "segmenter")
_DETECTOR_KEYS = {"kind", "detector", "backbone", "num_classes", "in_channels", "image_size", "kwargs"}
_SEGMENTER_KEYS = {"kind", "segmenter", "backbone", "classifier", "num_classes", "in_channels", "image_size", "kwargs"}


def check_meta(meta, path: str | os.PathLike) -> dict:
    """Checks a checkpoint's metadata before anything uses it; returns it unchanged.

    What inference reads must be what training writes: the model spec a mapping of known keys (`kind` zoo,
    file or python; zoo kwargs a small JSON mapping; num_classes 1..100,000 and in_channels 1..1024 when
    given); classes a list of distinct strings, one per model output; input_shape three positive ints;
    mean and std finite numbers, one per input channel, std > 0; task and convkit_version strings; epoch
    and step counts; tta and ema booleans; metrics a flat mapping of numbers; config a mapping. Keys it
    does not know are left alone. Messages cut long values (`convkit.utils.shorten`).

    Args:
        meta: the parsed metadata.
        path: the checkpoint, for messages.

    Returns:
        ``meta``.

    Raises:
        CheckpointError: naming the file, the field, what was found and what was expected.

    Example:
        >>> check_meta({"classes": ["cat", "dog"], "model": {"kind": "zoo", "name": "fastcnn", "num_classes": 2}},
        ...            "w.safetensors")["classes"]
        ['cat', 'dog']
        >>> check_meta({"mean": [0.5], "std": [0.0]}, "w.safetensors")
        Traceback (most recent call last):
        convkit.models.weights.CheckpointError: w.safetensors: metadata field std: found [0.0], expected numbers > 0
    """
    def bad(name, value, expected):
        return CheckpointError(f"{path}: metadata field {name}: found {shorten(value)}, expected {expected}")

    if not isinstance(meta, dict):
        raise bad("(all)", meta, "a JSON object")
    spec = meta.get("model")
    if spec is not None:
        _check_spec(spec, bad)
    channels = None
    if meta.get("input_shape") is not None:
        shape = meta["input_shape"]
        limits = (MAX_CHANNELS, MAX_SIDE, MAX_SIDE)
        if (not isinstance(shape, list) or len(shape) != 3
                or not all(_is_int(v) and 1 <= v <= top for v, top in zip(shape, limits, strict=False))):
            raise bad("input_shape", shape, f"[C, H, W]: 3 positive ints (C <= {MAX_CHANNELS}, H, W <= {MAX_SIDE})")
        channels = shape[0]
    if isinstance(spec, dict) and spec.get("in_channels") is not None:
        if channels is not None and spec["in_channels"] != channels:
            raise bad("input_shape", meta["input_shape"], f"{spec['in_channels']} channels, as model.in_channels says")
        channels = spec["in_channels"]
    for name in ("mean", "std"):
        values = meta.get(name)
        if values is None:
            continue
        if not isinstance(values, list) or not all(_is_number(v) and math.isfinite(v) for v in values):
            raise bad(name, values, "a list of finite numbers, one per input channel")
        if not values or (channels is not None and len(values) != channels):
            raise bad(name, values, f"{channels or 'one or more'} numbers, one per input channel")
        if name == "std" and min(values) <= 0:
            raise bad(name, values, "numbers > 0")
    if meta.get("classes") is not None:
        classes = meta["classes"]
        if (not isinstance(classes, list) or not 1 <= len(classes) <= MAX_CLASSES
                or not all(isinstance(c, str) and len(c) <= 1000 for c in classes)):
            raise bad("classes", classes, f"a list of 1 to {MAX_CLASSES:,} class names (strings)")
        outputs = spec.get("num_classes") if isinstance(spec, dict) else None
        if outputs is not None and len(classes) != outputs:
            raise bad("classes", classes, f"{outputs} names, one per model output (model.num_classes), found "
                      f"{len(classes):,}")
        if len(set(classes)) != len(classes):
            raise bad("classes", classes, "distinct names")
    for name, kind, expected in (("task", str, "a string"), ("convkit_version", str, "a string"),
                                 ("format", str, "a string"), ("tta", bool, "true or false"),
                                 ("ema", bool, "true or false"), ("config", dict, "a mapping of config fields")):
        if meta.get(name) is not None and not isinstance(meta[name], kind):
            raise bad(name, meta[name], expected)
    for name in ("task", "convkit_version", "format"):
        if len(meta.get(name) or "") > 100:
            raise bad(name, meta[name], "a short name")
    for name in ("epoch", "step", "threads", "world_size"):
        if meta.get(name) is not None and not (_is_int(meta[name]) and meta[name] >= 0):
            raise bad(name, meta[name], "a count (an int >= 0)")
    metrics = meta.get("metrics")
    if metrics is not None and (not isinstance(metrics, dict) or len(metrics) > 1000
                                or not all(v is None or _is_number(v) for v in metrics.values())):
        raise bad("metrics", metrics, "a mapping of metric names to numbers")
    return meta


def _check_spec(spec, bad) -> None:
    """model: the spec that rebuilds the architecture (see `convkit.models.reference`)."""
    if not isinstance(spec, dict):
        raise bad("model", spec, "a mapping (the model spec)")
    if spec.get("kind") == "detector":  # a detector on a backbone: the backbone's spec is checked as a model's
        _check_detector_spec(spec, bad)
        return
    if spec.get("kind") == "segmenter":  # a segmenter, maybe on a backbone or classifier (checked as a model's)
        _check_segmenter_spec(spec, bad)
        return
    unknown = sorted(set(spec) - _SPEC_KEYS)
    if unknown:
        raise bad(f"model.{unknown[0][:60]}", spec[unknown[0]],
                  f"no such key; a model spec has {', '.join(sorted(_SPEC_KEYS))}")
    if spec.get("kind") not in _SPEC_KINDS:
        raise bad("model.kind", spec.get("kind"), " or ".join(_SPEC_KINDS))
    for key, top in (("num_classes", MAX_CLASSES), ("in_channels", MAX_CHANNELS)):
        value = spec.get(key)
        if value is not None and not (_is_int(value) and 1 <= value <= top):
            raise bad(f"model.{key}", value, f"an int from 1 to {top:,}")
    needs = {"zoo": ("name",), "file": ("text",), "python": ("class",)}[spec["kind"]]
    for key in ("name", "path", "class", "text"):
        value = spec.get(key)
        if value is None and key not in needs:
            continue
        if not isinstance(value, str) or len(value) > (1 << 20 if key == "text" else 4096):
            raise bad(f"model.{key}", value, "a string" + (" (a model file's text, up to 1 MiB)" if key == "text"
                                                           else " (a name or path)"))
    kwargs = spec.get("kwargs", {})
    if not isinstance(kwargs, dict) or _json_items(kwargs) > 1000:
        raise bad("model.kwargs", kwargs, "a mapping of builder arguments (at most 1,000 values in all)")
    adapt = spec.get("adapt", [])  # a fine-tuned network's input-size changes (convkit.reuse.replay_adaptations)
    if not isinstance(adapt, list) or not all(isinstance(a, dict) for a in adapt) or _json_items(adapt) > 1000:
        raise bad("model.adapt", adapt, "a list of recorded adaptations (at most 1,000 values in all)")


def _check_detector_spec(spec: dict, bad) -> None:
    """model of a detector (`convkit.tasks.detection.detector`): its name, backbone spec, classes and size."""
    _check_task_spec(spec, bad, "detector", _DETECTOR_KEYS, ("backbone",))


def _check_segmenter_spec(spec: dict, bad) -> None:
    """model of a segmenter (`convkit.tasks.segmentation.models`): its name, backbone or classifier spec (when it
    has one), classes and size."""
    _check_task_spec(spec, bad, "segmenter", _SEGMENTER_KEYS, ())


def _check_task_spec(spec: dict, bad, key: str, keys: set, required: tuple) -> None:
    unknown = sorted(set(spec) - keys)
    if unknown:
        raise bad(f"model.{unknown[0][:60]}", spec[unknown[0]],
                  f"no such key; a {key} spec has {', '.join(sorted(keys))}")
    if not isinstance(spec.get(key), str) or len(spec[key]) > 100:
        raise bad(f"model.{key}", spec.get(key), f"a {key} name")
    for part in ("backbone", "classifier"):
        inner = spec.get(part)
        if part not in keys or (inner is None and part not in required):
            continue
        if not isinstance(inner, dict) or inner.get("kind") in ("detector", "segmenter"):
            raise bad(f"model.{part}", inner, f"a {part}'s model spec")
        _check_spec(inner, lambda name, value, expected, part=part: bad(name.replace("model", f"model.{part}", 1),
                                                                        value, expected))
    for field_name, top in (("num_classes", MAX_CLASSES), ("in_channels", MAX_CHANNELS)):
        if not (_is_int(spec.get(field_name)) and 1 <= spec[field_name] <= top):
            raise bad(f"model.{field_name}", spec.get(field_name), f"an int from 1 to {top:,}")
    size = spec.get("image_size")
    if not (isinstance(size, list) and len(size) == 2 and all(_is_int(v) and 1 <= v <= 1 << 16 for v in size)):
        raise bad("model.image_size", size, "[height, width] in pixels")
    kwargs = spec.get("kwargs", {})
    if not isinstance(kwargs, dict) or _json_items(kwargs) > 1000:
        raise bad("model.kwargs", kwargs, "a mapping of builder arguments (at most 1,000 values in all)")


def _json_items(value, limit: int = 1000) -> int:
    """How many values a JSON value holds (strings count a value per 100 characters), counted up to `limit`."""
    count, stack = 0, [value]
    while stack and count <= limit:
        item = stack.pop()
        count += 1 + (len(item) // 100 if isinstance(item, str) else 0)
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return count


def _is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def save_state(path: str | os.PathLike, state: dict, meta: dict) -> Path:
    """Writes nested training state (see `flatten_state`) as one safetensors file, atomically."""
    skeleton, tensors = flatten_state(state)
    return save_tensors(path, tensors, {**meta, "format": FORMAT, "state": skeleton})


def load_state(path: str | os.PathLike) -> tuple[dict, dict]:
    """Reads a file written by `save_state`: (state, metadata).

    Raises:
        CheckpointError: not a safetensors file, a damaged one, or one without (or with a broken) training state.
    """
    tensors, meta = load_tensors(path)
    if "state" not in meta:
        raise CheckpointError(f"{path}: holds no training state (is it a weights checkpoint? resume from the run "
                              "folder or its resume.safetensors)")
    return restore_state(meta.pop("state"), tensors, path), meta


def restore_state(skeleton, tensors: dict[str, torch.Tensor], path: str | os.PathLike) -> dict:
    """`unflatten_state` for a file's state: a skeleton that does not fit its tensors is a CheckpointError.

    Args:
        skeleton: the ``state`` of a `save_state` file's metadata.
        tensors: the file's tensors.
        path: the file, for messages.

    Returns:
        The state: a dict with at least the model's weights under ``"model"``.

    Raises:
        CheckpointError: a skeleton naming tensors the file lacks, malformed, or without model weights.

    Example:
        >>> skeleton, tensors = flatten_state({"model": {"w": torch.zeros(1)}})
        >>> restore_state(skeleton, tensors, "resume.safetensors")
        {'model': {'w': tensor([0.])}}
        >>> restore_state({"model": {"__tensor__": "gone"}}, {}, "resume.safetensors")
        Traceback (most recent call last):
        convkit.models.weights.CheckpointError: resume.safetensors: damaged: its training state does not fit its tensors (KeyError: gone)
    """
    try:
        state = unflatten_state(skeleton, tensors)
    except (KeyError, TypeError, ValueError, AttributeError, RecursionError) as err:
        raise CheckpointError(f"{path}: damaged: its training state does not fit its tensors "
                              f"({type(err).__name__}: {_reason(err)})") from None
    weights = state.get("model") if isinstance(state, dict) else None
    if not isinstance(weights, dict) or not all(isinstance(v, torch.Tensor) for v in weights.values()):
        raise CheckpointError(f"{path}: damaged: its training state holds no model weights")
    eval_weights = state.get("eval_model")
    if eval_weights is not None and not (isinstance(eval_weights, dict)
                                         and all(isinstance(v, torch.Tensor) for v in eval_weights.values())):
        raise CheckpointError(f"{path}: damaged: its training state's eval_model is not a set of weights")
    return state


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
