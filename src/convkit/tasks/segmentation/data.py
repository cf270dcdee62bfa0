"""Semantic segmentation data: images with a mask of class ids per pixel, read from a folder, COCO JSON or the
built-in scenes into one in-memory form.

* images: uint8 (N, C, H, W), C = 1 or 3;
* masks: uint8 (N, H, W) of class ids 0..K-1, and `IGNORE_INDEX` (255) for pixels no loss or metric counts.

Layouts `load_segmentation` reads:

* a folder with ``images/`` and ``masks/`` holding the same file names (``a.jpg`` goes with ``a.png``), masks as
  grayscale class ids or VOC-style palette PNGs (the palette index is the class id), and an optional
  ``classes.txt`` (one name a line); splits as ``DIR/train/images`` + ``DIR/train/masks`` (and ``val``);
* a COCO JSON file (polygons or RLE): 0 is background, a category's objects are its index + 1 (later annotations
  drawn over earlier ones), crowd regions are ignored (255);
* "scenes" or "default": the built-in scenes of Fashion-MNIST items (`scenes_segmentation`).

Every problem with the data is a `DataFormatError` naming the file: an image without a mask (or a mask without
an image), a mask whose size differs from its image's, a class id outside the class list, a file that cannot be
decoded, an empty folder.
"""

from __future__ import annotations

import functools
import os
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from convkit.data.errors import DataFormatError, DatasetNotFoundError
from convkit.data.folder import (
    _hidden,
    _is_image_name,
    decode_image,
    open_image,
    parse_classes,
    read_class_list,
)
from convkit.data.tensor import EpochBatches, ImageTensorDataset
from convkit.utils import atomic_write, atomic_write_text, make_folder, shorten

__all__ = ["IGNORE_INDEX", "SegmentationDataset", "load_segmentation", "read_mask", "scenes_segmentation",
           "write_mask", "write_segmentation_folder"]

IGNORE_INDEX = 255  # the mask value of pixels that no loss or metric counts
BUILTIN = ("default", "scenes")  # names of the built-in scenes (when no such file or folder exists)
_INTEGER_MODES = {"I", "I;16", "I;16B", "I;16L", "I;16N"}


def _check_arrays(images: torch.Tensor, masks: torch.Tensor, source: str) -> None:
    if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8 or images.dim() != 4 \
            or images.shape[1] not in (1, 3):
        raise DataFormatError(f"{source}: images: expected uint8 (N, C, H, W) with C 1 or 3, found "
                              f"{getattr(images, 'dtype', type(images).__name__)} {tuple(getattr(images, 'shape', ()))}")
    expected = (images.shape[0], *images.shape[2:])
    if not isinstance(masks, torch.Tensor) or masks.dtype != torch.uint8 or tuple(masks.shape) != expected:
        raise DataFormatError(f"{source}: masks: expected uint8 (N, H, W) = {expected} to match the images, found "
                              f"{getattr(masks, 'dtype', type(masks).__name__)} {tuple(getattr(masks, 'shape', ()))}")


