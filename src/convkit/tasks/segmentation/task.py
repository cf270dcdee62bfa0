"""Semantic segmentation as a task of the training engine: what it supplies to `convkit.train.Trainer`.

=================  ================================================================================
data               `--data`: a folder with images/ and masks/ (class-id or palette PNGs, 255 ignored, optional
                   classes.txt; or train/ and val/ holding them), a COCO JSON file (polygons or RLE), or
                   "default"/"scenes", the built-in scenes (2,000 training scenes, 300 of held-out items, 96x96;
                   11 classes: background and the 10 Fashion-MNIST classes). `--val-data` likewise, else the
                   folder's val/ split, else 10% of the images held out with the run's seed. Images of another
                   size than the training images are resized (masks by nearest neighbour).
model              `--model fcn8s|fcn16s|fcn32s|unet|hourglass|convolutionized` (`SEGMENTERS`; default fcn8s);
                   FCNs and the convolutionized classifier on `--backbone` (default: fastcnn with a fourth
                   stage); options as --model-arg (e.g. depth=3, width=16, stacks=2)
augmentation       `convkit.data.Augmenter.with_targets`: crops, flips and the affine warp move the mask with
                   the image (nearest neighbour; 255 "ignore" where the image is padded)
loss               per-pixel cross-entropy, pixels labelled 255 ignored; a stacked hourglass sums one loss per
                   stack (intermediate supervision), each a column of metrics.csv
evaluation         test_loss, mIoU (picks the best checkpoint) and pixel accuracy from a confusion matrix
                   accumulated over the validation set (`convkit.tasks.segmentation.metrics`)
checkpoint         the class names; the segmenter's spec rebuilds it (`convkit evaluate`, `convkit predict`)
pictures           curves.png, iou.png (per-class IoU of the best epoch), val_predictions.png (image | truth |
                   prediction)
=================  ================================================================================

>>> from convkit.train.task import get_task
>>> task = get_task("segment")
>>> task.monitor, task.eval_fields
('test_miou', ('test_loss', 'test_miou', 'test_pixel_accuracy'))
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from convkit.data.errors import DataFormatError
from convkit.tasks.detection.task import builtin  # the same names for the built-in scenes
from convkit.train.task import Task, TaskAugmenter, check_model_names, given_or_loaded, register_task

__all__ = ["SegmentationTask", "load_segmentation_data", "predict_masks", "segmentation_loss"]

PREVIEW = 8  # validation images drawn with their predicted masks in val_predictions.png
DEFAULT_SEGMENTER = "fcn8s"  # the best in 5 minutes on 2 CPU cores (benchmarks/bench_segment.py; README)
DEFAULT_BACKBONE = "fastcnn"


def _has_split(path, split: str) -> bool:
    """A folder with that split: `<split>/images` (+ masks), or COCO's `annotations/instances_<split>.json`."""
    from convkit.tasks.detection.task import _has_split as _has_coco_split

    p = Path(str(path))
    return p.is_dir() and ((p / split / "images").is_dir() or _has_coco_split(p, split))


def load_segmentation_data(config, log=print):
    """(training set, validation set, a description of the validation set) of a segmentation run's config.

    Example:
        >>> from convkit.train import TrainConfig
        >>> train, val, what = load_segmentation_data(TrainConfig.for_task("segment"), log=lambda _: None)
        >>> len(train), len(val), train.classes[:2], what
        (2000, 300, ['background', 'T-shirt/top'], 'scenes (val: held-out items)')
    """
    from convkit.tasks.segmentation.data import load_segmentation, scenes_segmentation

    if builtin(config.data):
        train = scenes_segmentation("train")
    else:
        train = load_segmentation(config.data, "train" if _has_split(config.data, "train") else None,
                                  classes=config.classes)
    if builtin(config.test_data):
        return train, scenes_segmentation("val"), "scenes (val)"
    if config.test_data:
        return train, load_segmentation(config.test_data, classes=train.classes), str(config.test_data)
    if builtin(config.data):
        return train, scenes_segmentation("val"), "scenes (val: held-out items)"
    if _has_split(config.data, "val"):
        return train, load_segmentation(config.data, "val", classes=train.classes), f"{config.data} (val split)"
    train, test = train.split(0.1, seed=config.seed)
    log(f"{config.data}: no validation data; holding out 10% of the images ({len(test):,}) with seed {config.seed}")
    return train, test, f"{config.data} (held-out 10%)"


