"""Detection metrics: COCO's 12 numbers (pycocotools), Pascal VOC's AP@0.5, precision-recall curves.

COCO's numbers are computed by pycocotools' own evaluator, never re-implemented; convkit only converts its
internal form into COCO's, which is where such tools usually go wrong, so each rule of that conversion lives in
one helper here and is tested against pycocotools called directly (tests/test_detection_metrics.py):

* image ids run from 1 in list order, annotation ids from 1 (an id of 0 reads as "unmatched" inside COCOeval:
  a detection matched to ground truth 0 counts as a false positive);
* category ids are class index + 1 (COCO's are 1-based, convkit's 0-based);
* boxes go from xyxy (x2, y2 exclusive) to COCO's ``[x, y, w, h]``; ``area`` is the box's (the mask's for
  ``iou_type="segm"``; a target's own ``"area"`` wins when it has one); ``iscrowd`` is kept;
* every image is listed, also those without ground truth, so detections there count as false positives;
* no detections at all is evaluated as COCOeval would (pycocotools' ``loadRes`` fails on an empty list):
  0 where there is ground truth, -1 where there is none;
* detections keep the order they were given in, so tied scores are ranked as pycocotools ranks them
  (its sorts are stable);
* the 12 numbers are COCOeval's ``stats`` as they are, -1 included (no ground truth in that size range); the
  per-class APs of classes without ground truth are NaN (COCO's -1 would drag an average down unnoticed).

Inputs, one entry per image:

* a prediction is ``{"boxes": float (K, 4) xyxy pixels, "scores": (K,), "labels": int (K,) 0-based}`` (plus
  ``"masks"`` (K, H, W) or (K, 1, H, W), bool or probabilities cut at 0.5, for ``iou_type="segm"``); torch
  tensors or numpy arrays; boxes with x2 < x1 (an untrained model's) are taken as empty;
* a target is the detection task's internal form ``{"boxes": float32 (M, 4), "labels": int64 (M,)}`` with
  optional ``"iscrowd"`` (M,), ``"masks"`` (M, H, W), ``"difficult"`` (M,) (Pascal VOC's flag: ignored by
  `voc_ap`, not by COCO, which knows only crowds) and ``"area"`` (M,).

Mistakes in these inputs raise `convkit.data.errors.DataFormatError` naming the entry, e.g.
``predictions[3]['labels']``, what was found and what was expected.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torchvision.ops import box_iou

from convkit.data.errors import DataFormatError
from convkit.utils import atomic_write, shorten

__all__ = ["COCO_METRIC_NAMES", "coco_metrics", "format_metrics_table", "plot_pr_curves", "to_coco_dataset",
           "to_coco_results", "voc_ap"]

# COCOeval.stats, in its order: AP over IoU 0.50:0.95, at 0.50, at 0.75, for small/medium/large objects (area
# below 32^2, up to 96^2, above), then the average recall with at most 1, 10, 100 detections per image, and by size.
COCO_METRIC_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")

IOU_TYPES = ("bbox", "segm")


# --- the inputs, checked once ---------------------------------------------------------------------------------

@dataclass
class _Image:
    """One image's boxes (float64 xyxy), labels, and the rest, as numpy arrays, checked."""

    boxes: np.ndarray
    labels: np.ndarray
    scores: np.ndarray | None = None  # predictions
    crowd: np.ndarray | None = None  # targets: iscrowd
    difficult: np.ndarray | None = None  # targets: VOC's difficult flag
    area: np.ndarray | None = None  # targets: given areas
    masks: np.ndarray | None = None  # bool (N, H, W)


