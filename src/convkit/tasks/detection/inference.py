"""`convkit evaluate` and `convkit predict` for a trained detector (a run folder or its checkpoint).

* `evaluate_detector`: COCO's 12 numbers and per-class AP (pycocotools), Pascal VOC's AP@0.5 per class, and
  precision-recall curves as a PNG, on the run's own validation set (rebuilt from its config as training built
  it) or on given data (a COCO JSON file, VOC or YOLO folder, or "scenes").
* `predict_detections`: the detections of image files, drawn on each image (labelled boxes with scores, a PNG per
  image) and returned as JSON-able records or as a COCO results file (`to_coco_results`).

Images whose size differs from the training size are resized for the detector and its boxes scaled back, so
detections and metrics are in each image's own pixels.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from convkit.tasks.detection.data import DetectionDataset, load_detection

__all__ = ["DETECTOR_TASKS", "DetectionEvaluation", "DetectionPrediction", "evaluate_detector", "predict_detections"]

DETECTOR_TASKS = ("detect", "instance")  # the checkpoints' tasks whose models are detectors (instance: Mask R-CNN)


def _checkpoint(checkpoint, device):
    from convkit.models.reference import Checkpoint, load_checkpoint
    from convkit.models.weights import CheckpointError

    ckpt = checkpoint if isinstance(checkpoint, Checkpoint) else load_checkpoint(checkpoint, device)
    if ckpt.meta.get("task") not in DETECTOR_TASKS:
        raise CheckpointError(f"{ckpt.path}: a {ckpt.meta.get('task', 'classification')} model, not a detector")
    return ckpt


def _detect(ckpt, images: list[torch.Tensor], batch_size: int, device, score_threshold: float | None):
    """Detections of uint8 (C, H, W) images of any size, in each image's own pixels."""
    model = ckpt.model.to(device).eval()
    c, h, w = ckpt.input_shape
    out = []
    for start in range(0, len(images), batch_size):
        chunk = images[start:start + batch_size]
        batch = torch.stack([_fit(x, c, h, w) for x in chunk]).to(device)
        with torch.no_grad():
            found = model.detect(ckpt.normalize(batch), score_threshold)
        for x, d in zip(chunk, found):
            sy, sx = x.shape[1] / h, x.shape[2] / w
            d["boxes"] = d["boxes"] * torch.tensor([sx, sy, sx, sy])
            if "masks" in d and tuple(d["masks"].shape[1:]) != tuple(x.shape[1:]):  # the image's own pixels
                d["masks"] = F.interpolate(d["masks"][None].float(), size=tuple(x.shape[1:]),
                                           mode="nearest")[0].to(torch.uint8)
            out.append(d)
    return out


def _fit(image: torch.Tensor, channels: int, h: int, w: int) -> torch.Tensor:
    """A uint8 (C, H, W) image with the model's channels and size (float 0..255)."""
    x = image.float()
    if x.shape[0] != channels:
        x = x.mean(0, keepdim=True) if channels == 1 else x.expand(channels, -1, -1)
    if tuple(x.shape[1:]) != (h, w):
        x = F.interpolate(x[None], size=(h, w), mode="bilinear", antialias=True, align_corners=False)[0]
    return x


@dataclass
class DetectionEvaluation:
    """What `evaluate_detector` returns.

    Attributes:
        coco: COCO's 12 numbers plus per-class AP, AP50 and object counts (`coco_metrics`) of the boxes.
        voc: Pascal VOC's mAP@0.5 and per-class AP (`voc_ap`, without the curves).
        classes: the class names.
        images: how many images were evaluated.
        files: the pictures written, by name ("pr_curves", "predictions").
        segm: a Mask R-CNN's mask AP, the same 12 numbers and per-class AP (`coco_metrics(iou_type="segm")`);
            None for a detector without masks.
    """

    coco: dict
    voc: dict
    classes: list[str]
    images: int
    files: dict = field(default_factory=dict)
    segm: dict | None = None

    def __str__(self) -> str:
        from convkit.tasks.detection.metrics import format_metrics_table

        boxes = format_metrics_table(self.coco, self.voc, self.classes)
        if self.segm is None:
            return boxes
        return (f"masks (COCO segm):\n{format_metrics_table(self.segm, None, self.classes)}\n"
                f"boxes (COCO bbox):\n{boxes}")

    def to_dict(self) -> dict:
        """JSON-able (NaN as null)."""
        def clean(v):
            if isinstance(v, float):
                return None if v != v else v
            if isinstance(v, list):
                return [clean(x) for x in v]
            if isinstance(v, dict):
                return {k: clean(x) for k, x in v.items()}
            return v

        return clean({"images": self.images, "classes": self.classes, "coco": self.coco, "voc": self.voc,
                      **({"segm": self.segm} if self.segm is not None else {}),
                      "files": {k: str(v) for k, v in self.files.items()}})