class SegmentationDataset:
    """Images and their semantic masks, held in memory as uint8 tensors, batched by the training engine.

    The engine reads ``images`` and ``labels`` (the masks) through `EpochBatches`, so the batches come in the
    same seeded, resumable order as an `ImageTensorDataset`'s.

    Args:
        images: uint8 (N, C, H, W), C = 1 or 3.
        masks: uint8 (N, H, W) class ids, `IGNORE_INDEX` (255) for ignored pixels.
        classes: the class names, index = class id (class 0 is "background" where the data has one).
        source: where the data came from (a file or folder), for messages.
        files: the mask file of each sample (named by `check`), or None.
        mean, std: per-channel statistics on the [0, 1] scale; computed from the images when first asked for.

    Raises:
        DataFormatError: images or masks of the wrong type or shape (names `source`).

    Example:
        >>> masks = torch.zeros(4, 8, 8, dtype=torch.uint8); masks[:, 2:5, 2:5] = 1
        >>> ds = SegmentationDataset(torch.zeros(4, 1, 8, 8, dtype=torch.uint8), masks, ["background", "cat"], "toy")
        >>> ds
        SegmentationDataset(4 images of (1, 8, 8), 2 classes, device cpu, source 'toy')
        >>> ds.class_pixels()
        tensor([220,  36])
        >>> for x, y in ds.batches(3, seed=0):
        ...     print(x.shape, y.shape, y.dtype)
        torch.Size([3, 1, 8, 8]) torch.Size([3, 8, 8]) torch.uint8
        torch.Size([1, 1, 8, 8]) torch.Size([1, 8, 8]) torch.uint8
    """

    def __init__(self, images: torch.Tensor, masks: torch.Tensor, classes: Sequence[str], source: str,
                 files: Sequence[str | os.PathLike] | None = None, mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None):
        self.source = str(source)
        _check_arrays(images, masks, self.source)
        if files is not None and len(files) != len(images):
            raise DataFormatError(f"{self.source}: {len(images)} images but {len(files)} files")
        self.images, self.masks = images, masks.to(images.device)
        self.classes = list(classes)
        self.files = None if files is None else [str(f) for f in files]
        self._mean = None if mean is None else torch.as_tensor(mean, dtype=torch.float32).cpu()
        self._std = None if std is None else torch.as_tensor(std, dtype=torch.float32).cpu()

    @property
    def labels(self) -> torch.Tensor:
        """The masks (what `EpochBatches` batches beside the images)."""
        return self.masks

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[i], self.masks[i]

    def __repr__(self) -> str:
        return (f"SegmentationDataset({len(self)} images of {tuple(self.image_shape)}, {self.num_classes} classes, "
                f"device {self.device}, source {self.source!r})")

    @property
    def num_classes(self) -> int:
        """K, the number of classes."""
        return len(self.classes)

    @property
    def image_shape(self) -> torch.Size:
        """(C, H, W)."""
        return self.images.shape[1:]

    @property
    def channels(self) -> int:
        """C: 1 (grayscale) or 3."""
        return int(self.images.shape[1])

    @property
    def device(self) -> torch.device:
        """Where the tensors are."""
        return self.images.device

    # the statistics work as an in-memory image dataset's (computed once from `images`; the training set's given
    # to the validation set by `with_stats`)
    _stats = ImageTensorDataset._stats
    mean = ImageTensorDataset.mean
    std = ImageTensorDataset.std
    normalize = ImageTensorDataset.normalize

    def with_stats(self, mean, std) -> SegmentationDataset:
        """The same data (tensors shared) with these statistics, e.g. the training set's for the validation set.

        Example:
            >>> ds = SegmentationDataset(torch.zeros(1, 1, 2, 2, dtype=torch.uint8),
            ...                          torch.zeros(1, 2, 2, dtype=torch.uint8), ["background"], "toy")
            >>> ds.with_stats([0.5], [0.25]).normalize(ds.images).flatten().tolist()
            [-2.0, -2.0, -2.0, -2.0]
        """
        return self._with(self.images, self.masks, self.files, mean, std)

    def _with(self, images, masks, files, mean=None, std=None) -> SegmentationDataset:
        ds = SegmentationDataset(images, masks, self.classes, self.source, files)
        ds._mean = self._mean if mean is None else torch.as_tensor(mean, dtype=torch.float32).cpu()
        ds._std = self._std if std is None else torch.as_tensor(std, dtype=torch.float32).cpu()
        return ds

    def to(self, device: str | torch.device) -> SegmentationDataset:
        """The same dataset with its images and masks on `device` (statistics, names and files shared).

        Example:
            >>> ds = SegmentationDataset(torch.zeros(1, 1, 2, 2, dtype=torch.uint8),
            ...                          torch.zeros(1, 2, 2, dtype=torch.uint8), ["background"], "toy")
            >>> ds.to("meta").masks.device
            device(type='meta')
        """
        return self._with(self.images.to(device), self.masks.to(device), self.files)

    def subset(self, index: torch.Tensor | Sequence[int]) -> SegmentationDataset:
        """The samples at `index`, in that order (statistics carried over, not recomputed)."""
        index = torch.as_tensor(index, dtype=torch.long).reshape(-1)
        i = index.to(self.device)
        files = None if self.files is None else [self.files[j] for j in index.tolist()]
        return self._with(self.images[i], self.masks[i], files)

    def split(self, fraction: float, seed: int = 0) -> tuple[SegmentationDataset, SegmentationDataset]:
        """Holds out a random, seeded part of the images (e.g. for validation).

        Args:
            fraction: the part held out, in (0, 1); at least one image is held out and one kept.
            seed: the seed of the draw (the same seed and dataset give the same split).

        Returns:
            (rest, held_out), each in the original order.

        Raises:
            ValueError: `fraction` outside (0, 1).
            DataFormatError: fewer than 2 images.

        Example:
            >>> ds = SegmentationDataset(torch.zeros(10, 1, 4, 4, dtype=torch.uint8),
            ...                          torch.zeros(10, 4, 4, dtype=torch.uint8), ["background"], "toy")
            >>> rest, held_out = ds.split(0.2, seed=0)
            >>> len(rest), len(held_out)
            (8, 2)
        """
        from convkit.data.tensor import random_split

        return random_split(self, fraction, seed)

    def batches(self, batch_size: int, *, shuffle: bool = True, seed: int = 0, epoch: int = 0, start: int = 0,
                drop_last: bool = False) -> EpochBatches:
        """One epoch of (uint8 images (B, C, H, W), uint8 masks (B, H, W)) batches on the dataset's device, in the
        order fixed by (seed, epoch) and resumable from `start` (see `ImageTensorDataset.batches`)."""
        return EpochBatches(self, batch_size, shuffle, seed, epoch, start, drop_last)

    def resized(self, height: int, width: int) -> SegmentationDataset:
        """Every image resized to height x width (bilinear, antialiased) and its mask with it (nearest: no new ids).

        Example:
            >>> masks = torch.tensor([[[0, 1], [2, 255]]], dtype=torch.uint8)
            >>> ds = SegmentationDataset(torch.zeros(1, 1, 2, 2, dtype=torch.uint8), masks, ["a", "b", "c"], "toy")
            >>> ds.resized(4, 4).masks[0]
            tensor([[  0,   0,   1,   1],
                    [  0,   0,   1,   1],
                    [  2,   2, 255, 255],
                    [  2,   2, 255, 255]], dtype=torch.uint8)
        """
        if (height, width) == tuple(self.images.shape[2:]):
            return self
        images, masks = [], []
        for x, m in zip(self.images.split(256), self.masks.split(256)):
            images.append(_resize_images(x, height, width))
            masks.append(_resize_masks(m, height, width))
        return self._with(torch.cat(images), torch.cat(masks), self.files)

    def class_pixels(self) -> torch.Tensor:
        """int64 (K,): the pixels of each class over the whole dataset (ignored pixels, and ids >= K, left out)."""
        counts = torch.zeros(256, dtype=torch.int64)
        for m in self.masks.split(1024):
            counts += torch.bincount(m.flatten().long(), minlength=256).cpu()
        return counts[:self.num_classes]

    def check(self) -> None:
        """Refuses class ids outside 0..K-1 other than 255 (ignore), naming the first offending mask's file.

        Raises:
            DataFormatError: names the file (or sample index), the bad id, how many masks hold bad ids, and the
                class list.

        Example:
            >>> masks = torch.tensor([[[0, 1]], [[3, 255]]], dtype=torch.uint8)
            >>> SegmentationDataset(torch.zeros(2, 1, 1, 2, dtype=torch.uint8), masks, ["background", "cat"], "toy",
            ...                     files=["a.png", "b.png"]).check()
            Traceback (most recent call last):
                ...
            convkit.data.errors.DataFormatError: b.png: class id 3 outside 0..1 (classes ['background', 'cat'])...
        """
        _check_ids(self.masks, self.classes, self.files, self.source)


