"""Instance segmentation as a task of the training engine: Mask R-CNN, one binary mask per detected object.

It is the detection task (`convkit.tasks.detection.task.DetectionTask`) with masks: the same data readers, the
same augmenter (`Augmenter.detection` moves instance masks with their boxes), the same engine, and

=================  ================================================================================
data               the built-in scenes with their instance masks, or COCO JSON with segmentations (polygons or
                   RLE; `load_detection(path, masks=True)`); data without masks (VOC, YOLO, COCO without
                   segmentations) is refused: instance segmentation needs masks
model              `--model maskrcnn` (the default; a zoo name, model file or run as --model is its backbone)
loss               Faster R-CNN's four terms and the mask term (``loss_mask``, per-pixel binary cross-entropy)
evaluation         mask AP (COCO ``segm``: AP@[.5:.95] picks the best checkpoint, AP50) and box AP (``bbox``)
                   by the same pycocotools evaluator (`coco_metrics`)
pictures           curves.png, val_predictions.png (masks coloured and semi-transparent under the boxes)
=================  ================================================================================

>>> from convkit.train.task import get_task
>>> task = get_task("instance")
>>> task.monitor, task.defaults["model"]
('test_mask_map', 'maskrcnn')
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from convkit.data.errors import DataFormatError
from convkit.tasks.detection.task import PREVIEW, SHOWN_SCORE, DetectionTask, _finite, detections_of
from convkit.train.task import register_task

__all__ = ["InstanceSegmentationTask", "check_masks", "mask_rle", "rle_mask"]

NEEDS_MASKS = ("instance segmentation needs instance masks: COCO JSON with segmentations (polygons or RLE) or the "
               "built-in scenes")


def check_masks(data, what: str = "the data") -> None:
    """Raises DataFormatError unless every image of `data` (a `DetectionDataset`) has instance masks.

    Example:
        >>> from convkit.tasks.detection.data import DetectionDataset
        >>> ds = DetectionDataset(torch.zeros(1, 1, 4, 4, dtype=torch.uint8), [{"boxes": [[0, 0, 2, 2]],
        ...                       "labels": [0]}], ["a"], source="boxes.json")
        >>> check_masks(ds)
        Traceback (most recent call last):
        ...
        convkit.data.errors.DataFormatError: boxes.json: no instance masks (targets[0] has boxes only); instance ...
    """
    missing = [i for i, t in enumerate(data.targets) if t.get("masks") is None]
    if missing:
        raise DataFormatError(f"{data.source or what}: no instance masks (targets[{missing[0]}] has boxes only); "
                              + NEEDS_MASKS)


def mask_rle(mask: torch.Tensor | np.ndarray) -> dict:
    """A binary (H, W) mask as COCO's compressed RLE, JSON-able: ``{"size": [H, W], "counts": str}``.

    Example:
        >>> rle = mask_rle(torch.tensor([[0, 1], [1, 1]], dtype=torch.uint8))
        >>> rle["size"], rle_mask(rle).tolist()
        ([2, 2], [[0, 1], [1, 1]])
    """
    from pycocotools import mask as mask_utils

    array = mask.numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)
    rle = mask_utils.encode(np.asfortranarray(array.astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def rle_mask(rle: dict) -> torch.Tensor:
    """`mask_rle`'s inverse: a uint8 (H, W) mask."""
    from pycocotools import mask as mask_utils

    return torch.from_numpy(mask_utils.decode({"size": list(rle["size"]), "counts": rle["counts"].encode("ascii")}))


@register_task
class InstanceSegmentationTask(DetectionTask):
    """Objects with boxes and masks: Mask R-CNN's loss terms, COCO mask AP and box AP, pictures of masks."""

    name = "instance"
    task_noun = "instance segmentation"
    masks = True  # the data is read with its instance masks
    monitor = "test_mask_map"
    eval_fields = ("test_mask_map", "test_mask_map50", "test_map", "test_map50")
    # a few minutes on 2 CPU cores (Mask R-CNN trains at 2-5 images/s there): 200 of the 2,000 scenes, 3 epochs,
    # 64 sampled RoIs per image (half the detection task's), evaluated on 100 held-out scenes
    defaults = {"model": "maskrcnn", "epochs": 3, "batch_size": 8, "lr": 3e-3, "weight_decay": 1e-4, "ema": 0.0,
                "augment": {"horizontal_flip": True}, "warmup_epochs": 0.5, "limit": 200, "test_limit": 100,
                "model_kwargs": {"box_batch_size_per_image": 64}}

    def load_data(self, config, train_data=None, test_data=None, log=print):
        from convkit.models._registry import ModelArgumentError
        from convkit.tasks.detection.detector import DETECTORS

        if config.model in DETECTORS and config.model != "maskrcnn":
            raise ModelArgumentError(f"--model {config.model}: instance segmentation takes maskrcnn (the detector "
                                     "with a mask head); give a backbone as --backbone")
        try:  # the data is read with its instance masks (`masks`)
            train, test = super().load_data(config, train_data, test_data, log)
        except DataFormatError as err:
            if "mask" not in str(err):
                raise
            raise DataFormatError(f"{err}; {NEEDS_MASKS}") from None
        for what, data in (("the training set", train), ("the validation set", test)):
            check_masks(data, what)
        return train, test

    def describe(self) -> str:
        return f"{len(self.classes)} classes, instance masks; validation: {self.data_note}"

    def evaluate(self, model: nn.Module, data, mean: torch.Tensor, std: torch.Tensor, **options):
        from convkit.tasks.detection.metrics import coco_metrics

        batch = min(int(options.pop("batch_size", 16)), 16)  # (K, H, W) masks per image: small batches
        found = detections_of(model, data, mean, std, batch, **options)
        segm = coco_metrics(found, data.targets, len(self.classes), iou_type="segm")
        box = coco_metrics(found, data.targets, len(self.classes))
        row = {"test_mask_map": _finite(segm["AP"]), "test_mask_map50": _finite(segm["AP50"]),
               "test_map": _finite(box["AP"]), "test_map50": _finite(box["AP50"]), "test_map75": _finite(box["AP75"])}
        preview = []
        for d in found[:PREVIEW]:  # what val_predictions.png draws, the masks as RLE (a resumable state stays small)
            shown = d["scores"] >= SHOWN_SCORE
            preview.append({"boxes": d["boxes"][shown].tolist(), "labels": d["labels"][shown].tolist(),
                            "scores": d["scores"][shown].tolist(), "masks": [mask_rle(m) for m in d["masks"][shown]]})
        return row, {"coco": box, "segm": segm, "preview": preview}

    def plots(self, run_dir, history: list[dict], best: dict | None, extra, title: str) -> None:
        from convkit.tasks.detection.task import draw_detections, plot_detection_curves

        plot_detection_curves(history, self.train_fields, run_dir / "curves.png", title)
        if extra is not None and best is not None and self.preview is not None and extra.get("preview"):
            h, w = self.preview.image_shape[1:]
            found = [{"boxes": torch.tensor(p["boxes"]).reshape(-1, 4), "labels": torch.tensor(p["labels"],
                      dtype=torch.long), "scores": torch.tensor(p["scores"]),
                      "masks": torch.stack([rle_mask(r) for r in p["masks"]]) if p["masks"] else
                      torch.zeros(0, h, w, dtype=torch.uint8)} for p in extra["preview"]]
            draw_detections(self.preview.images_tensor().cpu(), found,
                            [{k: v.cpu() for k, v in t.items()} for t in self.preview.targets], self.classes,
                            run_dir / "val_predictions.png")
