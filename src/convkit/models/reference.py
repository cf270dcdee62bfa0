"""One way to name a model: a zoo name, a model file, a run folder, a .safetensors checkpoint or an ``nn.Module``.

`resolve_model(ref)` is the only place that turns a reference into a model; every verb and every Python entry
point (summary, explain, animate, evaluate, predict, the report, the CLI, the trainer) calls it. The model it
returns carries its own configuration as ``model.model_cfg`` (a `ModelCfg`), the way timm's models carry their
``pretrained_cfg``: task, input shape, class names, normalisation, and the spec that rebuilds the architecture.
Callers read it instead of re-deriving it.

A spec is plain JSON, stored in every checkpoint's metadata::

    {"kind": "zoo",  "name": "resnet20", "kwargs": {...}, "num_classes": 10, "in_channels": 3}
    {"kind": "file", "path": "net.yaml", "text": "<the file's text>", "num_classes": 10, "in_channels": 1}
    {"kind": "python", "class": "mypackage.MyNet", ...}     (not rebuildable: pass model= to load weights)

>>> model = resolve_model("lenet5", num_classes=10)
>>> model.model_cfg.input_shape, model.model_cfg.source, model.model_cfg.spec["kind"]
((1, 32, 32), 'zoo', 'zoo')
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from convkit.errors import ConvkitError
from convkit.models.weights import (
    FORMAT,
    CheckpointError,
    find_checkpoint,
    load_tensors,
    read_meta,
    restore_state,
)
from convkit.utils import shorten

__all__ = ["MAX_PARAMETERS", "Checkpoint", "ModelCfg", "ModelTooLargeError", "build_from_spec", "check_model_size",
           "load_checkpoint", "model_cfg", "model_spec", "resolve_model"]

# Untrained models have seen no data, so no statistics are theirs: 0.5/0.5 maps pixels 0..255 onto -1..1,
# centred like a trained model's input, and claims no dataset (ImageNet's would).
UNTRAINED_MEAN = 0.5
UNTRAINED_STD = 0.5
MODEL_FILE_SUFFIXES = (".yaml", ".yml")
MAX_PARAMETERS = 2**31  # the most parameters convkit builds real weights for (8 GiB as float32)


@dataclass
class ModelCfg:
    """What a model knows about itself (timm's ``pretrained_cfg``); read as ``model.model_cfg``.

    Attributes:
        name: a short name for titles and file names (zoo name, model file stem, class name).
        task: the task the model was built or trained for ("classification").
        input_shape: (C, H, W) of one input image, or None when nothing says (a bare module).
        num_classes: outputs of the head, or None when unknown.
        classes: class names (None for an untrained model: classes are then numbers).
        mean, std: per-channel normalisation on the 0..1 scale: the model reads ``(x / 255 - mean) / std``.
            Untrained models get 0.5 and 0.5.
        spec: the JSON that rebuilds the architecture (see the module docstring), or None.
        source: "zoo", "file", "checkpoint" or "module".
        trained: whether the weights come from training (a checkpoint).
        checkpoint: the .safetensors file the weights came from, if any.
        run_dir: the run folder of that checkpoint, if it is in one.
        meta: the checkpoint's whole metadata (epoch, metrics, config, tta...); {} otherwise.
    """

    name: str
    task: str = "classification"
    input_shape: tuple[int, int, int] | None = None
    num_classes: int | None = None
    classes: list[str] | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    spec: dict | None = None
    source: str = "module"
    trained: bool = False
    checkpoint: Path | None = None
    run_dir: Path | None = None
    meta: dict = field(default_factory=dict, repr=False)

    @property
    def tta(self) -> bool:
        """Whether evaluation averages each image with its mirror image (saved by training)."""
        return bool(self.meta.get("tta"))

    def mean_std(self, channels: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, std) as float32 tensors of shape (C,); untrained models' 0.5/0.5 for `channels` channels."""
        c = channels or (self.input_shape[0] if self.input_shape else 3)
        mean = self.mean if self.mean is not None else (UNTRAINED_MEAN,) * c
        std = self.std if self.std is not None else (UNTRAINED_STD,) * c
        return torch.tensor(mean, dtype=torch.float32), torch.tensor(std, dtype=torch.float32)

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 images NCHW (or floats on 0..255) -> the model's input, ``(x / 255 - mean) / std``.

        Computed as training computes it (``x * scale + shift``), so predictions match evaluation to the bit.

        >>> cfg = ModelCfg("net", input_shape=(1, 2, 2), mean=(0.5,), std=(0.25,))
        >>> cfg.normalize(torch.full((1, 1, 2, 2), 255, dtype=torch.uint8)).flatten().tolist()
        [2.0, 2.0, 2.0, 2.0]
        """
        mean, std = self.mean_std(images.shape[1])
        device = images.device
        scale = (1 / (255 * std)).to(device).view(1, -1, 1, 1)
        shift = (-mean / std).to(device).view(1, -1, 1, 1)
        return images.float() * scale + shift

    def to_dict(self) -> dict:
        """The JSON-able fields (no metadata), e.g. for ``--json`` output."""
        return {"name": self.name, "task": self.task, "input_shape": list(self.input_shape or []) or None,
                "num_classes": self.num_classes, "classes": self.classes,
                "mean": list(self.mean) if self.mean is not None else None,
                "std": list(self.std) if self.std is not None else None, "spec": self.spec, "source": self.source,
                "trained": self.trained, "checkpoint": str(self.checkpoint) if self.checkpoint else None,
                "run_dir": str(self.run_dir) if self.run_dir else None}


# --- specs ---------------------------------------------------------------------------------------------------

def model_spec(ref: str | os.PathLike | nn.Module, num_classes: int | None = None, in_channels: int | None = None,
               **kwargs) -> dict:
    """The JSON spec that rebuilds a model (stored in checkpoints); see the module docstring.

    Args:
        ref: a zoo name, a model file, or an ``nn.Module`` built in Python (recorded by class, not rebuildable).
        num_classes, in_channels, **kwargs: the builder's arguments.

    Raises:
        FileNotFoundError: a model file that does not exist.

    >>> model_spec("resnet20", num_classes=10, in_channels=3)
    {'num_classes': 10, 'in_channels': 3, 'kind': 'zoo', 'name': 'resnet20', 'kwargs': {}}
    """
    base = {"num_classes": num_classes, "in_channels": in_channels}
    if isinstance(ref, nn.Module):
        return {**base, "kind": "python", "class": f"{type(ref).__module__}.{type(ref).__qualname__}"}
    if str(ref).lower().endswith(MODEL_FILE_SUFFIXES):
        path = Path(ref)
        return {**base, "kind": "file", "path": str(path), "text": path.read_text(encoding="utf-8")}
    return {**base, "kind": "zoo", "name": str(ref), "kwargs": dict(kwargs)}


def build_from_spec(spec: dict, meta: bool = False) -> nn.Module:
    """Rebuilds a model from a spec (its weights still to be loaded).

    Args:
        spec: as `model_spec` returns it (or a checkpoint's ``meta["model"]``).
        meta: build on the meta device (shapes only, no memory, no initialisation).

    Raises:
        CheckpointError: the spec names a model built in Python, or is malformed.

    >>> build_from_spec({"kind": "zoo", "name": "lenet5", "num_classes": 3, "in_channels": 1}).num_classes
    3
    """
    from convkit.models._registry import build_zoo_model
    from convkit.models.modelfile import parse_model_file

    kind = spec.get("kind") if isinstance(spec, dict) else None
    if kind in ("zoo", "file") and spec.get("adapt"):  # a fine-tuned model: the source's, then its adaptations
        from convkit.reuse.adapt import AdaptError, replay_adaptations  # above models: imported on use only

        base = _without_adapt(spec)
        try:
            return replay_adaptations(build_from_spec(base, meta=meta), spec["adapt"])
        except AdaptError as err:
            raise CheckpointError(f"the checkpoint's model spec: {err}") from None
    if kind == "zoo":
        return _sized(lambda: build_zoo_model(spec["name"], num_classes=spec.get("num_classes"),
                                              in_channels=spec.get("in_channels"), **spec.get("kwargs", {})),
                      str(spec["name"]), meta)
    if kind == "file":
        path = spec.get("path", "<checkpoint>")
        return _sized(lambda: parse_model_file(spec["text"], path, num_classes=spec.get("num_classes"),
                                               in_channels=spec.get("in_channels")), str(path), meta)
    if kind == "detector":  # a detector on a convkit backbone (the detection task's; above models: imported on use)
        from convkit.tasks.detection.detector import detector_from_spec

        try:
            return detector_from_spec(spec)
        except (KeyError, TypeError, ValueError) as err:
            raise CheckpointError(f"the checkpoint's detector spec: {shorten(str(err), 200)}") from None
    if kind == "segmenter":  # a segmenter (the segmentation task's; above models: imported on use)
        from convkit.tasks.segmentation.models import segmenter_from_spec

        try:
            return segmenter_from_spec(spec)
        except (KeyError, TypeError, ValueError) as err:
            raise CheckpointError(f"the checkpoint's segmenter spec: {shorten(str(err), 200)}") from None
    if kind == "python":
        raise CheckpointError(f"the checkpoint's model ({spec.get('class', 'a Python module')}) was built in "
                              "Python; pass model= (an instance of the same architecture) to load its weights")
    raise CheckpointError(f"the checkpoint's model spec is not one convkit can rebuild: {str(spec)[:200]}")


def _without_adapt(spec: dict) -> dict:
    return {k: v for k, v in spec.items() if k != "adapt"}


class ModelTooLargeError(ValueError, ConvkitError):
    """A model too large to build real weights for (more than `MAX_PARAMETERS`, or than the memory); the
    message names the model and its parameter count."""


def check_model_size(module: nn.Module, name: str) -> None:
    """Refuses a model whose real weights would not fit: more than `MAX_PARAMETERS` parameters, or more bytes
    than the memory this process may use. Count on a model built on the meta device, before building it.

    Args:
        module: the model (on the meta device: nothing allocated).
        name: the model's name, for the message.

    Raises:
        ModelTooLargeError: too large; the message names the model, its parameter count and the bound.

    Example:
        >>> check_model_size(resolve_model("lenet5", meta=True), "lenet5")    # 61,706 parameters: fine
        >>> with torch.device("meta"):
        ...     huge = nn.Linear(100_000, 100_000)
        >>> check_model_size(huge, "huge")
        Traceback (most recent call last):
        ...
        convkit.models.reference.ModelTooLargeError: huge: 10,000,100,000 parameters (37.3 GiB as float32): convkit builds at most ...
    """
    from convkit.utils import format_bytes

    tensors = [*module.parameters(), *module.buffers()]
    count = sum(t.numel() for t in module.parameters())
    size = sum(t.numel() * t.element_size() for t in tensors)
    memory = _memory_bytes()
    if count > MAX_PARAMETERS or (memory is not None and size > memory):
        bound = (f"convkit builds at most {MAX_PARAMETERS:,} parameters" if count > MAX_PARAMETERS else
                 f"this exceeds the memory available ({format_bytes(memory)})")
        raise ModelTooLargeError(f"{name}: {count:,} parameters ({format_bytes(size)} as "
                                 f"{str(tensors[0].dtype).removeprefix('torch.')}): {bound}; `convkit summary` "
                                 "inspects it without building its weights")


def _memory_bytes() -> int | None:
    """The memory this process may use: the machine's, or what is left of an address-space limit (None: unknown)."""
    sizes = []
    with contextlib.suppress(ValueError, OSError, AttributeError):
        sizes.append(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    with contextlib.suppress(ImportError, ValueError, OSError):
        import resource

        soft = resource.getrlimit(resource.RLIMIT_AS)[0]
        if soft != resource.RLIM_INFINITY:  # what is left of it: torch alone maps gigabytes
            with open("/proc/self/statm") as f:
                used = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
            sizes.append(max(soft - used, 0))
    return min(sizes) if sizes else None


def _sized(build: Callable[[], nn.Module], name: str, meta: bool) -> nn.Module:
    """``build()`` on the meta device; unless ``meta``, counted there (`check_model_size`), then built for real.

    A model whose layers need real tensors at build time (the meta build fails otherwise than on its input)
    is built for real without the count."""
    try:
        with _meta_building():
            shell = build()
    except (FileNotFoundError, ValueError, ConvkitError):
        raise
    except Exception:
        shell = None
    if shell is not None:
        if meta:
            return shell
        check_model_size(shell, name)
    return build()


@contextlib.contextmanager
def _meta_building():
    from convkit.models._registry import _skip_initialisation

    with torch.device("meta"), _skip_initialisation():
        yield


# --- what a module says about itself ------------------------------------------------------------------------

def model_cfg(model: nn.Module) -> ModelCfg:
    """The `ModelCfg` a module carries; for a module that has none, what can be read from it.

    A bare module's input shape comes from its ``input_shape`` attribute (``convkit.Sequential``), else from the
    zoo's information when it has a ``model_name`` (with the first convolution's input channels), else None.

    >>> from convkit.models import create_model
    >>> model_cfg(create_model("resnet18", in_channels=1)).input_shape
    (1, 224, 224)
    """
    cfg = getattr(model, "model_cfg", None)
    if isinstance(cfg, ModelCfg):
        return cfg
    name = getattr(model, "model_name", None)
    shape = getattr(model, "input_shape", None)
    if isinstance(shape, Sequence) and not isinstance(shape, str) and len(shape) == 3:
        shape = tuple(int(s) for s in shape)
    else:
        shape = None
        if isinstance(name, str):
            from convkit.models._registry import UnknownModelError, model_info

            try:
                shape = tuple(model_info(name).input_size)
            except UnknownModelError:
                pass
            # a zoo model built with in_channels=1 still says 3 in its ModelInfo: ask the first convolution
            first = next((m for m in model.modules() if isinstance(m, nn.Conv2d) and m.in_channels), None)
            if shape is not None and first is not None:
                shape = (first.in_channels, *shape[1:])
    classes = getattr(model, "num_classes", None)
    return ModelCfg(str(name or type(model).__name__), input_shape=shape,
                    num_classes=int(classes) if isinstance(classes, int) else None,
                    spec=model_spec(model), source="module")


# --- the resolver --------------------------------------------------------------------------------------------

def resolve_model(ref: Any, *, num_classes: int | None = None, in_channels: int | None = None,
                  input_shape: Sequence[int] | None = None, meta: bool = False,
                  device: str | torch.device = "cpu", prefer: str = "best", model: nn.Module | None = None,
                  **kwargs) -> nn.Module:
    """Whatever names a model -> the model, carrying its `ModelCfg` as ``model.model_cfg``.

    Args:
        ref: a zoo name ("resnet18", "ResNet-18"), a model file (.yaml/.yml), a run folder (its best checkpoint,
            else its last), a .safetensors checkpoint, foreign weights (a torchvision or timm state dict as
            .safetensors without convkit's metadata, or .pth/.pt/.bin read with ``weights_only=True``: loaded
            into the zoo twin by `convkit.models.foreign.load_foreign`), or an ``nn.Module`` (returned itself,
            given a cfg if it has none).
        num_classes, in_channels, **kwargs: the builder's arguments, for a zoo name or a model file only (a
            checkpoint fixes its head and input channels; foreign weights take num_classes and in_channels,
            which re-initialise the head and adapt the first convolution).
        input_shape: (C, H, W) to record instead of the model's own (zoo default, model file, training size).
        meta: build on the meta device (shapes only: nothing allocated, nothing initialised, no weights loaded),
            for inspection.
        device: where a real model goes.
        prefer: "best" or "last", for run folders.
        model: for a checkpoint of a model built in Python: a module of the same architecture to load into.

    Returns:
        The ``nn.Module``: trained weights in eval mode for checkpoints; freshly built (train mode) otherwise.

    Raises:
        UnknownModelError: an unknown zoo name; the message suggests close names.
        ModelFileError: a malformed model file (file and line named).
        FileNotFoundError: a path that does not exist, or a folder without checkpoints.
        CheckpointError: a file that is not a convkit safetensors checkpoint (never unpickled), or weights that
            do not fit.
        ValueError: builder arguments given for a checkpoint or a module.
        TypeError: a reference of another type.

    >>> resolve_model("resnet20", meta=True).model_cfg.input_shape
    (3, 32, 32)
    >>> _ = Path("net.yaml").write_text("input: 1x28x28\\nlayers: [conv3-8, maxpool, FC-4]\\n")
    >>> cfg = resolve_model("net.yaml", num_classes=3).model_cfg
    >>> cfg.name, cfg.source, cfg.input_shape, cfg.num_classes
    ('net', 'file', (1, 28, 28), 3)
    """
    given = {k: v for k, v in {"num_classes": num_classes, "in_channels": in_channels, **kwargs}.items()
             if v is not None}
    if isinstance(ref, nn.Module):
        if given:
            raise ValueError(f"model: {', '.join(sorted(given))} build zoo models and model files; this "
                             f"{type(ref).__name__} is already built")
        cfg = model_cfg(ref)
        if input_shape is not None:
            cfg = replace(cfg, input_shape=_shape(input_shape))
            if getattr(ref, "input_shape", ...) is None and hasattr(ref, "build"):
                ref.build(cfg.input_shape)  # an unbuilt convkit.Sequential: its lazy layers need the shape
        ref.model_cfg = cfg
        return ref
    if not isinstance(ref, str | os.PathLike):
        raise TypeError("a model is a zoo name, a model file (.yaml), a run folder, a .safetensors checkpoint or "
                        f"an nn.Module, got {type(ref).__name__}")
    path = Path(ref)
    if path.suffix.lower() in MODEL_FILE_SUFFIXES:
        return _from_file(path, given, input_shape, meta, device)
    if path.is_file() and _is_foreign(path):
        return _from_foreign(path, given, input_shape, meta, device)
    if path.is_dir() or path.is_file() or path.suffix.lower() == ".safetensors":
        if given:
            raise ValueError(f"{str(path)!r}: a trained checkpoint fixes its classes and input channels; drop "
                             f"{', '.join(sorted(given))}")
        return _from_checkpoint(path, input_shape, meta, device, prefer, model)
    if os.sep in str(ref) or "/" in str(ref):
        raise FileNotFoundError(f"{str(ref)!r}: no such run folder, checkpoint or model file")
    return _from_zoo(str(ref), given, input_shape, meta, device)


def _is_foreign(path: Path) -> bool:
    """A weights file that is not a convkit checkpoint: a torch.save state dict, or safetensors without convkit's
    metadata (torchvision's or timm's weights); `convkit.models.foreign` loads it into its zoo twin."""
    from convkit.models.foreign import PICKLE_SUFFIXES

    suffix = path.suffix.lower()
    return suffix in PICKLE_SUFFIXES or (suffix == ".safetensors" and "model" not in read_meta(path))


def _from_foreign(path: Path, given: dict, input_shape, meta: bool, device) -> nn.Module:
    from convkit.models.foreign import load_foreign

    if extra := sorted(set(given) - {"num_classes", "in_channels"}):
        raise ValueError(f"{str(path)!r}: foreign weights fix their architecture; drop {', '.join(extra)}")
    module, _ = load_foreign(path, num_classes=given.get("num_classes"), in_channels=given.get("in_channels"))
    cfg = module.model_cfg
    if input_shape is not None:
        cfg = replace(cfg, input_shape=_shape(input_shape))
    if meta:
        module = module.to("meta")
    return _finish(module, cfg, meta, device)


def _shape(shape: Sequence[int]) -> tuple[int, int, int]:
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"input_shape must be (C, H, W) of positive ints, got {shape}")
    return shape


def _from_zoo(name: str, given: dict, input_shape, meta: bool, device) -> nn.Module:
    from convkit.models._registry import build_zoo_model, model_info

    info = model_info(name)  # UnknownModelError with close names
    module = _sized(lambda: build_zoo_model(info.name, **given), info.name, meta)
    default = (int(given.get("in_channels") or info.input_size[0]), *info.input_size[1:])
    kwargs = {k: v for k, v in given.items() if k not in ("num_classes", "in_channels")}
    spec = model_spec(info.name, given.get("num_classes"), given.get("in_channels"), **kwargs)
    cfg = ModelCfg(info.name, input_shape=_shape(input_shape or default),
                   num_classes=int(getattr(module, "num_classes", None) or given.get("num_classes") or
                                   info.num_classes), spec=spec, source="zoo")
    return _finish(module, cfg, meta, device)


def _from_file(path: Path, given: dict, input_shape, meta: bool, device) -> nn.Module:
    from convkit.models.modelfile import load_model_file

    module = _sized(lambda: load_model_file(path, **given), str(path), meta)
    kwargs = {k: v for k, v in given.items() if k not in ("num_classes", "in_channels")}
    spec = model_spec(path, given.get("num_classes"), given.get("in_channels"), **kwargs)
    shape = input_shape or getattr(module, "input_shape", None)
    classes = getattr(module, "num_classes", None)
    cfg = ModelCfg(path.stem, input_shape=_shape(shape) if shape is not None else None,
                   num_classes=int(classes) if isinstance(classes, int) else None, spec=spec, source="file")
    return _finish(module, cfg, meta, device)


def _from_checkpoint(path: Path, input_shape, meta: bool, device, prefer: str, model: nn.Module | None):
    file = find_checkpoint(path, prefer)
    if meta and model is None:  # shapes only: the header says what to build, no tensor is read
        info, tensors = read_meta(file), None  # read_meta checks the file and its metadata (check_meta)
    else:
        tensors, info = load_tensors(file)
    if "model" not in info:
        raise CheckpointError(f"{file}: a safetensors file without convkit's metadata (model spec, classes, "
                              "normalisation); build the model and load the weights with model.load_state_dict")
    if tensors is not None and info.get("format") == FORMAT:  # resume.safetensors: the weights sit under "model"
        state = restore_state(info["state"], tensors, file)
        tensors = state.get("eval_model") or state["model"]
    spec = info["model"]
    if model is None:
        if tensors is not None:  # the architecture on the meta device first: nothing is allocated for bogus sizes
            _check_weights_fit(file, _build(file, spec, meta=True, fallback=True), tensors)
        model = _build(file, spec, meta=meta)
    if tensors is not None:
        try:
            model.load_state_dict(tensors)
        except RuntimeError as err:
            raise CheckpointError(f"{file}: the weights do not fit the model: "
                                  f"{shorten(' '.join(str(err).split()), 400)}") from None
    info.pop("state", None)
    run_dir = file.parent if (file.parent / "config.yaml").is_file() else None
    name = spec.get("name") or Path(spec.get("path") or file.stem).stem
    classes = info.get("classes")
    outputs = spec.get("num_classes") or getattr(model, "num_classes", None)
    if classes and isinstance(outputs, int) and len(classes) != outputs:
        raise CheckpointError(f"{file}: metadata field classes: found {shorten(classes)}, expected {outputs} names, "
                              f"one per model output, found {len(classes):,}")
    shape = input_shape or info.get("input_shape")
    cfg = ModelCfg(str(name), task=str(info.get("task", "classification")),
                   input_shape=_shape(shape) if shape else None,
                   num_classes=len(classes) if classes else spec.get("num_classes"), classes=classes,
                   mean=tuple(float(v) for v in info["mean"]) if info.get("mean") is not None else None,
                   std=tuple(float(v) for v in info["std"]) if info.get("std") is not None else None,
                   spec=spec, source="checkpoint", trained=True, checkpoint=file, run_dir=run_dir, meta=info)
    module = _finish(model, cfg, meta, device)
    return module.eval()


def _build(file: Path, spec: dict, meta: bool, fallback: bool = False) -> nn.Module | None:
    """`build_from_spec` for a checkpoint: what refuses the spec is a CheckpointError naming the file.

    With `fallback`, a model that cannot be built on the meta device for another reason gives None."""
    from convkit.errors import ConvkitError

    try:
        return build_from_spec(spec, meta=meta)
    except ConvkitError as err:
        what = "" if isinstance(err, CheckpointError) else "the model its metadata describes cannot be built: "
        raise CheckpointError(f"{file}: {what}{err}") from None
    except Exception:
        if fallback:  # a model file whose layers need real tensors at build time
            return None
        raise


def _check_weights_fit(file: Path, model: nn.Module | None, tensors: dict[str, torch.Tensor]) -> None:
    """The file's tensors have the names and shapes of the model's state_dict (checked on the meta device)."""
    if model is None:
        return
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    found = {k: tuple(v.shape) for k, v in tensors.items()}
    problems = []
    if missing := sorted(set(expected) - set(found)):
        problems.append(f"missing {shorten(missing)}")
    if unexpected := sorted(set(found) - set(expected)):
        problems.append(f"not in the model {shorten(unexpected)}")
    if wrong := [k for k in expected if k in found and found[k] != expected[k]]:
        problems.append("shapes differ: " + ", ".join(f"{shorten(k, 60)} is {list(found[k])} in the file, "
                                                      f"{list(expected[k])} in the model" for k in wrong[:3])
                        + (f" and {len(wrong) - 3} more" if len(wrong) > 3 else ""))
    if problems:
        raise CheckpointError(f"{file}: the weights do not fit the model its metadata describes: "
                              + "; ".join(problems))


def _finish(module: nn.Module, cfg: ModelCfg, meta: bool, device) -> nn.Module:
    if not meta and torch.device(device) != torch.device("cpu"):
        module = module.to(device)
    module.model_cfg = cfg
    return module


# --- checkpoints (the trained model with what inference needs) ------------------------------------------------

@dataclass
class Checkpoint:
    """A trained model with what it needs for inference: class names, normalisation, input shape.

    A view of ``model.model_cfg`` for code that holds a checkpoint rather than a model.

    Attributes:
        model: the rebuilt model with its weights, in eval mode, on CPU (or the device asked for).
        meta: the checkpoint's metadata (model spec, classes, mean, std, input_shape, epoch, metrics, config).
        path: the safetensors file.
    """

    model: nn.Module
    meta: dict
    path: Path

    @property
    def cfg(self) -> ModelCfg:
        return model_cfg(self.model)

    @property
    def classes(self) -> list[str]:
        return list(self.cfg.classes)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(C, H, W) the model was trained on."""
        return self.cfg.input_shape

    @property
    def mean(self) -> torch.Tensor:
        return self.cfg.mean_std()[0]

    @property
    def std(self) -> torch.Tensor:
        return self.cfg.mean_std()[1]

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 images (or floats on 0..255) -> the model's input, ``(x / 255 - mean) / std`` (bit-exact)."""
        return self.cfg.normalize(images)


def load_checkpoint(path_or_run_dir: str | os.PathLike, device: str | torch.device = "cpu",
                    model: nn.Module | None = None, prefer: str = "best") -> Checkpoint:
    """Rebuilds a trained model from a safetensors checkpoint or a run folder, without unpickling anything.

    The same as `resolve_model` on a run folder or checkpoint, returned as a `Checkpoint`.

    Args:
        path_or_run_dir: a .safetensors file, or a run folder (its best checkpoint, else its last).
        device: where the model goes.
        model: a model to load the weights into (needed when the run trained a model built in Python).
        prefer: "best" or "last", for run folders.

    Returns:
        A `Checkpoint`: the model in eval mode, plus class names, normalisation and input shape.

    Raises:
        CheckpointError: not a safetensors file (refused after reading its first bytes), no convkit metadata,
            or weights that do not fit the model.
        FileNotFoundError: no such file or folder.
    """
    path = Path(path_or_run_dir)
    if not path.exists():
        hint = ""
        if "/" not in str(path_or_run_dir) and path.suffix.lower() not in MODEL_FILE_SUFFIXES + (".safetensors",):
            hint = (" (a zoo name has no trained weights: train it first with `convkit train "
                    f"{path_or_run_dir}`, then pass the run folder)")
        raise FileNotFoundError(f"{path}: no such checkpoint file or run folder{hint}")
    module = _from_checkpoint(path, None, False, device, prefer, model)
    return Checkpoint(module, module.model_cfg.meta, module.model_cfg.checkpoint)
