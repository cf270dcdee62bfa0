"""The learning-rate finder (Smith, 2017; fastai's lr_find): an exponential sweep, one batch per rate.

The loss is smoothed with a bias-corrected moving average; the suggestion is the rate where the smoothed
loss falls fastest (per decade of the rate), looked for before the loss reaches its minimum.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


@dataclass
class LRFinderResult:
    """The sweep: rates tried, raw and smoothed losses, and the suggested rate (None if the curve is flat)."""

    lrs: list[float]
    losses: list[float]
    raw_losses: list[float]
    suggestion: float | None

    def plot(self, path: str | os.PathLike):
        """Writes the smoothed loss against the rate (log axis) with the suggestion marked, as PNG."""
        from convkit.train.runfolder import plot_lr_finder

        return plot_lr_finder(self.lrs, self.losses, self.suggestion, path)

    def to_dict(self) -> dict:
        return {"suggestion": self.suggestion, "lrs": self.lrs, "losses": self.losses}


def suggest_lr(lrs: list[float], losses: list[float]) -> float | None:
    """The rate of steepest descent of `losses` against log10(lr), before the loss's minimum.

    The first tenth of the sweep is left out: there the average has seen few batches and its slope is noise.

    Example:
        >>> suggest_lr([1e-4, 1e-3, 1e-2, 1e-1, 1], [2.3, 2.2, 1.5, 1.2, 9.0])   # the loss falls fastest at 0.01
        0.01
        >>> print(suggest_lr([1e-3, 1e-2, 1e-1], [1.0, 1.0, 1.0]))               # a flat curve: no suggestion
        None
    """
    if len(lrs) < 3:
        return None
    losses_a = np.asarray(losses, dtype=np.float64)
    finite = np.isfinite(losses_a)
    end = int(np.argmin(np.where(finite, losses_a, np.inf))) + 1
    begin = min(len(lrs) // 10, max(0, end - 3))
    if end - begin < 3:
        return None
    slope = np.gradient(losses_a[begin:end], np.log10(np.asarray(lrs[begin:end])))
    if not np.isfinite(slope).any() or np.nanmin(slope) >= 0:
        return None
    return float(lrs[begin + int(np.nanargmin(slope))])


def lr_sweep(step: Callable[[float], float], start: float = 1e-6, end: float = 10.0, steps: int = 100,
             smoothing: float = 0.98, diverge: float = 4.0) -> LRFinderResult:
    """Trains one batch at each of `steps` rates spaced evenly on a log scale; stops when the loss explodes.

    Args:
        step: trains one batch at the given rate and returns its loss.
        start, end: the range of rates.
        steps: how many rates (batches).
        smoothing: the moving average's factor.
        diverge: stop once the smoothed loss exceeds this multiple of its minimum (or is not finite).

    Returns:
        An `LRFinderResult`; every rate tried lies in [start, end].

    Example:
        >>> w = torch.tensor(5.0, requires_grad=True)
        >>> def step(lr):                  # one gradient step on the loss w**2, at rate lr; returns the loss
        ...     loss = w**2
        ...     loss.backward()
        ...     with torch.no_grad():
        ...         w.sub_(lr * w.grad)
        ...     w.grad = None
        ...     return loss.item()
        >>> result = lr_sweep(step, 1e-3, 100.0, 50)
        >>> len(result.lrs)                # stopped early: beyond lr 1 each step overshoots and the loss explodes
        40
        >>> f"{result.suggestion:.2g}"
        '0.14'
    """
    if not 0 < start < end:
        raise ValueError(f"need 0 < start < end, got start={start}, end={end}")
    factor = (end / start) ** (1 / max(1, steps - 1))
    lrs, losses, raw = [], [], []
    average, best = 0.0, math.inf
    for i in range(steps):
        lr = start * factor**i
        loss = float(step(lr))
        raw.append(loss)
        lrs.append(lr)
        average = smoothing * average + (1 - smoothing) * loss
        smoothed = average / (1 - smoothing ** (i + 1))
        losses.append(smoothed)
        if not math.isfinite(smoothed) or (i > 0 and smoothed > diverge * best):
            break
        best = min(best, smoothed)
    return LRFinderResult(lrs, losses, raw, suggest_lr(lrs, losses))
