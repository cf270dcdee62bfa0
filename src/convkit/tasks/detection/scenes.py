"""Scenes: the built-in detection data that needs nothing. Real Fashion-MNIST items on larger canvases.

`make_scenes` places several real items (the 7,000 shipped with convkit, or the full Fashion-MNIST when asked
for and found) on a black canvas: each item resized by its own random scale (bilinear, antialiased), at a random
position wholly inside the canvas, pasted over what is there. Boxes and masks are exact, read off the pixels:

* an item's pixels are those of its resized image above `threshold` (default 0: every non-black pixel);
* pasting is opaque: those pixels replace the canvas, so a later item hides the earlier ones beneath it, and the
  image shows, at each pixel of an object's *visible* mask, exactly that item's (resized) pixel;
* an object's mask is its visible pixels (masks never overlap; their union is every non-black pixel), its box
  the tight box around them (x1, y1 inclusive, x2, y2 exclusive), its label the item's Fashion-MNIST class;
* a placement is redrawn (up to `TRIES` times, each with a fresh item, scale and position) when it would leave
  an earlier object with less than `min_visible` of its own pixels, or two objects' boxes with an IoU above
  `max_overlap`; an object with no valid placement in `TRIES` draws is left out, so a crowded scene can hold
  fewer objects than drawn (with the defaults none was left out in 2,000 scenes, seeds 0 and 1; on a 48-pixel
  canvas asked for 6 large items, some are). So no painted pixel is unlabelled, and no object is hidden beyond
  the stated fraction: nothing is dropped after placing.

Everything random comes from one `torch.Generator` on the CPU, seeded from `seed` and the split; each scene
draws one fixed block of numbers, so the first n scenes of a longer call are the n scenes of a shorter one, and
the same arguments give the same bytes (numbers from torch's CPU generator, resizing in float64 rounded half
up, so that no rounding depends on the CPU's vector width; a test pins the digest of 30 scenes).

`write_scenes` writes them as files: PNGs and COCO JSON (instance masks as RLE), and a semantic mask PNG per image.
`draw_scenes` draws a grid of scenes with their boxes and class names (docs/scenes_examples.png).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from convkit.errors import ConvkitError
from convkit.utils import atomic_write, atomic_write_text, shorten

__all__ = ["Scenes", "ScenesError", "draw_scenes", "make_scenes", "write_scenes"]

TRIES = 20  # placements drawn per object before it is left out
_DRAWS = 7  # random numbers per placement: item, scale, x, y, and a colour (r, g, b)
_STREAMS = {"train": 0, "test": 1, "val": 1}  # items of the "val" scenes come from the test split
_SOURCES = ("default", "fashion-mnist", "auto")
_WRITERS = 8  # threads writing PNGs


class ScenesError(ValueError, ConvkitError):
    """An argument of the scenes generator is out of range or of the wrong kind; the message names it."""


class Scenes(NamedTuple):
    """What `make_scenes` returns; unpacks as ``images, targets, classes``.

    Attributes:
        images: uint8 (N, C, canvas, canvas).
        targets: N dicts, one per image: "boxes" float32 (M, 4) xyxy pixels, "labels" int64 (M,), "masks" uint8
            (M, H, W) visible instance masks, "semantic" uint8 (H, W) (0 background, class + 1 on objects),
            "items" int64 (M,) the index of each object's item in the source dataset, "placed" float32 (M, 4)
            the rectangle its resized image was pasted into (xyxy).
        classes: the class names, index = label.
    """

    images: torch.Tensor
    targets: list[dict[str, torch.Tensor]]
    classes: list[str]


def make_scenes(count: int, seed: int = 0, canvas: int = 96, objects: int | tuple[int, int] = (1, 4),
                scale: float | tuple[float, float] = (0.6, 2.0), source="default", split: str = "train",
                channels: int = 1, max_overlap: float = 0.5, *, min_visible: float = 0.5, threshold: int = 0,
                masks: bool = True, data_dir: str | os.PathLike | None = None) -> Scenes:
    """Scenes of real Fashion-MNIST items on a larger canvas, with exact boxes, instance and semantic masks.

    See the module's docstring for how items are placed, pasted and labelled.

    Args:
        count: the number of scenes.
        seed: the generator's seed (an integer >= 0); scenes of the "train" and "test" splits use separate streams.
        canvas: the side of the square canvas, in pixels.
        objects: (least, most) objects per scene, both included, drawn uniformly; an int n means (n, n).
        scale: (least, most) factor each item's side (28 pixels) is resized by, drawn uniformly; capped at the canvas.
        source: where the items come from: "default" (the 7,000 shipped with convkit), "fashion-mnist" (the full
            set, searched as `convkit.data.load_dataset` searches, under `data_dir` first), "auto" (the full set
            when it is found, else the shipped one: the scenes then depend on the machine), or an
            `ImageTensorDataset` of grayscale items (or colour ones with ``channels=3``).
        split: the items' split: "train" or "test" ("val" is "test": held-out scenes use held-out items).
        channels: 1 (grayscale) or 3: each item then gets its own random colour (its brightest channel keeps the
            grey value, so ``images.amax(1)`` equals the grayscale scenes of the same arguments).
        max_overlap: the largest IoU allowed between two objects' (visible) boxes in one scene.
        min_visible: the least fraction of an object's pixels that must stay visible under later objects.
        threshold: an item's pixels are those whose resized value is above this (0..254).
        masks: keep the instance masks (False: targets have no "masks", saving (M, H, W) bytes per scene; the
            scenes are the same).
        data_dir: where the full Fashion-MNIST is looked for first (e.g. "../shared/data").

    Returns:
        `Scenes` (images, targets, classes): images uint8 (count, channels, canvas, canvas), one target dict per
        image (see `Scenes`), the ten class names.

    Raises:
        ScenesError: an argument out of range (named, with what was given and what is expected).
        DatasetNotFoundError: source="fashion-mnist" and the files are not found (the message says where to get them).

    Example:
        >>> images, targets, classes = make_scenes(2, seed=0, canvas=64)
        >>> images.shape, images.dtype
        (torch.Size([2, 1, 64, 64]), torch.uint8)
        >>> t = targets[0]
        >>> sorted(t)
        ['boxes', 'items', 'labels', 'masks', 'placed', 'semantic']
        >>> t["boxes"].shape[1], t["masks"].shape[1:], t["semantic"].shape
        (4, torch.Size([64, 64]), torch.Size([64, 64]))
        >>> bool(((images[0, 0] > 0) == (t["semantic"] > 0)).all())   # every painted pixel belongs to an object
        True
    """
    count, seed, canvas, channels, threshold = (_whole(count, "count", 0), _whole(seed, "seed", 0),
                                                _whole(canvas, "canvas", 1), _whole(channels, "channels", 1),
                                                _whole(threshold, "threshold", 0))
    least, most = _int_range(objects)
    low, high = _scale_range(scale)
    if channels not in (1, 3):
        raise ScenesError(f"make_scenes: channels must be 1 or 3, got {shorten(channels)}")
    if not 0 <= threshold <= 254:
        raise ScenesError(f"make_scenes: threshold must be in 0..254 (a uint8 level), got {threshold}")
    _fraction(max_overlap, "max_overlap", 0.0)
    _fraction(min_visible, "min_visible", 0.0, open_low=True)
    if split not in _STREAMS:
        raise ScenesError(f"make_scenes: split must be 'train' or 'test' (or 'val', meaning 'test'), "
                          f"got {shorten(split)}")
    dataset = _items(source, split, data_dir)
    items = dataset.images.cpu()
    if items.shape[1] not in (1, channels):
        raise ScenesError(f"make_scenes: the source's items have {items.shape[1]} channels; "
                          f"expected 1 or channels={channels}")
    if len(items) == 0 and most > 0:
        raise ScenesError(f"make_scenes: the source {shorten(str(dataset.source))} has no items")
    generator = torch.Generator().manual_seed(2 * seed + _STREAMS[split])
    maker = _SceneMaker(items, dataset.labels.cpu(), canvas, channels, (low, high), max_overlap, min_visible,
                        threshold, bool(masks))
    block = 1 + most * TRIES * _DRAWS
    images = torch.zeros(count, channels, canvas, canvas, dtype=torch.uint8)
    targets = []
    for i in range(count):
        draws = torch.rand(block, dtype=torch.float64, generator=generator).numpy()
        n = least + min(int(draws[0] * (most - least + 1)), most - least)
        image, target = maker.scene(n, draws[1:].reshape(most, TRIES, _DRAWS))
        images[i] = torch.from_numpy(image)
        targets.append(target)
    return Scenes(images, targets, list(dataset.classes))


class _SceneMaker:
    """Places, pastes and labels the items of one scene at a time (numpy on the CPU: the arrays are small)."""

    def __init__(self, items, labels, canvas, channels, scale, max_overlap, min_visible, threshold, masks):
        self.items, self.labels, self.canvas, self.channels = items.numpy(), labels.numpy(), canvas, channels
        self.scale, self.max_overlap, self.min_visible, self.threshold = scale, max_overlap, min_visible, threshold
        self.masks = masks

    def scene(self, n: int, draws: np.ndarray) -> tuple[np.ndarray, dict[str, torch.Tensor]]:
        size = self.canvas
        image = np.zeros((self.channels, size, size), dtype=np.uint8)
        state = _Layout(np.full((size, size), -1, dtype=np.int16), np.zeros(0, np.int64), np.zeros(0, np.int64),
                        np.zeros((0, 4)))
        chosen, placed = [], []
        for k in range(n):
            for u in draws[k]:
                found = self._try(u, state)
                if found is not None:
                    state, pixels, mask, index, (x, y, w, h) = found
                    image[:, y:y + h, x:x + w][:, mask] = pixels[:, mask]
                    chosen.append(index)
                    placed.append((x, y, x + w, y + h))
                    break
        return image, self._target(state, chosen, placed)

    def _try(self, u: np.ndarray, state: _Layout):
        """One placement drawn from `u`: the layout with it and the item's pixels, or None if it breaks a rule."""
        count = len(self.items)
        index = min(int(u[0] * count), count - 1)
        factor = self.scale[0] + u[1] * (self.scale[1] - self.scale[0])
        item = self.items[index]
        h = min(max(round(item.shape[1] * factor), 1), self.canvas)
        w = min(max(round(item.shape[2] * factor), 1), self.canvas)
        grey = resize_item(item, h, w)
        mask = grey.max(0) > self.threshold
        if not mask.any():
            return None
        x = min(int(u[2] * (self.canvas - w + 1)), self.canvas - w)
        y = min(int(u[3] * (self.canvas - h + 1)), self.canvas - h)
        k = len(state.areas)
        beneath = state.owner[y:y + h, x:x + w][mask]  # the objects the new one would cover, pixel by pixel
        visible = state.visible - np.bincount(beneath.astype(np.int64) + 1, minlength=k + 1)[1:]
        if (visible < self.min_visible * state.areas).any():
            return None
        owner = state.owner.copy()
        owner[y:y + h, x:x + w][mask] = k
        boxes = np.concatenate([state.boxes, _tight_boxes(mask[None], 1) + [x, y, x, y]])
        hidden = np.flatnonzero(visible < state.visible)  # only their boxes can shrink
        if len(hidden):
            boxes[hidden] = _tight_boxes(owner, hidden)
        if _max_iou(boxes) > self.max_overlap:
            return None
        area = int(mask.sum())
        layout = _Layout(owner, np.append(state.areas, area), np.append(visible, area), boxes)
        return layout, self._colour(grey, u[4:7]), mask, index, (x, y, w, h)

    def _colour(self, grey: np.ndarray, u: np.ndarray) -> np.ndarray:
        """The item's pixels in the output's channels: grey as it is, or tinted by a colour whose brightest
        channel is 1 (drawn for every placement, so grayscale and colour scenes place the same items)."""
        if self.channels == 1 or grey.shape[0] == 3:
            return grey
        colour = 0.35 + 0.65 * u
        colour = colour / colour.max()
        colour[colour.argmax()] = 1.0
        return np.floor(grey.astype(np.float64) * colour[:, None, None] + 0.5).astype(np.uint8)

    def _target(self, state: _Layout, chosen: list[int], placed: list) -> dict[str, torch.Tensor]:
        m, size, owner = len(chosen), self.canvas, state.owner
        labels = self.labels[np.asarray(chosen, dtype=np.int64)].astype(np.int64)
        semantic = np.concatenate([[0], labels + 1]).astype(np.uint8)[owner.astype(np.int64) + 1]
        target = {"boxes": torch.from_numpy(state.boxes.astype(np.float32)).reshape(m, 4),
                  "labels": torch.from_numpy(labels)}
        if self.masks:
            masks = (owner[None] == np.arange(m, dtype=np.int16)[:, None, None]).astype(np.uint8)
            target["masks"] = torch.from_numpy(masks).reshape(m, size, size)
        return {**target, "semantic": torch.from_numpy(semantic), "items": torch.tensor(chosen, dtype=torch.int64),
                "placed": torch.tensor(placed, dtype=torch.float32).reshape(m, 4)}