def _array(value, where: str) -> np.ndarray:
    """A tensor, array or list as a numpy array (on the CPU, gradients dropped)."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    try:
        return np.asarray(value)
    except (TypeError, ValueError) as err:
        raise DataFormatError(f"{where}: expected an array, found {shorten(value)} ({err})") from None


def _field(entry: Mapping, key: str, where: str, size: int | None, required: bool = True) -> np.ndarray | None:
    """``entry[key]`` as a numpy array of ``size`` rows (a flat one when ``size`` is given), or None if absent."""
    if key not in entry or entry[key] is None:
        if required:
            raise DataFormatError(f"{where}: no {key!r}; expected keys {sorted(entry)} to include {key!r}")
        return None
    value = _array(entry[key], f"{where}[{key!r}]")
    if value.ndim != 1 or (size is not None and len(value) != size):
        want = f"({size},)" if size is not None else "(N,)"
        raise DataFormatError(f"{where}[{key!r}]: shape {value.shape}, expected {want}, one value per box")
    return value


def _boxes(entry: Mapping, where: str) -> np.ndarray:
    """``entry["boxes"]`` as float64 (N, 4), finite; an empty one may come as any shape with no values."""
    if not isinstance(entry, Mapping):
        raise DataFormatError(f"{where}: expected a dict with 'boxes' and 'labels', found {shorten(entry)}")
    if "boxes" not in entry:
        raise DataFormatError(f"{where}: no 'boxes'; expected keys {sorted(entry)} to include 'boxes'")
    boxes = _array(entry["boxes"], f"{where}['boxes']")
    if boxes.size == 0:
        return np.zeros((0, 4))
    if boxes.ndim != 2 or boxes.shape[1] != 4 or not np.issubdtype(boxes.dtype, np.number):
        raise DataFormatError(f"{where}['boxes']: shape {boxes.shape} ({boxes.dtype}), expected numbers "
                              "(N, 4): x1, y1, x2, y2 in pixels")
    boxes = boxes.astype(np.float64)
    if not np.isfinite(boxes).all():
        row = int(np.argwhere(~np.isfinite(boxes))[0, 0])
        raise DataFormatError(f"{where}['boxes'][{row}]: {boxes[row].tolist()}, expected finite numbers")
    return boxes


def _labels(entry: Mapping, where: str, size: int, num_classes: int | None) -> np.ndarray:
    """``entry["labels"]``: integers in 0..num_classes-1 (any >= 0 when num_classes is None), one per box."""
    labels = _field(entry, "labels", where, size)
    if size and not (np.issubdtype(labels.dtype, np.integer) or
                     (np.issubdtype(labels.dtype, np.floating) and (labels == np.round(labels)).all())):
        raise DataFormatError(f"{where}['labels']: {shorten(labels.tolist())} ({labels.dtype}), "
                              "expected integer class indices")
    labels = labels.astype(np.int64)
    bad = (labels < 0) | (labels >= (num_classes if num_classes is not None else np.iinfo(np.int64).max))
    if bad.any():
        row = int(np.argmax(bad))
        expected = "a class index >= 0" if num_classes is None else f"0..{num_classes - 1} ({num_classes} classes)"
        raise DataFormatError(f"{where}['labels'][{row}]: class {labels[row]}, expected {expected}; "
                              "convkit's classes are 0-based")
    return labels


def _masks(entry: Mapping, where: str, size: int, image_size: tuple[int, int] | None) -> np.ndarray:
    """``entry["masks"]`` as bool (N, H, W): (N, 1, H, W) squeezed, probabilities cut at 0.5."""
    if "masks" not in entry or entry["masks"] is None:
        raise DataFormatError(f"{where}: no 'masks', expected (N, H, W) instance masks for iou_type='segm'")
    masks = _array(entry["masks"], f"{where}['masks']")
    if masks.ndim == 4 and masks.shape[1] == 1:
        masks = masks[:, 0]
    if masks.ndim != 3 or len(masks) != size:
        raise DataFormatError(f"{where}['masks']: shape {masks.shape}, expected ({size}, H, W), one mask per box")
    if image_size is not None and tuple(masks.shape[1:]) != tuple(image_size):
        raise DataFormatError(f"{where}['masks']: {masks.shape[1]}x{masks.shape[2]} masks, expected the "
                              f"image's size {image_size[0]}x{image_size[1]}")
    return masks > 0.5 if np.issubdtype(masks.dtype, np.floating) else masks.astype(bool)


def _prediction(entry: Mapping, where: str, num_classes: int | None, segm: bool = False) -> _Image:
    boxes = _boxes(entry, where)
    scores = _field(entry, "scores", where, len(boxes)).astype(np.float64)
    if not np.isfinite(scores).all():
        row = int(np.argmax(~np.isfinite(scores)))
        raise DataFormatError(f"{where}['scores'][{row}]: {scores[row]}, expected a finite score")
    labels = _labels(entry, where, len(boxes), num_classes)
    masks = _masks(entry, where, len(boxes), None) if segm else None
    return _Image(boxes, labels, scores=scores, masks=masks)


def _target(entry: Mapping, where: str, num_classes: int, segm: bool = False,
            image_size: tuple[int, int] | None = None) -> _Image:
    boxes = _boxes(entry, where)
    inverted = (boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1])
    if inverted.any():
        row = int(np.argmax(inverted))
        raise DataFormatError(f"{where}['boxes'][{row}]: {boxes[row].tolist()}, expected x1 <= x2 and y1 <= y2")
    labels = _labels(entry, where, len(boxes), num_classes)
    flags = {key: _field(entry, key, where, len(boxes), required=False) for key in ("iscrowd", "difficult")}
    flags = {key: None if value is None else value.astype(bool) for key, value in flags.items()}
    area = _field(entry, "area", where, len(boxes), required=False)
    masks = _masks(entry, where, len(boxes), image_size) if segm else None
    return _Image(boxes, labels, crowd=flags["iscrowd"], difficult=flags["difficult"],
                  area=None if area is None else area.astype(np.float64), masks=masks)


def _check_lists(predictions, targets) -> None:
    for name, value in (("predictions", predictions), ("targets", targets)):
        if isinstance(value, Mapping) or not isinstance(value, Sequence):
            raise DataFormatError(f"{name}: expected a list with one dict per image, found {shorten(value)}")
    if len(predictions) != len(targets):
        raise DataFormatError(f"predictions: {len(predictions)} images, targets: {len(targets)}; expected one "
                              "prediction per target image, in the same order")


def _check_iou_type(iou_type: str) -> bool:
    if iou_type not in IOU_TYPES:
        raise DataFormatError(f"iou_type: {shorten(iou_type)}, expected one of {', '.join(IOU_TYPES)}")
    return iou_type == "segm"


# --- the conversion into COCO's form ----------------------------------------------------------------------------

def _xywh(boxes: np.ndarray) -> np.ndarray:
    """xyxy (x2, y2 exclusive) -> COCO's [x, y, w, h]; an inverted box becomes an empty one (w or h 0)."""
    out = boxes.copy()
    out[:, 2:] = np.maximum(boxes[:, 2:] - boxes[:, :2], 0)
    return out


