"""Detection data: COCO JSON, Pascal VOC XML and YOLO txt annotations read into one internal form.

An image is a uint8 tensor (C, H, W), C = 1 (grayscale files) or 3 (colour). Its target, the objects in it,
is a dict of tensors:

* ``boxes``: float32 (M, 4) xyxy in pixels, x1, y1 the inclusive top-left edges and x2, y2 the exclusive
  bottom-right edges (a box over pixels 3..5 has x1 = 3, x2 = 6: COCO's x + w), as torchvision and
  `convkit.data.augment.warp_boxes` take them;
* ``labels``: int64 (M,) class indices 0..C-1 into the dataset's ``classes`` (COCO's category ids are 1-based:
  they are converted where COCO files are read and written);
* ``iscrowd``: bool (M,) COCO's crowd flag; VOC's ``difficult`` flag is read into it (evaluators ignore such
  objects, as VOC's own does);
* ``masks``: uint8 (M, H, W) instance masks, only when asked for (``masks=True``, COCO segmentations).

M may be 0 (an image without objects; ``boxes`` is then (0, 4)).

Bad annotations follow one set of rules in every format (`convkit.tasks.detection.boxes.clip_boxes`):

* a box reaching outside its image is clipped to it, and a warning names the file;
* a degenerate box (zero width or height after clipping) is dropped, and a warning names the file and count;
* an unknown class, and a malformed file, are `DataFormatError`s naming the file and the line (YOLO), the
  JSON path (COCO: ``annotations[3].bbox``) or the XML element (VOC: ``object[2]/bndbox/xmin``);
* an image that cannot be read (missing, corrupt, not a regular file, too large) is left out, named in one
  warning and in the dataset's ``skipped``; the others are read.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import re
import warnings
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from convkit.data.errors import DataFormatError, DatasetNotFoundError
from convkit.data.folder import (
    _hidden,
    _is_image_name,
    _not_regular,
    decode_image,
    parse_classes,
    read_class_list,
    report_skipped,
    survey_images,
)
from convkit.data.tensor import EpochBatches, channel_stats
from convkit.tasks.detection.boxes import clip_boxes
from convkit.utils import atomic_write, atomic_write_text, load_yaml, make_folder, shorten

__all__ = ["DetectionBatches", "DetectionDataset", "load_detection", "read_coco", "read_voc", "read_yolo"]

MAX_ANNOTATION_BYTES = 64 << 20  # the largest VOC XML or YOLO txt file read (one image's objects)
MAX_JSON_BYTES = 4 << 30  # the largest COCO JSON read (COCO 2017's train instances take 450 MB)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
_INTEGER = re.compile(r"[+-]?[0-9]{1,9}")
# Declarations refused in XML before parsing (entity expansion); expat reads UTF-8 and UTF-16 files.
_XML_DECLARATIONS = tuple(word.encode(enc) for word in ("<!DOCTYPE", "<!ENTITY")
                          for enc in ("utf-8", "utf-16-le", "utf-16-be"))


# ---------------------------------------------------------------------------------------------------- the dataset

def _check_target(target, i: int, shape: tuple[int, ...], num_classes: int, source: str) -> dict:
    """A target dict with the internal dtypes, or a DataFormatError naming `targets[i]` and the key."""
    where = f"{source}: targets[{i}]"
    if not isinstance(target, dict) or "boxes" not in target or "labels" not in target:
        raise DataFormatError(f"{where}: expected a dict with 'boxes' (M, 4) and 'labels' (M,), found "
                              f"{shorten(target)}")
    boxes = torch.as_tensor(target["boxes"], dtype=torch.float32)
    labels = torch.as_tensor(target["labels"])
    if boxes.numel() == 0:  # [] and torch.zeros(0) are no boxes
        boxes = boxes.reshape(0, 4)
    if labels.numel() == 0:
        labels = labels.reshape(0).long()
    m = len(boxes)
    if boxes.dim() != 2 or boxes.shape[1] != 4 or not torch.isfinite(boxes).all():
        raise DataFormatError(f"{where}['boxes']: expected finite (M, 4) xyxy boxes, found shape {tuple(boxes.shape)}")
    if labels.shape != (m,) or labels.is_floating_point() or labels.dtype == torch.bool:
        raise DataFormatError(f"{where}['labels']: expected {m} integer class indices, found {labels.dtype} "
                              f"{tuple(labels.shape)}")
    if m and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataFormatError(f"{where}['labels']: class index {int(labels.max() if labels.max() >= num_classes else labels.min())} "
                              f"outside 0..{num_classes - 1} ({num_classes} classes)")
    out = {"boxes": boxes, "labels": labels.long(),
           "iscrowd": torch.as_tensor(target.get("iscrowd", torch.zeros(m)), dtype=torch.bool)}
    if out["iscrowd"].shape != (m,):
        raise DataFormatError(f"{where}['iscrowd']: expected {m} flags, found shape {tuple(out['iscrowd'].shape)}")
    if target.get("masks") is not None:
        masks = torch.as_tensor(target["masks"])
        if masks.shape != (m, *shape[1:]) or masks.is_floating_point():
            raise DataFormatError(f"{where}['masks']: expected uint8 (M, H, W) = {(m, *shape[1:])}, found "
                                  f"{masks.dtype} {tuple(masks.shape)}")
        out["masks"] = masks.to(torch.uint8)
    return out


def _short_float(x: float) -> float:
    """The shortest decimal that reads back as the same float32 (3.1, not 3.0999999046325684)."""
    return float(str(np.float32(x)))


class DetectionDataset:
    """Images and their targets (boxes, labels, crowd flags, optional masks) in the internal form.

    Images of one size are held as one (N, C, H, W) uint8 tensor (`images_tensor`, for batching on the
    device); images of different sizes as a list.

    Args:
        images: a list of uint8 (C, H, W) tensors (all of one C), or one uint8 (N, C, H, W) tensor.
        targets: one dict per image (see the module's docstring); ``iscrowd`` defaults to all False.
        classes: the class names, in label order.
        source: where the data came from, for messages (a file or folder).
        image_files: the file of each image, or None.
        skipped: messages naming the image files that could not be read (and were left out).

    Raises:
        DataFormatError: images that are not uint8 (C, H, W), targets that do not match them (the message
            names ``targets[i]`` and the key), or class indices outside the classes.

    Example:
        >>> ds = DetectionDataset(torch.zeros(2, 3, 8, 8, dtype=torch.uint8),
        ...                       [{"boxes": [[1.0, 1.0, 4.0, 5.0]], "labels": [1]},
        ...                        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}],
        ...                       ["cat", "dog"], source="pets")
        >>> ds
        DetectionDataset(2 images of (3, 8, 8), 1 objects, 2 classes, source 'pets')
        >>> image, target = ds[0]
        >>> target["boxes"], target["labels"], target["iscrowd"]
        (tensor([[1., 1., 4., 5.]]), tensor([1]), tensor([False]))
    """

    def __init__(self, images: torch.Tensor | Sequence[torch.Tensor], targets: Sequence[dict],
                 classes: Sequence[str], source: str = "", image_files: Sequence[str | os.PathLike] | None = None,
                 skipped: Sequence[str] = ()):
        self.classes = list(classes)
        self.source = str(source)
        self.skipped = list(skipped)
        self._tensor: torch.Tensor | None = None
        self._list: list[torch.Tensor] | None = None
        if isinstance(images, torch.Tensor):
            if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] not in (1, 3):
                raise DataFormatError(f"{self.source}: images: expected uint8 (N, C, H, W) with C 1 or 3, found "
                                      f"{images.dtype} {tuple(images.shape)}")
            self._tensor = images
        else:
            images = list(images)
            if not images:
                raise DataFormatError(f"{self.source}: no images")
            bad = next((i for i, x in enumerate(images) if not isinstance(x, torch.Tensor) or x.dtype != torch.uint8
                        or x.dim() != 3 or x.shape[0] != images[0].shape[0] or x.shape[0] not in (1, 3)), None)
            if bad is not None:
                found = images[bad]
                raise DataFormatError(f"{self.source}: images[{bad}]: expected a uint8 (C, H, W) tensor with C 1 or 3 "
                                      f"like images[0], found {getattr(found, 'dtype', type(found).__name__)} "
                                      f"{tuple(getattr(found, 'shape', ()))}")
            if len({tuple(x.shape) for x in images}) == 1:
                self._tensor = torch.stack(images)
            else:
                self._list = images
        if len(targets) != len(self):
            raise DataFormatError(f"{self.source}: {len(self)} images but {len(targets)} targets")
        self.targets = [_check_target(t, i, tuple(self._image(i).shape), len(self.classes), self.source)
                        for i, t in enumerate(targets)]
        if image_files is not None and len(image_files) != len(self):
            raise DataFormatError(f"{self.source}: {len(self)} images but {len(image_files)} image files")
        self.image_files = None if image_files is None else [Path(p) for p in image_files]
        self._mean: torch.Tensor | None = None
        self._std: torch.Tensor | None = None

    def _image(self, i: int) -> torch.Tensor:
        return self._tensor[i] if self._tensor is not None else self._list[i]

    def __len__(self) -> int:
        return len(self._tensor) if self._tensor is not None else len(self._list)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, dict]:
        return self._image(i), self.targets[i]

    def __repr__(self) -> str:
        shape = self.image_shape or f"{self.channels} channel(s), sizes that differ"
        objects = sum(len(t["labels"]) for t in self.targets)
        return (f"DetectionDataset({len(self)} images of {shape}, {objects} objects, {self.num_classes} classes, "
                f"source {self.source!r})")

    @property
    def num_classes(self) -> int:
        """The number of classes."""
        return len(self.classes)

    @property
    def channels(self) -> int:
        """The channels every image has (1 or 3)."""
        return int(self._tensor.shape[1] if self._tensor is not None else self._list[0].shape[0])

    @property
    def image_shape(self) -> tuple[int, int, int] | None:
        """(C, H, W) if every image has that shape, else None."""
        return tuple(self._tensor.shape[1:]) if self._tensor is not None else None

    @property
    def images(self) -> list[torch.Tensor]:
        """The images, as a list of (C, H, W) tensors (views into `images_tensor` when they share a size)."""
        return list(self._tensor) if self._tensor is not None else list(self._list)

    def images_tensor(self) -> torch.Tensor:
        """All images as one uint8 (N, C, H, W) tensor (not a copy), for batching on the device.

        Raises:
            DataFormatError: the images differ in size (check `image_shape` first).

        Example:
            >>> DetectionDataset([torch.zeros(1, 4, 6, dtype=torch.uint8)], [{"boxes": [], "labels": []}],
            ...                  ["a"]).images_tensor().shape
            torch.Size([1, 1, 4, 6])
        """
        if self._tensor is None:
            sizes = sorted({tuple(x.shape[1:]) for x in self._list})
            raise DataFormatError(f"{self.source}: the images differ in size ({len(sizes)} sizes, e.g. "
                                  f"{sizes[0]} and {sizes[-1]}); they are not one tensor")
        return self._tensor

    @property
    def mean(self) -> torch.Tensor:
        """Per-channel mean of the images on the [0, 1] scale (computed once), what the training engine normalises
        with."""
        if self._mean is None:
            self._mean, self._std = channel_stats(self.images_tensor() if self._tensor is not None else
                                                  torch.cat([x.flatten(1) for x in self._list], 1)[None, :, :, None])
        return self._mean

    @property
    def std(self) -> torch.Tensor:
        """Per-channel standard deviation on the [0, 1] scale."""
        if self._std is None:
            _ = self.mean
        return self._std

    @property
    def device(self) -> torch.device:
        """Where the images are."""
        return self._image(0).device if len(self) else torch.device("cpu")

    def to(self, device: str | torch.device) -> DetectionDataset:
        """The same dataset with its images and targets on `device` (names and files shared).

        Example:
            >>> ds = DetectionDataset(torch.zeros(1, 1, 4, 4, dtype=torch.uint8), [{"boxes": [], "labels": []}], ["a"])
            >>> ds.to("meta").images_tensor().device
            device(type='meta')
        """
        device = torch.device(device)
        if self.device == device:
            return self
        images = self._tensor.to(device) if self._tensor is not None else [x.to(device) for x in self._list]
        moved = DetectionDataset.__new__(DetectionDataset)
        moved.__dict__.update(self.__dict__)
        moved._tensor, moved._list = (images, None) if self._tensor is not None else (None, images)
        moved.targets = [{k: v.to(device) for k, v in t.items()} for t in self.targets]
        return moved

    def batches(self, batch_size: int, *, shuffle: bool = True, seed: int = 0, epoch: int = 0, start: int = 0,
                drop_last: bool = False) -> DetectionBatches:
        """One epoch of (uint8 images (B, C, H, W), list of B targets) batches, in the seeded order of the
        training engine (`convkit.data.tensor.epoch_permutation`), resumable from `start`.

        Raises:
            DataFormatError: the images differ in size (resize them first: `resized`).

        Example:
            >>> ds = DetectionDataset(torch.zeros(3, 1, 4, 4, dtype=torch.uint8),
            ...                       [{"boxes": [[0, 0, i + 1, 1]], "labels": [0]} for i in range(3)], ["a"])
            >>> [(len(x), [t["boxes"][0, 2].item() for t in ts]) for x, ts in ds.batches(2, shuffle=False)]
            [(2, [1.0, 2.0]), (1, [3.0])]
        """
        self.images_tensor()  # one size, or a clear error
        return DetectionBatches(self, batch_size, shuffle, seed, epoch, start, drop_last)

    def subset(self, index: Sequence[int] | torch.Tensor) -> DetectionDataset:
        """The images at `index` (in that order), with their targets and files.

        Args:
            index: image indices.

        Returns:
            A new `DetectionDataset` (its tensors are shared or indexed copies).

        Example:
            >>> ds = DetectionDataset(torch.zeros(3, 1, 4, 4, dtype=torch.uint8),
            ...                       [{"boxes": [[0, 0, i + 1, 1]], "labels": [0]} for i in range(3)], ["a"])
            >>> [t["boxes"][0, 2].item() for t in ds.subset([2, 0]).targets]
            [3.0, 1.0]
        """
        index = torch.as_tensor(index, dtype=torch.long).reshape(-1).tolist()
        images = self._tensor[index] if self._tensor is not None else [self._list[i] for i in index]
        if self._tensor is None and index and len({tuple(self._list[i].shape) for i in index}) == 1:
            images = torch.stack(images)
        if not index:
            images = self._tensor[:0] if self._tensor is not None else torch.zeros(0, self.channels, 1, 1, dtype=torch.uint8)
        files = None if self.image_files is None else [self.image_files[i] for i in index]
        return DetectionDataset(images, [self.targets[i] for i in index], self.classes, self.source, files,
                                self.skipped)

    def with_stats(self, mean: torch.Tensor, std: torch.Tensor) -> DetectionDataset:
        """This dataset (a shallow copy) with given statistics (e.g. the training set's, for the validation set)."""
        copy = DetectionDataset.__new__(DetectionDataset)
        copy.__dict__.update(self.__dict__)
        copy._mean, copy._std = mean, std
        return copy

    def resized(self, height: int, width: int) -> DetectionDataset:
        """Every image resized to height x width (bilinear, antialiased), its boxes and masks moved with it.

        Args:
            height, width: the new size.

        Returns:
            A new `DetectionDataset` whose images are one (N, C, height, width) tensor.

        Example:
            >>> ds = DetectionDataset([torch.zeros(3, 8, 16, dtype=torch.uint8), torch.zeros(3, 4, 4, dtype=torch.uint8)],
            ...                       [{"boxes": [[2, 2, 6, 4]], "labels": [0]}, {"boxes": [], "labels": []}], ["a"])
            >>> small = ds.resized(4, 8)
            >>> small.image_shape, small.targets[0]["boxes"]
            ((3, 4, 8), tensor([[1., 1., 3., 2.]]))
        """
        import torch.nn.functional as F

        images, targets = [], []
        for image, target in zip(self.images, self.targets):
            h, w = image.shape[1:]
            x = F.interpolate(image[None].float(), size=(height, width), mode="bilinear", antialias=True,
                              align_corners=False)
            images.append(x[0].round().clamp(0, 255).to(torch.uint8))
            scale = torch.tensor([width / w, height / h, width / w, height / h], dtype=torch.float64)
            moved = dict(target, boxes=(target["boxes"].double() * scale).float())
            if "masks" in target and not len(target["masks"]):
                moved["masks"] = target["masks"].new_zeros(0, height, width)
            elif "masks" in target:
                moved["masks"] = F.interpolate(target["masks"][None].float(), size=(height, width),
                                               mode="nearest")[0].to(torch.uint8)
            targets.append(moved)
        return DetectionDataset(torch.stack(images), targets, self.classes, self.source, self.image_files,
                                self.skipped)

    def split(self, fraction: float, seed: int = 0) -> tuple[DetectionDataset, DetectionDataset]:
        """Holds out a fixed, seeded part of the images (the validation set when none is given).

        Args:
            fraction: the part held out, in (0, 1); at least one image is held out and one kept.
            seed: the seed of the draw (the same seed and dataset give the same split).

        Returns:
            (rest, held_out), each in the original order.

        Raises:
            ValueError: `fraction` outside (0, 1).
            DataFormatError: fewer than 2 images.

        Example:
            >>> ds = DetectionDataset(torch.zeros(10, 1, 4, 4, dtype=torch.uint8),
            ...                       [{"boxes": [], "labels": []}] * 10, ["a"])
            >>> rest, held_out = ds.split(0.2, seed=0)
            >>> len(rest), len(held_out)
            (8, 2)
        """
        from convkit.data.tensor import random_split

        return random_split(self, fraction, seed)

    def coco_dict(self, file_names: Sequence[str] | None = None) -> dict:
        """The dataset as a COCO dict: image and annotation ids from 1, category ids = class index + 1, boxes as
        [x, y, width, height], ``area`` (the mask's when there are masks, else the box's), ``iscrowd``, and RLE
        ``segmentation`` when there are masks.

        Args:
            file_names: the ``file_name`` of each image; default: the image files (or ``images/000000.png``...).

        Returns:
            A dict with ``info``, ``licenses``, ``images``, ``annotations`` and ``categories``.

        Example:
            >>> ds = DetectionDataset(torch.zeros(1, 3, 8, 8, dtype=torch.uint8),
            ...                       [{"boxes": [[1.0, 2.0, 4.0, 6.0]], "labels": [1]}], ["cat", "dog"])
            >>> coco = ds.coco_dict()
            >>> coco["annotations"]
            [{'id': 1, 'image_id': 1, 'category_id': 2, 'bbox': [1.0, 2.0, 3.0, 4.0], 'area': 12.0, 'iscrowd': 0}]
            >>> coco["images"], coco["categories"][0]
            ([{'id': 1, 'file_name': 'images/000000.png', 'height': 8, 'width': 8}], {'id': 1, 'name': 'cat', 'supercategory': ''})
        """
        from pycocotools import mask as mask_utils

        if file_names is None:
            file_names = ([str(p) for p in self.image_files] if self.image_files is not None
                          else [f"images/{i:06}.png" for i in range(len(self))])
        images, annotations = [], []
        for i, (image, target) in enumerate(zip(self.images, self.targets)):
            images.append({"id": i + 1, "file_name": str(file_names[i]), "height": int(image.shape[1]),
                           "width": int(image.shape[2])})
            masks = target.get("masks")
            for j, (box, label, crowd) in enumerate(zip(target["boxes"].tolist(), target["labels"].tolist(),
                                                        target["iscrowd"].tolist())):
                x1, y1, x2, y2 = (_short_float(v) for v in box)
                w, h = _short_float(x2 - x1), _short_float(y2 - y1)
                ann = {"id": len(annotations) + 1, "image_id": i + 1, "category_id": label + 1,
                       "bbox": [x1, y1, w, h], "area": _short_float(w * h), "iscrowd": int(crowd)}
                if masks is not None:
                    rle = mask_utils.encode(np.asfortranarray(masks[j].numpy().astype(np.uint8)))
                    ann["area"] = float(mask_utils.area(rle))
                    ann["segmentation"] = {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}
                annotations.append(ann)
        categories = [{"id": i + 1, "name": name, "supercategory": ""} for i, name in enumerate(self.classes)]
        return {"info": {"description": f"written by convkit from {self.source}"}, "licenses": [],
                "images": images, "annotations": annotations, "categories": categories}

    def to_coco(self, path: str | os.PathLike, write_images: bool | None = None) -> Path:
        """Writes the dataset as a COCO JSON file (see `coco_dict`), and its images as PNGs if asked.

        Args:
            path: the JSON file to write (atomically).
            write_images: write each image to ``images/000000.png``... beside the JSON; default: when the
                dataset has no image files. Otherwise ``file_name``s are the image files, relative to the JSON's
                folder.

        Returns:
            The JSON's path.

        Example:
            >>> ds = DetectionDataset(torch.zeros(1, 3, 8, 8, dtype=torch.uint8),
            ...                       [{"boxes": [[1.0, 2.0, 4.0, 6.0]], "labels": [0]}], ["cat"])
            >>> load_detection(ds.to_coco("out/train.json")).targets[0]["boxes"]
            tensor([[1., 2., 4., 6.]])
        """
        path = Path(path)
        folder = path.parent
        if write_images is None:
            write_images = self.image_files is None
        if write_images:
            names = [f"images/{i:06}.png" for i in range(len(self))]
            (folder / "images").mkdir(parents=True, exist_ok=True)
            for name, image in zip(names, self.images):
                a = image.permute(1, 2, 0).numpy()
                Image.fromarray(a[..., 0] if a.shape[2] == 1 else a).save(folder / name)
        elif self.image_files is None:
            raise DataFormatError(f"{self.source}: the images have no files; write them (write_images=True)")
        else:
            names = [Path(os.path.relpath(Path(p).resolve(), folder.resolve())).as_posix() for p in self.image_files]
        return atomic_write_text(path, json.dumps(self.coco_dict(names)))

    def to_yolo(self, folder: str | os.PathLike, split: str = "train") -> Path:
        """Writes the dataset as a YOLO folder (Ultralytics' layout), for tools that read only that format.

        The layout::

            folder/images/<split>/000000.png ...   the images (PNG, as they are: grayscale or RGB)
            folder/labels/<split>/000000.txt ...   one "class cx cy w h" line per object, fractions of the image
            folder/data.yaml                       path (the folder, absolute), <split>: images/<split>, names

        Calls with other splits add to the same folder and to the same ``data.yaml`` (e.g. "train" then "val"),
        which is what ``YOLO(...).train(data="folder/data.yaml")`` takes. Every file is written atomically; an
        image without objects gets an empty label file. YOLO labels hold no crowd flag and no masks: crowd
        objects (``iscrowd``) are left out, and masks are not written. `read_yolo` reads the folder back.

        Args:
            folder: where to write (created if missing).
            split: the split's name (a plain folder name, e.g. "train" or "val").

        Returns:
            The path of ``data.yaml``.

        Raises:
            DataFormatError: `split` is not a plain folder name, or ``data.yaml`` is there already with other
                class names (or is not a YAML mapping).
            OSError: the folder cannot be written, naming the path.

        Example:
            >>> ds = DetectionDataset(torch.zeros(1, 3, 8, 16, dtype=torch.uint8),
            ...                       [{"boxes": [[2.0, 2.0, 6.0, 4.0]], "labels": [1]}], ["cat", "dog"])
            >>> data_yaml = ds.to_yolo("exported", split="val")
            >>> Path("exported/labels/val/000000.txt").read_text()
            '1 0.25 0.375 0.25 0.25\\n'
            >>> load_detection("exported", split="val").targets[0]["boxes"]
            tensor([[2., 2., 6., 4.]])
        """
        import yaml

        folder = Path(folder)
        if not isinstance(split, str) or not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*", split):
            raise DataFormatError(f"to_yolo: split: expected a plain folder name such as 'train' or 'val', found "
                                  f"{shorten(split)}")
        data_yaml = folder / "data.yaml"
        doc: dict = {}
        if data_yaml.is_file():
            doc = load_yaml(_read_bytes(data_yaml, MAX_ANNOTATION_BYTES).decode("utf-8-sig"), str(data_yaml))
            if not isinstance(doc, dict):
                raise DataFormatError(f"{data_yaml}: expected a YAML mapping (path, train, val, names), found "
                                      f"{shorten(doc)}")
            if doc.get("names") not in (None, self.classes):
                raise DataFormatError(f"{data_yaml}: names: the folder holds other classes {shorten(doc['names'])}; "
                                      f"expected {shorten(self.classes)} (write to another folder)")
        jobs = []
        for i, (image, target) in enumerate(zip(self.images, self.targets)):
            h, w = int(image.shape[1]), int(image.shape[2])
            keep = ~target["iscrowd"]
            lines = []
            for (x1, y1, x2, y2), label in zip(target["boxes"][keep].double().tolist(), target["labels"][keep].tolist()):
                values = ((x1 + x2) / 2 / w, (y1 + y2) / 2 / h, (x2 - x1) / w, (y2 - y1) / h)
                lines.append(" ".join([str(label), *(f"{v:.8g}" for v in values)]) + "\n")
            jobs.append((folder / "images" / split / f"{i:06d}.png", image, folder / "labels" / split / f"{i:06d}.txt",
                         "".join(lines)))

        def write(job) -> None:
            image_path, image, label_path, text = job
            a = image.permute(1, 2, 0).numpy()
            atomic_write(image_path, lambda tmp: Image.fromarray(a[..., 0] if a.shape[2] == 1 else a).save(tmp, "PNG"))
            atomic_write_text(label_path, text)

        make_folder(folder / "images" / split)
        make_folder(folder / "labels" / split)
        with ThreadPoolExecutor(4) as pool:  # each file is synced to disk: overlap the waits
            list(pool.map(write, jobs))
        doc.update({"path": str(folder.resolve()), split: f"images/{split}", "names": list(self.classes)})
        return atomic_write_text(data_yaml, yaml.safe_dump(doc, sort_keys=False, allow_unicode=True))


# ------------------------------------------------------------------------------------------- shared by the readers

class DetectionBatches(EpochBatches):
    """`EpochBatches` for detection: each batch is (uint8 images, the list of their target dicts)."""

    def __iter__(self):
        images, targets = self.dataset.images_tensor(), self.dataset.targets
        for index in self._slices(self._order):
            self.position += len(index)
            yield images[index.to(images.device)], [targets[i] for i in index.tolist()]


@dataclass
class _Record:
    """One image's annotations as read, before its image is decoded (the boxes are cleaned against its size)."""

    image: Path
    where: str  # the annotation file (for messages)
    boxes: np.ndarray  # float64 (M, 4) xyxy, in pixels, or as fractions of the image's size when `normalised`
    labels: list[int]
    crowd: list[bool]
    normalised: bool = False
    segmentations: list = field(default_factory=list)  # COCO segmentation objects (masks=True), one per box
    places: list[str] = field(default_factory=list)  # where each box is written (JSON path), for mask errors


def _read_bytes(path: Path, limit: int) -> bytes:
    """The bytes of an annotation file: a regular file (a FIFO would block the read), of at most `limit` bytes."""
    try:
        info = path.stat()
    except OSError as err:
        raise DataFormatError(f"{path}: cannot read ({err.strerror or err})") from None
    what = _not_regular(info.st_mode)
    if what:
        raise DataFormatError(f"{path}: {what}, not an annotation file")
    size = info.st_size
    if size > limit:
        raise DataFormatError(f"{path}: {size:,} bytes, more than the {limit:,} an annotation file may have")
    try:
        return path.read_bytes()
    except OSError as err:
        raise DataFormatError(f"{path}: cannot read ({err.strerror or err})") from None


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _integer(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _decode(path: Path, channels: int) -> torch.Tensor | str:
    try:
        return decode_image(path, channels)
    except (DataFormatError, OSError) as err:
        return str(err) if str(path) in str(err) else f"{path}: {err}"


def _report(messages: list[str], source: str, what: str) -> None:
    if messages:
        shown = "\n  ".join(messages[:10]) + (f"\n  ... and {len(messages) - 10} more" if len(messages) > 10 else "")
        warnings.warn(f"{source}: {what}:\n  {shown}", stacklevel=4)


def _coco_mask(segmentation, height: int, width: int, where: str) -> np.ndarray:
    """A COCO segmentation (polygons, or RLE compressed or not) as a uint8 (H, W) mask, via pycocotools."""
    from pycocotools import mask as mask_utils

    try:
        if isinstance(segmentation, list) and segmentation and all(
                isinstance(p, list) and len(p) >= 6 and len(p) % 2 == 0 and all(map(_number, p)) for p in segmentation):
            rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
        elif isinstance(segmentation, dict) and isinstance(segmentation.get("counts"), list):
            rle = mask_utils.frPyObjects(segmentation, height, width)
        elif isinstance(segmentation, dict) and isinstance(segmentation.get("counts"), str):
            rle = {"size": segmentation.get("size"), "counts": segmentation["counts"].encode("ascii")}
        else:
            raise ValueError("not polygons or RLE")
        with warnings.catch_warnings():  # pycocotools' decode warns under NumPy 2 (its __array__ signature)
            warnings.simplefilter("ignore", DeprecationWarning)
            mask = mask_utils.decode(rle)
    except Exception as err:  # pycocotools raises TypeError, ValueError, IndexError... on malformed input
        raise DataFormatError(f"{where}.segmentation: expected polygons [[x1, y1, x2, y2, x3, y3, ...], ...] or RLE "
                              f"{{'size': [{height}, {width}], 'counts': ...}}, found {shorten(segmentation)} "
                              f"({err})") from None
    if mask.shape != (height, width):
        raise DataFormatError(f"{where}.segmentation: an RLE of size {list(mask.shape)}, but the image is "
                              f"{height}x{width}")
    return mask


def _build(records: list[_Record], classes: list[str], source: str, masks: bool = False) -> DetectionDataset:
    """Decodes the images of `records` (those that cannot be read are reported and left out), cleans each
    record's boxes against its image (clip, drop degenerate: reported), and makes the dataset."""
    if not records:
        raise DataFormatError(f"{source}: no images listed")
    survey = survey_images([r.image for r in records])
    skipped = list(survey.skipped)
    # The channels are the majority's (a warning names a file of the other kind); sizes may differ, so a
    # size is passed only to keep `choose` from requiring one size.
    channels, _ = survey.choose(image_size=(1, 1), source=source)
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        decoded = list(pool.map(lambda i: _decode(records[i].image, channels), survey.readable))
    images, targets, files, clipped_notes, dropped_notes = [], [], [], [], []
    for i, image in zip(survey.readable, decoded):
        if isinstance(image, str):
            skipped.append(image)
            continue
        r = records[i]
        h, w = image.shape[1:]
        raw = torch.from_numpy(r.boxes.reshape(-1, 4).astype(np.float64))
        if r.normalised:
            raw = raw * torch.tensor([w, h, w, h], dtype=torch.float64)
        boxes, keep, clipped = clip_boxes(raw, h, w)
        target = {"boxes": boxes[keep].float(), "labels": torch.tensor(r.labels, dtype=torch.long).reshape(-1)[keep],
                  "iscrowd": torch.tensor(r.crowd, dtype=torch.bool).reshape(-1)[keep]}
        if masks:
            kept = [j for j in range(len(keep)) if keep[j]]
            target["masks"] = torch.from_numpy(np.stack(
                [_coco_mask(r.segmentations[j], h, w, r.places[j]) for j in kept]) if kept
                else np.zeros((0, h, w), np.uint8))
        if clipped.any():
            clipped_notes.append(f"{r.where}: {int(clipped.sum())} box(es) clipped to the {w}x{h} image "
                                 f"({r.image.name})")
        if not keep.all():
            dropped_notes.append(f"{r.where}: {int((~keep).sum())} box(es) of zero width or height "
                                 f"({r.image.name})")
        images.append(image)
        targets.append(target)
        files.append(r.image)
    report_skipped(skipped, source, "image(s) that could not be read")
    if not images:
        raise DataFormatError(f"{source}: none of the {len(records)} images could be read (first: {skipped[0]})")
    _report(clipped_notes, source, f"{len(clipped_notes)} file(s) with boxes reaching outside their image; "
                                   "clipped to it")
    _report(dropped_notes, source, f"{len(dropped_notes)} file(s) with degenerate boxes (zero width or height "
                                   "after clipping); dropped")
    return DetectionDataset(images, targets, classes, source, files, skipped)


def _class_list(classes: str | Sequence[str] | None) -> list[str] | None:
    return parse_classes(classes)


# ------------------------------------------------------------------------------------------------------------ COCO

def _coco_list(data: dict, key: str, path: Path, required: bool = True) -> list:
    value = data.get(key, None if required else [])
    if not isinstance(value, list):
        found = "missing" if value is None else f"found {shorten(value)}"
        raise DataFormatError(f"{path}: {key}: expected a list, {found}")
    return value


def _coco_field(obj: dict, key: str, check, expected: str, where: str, path: Path):
    if key not in obj:
        raise DataFormatError(f"{path}: {where}.{key}: missing; expected {expected}")
    if not check(obj[key]):
        raise DataFormatError(f"{path}: {where}.{key}: expected {expected}, found {shorten(obj[key])}")
    return obj[key]


def _coco_items(data: dict, key: str, path: Path, required: bool = True):
    for i, item in enumerate(_coco_list(data, key, path, required)):
        if not isinstance(item, dict):
            raise DataFormatError(f"{path}: {key}[{i}]: expected an object, found {shorten(item)}")
        yield i, f"{key}[{i}]", item


def _reject_constant(name: str):
    raise ValueError(f"{name} is not a number JSON allows")


def _load_json(path: Path) -> dict:
    data = _read_bytes(path, MAX_JSON_BYTES)
    try:
        value = json.loads(data, parse_constant=_reject_constant)
    except json.JSONDecodeError as err:
        raise DataFormatError(f"{path}:{err.lineno}:{err.colno}: not valid JSON ({err.msg})") from None
    except (ValueError, RecursionError) as err:  # NaN/Infinity, text that is not UTF-8/16/32, deep nesting
        raise DataFormatError(f"{path}: not valid JSON ({type(err).__name__}: {shorten(str(err))})") from None
    if not isinstance(value, dict):
        raise DataFormatError(f"{path}: expected a COCO object {{\"images\": [...], \"annotations\": [...], "
                              f"\"categories\": [...]}}, found {type(value).__name__}")
    return value


def _coco_image_path(folder: Path, file_name: str) -> Path:
    """A COCO `file_name` relative to the JSON's folder, or to an `images/` folder beside it."""
    direct = folder / file_name
    beside = folder / "images" / file_name
    return beside if not direct.exists() and beside.exists() else direct


def read_coco(path: str | os.PathLike, classes: str | Sequence[str] | None = None,
              masks: bool = False) -> DetectionDataset:
    """Reads a COCO JSON file (checked field by field, then indexed by pycocotools' `COCO`) and its images.

    Image ``file_name``s are relative to the JSON's folder, or to an ``images/`` folder beside it. Category
    ids become class indices in sorted-id order (or, with `classes`, the index of the category's name in it);
    ``iscrowd`` is kept. ``width``/``height`` of the images are not needed: the image files give the size.

    Args:
        path: the JSON file.
        classes: the class names in label order (a list, "cat,dog" or a file of one name a line), e.g. those
            of the training set when reading validation data; default: the categories' names.
        masks: also read each annotation's ``segmentation`` (polygons or RLE) into ``masks``.

    Returns:
        A `DetectionDataset` of the images that could be read, in the JSON's order.

    Raises:
        DataFormatError: the file is not JSON (names the line), or a field is missing or wrong (names its JSON
            path, e.g. ``annotations[3].bbox``, and what was expected); an annotation of a category that is not
            one of the categories or not in `classes` (unknown class); no image could be read.

    Example:
        >>> Image.new("RGB", (8, 6)).save("a.png")
        >>> coco = {"images": [{"id": 1, "file_name": "a.png"}], "categories": [{"id": 3, "name": "cat"}],
        ...         "annotations": [{"id": 1, "image_id": 1, "category_id": 3, "bbox": [1, 2, 3, 2]}]}
        >>> _ = Path("train.json").write_text(json.dumps(coco))
        >>> ds = read_coco("train.json")
        >>> ds.classes, ds.targets[0]["boxes"], ds.targets[0]["labels"]
        (['cat'], tensor([[1., 2., 4., 4.]]), tensor([0]))
    """
    from pycocotools.coco import COCO

    path = Path(path)
    names = _class_list(classes)
    data = _load_json(path)
    images, categories = {}, {}
    for _, where, img in _coco_items(data, "images", path):
        image_id = _coco_field(img, "id", _integer, "an integer id", where, path)
        _coco_field(img, "file_name", lambda v: isinstance(v, str) and v != "", "a file name", where, path)
        if image_id in images:
            raise DataFormatError(f"{path}: {where}.id: {image_id} is also the id of {images[image_id][0]}")
        images[image_id] = (where, img)
    for _, where, cat in _coco_items(data, "categories", path):
        cat_id = _coco_field(cat, "id", _integer, "an integer id", where, path)
        name = _coco_field(cat, "name", lambda v: isinstance(v, str) and v != "", "a class name", where, path)
        if cat_id in categories:
            raise DataFormatError(f"{path}: {where}.id: {cat_id} is also the id of {categories[cat_id][0]}")
        other = next((w for w, n in categories.values() if n == name), None)
        if other is not None:
            raise DataFormatError(f"{path}: {where}.name: {shorten(name)} is also the name of {other}")
        categories[cat_id] = (where, name)
    if names is None:
        names = [categories[c][1] for c in sorted(categories)]
    index = {c: names.index(n) for c, (_, n) in categories.items() if n in names}
    places = {}
    for i, where, ann in _coco_items(data, "annotations", path, required=False):
        image_id = _coco_field(ann, "image_id", _integer, "an integer image id", where, path)
        if image_id not in images:
            raise DataFormatError(f"{path}: {where}.image_id: {image_id} is not the id of any image")
        cat_id = _coco_field(ann, "category_id", _integer, "an integer category id", where, path)
        if cat_id not in categories:
            raise DataFormatError(f"{path}: {where}.category_id: unknown class: {cat_id} is not the id of any "
                                  f"category (ids: {shorten(sorted(categories))})")
        if cat_id not in index:
            raise DataFormatError(f"{path}: {where}.category_id: unknown class: category {cat_id} "
                                  f"({shorten(categories[cat_id][1])}) is not one of the classes {shorten(names)}")
        _coco_field(ann, "bbox", lambda v: isinstance(v, list) and len(v) == 4 and all(map(_number, v))
                    and v[2] >= 0 and v[3] >= 0, "[x, y, width, height]: 4 finite numbers, width and height >= 0",
                    where, path)
        if "iscrowd" in ann and ann["iscrowd"] not in (0, 1):
            raise DataFormatError(f"{path}: {where}.iscrowd: expected 0 or 1, found {shorten(ann['iscrowd'])}")
        if "id" in ann and not _integer(ann["id"]):
            raise DataFormatError(f"{path}: {where}.id: expected an integer id, found {shorten(ann['id'])}")
        if masks and "segmentation" not in ann:
            raise DataFormatError(f"{path}: {where}.segmentation: missing; masks were asked for")
        ann.setdefault("id", -1 - i)  # pycocotools indexes annotations by id; negative ids cannot clash
        places[id(ann)] = where
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
        coco.createIndex()
    records = []
    for image_id, (_, img) in images.items():
        anns = coco.imgToAnns.get(image_id, [])
        boxes = np.array([ann["bbox"] for ann in anns], dtype=np.float64).reshape(-1, 4)
        boxes[:, 2:] += boxes[:, :2]
        records.append(_Record(_coco_image_path(path.parent, img["file_name"]), str(path), boxes,
                               [index[ann["category_id"]] for ann in anns],
                               [bool(ann.get("iscrowd", 0)) for ann in anns],
                               segmentations=[ann.get("segmentation") for ann in anns],
                               places=[f"{path}: {places[id(ann)]}" for ann in anns]))
    return _build(records, names, str(path), masks)


# ------------------------------------------------------------------------------------------------------------- VOC

def _parse_xml(path: Path) -> ET.Element:
    """An XML file's root element; DOCTYPE and ENTITY declarations are refused before parsing (entity expansion)."""
    data = _read_bytes(path, MAX_ANNOTATION_BYTES)
    if any(word in data for word in _XML_DECLARATIONS):
        raise DataFormatError(f"{path}: holds a <!DOCTYPE or <!ENTITY declaration, which annotation files do not "
                              "need; refused (entity expansion)")
    try:
        return ET.fromstring(data)
    except ET.ParseError as err:
        line, column = err.position
        raise DataFormatError(f"{path}:{line}:{column}: not well-formed XML ({err})") from None


def _voc_number(obj: ET.Element, tag: str, path: Path, where: str) -> float:
    text = obj.findtext(tag)
    if text is None:
        raise DataFormatError(f"{path}: {where}/{tag}: missing; expected a number")
    try:
        value = float(text.strip())
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise DataFormatError(f"{path}: {where}/{tag}: expected a number, found {shorten(text.strip())}")
    return value


def _voc_objects(path: Path) -> tuple[str | None, list[tuple[str, str, list[float], bool]]]:
    """(filename, [(class name, element, xyxy box in the internal form, difficult)]) of a VOC XML file."""
    root = _parse_xml(path)
    if root.tag != "annotation":
        raise DataFormatError(f"{path}: the root element is <{root.tag[:60]}>; expected <annotation> (Pascal VOC)")
    objects = []
    for k, obj in enumerate(root.findall("object"), start=1):
        where = f"object[{k}]"
        name = (obj.findtext("name") or "").strip()
        if not name:
            raise DataFormatError(f"{path}: {where}/name: missing; expected the object's class name")
        if obj.find("bndbox") is None:
            raise DataFormatError(f"{path}: {where}/bndbox: missing; expected <bndbox> with xmin, ymin, xmax, ymax")
        xmin, ymin, xmax, ymax = (_voc_number(obj, f"bndbox/{t}", path, where) for t in ("xmin", "ymin", "xmax", "ymax"))
        # VOC counts pixels from 1, both ends inclusive: pixels xmin..xmax are x1 = xmin - 1, x2 = xmax.
        box = [xmin - 1, ymin - 1, xmax, ymax]
        if box[2] < box[0] or box[3] < box[1]:
            raise DataFormatError(f"{path}: {where}/bndbox: xmax {xmax:g} < xmin {xmin:g} - 1 or ymax {ymax:g} < "
                                  f"ymin {ymin:g} - 1; expected corners (xmin, ymin) to (xmax, ymax)")
        difficult = (obj.findtext("difficult") or "0").strip()
        if difficult not in ("0", "1"):
            raise DataFormatError(f"{path}: {where}/difficult: expected 0 or 1, found {shorten(difficult)}")
        objects.append((name, where, box, difficult == "1"))
    filename = (root.findtext("filename") or "").strip() or None
    return filename, objects


def _voc_ids(root: Path, split: str | None) -> list[str]:
    if split is None:
        return sorted(p.stem for p in (root / "Annotations").glob("*.xml") if not _hidden(p.name))
    listing = root / "ImageSets" / "Main" / f"{split}.txt"
    if not listing.is_file():
        found = sorted(p.stem for p in (root / "ImageSets" / "Main").glob("*.txt"))
        raise DataFormatError(f"{root}: no split {shorten(split)} ({listing} is missing; "
                              f"found: {shorten(found) if found else 'no ImageSets/Main/*.txt'})")
    try:
        text = _read_bytes(listing, MAX_ANNOTATION_BYTES).decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise DataFormatError(f"{listing}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    ids = []
    for n, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            ids.append(line.split()[0])
            if not (root / "Annotations" / f"{ids[-1]}.xml").is_file():
                raise DataFormatError(f"{listing}:{n}: {shorten(ids[-1])} has no Annotations/{ids[-1]}.xml")
    return ids


def _voc_image(folder: Path, image_id: str, filename: str | None) -> Path:
    if filename and (folder / filename).exists():
        return folder / filename
    found = next((folder / f"{image_id}{s}" for s in IMAGE_SUFFIXES if (folder / f"{image_id}{s}").exists()), None)
    return found or folder / (filename or f"{image_id}.jpg")


def read_voc(root: str | os.PathLike, split: str | None = None,
             classes: str | Sequence[str] | None = None) -> DetectionDataset:
    """Reads a Pascal VOC folder: ``Annotations/*.xml`` and ``JPEGImages/``, optionally ``ImageSets/Main/<split>.txt``.

    VOC counts pixels from 1, both ends inclusive: ``xmin, ymin, xmax, ymax`` become the internal
    ``(xmin - 1, ymin - 1, xmax, ymax)``. ``difficult`` objects are kept, with ``iscrowd`` True (evaluators
    ignore them, as VOC's does); ``truncated`` and ``<size>`` are not used (the image gives the size). The
    XML is parsed by the standard library after refusing DOCTYPE and ENTITY declarations.

    Args:
        root: the folder holding ``Annotations/`` and ``JPEGImages/``.
        split: a list in ``ImageSets/Main/`` (e.g. "train", "val"); default: every ``Annotations/*.xml``.
        classes: the class names in label order; default: the object names found, sorted.

    Returns:
        A `DetectionDataset` of the images that could be read.

    Raises:
        DataFormatError: malformed XML (names the file and line), a missing or wrong element (names the file
            and element, e.g. ``object[2]/bndbox/xmin``), a class name not in `classes` (unknown class), a DOCTYPE
            or ENTITY declaration, a split that is not listed.

    Example:
        >>> for d in ("voc/Annotations", "voc/JPEGImages"):
        ...     Path(d).mkdir(parents=True)
        >>> Image.new("RGB", (8, 6)).save("voc/JPEGImages/a.jpg")
        >>> _ = Path("voc/Annotations/a.xml").write_text("<annotation><filename>a.jpg</filename><object>"
        ...     "<name>cat</name><bndbox><xmin>2</xmin><ymin>3</ymin><xmax>4</xmax><ymax>4</ymax></bndbox>"
        ...     "</object></annotation>")
        >>> read_voc("voc").targets[0]["boxes"]
        tensor([[1., 2., 4., 4.]])
    """
    root = Path(root)
    if not (root / "Annotations").is_dir():
        raise DataFormatError(f"{root}: no Annotations/ folder; expected a Pascal VOC folder (Annotations/*.xml + "
                              "JPEGImages/)")
    parsed = [(image_id, root / "Annotations" / f"{image_id}.xml") for image_id in _voc_ids(root, split)]
    parsed = [(image_id, xml, *_voc_objects(xml)) for image_id, xml in parsed]
    names = _class_list(classes) or sorted({obj[0] for *_, objects in parsed for obj in objects})
    records = []
    for image_id, xml, filename, objects in parsed:
        unknown = next((obj for obj in objects if obj[0] not in names), None)
        if unknown is not None:
            raise DataFormatError(f"{xml}: {unknown[1]}/name: unknown class {shorten(unknown[0])}; expected one of "
                                  f"{shorten(names)}")
        records.append(_Record(_voc_image(root / "JPEGImages", image_id, filename), str(xml),
                               np.array([obj[2] for obj in objects], dtype=np.float64).reshape(-1, 4),
                               [names.index(obj[0]) for obj in objects], [obj[3] for obj in objects]))
    return _build(records, names, str(root))


# ------------------------------------------------------------------------------------------------------------ YOLO

NAMES_FILES = ("classes.txt", "names.txt", "data.yaml", "dataset.yaml")


def _yolo_names(root: Path) -> list[str] | None:
    """The class names of a YOLO folder: classes.txt / names.txt (one a line) or data.yaml's ``names:``."""
    for name in NAMES_FILES:
        path = root / name
        if not path.is_file():
            continue
        if path.suffix == ".txt":
            return read_class_list(path)
        try:
            text = _read_bytes(path, MAX_ANNOTATION_BYTES).decode("utf-8-sig")
        except UnicodeDecodeError as err:
            raise DataFormatError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
        doc = load_yaml(text, str(path))
        value = doc.get("names") if isinstance(doc, dict) else None
        if isinstance(value, dict) and sorted(value) == list(range(len(value))):
            value = [value[i] for i in range(len(value))]
        if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
            raise DataFormatError(f"{path}: names: expected a list of class names (or a mapping 0: name, 1: name, "
                                  f"...), found {shorten(value)}")
        return parse_classes(value)
    return None


def _yolo_folders(root: Path, split: str | None) -> tuple[Path, Path]:
    """(images folder, labels folder): root/images + root/labels, or a split of them (images/<split>,
    <split>/images); without a split, "train" where images/ holds split folders and no image."""
    if split is None:
        images = root / "images"
        if images.is_dir() and (root / "labels").is_dir() and any(
                _is_image_name(p.name) for p in images.iterdir() if p.is_file()):
            return images, root / "labels"
        split = "train"
    for images, labels in ((root / "images" / split, root / "labels" / split),
                           (root / split / "images", root / split / "labels")):
        if images.is_dir() and labels.is_dir():
            return images, labels
    raise DataFormatError(f"{root}: expected a YOLO folder: images/ and labels/ (or images/{split}/ and "
                          f"labels/{split}/, or {split}/images/ and {split}/labels/), and a names file")


def _yolo_file(path: Path, names: list[str], mapping: list[int | None], classes: list[str]) -> _Record:
    """The boxes of one YOLO label file, as fractions of the image (xyxy)."""
    try:
        text = _read_bytes(path, MAX_ANNOTATION_BYTES).decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise DataFormatError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    boxes, labels = [], []
    for n, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        expected = "'class cx cy w h' (a class number and 4 numbers, fractions of the image size)"
        if not (len(fields) == 5 or (len(fields) >= 7 and len(fields) % 2 == 1)) or not _INTEGER.fullmatch(fields[0]):
            raise DataFormatError(f"{path}:{n}: expected {expected}, or a class and polygon points; found "
                                  f"{shorten(line.strip())}")
        try:
            values = [float(v) for v in fields[1:]]
        except ValueError:
            values = [math.nan]
        if not all(map(math.isfinite, values)):
            raise DataFormatError(f"{path}:{n}: expected {expected}; found {shorten(line.strip())}")
        c = int(fields[0])
        if not 0 <= c < len(names) or mapping[c] is None:
            what = f"class {c} is not in the names file (0..{len(names) - 1})" if not 0 <= c < len(names) else \
                f"class {c} ({shorten(names[c])}) is not one of the classes {shorten(classes)}"
            raise DataFormatError(f"{path}:{n}: unknown class: {what}")
        if len(fields) == 5:
            cx, cy, w, h = values
            if w < 0 or h < 0:
                raise DataFormatError(f"{path}:{n}: negative width or height in {shorten(line.strip())}; expected "
                                      f"{expected}")
            boxes.append([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])
        else:  # a segment (polygon): its box encloses it
            xs, ys = values[0::2], values[1::2]
            boxes.append([min(xs), min(ys), max(xs), max(ys)])
        labels.append(mapping[c])
    return _Record(path, str(path), np.array(boxes, dtype=np.float64).reshape(-1, 4), labels,
                   [False] * len(labels), normalised=True)


def read_yolo(root: str | os.PathLike, split: str | None = None,
              classes: str | Sequence[str] | None = None) -> DetectionDataset:
    """Reads a YOLO folder: ``images/``, ``labels/`` (one .txt per image) and a names file.

    Each label line is ``class cx cy w h``, the centre and size as fractions of the image's width and height
    (a line of a class and polygon points, Ultralytics' segments, gives the box around the polygon). An image
    without a label file, or with an empty one, has no objects. The names file is ``classes.txt`` or
    ``names.txt`` (one name a line) or ``data.yaml``'s ``names:`` (a list, or a mapping 0: name, ...).
    Splits are ``images/<split>`` + ``labels/<split>`` or ``<split>/images`` + ``<split>/labels``.

    Args:
        root: the folder.
        split: e.g. "train" or "val"; default: images/ itself, or its "train" split when it holds splits.
        classes: the class names in label order: label numbers are mapped by name from the names file to
            these (or, without a names file, are indices into these); default: the names file's.

    Returns:
        A `DetectionDataset` of the images that could be read, sorted by path.

    Raises:
        DataFormatError: a malformed line (names the file and line), a class number not in the names file or a
            name not in `classes` (unknown class), no names file and no `classes`, or not a YOLO folder.

    Example:
        >>> for d in ("yolo/images", "yolo/labels"):
        ...     Path(d).mkdir(parents=True)
        >>> Image.new("L", (8, 4)).save("yolo/images/a.png")
        >>> _ = Path("yolo/labels/a.txt").write_text("1 0.5 0.5 0.25 0.5\\n")
        >>> _ = Path("yolo/classes.txt").write_text("cat\\ndog\\n")
        >>> ds = read_yolo("yolo")
        >>> ds.image_shape, ds.targets[0]["boxes"], ds.targets[0]["labels"]
        ((1, 4, 8), tensor([[3., 1., 5., 3.]]), tensor([1]))
    """
    root = Path(root)
    images_dir, labels_dir = _yolo_folders(root, split)
    wanted = _class_list(classes)
    names = _yolo_names(root) or wanted
    if names is None:
        raise DataFormatError(f"{root}: no names file; expected one of {', '.join(NAMES_FILES)} (data.yaml with "
                              "names:), or the classes given")
    wanted = wanted or names
    mapping = [wanted.index(n) if n in wanted else None for n in names]
    records = []
    for image in sorted(p for p in images_dir.rglob("*") if _is_image_name(p.name)
                        and not any(_hidden(part) for part in p.relative_to(images_dir).parts)):
        label_file = (labels_dir / image.relative_to(images_dir)).with_suffix(".txt")
        record = (_yolo_file(label_file, names, mapping, wanted) if label_file.exists()
                  else _Record(image, str(label_file), np.zeros((0, 4)), [], [], normalised=True))
        record.image = image
        records.append(record)
    if not records:
        raise DataFormatError(f"{images_dir}: no image files (looked for {', '.join(IMAGE_SUFFIXES)})")
    return _build(records, wanted, str(root))


# ------------------------------------------------------------------------------------------------------ any layout

def load_detection(path: str | os.PathLike, split: str | None = None, classes: str | Sequence[str] | None = None,
                   masks: bool = False) -> DetectionDataset:
    """Reads detection data in whichever layout `path` has: COCO JSON, Pascal VOC folder or YOLO folder.

    * a ``.json`` file: COCO (`read_coco`); a folder holding ``<split>.json``, ``instances_<split>.json`` or
      one ``.json`` file (also under ``annotations/``) is read as that file;
    * a folder with ``Annotations/``: Pascal VOC (`read_voc`);
    * a folder with ``labels/`` (or ``<split>/labels/``), or a YOLO ``data.yaml``: YOLO (`read_yolo`).

    Args:
        path: the file or folder.
        split: the split to read (VOC's ImageSets list, YOLO's subfolder, the COCO file's name); default: all
            (VOC), the folder itself or its "train" split (YOLO).
        classes: the class names in label order (e.g. the training set's, for validation data); default: the
            data's own.
        masks: read instance masks (COCO segmentations only).

    Returns:
        A `DetectionDataset`.

    Raises:
        DatasetNotFoundError: nothing at `path`.
        DataFormatError: a layout that is none of these, masks asked of VOC or YOLO data, or what the reader
            raises.

    Example:
        >>> ds = DetectionDataset(torch.zeros(2, 3, 8, 8, dtype=torch.uint8),
        ...                       [{"boxes": [[1, 1, 3, 3]], "labels": [0]}, {"boxes": [], "labels": []}], ["cat"])
        >>> _ = ds.to_coco("scenes/annotations.json")
        >>> load_detection("scenes")
        DetectionDataset(2 images of (3, 8, 8), 1 objects, 1 classes, source 'scenes/annotations.json')
    """
    path = Path(path)
    if not path.exists():
        raise DatasetNotFoundError(f"{path}: no such file or folder; expected a COCO JSON file, a Pascal VOC folder "
                                   "or a YOLO folder")
    if path.is_file() and path.suffix.lower() == ".json":
        return read_coco(path, classes, masks)
    kind = "YOLO" if path.is_file() and path.suffix.lower() in (".yaml", ".yml") else None
    if path.is_dir() and (path / "Annotations").is_dir():
        kind = "VOC"
    elif path.is_dir() and any((path / s / "labels").is_dir() for s in ("", split or "train")):
        kind = "YOLO"
    if kind is not None and masks:
        raise DataFormatError(f"{path}: {kind} annotations hold no instance masks; masks are read from COCO JSON")
    if kind == "VOC":
        return read_voc(path, split, classes)
    if kind == "YOLO":
        return read_yolo(path.parent if path.is_file() else path, split, classes)
    if path.is_dir():
        for folder in (path, path / "annotations"):
            wanted = [f"{split}.json", f"instances_{split}.json"] if split else ["annotations.json"]
            found = [folder / w for w in wanted if (folder / w).is_file()] or (
                [] if split else sorted(p for p in folder.glob("*.json") if not _hidden(p.name)))
            if len(found) == 1:
                return read_coco(found[0], classes, masks)
    raise DataFormatError(f"{path}: not detection data; expected a COCO JSON file (or a folder with one), a Pascal VOC "
                          "folder (Annotations/ + JPEGImages/) or a YOLO folder (images/ + labels/ + classes.txt or "
                          "data.yaml)")
