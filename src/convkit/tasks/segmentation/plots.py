"""Pictures of semantic segmentation: the class palette, overlays with a legend, per-class IoU bars, a grid of
validation images (prediction against truth) and a run's curves.

Every figure is drawn with matplotlib's object API (`matplotlib.figure.Figure`, no pyplot: no global state,
no display needed) and saved atomically by `convkit.train.runfolder._save_figure`. Each ``save``/``plot``/``draw``
function has a ``_..._figure`` twin that returns the figure unsaved, which the tests read.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

__all__ = ["IGNORE_COLOUR", "draw_segmentation_grid", "legend_entries", "overlay", "palette", "plot_iou_bars",
           "plot_segmentation_curves", "save_overlay"]

IGNORE_INDEX = 255  # the same as convkit.tasks.segmentation.data.IGNORE_INDEX (kept here: data imports plots)
IGNORE_COLOUR = (255, 255, 255)  # how ignored pixels (255) are drawn

# matplotlib's tab20, reordered so that neighbouring class ids get unlike hues (the dark shades first), its two
# greys replaced by yellow and teal (a grey class would vanish on grayscale images).
_TAB20 = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
          (227, 119, 194), (255, 225, 25), (188, 189, 34), (23, 190, 207), (174, 199, 232), (255, 187, 120),
          (152, 223, 138), (255, 152, 150), (197, 176, 213), (196, 156, 148), (247, 182, 210), (0, 128, 128),
          (219, 219, 141), (158, 218, 229))


def _voc_colour(i: int) -> tuple[int, int, int]:
    """Pascal VOC's colour of index i (its bits spread over the three channels), for classes beyond tab20's."""
    r = g = b = 0
    for shift in range(7, -1, -1):
        r |= ((i >> 0) & 1) << shift
        g |= ((i >> 1) & 1) << shift
        b |= ((i >> 2) & 1) << shift
        i >>= 3
    return r, g, b


def palette(num_classes: int) -> np.ndarray:
    """The colour of each class: 0 (background) black, then tab20's 20 colours (no greys), then Pascal VOC's.

    Ignored pixels (255) are not a class: they are drawn in `IGNORE_COLOUR` (white).

    Args:
        num_classes: K, at most 255.

    Returns:
        uint8 array (K, 3) of RGB colours.

    Example:
        >>> palette(3)
        array([[  0,   0,   0],
               [ 31, 119, 180],
               [255, 127,  14]], dtype=uint8)
    """
    if not 0 <= num_classes <= 255:
        raise ValueError(f"palette: num_classes must be in 0..255 (255 is the ignore index), got {num_classes}")
    colours = [(0, 0, 0), *_TAB20, *(_voc_colour(i) for i in range(21, 255))]
    return np.array(colours[:num_classes], dtype=np.uint8).reshape(num_classes, 3)


def _colour_table(num_classes: int) -> np.ndarray:
    """(256, 3): the palette, then black for unused ids, and white at 255 (ignore)."""
    table = np.zeros((256, 3), dtype=np.uint8)
    table[:num_classes] = palette(num_classes)
    table[IGNORE_INDEX] = IGNORE_COLOUR
    return table


def _numpy(x) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def _rgb(image) -> np.ndarray:
    """A uint8 (C, H, W) image, C = 1 or 3 (tensor or array), as uint8 (H, W, 3)."""
    a = _numpy(image)
    if a.ndim == 2:
        a = a[None]
    if a.ndim != 3 or a.shape[0] not in (1, 3):
        raise ValueError(f"expected an image of shape (C, H, W) with C 1 or 3, got {a.shape}")
    a = np.moveaxis(a.astype(np.uint8), 0, -1)
    return np.repeat(a, 3, axis=2) if a.shape[2] == 1 else a


def _mask(mask, num_classes: int, shape: tuple[int, int] | None = None) -> np.ndarray:
    m = _numpy(mask).astype(np.int64)
    if m.ndim != 2 or (shape is not None and m.shape != shape):
        raise ValueError(f"expected a mask of shape (H, W){' ' + str(shape) if shape else ''}, got {m.shape}")
    bad = (m < 0) | ((m >= num_classes) & (m != IGNORE_INDEX))
    if bad.any():
        raise ValueError(f"the mask holds class id {int(m[bad][0])}, outside 0..{num_classes - 1} "
                         f"(and {IGNORE_INDEX}, ignore)")
    return m


def overlay(image, mask, num_classes: int, alpha: float = 0.5) -> np.ndarray:
    """The image blended with its coloured mask: ``(1 - alpha) * image + alpha * colour``, rounded, on every pixel
    that is not background (0); background pixels keep the image. Ignored pixels (255) blend with white.

    Args:
        image: uint8 (C, H, W), C = 1 (drawn grey) or 3.
        mask: (H, W) class ids 0..K-1 or 255.
        num_classes: K.
        alpha: the colour's weight, 0..1.

    Returns:
        uint8 array (H, W, 3).

    Raises:
        ValueError: shapes that do not match, or a class id outside 0..K-1 other than 255.

    Example:
        >>> image = torch.full((1, 2, 2), 100, dtype=torch.uint8)
        >>> out = overlay(image, torch.tensor([[0, 1], [2, 255]]), num_classes=3)
        >>> out[0, 0].tolist(), out[0, 1].tolist(), out[1, 1].tolist()    # background, class 1, ignore
        ([100, 100, 100], [66, 110, 140], [178, 178, 178])
    """
    rgb = _rgb(image)
    m = _mask(mask, num_classes, rgb.shape[:2])
    colour = _colour_table(num_classes)[m].astype(np.float64)
    blended = np.rint((1 - alpha) * rgb.astype(np.float64) + alpha * colour).clip(0, 255).astype(np.uint8)
    return np.where((m == 0)[..., None], rgb, blended)


def legend_entries(masks, classes: Sequence[str]) -> list[tuple[str, tuple[float, float, float]]]:
    """The legend of the classes present in one or more masks: (name, RGB colour on 0..1), in class order, with
    "ignore" (white) last when ignored pixels are present.

    Example:
        >>> [name for name, _ in legend_entries(torch.tensor([[0, 2], [255, 2]]), ["background", "cat", "dog"])]
        ['background', 'dog', 'ignore']
    """
    if isinstance(masks, (list, tuple)):
        ids = set()
        for m in masks:
            ids |= {int(i) for i in np.unique(_numpy(m))}
    else:
        ids = {int(i) for i in np.unique(_numpy(masks))}
    table = _colour_table(len(classes))
    entries = [(classes[i], tuple(float(c) / 255 for c in table[i])) for i in sorted(ids) if 0 <= i < len(classes)]
    if IGNORE_INDEX in ids:
        entries.append(("ignore", tuple(float(c) / 255 for c in IGNORE_COLOUR)))
    return entries


def _add_legend(fig, entries, **where) -> None:
    from matplotlib.patches import Patch

    handles = [Patch(facecolor=colour, edgecolor="0.3", label=name) for name, colour in entries]
    if handles:
        fig.legend(handles=handles, fontsize=8, frameon=False, **where)


def _save(fig, path) -> Path:
    from convkit.train.runfolder import _save_figure

    return _save_figure(fig, path)


def _overlay_figure(image, mask, classes: Sequence[str], title: str = ""):
    from matplotlib.figure import Figure

    picture = overlay(image, mask, len(classes))
    h, w = picture.shape[:2]
    fig = Figure(figsize=(max(3.0, 4 * w / max(h, w)) + 1.8, max(3.0, 4 * h / max(h, w))))
    ax = fig.add_axes((0, 0, 0.7, 0.9))
    ax.imshow(picture, interpolation="nearest")
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=9)
    _add_legend(fig, legend_entries(mask, classes), loc="center left", bbox_to_anchor=(0.7, 0.5))
    return fig


def save_overlay(image, mask, classes: Sequence[str], path: str | os.PathLike, title: str = "") -> Path:
    """Writes a PNG of the image with its coloured mask (`overlay`) and a legend of the classes present.

    Args:
        image: uint8 (C, H, W).
        mask: (H, W) class ids (255 ignore).
        classes: the class names (K).
        path: the PNG to write (atomically).
        title: drawn above the picture.

    Returns:
        The path.

    Example:
        >>> mask = torch.zeros(32, 32, dtype=torch.uint8); mask[8:20, 4:16] = 1
        >>> save_overlay(torch.zeros(1, 32, 32, dtype=torch.uint8), mask, ["background", "bag"], "overlay.png")
        PosixPath('overlay.png')
    """
    return _save(_overlay_figure(image, mask, classes, title), path)


def _iou_figure(iou: Sequence[float | None], classes: Sequence[str], title: str = ""):
    from matplotlib.figure import Figure

    if len(iou) != len(classes):
        raise ValueError(f"plot_iou_bars: {len(iou)} IoU values for {len(classes)} classes")
    defined = [v for v in iou if v is not None and not math.isnan(v)]
    fig = Figure(figsize=(7, 0.35 * len(classes) + 1.4))
    ax = fig.add_subplot()
    y = np.arange(len(classes))
    values = [0.0 if v is None or math.isnan(v) else float(v) for v in iou]
    colours = [tuple(c / 255 for c in rgb) if i else (0.55, 0.55, 0.55) for i, rgb in enumerate(palette(len(classes)))]
    ax.barh(y, values, color=colours, edgecolor="0.3")
    for i, v in enumerate(iou):
        undefined = v is None or math.isnan(v)
        ax.text(0.01 if undefined else min(values[i] + 0.01, 0.9), i, "n/a" if undefined else f"{v:.3f}",
                va="center", fontsize=8)
    if defined:
        miou = sum(defined) / len(defined)
        ax.axvline(miou, color="k", linestyle="--", linewidth=1, label=f"mIoU {miou:.3f}")
        ax.legend(loc="lower right", fontsize=8)
    ax.set_yticks(y, list(classes), fontsize=8)
    ax.invert_yaxis()
    ax.set(xlim=(0, 1), xlabel="IoU", title=title or "IoU per class")
    ax.grid(axis="x", alpha=0.3)
    return fig


def plot_iou_bars(iou: Sequence[float | None], classes: Sequence[str], path: str | os.PathLike,
                  title: str = "") -> Path:
    """Writes the per-class IoU as a horizontal bar chart, with the mIoU (mean of the defined values) as a dashed
    line; a class whose IoU is undefined (None or NaN: absent from truth and prediction) is marked "n/a".

    Args:
        iou: one value per class (`segmentation_metrics`' "iou").
        classes: the class names.
        path: the PNG to write.
        title: the chart's title (default "IoU per class").

    Returns:
        The path.

    Example:
        >>> plot_iou_bars([0.9, 0.5, None], ["background", "cat", "dog"], "iou.png")
        PosixPath('iou.png')
    """
    return _save(_iou_figure(iou, classes, title), path)


def _grid_figure(images, truths, predictions, classes: Sequence[str], count: int = 8):
    from matplotlib.figure import Figure

    n = min(count, len(images))
    if n < 1:
        raise ValueError("draw_segmentation_grid: no images")
    if len(truths) < n or len(predictions) < n:
        raise ValueError(f"draw_segmentation_grid: {len(images)} images, {len(truths)} truths and "
                         f"{len(predictions)} predictions")
    fig = Figure(figsize=(3 * 2.2 + 1.8, 2.2 * n + 0.4))
    axes = fig.subplots(n, 3, squeeze=False)
    k = len(classes)
    for i in range(n):
        pictures = (_rgb(images[i]), overlay(images[i], truths[i], k), overlay(images[i], predictions[i], k))
        for j, (ax, picture) in enumerate(zip(axes[i], pictures)):
            ax.imshow(picture, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(("image", "truth", "prediction")[j], fontsize=9)
    fig.subplots_adjust(left=0.02, right=0.78, top=1 - 0.3 / (2.2 * n + 0.4), bottom=0.01, wspace=0.04, hspace=0.04)
    _add_legend(fig, legend_entries([*truths[:n], *predictions[:n]], classes), loc="center left",
                bbox_to_anchor=(0.79, 0.5))
    return fig


def draw_segmentation_grid(images, truths, predictions, classes: Sequence[str], path: str | os.PathLike,
                           count: int = 8) -> Path:
    """Writes a grid of images, one row each: the image | its true mask overlaid | the predicted mask overlaid,
    with one legend of the classes present in either.

    Args:
        images: uint8 (N, C, H, W).
        truths: (N, H, W) true class ids (255 ignore).
        predictions: (N, H, W) predicted class ids.
        classes: the class names.
        path: the PNG to write.
        count: the most rows drawn (the first `count` images).

    Returns:
        The path.

    Example:
        >>> truths = torch.zeros(2, 16, 16, dtype=torch.uint8); truths[:, 4:12, 4:12] = 1
        >>> draw_segmentation_grid(torch.zeros(2, 1, 16, 16, dtype=torch.uint8), truths, truths.flip(1),
        ...                        ["background", "bag"], "grid.png")
        PosixPath('grid.png')
    """
    return _save(_grid_figure(images, truths, predictions, classes, count), path)


def _curves_figure(history: Sequence[dict], title: str = ""):
    from matplotlib.figure import Figure

    def column(key):
        return [float("nan") if r.get(key) is None else float(r[key]) for r in history]

    fig = Figure(figsize=(10, 4))
    ax_loss, ax_score = fig.subplots(1, 2)
    epochs = [r["epoch"] for r in history]
    terms = sorted({k for r in history for k in r if k.startswith("loss_")})
    for key, style in (("train_loss", "-o"), ("test_loss", "-s"), *((k, "--") for k in terms)):
        if any(r.get(key) is not None for r in history):
            ax_loss.plot(epochs, column(key), style, label=key.replace("_loss", "") if key.endswith("_loss")
                         else key, markersize=4)
    for key, style in (("test_miou", "-o"), ("test_pixel_accuracy", "-s")):
        if any(r.get(key) is not None for r in history):
            ax_score.plot(epochs, column(key), style, label=key.removeprefix("test_").replace("_", " "), markersize=4)
    ax_loss.set(xlabel="epoch", ylabel="loss", title="loss")
    ax_score.set(xlabel="epoch", ylabel="score", title="validation mIoU and pixel accuracy", ylim=(0, 1.02))
    for ax in (ax_loss, ax_score):
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_segmentation_curves(history: Sequence[dict], path: str | os.PathLike, title: str = "") -> Path:
    """curves.png of a segmentation run: the losses per epoch (train, test, and each ``loss_*`` column: the
    stacks of a stacked hourglass) on the left; the validation mIoU and pixel accuracy on the right.

    Args:
        history: one dict per epoch with "epoch", "train_loss", "test_miou", "test_pixel_accuracy" and
            optionally "test_loss" and ``loss_*`` (a missing or None value is left out).
        path: the PNG to write.
        title: the figure's title.

    Returns:
        The path.

    Example:
        >>> history = [{"epoch": 1, "train_loss": 0.9, "test_loss": 0.6, "test_miou": 0.41, "test_pixel_accuracy": 0.86},
        ...            {"epoch": 2, "train_loss": 0.5, "test_loss": 0.4, "test_miou": 0.62, "test_pixel_accuracy": 0.93}]
        >>> plot_segmentation_curves(history, "runs/x/curves.png", title="unet")
        PosixPath('runs/x/curves.png')
    """
    return _save(_curves_figure(history, title), path)