def _rle(mask: np.ndarray) -> dict:
    """A bool (H, W) mask as COCO's compressed RLE, its counts as text (JSON-ready)."""
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}


def _image_sizes(image_sizes, count: int) -> list[tuple[int, int] | None]:
    if image_sizes is None:
        return [None] * count
    if len(image_sizes) != count:
        raise DataFormatError(f"image_sizes: {len(image_sizes)} sizes for {count} images, expected one "
                              "(height, width) per image")
    sizes = []
    for i, size in enumerate(image_sizes):
        try:
            height, width = (int(s) for s in size)
        except (TypeError, ValueError):
            raise DataFormatError(f"image_sizes[{i}]: {shorten(size)}, expected (height, width)") from None
        sizes.append((height, width))
    return sizes


def _coco_images(targets: Sequence[_Image], sizes: Sequence[tuple[int, int] | None]) -> list[dict]:
    """Every image, ids from 1 in list order, also those without objects (their detections are false positives)."""
    images = []
    for i, (target, size) in enumerate(zip(targets, sizes)):
        if size is None and target.masks is not None:
            size = target.masks.shape[1:]
        image = {"id": i + 1}
        if size is not None:
            image.update(height=int(size[0]), width=int(size[1]))
        images.append(image)
    return images


def _coco_annotations(targets: Sequence[_Image]) -> list[dict]:
    """The ground truth: ids from 1 (0 reads as "unmatched" in COCOeval), category = class + 1, xywh, area, crowd."""
    annotations = []
    for i, target in enumerate(targets):
        xywh = _xywh(target.boxes)
        for j in range(len(target.boxes)):
            if target.area is not None:
                area = float(target.area[j])
            elif target.masks is not None:
                area = float(target.masks[j].sum())
            else:
                area = float(xywh[j, 2] * xywh[j, 3])
            annotation = {"id": len(annotations) + 1, "image_id": i + 1, "category_id": int(target.labels[j]) + 1,
                          "bbox": xywh[j].tolist(), "area": area,
                          "iscrowd": int(target.crowd[j]) if target.crowd is not None else 0}
            if target.masks is not None:
                annotation["segmentation"] = _rle(target.masks[j])
            annotations.append(annotation)
    return annotations


def _coco_categories(num_classes: int, classes: Sequence[str] | None) -> list[dict]:
    if classes is not None and len(classes) != num_classes:
        raise DataFormatError(f"classes: {len(classes)} names for {num_classes} classes, expected one per class")
    return [{"id": c + 1, "name": str(classes[c]) if classes is not None else str(c)} for c in range(num_classes)]


