"""Image files: a folder with one subfolder per class, or a CSV of `path,label` rows.

Decoding is PIL's (it reads every mode and the EXIF orientation); files that cannot be decoded are reported
by path and skipped, so one bad file does not cost the whole set.
"""

from __future__ import annotations

import copy
import csv
import os
import signal
import warnings
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from convkit.data.errors import DataFormatError, LabelError
from convkit.data.tensor import EpochBatches, ImageTensorDataset, check_labels

MEMORY_BUDGET = 2 << 30  # bytes of uint8 images held in memory before a folder or CSV is streamed instead
IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".webp"}
_GRAY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"}
_HEADER_WORDS = {"path", "file", "filename", "image", "label", "class", "target", "category"}


def _hidden(name: str) -> bool:
    # Dot-names are hidden on Unix (.git, .ipynb_checkpoints); __MACOSX is the resource-fork junk of macOS zips.
    return name.startswith(".") or name == "__MACOSX"


def _to_8bit(img: Image.Image) -> Image.Image:
    # PIL converts 16-bit and 32-bit modes to L by clipping at 255, which turns most 16-bit images white;
    # scale the full 16-bit range instead (65535 -> 255).
    a = np.asarray(img)
    if img.mode == "F":
        a = np.clip(a, 0, 255)
    else:
        a = a.astype(np.float64) / 257
    return Image.fromarray(np.rint(a).clip(0, 255).astype(np.uint8), "L")


def image_channels(mode: str) -> int:
    """Channels a PIL mode becomes by default: 1 for grayscale modes (8-, 16-bit, float, with alpha), else 3.

    Example:
        >>> image_channels("I;16"), image_channels("P")
        (1, 3)
    """
    return 1 if mode in _GRAY_MODES else 3


def decode_image(path: str | os.PathLike, channels: int | None = 3,
                 image_size: tuple[int, int] | None = None) -> torch.Tensor:
    """Decodes an image file of any mode into a uint8 tensor (C, H, W), upright per its EXIF orientation.

    Grayscale, RGBA, palette (with transparency), 16-bit and float images are converted to the channels
    asked for: alpha is dropped, 16-bit values are scaled to 0..255.

    Args:
        path: a PNG, JPEG, BMP, WebP (or any other format PIL reads).
        channels: 1 (grayscale), 3 (RGB) or 4 (RGBA); None keeps 1 for grayscale files and 3 for the others.
        image_size: (height, width) to resize to (bilinear, antialiased), or None to keep the size.

    Returns:
        uint8 tensor of shape (channels, H, W).

    Raises:
        DataFormatError: the file cannot be decoded (corrupt, truncated, not an image); names the file.

    Example:
        >>> from PIL import Image
        >>> Image.new("L", (32, 24), 128).save("grey.png")            # 32 wide, 24 high
        >>> image = decode_image("grey.png", channels=3, image_size=(64, 64))
        >>> image.shape, image.dtype, image[:, 0, 0]
        (torch.Size([3, 64, 64]), torch.uint8, tensor([128, 128, 128], dtype=torch.uint8))
    """
    try:
        with Image.open(path) as img:
            img.load()
            img = ImageOps.exif_transpose(img)
    except Exception as err:  # PIL raises OSError, SyntaxError, ValueError... for damaged files
        raise DataFormatError(f"{path}: cannot decode image ({type(err).__name__}: {err})") from err
    channels = channels or image_channels(img.mode)
    if img.mode in {"I", "I;16", "I;16B", "I;16L", "I;16N", "F"}:
        img = _to_8bit(img)
    if img.mode in {"P", "PA"}:
        img = img.convert("RGBA")  # resolves the palette's transparency before alpha is dropped
    img = img.convert({1: "L", 3: "RGB", 4: "RGBA"}[channels])
    if image_size is not None and img.size != (image_size[1], image_size[0]):
        img = img.resize((image_size[1], image_size[0]), Image.Resampling.BILINEAR)
    a = np.asarray(img, dtype=np.uint8)
    return torch.from_numpy(a.copy()).reshape(a.shape[0], a.shape[1], channels).permute(2, 0, 1).contiguous()


