"""The run folder, `runs/<name>/`: config.yaml, metrics.csv, curves.png, confusion.png and the checkpoints.

Every file is written to a temporary name in the same folder and moved into place with `os.replace`, which
is atomic on POSIX and Windows: a run killed at any instant leaves each file either old or new, never torn.
Plots use matplotlib's object API (no pyplot, no GUI backend), so training works on headless machines.
"""

from __future__ import annotations

import csv
import io
import os
import re
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from convkit.utils import (  # atomic_write*: still importable from here
    atomic_write,
    atomic_write_text,
    make_folder,
)

METRIC_FIELDS = ("epoch", "train_loss", "train_acc", "test_loss", "test_acc", "test_top5", "lr", "epoch_s",
                 "images_per_s", "elapsed_s")


def check_run_name(name: str) -> str:
    """Refuses a run name that is not one plain folder name, so that a run never writes outside `runs_dir`.

    Raises:
        ConfigError: a name with '/', '\\' or a NUL byte, or "", "." or "..".

    Example:
        >>> check_run_name("resnet20-long")
        'resnet20-long'
        >>> check_run_name("../x")
        Traceback (most recent call last):
        ...
        convkit.train.config.ConfigError: name must be a plain folder name under runs_dir (no '/', '\\', '.' or '..'), got '../x'
    """
    from convkit.train.config import ConfigError

    if name in ("", ".", "..") or any(c in name for c in "/\\\0"):
        raise ConfigError(f"name must be a plain folder name under runs_dir (no '/', '\\', '.' or '..'), "
                          f"got {name!r}")
    return name


ORPHANS = ".*.tmp"  # the temporary files of `convkit.utils.atomic_write` (`.<name>.<random>.tmp`)


def remove_orphans(folder: str | os.PathLike) -> int:
    """Removes the temporary files that writes cut short by a kill left in ``folder`` (`ORPHANS`).

    `atomic_write` removes its temporary file when the write fails, but a process killed (kill -9, power
    loss) leaves it behind; a run's folder gets one per checkpoint killed mid-way. Called when a run starts
    again in its folder (resumed, or its name reused); no other process should be writing there then.

    Args:
        folder: a run folder.

    Returns:
        How many files were removed.

    Example:
        >>> folder = Path("runs/killed"); folder.mkdir(parents=True)
        >>> _ = (folder / ".resume.safetensors.k2x9_q.tmp").write_bytes(b"half a checkpoint")
        >>> remove_orphans(folder), sorted(folder.iterdir())
        (1, [])
    """
    removed = 0
    for path in Path(folder).glob(ORPHANS):
        if path.is_file() and not path.is_symlink():
            path.unlink(missing_ok=True)
            removed += 1
    return removed