def to_coco_dataset(targets: Sequence[Mapping], num_classes: int, image_sizes=None,
                    classes: Sequence[str] | None = None, iou_type: str = "bbox") -> dict:
    """The ground truth as a COCO dataset dict (what an instances JSON holds), built in memory.

    Image ids run from 1 in the order of ``targets``, annotation ids from 1, category ids are class index + 1;
    boxes become ``[x, y, w, h]``; ``area`` is the box's area, the mask's for ``iou_type="segm"``, or the
    target's own ``"area"``; every image is listed, also those without objects.

    Args:
        targets: one dict per image, ``{"boxes": (M, 4) xyxy pixels, "labels": (M,)}`` and optionally
            ``"iscrowd"``, ``"masks"`` (M, H, W), ``"area"`` (M,).
        num_classes: C; labels are 0..C-1.
        image_sizes: optional (height, width) per image, written into ``images`` (taken from the masks when
            not given and there are masks).
        classes: optional category names (default: "0", "1", ...).
        iou_type: "bbox", or "segm" to add each object's mask as compressed RLE (needs ``"masks"``).

    Returns:
        ``{"images": [...], "annotations": [...], "categories": [...]}``, ready for ``json.dump`` or for
        ``pycocotools.coco.COCO`` (set ``.dataset``, then ``createIndex()``).

    Raises:
        DataFormatError: a target is malformed (named, e.g. ``targets[2]['labels'][0]``).

    Example:
        >>> target = {"boxes": torch.tensor([[10.0, 20.0, 40.0, 30.0]]), "labels": torch.tensor([2])}
        >>> coco = to_coco_dataset([target, {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0)}], 3,
        ...                        image_sizes=[(64, 64), (64, 64)])
        >>> coco["annotations"]
        [{'id': 1, 'image_id': 1, 'category_id': 3, 'bbox': [10.0, 20.0, 30.0, 10.0], 'area': 300.0, 'iscrowd': 0}]
        >>> [image["id"] for image in coco["images"]], len(coco["categories"])
        ([1, 2], 3)
    """
    segm = _check_iou_type(iou_type)
    if isinstance(targets, Mapping) or not isinstance(targets, Sequence):
        raise DataFormatError(f"targets: expected a list with one dict per image, found {shorten(targets)}")
    sizes = _image_sizes(image_sizes, len(targets))
    checked = [_target(t, f"targets[{i}]", num_classes, segm, sizes[i]) for i, t in enumerate(targets)]
    return {"images": _coco_images(checked, sizes), "annotations": _coco_annotations(checked),
            "categories": _coco_categories(num_classes, classes)}


def _coco_results(predictions: Sequence[_Image], image_ids: Sequence[int],
                  category_ids: Sequence[int] | None = None) -> list[dict]:
    """Detections in COCO's results form, in the order given (ties then rank as in pycocotools' stable sorts).

    A mask result carries no "bbox": pycocotools' loadRes would then take the box's area for the mask's, and
    the small/medium/large split of segmentation would be off.
    """
    results = []
    for prediction, image_id in zip(predictions, image_ids):
        labels = prediction.labels.tolist()  # Python numbers, converted once per image
        categories = [c + 1 for c in labels] if category_ids is None else [int(category_ids[c]) for c in labels]
        boxes = _xywh(prediction.boxes).tolist()
        for j, (category, score) in enumerate(zip(categories, prediction.scores.tolist())):
            result = {"image_id": int(image_id), "category_id": category}
            if prediction.masks is not None:
                result["segmentation"] = _rle(prediction.masks[j])
            else:
                result["bbox"] = boxes[j]
            result["score"] = score
            results.append(result)
    return results


def to_coco_results(predictions: Sequence[Mapping], image_ids: Sequence[int] | None = None,
                    category_ids: Sequence[int] | None = None, iou_type: str = "bbox") -> list[dict]:
    """Detections as a COCO results file: ``[{"image_id", "category_id", "bbox": [x, y, w, h], "score"}, ...]``.

    What ``convkit predict --format coco`` writes, and what any COCO tool reads (``COCO.loadRes``). The
    detections keep their order.

    Args:
        predictions: one dict per image, ``{"boxes": (K, 4) xyxy pixels, "scores": (K,), "labels": (K,)}``
            (plus ``"masks"`` for ``iou_type="segm"``).
        image_ids: the COCO image id of each image (default 1, 2, ... as `to_coco_dataset` numbers them).
        category_ids: the COCO category id of each class index (default index + 1); e.g. the original,
            non-contiguous ids of a COCO file whose categories were numbered 0..C-1 when read.
        iou_type: "bbox", or "segm": each result then has a "segmentation" (compressed RLE) and no "bbox".

    Returns:
        The list of result dicts (``json.dump``-ready).

    Raises:
        DataFormatError: a prediction is malformed, or ``image_ids`` / ``category_ids`` do not fit.

    Example:
        >>> prediction = {"boxes": torch.tensor([[10.0, 20.0, 40.0, 30.0]]), "scores": torch.tensor([0.75]),
        ...               "labels": torch.tensor([0])}
        >>> to_coco_results([prediction], image_ids=[42])
        [{'image_id': 42, 'category_id': 1, 'bbox': [10.0, 20.0, 30.0, 10.0], 'score': 0.75}]
    """
    segm = _check_iou_type(iou_type)
    if isinstance(predictions, Mapping) or not isinstance(predictions, Sequence):
        raise DataFormatError(f"predictions: expected a list with one dict per image, found {shorten(predictions)}")
    if image_ids is None:
        image_ids = range(1, len(predictions) + 1)
    elif len(image_ids) != len(predictions):
        raise DataFormatError(f"image_ids: {len(image_ids)} ids for {len(predictions)} images, expected one each")
    num_classes = None if category_ids is None else len(category_ids)
    checked = [_prediction(p, f"predictions[{i}]", num_classes, segm) for i, p in enumerate(predictions)]
    return _coco_results(checked, image_ids, category_ids)


