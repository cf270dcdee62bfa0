"""Activations, the dense layer, normalisation, dropout and the other layers around the convolutions.

Every layer here subclasses its ``torch.nn`` counterpart, so that tools which look for ``nn.Linear`` or
``nn.BatchNorm2d`` (torchinfo, fvcore, Grad-CAM, torch's fusers) see what they expect; the subclasses add
Keras-style arguments, deferred building (:class:`Dense`, :class:`BatchNorm2d`, :class:`BatchNorm1d`)
and ``output_shape``.

References:
    * A. Krizhevsky, I. Sutskever, G. E. Hinton. "ImageNet Classification with Deep Convolutional
      Neural Networks." NeurIPS 2012. (:class:`LocalResponseNorm`, section 3.3)
    * S. Ioffe, C. Szegedy. "Batch Normalization." ICML 2015. arXiv:1502.03167.
    * N. Srivastava et al. "Dropout: A Simple Way to Prevent Neural Networks from Overfitting." JMLR 2014.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import torch
from torch import nn

from convkit.layers.base import NotBuiltError
from convkit.layers.shapes import ShapeError

__all__ = [
    "ACTIVATIONS",
    "BatchNorm1d",
    "BatchNorm2d",
    "Dense",
    "Dropout",
    "Flatten",
    "LocalResponseNorm",
    "Softmax",
    "get_activation",
]

# Out of place throughout: an in-place activation overwrites the output of the layer before it, which
# breaks backward hooks on that layer (Grad-CAM, feature inspection).
ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "relu6": nn.ReLU6,
    "leaky_relu": partial(nn.LeakyReLU, 0.01),
    "elu": nn.ELU,
    "selu": nn.SELU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "swish": nn.SiLU,
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
    "softplus": nn.Softplus,
    "mish": nn.Mish,
    "hardswish": nn.Hardswish,
    "softmax": partial(nn.Softmax, dim=1),
    "identity": nn.Identity,
    "linear": nn.Identity,
    "none": nn.Identity,
}


def get_activation(spec: str | nn.Module | type[nn.Module] | None) -> nn.Module:
    """An activation module from a name, a module class or a module.

    ``None``, ``"linear"``, ``"identity"`` and ``"none"`` all give ``nn.Identity()``, so the result can
    always be called and put in a ``Sequential``. (Layers with an ``activation`` argument store no child
    at all for these.)

    Args:
        spec: a key of :data:`ACTIVATIONS` (case-insensitive, ``-`` read as ``_``), an ``nn.Module``
            subclass (instantiated without arguments), an ``nn.Module`` (returned as is), or ``None``.

    Returns:
        The module; a fresh one for a name or a class.

    Raises:
        ValueError: an unknown name; the message lists the valid names and suggests the closest.
        TypeError: ``spec`` is of another type.

    Example:
        >>> get_activation("ReLU")
        ReLU()
        >>> get_activation(None)
        Identity()
    """
    if spec is None:
        return nn.Identity()
    if isinstance(spec, nn.Module):
        return spec
    if isinstance(spec, type) and issubclass(spec, nn.Module):
        return spec()
    if not isinstance(spec, str):
        raise TypeError(f"activation must be a name, an nn.Module or an nn.Module class, got {spec!r}")
    key = spec.strip().lower().replace("-", "_")
    if key not in ACTIVATIONS:
        close = difflib.get_close_matches(key, ACTIVATIONS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"unknown activation {spec!r}{hint}; valid names: {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[key]()


def layer_activation(spec: str | nn.Module | type[nn.Module] | None) -> nn.Module | None:
    """The activation child a layer stores: ``None`` when ``spec`` means no activation."""
    module = get_activation(spec)
    return None if type(module) is nn.Identity else module


class ActivationMixin:
    """An optional ``activation`` child applied after a weight layer, shown on the layer's own repr line."""

    activation: nn.Module | None

    def set_activation(self, spec: str | nn.Module | type[nn.Module] | None) -> None:
        self.register_module("activation", layer_activation(spec))  # type: ignore[attr-defined]

    def activate(self, y: torch.Tensor) -> torch.Tensor:
        return y if self.activation is None else self.activation(y)

    def activation_repr(self) -> str:
        return "" if self.activation is None else f", activation={self.activation!r}"

    def __repr__(self) -> str:
        # one line, as Keras prints a layer, instead of torch's nested child listing
        return f"{self._get_name()}({self.extra_repr()})"  # type: ignore[attr-defined]