def never_saved(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` holds a run that stopped before its first checkpoint: config.yaml and nothing else
    (but `ORPHANS`), so that it can start again there from the beginning.

    Example:
        >>> folder = Path("runs/early"); folder.mkdir(parents=True)
        >>> _ = (folder / "config.yaml").write_text("model: fastcnn\\n")
        >>> never_saved(folder), never_saved("runs")
        (True, False)
    """
    folder = Path(folder)
    names = {p.name for p in folder.iterdir() if not p.match(ORPHANS)} if folder.is_dir() else None
    return names == {"config.yaml"}


def new_run_dir(runs_dir: str | os.PathLike, name: str | None, model: str, note=None) -> Path:
    """Creates `runs_dir/<name>/`; without a name, `<model>-<date>-<time>` (with -2, -3... if taken).

    A named folder that holds only the config of a run that never saved a checkpoint (`never_saved`: the run
    was stopped or failed before its first epoch ended) is taken over: its orphan temporary files are removed
    and ``note`` says so.

    Args:
        runs_dir: where run folders go.
        name: the folder's name, or None.
        model: the model's name or file, for a folder's default name.
        note: called with a line of text to show the user (default: nothing is shown).

    Returns:
        The folder.

    Raises:
        ConfigError: a name that is not a plain folder name (see `check_run_name`).
        FileExistsError: a named folder already holds a run (resume it or choose another name).
        OSError: the folder cannot be made (read-only, a file in the way).
    """
    runs_dir = Path(runs_dir)
    if name:
        check_run_name(name)
        path = runs_dir / name
        if path.is_dir() and never_saved(path):
            removed = remove_orphans(path)
            if note is not None:
                note(f"{path}: held only the config of a run stopped before its first checkpoint; starting the "
                     f"new run there" + (f" ({removed} orphan temporary file{'s' * (removed > 1)} removed)"
                                         if removed else ""))
            return path
        if path.exists() and any(path.iterdir()):
            raise FileExistsError(f"{path} already holds a run; continue it with `convkit train --resume {path}` "
                                  "or choose another --name")
        return make_folder(path)
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(model).stem) + time.strftime("-%Y%m%d-%H%M%S")
    make_folder(runs_dir)
    for i in range(1, 1000):
        path = runs_dir / (stem if i == 1 else f"{stem}-{i}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise FileExistsError(f"{runs_dir}: could not find a free run name for {stem}")


TEXT_COLUMNS = ("phase",)  # metrics.csv columns that hold words, not numbers


def write_metrics(path: str | os.PathLike, history: Sequence[dict], fields: Sequence[str] = METRIC_FIELDS) -> Path:
    """metrics.csv: one row per epoch (columns `fields`: the task's, METRIC_FIELDS for classification),
    rewritten whole from the history.

    Rewriting from the checkpoint's history (rather than appending) keeps the file right after a resume.
    """
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(fields), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in history:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    return atomic_write_text(path, buf.getvalue())


def read_metrics(path: str | os.PathLike) -> list[dict]:
    """metrics.csv back as a list of dicts of floats (epoch as int; text columns, such as a fine-tuning run's
    phase, as text)."""
    with open(path, newline="", encoding="utf-8") as f:
        return [{k: (int(v) if k == "epoch" else float(v) if k not in TEXT_COLUMNS else v)
                 for k, v in row.items() if v != ""} for row in csv.DictReader(f)]


def _save_figure(fig, path: str | os.PathLike) -> Path:
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight"))


def plot_curves(history: Sequence[dict], path: str | os.PathLike, title: str = "") -> Path:
    """curves.png: loss (left) and accuracy (right) per epoch, train and test.

    Example:
        >>> history = [{"epoch": 1, "train_loss": 0.92, "train_acc": 0.70, "test_loss": 0.52, "test_acc": 0.82},
        ...            {"epoch": 2, "train_loss": 0.44, "train_acc": 0.84, "test_loss": 0.40, "test_acc": 0.85}]
        >>> plot_curves(history, "runs/x/curves.png", title="fastcnn")   # a TrainResult's .history
        PosixPath('runs/x/curves.png')
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4))
    ax_loss, ax_acc = fig.subplots(1, 2)
    epochs = [r["epoch"] for r in history]
    for key, style in (("train", "-o"), ("test", "-s")):
        ax_loss.plot(epochs, [r[f"{key}_loss"] for r in history], style, label=key)
        ax_acc.plot(epochs, [100 * r[f"{key}_acc"] for r in history], style, label=key)
    ax_loss.set(xlabel="epoch", ylabel="loss", title="loss")
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    return _save_figure(fig, path)


def plot_confusion(confusion: np.ndarray, classes: Sequence[str], path: str | os.PathLike,
                   title: str = "confusion matrix") -> Path:
    """confusion.png: rows = true class, columns = predicted, shaded by the share of the row, counts written.

    Example:
        >>> plot_confusion([[5, 1], [2, 4]], ["cat", "dog"], "runs/x/confusion.png")   # 2 dogs taken for cats
        PosixPath('runs/x/confusion.png')
    """
    from matplotlib.figure import Figure

    confusion = np.asarray(confusion)
    k = len(confusion)
    size = max(4.0, 0.45 * k + 2)
    fig = Figure(figsize=(size + 1, size))
    ax = fig.subplots()
    share = confusion / np.maximum(confusion.sum(1, keepdims=True), 1)
    im = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(im, ax=ax, fraction=0.046, label="share of the true class")
    if k <= 30:  # beyond that, labels and counts are unreadable
        ax.set_xticks(range(k), [str(c) for c in classes], rotation=60, ha="right", fontsize=8)
        ax.set_yticks(range(k), [str(c) for c in classes], fontsize=8)
        for i in range(k):
            for j in range(k):
                if confusion[i, j]:
                    ax.text(j, i, str(int(confusion[i, j])), ha="center", va="center", fontsize=7,
                            color="white" if share[i, j] > 0.5 else "black")
    ax.set(xlabel="predicted", ylabel="true", title=title)
    return _save_figure(fig, path)


def plot_image_grid(images: np.ndarray, captions: Sequence[str], path: str | os.PathLike,
                    title: str = "", columns: int = 8) -> Path:
    """A grid of uint8 images (N, C, H, W) with a caption under each, e.g. the worst-classified examples.

    Example:
        >>> images = convkit.data.load_default("test").images[:3].numpy()      # uint8 (3, 1, 28, 28)
        >>> captions = ["Ankle boot\\n-> Sneaker 0.91", "Pullover\\n-> Coat 0.55", "Trouser\\n-> Dress 0.40"]
        >>> plot_image_grid(images, captions, "worst.png", title="worst-classified", columns=2)
        PosixPath('worst.png')
    """
    from matplotlib.figure import Figure

    n = len(images)
    columns = max(1, min(columns, n))
    rows = max(1, -(-n // columns))
    fig = Figure(figsize=(1.7 * columns, 1.9 * rows + (0.4 if title else 0)))
    axes = np.atleast_1d(fig.subplots(rows, columns, squeeze=False)).ravel()
    for ax in axes:
        ax.axis("off")
    for ax, image, caption in zip(axes, images, captions):
        image = np.asarray(image)
        if image.shape[0] == 1:
            ax.imshow(image[0], cmap="gray", vmin=0, vmax=255)
        else:
            ax.imshow(np.moveaxis(image[:3], 0, -1))
        ax.set_title(caption, fontsize=7)
    if title:
        fig.suptitle(title)
    return _save_figure(fig, path)


def plot_lr_finder(lrs: Sequence[float], losses: Sequence[float], suggestion: float | None,
                   path: str | os.PathLike) -> Path:
    """lr_find.png: the smoothed loss against the learning rate (log scale), the suggestion marked."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    ax.plot(lrs, losses)
    ax.set_xscale("log")
    ax.set(xlabel="learning rate", ylabel="loss (smoothed)", title="learning-rate finder")
    if suggestion:
        ax.axvline(suggestion, color="red", linestyle="--", label=f"suggested {suggestion:.3g}")
        ax.legend()
    ax.grid(alpha=0.3, which="both")
    return _save_figure(fig, path)