# --- COCO's 12 numbers -----------------------------------------------------------------------------------------

def _cocoeval(dataset: dict, results: list[dict], iou_type: str):
    """COCOeval run on an in-memory ground truth and results list, its prints silenced."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        truth = COCO()
        truth.dataset = dataset
        truth.createIndex()
        if results:
            found = truth.loadRes(results)
        else:  # loadRes indexes results[0]: no detections is an empty results set, evaluated as any other
            found = COCO()
            found.dataset = {"images": list(dataset["images"]), "categories": list(dataset["categories"]),
                             "annotations": []}
            found.createIndex()
        evaluator = COCOeval(truth, found, iou_type)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return evaluator


def _mean_precision(precision: np.ndarray) -> float:
    """COCO's mean over the entries that exist (> -1); NaN when none does (the class has no ground truth)."""
    valid = precision[precision > -1]
    return float(valid.mean()) if valid.size else math.nan


def coco_metrics(predictions: Sequence[Mapping], targets: Sequence[Mapping], num_classes: int,
                 image_sizes=None, iou_type: str = "bbox") -> dict:
    """COCO's 12 numbers and the per-class AP, computed by pycocotools' COCOeval on an in-memory COCO.

    Args:
        predictions: one dict per image, ``{"boxes": (K, 4) xyxy pixels, "scores": (K,), "labels": (K,)}``
            (plus ``"masks"`` (K, H, W) for ``iou_type="segm"``); K may be 0.
        targets: one target per image, in the same order: ``{"boxes": (M, 4), "labels": (M,)}`` with optional
            ``"iscrowd"`` (crowd regions: detections on them are neither right nor wrong), ``"masks"``,
            ``"area"``; M may be 0 (detections on such an image are false positives).
        num_classes: C; labels are 0..C-1.
        image_sizes: optional (height, width) per image (only recorded; segm takes it from the masks).
        iou_type: "bbox" (boxes) or "segm" (instance masks, from both sides' ``"masks"``).

    Returns:
        ``{"AP": ..., "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"}`` as
        COCOeval's ``stats`` gives them (-1: no ground truth in that size range, or none at all), plus
        ``"per_class_AP"`` and ``"per_class_AP50"`` (lists of C floats, NaN for a class without ground
        truth) and ``"per_class_num_gt"`` (objects per class, crowds not counted).

    Raises:
        DataFormatError: the lists differ in length, or an entry is malformed (named, e.g.
            ``predictions[3]['labels'][0]``).

    Example:
        >>> target = {"boxes": torch.tensor([[10.0, 10.0, 50.0, 40.0]]), "labels": torch.tensor([1])}
        >>> perfect = {"boxes": torch.tensor([[10.0, 10.0, 50.0, 40.0]]), "scores": torch.tensor([0.9]),
        ...            "labels": torch.tensor([1])}
        >>> metrics = coco_metrics([perfect], [target], num_classes=2)
        >>> [round(metrics[k], 6) for k in ("AP", "AP50", "APs", "APm")]    # a 40x30 box is "medium"
        [1.0, 1.0, -1.0, 1.0]
        >>> [round(ap, 6) for ap in metrics["per_class_AP"]]                  # class 0 has no ground truth
        [nan, 1.0]
    """
    segm = _check_iou_type(iou_type)
    _check_lists(predictions, targets)
    sizes = _image_sizes(image_sizes, len(targets))
    truth = [_target(t, f"targets[{i}]", num_classes, segm, sizes[i]) for i, t in enumerate(targets)]
    found = [_prediction(p, f"predictions[{i}]", num_classes, segm) for i, p in enumerate(predictions)]
    for i, (p, t) in enumerate(zip(found, truth)):
        if segm and t.masks is not None and p.masks is not None and len(p.masks) and \
                p.masks.shape[1:] != t.masks.shape[1:]:
            raise DataFormatError(f"predictions[{i}]['masks']: {p.masks.shape[1]}x{p.masks.shape[2]} masks, "
                                  f"expected the image's size {t.masks.shape[1]}x{t.masks.shape[2]}")
    dataset = {"images": _coco_images(truth, sizes), "annotations": _coco_annotations(truth),
               "categories": _coco_categories(num_classes, None)}
    results = _coco_results(found, range(1, len(found) + 1))
    evaluator = _cocoeval(dataset, results, iou_type)
    metrics = {name: float(value) for name, value in zip(COCO_METRIC_NAMES, evaluator.stats)}
    precision = evaluator.eval["precision"]  # [IoU threshold, recall threshold, class, area range, max dets]
    last = len(evaluator.params.maxDets) - 1  # 100 detections per image; area range 0 is "all"
    metrics["per_class_AP"] = [_mean_precision(precision[:, :, k, 0, last]) for k in range(num_classes)]
    metrics["per_class_AP50"] = [_mean_precision(precision[0, :, k, 0, last]) for k in range(num_classes)]
    metrics["per_class_num_gt"] = _count_objects(truth, num_classes, ignore_difficult=False)
    return metrics