def scan_folder(root: str | os.PathLike) -> tuple[list[tuple[Path, int]], list[str], list[str]]:
    """Lists the images of a folder with one subfolder per class (searched recursively, hidden names skipped).

    Args:
        root: the folder, e.g. `flowers/` holding `daisy/`, `rose/`, ...

    Returns:
        (samples as (path, label) sorted by path, class names sorted, names of the classes without images).
        Empty classes keep their label numbers so that the numbering follows the folder names.

    Raises:
        DataFormatError: the folder has no class subfolders.

    Example:
        >>> root = image_folder("flowers", per_class=2)     # flowers/daisy/*.png, flowers/rose/*.png
        >>> (root / "tulip").mkdir()
        >>> samples, classes, empty = scan_folder("flowers")
        >>> [(path.as_posix(), label) for path, label in samples], classes, empty
        ([('flowers/daisy/000.png', 0), ('flowers/daisy/001.png', 0), ('flowers/rose/000.png', 1),
          ('flowers/rose/001.png', 1)], ['daisy', 'rose', 'tulip'], ['tulip'])
    """
    root = Path(root)
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not _hidden(d.name))
    if not classes:
        raise DataFormatError(f"{root}: expected one subfolder of images per class, found no subfolders")
    samples, empty = [], []
    for label, name in enumerate(classes):
        found = []
        for folder, dirs, files in os.walk(root / name, followlinks=True):
            dirs[:] = [d for d in dirs if not _hidden(d)]  # pruning stops the walk descending into them
            found += [Path(folder) / f for f in files
                      if not _hidden(f) and Path(f).suffix.lower() in IMAGE_EXTENSIONS]
        samples += [(p, label) for p in sorted(found)]
        if not found:
            empty.append(name)
    return samples, classes, empty


def _is_int(text: str) -> bool:
    try:
        int(text)
    except ValueError:
        return False
    return True


def read_csv(path: str | os.PathLike,
             classes: Sequence[str] | None = None) -> tuple[list[tuple[Path, int]], list[str], list[str]]:
    """Reads a CSV of `path,label` rows (a header row is optional; paths are relative to the CSV's folder).

    Labels are either class numbers or class names; names are numbered in sorted order unless `classes`
    gives the order.

    Args:
        path: the CSV file.
        classes: the class names in label order, or None to derive them.

    Returns:
        (samples as (image path, label), class names, where each row came from as "file.csv:line (image)").

    Raises:
        DataFormatError: a row without two fields, or no rows; names the file and line.
        LabelError: a class name not among `classes`, or a number outside their range; names the file and line.

    Example:
        >>> from pathlib import Path
        >>> _ = Path("labels.csv").write_text("path,label\\nimages/001.png,dog\\nimages/002.png,cat\\n")
        >>> samples, classes, rows = read_csv("labels.csv")
        >>> [(path.as_posix(), label) for path, label in samples], classes, rows
        ([('images/001.png', 1), ('images/002.png', 0)], ['cat', 'dog'],
         ['labels.csv:2 (images/001.png)', 'labels.csv:3 (images/002.png)'])
    """
    path = Path(path)
    with open(path, newline="", encoding="utf-8-sig") as f:  # -sig: spreadsheets often write a BOM
        rows = [(n, r) for n, r in enumerate(csv.reader(f), start=1) if r and any(c.strip() for c in r)]
    if rows and rows[0][1][-1].strip().lower() in _HEADER_WORDS:
        rows = rows[1:]
    if not rows:
        raise DataFormatError(f"{path}: no rows; expected `path,label` rows")
    for n, row in rows:
        if len(row) < 2:
            raise DataFormatError(f"{path}:{n}: expected `path,label`, found {','.join(row)!r}")
    texts = [row[1].strip() for _, row in rows]
    where = [f"{path}:{n} ({row[0].strip()})" for n, row in rows]
    if classes is None and all(_is_int(t) for t in texts):
        labels = [int(t) for t in texts]
        classes = [str(i) for i in range(max(labels) + 1)]
    else:
        classes = list(classes) if classes is not None else sorted(set(texts))
        index = {name: i for i, name in enumerate(classes)}
        labels = []
        for t, w in zip(texts, where):
            if t not in index and not _is_int(t):
                raise LabelError(f"{w}: class {t!r} is not one of {classes}")
            labels.append(index[t] if t in index else int(t))
    check_labels(torch.tensor(labels), len(classes), where)
    samples = [((path.parent / row[0].strip()), y) for (_, row), y in zip(rows, labels)]
    return samples, classes, where