def build_in_place(module: nn.Module, init: Callable[[], None], keep: Sequence[str] = ()) -> None:
    """Run a torch layer's ``__init__`` on an existing, unbuilt module to create its weights.

    ``nn.Module.__init__`` resets the children, the hooks and the train/eval mode; those set on the
    unbuilt module are put back, with the attributes named in ``keep``.
    """
    saved = {k: v for k, v in vars(module).items() if k in ("training", "_modules", *keep) or "hook" in k}
    init()
    vars(module).update(saved)


def require_built(module: nn.Module, argument: str) -> None:
    """Raise :class:`NotBuiltError` when ``module`` still waits for its input size."""
    if getattr(module, argument) is None:
        raise NotBuiltError(
            f"{type(module).__name__} was declared without {argument} and has not been built: pass "
            f"{argument}=..., call .build(input_shape) with the per-sample input shape, or put it in "
            f"convkit.Sequential(..., input_shape=...)"
        )


def build_channels(module: nn.Module, input_shape: Sequence[int]) -> int:
    """The channels (first dimension) of a per-sample ``input_shape``, checked."""
    if len(input_shape) == 0 or int(input_shape[0]) < 1:
        raise ShapeError(f"{type(module).__name__}.build needs a per-sample shape (C, ...), got {tuple(input_shape)}")
    return int(input_shape[0])


def _factory(device: Any, dtype: Any) -> dict[str, Any]:
    return {"device": device, "dtype": dtype}


class Dense(ActivationMixin, nn.Linear):
    """Fully connected layer, ``y = activation(x W^T + b)``; an ``nn.Linear`` built from its input.

    Unlike Keras' ``Dense``, which acts on the last axis, an input with more than two dimensions
    ``(N, C, H, W)`` is flattened to ``(N, C*H*W)`` first, as the papers' FC layers after conv layers
    do; so no ``Flatten`` is needed between the last conv or pooling layer and the first FC layer.
    The input must therefore be batched, ``(N, ...)``.

    Args:
        units: output features.
        activation: applied after the affine map (see :func:`get_activation`); ``None`` for none.
        bias: learn an additive bias.
        in_features: input features; ``None`` defers creating the weights to :meth:`build`.
        device, dtype: of the weights.

    Attributes:
        in_features: as ``nn.Linear``; ``None`` until built. ``in_channels`` is an alias.

    Raises:
        NotBuiltError: called before it is built.

    Example:
        >>> fc = Dense(10, activation="softmax")
        >>> fc.build((16, 5, 5))
        >>> fc(torch.zeros(2, 16, 5, 5)).shape
        torch.Size([2, 10])
    """

    def __init__(
        self,
        units: int,
        activation: str | nn.Module | type[nn.Module] | None = None,
        bias: bool = True,
        in_features: int | None = None,
        device: Any = None,
        dtype: Any = None,
    ):
        if not isinstance(units, int) or units < 1:
            raise ValueError(f"units must be a positive int, got {units!r}")
        self._init_args = {"out_features": units, "bias": bias, **_factory(device, dtype)}
        if in_features is None:
            nn.Module.__init__(self)
            self.in_features, self.out_features = None, units
        else:
            nn.Linear.__init__(self, in_features, **self._init_args)
        self.set_activation(activation)

    @property
    def in_channels(self) -> int | None:
        """Alias of ``in_features`` (the flattened input size), ``None`` until built."""
        return self.in_features

    @property
    def units(self) -> int:
        """Keras' name for ``out_features``."""
        return self.out_features

    def build(self, input_shape: Sequence[int]) -> None:
        """Create the weights for a per-sample ``input_shape`` (flattened); a no-op once built."""
        if self.in_features is not None:
            return
        build_channels(self, input_shape)
        features = math.prod(int(s) for s in input_shape)
        build_in_place(self, lambda: nn.Linear.__init__(self, features, **self._init_args))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        require_built(self, "in_features")
        # unconditional (a no-op view for (N, F)): branching on x.dim() would break torch.fx tracing
        return self.activate(super().forward(x.flatten(1)))

    def output_shape(self, input_shape: Sequence[int]) -> tuple[int]:
        """``(units,)`` for any per-sample ``input_shape`` whose size is ``in_features``.

        Raises:
            ShapeError: the flattened input size is not ``in_features``.
        """
        features = math.prod(int(s) for s in input_shape)
        if self.in_features is not None and features != self.in_features:
            raise ShapeError(
                f"Dense expects {self.in_features} input features, got {features} "
                f"(the input is flattened: {' x '.join(str(s) for s in input_shape)} = {features})"
            )
        return (self.out_features,)

    def extra_repr(self) -> str:
        bias = "" if self._init_args["bias"] else ", bias=False"
        return f"in_features={self.in_features}, out_features={self.out_features}{bias}{self.activation_repr()}"


