"""Classic image kernels (the lectures' blur, Laplacian, sharpen, Sobel, emboss) applied to a picture.

Conventions:

* **Cross-correlation, as in CNNs.** :func:`apply_kernel` slides the kernel as written, without flipping it
  (``out[y, x] = sum k[i, j] * in[y + i - ci, x + j - cj]``), which is what ``torch.nn.functional.conv2d``,
  convkit's :class:`~convkit.layers.Conv2d`, every CNN paper and ``scipy.signal.correlate2d`` compute. With
  a true (flipped) convolution the antisymmetric kernels (Sobel, emboss) change sign; the symmetric ones
  (blur, Laplacian, sharpen) do not care.
* **Same size out.** The image is padded by ``k - 1`` pixels per axis in the chosen border mode (see
  :mod:`convkit.layers.padding`); an even kernel gets the odd pixel after (right/bottom), like
  TensorFlow's ``"same"``. The centre tap is ``k[(kh - 1) // 2, (kw - 1) // 2]``.
* **Per channel.** Each channel of a ``(C, H, W)`` image is filtered alone (a depthwise convolution).
* ``sobel-x`` is positive where brightness increases to the right, ``sobel-y`` where it increases downwards.

>>> from convkit.explain.kernels import apply_kernel, load_kernel, save_kernel_comparison
>>> image = torch.tensor([[[0, 0, 255, 255]] * 3], dtype=torch.uint8)   # (1, 3, 4): dark left, bright right
>>> apply_kernel(image, "sobel-x", padding="replicate")             # (C, H, W) float
tensor([[[   0., 1020., 1020.,    0.],
         [   0., 1020., 1020.,    0.],
         [   0., 1020., 1020.,    0.]]])
>>> save_kernel_comparison(image, "edge", "edge.png")               # before | kernel | after
PosixPath('edge.png')
"""

from __future__ import annotations

import difflib
import math
import os
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont

from convkit.errors import ConvkitError
from convkit.layers.padding import normalize_padding_mode, pad2d
from convkit.layers.shapes import same_padding

__all__ = [
    "KERNELS",
    "KERNEL_DESCRIPTIONS",
    "KernelError",
    "apply_kernel",
    "comparison_layout",
    "display_output",
    "load_kernel",
    "save_kernel_comparison",
]


def _k(rows: Sequence[Sequence[float]], scale: float = 1.0) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64) * scale


KERNELS: dict[str, torch.Tensor] = {
    "identity": _k([[0, 0, 0], [0, 1, 0], [0, 0, 0]]),
    "blur": _k([[1] * 3] * 3, 1 / 9),
    "blur5": _k([[1] * 5] * 5, 1 / 25),
    "gaussian": _k([[1, 2, 1], [2, 4, 2], [1, 2, 1]], 1 / 16),
    "edge": _k([[0, 1, 0], [1, -4, 1], [0, 1, 0]]),
    "sharpen": _k([[0, -1, 0], [-1, 5, -1], [0, -1, 0]]),
    "sobel-x": _k([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]]),
    "sobel-y": _k([[-1, -2, -1], [0, 0, 0], [1, 2, 1]]),
    "emboss": _k([[-2, -1, 0], [-1, 1, 1], [0, 1, 2]]),
}
"""Name -> 2-D float64 kernel, applied as cross-correlation (not flipped). Use :func:`load_kernel` to get a copy."""

KERNEL_DESCRIPTIONS = {
    "identity": "leaves the image unchanged (a check of the padding and alignment)",
    "blur": "3x3 box blur: the mean of the 9 neighbours",
    "blur5": "5x5 box blur: the mean of the 25 neighbours",
    "gaussian": "3x3 binomial (Gaussian-like) blur, weights 1-2-1",
    "edge": "the Laplacian [[0,1,0],[1,-4,1],[0,1,0]]: zero on flat and linear regions, large at edges",
    "sharpen": "identity minus the Laplacian [[0,-1,0],[-1,5,-1],[0,-1,0]]: boosts edges",
    "sobel-x": "horizontal gradient: positive where brightness increases to the right (vertical edges)",
    "sobel-y": "vertical gradient: positive where brightness increases downwards (horizontal edges)",
    "emboss": "a diagonal gradient plus the image: a relief lit from the bottom right",
}