def _ignored(target: _Image, ignore_difficult: bool = True) -> np.ndarray:
    """Ground truth that neither rewards nor punishes a detection: crowds (and VOC's difficult objects)."""
    ignored = np.zeros(len(target.boxes), dtype=bool)
    if target.crowd is not None:
        ignored |= target.crowd
    if ignore_difficult and target.difficult is not None:
        ignored |= target.difficult
    return ignored


def _count_objects(targets: Sequence[_Image], num_classes: int, ignore_difficult: bool = True) -> list[int]:
    counts = np.zeros(num_classes, dtype=np.int64)
    for target in targets:
        kept = target.labels[~_ignored(target, ignore_difficult)]
        counts += np.bincount(kept, minlength=num_classes)
    return counts.tolist()


# --- Pascal VOC's AP ------------------------------------------------------------------------------------------

def _all_point_ap(recall: np.ndarray, precision: np.ndarray) -> float:
    """VOC2010+'s AP: the area under the precision envelope (precision made non-increasing), at every recall step."""
    recall = np.concatenate(([0.0], recall, [1.0]))
    precision = np.concatenate(([0.0], precision, [0.0]))
    envelope = np.maximum.accumulate(precision[::-1])[::-1]
    steps = np.flatnonzero(recall[1:] != recall[:-1])
    return float(np.sum((recall[steps + 1] - recall[steps]) * envelope[steps + 1]))


def _voc_class(found: Sequence[_Image], truth: Sequence[_Image], ious: Sequence[np.ndarray], c: int,
               threshold: float) -> tuple[float, np.ndarray, np.ndarray, int]:
    """One class's AP, recall and precision at each ranked detection, and its ground-truth count.

    The VOC devkit's greedy rule: detections in descending score (stable, so ties keep their order, images in
    list order); each takes the ground truth of its class it overlaps most in its image; IoU >= threshold and
    that object not yet taken: a true positive (the object is taken); already taken, or IoU too low: a false
    positive; the object ignored (crowd, difficult): neither, and the detection is left off the curve.
    """
    gt_index = [np.flatnonzero(t.labels == c) for t in truth]
    ignored = [_ignored(t)[g] for t, g in zip(truth, gt_index)]
    taken = [np.zeros(len(g), dtype=bool) for g in gt_index]
    num_gt = int(sum((~flags).sum() for flags in ignored))
    rows = [np.flatnonzero(p.labels == c) for p in found]  # this class's detections: image, row, score
    image = np.concatenate([np.full(len(r), i) for i, r in enumerate(rows)] + [np.zeros(0, dtype=np.int64)])
    row = np.concatenate(rows + [np.zeros(0, dtype=np.int64)])
    scores = np.concatenate([p.scores[r] for p, r in zip(found, rows)] + [np.zeros(0)])
    hits = []  # 1 true positive, 0 false positive, per detection that counts
    for k in np.argsort(-scores, kind="stable"):
        i, d = image[k], row[k]
        overlaps = ious[i][d, gt_index[i]]
        best = int(np.argmax(overlaps)) if overlaps.size else -1
        if best < 0 or overlaps[best] < threshold:
            hits.append(0)
        elif ignored[i][best]:
            continue
        elif taken[i][best]:
            hits.append(0)
        else:
            taken[i][best] = True
            hits.append(1)
    if num_gt == 0:
        return math.nan, np.zeros(0), np.zeros(0), 0
    hits = np.array(hits, dtype=np.float64)
    true_positives = np.cumsum(hits)
    recall = true_positives / num_gt
    precision = true_positives / np.arange(1, len(hits) + 1)
    return _all_point_ap(recall, precision), recall, precision, num_gt


