"""Weights trained elsewhere (torchvision, timm, a plain ``torch.save(model.state_dict())``) in the zoo's twins.

A foreign weights file is a bare state dict: a ``.safetensors`` file, or a ``.pth``/``.pt``/``.bin`` file read
only by ``torch.load(..., weights_only=True)``, which refuses any pickle that would build an object other than
tensors and plain containers (so nothing in the file runs). `read_state_dict` reads one and unwraps the usual
containers (``{"state_dict": ...}``, ``{"model": ...}``, DDP's ``module.`` prefix).

The zoo's torchvision twins (resnet*, resnext50_32x4d, wide_resnet50_2, vgg*, vgg*_bn, alexnet; torchvision's
``googlenet`` is convkit's ``googlenet_bn``) use torchvision's tensor names and shapes, and so do timm's
``resnet18``/``resnet50``: `load_foreign` finds the twin whose names and shapes fit the file, builds it and
loads the weights. `match_state_dict` compares a model with a state dict (missing keys, unexpected keys,
shape mismatches, one table); the head may differ in its class count without being an architecture error.
`torchvision_weights("resnet18.IMAGENET1K_V1")` downloads a named torchvision weight through torch.hub's own
download and cache (with its checksum), or says where to put the file when offline.

>>> theirs = create_model("resnet20", num_classes=10)
>>> save_file(theirs.state_dict(), "r20.safetensors")
>>> model, match = load_foreign("r20.safetensors")
>>> match.arch, match.ok, model.num_classes
('resnet20', True, 10)
"""

from __future__ import annotations

import functools
import os
import pickle
import re
import zipfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from urllib.parse import urlparse

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file  # noqa: F401  (save_file: for the examples)
from torch import nn

from convkit.errors import ConvkitError
from convkit.models._registry import ModelArgumentError, create_model  # noqa: F401  (create_model: examples)
from convkit.models.base import spread_input_channels
from convkit.models.weights import CheckpointError, read_header
from convkit.utils import shorten

__all__ = ["MIRROR_ENV", "WeightMatch", "WeightsDownloadError", "load_foreign", "match_state_dict",
           "read_state_dict", "torchvision_weights"]

PICKLE_SUFFIXES = (".pth", ".pt", ".bin")
#: Replaces the scheme and host of torchvision's weight URLs (a mirror, or a local server in tests).
MIRROR_ENV = "CONVKIT_TORCHVISION_MIRROR"
# containers that training scripts wrap a state dict in (Lightning, timm's train.py, detectron, plain dicts)
_CONTAINER_KEYS = ("state_dict", "model_state_dict", "model_state", "model", "net", "network", "module")
_PREFIXES = ("module.", "_orig_mod.")  # DDP / DataParallel, torch.compile
_TABLE_ROWS = 40


class WeightsDownloadError(OSError, ConvkitError):
    """A named weight that could not be downloaded (offline, refused, or a checksum that does not match)."""


# --- reading -------------------------------------------------------------------------------------------------

def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Reads a state dict from a weights file without unpickling anything but tensors.

    ``.safetensors`` files are checked (`convkit.models.weights.read_header`) and read by safetensors;
    ``.pth``/``.pt``/``.bin`` files only by ``torch.load(path, map_location="cpu", weights_only=True)``.
    Containers are unwrapped: ``{"state_dict": {...}}`` (also ``model``, ``model_state_dict``, ``net``...), and a
    prefix that every key has (``module.`` from DDP, ``_orig_mod.`` from torch.compile) is dropped.

    Args:
        path: the weights file.

    Returns:
        Tensor name -> tensor (on CPU), in the file's order.

    Raises:
        CheckpointError: a suffix other than those, a pickle that ``weights_only`` refuses (nothing in it is
            run), a damaged file, no state dict inside, or values that are not tensors; the message names the
            file.
        FileNotFoundError: no such file.

    Example:
        >>> torch.save({"epoch": 3, "state_dict": {"module.fc.weight": torch.ones(2, 3)}}, "ddp.pth")
        >>> {k: tuple(v.shape) for k, v in read_state_dict("ddp.pth").items()}
        {'fc.weight': (2, 3)}
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such weights file")
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        read_header(path)  # refuses a damaged file (and a pickle in disguise) before safetensors reads it
        try:
            obj = load_file(str(path))
        except SafetensorError as err:
            raise CheckpointError(f"{path}: unreadable: {shorten(str(err), 300)}") from None
    elif suffix in PICKLE_SUFFIXES:
        obj = _torch_load(path)
    else:
        raise CheckpointError(f"{path}: a weights file must be .safetensors, or a state dict saved by torch.save "
                              f"as {'/'.join(PICKLE_SUFFIXES)}; found the suffix {suffix or '(none)'!r}")
    return unwrap_state_dict(obj, path)