class _Layout(NamedTuple):
    """A scene's objects so far: which shows at each pixel (-1: none), each one's pixels when pasted and
    still visible, and the tight boxes (xyxy, x2 and y2 exclusive) of the visible ones."""

    owner: np.ndarray
    areas: np.ndarray
    visible: np.ndarray
    boxes: np.ndarray


def write_scenes(folder: str | os.PathLike, train: int = 1000, val: int = 200, seed: int = 0, semantic: bool = True,
                 **kwargs) -> dict[str, Path]:
    """Writes scenes as files: PNG images, COCO JSON annotations (with RLE instance masks), semantic mask PNGs.

    The layout is COCO's::

        folder/train/000000.png ...             images (grayscale or RGB PNGs)
        folder/val/000000.png ...
        folder/annotations/instances_train.json COCO: images (id from 1, file_name "../train/000000.png"),
        folder/annotations/instances_val.json   annotations (id from 1, bbox [x, y, w, h], area = visible
                                                pixels, iscrowd 0, segmentation RLE), the 10 categories (id 1..10)
        folder/train_masks/000000.png ...       semantic masks: 0 background, class + 1 (category id) on objects
        folder/val_masks/000000.png ...

    A ``file_name`` is "../train/000000.png": the same file whether it is read relative to the JSON's folder
    (as ``convkit``'s COCO reader does) or to the image folder (COCO's convention, as torchvision's
    ``CocoDetection(root="folder/train", ...)``). Training scenes take their items from the train split, validation scenes from the test split (items the
    training scenes never show). Every file is written atomically; a split of 0 scenes is not written. Files of
    an earlier, larger call are not removed (the JSON lists the images that belong).

    Args:
        folder: where to write (created if missing).
        train, val: the number of training and validation scenes.
        seed: the generator's seed (see `make_scenes`).
        semantic: also write the semantic mask PNGs.
        **kwargs: `make_scenes`'s other arguments (canvas, objects, scale, source, channels, max_overlap, ...).

    Returns:
        The paths written, by name: "train", "val" (image folders), "train_annotations", "val_annotations" (the
        JSON files), "train_masks", "val_masks" (with ``semantic=True``); only the splits with scenes.

    Raises:
        ScenesError: an argument out of range (see `make_scenes`).
        OSError: the folder cannot be written, naming the path.

    Example:
        >>> paths = write_scenes("scenes", train=3, val=2, canvas=64)
        >>> sorted(paths)
        ['train', 'train_annotations', 'train_masks', 'val', 'val_annotations', 'val_masks']
        >>> from pycocotools.coco import COCO
        >>> import contextlib, io
        >>> with contextlib.redirect_stdout(io.StringIO()):
        ...     coco = COCO(str(paths["train_annotations"]))
        >>> len(coco.getImgIds()), coco.loadCats(1)[0]["name"]
        (3, 'T-shirt/top')
    """
    if "split" in kwargs or "masks" in kwargs:
        raise ScenesError(f"write_scenes: {'split' if 'split' in kwargs else 'masks'} is not an argument here: "
                          "training scenes use the train items, validation scenes the test items, and the COCO "
                          "files always hold the instance masks")
    folder = Path(folder)
    paths: dict[str, Path] = {}
    for name, count, split in (("train", train, "train"), ("val", val, "test")):
        _whole(count, name, 0)
        if count == 0:
            continue
        images, targets, classes = make_scenes(count, seed=seed, split=split, **kwargs)
        paths[name] = folder / name
        records, annotations, pictures = [], [], []
        for i, (image, target) in enumerate(zip(images, targets)):
            file_name = f"{i:06d}.png"
            pictures.append((paths[name] / file_name, image.numpy()))
            if semantic:
                pictures.append((folder / f"{name}_masks" / file_name, target["semantic"].numpy()[None]))
            records.append({"id": i + 1, "file_name": f"../{name}/{file_name}", "width": image.shape[2], "height": image.shape[1]})
            annotations += _coco_annotations(target, i + 1, len(annotations) + 1)
        with ThreadPoolExecutor(_WRITERS) as pool:  # each file is synced to disk: overlap the waits
            list(pool.map(lambda job: _write_png(*job), pictures))
        coco = {"info": {"description": f"convkit scenes: Fashion-MNIST items on {images.shape[-1]}-pixel canvases "
                                        f"({name}, items of the {split} split)",
                         "generator": {"seed": seed, "split": split,
                                       **{k: v for k, v in kwargs.items() if isinstance(v, (int, float, str,
                                                                                               tuple, list))}}},
                "images": records, "annotations": annotations,
                "categories": [{"id": c + 1, "name": n, "supercategory": "fashion"} for c, n in enumerate(classes)]}
        paths[f"{name}_annotations"] = atomic_write_text(folder / "annotations" / f"instances_{name}.json",
                                                         json.dumps(coco, separators=(",", ":")))
        if semantic:
            paths[f"{name}_masks"] = folder / f"{name}_masks"
    return paths


