"""`convkit evaluate` and `convkit predict` for a trained segmenter (a run folder or its checkpoint).

* `evaluate_segmenter`: mIoU, pixel accuracy and per-class IoU from one confusion matrix accumulated over the
  data (`convkit.tasks.segmentation.metrics`), on the run's own validation set (rebuilt from its config as
  training built it) or on given data; pictures: eval_iou.png (per-class IoU bars) and eval_predictions.png
  (image | truth | prediction).
* `predict_segmentation`: the class map of image files, written as a palette mask PNG (pixel value = class index)
  and an overlay with a legend per image, and each class's pixel area.

Images of another size than the training size are resized for the model and the class map resized back (nearest
neighbour), so masks and areas are in each image's own pixels.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from convkit.tasks.detection.inference import _fit  # a uint8 image at the model's channels and size

__all__ = ["SegmentationEvaluation", "SegmentationPrediction", "evaluate_segmenter", "evaluation_data",
           "predict_segmentation"]


def _checkpoint(checkpoint, device):
    from convkit.models.reference import Checkpoint, load_checkpoint
    from convkit.models.weights import CheckpointError

    ckpt = checkpoint if isinstance(checkpoint, Checkpoint) else load_checkpoint(checkpoint, device)
    if ckpt.meta.get("task") != "segment":
        raise CheckpointError(f"{ckpt.path}: a {ckpt.meta.get('task', 'classification')} model, not a segmenter")
    return ckpt


def segment_images(ckpt, images: list[torch.Tensor], batch_size: int = 16, device="cpu") -> list[torch.Tensor]:
    """Class maps uint8 (H, W) of uint8 (C, H, W) images of any size, each in its own pixels."""
    from convkit.tasks.segmentation.task import predict_masks

    c, h, w = ckpt.input_shape
    model = ckpt.model.to(device).eval()
    if (ckpt.meta.get("model") or {}).get("segmenter") == "convolutionized":  # slides over any size: one at a time
        return [_original_size(_slide(model, ckpt, _fit(x, c, *_at_least(x, h, w)), device), x) for x in images]
    out = []
    for start in range(0, len(images), batch_size):
        chunk = images[start:start + batch_size]
        batch = torch.stack([_fit(x, c, h, w) for x in chunk])
        found, _, _ = predict_masks(model, batch, ckpt.mean, ckpt.std, len(batch), device, channels_last=False)
        out += [_original_size(m, x) for x, m in zip(chunk, found)]
    return out


def _original_size(m: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    """A class map (H', W') brought to the image's (H, W) by nearest neighbour (labels are never blended)."""
    if tuple(m.shape) == tuple(image.shape[1:]):
        return m
    return F.interpolate(m[None, None].float(), size=tuple(image.shape[1:]), mode="nearest")[0, 0].to(torch.uint8)


def _at_least(image: torch.Tensor, h: int, w: int) -> tuple[int, int]:
    """The image's own size, or the training size where it is smaller."""
    return max(h, int(image.shape[1])), max(w, int(image.shape[2]))


def _slide(model, ckpt, x: torch.Tensor, device) -> torch.Tensor:
    """A convolutionized classifier's class map at the image's size (its coarse map resized bilinearly)."""
    from convkit.tasks.segmentation.task import predict_masks

    found, _, _ = predict_masks(model, x[None], ckpt.mean, ckpt.std, 1, device, channels_last=False)
    return found[0]