def _torch_load(path: Path):
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(f"{path}: refused: torch.load(weights_only=True) reads only tensors and plain "
                              f"containers, and stopped at {_unpickler_reason(err)}; nothing in the file was run "
                              "(convkit never unpickles files, which can run arbitrary code). Re-save a trusted "
                              "state dict alone (torch.save(model.state_dict(), f)) or as .safetensors") from None
    except Exception as err:  # noqa: BLE001 - junk bytes reach the weights-only unpickler as KeyError, IndexError...
        if isinstance(err, (FileNotFoundError, MemoryError)):
            raise
        raise CheckpointError(f"{path}: not a file torch.save wrote, or a damaged one: "
                              f"{shorten(' '.join(str(err).split()), 200)}") from None


def _unpickler_reason(err: BaseException) -> str:
    """The line of torch's weights_only refusal that says what it found ('Unsupported global: GLOBAL io.open...')."""
    text = " ".join(str(err).split())
    found = re.search(r"WeightsUnpickler error: (.*?)(?: Please use| Check the documentation|$)", text)
    return shorten(found.group(1).strip() if found else text, 200).strip("'\"")


def unwrap_state_dict(obj, path: str | os.PathLike = "<state dict>") -> dict[str, torch.Tensor]:
    """A state dict out of what a file held: containers unwrapped, a shared ``module.`` prefix dropped.

    Args:
        obj: what ``torch.load`` or safetensors returned.
        path: the file, for messages.

    Returns:
        Tensor name -> tensor.

    Raises:
        CheckpointError: no mapping of names to tensors inside, or values that are not tensors (named).

    Example:
        >>> unwrap_state_dict({"model": {"module.w": torch.zeros(1)}})
        {'w': tensor([0.])}
    """
    seen = 0
    while isinstance(obj, dict) and not all(isinstance(v, torch.Tensor) for v in obj.values()) and seen < 4:
        inner = next((obj[k] for k in _CONTAINER_KEYS if isinstance(obj.get(k), dict)), None)
        if inner is None:
            break
        obj, seen = inner, seen + 1
    if not isinstance(obj, dict) or not obj:
        raise CheckpointError(f"{path}: expected a state dict (tensor names -> tensors), found "
                              f"{'an empty dict' if isinstance(obj, dict) else type(obj).__name__}")
    bad = [(k, v) for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        key, value = bad[0]
        keys = ", ".join(repr(k) for k in list(obj)[:8])
        raise CheckpointError(f"{path}: expected a state dict (tensor names -> tensors), but {shorten(key, 80)!s} "
                              f"holds {type(value).__name__} {shorten(value, 60)}"
                              + (f" ({len(bad)} such entries)" if len(bad) > 1 else "")
                              + f"; its keys: {keys}{', ...' if len(obj) > 8 else ''}")
    state = dict(obj)
    for prefix in _PREFIXES:
        if all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state


# --- matching ------------------------------------------------------------------------------------------------

Shape = tuple[int, ...]


@dataclass
class WeightMatch:
    """How a state dict fits a model: what is missing, unexpected, or of another shape.

    Attributes:
        arch: the model's name (zoo name).
        source: where the weights came from (file or weight name).
        total: tensors in the model's state dict.
        missing: (key, model shape) the model has and the weights lack.
        unexpected: (key, file shape) the weights have and the model lacks.
        mismatched: (key, model shape, file shape) of the body: an architecture error.
        head: (key, model shape, file shape) of the classifier(s), whose class counts differ: not an error;
            `load_foreign` re-initialises that head.
        notes: what was adapted (head re-initialised, input channels), in words.
    """

    arch: str
    source: str = ""
    total: int = 0
    missing: list[tuple[str, Shape]] = field(default_factory=list)
    unexpected: list[tuple[str, Shape]] = field(default_factory=list)
    mismatched: list[tuple[str, Shape, Shape]] = field(default_factory=list)
    head: list[tuple[str, Shape, Shape]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Every body tensor is there with its shape, and nothing else is (the head may differ in classes)."""
        return not (self.missing or self.unexpected or self.mismatched)

    @property
    def fitting(self) -> int:
        """Tensors of the model that the weights fill as they are."""
        return self.total - len(self.missing) - len(self.mismatched) - len(self.head)

    def table(self, max_rows: int = _TABLE_ROWS) -> str:
        """The problems as one aligned text table (key, problem, shape in the model, shape in the weights).

        Example:
            >>> m = WeightMatch("net", total=3, missing=[("fc.bias", (10,))], head=[("fc.weight", (10, 4), (5, 4))])
            >>> print(m.table())
            key        problem            model    weights
            fc.bias    missing            [10]     -
            fc.weight  head: class count  [10, 4]  [5, 4]
            1 of 3 tensors fit as they are; 1 missing, 0 unexpected, 0 of another shape, 1 head
        """
        rows = ([(k, "missing", _fmt(s), "-") for k, s in self.missing]
                + [(k, "unexpected", "-", _fmt(s)) for k, s in self.unexpected]
                + [(k, "shape differs", _fmt(a), _fmt(b)) for k, a, b in self.mismatched]
                + [(k, "head: class count" if not self.notes else "head: re-initialised",
                    _fmt(a), _fmt(b)) for k, a, b in self.head])
        summary = (f"{self.fitting} of {self.total} tensors fit as they are; {len(self.missing)} missing, "
                   f"{len(self.unexpected)} unexpected, {len(self.mismatched)} of another shape, "
                   f"{len(self.head)} head")
        if not rows:
            return f"all {self.total} tensors fit" + (f" ({'; '.join(self.notes)})" if self.notes else "")
        shown = rows[:max_rows]
        header = ("key", "problem", "model", "weights")
        widths = [max(len(r[i]) for r in [header, *shown]) for i in range(4)]
        lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in [header, *shown]]
        if len(rows) > max_rows:
            lines.append(f"... and {len(rows) - max_rows} more rows")
        return "\n".join([*lines, summary, *self.notes])

    def to_dict(self) -> dict:
        """A JSON-able summary (for run records)."""
        return {"arch": self.arch, "source": self.source, "total": self.total, "ok": self.ok,
                "missing": [k for k, _ in self.missing], "unexpected": [k for k, _ in self.unexpected],
                "mismatched": [[k, list(a), list(b)] for k, a, b in self.mismatched],
                "head": [[k, list(a), list(b)] for k, a, b in self.head], "notes": list(self.notes)}


def _fmt(shape: Shape) -> str:
    return "[" + ", ".join(str(s) for s in shape) + "]"


def head_prefixes(model: nn.Module) -> list[str]:
    """Module paths whose outputs are the classes: the classifier and any auxiliary classifiers' last layer.

    >>> head_prefixes(create_model("googlenet_bn", aux_logits=True))
    ['fc', 'aux1.fc2', 'aux2.fc2']
    """
    names = [getattr(model, "classifier_name", None) or "fc"]
    for name, module in model.named_modules():
        if name.startswith("aux") and "." not in name and isinstance(getattr(module, "fc2", None), nn.Linear):
            names.append(f"{name}.fc2")
    return names


def _is_head(key: str, prefixes: list[str]) -> bool:
    return any(key.startswith(p + ".") for p in prefixes)


def match_state_dict(model: nn.Module, state: dict[str, torch.Tensor], source: str = "") -> WeightMatch:
    """Compares a model's state dict with weights: missing keys, unexpected keys, shape mismatches.

    A classifier (``model.classifier_name``, and GoogLeNet's auxiliary ``fc2``) whose shapes differ only in the
    class count (its first dimension) is listed under ``head``, not as an architecture error.

    Args:
        model: the model (on any device, the meta device too).
        state: tensor name -> tensor (or anything with ``.shape``).
        source: where the weights came from, for the report.

    Returns:
        A `WeightMatch`; ``.ok`` when the weights fit but for the head's class count.

    Example:
        >>> ours = create_model("resnet18", num_classes=10)
        >>> theirs = create_model("resnet18").state_dict()   # 1000 classes
        >>> m = match_state_dict(ours, theirs)
        >>> m.ok, m.head
        (True, [('fc.weight', (10, 512), (1000, 512)), ('fc.bias', (10,), (1000,))])
    """
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    found = {k: tuple(v.shape) for k, v in state.items()}
    heads = head_prefixes(model)
    match = WeightMatch(str(getattr(model, "model_name", None) or type(model).__name__), str(source),
                        total=len(expected))
    for key, shape in expected.items():
        if key not in found:
            match.missing.append((key, shape))
        elif found[key] != shape:
            other = found[key]
            if _is_head(key, heads) and len(other) == len(shape) and other[1:] == shape[1:]:
                match.head.append((key, shape, other))
            else:
                match.mismatched.append((key, shape, other))
    match.unexpected = [(k, s) for k, s in found.items() if k not in expected]
    return match


# --- the zoo twin --------------------------------------------------------------------------------------------

def _variants(name: str) -> list[dict]:
    return [{}, {"aux_logits": True}] if name.startswith("googlenet") else [{}]


@functools.cache
def _meta_shapes(name: str, kwargs_items: tuple) -> tuple[dict[str, Shape], list[str], str | None]:
    """(state dict shapes, head prefixes, first conv weight key) of a zoo model built on the meta device."""
    from convkit.models._registry import build_zoo_model
    from convkit.models.reference import _meta_building

    with _meta_building():
        model = build_zoo_model(name, **dict(kwargs_items))
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    first = next((f"{n}.weight" for n, m in model.named_modules() if isinstance(m, nn.Conv2d)), None)
    return shapes, head_prefixes(model), first


def _fits(shapes: dict[str, Shape], heads: list[str], first: str | None, found: dict[str, Shape]) -> int:
    """Tensors of `found` that fit a zoo model's shapes modulo the class count and the input channels."""
    n = 0
    for key, shape in found.items():
        mine = shapes.get(key)
        if mine is None or len(mine) != len(shape):
            continue
        if _is_head(key, heads):
            n += mine[1:] == shape[1:]
        elif key == first:
            n += mine[0] == shape[0] and mine[2:] == shape[2:]
        else:
            n += mine == shape
    return n


def detect_arch(state: dict[str, torch.Tensor], names: list[str] | None = None) -> tuple[str, dict, int]:
    """The zoo model whose tensor names and (body) shapes are those of `state`, or the closest one.

    Args:
        state: the weights.
        names: the zoo models to try (all of them by default).

    Returns:
        (name, builder kwargs, fitting tensors): an exact fit when ``fitting == len(state)`` and the model has no
        other tensors, else the closest candidate.

    Example:
        >>> detect_arch(create_model("vgg11_bn").state_dict())[:2]
        ('vgg11_bn', {})
    """
    from convkit.models._registry import list_models

    found = {k: tuple(v.shape) for k, v in state.items()}
    best = ("", {}, 0, -float("inf"))
    for name in names or list_models():
        for kwargs in _variants(name):
            shapes, heads, first = _meta_shapes(name, tuple(sorted(kwargs.items())))
            fits = _fits(shapes, heads, first, found)
            score = fits - (len(shapes) - fits)  # an exact fit beats a model with more tensors
            if score > best[3]:
                best = (name, kwargs, fits, score)
            if fits == len(found) == len(shapes):
                return name, kwargs, fits
    return best[0], best[1], best[2]


def load_foreign(source: str | os.PathLike | dict, arch: str | None = None, num_classes: int | None = None,
                 in_channels: int | None = None, *, name: str | None = None) -> tuple[nn.Module, WeightMatch]:
    """Builds the zoo twin of foreign weights and loads them into it.

    Args:
        source: a weights file (see `read_state_dict`) or a state dict.
        arch: the zoo model to build; None detects it (`detect_arch`): the model whose tensor names and shapes
            are the file's (torchvision's and timm's resnets, vgg, alexnet; torchvision's googlenet is
            ``googlenet_bn``).
        num_classes: classes of the head; another count than the file's re-initialises the head (reported in
            the match's notes). None keeps the file's.
        in_channels: input channels; from 3 to 1, the first convolution's weights are summed over channels, from
            1 to C replicated and divided by C. None keeps the file's.
        name: how to name the weights in messages (default: the file).

    Returns:
        (model in eval mode, its `WeightMatch`).

    Raises:
        CheckpointError: the weights fit no zoo model (or not `arch`): the message names the file and holds the
            mismatch table; an unreadable or refused file (see `read_state_dict`).
        UnknownModelError: an unknown `arch`.
        ModelArgumentError: an input-channel change other than to or from 1.

    Example:
        >>> theirs = create_model("resnet20", num_classes=100)
        >>> model, match = load_foreign(theirs.state_dict(), num_classes=10)
        >>> match.notes
        ['head re-initialised for 10 classes (the weights have 100)']
    """
    from convkit.models._registry import model_info

    if isinstance(source, dict):
        state, label = unwrap_state_dict(source, name or "<state dict>"), name or "<state dict>"
    else:
        state, label = read_state_dict(source), name or str(source)
    found = {k: tuple(v.shape) for k, v in state.items()}
    detected = arch is None
    if detected:
        arch, kwargs, fits = detect_arch(state)
        if not fits:
            keys = ", ".join(f"{k} {_fmt(s)}" for k, s in list(found.items())[:6])
            raise CheckpointError(f"{label}: the weights fit no zoo model: no zoo model has any of its "
                                  f"{len(found)} tensors ({keys}{', ...' if len(found) > 6 else ''}); pass the "
                                  "architecture if it is in the zoo (`convkit models` lists it)")
    else:
        arch = model_info(arch).name  # UnknownModelError with close names
        kwargs = max(_variants(arch), key=lambda kw: _fits(*_meta_shapes(arch, tuple(sorted(kw.items()))), found))
    shapes, heads, first = _meta_shapes(arch, tuple(sorted(kwargs.items())))
    file_classes = next((found[k][0] for k in (f"{heads[0]}.weight", f"{heads[0]}.bias") if k in found), None)
    file_channels = found[first][1] if first in found and len(found[first]) == 4 else None
    model = _build_empty(arch, kwargs, file_classes, file_channels)
    match = match_state_dict(model, state, label)
    if not match.ok or match.head:
        what = (f"fit no zoo model; the closest is {arch} ({match.fitting} of its {match.total} tensors fit)"
                if detected else f"do not fit {arch}")
        raise CheckpointError(f"{label}: the weights {what}:\n{match.table()}")
    dtypes = {k: v.dtype for k, v in model.state_dict().items()}
    model.load_state_dict({k: v.to(dtypes[k]) for k, v in state.items()}, strict=True)
    if num_classes is not None and num_classes != model.num_classes:
        _reset_heads(model, num_classes)
        match = match_state_dict(model, state, label)
        match.notes.append(f"head re-initialised for {num_classes} classes (the weights have {file_classes})")
    if in_channels is not None and file_channels is not None and in_channels != file_channels:
        _adapt_input(model, first, in_channels, file_channels)
        match.notes.append(f"first convolution {first.removesuffix('.weight')}: {file_channels} input channels "
                           f"-> {in_channels} ({'summed' if in_channels == 1 else 'replicated'})")
    model.model_cfg = _foreign_cfg(model, match, None if isinstance(source, dict) else Path(source))
    return model.eval(), match


def _foreign_cfg(model: nn.Module, match: WeightMatch, path: Path | None):
    """The `ModelCfg` of a zoo twin holding foreign weights: trained, no class names, no known normalisation."""
    from convkit.models._registry import model_info
    from convkit.models.reference import ModelCfg, model_spec

    first = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    size = model_info(match.arch).input_size
    channels = first.in_channels if first is not None else size[0]
    return ModelCfg(match.arch, input_shape=(channels, *size[1:]), num_classes=model.num_classes,
                    spec=model_spec(match.arch, model.num_classes, channels, **_twin_kwargs(model)),
                    source="checkpoint", trained=True, checkpoint=path, meta={"foreign": match.to_dict()})


def _build_empty(arch: str, kwargs: dict, num_classes: int | None, in_channels: int | None) -> nn.Module:
    """The zoo model with uninitialised weights (the file fills them all): built on the meta device, then
    allocated. A model with non-persistent buffers (not in the file) is built for real."""
    from convkit.models._registry import build_zoo_model
    from convkit.models.reference import _meta_building, check_model_size

    args = {"num_classes": num_classes, "in_channels": in_channels, **kwargs}
    with _meta_building():
        shell = build_zoo_model(arch, **args)
    check_model_size(shell, arch)
    persistent = set(shell.state_dict())
    if any(f"{n}" not in persistent for n, _ in shell.named_buffers()):
        return build_zoo_model(arch, **args)
    return shell.to_empty(device="cpu")


def _reset_heads(model: nn.Module, num_classes: int) -> None:
    model.reset_classifier(num_classes)
    for prefix in head_prefixes(model)[1:]:
        old = model.get_submodule(prefix)
        model.set_submodule(prefix, nn.Linear(old.in_features, num_classes, bias=old.bias is not None))


def _adapt_input(model: nn.Module, first: str, channels: int, had: int) -> None:
    conv = model.get_submodule(first.removesuffix(".weight"))
    if channels != 1 and had != 1:
        raise ModelArgumentError(f"in_channels={channels}: the weights' first convolution ({first}) takes {had} "
                                 "channels; convkit adapts 1 <-> C channels only")
    conv.weight = nn.Parameter(spread_input_channels(conv.weight, channels))
    conv.in_channels = channels


# --- named torchvision weights -------------------------------------------------------------------------------

def _weights_entry(weights: str):
    """'resnet18.IMAGENET1K_V1' (or 'ResNet18_Weights.IMAGENET1K_V1', 'resnet18.DEFAULT') -> (builder, enum)."""
    import torchvision.models as tvm

    if not isinstance(weights, str):  # a WeightsEnum member
        return None, weights
    builder, _, member = weights.partition(".")
    if not member:
        raise ModelArgumentError(f"weights {weights!r}: expected BUILDER.WEIGHT, e.g. resnet18.IMAGENET1K_V1")
    try:
        enum = tvm.get_model_weights(builder)
    except ValueError:
        try:
            entry = tvm.get_weight(weights)
        except (ValueError, TypeError, KeyError, AttributeError):
            raise ModelArgumentError(f"weights {weights!r}: torchvision has no model {builder!r} (expected e.g. "
                                     "resnet18.IMAGENET1K_V1)") from None
        return None, entry
    try:
        return builder, enum[member]
    except KeyError:
        raise ModelArgumentError(f"weights {weights!r}: torchvision's {builder} has "
                                 f"{', '.join(enum.__members__)}, not {member!r}") from None


def _twin_of(torchvision_name: str) -> str | None:
    from convkit.models._registry import list_models, model_info

    return next((n for n in list_models() if model_info(n).torchvision == torchvision_name), None)


def torchvision_weights(weights, num_classes: int | None = None, in_channels: int | None = None, *,
                        mirror: str | None = None, progress: bool = False) -> tuple[nn.Module, WeightMatch]:
    """A torchvision weight by name, downloaded and cached by torch.hub (checksum checked), in its zoo twin.

    The file goes where torchvision puts it, ``torch.hub.get_dir()/checkpoints/<file name>`` (``$TORCH_HOME``),
    and a file already there is used without the network. The checksum (the hash prefix in the file name) is
    checked on download; the file is then read with ``weights_only=True``.

    Args:
        weights: "resnet18.IMAGENET1K_V1", "resnet18.DEFAULT", "ResNet18_Weights.IMAGENET1K_V1" or the enum
            member itself.
        num_classes, in_channels: as for `load_foreign`.
        mirror: a scheme and host ("http://127.0.0.1:8000") that replace the URL's; default
            ``$CONVKIT_TORCHVISION_MIRROR``, else torchvision's own.
        progress: show a download progress bar.

    Returns:
        (model in eval mode, `WeightMatch`); ``model.model_cfg`` carries the weights' class names and ImageNet
        normalisation (0.5/0.5 for googlenet, whose torchvision weights transform their input to that).

    Raises:
        WeightsDownloadError: the download failed or its checksum differs: the message gives the URL and the
            exact path to put the file at.
        ModelArgumentError: an unknown weight name.
        CheckpointError: a cached file that is damaged or refused, or no zoo twin of that model.

    Example:
        >>> import tempfile
        >>> os.environ["TORCH_HOME"] = tempfile.mkdtemp()       # an empty cache, and no network: the message
        >>> torchvision_weights("alexnet.IMAGENET1K_V1", mirror="http://127.0.0.1:9")
        Traceback (most recent call last):
        ...
        convkit.models.foreign.WeightsDownloadError: could not download alexnet.IMAGENET1K_V1 from http://127.0.0.1:9/models/alexnet-owt-7be5be79.pth (...); put the file https://download.pytorch.org/models/alexnet-owt-7be5be79.pth at /.../checkpoints/alexnet-owt-7be5be79.pth
        >>> del os.environ["TORCH_HOME"]
    """
    builder, entry = _weights_entry(weights)
    label = weights if isinstance(weights, str) else str(entry)
    url = original = entry.url
    mirror = mirror if mirror is not None else os.environ.get(MIRROR_ENV)
    if mirror:
        parts = urlparse(original)
        url = mirror.rstrip("/") + parts.path
    file_name = os.path.basename(urlparse(original).path)
    cached = Path(torch.hub.get_dir()) / "checkpoints" / file_name
    try:
        state = torch.hub.load_state_dict_from_url(url, map_location="cpu", progress=progress, check_hash=True,
                                                   weights_only=True, file_name=file_name)
    except pickle.UnpicklingError as err:
        raise CheckpointError(f"{cached}: refused: torch.load(weights_only=True) reads only tensors and plain "
                              f"containers, and stopped at {_unpickler_reason(err)}; nothing in the file was run. "
                              "Delete it to download it again") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile) as err:
        text = " ".join(str(err).split())
        if "invalid hash value" in text:
            raise WeightsDownloadError(f"{label}: the file downloaded from {url} does not match its checksum "
                                       f"({shorten(text, 160)}); it was not kept. Put the genuine file "
                                       f"{original} at {cached}") from None
        raise CheckpointError(f"{cached}: damaged or not a torch.save file ({shorten(text, 200)}); delete it "
                              "to download it again") from None
    except (OSError, ValueError) as err:  # URLError, HTTPError, timeouts, refused connections
        reason = getattr(err, "reason", None) or err
        raise WeightsDownloadError(f"could not download {label} from {url} ({shorten(str(reason), 120)}); put "
                                   f"the file {original} at {cached}") from None
    if builder is None:
        builder = re.sub(r"_weights$", "", type(entry).__name__.lower())
    twin = _twin_of(builder)
    model, match = load_foreign(unwrap_state_dict(state, cached), arch=twin, num_classes=num_classes,
                                in_channels=in_channels, name=f"{label} ({cached})")
    categories = entry.meta.get("categories")
    classes = list(categories) if categories and num_classes in (None, len(categories)) else None
    googlenet = builder == "googlenet"  # its weights transform ImageNet-normalised input to 0.5/0.5
    mean, std = ((0.5,) * 3, (0.5,) * 3) if googlenet else ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    channels = model.model_cfg.input_shape[0]
    if channels != 3:
        mean, std = (sum(mean) / 3,) * channels, (sum(std) / 3,) * channels
    size = entry.transforms.keywords.get("crop_size", 224) if hasattr(entry.transforms, "keywords") else 224
    model.model_cfg = replace(model.model_cfg, input_shape=(channels, size, size), classes=classes, mean=mean,
                              std=std, checkpoint=cached,
                              meta={"weights": label, "url": original, "foreign": match.to_dict()})
    return model, match


def _twin_kwargs(model: nn.Module) -> dict:
    return {"aux_logits": True} if getattr(model, "aux_logits", False) else {}
