"""Classification as a task of the training engine: what it supplies to `convkit.train.Trainer`.

This is the whole of what is particular to classification; the loop itself lives in the engine.

=================  ================================================================================
data               image datasets with one class per sample (`convkit.data`); labels are checked
                   against the classes before any training
augmentation       `convkit.data.Augmenter` (crops, flips, affine, erasing, mixup/cutmix)
loss               cross-entropy with label smoothing (mixed for mixup/cutmix)
train metrics      train_acc (the fraction of the batch's argmax equal to the label)
evaluation         test_loss, test_acc (top-1, picks the best checkpoint), test_top5; the confusion matrix
checkpoint         the class names and whether evaluation averages mirrored images (tta)
pictures           curves.png, confusion.png
evaluate, predict  `evaluate` (per-class precision and recall, worst examples), `predict` (top-k classes)
=================  ================================================================================

>>> from convkit.train.task import get_task
>>> task = get_task("classification")
>>> task.monitor, task.train_fields, task.eval_fields
('test_acc', ('train_acc',), ('test_loss', 'test_acc', 'test_top5'))
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from convkit.data import Augmenter, check_labels, mixed_cross_entropy
from convkit.tasks.classification.metrics import classification_metrics, evaluate, predict_dataset
from convkit.tasks.classification.predict import predict
from convkit.train.task import Task, TaskAugmenter, register_task

__all__ = ["ClassificationTask"]


class _ClassAugmenter(TaskAugmenter):
    """`Augmenter` in the engine's form: ``(images, labels) -> (x, (labels_a, labels_b, lam))``."""

    def __call__(self, images: torch.Tensor, labels: torch.Tensor):
        x, ya, yb, lam = self.augmenter(images, labels)
        return x, (ya, yb, lam)


@register_task
class ClassificationTask(Task):
    """One class per image: cross-entropy, accuracy, the confusion matrix.

    Attributes:
        classes: the class names, from the training data (or the resumed checkpoint).
        tta: whether evaluation averages each image with its mirror image (config.tta, else when training
            flips images horizontally).
    """

    name = "classification"
    monitor = "test_acc"
    train_fields = ("train_acc",)
    eval_fields = ("test_loss", "test_acc", "test_top5")

    def __init__(self):
        self.classes: list[str] = []
        self.num_classes = 0
        self.mixing = False
        self.label_smoothing = 0.0
        self.tta = False

    # --- data ------------------------------------------------------------------------------------------------

    def setup(self, train, test, model: nn.Module | None, meta: dict | None) -> None:
        """Class names from the data; a given model must predict at least that many; labels in range."""
        classes = list(train.classes)
        num_classes = int(getattr(model, "num_classes", None) or len(classes))
        if num_classes < len(classes):
            raise ValueError(f"the model predicts {num_classes} classes, the data has {len(classes)}")
        check_labels(train.labels.cpu(), num_classes, train.sample_sources or train.source)
        check_labels(test.labels.cpu(), num_classes, test.sample_sources or test.source)
        self.classes, self.num_classes = classes, num_classes

    def model_args(self, train) -> dict:
        return {"num_classes": self.num_classes, "in_channels": int(train.image_shape[0])}

    def describe(self) -> str:
        return f"{len(self.classes)} classes"

    # --- training --------------------------------------------------------------------------------------------

    def augmenter(self, config) -> _ClassAugmenter:
        augment = config.augment_config()
        self.mixing = augment.mixup > 0 or augment.cutmix > 0
        self.label_smoothing = config.label_smoothing
        self.tta = bool(augment.horizontal_flip if config.tta is None else config.tta)
        return _ClassAugmenter(Augmenter(augment, seed=config.seed))

    def loss(self, outputs: torch.Tensor, targets) -> tuple[torch.Tensor, torch.Tensor]:
        """Cross-entropy (mixed for mixup/cutmix) and the batch's correct predictions (against labels_a)."""
        ya, yb, lam = targets
        logits = outputs.float()
        if self.mixing:
            loss = mixed_cross_entropy(logits, ya, yb, lam, self.label_smoothing)
        else:
            loss = F.cross_entropy(logits, ya, label_smoothing=self.label_smoothing)
        correct = (logits.argmax(1) == ya).sum()
        return loss, correct.view(1)

    # --- evaluation, inference, pictures ---------------------------------------------------------------------

    def evaluate(self, model: nn.Module, data, mean: torch.Tensor, std: torch.Tensor, **options):
        logits = predict_dataset(model, data, mean, std, tta=self.tta, **options)
        m = classification_metrics(logits, data.labels, len(self.classes))
        row = {"test_loss": m["loss"], "test_acc": m["top1"], "test_top5": m["top5"]}
        return row, m["confusion"].tolist()

    def meta(self) -> dict:
        return {"classes": self.classes, "tta": bool(self.tta)}

    def plots(self, run_dir: Path, history: list[dict], best: dict | None, extra, title: str) -> None:
        from convkit.train.runfolder import plot_confusion, plot_curves

        plot_curves(history, run_dir / "curves.png", title)
        if extra is not None and best is not None:
            plot_confusion(np.asarray(extra), self.classes, run_dir / "confusion.png",
                           f"confusion matrix, test set, epoch {best['epoch']}")

    def result_fields(self, extra) -> dict:
        return {"classes": self.classes, "confusion": extra}

    def evaluate_model(self, model: nn.Module, data, **options):
        return evaluate(model, data, **options)

    def predict(self, model: nn.Module, inputs, **options):
        return predict(model, inputs, **options)