def evaluation_data(ckpt, data=None) -> tuple[DetectionDataset, str]:
    """The data to evaluate a detector on: `data` (a COCO/VOC/YOLO path or "scenes"), else the run's own
    validation set, rebuilt from the config in the checkpoint as training built it (with instance masks for an
    instance segmentation run)."""
    from convkit.tasks.detection.task import builtin, load_detection_data, scenes_dataset
    from convkit.train.config import TrainConfig

    masks = ckpt.meta.get("task") == "instance"
    if builtin(data):
        return scenes_dataset("val", masks=masks), "scenes (val)"
    if data is not None:
        return load_detection(data, classes=ckpt.classes, masks=masks), str(data)
    config = TrainConfig.from_dict(ckpt.meta["config"])
    _, test, what = load_detection_data(config, log=lambda _: None, masks=masks)
    if config.test_limit:
        test = test.subset(range(min(config.test_limit, len(test))))
    return test, f"the run's validation set, {what}"


def evaluate_detector(checkpoint, data=None, *, batch_size: int = 32, device: str = "cpu",
                      out: str | os.PathLike | None = None) -> DetectionEvaluation:
    """COCO and VOC metrics of a trained detector (and a Mask R-CNN's mask AP), and its precision-recall curves
    (eval_pr.png) and a grid of its detections (eval_predictions.png, masks painted) in `out`.

    Args:
        checkpoint: a run folder, a .safetensors checkpoint, or a loaded `Checkpoint`.
        data: a COCO JSON file, VOC or YOLO folder, "scenes", or a `DetectionDataset`; default the run's own
            validation set.
        batch_size: images per forward pass.
        device: where the detector runs.
        out: the folder for the pictures (None: none written).

    Returns:
        A `DetectionEvaluation` (``print`` it for the table); ``segm`` holds the mask AP of a detector with masks.

    Raises:
        CheckpointError: not a detector's checkpoint. DataFormatError, DatasetNotFoundError: bad data (for a
            Mask R-CNN: data without instance masks).
    """
    from convkit.tasks.detection.metrics import coco_metrics, plot_pr_curves, voc_ap
    from convkit.tasks.detection.task import draw_detections

    ckpt = _checkpoint(checkpoint, device)
    dataset = data if isinstance(data, DetectionDataset) else evaluation_data(ckpt, data)[0]
    found = _detect(ckpt, dataset.images, batch_size, device, None)
    classes = list(ckpt.classes)
    coco = coco_metrics(found, dataset.targets, len(classes))
    segm = None
    if getattr(ckpt.model, "kind", None) == "maskrcnn":
        from convkit.tasks.segmentation.instance import check_masks

        check_masks(dataset)
        segm = coco_metrics(found, dataset.targets, len(classes), iou_type="segm")
    voc = voc_ap(found, dataset.targets, len(classes))
    files = {}
    if out is not None:
        out = Path(out)
        files["pr_curves"] = plot_pr_curves(voc["curves"], classes, out / "eval_pr.png", voc["per_class"],
                                            title=f"precision-recall at IoU 0.5, {dataset.source}")
        if dataset.image_shape is not None:
            files["predictions"] = draw_detections(dataset.images_tensor(), found, dataset.targets, classes,
                                                   out / "eval_predictions.png")
    voc = {k: v for k, v in voc.items() if k != "curves"}
    return DetectionEvaluation(coco, voc, classes, len(dataset), files, segm)


