"""Deferred building: layers whose input channels are filled in by shape inference, as in Keras.

A convkit layer or block may be declared without its input size (``Conv2d(32, 5)``, ``Dense(256)``,
``BasicBlock(64)``); :class:`convkit.Sequential` then calls ``layer.build(input_shape)`` with the
per-sample shape that reaches it. Declared with ``in_channels=...`` it is built at once and behaves
like any ``nn.Module``.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

__all__ = ["LazyModule", "NotBuiltError", "is_built"]


class NotBuiltError(RuntimeError):
    """A layer declared without its input size was called before it was built."""


def _refuse_unbuilt(module: nn.Module, args) -> None:
    raise NotBuiltError(
        f"{type(module).__name__} was declared without its input channels and has not been built: pass "
        f"in_channels=..., call .build(input_shape), or put it in convkit.Sequential(..., input_shape=...)"
    )


def is_built(module: nn.Module) -> bool:
    """False only for a convkit layer still waiting for :meth:`LazyModule.build`."""
    return getattr(module, "in_channels", 0) is not None if hasattr(module, "build") else True


class LazyModule(nn.Module):
    """Base of blocks whose children depend on the number of input channels.

    A subclass stores its configuration, then calls ``self.init_lazy(in_channels)``; it implements
    ``create(in_channels)``, which makes the children. ``create`` runs at once when ``in_channels`` is
    known, else on :meth:`build`.

    Example::

        class Twice(LazyModule):
            def __init__(self, filters, in_channels=None):
                super().__init__()
                self.filters = filters
                self.init_lazy(in_channels)

            def create(self, in_channels):
                self.conv = nn.Conv2d(in_channels, self.filters, 3, padding=1)

            def forward(self, x):
                return self.conv(self.conv(x)) if self.filters == self.in_channels else self.conv(x)
    """

    in_channels: int | None

    def init_lazy(self, in_channels: int | None) -> None:
        self.in_channels = None
        self._unbuilt_hook = self.register_forward_pre_hook(_refuse_unbuilt)
        if in_channels is not None:
            self.build((in_channels,))

    def create(self, in_channels: int) -> None:
        raise NotImplementedError

    def build(self, input_shape: Sequence[int]) -> None:
        """Create the children for a per-sample ``input_shape`` ``(C, ...)``; a no-op once built."""
        if self.in_channels is not None:
            return
        if not input_shape or int(input_shape[0]) < 1:
            raise ValueError(f"{type(self).__name__}.build needs a shape (C, H, W), got {tuple(input_shape)}")
        self.in_channels = int(input_shape[0])
        self.create(self.in_channels)
        self._unbuilt_hook.remove()