def segmentation_loss(outputs, masks: torch.Tensor, ignore_index: int = 255) -> tuple[torch.Tensor, list]:
    """(the loss, one term per output): per-pixel cross-entropy, `ignore_index` pixels left out; a list of outputs
    (a stacked hourglass's, one per stack) gives the sum of their losses (intermediate supervision).

    Example:
        >>> logits = torch.zeros(1, 3, 2, 2)                         # uniform over 3 classes
        >>> masks = torch.tensor([[[0, 1], [2, 255]]], dtype=torch.uint8)
        >>> loss, terms = segmentation_loss(logits, masks)
        >>> round(float(loss), 4), len(terms)                        # ln 3, the ignored pixel left out
        (1.0986, 1)
    """
    outputs = list(outputs) if isinstance(outputs, list | tuple) else [outputs]
    target = masks.long()
    terms = [F.cross_entropy(o.float(), target, ignore_index=ignore_index) for o in outputs]
    return sum(terms), terms


def predict_masks(model: nn.Module, images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor,
                  batch_size: int = 64, device="cpu", autocast_dtype=None, channels_last: bool = True,
                  masks: torch.Tensor | None = None, ignore_index: int = 255):
    """(predicted class maps uint8 (N, H, W), summed cross-entropy over the labelled pixels, labelled pixels) of
    uint8 images (N, C, H, W) through a segmenter, in batches; the loss needs `masks`.

    The model gives logits at the input's size; a map of another size (a convolutionized classifier's coarse
    map) is resized to the image bilinearly before the argmax.
    """
    device = torch.device(device)
    scale = (1 / (255 * std)).to(device).view(1, -1, 1, 1)
    shift = (-mean / std).to(device).view(1, -1, 1, 1)
    was_training = model.training
    model.eval()
    out, loss_sum, pixels = [], 0.0, 0
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            x = images[start:start + batch_size].to(device).float() * scale + shift
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
                logits = model(x)
            if isinstance(logits, list | tuple):
                logits = logits[-1]
            logits = logits.float()
            if logits.shape[-2:] != x.shape[-2:]:
                logits = F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)
            if masks is not None:
                target = masks[start:start + batch_size].to(device).long()
                loss_sum += float(F.cross_entropy(logits, target, ignore_index=ignore_index, reduction="sum"))
                pixels += int((target != ignore_index).sum())
            out.append(logits.argmax(1).to(torch.uint8).cpu())
    model.train(was_training)
    return (torch.cat(out) if out else torch.zeros(0, *images.shape[2:], dtype=torch.uint8)), loss_sum, pixels


class _SegmentationAugmenter(TaskAugmenter):
    """`Augmenter.with_targets` in the engine's form: ``(images, masks) -> (x, masks)``."""

    def __call__(self, images: torch.Tensor, masks: torch.Tensor):
        x, masks, _, _ = self.augmenter.with_targets(images, masks)
        return x, masks


