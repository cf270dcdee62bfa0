"""The model zoo's registry, in the style of timm: builders registered by name.

A family file decorates each small builder function with :func:`register_model`; users call
:func:`create_model` and :func:`list_models`.
"""

from __future__ import annotations

import contextlib
import difflib
import fnmatch
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from torch import nn

from convkit.errors import ConvkitError

__all__ = ["ModelArgumentError", "ModelInfo", "register_model", "create_model", "list_models", "model_info", "UnknownModelError"]


@dataclass(frozen=True)
class ModelInfo:
    """What the zoo knows about a model before building it.

    Attributes:
        name: registry name, e.g. ``"vgg16"``.
        family: the family file's name, e.g. ``"vgg"``.
        paper: short citation of the paper that defines the architecture.
        input_size: the default per-sample input shape ``(C, H, W)``.
        num_classes: the default number of classes.
        description: one line on what this variant is.
        torchvision: the torchvision builder whose parameter count and state_dict match, if any.
    """

    name: str
    family: str
    paper: str
    input_size: tuple[int, int, int]
    num_classes: int
    description: str = ""
    torchvision: str | None = None
    builder: Callable[..., nn.Module] | None = field(default=None, repr=False, compare=False)


_REGISTRY: dict[str, ModelInfo] = {}


class ModelArgumentError(ValueError, ConvkitError):
    """A zoo builder refused its arguments (a misspelt or ill-typed --model-arg); the message names them."""


class UnknownModelError(KeyError, ConvkitError):
    """No model of that name in the zoo (and no model file at that path)."""

    def __str__(self) -> str:  # KeyError quotes its message; this one is a sentence
        return str(self.args[0])


def register_model(
    *,
    paper: str,
    input_size: tuple[int, int, int] = (3, 224, 224),
    num_classes: int = 1000,
    description: str = "",
    torchvision: str | None = None,
    name: str | None = None,
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Register a builder ``fn(num_classes=..., in_channels=..., **kwargs) -> nn.Module`` under its name.

    Example::

        @register_model(paper="LeCun et al., 1998", input_size=(1, 32, 32), num_classes=10)
        def lenet5(num_classes=10, in_channels=1, **kwargs):
            return LeNet5(num_classes=num_classes, in_channels=in_channels, **kwargs)
    """

    def decorate(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        key = name or fn.__name__
        if key in _REGISTRY:
            raise ValueError(f"model {key!r} is registered twice")
        family = fn.__module__.rsplit(".", 1)[-1]
        _REGISTRY[key] = ModelInfo(key, family, paper, tuple(input_size), num_classes, description, torchvision, fn)
        return fn

    return decorate


def _ensure_loaded() -> None:
    # Importing the package registers every family file.
    import convkit.models  # noqa: F401


def list_models(pattern: str = "*", family: str | None = None) -> list[str]:
    """Names in the zoo matching a shell-style ``pattern`` (``"resnet*"``), sorted.

    >>> list_models("vgg1?")
    ['vgg11', 'vgg13', 'vgg16', 'vgg19']
    """
    _ensure_loaded()
    names = [n for n, info in _REGISTRY.items() if fnmatch.fnmatch(n, pattern.lower())]
    if family is not None:
        names = [n for n in names if _REGISTRY[n].family == family]
    return sorted(names, key=_natural_key)


def _natural_key(name: str) -> list:
    import re

    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def _canonical(name: str) -> str:
    return name.lower().replace("-", "").replace("_", "")


def model_info(name: str) -> ModelInfo:
    """The :class:`ModelInfo` of a zoo model.

    Raises:
        UnknownModelError: no such name; the message suggests the closest names.
    """
    _ensure_loaded()
    if name in _REGISTRY:
        return _REGISTRY[name]
    by_canonical = {_canonical(n): info for n, info in _REGISTRY.items()}
    try:
        return by_canonical[_canonical(name)]  # "ResNet-18" and "vgg16-bn" as people write them
    except KeyError:
        close = difflib.get_close_matches(name.lower(), list(_REGISTRY), n=4, cutoff=0.5)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise UnknownModelError(
            f"unknown model {name!r}.{hint} `convkit models` lists the zoo; a model file ends in .yaml or .yml."
        ) from None


def create_model(
    name: str | Path, num_classes: int | None = None, in_channels: int | None = None, **kwargs
) -> nn.Module:
    """Build a zoo model by name, or a model from a YAML model file (or load a run's trained model).

    The same as `convkit.models.resolve_model` (the one resolver of model references): the model carries its
    configuration as ``model.model_cfg``.

    Args:
        name: a zoo name (see :func:`list_models`) or the path of a model file (``.yaml``/``.yml``); a run
            folder or a ``.safetensors`` checkpoint gives the trained model.
        num_classes: classes of the classifier head; the model's default when ``None``.
        in_channels: image channels (1 for grayscale, 3 for RGB); the model's default when ``None``.
        **kwargs: passed to the family's builder (e.g. ``batch_norm=True``, ``dropout=0.2``).

    Returns:
        An ``nn.Module`` with ``forward_features``, ``forward_head`` and ``reset_classifier``.

    Raises:
        UnknownModelError: no such model; the message suggests the closest names.

    >>> model = create_model("resnet18", num_classes=10)
    >>> model(torch.zeros(1, 3, 224, 224)).shape
    torch.Size([1, 10])
    """
    from convkit.models.reference import resolve_model

    return resolve_model(name, num_classes=num_classes, in_channels=in_channels, **kwargs)


def build_zoo_model(name: str, **kwargs) -> nn.Module:
    """Calls the registered builder of zoo model `name` (no resolution of files or runs: see `create_model`).

    Raises:
        UnknownModelError: no such model; the message suggests the closest names.
        ModelArgumentError: the builder refused the arguments (named in the message).
    """
    info = model_info(str(name))
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    try:
        model = info.builder(**kwargs)
    except (TypeError, ValueError) as err:
        if isinstance(err, ConvkitError):
            raise
        given = ", ".join(f"{k}={v!r}" for k, v in kwargs.items()) or "no arguments"
        raise ModelArgumentError(f"{info.name}: cannot be built with {given}: {err}") from err
    model.model_name = info.name
    return model


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (optionally only those with ``requires_grad``)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


_INITIALISERS = ("uniform_", "normal_", "trunc_normal_", "constant_", "ones_", "zeros_", "xavier_uniform_",
                 "xavier_normal_", "kaiming_uniform_", "kaiming_normal_", "orthogonal_")


@contextlib.contextmanager
def _skip_initialisation():
    # Meta tensors hold no values to initialise, and torch's first random fill of one imports its whole
    # compiler stack (seconds); shapes are all that a meta model is for.
    saved = {name: getattr(nn.init, name) for name in _INITIALISERS}
    try:
        for name in _INITIALISERS:
            setattr(nn.init, name, lambda tensor, *args, **kwargs: tensor)
        yield
    finally:
        for name, fn in saved.items():
            setattr(nn.init, name, fn)


def create_meta_model(name: str | Path, **kwargs) -> nn.Module:
    """Build a model on the meta device: every shape is real, no memory is allocated, nothing is initialised.

    >>> create_meta_model("vgg16").classifier[0].weight.device
    device(type='meta')
    """
    from convkit.models.reference import resolve_model

    return resolve_model(name, meta=True, **kwargs)