def _report(skipped: list[str], source: str) -> None:
    if skipped:
        shown = "\n  ".join(skipped[:10]) + (f"\n  ... and {len(skipped) - 10} more" if len(skipped) > 10 else "")
        warnings.warn(f"{source}: skipped {len(skipped)} file(s) that could not be read:\n  {shown}", stacklevel=3)


def _decode_or_reason(path: Path, channels: int, image_size) -> torch.Tensor | str:
    try:
        return decode_image(path, channels, image_size)
    except (DataFormatError, OSError) as err:
        return str(err) if str(path) in str(err) else f"{path}: {err}"


def decode_all(samples: Sequence[tuple[Path, int]], channels: int | None, image_size: tuple[int, int] | None,
               source: str, sample_sources: Sequence[str] | None = None,
               classes: Sequence[str] = ()) -> ImageTensorDataset:
    """Decodes a list of image files into one in-memory dataset, skipping (and reporting) unreadable ones.

    Args:
        samples: (path, label) pairs.
        channels: 1, 3 or 4, or None to take the first readable image's (1 if grayscale else 3).
        image_size: (height, width) to resize every image to, or None: all must then have the same size.
        source: the folder or CSV (for messages).
        sample_sources: where each sample was listed (e.g. "labels.csv:12"); the image paths when None.
        classes: the class names.

    Returns:
        An `ImageTensorDataset`.

    Raises:
        DataFormatError: no image could be read, or images differ in size and no image_size was given.

    Example:
        >>> samples, classes, _ = scan_folder(image_folder("flowers"))
        >>> ds = decode_all(samples, 3, (64, 64), "flowers", classes=classes)
        >>> ds
        ImageTensorDataset(6 images of (3, 64, 64), 2 classes, device cpu, source 'flowers')
    """
    if channels is None:
        channels = _probe(samples)[0]
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:  # PIL decodes without the GIL
        decoded = list(pool.map(lambda s: _decode_or_reason(s[0], channels, image_size), samples))
    keep = [i for i, d in enumerate(decoded) if isinstance(d, torch.Tensor)]
    _report([d for d in decoded if isinstance(d, str)], source)
    if not keep:
        raise DataFormatError(f"{source}: none of the {len(samples)} image files could be read")
    sizes = {}
    for i in keep:
        sizes.setdefault(tuple(decoded[i].shape[1:]), samples[i][0])
    if len(sizes) > 1:
        (s1, p1), (s2, p2) = list(sizes.items())[:2]
        raise DataFormatError(f"{source}: images differ in size ({p1} is {s1[0]}x{s1[1]}, {p2} is {s2[0]}x{s2[1]}); "
                              "pass image_size=(height, width) to resize them all")
    sources = [str(samples[i][0]) if sample_sources is None else sample_sources[i] for i in keep]
    images = torch.stack([decoded[i] for i in keep])
    labels = torch.tensor([samples[i][1] for i in keep], dtype=torch.long)
    return ImageTensorDataset(images, labels, classes, source, sources)


