"""Shared helpers at the bottom of the layering: atomic writes.

Nothing here imports the rest of convkit, so every package (models, inspect, explain, train) may use it.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Calls `write(tmp_path)` and moves the result onto `path` atomically.

    Args:
        path: the destination.
        write: writes the whole file at the path it is given.

    Returns:
        `path` as a Path.

    Example:
        >>> atomic_write("runs/x/notes.txt", lambda tmp: Path(tmp).write_text("done"))
        PosixPath('runs/x/notes.txt')
        >>> Path("runs/x/notes.txt").read_text()
        'done'
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
    """Writes text (UTF-8) atomically; see `atomic_write`."""
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
