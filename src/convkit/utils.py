"""Small helpers every part of convkit shares: atomic file writes, byte counts as text, fitting images.

This is the bottom layer: it imports nothing from convkit (only the standard library and torch), so
``convkit.layers``, ``data``, ``inspect``, ``explain``, ``train`` and ``report`` can all use it.
"""

from __future__ import annotations

import os
import reprlib
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

__all__ = ["atomic_write", "atomic_write_text", "fit_images", "format_bytes", "shorten"]


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Calls ``write(tmp_path)`` and moves the result onto ``path`` atomically.

    A reader sees the old file or the whole new one, never a half-written one, even if the process is
    killed; the temporary file is removed when ``write`` raises. Missing parent folders are created.

    Args:
        path: the destination.
        write: writes the whole file at the path it is given.

    Returns:
        ``path`` as a Path.

    Raises:
        Whatever ``write`` raises (the destination is then left as it was).

    Example:
        >>> import tempfile
        >>> out = atomic_write(Path(tempfile.mkdtemp()) / "x.txt", lambda tmp: Path(tmp).write_text("hi"))
        >>> out.read_text()
        'hi'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:  # the data reaches the disk before the rename makes it visible
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Writes ``text`` (UTF-8) to ``path`` atomically; see :func:`atomic_write`.

    Args:
        path: the destination.
        text: the whole content.

    Returns:
        ``path`` as a Path.

    Example:
        >>> import tempfile
        >>> atomic_write_text(Path(tempfile.mkdtemp()) / "a" / "b.txt", "text").read_text(encoding="utf-8")
        'text'
    """
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def shorten(value, limit: int = 200) -> str:
    """A value's repr for an error message, cut to about ``limit`` characters.

    Messages quote what the user gave; a value from a hostile file may be huge (a YAML alias bomb expands to
    gigabytes), so every message that prints a user value prints it through this. Long containers are cut
    before their repr is built in full.

    Args:
        value: anything; strings are quoted as ``repr`` quotes them.
        limit: the most characters kept (a marker saying how many were cut is added).

    Returns:
        The repr (containers beyond 20 items or 4 levels elided with ``...``), or its first ``limit``
        characters followed by ``... (N chars)`` (strings) or ``... (N items)`` (containers).

    Example:
        >>> shorten("abc")
        "'abc'"
        >>> shorten(list(range(1000)), limit=30)
        '[0, 1, 2, 3, 4, 5, 6, 7, 8, 9,... (1000 items)'
    """
    text = _REPR.repr(value)  # bounded depth and items: a shared nested structure is never expanded in full
    if len(text) <= limit:
        return text
    size = f"{len(value)} {'chars' if isinstance(value, (str, bytes)) else 'items'}" if hasattr(value, "__len__") else "cut"
    return f"{text[:limit]}... ({size})"


_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxstring, _REPR.maxother = 4, 400, 400
_REPR.maxlist = _REPR.maxtuple = _REPR.maxdict = _REPR.maxset = _REPR.maxfrozenset = 20


def format_bytes(n: float) -> str:
    """A byte count in binary units (as memory is allocated): whole bytes, else one decimal.

    Args:
        n: bytes.

    Returns:
        The text, from ``B`` up to ``TiB``.

    Example:
        >>> format_bytes(1536), format_bytes(512), format_bytes(3 * 2**30)
        ('1.5 KiB', '512 B', '3.0 GiB')
    """
    n = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover


def fit_images(images: torch.Tensor, shape: tuple[int, int, int]) -> torch.Tensor:
    """uint8 images ``(N, C, H, W)`` -> the ``(C, H, W)`` a model expects: channels converted, resized.

    Colour becomes gray by luma (ITU-R 601: 0.299 R + 0.587 G + 0.114 B, alpha dropped); gray is
    repeated into more channels; extra channels are dropped. The size changes by antialiased bilinear
    resampling. Images that already fit come back unchanged.

    Args:
        images: ``(N, C, H, W)``, uint8 (or float in 0-255).
        shape: the target ``(C, H, W)``.

    Returns:
        uint8 ``(N, *shape)``.

    Example:
        >>> rgb = torch.tensor([255, 0, 0], dtype=torch.uint8).view(1, 3, 1, 1).expand(1, 3, 4, 4)
        >>> gray = fit_images(rgb, (1, 2, 2))
        >>> gray.shape, gray[0, 0, 0, 0].item()            # red's luma: 0.299 * 255 = 76.2
        (torch.Size([1, 1, 2, 2]), 76)
    """
    c, h, w = shape
    if images.shape[1] != c:
        if c == 1:
            weights = torch.tensor([0.299, 0.587, 0.114], device=images.device)[: images.shape[1]]
            images = (images[:, :3].float() * weights.view(1, -1, 1, 1) / weights.sum()).sum(1, keepdim=True)
        else:
            images = images[:, :1].expand(-1, c, -1, -1) if images.shape[1] == 1 else images[:, :c]
    if tuple(images.shape[2:]) != (h, w):
        images = F.interpolate(images.float(), size=(h, w), mode="bilinear", antialias=True, align_corners=False)
    return images.round().clamp(0, 255).to(torch.uint8) if images.is_floating_point() else images