@dataclass
class SegmentationEvaluation:
    """The metrics of a segmenter on a dataset (`evaluate_segmenter`); ``print`` it for the per-class table.

    Attributes:
        metrics: `segmentation_metrics`' dict (miou, pixel_accuracy, mean_accuracy, iou, accuracy, present...).
        classes: the class names.
        images: how many images were evaluated.
        pixels: labelled pixels per class in the truth (255 excluded).
        files: the pictures written (name -> path).
    """

    metrics: dict
    classes: list
    images: int
    pixels: list
    files: dict = field(default_factory=dict)

    def __str__(self) -> str:
        m = self.metrics

        def pct(v):
            return "   n/a" if v is None or v != v else f"{100 * v:5.1f}%"

        lines = [f"mIoU {pct(m['miou']).strip()}, pixel accuracy {pct(m['pixel_accuracy']).strip()}, mean class "
                 f"accuracy {pct(m['mean_accuracy']).strip()} over {self.images:,} images",
                 f"{'class':<16} {'pixels':>10} {'IoU':>7} {'accuracy':>9}"]
        for name, n, iou, acc in zip(self.classes, self.pixels, m["iou"], m["accuracy"]):
            lines.append(f"{name[:16]:<16} {n:>10,} {pct(iou):>7} {pct(acc):>9}")
        lines.append("n/a: a class in neither the truth nor the prediction (IoU 0/0), left out of the mean")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        """JSON-able: undefined values (NaN) as null."""
        def clean(v):
            if isinstance(v, float) and v != v:
                return None
            return [clean(x) for x in v] if isinstance(v, list | tuple) else v

        metrics = {k: clean(v) for k, v in self.metrics.items() if k != "classes"}
        return {"images": self.images, "classes": self.classes, "class_pixels": self.pixels, **metrics,
                "files": {k: str(v) for k, v in self.files.items()}}


def evaluation_data(ckpt, data=None):
    """The data to evaluate a segmenter on: `data` (a folder, COCO file or "scenes"), else the run's own
    validation set, rebuilt from the config in the checkpoint as training built it."""
    from convkit.tasks.segmentation.data import load_segmentation, scenes_segmentation
    from convkit.tasks.segmentation.task import builtin, load_segmentation_data
    from convkit.train.config import TrainConfig

    if builtin(data):
        return scenes_segmentation("val"), "scenes (val)"
    if data is not None:
        return load_segmentation(data, classes=ckpt.classes), str(data)
    config = TrainConfig.from_dict(ckpt.meta["config"])
    _, test, what = load_segmentation_data(config, log=lambda _: None)
    if config.test_limit:
        test = test.subset(range(min(config.test_limit, len(test))))
    return test, f"the run's validation set, {what}"


def evaluate_segmenter(checkpoint, data=None, *, batch_size: int = 32, device: str = "cpu",
                       out: str | os.PathLike | None = None) -> SegmentationEvaluation:
    """mIoU, pixel accuracy and per-class IoU of a trained segmenter, with its pictures in `out`.

    Args:
        checkpoint: a run folder, a .safetensors checkpoint, or a loaded `Checkpoint`.
        data: a folder with images/ and masks/, a COCO JSON file, "scenes", or a `SegmentationDataset`; default
            the run's own validation set.
        batch_size: images per forward pass.
        device: where the model runs.
        out: the folder for eval_iou.png and eval_predictions.png (None: none written).

    Returns:
        A `SegmentationEvaluation` (``print`` it for the table).

    Raises:
        CheckpointError: not a segmenter's checkpoint. DataFormatError: bad data, classes other than the model's.
    """
    from convkit.data.errors import DataFormatError
    from convkit.tasks.segmentation.data import SegmentationDataset
    from convkit.tasks.segmentation.metrics import confusion_matrix, segmentation_metrics
    from convkit.tasks.segmentation.plots import draw_segmentation_grid, plot_iou_bars
    from convkit.tasks.segmentation.task import PREVIEW

    ckpt = _checkpoint(checkpoint, device)
    dataset = data if isinstance(data, SegmentationDataset) else evaluation_data(ckpt, data)[0]
    classes = list(ckpt.classes)
    if len(dataset.classes) != len(classes):
        raise DataFormatError(f"{dataset.source}: {len(dataset.classes)} classes, the model has {len(classes)}")
    dataset.check()
    found = torch.stack(segment_images(ckpt, list(dataset.images), batch_size, device)) if len(dataset) else \
        torch.zeros(0, *dataset.image_shape[1:], dtype=torch.uint8)
    matrix = confusion_matrix(found, dataset.masks.cpu(), len(classes))
    metrics = segmentation_metrics(matrix, classes)
    files = {}
    if out is not None:
        out = Path(out)
        files["iou"] = plot_iou_bars(metrics["iou"], classes, out / "eval_iou.png",
                                     f"per-class IoU, {dataset.source}")
        n = min(PREVIEW, len(dataset))
        files["predictions"] = draw_segmentation_grid(dataset.images[:n].cpu(), dataset.masks[:n].cpu(), found[:n],
                                                      classes, out / "eval_predictions.png")
    return SegmentationEvaluation(metrics, classes, len(dataset), matrix.sum(1).tolist(), files)


