"""Two-dimensional padding in the five border modes CNN papers and libraries use.

=============  ==========================  ============  ===================
convkit mode   ``[A B C]`` padded by 2     numpy.pad     aliases
=============  ==========================  ============  ===================
``zeros``      ``0 0 | A B C | 0 0``       constant      constant
``replicate``  ``A A | A B C | C C``       edge          edge, border
``reflect``    ``C B | A B C | B A``       reflect       mirror
``symmetric``  ``B A | A B C | C B``       symmetric     (none)
``circular``   ``B C | A B C | A B``       wrap          wrap, cyclic
=============  ==========================  ============  ===================

torch's ``F.pad`` does the work where it can. It has no symmetric mode, and refuses reflect pads as
large as the input and circular pads larger than it; those go through an index gather, which follows
``numpy.pad`` for pads of any size and is differentiable.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from convkit.layers.shapes import ShapeError

__all__ = ["PADDING_MODES", "Pad2d", "normalize_padding_mode", "pad2d"]

PADDING_MODES = ("zeros", "replicate", "reflect", "symmetric", "circular")

_ALIASES = {
    "constant": "zeros",
    "zero": "zeros",
    "edge": "replicate",
    "border": "replicate",
    "mirror": "reflect",
    "wrap": "circular",
    "cyclic": "circular",
}


def normalize_padding_mode(name: str) -> str:
    """The canonical name of a padding mode, resolving aliases and case.

    Args:
        name: one of ``PADDING_MODES`` or an alias (``constant``, ``edge``, ``border``, ``mirror``,
            ``wrap``, ``cyclic``), in any case.

    Returns:
        One of ``PADDING_MODES``.

    Raises:
        ValueError: an unknown name; the message lists the valid ones.

    Example:
        >>> normalize_padding_mode("Wrap")
        'circular'
    """
    key = name.strip().lower() if isinstance(name, str) else name
    if key in PADDING_MODES:
        return key
    if key in _ALIASES:
        return _ALIASES[key]
    aliases = ", ".join(f"{a}->{m}" for a, m in _ALIASES.items())
    raise ValueError(f"padding_mode must be one of {', '.join(PADDING_MODES)} (aliases: {aliases}); got {name!r}")


def _check_pads(pads: int | Sequence[int]) -> tuple[int, int, int, int]:
    if isinstance(pads, int) and not isinstance(pads, bool):
        pads = (pads,) * 4
    if (
        not isinstance(pads, Sequence)
        or len(pads) != 4
        or not all(isinstance(p, int) and not isinstance(p, bool) and p >= 0 for p in pads)
    ):
        raise ValueError(f"pads must be an int or 4 non-negative ints (left, right, top, bottom), got {pads!r}")
    return tuple(pads)  # type: ignore[return-value]


def _fits_torch(mode: str, pads: tuple[int, int, int, int], height: int, width: int) -> bool:
    left, right, top, bottom = pads
    if mode == "reflect":  # torch: pad < size
        return max(left, right) < width and max(top, bottom) < height
    if mode == "circular":  # torch: wraps around at most once
        return max(left, right) <= width and max(top, bottom) <= height
    return False  # symmetric: torch has no such mode


def _gather_index(size: int, before: int, after: int, mode: str, device: torch.device) -> torch.Tensor:
    """Source index of every padded position, extending the input periodically as numpy.pad does."""
    if size == 0:
        raise ValueError(f"cannot pad an empty dimension in mode {mode!r}")
    i = torch.arange(-before, size + after, device=device)
    if mode == "circular":
        return i.remainder(size)
    if mode == "reflect" and size == 1:  # period 2n-2 = 0: numpy repeats the single value
        return torch.zeros_like(i)
    # reflect skips the edge value (period 2n - 2), symmetric repeats it (period 2n)
    if mode == "reflect":
        period = 2 * size - 2
        m = i.remainder(period)
        return torch.where(m < size, m, period - m)
    period = 2 * size
    m = i.remainder(period)
    return torch.where(m < size, m, period - 1 - m)


def pad2d(x: torch.Tensor, pads: int | Sequence[int], mode: str = "zeros", value: float = 0.0) -> torch.Tensor:
    """Pad the last two dimensions of a batch ``(N, C, H, W)`` or an image ``(C, H, W)``.

    Pads of any size are allowed in every mode, with ``numpy.pad``'s semantics: past the input's
    length, reflect repeats with period ``2n - 2``, symmetric ``2n``, circular ``n``, and replicate
    repeats the edge. Differentiable in every mode.

    Args:
        x: a 3- or 4-dimensional tensor.
        pads: ``(left, right, top, bottom)``, the order of ``F.pad``, or one int for all four.
        mode: one of ``PADDING_MODES`` or an alias (see :func:`normalize_padding_mode`).
        value: the fill value of mode ``zeros``.

    Returns:
        The padded tensor, ``(..., H + top + bottom, W + left + right)``.

    Raises:
        ValueError: an unknown mode, negative pads, ``value`` given for another mode than zeros, an
            input that is not 3- or 4-dimensional, or a non-zero pad of an empty dimension. (Modes
            zeros and replicate leave the checks of the input to ``F.pad``.)

    Example:
        >>> pad2d(torch.tensor([[[1.0, 2.0, 3.0]]]), (2, 2, 0, 0), "symmetric")
        tensor([[[2., 1., 1., 2., 3., 3., 2.]]])
    """
    mode = normalize_padding_mode(mode)
    pads = _check_pads(pads)
    if mode != "zeros" and value != 0:
        raise ValueError(f"value={value} is only used by mode 'zeros', not {mode!r}")
    if not any(pads):
        return x
    # zeros and replicate never look at the input (F.pad checks it), so they stay traceable by torch.fx
    if mode in ("zeros", "replicate"):
        return F.pad(x, pads, "constant", value) if mode == "zeros" else F.pad(x, pads, "replicate")
    if x.dim() not in (3, 4):
        raise ValueError(f"pad2d expects x of shape (N, C, H, W) or (C, H, W), got shape {tuple(x.shape)}")
    height, width = x.shape[-2:]
    if _fits_torch(mode, pads, height, width):
        return F.pad(x, pads, mode)  # reflect or circular: torch's names
    left, right, top, bottom = pads
    x = x.index_select(-1, _gather_index(width, left, right, mode, x.device))
    return x.index_select(-2, _gather_index(height, top, bottom, mode, x.device))


class Pad2d(nn.Module):
    """Pads the last two dimensions of its input; a module around :func:`pad2d`.

    Args:
        pads: ``(left, right, top, bottom)`` or one int for all four.
        mode: one of ``PADDING_MODES`` or an alias.
        value: the fill value of mode ``zeros``.

    Raises:
        ValueError: an unknown mode or negative pads.

    Example:
        >>> Pad2d((1, 1, 2, 2), "reflect")(torch.zeros(8, 3, 32, 32)).shape
        torch.Size([8, 3, 36, 34])
    """

    def __init__(self, pads: int | Sequence[int], mode: str = "zeros", value: float = 0.0):
        super().__init__()
        self.pads = _check_pads(pads)
        self.mode = normalize_padding_mode(mode)
        if self.mode != "zeros" and value != 0:
            raise ValueError(f"value={value} is only used by mode 'zeros', not {self.mode!r}")
        self.value = value

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return pad2d(x, self.pads, self.mode, self.value)

    def output_shape(self, input_shape: Sequence[int]) -> tuple[int, ...]:
        """Per-sample output shape ``(C, H + top + bottom, W + left + right)`` for ``(C, H, W)``.

        Raises:
            ShapeError: ``input_shape`` is not ``(C, H, W)``.
        """
        if len(input_shape) != 3:
            raise ShapeError(f"Pad2d expects a feature map (C, H, W), got {len(input_shape)} dimension(s)")
        channels, height, width = (int(s) for s in input_shape)
        left, right, top, bottom = self.pads
        return (channels, height + top + bottom, width + left + right)

    def extra_repr(self) -> str:
        value = f", value={self.value}" if self.value else ""
        return f"{self.pads}, mode={self.mode!r}{value}"