@dataclass
class DetectionPrediction:
    """One image's detections (`predict_detections`): boxes xyxy in the image's pixels, class names, scores, and
    for a Mask R-CNN each mask as COCO's compressed RLE (``{"size": [H, W], "counts": str}``) and its pixel area."""

    path: str
    boxes: list = field(default_factory=list)
    labels: list = field(default_factory=list)
    classes: list = field(default_factory=list)
    scores: list = field(default_factory=list)
    drawn: str | None = None
    error: str | None = None
    masks: list | None = None
    areas: list | None = None

    def to_dict(self) -> dict:
        extra = [{} for _ in self.boxes] if self.masks is None else [
            {"mask": m, "area": int(a)} for m, a in zip(self.masks, self.areas)]
        return {"path": self.path, "detections": [
            {"box": [round(v, 2) for v in b], "class": c, "label": int(lab), "score": round(s, 4), **e}
            for b, c, lab, s, e in zip(self.boxes, self.classes, self.labels, self.scores, extra)],
            **({"drawn": self.drawn} if self.drawn else {}), **({"error": self.error} if self.error else {})}


def predict_detections(checkpoint, inputs, *, score_threshold: float = 0.4, batch_size: int = 16,
                       device: str = "cpu", draw: str | os.PathLike | None = None
                       ) -> tuple[list[DetectionPrediction], list[dict]]:
    """Detects objects in image files with a trained detector.

    Args:
        checkpoint: a run folder, a .safetensors checkpoint, or a loaded `Checkpoint`.
        inputs: image files and/or folders (searched recursively, as `convkit predict` does).
        score_threshold: the least score kept.
        batch_size: images per forward pass.
        device: where the detector runs.
        draw: a folder where each image is written with its labelled boxes (``<stem>.png``), or None.

    Returns:
        (one `DetectionPrediction` per file, in order; an unreadable file has ``error`` set and the others go on,
        the COCO results of all of them: ``[{"image_id", "category_id", "bbox", "score"}]`` with image ids 1, 2,
        ... in the order of the files, category ids the class index + 1).

    Raises:
        CheckpointError: not a detector's checkpoint.
    """
    from convkit.data.folder import decode_image
    from convkit.tasks.classification.predict import expand_inputs
    from convkit.tasks.detection.metrics import to_coco_results
    from convkit.tasks.detection.scenes import draw_scenes

    ckpt = _checkpoint(checkpoint, device)
    files = expand_inputs(inputs)
    classes = list(ckpt.classes)
    results, images, ok = [], [], []
    for path in files:
        try:
            images.append(decode_image(path, ckpt.input_shape[0]))
            ok.append(len(results))
            results.append(DetectionPrediction(str(path)))
        except Exception as err:  # any decoding failure: reported by path, the rest go on
            results.append(DetectionPrediction(str(path), error=f"{path}: cannot read the image ({err})"))
    found = _detect(ckpt, images, batch_size, device, score_threshold) if images else []
    used = set()
    for i, image, d in zip(ok, images, found):
        r = results[i]
        r.boxes, r.labels, r.scores = d["boxes"].tolist(), d["labels"].tolist(), d["scores"].tolist()
        r.classes = [classes[k] for k in r.labels]
        if "masks" in d:
            from convkit.tasks.segmentation.instance import mask_rle

            r.masks = [mask_rle(m) for m in d["masks"]]
            r.areas = d["masks"].flatten(1).sum(1).tolist()
        if draw is not None:
            name = Path(r.path).stem
            while name in used:
                name += "_"
            used.add(name)
            r.drawn = str(draw_scenes(image[None], [d], classes, Path(draw) / f"{name}.png", columns=1,
                                      zoom=max(1, round(288 / max(image.shape[1:]))), masks="masks" in d))
    coco = to_coco_results([{"boxes": torch.tensor(r.boxes).reshape(-1, 4), "labels": torch.tensor(r.labels,
                             dtype=torch.long), "scores": torch.tensor(r.scores)} for r in results if not r.error],
                           image_ids=[i + 1 for i in ok])
    return results, coco