_ALIASES = {
    "box": "blur", "mean": "blur", "box5": "blur5", "binomial": "gaussian", "laplacian": "edge",
    "laplace": "edge", "sobelx": "sobel-x", "sobel_x": "sobel-x", "sobely": "sobel-y", "sobel_y": "sobel-y",
}


class KernelError(ValueError, ConvkitError):
    """A kernel name that is not known, or a kernel file that cannot be read; the message says what is expected."""


# -- loading ----------------------------------------------------------------------------------------------


def load_kernel(name_or_file: str | os.PathLike | torch.Tensor | np.ndarray | Sequence) -> torch.Tensor:
    """A 2-D float64 kernel from a name in :data:`KERNELS`, a file, or values.

    Args:
        name_or_file: a name (``"blur"``, ``"edge"``, ``"sobel-x"``..., any case; ``laplacian``, ``box``
            are aliases), a file of numbers (text or CSV: one row per line, separated by commas, spaces,
            tabs or semicolons, ``#`` comments, fractions such as ``1/9`` allowed; or a ``.npy`` array), or
            the values themselves (a tensor, array or nested list). Any rectangular size, odd or even.

    Returns:
        A new ``(kh, kw)`` float64 tensor.

    Raises:
        KernelError: an unknown name (the message suggests close names and lists the known ones), or a
            file that is not a rectangle of finite numbers (the message names the file and line).

    Example:
        >>> load_kernel("edge")
        tensor([[ 0.,  1.,  0.],
                [ 1., -4.,  1.],
                [ 0.,  1.,  0.]], dtype=torch.float64)
    """
    if isinstance(name_or_file, (torch.Tensor, np.ndarray, list, tuple)):
        return _check_values(torch.as_tensor(np.asarray(name_or_file, dtype=np.float64)), "kernel")
    text = os.fspath(name_or_file)
    key = text.strip().lower()
    key = _ALIASES.get(key, key)
    if key in KERNELS:
        return KERNELS[key].clone()
    path = Path(text)
    if path.is_file():
        return _read_kernel_file(path)
    raise KernelError(_unknown_kernel_message(text))


def kernel_label(name_or_file: str | os.PathLike | object) -> str:
    """A short name for a kernel argument: the canonical name, a file's stem, or ``"custom"``."""
    if isinstance(name_or_file, (str, os.PathLike)):
        key = os.fspath(name_or_file).strip().lower()
        key = _ALIASES.get(key, key)
        return key if key in KERNELS else Path(name_or_file).stem
    return "custom"


def _unknown_kernel_message(text: str) -> str:
    names = list(KERNELS) + list(_ALIASES)
    close = difflib.get_close_matches(text.strip().lower(), names, n=3, cutoff=0.5)
    suggestions = dict.fromkeys(_ALIASES.get(c, c) for c in close)  # aliases of one kernel count once
    hint = f"; did you mean {' or '.join(map(repr, suggestions))}?" if close else "."
    return (f"unknown kernel {text!r}{hint} Known kernels: {', '.join(KERNELS)}; or give a file of numbers "
            "(text/CSV rows, or .npy)")