def _coco_annotations(target: dict[str, torch.Tensor], image_id: int, first_id: int) -> list[dict]:
    """COCO annotation records of one image's objects: ids from `first_id`, 1-based category ids, RLE masks."""
    from pycocotools import mask as coco_mask

    boxes = target["boxes"].tolist()
    found = target["masks"].numpy()
    rles = coco_mask.encode(np.asfortranarray(found.transpose(1, 2, 0))) if len(found) else []
    records = []
    for j, (label, box, rle) in enumerate(zip(target["labels"].tolist(), boxes, rles)):
        x1, y1, x2, y2 = box
        records.append({"id": first_id + j, "image_id": image_id, "category_id": label + 1,
                        "bbox": [x1, y1, x2 - x1, y2 - y1], "area": int(found[j].sum()), "iscrowd": 0,
                        "segmentation": {"size": list(rle["size"]), "counts": rle["counts"].decode("ascii")}})
    return records


def _write_png(path: Path, array: np.ndarray) -> None:
    """A uint8 (C, H, W) array (C = 1 or 3) as a PNG, atomically."""
    from PIL import Image

    picture = Image.fromarray(array[0] if len(array) == 1 else array.transpose(1, 2, 0))
    atomic_write(path, lambda tmp: picture.save(tmp, format="PNG"))


