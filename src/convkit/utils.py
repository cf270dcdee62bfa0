"""Small helpers every part of convkit shares: atomic file writes, byte counts as text, fitting images.

This is the bottom layer: it imports nothing from convkit (only the standard library and torch), so
``convkit.layers``, ``data``, ``inspect``, ``explain``, ``train`` and ``report`` can all use it.
"""

from __future__ import annotations

import errno
import os
import re
import reprlib
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

__all__ = ["atomic_write", "atomic_write_text", "fit_images", "format_bytes", "make_folder", "shorten"]


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Calls ``write(tmp_path)`` and moves the result onto ``path`` atomically.

    A reader sees the old file or the whole new one, never a half-written one, even if the process is
    killed; the temporary file (``.<name>.<random>.tmp`` beside ``path``) is removed when ``write`` raises.
    Missing parent folders are created. The file gets the permissions a new file gets (``0o666`` less the
    umask), as ``open`` would give it.

    Args:
        path: the destination.
        write: writes the whole file at the path it is given.

    Returns:
        ``path`` as a Path.

    Raises:
        OSError: the folder or the file cannot be written (read-only, full, not a folder, no permission); its
            ``filename`` is ``path`` (or the parent that is not a folder), the destination left as it was.
        Whatever else ``write`` raises (the destination is then left as it was).

    Example:
        >>> import tempfile
        >>> out = atomic_write(Path(tempfile.mkdtemp()) / "x.txt", lambda tmp: Path(tmp).write_text("hi"))
        >>> out.read_text()
        'hi'
    """
    path = Path(path)
    make_folder(path.parent)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as err:
        raise _os_error(err, path.parent) from err
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it 0600; follow the umask as open() does
        with open(tmp, "rb+") as f:  # the data reaches the disk before the rename makes it visible
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        failure = _os_error(err, path)
        if failure is None:
            raise
        raise failure from err
    return path


def _os_error(err: BaseException, path: str | os.PathLike) -> OSError | None:
    """An I/O failure while writing ``path`` as an OSError that names ``path``; None if ``err`` is not one.

    Writers that do their own I/O (safetensors' Rust code) report the system error only in their message,
    as ``... (os error 28)``; the errno is taken from there.
    """
    if isinstance(err, OSError) and err.errno is not None:
        code = err.errno
    else:
        found = re.search(r"\(os error (\d+)\)", str(err)) if isinstance(err, Exception) else None
        if found is None:
            return None
        code = int(found.group(1))
    return OSError(code, os.strerror(code), os.fspath(path))  # OSError(errno, ...) picks the subclass


def _umask() -> int:
    """The process's umask, read without changing it where the system allows (Linux: /proc/self/status),
    else by setting and restoring it; read once."""
    global _UMASK
    if _UMASK is None:
        try:
            with open("/proc/self/status", encoding="ascii") as f:
                _UMASK = next(int(line.split()[1], 8) for line in f if line.startswith("Umask:"))
        except (OSError, StopIteration, ValueError, IndexError):
            _UMASK = os.umask(0o022)
            os.umask(_UMASK)
    return _UMASK


_UMASK: int | None = None


def make_folder(path: str | os.PathLike) -> Path:
    """Creates the folder ``path`` and its missing parents (nothing if it exists).

    Args:
        path: the folder.

    Returns:
        ``path`` as a Path.

    Raises:
        NotADirectoryError: a file stands where the folder or one of its parents should be; its ``filename`` is
            that file (``mkdir`` would say "file exists", naming the folder asked for).
        OSError: the folder cannot be made (read-only, no permission), naming it.

    Example:
        >>> import tempfile
        >>> root = Path(tempfile.mkdtemp())
        >>> make_folder(root / "a" / "b").is_dir()
        True
        >>> _ = (root / "file").write_text("")
        >>> make_folder(root / "file" / "c")
        Traceback (most recent call last):
        ...
        NotADirectoryError: [Errno 20] Not a directory: '.../file'
    """
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        blocker = next((p for p in (path, *path.parents) if p.exists() and not p.is_dir()), path)
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(blocker)) from None
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