class Flatten(nn.Flatten):
    """Flattens each sample to a vector: ``(N, C, H, W) -> (N, C*H*W)``.

    Args:
        start_dim, end_dim: as ``nn.Flatten``; ``start_dim`` must leave the batch dimension alone.

    Raises:
        ValueError: ``start_dim`` is 0.

    Example:
        >>> Flatten()(torch.zeros(2, 3, 4, 5)).shape
        torch.Size([2, 60])
    """

    def __init__(self, start_dim: int = 1, end_dim: int = -1):
        if start_dim == 0:
            raise ValueError("Flatten's start_dim must be >= 1 (or negative): dimension 0 is the batch")
        super().__init__(start_dim, end_dim)

    def output_shape(self, input_shape: Sequence[int]) -> tuple[int, ...]:
        """The per-sample shape after flattening."""
        full = (1, *(int(s) for s in input_shape))
        start, end = self.start_dim % len(full), self.end_dim % len(full)
        if start == 0 or end < start:
            raise ShapeError(f"cannot flatten dimensions {self.start_dim}..{self.end_dim} of a batch {full}")
        return (*full[1:start], math.prod(full[start : end + 1]), *full[end + 1 :])


class Dropout(nn.Dropout):
    """Zeroes each element with probability ``rate`` in training and scales the rest by ``1/(1-rate)``.

    Args:
        rate: the drop probability (Keras' name for torch's ``p``).
        inplace: as ``nn.Dropout``.

    Raises:
        ValueError: ``rate`` outside [0, 1].

    Example:
        >>> Dropout(0.5).eval()(torch.ones(3))
        tensor([1., 1., 1.])
    """

    def __init__(self, rate: float = 0.5, inplace: bool = False):
        super().__init__(p=rate, inplace=inplace)

    @property
    def rate(self) -> float:
        return self.p

    def output_shape(self, input_shape: Sequence[int]) -> tuple[int, ...]:
        """The input shape: dropout does not change it."""
        return tuple(input_shape)


class Softmax(nn.Softmax):
    """Softmax over ``dim`` (the channels/classes, 1, by default).

    Example:
        >>> Softmax()(torch.zeros(1, 4))
        tensor([[0.2500, 0.2500, 0.2500, 0.2500]])
    """

    def __init__(self, dim: int = 1):
        super().__init__(dim=dim)

    def output_shape(self, input_shape: Sequence[int]) -> tuple[int, ...]:
        """The input shape."""
        return tuple(input_shape)


class _LazyBatchNorm:
    """Deferred building shared by the batch norms: ``num_features`` comes from ``input_shape[0]``."""

    _torch_class: type[nn.modules.batchnorm._BatchNorm]
    _sample_dims: tuple[int, ...]

    def _lazy_init(self, num_features: int | None, **config: Any) -> None:
        self._init_args = config
        if num_features is None:
            nn.Module.__init__(self)  # type: ignore[arg-type]
            self.num_features = None
            for name in ("eps", "momentum", "affine", "track_running_stats"):
                setattr(self, name, config[name])
        else:
            self._torch_class.__init__(self, num_features, **config)

    @property
    def in_channels(self) -> int | None:
        """Alias of ``num_features``, ``None`` until built."""
        return self.num_features

    def build(self, input_shape: Sequence[int]) -> None:
        """Create the weights and running statistics for ``input_shape`` ``(C, ...)``; a no-op once built."""
        if self.num_features is not None:
            return
        channels = build_channels(self, input_shape)  # type: ignore[arg-type]
        build_in_place(self, lambda: self._torch_class.__init__(self, channels, **self._init_args))  # type: ignore[arg-type]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        require_built(self, "num_features")  # type: ignore[arg-type]
        return self._torch_class.forward(self, x)  # type: ignore[arg-type]

    def output_shape(self, input_shape: Sequence[int]) -> tuple[int, ...]:
        """The input shape, checked.

        Raises:
            ShapeError: the wrong number of dimensions or of channels.
        """
        name = type(self).__name__
        if len(input_shape) not in self._sample_dims:
            wanted = " or ".join(str(d) for d in self._sample_dims)
            raise ShapeError(f"{name} expects {wanted} dimension(s) per sample, got {len(input_shape)}")
        if self.num_features is not None and int(input_shape[0]) != self.num_features:
            raise ShapeError(f"{name} expects {self.num_features} channels, got {input_shape[0]}")
        return tuple(int(s) for s in input_shape)

    def extra_repr(self) -> str:
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
                f"track_running_stats={self.track_running_stats}")