def _read_kernel_file(path: Path) -> torch.Tensor:
    if path.suffix.lower() == ".npy":
        try:
            values = np.load(path, allow_pickle=False)
        except Exception as err:  # numpy raises ValueError, OSError, EOFError... for damaged files
            raise KernelError(f"{path}: cannot read as a .npy array ({type(err).__name__}: {err})") from err
        if values.ndim != 2 or not np.issubdtype(values.dtype, np.number):
            raise KernelError(f"{path}: expected a 2-D numeric array, got shape {values.shape} of {values.dtype}")
        return _check_values(torch.as_tensor(values.astype(np.float64)), str(path))
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise KernelError(f"{path}: cannot read as text ({type(err).__name__}: {err}); expected rows of "
                          "numbers or a .npy file") from err
    rows, first_line = [], 0
    for number, line in enumerate(lines, 1):
        line = line.split("#", 1)[0].replace(",", " ").replace(";", " ").strip()
        if not line:
            continue
        row = [_parse_number(token, path, number) for token in line.split()]
        if rows and len(row) != len(rows[0]):
            raise KernelError(f"{path}: line {number} has {len(row)} numbers but line {first_line} has "
                              f"{len(rows[0])}; expected a rectangle of numbers, one kernel row per line")
        first_line = first_line or number
        rows.append(row)
    if not rows:
        raise KernelError(f"{path}: no numbers found; expected one kernel row per line, e.g. '0 1 0'")
    return _check_values(torch.tensor(rows, dtype=torch.float64), str(path))


def _parse_number(token: str, path: Path, line: int) -> float:
    try:
        return float(Fraction(token)) if "/" in token else float(token)
    except (ValueError, ZeroDivisionError):
        raise KernelError(f"{path}: line {line}: {token!r} is not a number; expected numbers separated by "
                          "commas or spaces (fractions like 1/9 are fine)") from None


def _check_values(kernel: torch.Tensor, where: str) -> torch.Tensor:
    if kernel.dim() != 2 or kernel.numel() == 0:
        raise KernelError(f"{where}: expected a non-empty 2-D kernel, got shape {tuple(kernel.shape)}")
    if not torch.isfinite(kernel).all():
        raise KernelError(f"{where}: the kernel holds NaN or infinite values")
    return kernel.to(torch.float64).clone()


# -- applying ---------------------------------------------------------------------------------------------


def same_pads(kernel_hw: Sequence[int]) -> tuple[int, int, int, int]:
    """``(left, right, top, bottom)`` keeping the size for stride 1; an even kernel gets the odd pixel after.

    >>> same_pads((3, 4))
    (1, 2, 1, 1)
    """
    kh, kw = kernel_hw
    # stride 1: same_padding never reads the size, so 0 stands for any
    return (*same_padding(0, kw), *same_padding(0, kh))


def apply_kernel(image: torch.Tensor, kernel: torch.Tensor | str | os.PathLike | Sequence,
                 padding: str = "zeros") -> torch.Tensor:
    """Filter each channel of an image with a kernel (cross-correlation), keeping its size.

    Args:
        image: ``(C, H, W)`` (or ``(H, W)``), uint8 (values 0..255) or float.
        kernel: a 2-D tensor, or anything :func:`load_kernel` takes (a name such as ``"blur"``, a file).
        padding: the border mode: ``zeros``, ``replicate``, ``reflect``, ``symmetric``, ``circular`` (or an
            alias, see :func:`convkit.layers.padding.normalize_padding_mode`).

    Returns:
        A float tensor of the image's shape (float64 for a float64 image, else float32), in the image's
        units (0..255 for uint8).

    Raises:
        KernelError: an unknown kernel name or a bad kernel file.
        ValueError: an image that is not 2- or 3-dimensional, or an unknown padding mode.

    Example:
        >>> out = apply_kernel(torch.full((1, 4, 4), 7.0), "blur", padding="replicate")
        >>> out.shape, torch.allclose(out, torch.tensor(7.0))
        (torch.Size([1, 4, 4]), True)
    """
    padding = normalize_padding_mode(padding)
    weights = load_kernel(kernel) if not isinstance(kernel, torch.Tensor) else _check_values(kernel, "kernel")
    if image.dim() not in (2, 3):
        raise ValueError(f"image must be (C, H, W) or (H, W), got shape {tuple(image.shape)}")
    dtype = torch.float64 if image.dtype == torch.float64 else torch.float32
    x = image.to(dtype)
    planes = x.reshape(-1, 1, *x.shape[-2:])  # channels as a batch: each one filtered alone
    planes = pad2d(planes, same_pads(weights.shape), padding)
    out = F.conv2d(planes, weights.to(dtype)[None, None])
    return out.reshape(x.shape)