def _probe(samples: Sequence[tuple[Path, int]]) -> tuple[int, tuple[int, int]]:
    """(channels, (H, W)) of the first readable image, for defaults and memory estimates."""
    for path, _ in samples[:100]:
        try:
            with Image.open(path) as img:
                img = ImageOps.exif_transpose(img)
                return image_channels(img.mode), (img.height, img.width)
        except Exception:  # a corrupt first file must not decide anything; it is reported when decoded
            continue
    raise DataFormatError(f"none of the first {min(100, len(samples))} image files could be read "
                          f"(first: {samples[0][0] if samples else 'no files'})")


def default_workers() -> int:
    """DataLoader workers for streamed images: one per core, at most 8 (decoding small images scales no further)."""
    return min(8, os.cpu_count() or 1)


class _Decoded(torch.utils.data.Dataset):
    """A dataset's items, or the message of an undecodable file instead of raising it: a worker's exception
    reaches the training process as a traceback dump, not as the error that names the file."""

    def __init__(self, dataset: ImageFileDataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int] | str:
        try:
            return self.dataset[i]
        except DataFormatError as err:
            return str(err)


def _collate(items: list) -> tuple[torch.Tensor, torch.Tensor] | str:
    errors = [item for item in items if isinstance(item, str)]
    return errors[0] if errors else torch.utils.data.default_collate(items)


def _ignore_interrupts(worker_id: int) -> None:
    # Ctrl-C reaches the whole process group. A forked worker inherits the trainer's handler, but a spawned
    # one (macOS, Windows) dies of it, and the next batch fails ("worker exited unexpectedly") instead of the
    # trainer finishing its step and saving. The training process shuts its workers down itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class StreamBatches(EpochBatches):
    """One epoch of an `ImageFileDataset`: the batches of `EpochBatches` (same order, same `position` and
    resume rules), decoded by `dataset.workers` DataLoader workers and delivered to `dataset.device`.

    Raises (while iterating):
        DataFormatError: a file cannot be decoded, or differs in size; the message names it.
    """

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        ds = self.dataset
        index_lists = [index.tolist() for index in self._slices(self._order)]
        if not index_lists:
            return
        cuda = ds.device.type == "cuda"
        # A private generator: the loader's worker seed must not come from (and move) the global RNG, which
        # dropout draws from; streamed runs then match in-memory ones and resume exactly.
        loader = torch.utils.data.DataLoader(_Decoded(ds), batch_sampler=index_lists, num_workers=ds.workers,
                                             collate_fn=_collate, pin_memory=cuda, generator=torch.Generator(),
                                             worker_init_fn=_ignore_interrupts if ds.workers else None)
        for batch in loader:
            if isinstance(batch, str):
                raise DataFormatError(batch)
            images, labels = batch
            self.position += len(labels)
            yield images.to(ds.device, non_blocking=cuda), labels.to(ds.device, non_blocking=cuda)