def draw_scenes(images: torch.Tensor, targets: Sequence[dict], classes: Sequence[str], path: str | os.PathLike,
                columns: int = 4, zoom: int = 3, truth: Sequence[dict] | None = None, masks: bool = False) -> Path:
    """A grid of scenes with each object's box and class name drawn, written as a PNG.

    Also draws detections: give them as `targets` (a "scores" entry adds the score to each name, e.g. "Bag
    0.93") and the true objects as `truth` (thin white boxes, drawn first).

    Args:
        images: uint8 (N, C, H, W), C = 1 or 3.
        targets: N target dicts with "boxes" (xyxy pixels, x2 and y2 exclusive) and "labels" (and "scores").
        truth: N target dicts of the true objects, drawn in white under `targets`, or None.
        classes: the class names.
        path: the PNG to write (atomically).
        columns: scenes per row.
        zoom: each scene is enlarged this many times (nearest neighbour), so that names are legible.
        masks: also paint each target's instance mask ("masks" (M, H, W)) in its class colour, semi-transparent,
            under the boxes.

    Returns:
        `path` as a Path.

    Example:
        >>> images, targets, classes = make_scenes(4, canvas=64)
        >>> from PIL import Image
        >>> Image.open(draw_scenes(images, targets, classes, "scenes.png", columns=2, zoom=2)).size
        (264, 264)
    """
    from PIL import Image, ImageDraw, ImageFont

    if len(images) == 0:
        raise ScenesError("draw_scenes: no scenes to draw")
    n, _, height, width = images.shape
    gap, columns = 8, max(1, min(columns, n))
    rows = math.ceil(n / columns)
    cell_w, cell_h = width * zoom, height * zoom
    sheet = Image.new("RGB", (columns * cell_w + (columns - 1) * gap, rows * cell_h + (rows - 1) * gap), "white")
    font = ImageFont.load_default()
    for i, (image, target) in enumerate(zip(images, targets)):
        array = image.cpu().numpy()
        rgb = np.repeat(array, 3, 0) if len(array) == 1 else array
        if masks and target.get("masks") is not None:
            rgb = _paint_masks(rgb, target["masks"], target["labels"])
        scene = Image.fromarray(rgb.transpose(1, 2, 0)).resize((cell_w, cell_h), Image.NEAREST)
        draw = ImageDraw.Draw(scene)
        for box in (truth[i]["boxes"].tolist() if truth is not None else []):
            x1, y1, x2, y2 = (round(v * zoom) for v in box)
            draw.rectangle((x1, y1, x2 - 1, y2 - 1), outline="white", width=1)
        scores = target.get("scores")
        scores = scores.tolist() if scores is not None else [None] * len(target["labels"])
        for box, label, score in zip(target["boxes"].tolist(), target["labels"].tolist(), scores):
            colour = _PALETTE[label % len(_PALETTE)]
            x1, y1, x2, y2 = (round(v * zoom) for v in box)
            draw.rectangle((x1, y1, x2 - 1, y2 - 1), outline=colour, width=max(1, zoom // 2))
            name = str(classes[label]) + ("" if score is None else f" {score:.2f}")
            left, top, right, bottom = draw.textbbox((0, 0), name, font=font)
            ty = y1 - (bottom - top) - 3 if y1 >= bottom - top + 3 else y2 + 1
            tx = min(x1, cell_w - (right - left) - 2)
            draw.rectangle((tx, ty, tx + right - left + 2, ty + bottom - top + 2), fill=colour)
            draw.text((tx + 1 - left, ty + 1 - top), name, fill="black", font=font)
        sheet.paste(scene, ((i % columns) * (cell_w + gap), (i // columns) * (cell_h + gap)))
    return atomic_write(path, lambda tmp: sheet.save(tmp, format="PNG"))


def _paint_masks(rgb: np.ndarray, masks: torch.Tensor, labels: torch.Tensor, alpha: float = 0.5) -> np.ndarray:
    """A (3, H, W) uint8 picture with each (H, W) mask blended in its class colour (`alpha` of the colour)."""
    out = rgb.astype(np.float32)
    for mask, label in zip(masks.cpu().numpy().astype(bool), labels.tolist()):
        colour = np.asarray(_PALETTE[label % len(_PALETTE)], dtype=np.float32)[:, None]
        out[:, mask] = (1 - alpha) * out[:, mask] + alpha * colour
    return out.round().clip(0, 255).astype(np.uint8)


# Distinct bright colours for the ten classes (boxes on a black canvas, labels in black on them).
_PALETTE = ((255, 99, 71), (255, 215, 0), (50, 205, 50), (0, 191, 255), (238, 130, 238), (255, 165, 0),
            (127, 255, 212), (255, 105, 180), (173, 255, 47), (135, 206, 250))


def resize_item(item: torch.Tensor, height: int, width: int) -> np.ndarray:
    """An item resized as the scenes resize it: bilinear, antialiased, in float64, rounded half up to uint8.

    Args:
        item: uint8 (C, H, W), a tensor or numpy array.
        height, width: the new size.

    Returns:
        uint8 (C, height, width), a numpy array.

    Example:
        >>> np.unique(resize_item(torch.full((1, 28, 28), 200, dtype=torch.uint8), 14, 42))
        array([200], dtype=uint8)
    """
    resized = F.interpolate(torch.as_tensor(item)[None].to(torch.float64), size=(height, width), mode="bilinear",
                            align_corners=False, antialias=True)[0].numpy()
    return np.clip(np.floor(resized + 0.5), 0, 255).astype(np.uint8)  # numpy: tiny arrays, no thread start-up


def _tight_boxes(owner: np.ndarray, which) -> np.ndarray:
    """(len(which), 4) float xyxy boxes (x2, y2 exclusive) around the pixels of the objects `which` (a count n
    means 0..n-1) in an owner map (H, W), or in boolean masks (n, H, W) for ``which=n``; each must have pixels."""
    if owner.dtype == bool:
        shown = owner
    else:
        ids = np.arange(which) if isinstance(which, int) else np.asarray(which)
        shown = owner[None] == ids.astype(owner.dtype)[:, None, None]
    rows, cols = shown.any(2), shown.any(1)
    size_y, size_x = shown.shape[1:]
    return np.stack([cols.argmax(1), rows.argmax(1), size_x - cols[:, ::-1].argmax(1),
                     size_y - rows[:, ::-1].argmax(1)], axis=1).astype(np.float64)


def _max_iou(boxes: np.ndarray) -> float:
    """The largest IoU between two different boxes (xyxy), 0 for fewer than two."""
    if len(boxes) < 2:
        return 0.0
    lt = np.maximum(boxes[:, None, :2], boxes[None, :, :2])
    rb = np.minimum(boxes[:, None, 2:], boxes[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(2)
    area = (boxes[:, 2:] - boxes[:, :2]).prod(1)
    iou = inter / (area[:, None] + area[None, :] - inter)
    np.fill_diagonal(iou, 0.0)
    return float(iou.max())


def _items(source, split: str, data_dir):
    """The dataset the items come from."""
    from convkit.data import ImageTensorDataset, load_dataset, load_default
    from convkit.data.errors import DatasetNotFoundError

    if isinstance(source, ImageTensorDataset):
        return source
    if source not in _SOURCES:
        raise ScenesError(f"make_scenes: source must be one of {', '.join(_SOURCES)} or an ImageTensorDataset, "
                          f"got {shorten(source)}")
    split = "test" if split == "val" else split
    if source == "default":
        return load_default(split)
    try:
        return load_dataset("fashion-mnist", split, data_dir)
    except DatasetNotFoundError:
        if source == "auto":
            return load_default(split)
        raise


def _whole(value, name: str, least: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < least:
        raise ScenesError(f"make_scenes: {name} must be an integer >= {least}, got {shorten(value)}")
    return int(value)


def _pair(value, name: str) -> tuple:
    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
        return value, value
    if isinstance(value, Sequence) and not isinstance(value, str) and len(value) == 2:
        return tuple(value)
    raise ScenesError(f"make_scenes: {name} must be a number or a (least, most) pair, got {shorten(value)}")


def _int_range(value) -> tuple[int, int]:
    least, most = _pair(value, "objects")
    if any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) for v in (least, most)) \
            or not 0 <= least <= most:
        raise ScenesError(f"make_scenes: objects must be integers 0 <= least <= most, got {shorten(value)}")
    return int(least), int(most)


def _scale_range(value) -> tuple[float, float]:
    low, high = _pair(value, "scale")
    try:
        low, high = float(low), float(high)
    except (TypeError, ValueError):
        low = high = math.nan
    if not (math.isfinite(low) and math.isfinite(high) and 0 < low <= high):
        raise ScenesError(f"make_scenes: scale must be finite numbers 0 < least <= most, got {shorten(value)}")
    return low, high


def _fraction(value, name: str, low: float, open_low: bool = False) -> float:
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool) \
        and (low < value if open_low else low <= value) and value <= 1
    if not ok:
        raise ScenesError(f"make_scenes: {name} must be a number in {'(' if open_low else '['}{low:g}, 1], "
                          f"got {shorten(value)}")
    return float(value)