def voc_ap(predictions: Sequence[Mapping], targets: Sequence[Mapping], num_classes: int,
           iou: float = 0.5) -> dict:
    """Pascal VOC's AP per class at one IoU (all-point interpolation, VOC2010 on), their mean, and the curves.

    Matching follows the VOC devkit: detections of a class in descending score (ties keep their order), each
    takes the object of its class in its image it overlaps most; IoU >= ``iou`` and that object not yet taken
    is a true positive, anything else a false positive (a second detection of the same object too); an object
    marked ``"difficult"`` or ``"iscrowd"`` is ignored, and so is a detection whose best match it is. AP is the
    area under the precision envelope (precision made non-increasing in recall) at every recall step.

    COCO's AP50 (`coco_metrics`) differs in general: it reads the envelope at 101 recall points (0, 0.01, ..., 1)
    instead of every step, a detection takes the best object *not yet taken*, crowds absorb any number of
    detections, and it keeps at most 100 detections per image.

    Args:
        predictions: one dict per image, ``{"boxes": (K, 4) xyxy pixels, "scores": (K,), "labels": (K,)}``.
        targets: one target per image: ``{"boxes": (M, 4), "labels": (M,)}``, optional ``"difficult"`` and
            ``"iscrowd"`` (M,) flags.
        num_classes: C; labels are 0..C-1.
        iou: the IoU a detection needs to count (0.5 for VOC).

    Returns:
        ``{"mAP": mean over the classes with ground truth (NaN if none has any), "per_class": C APs (NaN for
        a class without ground truth), "num_gt": objects per class (ignored ones not counted), "curves": per
        class a (recall, precision) pair of arrays, one point per ranked detection that counts}``.

    Raises:
        DataFormatError: the lists differ in length, or an entry is malformed (named).

    Example:
        >>> target = {"boxes": torch.tensor([[0.0, 0.0, 10.0, 10.0], [20.0, 20.0, 30.0, 30.0]]),
        ...           "labels": torch.tensor([0, 0])}
        >>> found = {"boxes": torch.tensor([[0.0, 0.0, 10.0, 10.0], [50.0, 50.0, 60.0, 60.0],
        ...                                 [20.0, 20.0, 30.0, 30.0]]),
        ...          "scores": torch.tensor([0.9, 0.8, 0.7]), "labels": torch.tensor([0, 0, 0])}
        >>> result = voc_ap([found], [target], num_classes=1)   # hit, miss, hit: 0.5 * 1 + 0.5 * 2/3
        >>> round(result["mAP"], 4), result["curves"][0][0].tolist()
        (0.8333, [0.5, 0.5, 1.0])
    """
    _check_lists(predictions, targets)
    if not 0 < iou <= 1:
        raise DataFormatError(f"iou: {shorten(iou)}, expected a threshold in (0, 1]")
    truth = [_target(t, f"targets[{i}]", num_classes) for i, t in enumerate(targets)]
    found = [_prediction(p, f"predictions[{i}]", num_classes) for i, p in enumerate(predictions)]
    ious = [box_iou(torch.from_numpy(p.boxes), torch.from_numpy(t.boxes)).numpy() for p, t in zip(found, truth)]
    per_class, curves, num_gt = [], [], []
    for c in range(num_classes):
        ap, recall, precision, count = _voc_class(found, truth, ious, c, iou)
        per_class.append(ap)
        curves.append((recall, precision))
        num_gt.append(count)
    present = [ap for ap in per_class if not math.isnan(ap)]
    return {"mAP": float(np.mean(present)) if present else math.nan, "per_class": per_class, "num_gt": num_gt,
            "curves": curves}


# --- pictures and tables ----------------------------------------------------------------------------------------

LEGEND_LIMIT = 20  # classes named in the PR plot's legend; beyond that the legend hides the curves