# -- display ----------------------------------------------------------------------------------------------

DISPLAY_MODES = ("auto", "clip", "diverging", "abs", "normalize")

# a blue-white-red diverging ramp (the ends of matplotlib's "coolwarm"), 0 in white
_NEGATIVE, _ZERO, _POSITIVE = np.array([59, 76, 192.0]), np.array([255, 255, 255.0]), np.array([180, 4, 38.0])


def _value_range(image: torch.Tensor) -> tuple[float, float]:
    """The range the image's values live in: 0..255 for uint8, 0..1 for a float image inside it, else its own."""
    if image.dtype == torch.uint8:
        return 0.0, 255.0
    low, high = float(image.min()), float(image.max())
    if low >= 0 and high <= 1:
        return 0.0, 1.0
    return (low, high) if high > low else (low, low + 1)


def auto_display(kernel: torch.Tensor) -> str:
    """``diverging`` for a kernel summing to 0 (edges, gradients: signed output), ``clip`` for one summing
    to 1 (blur, sharpen, emboss: output in the image's range), ``normalize`` otherwise."""
    total, scale = float(kernel.sum()), float(kernel.abs().sum())
    if abs(total) <= 1e-6 * scale:
        return "diverging"
    if abs(total - 1) <= 1e-6 * scale:
        return "clip"
    return "normalize"


def _gray_to_rgb(a: np.ndarray) -> np.ndarray:
    return np.repeat(a[..., None], 3, axis=-1)


def _planes_to_rgb(planes: np.ndarray) -> np.ndarray:
    """``(C, H, W)`` -> ``(H, W, 3)``: three channels as RGB, anything else as the gray of the first."""
    return planes[:3].transpose(1, 2, 0).copy() if planes.shape[0] >= 3 else _gray_to_rgb(planes[0])


def _diverging(values: np.ndarray, limit: float) -> np.ndarray:
    t = np.clip(values / limit, -1, 1)[..., None] if limit > 0 else np.zeros((*values.shape, 1))
    rgb = np.where(t < 0, _ZERO + (_NEGATIVE - _ZERO) * -t, _ZERO + (_POSITIVE - _ZERO) * t)
    return np.rint(rgb).astype(np.uint8)


def display_output(output: torch.Tensor, mode: str = "clip",
                   value_range: tuple[float, float] = (0.0, 255.0)) -> tuple[np.ndarray, str]:
    """Map a filtered image to displayable RGB, and say how.

    Args:
        output: ``(C, H, W)`` float, C = 1 or 3 (or 4: alpha is dropped).
        mode: ``clip`` (clip to ``value_range``, the image's own units), ``diverging`` (channel mean,
            blue for negative, white for 0, red for positive, symmetric about 0), ``abs`` (channel mean of
            ``|value|`` scaled from 0 to its maximum), ``normalize`` (each channel's min..max to black..white).
        value_range: the input's range, used by ``clip``.

    Returns:
        ``(uint8 array (H, W, 3), a short description for a title)``.

    Raises:
        ValueError: an unknown mode.

    Example:
        >>> image = torch.tensor([[[0, 0, 255, 255]] * 3], dtype=torch.uint8)
        >>> rgb, how = display_output(apply_kernel(image, "edge"), "diverging")
        >>> rgb.shape, how
        ((3, 4, 3), 'blue = −510, white = 0, red = +510')
    """
    values = output.detach().to(torch.float64).numpy()[:3]
    low, high = value_range
    channels = f" (mean of {values.shape[0]} channels)" if values.shape[0] > 1 else ""
    if mode == "clip":
        scaled = np.rint((np.clip(values, low, high) - low) / (high - low) * 255).astype(np.uint8)
        return _planes_to_rgb(scaled), f"values clipped to {low:g}..{high:g} (black..white)"
    if mode == "diverging":
        mean = values.mean(0)
        limit = float(np.abs(mean).max())
        return _diverging(mean, limit), f"blue = \u2212{limit:.3g}, white = 0, red = +{limit:.3g}{channels}"
    if mode == "abs":
        mean = np.abs(values).mean(0)
        peak = float(mean.max())
        scaled = mean / peak * 255 if peak > 0 else mean
        return _gray_to_rgb(np.rint(scaled).astype(np.uint8)), f"|value| from 0 to {peak:.3g} as black..white{channels}"
    if mode == "normalize":
        lows = values.min(axis=(1, 2), keepdims=True)
        spans = np.maximum(values.max(axis=(1, 2), keepdims=True) - lows, 1e-12)
        scaled = np.rint((values - lows) / spans * 255).astype(np.uint8)
        return _planes_to_rgb(scaled), "each channel's min..max as black..white"
    raise ValueError(f"display mode must be one of {', '.join(DISPLAY_MODES[1:])}, got {mode!r}")