class ImageFileDataset(torch.utils.data.Dataset):
    """Image files decoded as they are asked for, for sets too large to hold in memory.

    Items are (uint8 tensor (C, H, W), label). `batches` serves the same epochs as `ImageTensorDataset.batches`
    (same order, same pixels), decoded by DataLoader workers; `to`, `subset` and `split` return views that
    share the file list, so the files stay on disk.

    Args:
        samples: (path, label) pairs.
        classes: class names, index = label.
        source: the folder or CSV.
        channels: 1, 3 or 4 (None: the first image's).
        image_size: (height, width) to resize to; None keeps the first image's size, and an image of another
            size is an error naming it.
        sample_sources: where each sample was listed, for label errors.
        workers: DataLoader worker processes of `batches` (None: `default_workers()`; 0: decode in this process).

    Example:
        >>> samples, classes, _ = scan_folder(image_folder("big"))
        >>> ds = ImageFileDataset(samples, classes, "big/", workers=0)   # .to("cuda"): batches on the GPU
        >>> ds
        ImageFileDataset(6 files as (3, 24, 32), 2 classes, device cpu, 0 workers, source 'big/')
        >>> for images, labels in ds.batches(4, seed=0, epoch=0):      # decoded as they are asked for
        ...     print(images.shape, images.dtype, labels)
        torch.Size([4, 3, 24, 32]) torch.uint8 tensor([0, 1, 1, 1])
        torch.Size([2, 3, 24, 32]) torch.uint8 tensor([0, 0])
    """

    def __init__(self, samples: Sequence[tuple[Path, int]], classes: Sequence[str], source: str,
                 channels: int | None = None, image_size: tuple[int, int] | None = None,
                 sample_sources: Sequence[str] | None = None, workers: int | None = None):
        self.samples, self.classes, self.source = list(samples), list(classes), str(source)
        probe_channels, probe_size = _probe(self.samples)
        self.channels = channels or probe_channels
        self.image_size, self._fixed = (tuple(image_size), True) if image_size else (probe_size, False)
        self.labels = torch.tensor([y for _, y in self.samples], dtype=torch.long)
        self.sample_sources = list(sample_sources) if sample_sources else [str(p) for p, _ in self.samples]
        self._mean = self._std = None
        self.workers = default_workers() if workers is None else workers
        self.device = torch.device("cpu")

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        path, label = self.samples[i]
        image = decode_image(path, self.channels, self.image_size if self._fixed else None)
        if tuple(image.shape[1:]) != self.image_size:
            raise DataFormatError(f"{path}: image is {image.shape[1]}x{image.shape[2]}, the others "
                                  f"{self.image_size[0]}x{self.image_size[1]}; pass image_size=(height, width)")
        return image, label

    def __repr__(self) -> str:
        return (f"ImageFileDataset({len(self)} files as {tuple(self.image_shape)}, {self.num_classes} classes, "
                f"device {self.device}, {self.workers} workers, source {self.source!r})")

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_shape(self) -> torch.Size:
        return torch.Size((self.channels, *self.image_size))

    def _stats(self, limit: int = 1000) -> None:
        # A seeded sample of the files estimates the statistics without a pass over the whole set.
        index = torch.randperm(len(self), generator=torch.Generator().manual_seed(0))[:limit].tolist()
        sample = decode_all([self.samples[i] for i in index], self.channels,
                            self.image_size, self.source, classes=self.classes)
        self._mean, self._std = sample.mean, sample.std

    @property
    def mean(self) -> torch.Tensor:
        """Per-channel mean on the [0, 1] scale, estimated from up to 1,000 seeded files."""
        if self._mean is None:
            self._stats()
        return self._mean

    @property
    def std(self) -> torch.Tensor:
        """Per-channel standard deviation on the [0, 1] scale, estimated like `mean`."""
        if self._std is None:
            self._stats()
        return self._std

    # Label-only methods work unchanged on this dataset's labels, subset and len.
    normalize = ImageTensorDataset.normalize
    split = ImageTensorDataset.split
    class_counts = ImageTensorDataset.class_counts

    def check_labels(self, num_classes: int | None = None) -> None:
        """Refuses labels outside the class range, naming the offending file (see `check_labels`)."""
        check_labels(self.labels, num_classes or self.num_classes, self.sample_sources)

    def _view(self, **changes) -> ImageFileDataset:
        ds = copy.copy(self)  # shares statistics and names; no file is opened again
        ds.__dict__.update(changes)
        return ds

    def to(self, device: str | torch.device, workers: int | None = None) -> ImageFileDataset:
        """A view whose batches are delivered to `device` (pinned, asynchronous copies to a GPU).

        Args:
            device: where `batches` puts the images and labels.
            workers: DataLoader workers of the view (None: keep this dataset's).

        Example:
            >>> ds = ImageFileDataset(*scan_folder(image_folder("big"))[:2], "big/")
            >>> ds = ds.to("meta", workers=2)                    # "cuda" on a GPU machine
            >>> ds.device, ds.workers
            (device(type='meta'), 2)
        """
        return self._view(device=torch.device(device), workers=self.workers if workers is None else workers)

    def subset(self, index: torch.Tensor | Sequence[int]) -> ImageFileDataset:
        """The samples at `index`, in that order (statistics carried over, not recomputed).

        Example:
            >>> ds = ImageFileDataset(*scan_folder(image_folder("big"))[:2], "big/")
            >>> first_four = ds.subset(range(4))
            >>> len(ds), len(first_four), first_four.labels
            (6, 4, tensor([0, 0, 0, 1]))
        """
        index = torch.as_tensor(index, dtype=torch.long)
        rows = index.tolist()
        return self._view(samples=[self.samples[i] for i in rows], labels=self.labels[index],
                          sample_sources=[self.sample_sources[i] for i in rows])

    def batches(self, batch_size: int, *, shuffle: bool = True, seed: int = 0, epoch: int = 0, start: int = 0,
                drop_last: bool = False) -> StreamBatches:
        """One epoch of (uint8 images, int64 labels) batches on `device`, as `ImageTensorDataset.batches` serves.

        Args: as `ImageTensorDataset.batches`.

        Returns:
            A `StreamBatches` iterable whose `position` says how far the epoch has gone.

        Raises (while iterating):
            DataFormatError: a file cannot be decoded; the message names it.

        Example:
            >>> ds = ImageFileDataset(*scan_folder(image_folder("big"))[:2], "big/", workers=0)
            >>> model = convkit.create_model("fastcnn", in_channels=3, num_classes=2)
            >>> for images, labels in ds.batches(4, seed=0, epoch=0):
            ...     logits = model(ds.normalize(images))
            >>> logits.shape                                      # the last batch: 6 = 4 + 2
            torch.Size([2, 2])
        """
        return StreamBatches(self, batch_size, shuffle, seed, epoch, start, drop_last)