def plot_pr_curves(curves: Sequence[tuple], classes: Sequence[str], path: str | os.PathLike,
                   ap: Sequence[float] | None = None, title: str = "precision-recall") -> Path:
    """The precision-recall curve of each class in one PNG (written atomically).

    Args:
        curves: per class a (recall, precision) pair of arrays, as `voc_ap` returns them under "curves";
            an empty pair (no ground truth) is left out.
        classes: the class names, one per curve.
        path: the PNG to write.
        ap: optional AP per class, shown in the legend (NaN shown as "n/a").
        title: the figure's title.

    Returns:
        ``path`` as a Path.

    Raises:
        DataFormatError: ``classes`` (or ``ap``) does not have one entry per curve.

    Example:
        >>> curves = [(np.array([0.5, 0.5, 1.0]), np.array([1.0, 0.5, 2 / 3])), (np.zeros(0), np.zeros(0))]
        >>> plot_pr_curves(curves, ["shirt", "shoe"], "pr.png", ap=[0.8333, float("nan")])
        PosixPath('pr.png')
    """
    from matplotlib.figure import Figure

    if len(classes) != len(curves) or (ap is not None and len(ap) != len(curves)):
        raise DataFormatError(f"plot_pr_curves: {len(curves)} curves, {len(classes)} class names"
                              f"{'' if ap is None else f', {len(ap)} APs'}; expected one of each per class")
    fig = Figure(figsize=(6.5, 5))
    ax = fig.subplots()
    many = len(curves) > LEGEND_LIMIT
    for c, (recall, precision) in enumerate(curves):
        recall, precision = np.asarray(recall), np.asarray(precision)
        if recall.size == 0:
            continue
        label = str(classes[c]) if ap is None else f"{classes[c]} (AP {_number(ap[c])})"
        ax.plot(np.concatenate(([0.0], recall)), np.concatenate(([precision[0]], precision)),
                drawstyle="steps-post", linewidth=0.8 if many else 1.5, label=None if many else label)
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1.01), ylim=(0, 1.02), title=title)
    ax.grid(alpha=0.3)
    if not many and ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, loc="lower left")
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight"))


def _number(value: float | None, digits: int = 3) -> str:
    """A metric as text: n/a for NaN, None or COCO's -1 (nothing to measure)."""
    if value is None or math.isnan(value) or value == -1:
        return "n/a"
    return f"{value:.{digits}f}"


def format_metrics_table(coco: Mapping | None = None, voc: Mapping | None = None,
                         classes: Sequence[str] | None = None) -> str:
    """The metrics as text for the command line: COCO's 12 numbers, VOC's mAP, then one row per class.

    Args:
        coco: `coco_metrics`' result (or None).
        voc: `voc_ap`'s result (or None).
        classes: the class names (default: the class indices).

    Returns:
        The table (lines joined by newlines, no trailing newline); "n/a" where there is nothing to measure.

    Example:
        >>> target = {"boxes": torch.tensor([[10.0, 10.0, 50.0, 40.0]]), "labels": torch.tensor([1])}
        >>> found = {"boxes": torch.tensor([[10.0, 10.0, 50.0, 40.0]]), "scores": torch.tensor([0.9]),
        ...          "labels": torch.tensor([1])}
        >>> print(format_metrics_table(coco_metrics([found], [target], 2), voc_ap([found], [target], 2),
        ...                            classes=["shirt", "shoe"]))
        COCO  AP 1.000  AP50 1.000  AP75 1.000  APs n/a  APm 1.000  APl n/a
              AR1 1.000  AR10 1.000  AR100 1.000  ARs n/a  ARm 1.000  ARl n/a
        VOC   mAP@0.5 1.000
        class     objects  AP     AP50   VOC AP@0.5
        shirt     0        n/a    n/a    n/a
        shoe      1        1.000  1.000  1.000
    """
    lines = []
    if coco is not None:
        lines.append("COCO  " + "  ".join(f"{k} {_number(coco[k])}" for k in COCO_METRIC_NAMES[:6]))
        lines.append("      " + "  ".join(f"{k} {_number(coco[k])}" for k in COCO_METRIC_NAMES[6:]))
    if voc is not None:
        lines.append(f"VOC   mAP@0.5 {_number(voc['mAP'])}")
    columns = {}
    if coco is not None:
        columns["objects"] = [str(n) for n in coco["per_class_num_gt"]]
        columns["AP"] = [_number(v) for v in coco["per_class_AP"]]
        columns["AP50"] = [_number(v) for v in coco["per_class_AP50"]]
    if voc is not None:
        columns.setdefault("objects", [str(n) for n in voc["num_gt"]])
        columns["VOC AP@0.5"] = [_number(v) for v in voc["per_class"]]
    if not columns:
        return "\n".join(lines)
    count = len(next(iter(columns.values())))
    names = [str(c) for c in classes] if classes is not None else [str(c) for c in range(count)]
    if len(names) != count:
        raise DataFormatError(f"classes: {len(names)} names for {count} classes, expected one per class")
    columns = {"class": names, **columns}
    widths = {k: max(len(k), *(len(v) for v in values)) if values else len(k) for k, values in columns.items()}
    rows = [list(columns)] + [[columns[k][i] for k in columns] for i in range(count)]
    lines += ["  ".join(cell.ljust(widths[k]) for k, cell in zip(columns, row)).rstrip() for row in rows]
    return "\n".join(lines)