def _input_rgb(image: torch.Tensor) -> np.ndarray:
    low, high = _value_range(image)
    return display_output(image.to(torch.float64).reshape(-1, *image.shape[-2:]), "clip", (low, high))[0]


# -- the comparison picture ---------------------------------------------------------------------------------

_MARGIN = 12
_TITLE_LINES = 2
_LINE_HEIGHT = 18
_FONT_SIZE = 13
_CAPTION_LINES = 2
_KERNEL_PANEL_MAX = 216  # pixels of the kernel grid's longer side
_MIN_COLUMN = 160  # pixels: room for a panel's title
_MIN_WIDTH = 600  # pixels: room for the caption
_MODE_TITLES = {"clip": "clipped to the input's range", "diverging": "diverging map (signed)",
                "abs": "|value|", "normalize": "min..max stretched"}


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """DejaVu Sans from matplotlib's data (it has the minus sign and the math symbols), else Pillow's default."""
    try:
        import matplotlib

        return ImageFont.truetype(os.path.join(matplotlib.get_data_path(), "fonts", "ttf", "DejaVuSans.ttf"), size)
    except (ImportError, OSError):
        return ImageFont.load_default(size)


def panel_scale(height: int, width: int) -> float:
    """Display scale of an image panel: small images grow by a whole factor (pixels stay square and sharp)
    up to 256 px, large ones shrink to at most 512 px, the rest stay as they are."""
    longest = max(height, width)
    if longest < 128:
        return float(max(1, 256 // longest))
    return min(1.0, 512 / longest)


def comparison_layout(image_hw: Sequence[int], kernel_hw: Sequence[int]) -> dict[str, tuple[int, int, int, int]]:
    """Where :func:`save_kernel_comparison` draws each panel: boxes ``(x0, y0, x1, y1)``, end exclusive.

    The image panels are the image scaled by :func:`panel_scale`; each stands in a column at least
    ``_MIN_COLUMN`` pixels wide so that narrow images keep readable titles.

    Args:
        image_hw: the image's ``(H, W)``.
        kernel_hw: the kernel's ``(kh, kw)``.

    Returns:
        ``{"before", "kernel", "after", "canvas"}`` boxes; ``canvas`` is ``(0, 0, width, height)``.

    Example:
        >>> comparison_layout((64, 64), (3, 3))["after"]
        (436, 48, 692, 304)
    """
    h, w = image_hw
    scale = panel_scale(h, w)
    ph, pw = max(1, round(h * scale)), max(1, round(w * scale))
    cell = _kernel_cell(kernel_hw)
    kh, kw = kernel_hw[0] * cell, kernel_hw[1] * cell
    column, kernel_column = max(pw, _MIN_COLUMN), max(kw, 120)
    top = _MARGIN + _TITLE_LINES * _LINE_HEIGHT
    body = max(ph, kh)
    x_kernel = _MARGIN + column + 2 * _MARGIN
    x_after = x_kernel + kernel_column + 2 * _MARGIN
    kernel_x0, kernel_y0 = x_kernel + (kernel_column - kw) // 2, top + (body - kh) // 2
    width = max(x_after + column + _MARGIN, _MIN_WIDTH)
    return {
        "before": (_MARGIN, top, _MARGIN + pw, top + ph),
        "kernel": (kernel_x0, kernel_y0, kernel_x0 + kw, kernel_y0 + kh),
        "after": (x_after, top, x_after + pw, top + ph),
        "canvas": (0, 0, width, top + body + _MARGIN + _CAPTION_LINES * _LINE_HEIGHT),
    }


def _kernel_cell(kernel_hw: Sequence[int]) -> int:
    return max(2, min(40, _KERNEL_PANEL_MAX // max(kernel_hw)))


def _fraction_of(kernel: torch.Tensor) -> tuple[int, torch.Tensor] | None:
    """``(n, integer kernel)`` with ``kernel = integer kernel / n`` for a small n (blur: 9, ones), or None."""
    for n in range(1, 257):
        scaled = kernel * n
        if torch.allclose(scaled, scaled.round(), atol=1e-9) and scaled.abs().max() < 1000:
            return n, scaled.round()
    return None


def _number_text(value: float) -> str:
    return f"{value:.0f}" if float(value).is_integer() else f"{value:.2g}"


def _draw_kernel(draw: ImageDraw.ImageDraw, kernel: torch.Tensor, box: tuple[int, int, int, int]) -> str:
    """The kernel as a grid of cells coloured by sign (blue < 0 < red), with its numbers when they fit."""
    kh, kw = kernel.shape
    cell = (box[2] - box[0]) // kw
    fraction = _fraction_of(kernel)
    shown, prefix = (fraction[1], f"1/{fraction[0]} \u00d7 ") if fraction and fraction[0] > 1 else (kernel, "")
    colours = _diverging(kernel.numpy(), float(kernel.abs().max()) or 1.0)
    font = _font(max(8, min(16, cell // 2)))
    for i in range(kh):
        for j in range(kw):
            x0, y0 = box[0] + j * cell, box[1] + i * cell
            draw.rectangle((x0, y0, x0 + cell - 1, y0 + cell - 1), fill=tuple(int(c) for c in colours[i, j]),
                           outline=(90, 90, 90) if cell >= 6 else None)
            if cell >= 22:
                ink = (255, 255, 255) if colours[i, j].mean() < 140 else (0, 0, 0)
                draw.text((x0 + cell / 2, y0 + cell / 2), _number_text(float(shown[i, j])), fill=ink,
                          font=font, anchor="mm")
    return prefix


def save_kernel_comparison(image: torch.Tensor | str | os.PathLike, kernel: torch.Tensor | str | os.PathLike,
                           path: str | os.PathLike, padding: str = "zeros", name: str | None = None,
                           display: str = "auto") -> Path:
    """Save ``before | kernel | after`` side by side as a PNG, with titles that say how the output is shown.

    Args:
        image: ``(C, H, W)`` or ``(H, W)`` tensor (uint8 or float), or an image file (any mode; see
            :func:`convkit.data.folder.decode_image`).
        kernel: a 2-D tensor, a name in :data:`KERNELS` or a kernel file (see :func:`load_kernel`).
        path: the PNG to write (written atomically; folders are created).
        padding: the border mode (see :func:`apply_kernel`).
        name: the kernel's name in the title (default: its name, the file's stem, or "custom").
        display: how the output is mapped to colours (see :func:`display_output`); ``auto`` uses a
            diverging map for kernels summing to 0 (edge, Sobel: signed output), clipping to the image's
            range for kernels summing to 1 (blur, sharpen, emboss), min..max scaling otherwise.

    Returns:
        ``path`` as a Path. The panels are placed as :func:`comparison_layout` says.

    Raises:
        KernelError: an unknown kernel or a bad kernel file.
        DataFormatError: an image file that cannot be decoded.
        ValueError: an unknown padding or display mode.

    Example:
        >>> from PIL import Image
        >>> Image.fromarray(convkit.data.load_default("test").images[5, 0].numpy()).save("shoe.png")
        >>> save_kernel_comparison("shoe.png", "sobel-x", "shoe-sobel-x.png", padding="replicate")
        PosixPath('shoe-sobel-x.png')
    """
    from convkit.utils import atomic_write

    if not isinstance(image, torch.Tensor):
        from convkit.data.folder import decode_image

        image = decode_image(image, channels=None)
    weights = load_kernel(kernel) if not isinstance(kernel, torch.Tensor) else _check_values(kernel, "kernel")
    name = name or kernel_label(kernel)
    padding = normalize_padding_mode(padding)
    if display not in DISPLAY_MODES:
        raise ValueError(f"display must be one of {', '.join(DISPLAY_MODES)}, got {display!r}")
    mode = auto_display(weights) if display == "auto" else display
    output = apply_kernel(image, weights, padding)
    after, how = display_output(output.reshape(-1, *output.shape[-2:]), mode, _value_range(image))
    picture = _compose(_input_rgb(image), after, weights, name, padding, mode, how)
    return atomic_write(path, lambda tmp: picture.save(tmp, format="PNG"))


def _compose(before: np.ndarray, after: np.ndarray, kernel: torch.Tensor, name: str, padding: str,
             mode: str, how: str) -> Image.Image:
    boxes = comparison_layout(before.shape[:2], kernel.shape)
    canvas = Image.new("RGB", boxes["canvas"][2:], (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    font = _font(_FONT_SIZE)
    for key, array in (("before", before), ("after", after)):
        x0, y0, x1, y1 = boxes[key]
        resample = Image.Resampling.NEAREST if x1 - x0 >= array.shape[1] else Image.Resampling.BOX
        canvas.paste(Image.fromarray(array).resize((x1 - x0, y1 - y0), resample), (x0, y0))
        draw.rectangle((x0 - 1, y0 - 1, x1, y1), outline=(160, 160, 160))  # white outputs need an edge
    prefix = _draw_kernel(draw, kernel, boxes["kernel"])
    kh, kw = kernel.shape
    x_kernel = (boxes["kernel"][0] + boxes["kernel"][2]) // 2
    texts = [
        ((boxes["before"][0], _MARGIN), "la", f"before: {before.shape[0]}x{before.shape[1]}"),
        ((boxes["after"][0], _MARGIN), "la", f"after: {_MODE_TITLES[mode]}"),
        ((x_kernel, boxes["kernel"][1] - 2 * _LINE_HEIGHT), "ma", f"{prefix}{name} {kh}x{kw}"),
        ((x_kernel, boxes["kernel"][1] - _LINE_HEIGHT), "ma", "(cross-correlation)"),
    ]
    left, right, top, bottom = same_pads(kernel.shape)
    sides = f"{top} px each side" if len({left, right, top, bottom}) == 1 else \
        f"left {left}, right {right}, top {top}, bottom {bottom} px"
    caption_y = boxes["canvas"][3] - _MARGIN - _CAPTION_LINES * _LINE_HEIGHT + 4
    texts += [
        ((_MARGIN, caption_y), "la", f"after shows {how}"),
        ((_MARGIN, caption_y + _LINE_HEIGHT), "la",
         f"padding '{padding}' ({sides}): same size out; channels filtered alone; kernel not flipped"),
    ]
    for xy, anchor, text in texts:
        draw.text(xy, text, fill=(0, 0, 0), font=font, anchor=anchor)
    return canvas


def output_stats(output: torch.Tensor) -> dict:
    """``{shape, min, max, mean, std, per_channel: [{min, max, mean, std}]}`` of a filtered image (JSON-ready)."""
    def stats(t: torch.Tensor) -> dict:
        t = t.to(torch.float64)
        return {"min": float(t.min()), "max": float(t.max()), "mean": float(t.mean()),
                "std": float(t.std(unbiased=False)) if t.numel() else math.nan}

    planes = output.reshape(-1, *output.shape[-2:])
    return {"shape": list(output.shape), **stats(output), "per_channel": [stats(p) for p in planes]}