def _check_ids(masks: torch.Tensor | Sequence[torch.Tensor], classes: Sequence[str],
               files: Sequence[str] | None, source: str) -> None:
    """The rule of `SegmentationDataset.check`, on a (N, H, W) tensor or a list of (H, W) masks of any sizes."""
    k = len(classes)
    if isinstance(masks, torch.Tensor):  # one pass over the whole tensor
        flagged = ((masks >= k) & (masks != IGNORE_INDEX)).flatten(1).any(1).nonzero().flatten().tolist()
    else:
        flagged = [i for i, m in enumerate(masks) if bool(((m >= k) & (m != IGNORE_INDEX)).any())]
    if not flagged:
        return
    i = flagged[0]
    ids = masks[i][(masks[i] >= k) & (masks[i] != IGNORE_INDEX)].unique().tolist()
    where = files[i] if files is not None else f"{source}: masks[{i}]"
    raise DataFormatError(f"{where}: class id {ids[0]} outside 0..{k - 1} (classes {shorten(classes)}); "
                          f"{IGNORE_INDEX} is ignore; ids found: {shorten(ids)}; {len(flagged)} of "
                          f"{len(masks)} masks hold such ids")


def _resize_images(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    y = F.interpolate(x.float(), size=(height, width), mode="bilinear", antialias=True, align_corners=False)
    return y.round().clamp(0, 255).to(torch.uint8)


def _resize_masks(m: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Nearest-neighbour resizing of (N, H, W) masks (pixel centres: "nearest-exact"): no new ids."""
    return F.interpolate(m[:, None].float(), size=(height, width), mode="nearest-exact")[:, 0].to(torch.uint8)


# ------------------------------------------------------------------------------------------------------ mask files

def read_mask(path: str | os.PathLike) -> torch.Tensor:
    """Reads a mask file's class ids: a grayscale PNG (mode L, or 16/32-bit I with values up to 255) holds the ids
    as values; a palette PNG (mode P, as Pascal VOC's) holds them as palette indices (the colours are not used).

    Args:
        path: the mask file.

    Returns:
        uint8 (H, W) class ids (255 = ignore).

    Raises:
        DataFormatError: the file cannot be decoded, is a colour (RGB) image, or holds values above 255; names it.

    Example:
        >>> write_mask("a.png", torch.tensor([[0, 1], [2, 255]], dtype=torch.uint8))
        PosixPath('a.png')
        >>> Image.open("a.png").mode, read_mask("a.png")
        ('P', tensor([[  0,   1],
                [  2, 255]], dtype=torch.uint8))
    """
    with open_image(path) as img:
        try:
            img.load()
        except Exception as err:  # damaged or truncated pixel data
            raise DataFormatError(f"{path}: cannot decode mask ({type(err).__name__}: {err})") from err
        mode = img.mode
        if mode in ("P", "L", "1"):
            a = np.asarray(img).astype(np.uint8)
        elif mode in _INTEGER_MODES:
            a = np.asarray(img).astype(np.int64)
            if a.size and (a.min() < 0 or a.max() > 255):
                raise DataFormatError(f"{path}: a {mode} mask with values {int(a.min())}..{int(a.max())}; expected "
                                      f"class ids 0..254 (and {IGNORE_INDEX}, ignore)")
            a = a.astype(np.uint8)
        else:
            raise DataFormatError(f"{path}: a {mode} image; expected a mask of class ids: grayscale (mode L) or a "
                                  "palette PNG (mode P), not colours")
    return torch.from_numpy(np.ascontiguousarray(a))


def write_mask(path: str | os.PathLike, mask, palette: bool = True, num_classes: int | None = None) -> Path:
    """Writes a mask of class ids as a PNG, atomically: a palette PNG (the colours of
    `convkit.tasks.segmentation.plots.palette`, 255 white), or grayscale (the ids as grey levels).

    Args:
        path: the PNG.
        mask: (H, W) class ids 0..254 and 255 (a tensor or array).
        palette: write a palette PNG (viewable, as Pascal VOC's), else grayscale.
        num_classes: the classes given colours (default: the largest id + 1).

    Returns:
        The path.

    Example:
        >>> write_mask("m.png", torch.tensor([[0, 3]]), palette=False)
        PosixPath('m.png')
        >>> read_mask("m.png")
        tensor([[0, 3]], dtype=torch.uint8)
    """
    img = mask_image(mask, palette, num_classes, name=str(path))
    return atomic_write(path, lambda tmp: img.save(tmp, "PNG"))


def mask_image(mask, palette: bool = True, num_classes: int | None = None, name: str = "mask") -> Image.Image:
    """The PIL image `write_mask` writes (a palette or grayscale image of the class ids); `name` is for messages.

    Example:
        >>> img = mask_image(torch.tensor([[0, 2]]))
        >>> img.mode, list(img.getdata())
        ('P', [0, 2])
    """
    from convkit.tasks.segmentation.plots import _colour_table

    a = mask.detach().cpu().numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)
    if a.ndim != 2 or a.size == 0 or (a.size and (a.min() < 0 or a.max() > 255)):
        raise DataFormatError(f"{name}: expected a non-empty (H, W) mask of ids 0..255, found shape {a.shape}")
    a = a.astype(np.uint8)
    img = Image.fromarray(a, "L")
    if palette:
        ids = a[a != IGNORE_INDEX]
        k = num_classes if num_classes is not None else (int(ids.max()) + 1 if ids.size else 1)
        img = Image.fromarray(a, "P")
        img.putpalette(_colour_table(min(k, 255)).flatten().tolist())
    return img


def _write_image(path: Path, image: torch.Tensor) -> Path:
    a = image.permute(1, 2, 0).cpu().numpy()
    return atomic_write(path, lambda tmp: Image.fromarray(a[..., 0] if a.shape[2] == 1 else a).save(tmp, "PNG"))


def write_segmentation_folder(folder: str | os.PathLike, dataset: SegmentationDataset, palette: bool = True) -> Path:
    """Writes a dataset as a folder `load_segmentation` reads: ``images/<name>.png``, ``masks/<name>.png`` and
    ``classes.txt``, every file atomically. Names are the stems of the dataset's files when they are distinct,
    else 000000, 000001...

    Args:
        folder: where to write (created if missing).
        dataset: a `SegmentationDataset`.
        palette: masks as palette PNGs (else grayscale).

    Returns:
        The folder.

    Example:
        >>> ds = scenes_segmentation("val", count=3)
        >>> back = load_segmentation(write_segmentation_folder("scenes_val", ds))
        >>> torch.equal(back.images, ds.images), torch.equal(back.masks, ds.masks), back.classes == ds.classes
        (True, True, True)
    """
    folder = Path(folder)
    stems = [Path(f).stem for f in dataset.files] if dataset.files is not None else []
    if len(set(stems)) != len(dataset):
        stems = [f"{i:06d}" for i in range(len(dataset))]
    make_folder(folder / "images")
    make_folder(folder / "masks")

    def write(i: int) -> None:
        _write_image(folder / "images" / f"{stems[i]}.png", dataset.images[i])
        write_mask(folder / "masks" / f"{stems[i]}.png", dataset.masks[i], palette, dataset.num_classes)

    with ThreadPoolExecutor(4) as pool:  # each file is synced to disk: overlap the waits
        list(pool.map(write, range(len(dataset))))
    atomic_write_text(folder / "classes.txt", "".join(f"{name}\n" for name in dataset.classes))
    return folder


# ---------------------------------------------------------------------------------------------------------- folders

def _folder_pair(root: Path, split: str | None) -> tuple[Path, Path]:
    """(images folder, masks folder) of a segmentation folder, for a split or the folder itself."""
    candidates = [] if split else [(root / "images", root / "masks")]
    for s in [split] if split else ["train"]:
        candidates += [(root / s / "images", root / s / "masks"), (root / "images" / s, root / "masks" / s)]
    for images, masks in candidates:
        if images.is_dir() and masks.is_dir():
            return images, masks
    s = split or "train"
    raise DataFormatError(f"{root}: expected a segmentation folder: images/ and masks/ (or {s}/images/ and "
                          f"{s}/masks/), holding the same file names; found neither")


def _listing(folder: Path) -> dict[str, Path]:
    """{stem: file} of the image files directly in `folder`; two files of one stem are an error."""
    found: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if _hidden(p.name) or not _is_image_name(p.name):
            continue
        if p.stem in found:
            raise DataFormatError(f"{p}: {found[p.stem].name} has the same name; expected one file per name in "
                                  f"{folder}")
        found[p.stem] = p
    return found


def _pairs(images_dir: Path, masks_dir: Path) -> list[tuple[Path, Path]]:
    images, masks = _listing(images_dir), _listing(masks_dir)
    if not images and not masks:
        raise DataFormatError(f"{images_dir}: no image files (and {masks_dir} no masks); expected PNG or JPEG files")
    lonely = next((p for stem, p in images.items() if stem not in masks), None)
    if lonely is not None:
        raise DataFormatError(f"{lonely}: an image without a mask; expected {masks_dir / (lonely.stem + '.png')}")
    lonely = next((p for stem, p in masks.items() if stem not in images), None)
    if lonely is not None:
        raise DataFormatError(f"{lonely}: a mask without an image; expected {images_dir / lonely.stem}.png "
                              "(or .jpg)")
    return [(images[stem], masks[stem]) for stem in sorted(images)]


def _image_channels(path: Path) -> int:
    from convkit.data.folder import image_channels

    with open_image(path) as img:
        return 1 if image_channels(img.mode) == 1 else 3


def _same_size(images: list[torch.Tensor], masks: list[torch.Tensor], source: str) -> tuple[torch.Tensor, torch.Tensor]:
    """One (N, C, H, W) and one (N, H, W) tensor: resized to the first image's size when sizes differ (warned)."""
    h, w = images[0].shape[1:]
    odd = sum(tuple(x.shape[1:]) != (h, w) for x in images)
    if odd:
        warnings.warn(f"{source}: {odd} of {len(images)} images differ in size from the first ({h}x{w}); resized "
                      "to it (images bilinear, masks nearest)", stacklevel=3)
        images = [x if tuple(x.shape[1:]) == (h, w) else _resize_images(x[None], h, w)[0] for x in images]
        masks = [m if tuple(m.shape) == (h, w) else _resize_masks(m[None], h, w)[0] for m in masks]
    return torch.stack(images), torch.stack(masks)


def _read_folder(root: Path, pair: tuple[Path, Path], classes: list[str] | None) -> SegmentationDataset:
    images_dir, masks_dir = pair
    pairs = _pairs(images_dir, masks_dir)
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        channels = 3 if 3 in set(pool.map(lambda p: _image_channels(p[0]), pairs)) else 1
        decoded = list(pool.map(lambda p: (decode_image(p[0], channels), read_mask(p[1])), pairs))
    for (image_file, mask_file), (image, mask) in zip(pairs, decoded):
        if tuple(image.shape[1:]) != tuple(mask.shape):
            raise DataFormatError(f"{mask_file}: a {mask.shape[1]}x{mask.shape[0]} mask for the "
                                  f"{image.shape[2]}x{image.shape[1]} image {image_file} (width x height); expected "
                                  "the same size")
    listed = None
    for place in (masks_dir.parent, root):
        if classes is None and listed is None and (place / "classes.txt").is_file():
            listed = read_class_list(place / "classes.txt")
    names = classes or listed
    files = [str(m) for _, m in pairs]
    if names is not None:  # before any resizing, which could hide an id
        _check_ids([d[1] for d in decoded], names, files, str(root))
    images, masks = _same_size([d[0] for d in decoded], [d[1] for d in decoded], str(root))
    if names is None:
        ids = torch.bincount(masks.flatten().long(), minlength=256)[:IGNORE_INDEX].nonzero()
        k = int(ids.max()) + 1 if len(ids) else 1
        names = [f"class_{i}" for i in range(k)]
    return SegmentationDataset(images, masks, names, str(root), files)


# ------------------------------------------------------------------------------------------------------------- COCO

def _coco_classes(classes: list[str] | None) -> list[str] | None:
    """The COCO category names of a segmentation class list (its first class is the background)."""
    if classes is None:
        return None
    if len(classes) < 2:
        raise DataFormatError(f"classes: {shorten(classes)}; COCO data needs the background and at least one "
                              "category (['background', 'cat', ...])")
    return classes[1:]


def _rasterise(target: dict, height: int, width: int) -> torch.Tensor:
    """The semantic mask of one image's instances: 0 background, label + 1 on each object's mask, in order (later
    objects over earlier ones), `IGNORE_INDEX` on crowd regions."""
    semantic = torch.zeros(height, width, dtype=torch.uint8)
    for mask, label, crowd in zip(target["masks"], target["labels"].tolist(), target["iscrowd"].tolist()):
        semantic[mask.bool()] = IGNORE_INDEX if crowd else label + 1
    return semantic


def _read_coco(path: Path, split: str | None, classes: list[str] | None) -> SegmentationDataset:
    from convkit.tasks.detection.data import load_detection

    detection = load_detection(path, split, classes=_coco_classes(classes), masks=True)
    if detection.skipped:
        raise DataFormatError(detection.skipped[0])
    names = ["background", *detection.classes] if classes is None else list(classes)
    images = detection.images
    masks = [_rasterise(t, *x.shape[1:]) for x, t in zip(images, detection.targets)]
    images, masks = _same_size(images, masks, str(path))
    files = [str(f) for f in detection.image_files] if detection.image_files is not None else None
    return SegmentationDataset(images, masks, names, detection.source, files)


# -------------------------------------------------------------------------------------------------------- any layout

@functools.lru_cache(maxsize=4)  # the same scenes for every run of a process (generating 2,300 takes seconds)
def scenes_segmentation(split: str = "train", count: int | None = None, seed: int = 0,
                        objects: tuple[int, int] = (1, 4)) -> SegmentationDataset:
    """The built-in scenes (Fashion-MNIST items on a 96 x 96 canvas) with their semantic masks: 0 background, an
    item's class + 1 on its pixels. The same scenes `convkit.tasks.detection.task.scenes_dataset` gives for
    detection ("train": 2,000 scenes, "val": 300 of held-out items).

    Args:
        split: "train", or "val" / "test" (held-out items).
        count: the number of scenes (default 2,000 for "train", 300 otherwise).
        seed: the scenes' seed.
        objects: (least, most) items per scene.

    Returns:
        A `SegmentationDataset` with 11 classes: "background" and the ten Fashion-MNIST names.

    Example:
        >>> ds = scenes_segmentation("val", count=4)
        >>> ds, ds.classes[:3]
        (SegmentationDataset(4 images of (1, 96, 96), 11 classes, device cpu, source 'scenes (val, seed 0)'),
         ['background', 'T-shirt/top', 'Trouser'])
    """
    from convkit.tasks.detection.scenes import make_scenes
    from convkit.tasks.detection.task import SCENES_TRAIN, SCENES_VAL

    count = count or (SCENES_TRAIN if split == "train" else SCENES_VAL)
    images, targets, names = make_scenes(count, seed=seed, objects=objects, split="train" if split == "train"
                                         else "test", masks=False)
    masks = torch.stack([t["semantic"] for t in targets]).to(torch.uint8)
    return SegmentationDataset(images, masks, ["background", *names], f"scenes ({split}, seed {seed})")


def load_segmentation(path: str | os.PathLike, split: str | None = None,
                      classes: str | Sequence[str] | None = None) -> SegmentationDataset:
    """Reads segmentation data in whichever layout `path` has (see the module's docstring), checked before any
    training: every image has a mask of its size, every id is a class (or 255).

    * a folder with ``images/`` and ``masks/`` (or ``<split>/images`` + ``<split>/masks``, or ``images/<split>`` +
      ``masks/<split>``; without a split, the folder itself, else its "train" split). Class names come from
      `classes`, else ``classes.txt``, else are "class_0".."class_{K-1}" with K the largest id seen + 1;
    * a ``.json`` file, or a folder holding one and no ``images/`` + ``masks/``: COCO instances (via
      `convkit.tasks.detection.data.load_detection` with ``masks=True``), rasterised: 0 background, category
      index + 1, crowd regions 255; classes ["background", *category names];
    * "scenes" or "default" (when no such file or folder exists): `scenes_segmentation` ("val" for split "val"
      or "test").

    Images of different sizes are resized to the first one's (images bilinear, masks nearest), with a warning.

    Args:
        path: the folder or file, or "scenes".
        split: the split to read ("train", "val", ...), or None.
        classes: the class names in id order (a list, "a,b" or a file), e.g. the training set's for validation
            data; for COCO, its first name is the background and the others are the categories.

    Returns:
        A `SegmentationDataset` (``files`` are the mask files, or the image files of COCO data).

    Raises:
        DatasetNotFoundError: nothing at `path`.
        DataFormatError: an image without a mask or a mask without an image, a mask whose size differs from its
            image's (both sizes given), an id outside the class list (when classes are given), a file that cannot
            be decoded, an empty folder; each names the file.

    Example:
        >>> for d in ("data/images", "data/masks"):
        ...     Path(d).mkdir(parents=True)
        >>> Image.new("RGB", (4, 2)).save("data/images/a.jpg")
        >>> write_mask("data/masks/a.png", torch.tensor([[0, 0, 1, 1], [0, 2, 2, 255]]))
        PosixPath('data/masks/a.png')
        >>> ds = load_segmentation("data")
        >>> ds.classes, ds.masks[0].tolist()
        (['class_0', 'class_1', 'class_2'], [[0, 0, 1, 1], [0, 2, 2, 255]])
        >>> load_segmentation("data", classes=["background", "cat"])
        Traceback (most recent call last):
            ...
        convkit.data.errors.DataFormatError: data/masks/a.png: class id 2 outside 0..1 (classes ['background', 'cat'])...
    """
    names = parse_classes(classes)
    if str(path) in BUILTIN and not os.path.exists(str(path)):
        ds = scenes_segmentation("train" if split in (None, "train") else "val")
        if names is not None:
            ds = SegmentationDataset(ds.images, ds.masks, names, ds.source)
            ds.check()
        return ds
    path = Path(path)
    if not path.exists():
        raise DatasetNotFoundError(f"{path}: no such file or folder; expected a folder with images/ and masks/, a "
                                   "COCO JSON file, or 'scenes'")
    if path.is_file() and path.suffix.lower() == ".json":
        return _read_coco(path, None, names)
    if path.is_file():
        raise DataFormatError(f"{path}: not segmentation data; expected a folder with images/ and masks/, or a COCO "
                              "JSON file")
    try:
        pair = _folder_pair(path, split)
    except DataFormatError:
        if any(p.suffix.lower() == ".json" and not _hidden(p.name) for d in (path, path / "annotations")
               if d.is_dir() for p in d.iterdir()):
            return _read_coco(path, split, names)
        raise
    return _read_folder(path, pair, names)