@dataclass
class SegmentationPrediction:
    """One image's class map (`predict_segmentation`): each class's area in pixels, the files written."""

    path: str
    size: tuple = ()
    areas: dict = field(default_factory=dict)
    mask: str | None = None
    overlay: str | None = None
    error: str | None = None

    def to_dict(self) -> dict:
        total = max(1, self.size[0] * self.size[1]) if self.size else 1
        out = {"path": self.path}
        if not self.error:
            out.update({"size": list(self.size), "areas": self.areas,
                        "fractions": {k: round(v / total, 6) for k, v in self.areas.items()}})
        for key in ("mask", "overlay", "error"):
            if getattr(self, key):
                out[key] = getattr(self, key)
        return out


def predict_segmentation(checkpoint, inputs, *, batch_size: int = 16, device: str = "cpu",
                         out: str | os.PathLike | None = None) -> list[SegmentationPrediction]:
    """Segments image files with a trained segmenter.

    Args:
        checkpoint: a run folder, a .safetensors checkpoint, or a loaded `Checkpoint`.
        inputs: image files and/or folders (searched recursively, as `convkit predict` does).
        batch_size: images per forward pass.
        device: where the model runs.
        out: a folder for ``<stem>_mask.png`` (palette PNG, pixel value = class index) and ``<stem>_overlay.png``
            (the image with the coloured mask and a legend) of each image; None writes nothing.

    Returns:
        One `SegmentationPrediction` per file, in order, with ``areas`` {class name: pixels} of the classes
        present; an unreadable file has ``error`` set and the others go on.

    Raises:
        CheckpointError: not a segmenter's checkpoint.
    """
    from convkit.data.folder import decode_image
    from convkit.tasks.classification.predict import expand_inputs
    from convkit.tasks.segmentation.data import write_mask
    from convkit.tasks.segmentation.plots import save_overlay

    ckpt = _checkpoint(checkpoint, device)
    classes = list(ckpt.classes)
    results, images, ok = [], [], []
    for path in expand_inputs(inputs):
        try:
            images.append(decode_image(path, ckpt.input_shape[0]))
            ok.append(len(results))
            results.append(SegmentationPrediction(str(path)))
        except Exception as err:  # any decoding failure: reported by path, the rest go on
            results.append(SegmentationPrediction(str(path), error=f"{path}: cannot read the image ({err})"))
    maps = segment_images(ckpt, images, batch_size, device) if images else []
    used: set[str] = set()
    for i, image, m in zip(ok, images, maps):
        r = results[i]
        r.size = tuple(int(v) for v in m.shape)
        counts = torch.bincount(m.flatten().long(), minlength=len(classes)).tolist()
        r.areas = {classes[k]: int(n) for k, n in enumerate(counts) if n}
        if out is not None:
            name = Path(r.path).stem
            while name in used:
                name += "_"
            used.add(name)
            r.mask = str(write_mask(Path(out) / f"{name}_mask.png", m, palette=True))
            r.overlay = str(save_overlay(image, m, classes, Path(out) / f"{name}_overlay.png", title=Path(r.path).name))
    return results