def load_files(samples: Sequence[tuple[Path, int]], classes: Sequence[str], source: str, *,
               channels: int | None = None, image_size: tuple[int, int] | None = None,
               sample_sources: Sequence[str] | None = None,
               memory_budget: int = MEMORY_BUDGET) -> ImageTensorDataset | ImageFileDataset:
    """Image files in memory when their uint8 tensor fits `memory_budget` bytes, else a streaming dataset.

    Args:
        samples: (path, label) pairs.
        classes: class names.
        source: the folder or CSV.
        channels, image_size: as in `decode_image` (None: the first readable image's).
        sample_sources: where each sample was listed (for label errors).
        memory_budget: the most bytes the in-memory tensor may take (default 2 GiB).

    Returns:
        An `ImageTensorDataset`, or an `ImageFileDataset` beyond the budget.

    Example:
        >>> samples, classes, _ = scan_folder(image_folder("flowers"))
        >>> load_files(samples, classes, "flowers", image_size=(64, 64))
        ImageTensorDataset(6 images of (3, 64, 64), 2 classes, device cpu, source 'flowers')
        >>> load_files(samples, classes, "flowers", image_size=(64, 64), memory_budget=0)
        ImageFileDataset(6 files as (3, 64, 64), 2 classes, device cpu, ... workers, source 'flowers')
    """
    if not samples:
        raise DataFormatError(f"{source}: no image files (looked for {', '.join(sorted(IMAGE_EXTENSIONS))})")
    probe_channels, probe_size = _probe(samples)
    c = channels or probe_channels
    h, w = image_size or probe_size
    if len(samples) * c * h * w > memory_budget:
        return ImageFileDataset(samples, classes, source, c, image_size, sample_sources)
    return decode_all(samples, c, image_size, source, sample_sources, classes)