@register_task
class SegmentationTask(Task):
    """A class for every pixel: cross-entropy with 255 ignored, mIoU and pixel accuracy, pictures of masks.

    Attributes:
        classes: the class names (index = the mask's value), from the training data or the resumed checkpoint.
    """

    name = "segment"
    monitor = "test_miou"
    eval_fields = ("test_loss", "test_miou", "test_pixel_accuracy")
    # the recipe of benchmarks/bench_segment.py (about 5 minutes of the built-in scenes on 2 CPU cores)
    defaults = {"model": DEFAULT_SEGMENTER, "epochs": 9, "batch_size": 32, "lr": 3e-3, "weight_decay": 1e-4,
                "ema": 0.0, "augment": {"horizontal_flip": True}, "warmup_epochs": 0.5}

    def __init__(self):
        self.classes: list[str] = []
        self.train_fields: tuple[str, ...] = ()
        self.image_size: tuple[int, int] = (0, 0)
        self.preview = None
        self.data_note = ""

    # --- data ------------------------------------------------------------------------------------------------

    def load_data(self, config, train_data=None, test_data=None, log=print):
        from convkit.tasks.segmentation.data import SegmentationDataset

        _check_model(config)  # before the data is read: a typo costs no time
        train, test, self.data_note = given_or_loaded(config, train_data, test_data, load_segmentation_data,
                                                      SegmentationDataset, "segmentation", log)
        if tuple(test.image_shape[1:]) != tuple(train.image_shape[1:]):
            h, w = train.image_shape[1:]
            log(f"{test.source}: images resized to {h}x{w} like the training images (masks by nearest neighbour)")
            test = test.resized(h, w)
        if test.channels != train.channels:
            raise DataFormatError(f"{test.source}: {test.channels}-channel images, the training images have "
                                  f"{train.channels}")
        train.check()
        test.check()
        return train, test.with_stats(train.mean, train.std)

    def setup(self, train, test, model: nn.Module | None, meta: dict | None) -> None:
        """Class names from the training data; the validation set must use the same ones."""
        if list(test.classes) != list(train.classes):
            raise DataFormatError(f"{test.source}: classes {test.classes} differ from the training data's "
                                  f"{train.classes}")
        self.classes = list(train.classes)
        self.image_size = tuple(int(v) for v in train.image_shape[1:])
        self.preview = test.subset(range(min(PREVIEW, len(test))))

    def model_args(self, train) -> dict:
        return {"num_classes": len(self.classes), "in_channels": int(train.image_shape[0])}

    def describe(self) -> str:
        return f"{len(self.classes)} classes; validation: {self.data_note}"

    def build_model(self, config, args: dict, model: nn.Module | None, input_shape):
        """The segmenter `config.model` names (on `config.backbone` for FCNs and the convolutionized classifier;
        a classifier's name as --model: an FCN-8s on that backbone)."""
        from convkit.models.reference import model_spec
        from convkit.tasks.segmentation.models import SEGMENTERS, build_segmenter

        if model is None:
            kind, backbone = config.model, config.backbone
            if kind not in SEGMENTERS:  # `--task segment resnet18`: an FCN-8s on that backbone
                kind, backbone = "fcn8s", backbone or kind
            model = build_segmenter(kind, backbone, args["num_classes"], args["in_channels"], self.image_size,
                                    config.backbone_kwargs, **config.model_kwargs)
        cfg = getattr(model, "model_cfg", None)
        spec = cfg.spec if cfg is not None else model_spec(model, args["num_classes"], args["in_channels"])
        name = cfg.name if cfg is not None else type(model).__name__
        stacks = int(getattr(model, "stacks", 1) or 1)
        self.train_fields = tuple(f"loss_stack{i + 1}" for i in range(stacks)) if stacks > 1 else ()
        return model, spec, name

    # --- training --------------------------------------------------------------------------------------------

    def augmenter(self, config) -> _SegmentationAugmenter:
        from convkit.data import Augmenter

        return _SegmentationAugmenter(Augmenter(config.augment_config(), seed=config.seed))

    def shard(self, targets, dist):
        from convkit.train import distributed as D

        return D.shard(targets, dist)

    def loss(self, outputs, targets) -> tuple[torch.Tensor, torch.Tensor]:
        loss, terms = segmentation_loss(outputs, targets)
        stats = torch.stack([t.detach() for t in terms]) * len(targets) if self.train_fields else loss.new_zeros(0)
        return loss, stats

    # --- evaluation, inference, pictures ---------------------------------------------------------------------

    def evaluate(self, model: nn.Module, data, mean: torch.Tensor, std: torch.Tensor, **options):
        from convkit.tasks.segmentation.metrics import confusion_matrix, segmentation_metrics

        batch = min(int(options.pop("batch_size", 64)), 64)
        found, loss_sum, pixels = predict_masks(model, data.images, mean, std, batch, masks=data.masks, **options)
        matrix = confusion_matrix(found, data.masks.cpu(), len(self.classes))
        m = segmentation_metrics(matrix, self.classes)
        row = {"test_loss": loss_sum / max(pixels, 1), "test_miou": _finite(m["miou"]),
               "test_pixel_accuracy": _finite(m["pixel_accuracy"])}
        return row, {"metrics": m, "confusion": matrix, "preview": found[:PREVIEW].clone()}

    def meta(self) -> dict:
        return {"classes": self.classes}

    def plots(self, run_dir: Path, history: list[dict], best: dict | None, extra, title: str) -> None:
        from convkit.tasks.segmentation.plots import (
            draw_segmentation_grid,
            plot_iou_bars,
            plot_segmentation_curves,
        )

        plot_segmentation_curves(history, run_dir / "curves.png", title)
        if extra is None or best is None:
            return
        plot_iou_bars(extra["metrics"]["iou"], self.classes, run_dir / "iou.png",
                      f"per-class IoU, validation set, epoch {best['epoch']}")
        if self.preview is not None and extra.get("preview") is not None:
            draw_segmentation_grid(self.preview.images.cpu(), self.preview.masks.cpu(), extra["preview"],
                                   self.classes, run_dir / "val_predictions.png")

    def result_fields(self, extra) -> dict:
        return {"classes": self.classes}


def _finite(value) -> float:
    """An undefined metric (no labelled pixel) as 0 in the per-epoch row, so the best epoch is well defined."""
    return float(value) if value is not None and value == value else 0.0


def _check_model(config) -> None:
    """`config.model` is a segmenter, or (as a backbone for an FCN-8s) a zoo name, file or run; maskrcnn is named
    as the instance task's."""
    from convkit.models._registry import ModelArgumentError
    from convkit.tasks.segmentation.models import SEGMENTERS

    if config.model == "maskrcnn":
        raise ModelArgumentError("model maskrcnn is instance segmentation (one mask per object): its task is "
                                 "'instance' (convkit train --task instance; convkit.train(task=\"instance\"))")
    check_model_names(config, SEGMENTERS, "segmenter")