class BatchNorm2d(_LazyBatchNorm, nn.BatchNorm2d):
    """Batch normalisation of feature maps ``(N, C, H, W)``; an ``nn.BatchNorm2d`` built from its input.

    Args:
        momentum: torch's convention, the weight of the *new* batch statistics in the running average
            (Keras' ``momentum=0.99`` is torch's ``0.01``).
        eps: added to the variance.
        num_features: the channels C; ``None`` defers creating the weights to :meth:`build`.
        affine, track_running_stats, device, dtype: as ``nn.BatchNorm2d``.

    Raises:
        NotBuiltError: called before it is built.

    Example:
        >>> bn = BatchNorm2d()
        >>> bn.build((16, 8, 8))
        >>> bn.num_features
        16
    """

    _torch_class = nn.BatchNorm2d
    _sample_dims = (3,)

    def __init__(self, momentum: float = 0.1, eps: float = 1e-5, num_features: int | None = None,
                 affine: bool = True, track_running_stats: bool = True, device: Any = None, dtype: Any = None):
        self._lazy_init(num_features, eps=eps, momentum=momentum, affine=affine,
                        track_running_stats=track_running_stats, **_factory(device, dtype))


class BatchNorm1d(_LazyBatchNorm, nn.BatchNorm1d):
    """Batch normalisation of features ``(N, C)`` or sequences ``(N, C, L)``; built from its input.

    Arguments as :class:`BatchNorm2d`.

    Example:
        >>> bn = BatchNorm1d(num_features=10)
        >>> bn(torch.randn(4, 10)).shape
        torch.Size([4, 10])
    """

    _torch_class = nn.BatchNorm1d
    _sample_dims = (1, 2)

    def __init__(self, momentum: float = 0.1, eps: float = 1e-5, num_features: int | None = None,
                 affine: bool = True, track_running_stats: bool = True, device: Any = None, dtype: Any = None):
        self._lazy_init(num_features, eps=eps, momentum=momentum, affine=affine,
                        track_running_stats=track_running_stats, **_factory(device, dtype))


class LocalResponseNorm(nn.LocalResponseNorm):
    """AlexNet's local response normalisation across channels, with the paper's ``alpha``.

    The paper (section 3.3) normalises activity ``a`` of channel ``i`` by the ``n = size`` adjacent
    channels::

        b_i = a_i / (k + alpha * sum_{j = i - n/2}^{i + n/2} a_j^2) ** beta

    ``torch.nn.LocalResponseNorm`` follows Caffe and multiplies ``alpha`` by the *mean* of the squares,
    i.e. uses ``alpha / n``. This layer takes the paper's ``alpha`` and hands ``alpha * size`` to torch, so
    ``LocalResponseNorm()`` is AlexNet's layer (n=5, alpha=1e-4, beta=0.75, k=2). The ``alpha`` attribute
    keeps torch's meaning (``alpha * size``), so that code reading it as an ``nn.LocalResponseNorm``
    stays right; ``paper_alpha`` holds the value given here.

    Args:
        size: the number of adjacent channels ``n``.
        alpha: the paper's scale of the sum of squares.
        beta: the exponent.
        k: the additive constant.

    Example:
        >>> lrn = LocalResponseNorm(5, alpha=1e-4)
        >>> lrn.paper_alpha, lrn.alpha
        (0.0001, 0.0005)
    """

    def __init__(self, size: int = 5, alpha: float = 1e-4, beta: float = 0.75, k: float = 2.0):
        if not isinstance(size, int) or size < 1:
            raise ValueError(f"size must be a positive int (the number of adjacent channels), got {size!r}")
        super().__init__(size, alpha=alpha * size, beta=beta, k=k)
        self.paper_alpha = alpha

    def output_shape(self, input_shape: Sequence[int]) -> tuple[int, ...]:
        """The input shape ``(C, ...)``, which needs at least two dimensions.

        Raises:
            ShapeError: fewer than two dimensions per sample.
        """
        if len(input_shape) < 2:
            raise ShapeError(f"LocalResponseNorm expects (C, H, W) or (C, L) per sample, got {tuple(input_shape)}")
        return tuple(int(s) for s in input_shape)

    def extra_repr(self) -> str:
        return f"{self.size}, alpha={self.paper_alpha} (torch alpha={self.alpha:g}), beta={self.beta}, k={self.k}"
