"""Semantic segmentation metrics from one confusion matrix accumulated over a dataset: IoU per class and its mean
(mIoU), pixel accuracy, per-class and mean accuracy, frequency-weighted IoU.

The matrix counts pixels: row = true class, column = predicted class. Pixels whose truth is the ignore index
(255) are not counted. Everything else is derived from it, so a dataset's metrics are exact whatever the batch
size, and matrices of several processes add up (``torch.distributed.all_reduce`` of `ConfusionMeter.matrix`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

__all__ = ["ConfusionMeter", "confusion_matrix", "segmentation_metrics"]

IGNORE_INDEX = 255  # the same as convkit.tasks.segmentation.data.IGNORE_INDEX


def confusion_matrix(pred, target, num_classes: int, ignore_index: int | None = IGNORE_INDEX) -> torch.Tensor:
    """The pixel confusion matrix of predicted against true class ids, one `torch.bincount`.

    Args:
        pred: predicted class ids, any shape (e.g. (N, H, W): ``logits.argmax(1)``), integer tensor or array.
        target: true class ids, the same shape; pixels equal to `ignore_index` are skipped.
        num_classes: K.
        ignore_index: the truth value of pixels not counted (None: count every pixel).

    Returns:
        int64 (K, K) on pred's device: ``matrix[t, p]`` = pixels of true class t predicted as p.

    Raises:
        ValueError: shapes that differ, a float tensor, a prediction outside 0..K-1, or a (not ignored) truth
            outside 0..K-1.

    Example:
        >>> confusion_matrix(torch.tensor([0, 1, 1, 0]), torch.tensor([0, 1, 0, 255]), num_classes=2)
        tensor([[1, 1],
                [0, 1]])
    """
    pred, target = torch.as_tensor(pred), torch.as_tensor(target)
    if pred.shape != target.shape:
        raise ValueError(f"confusion_matrix: prediction of shape {tuple(pred.shape)} but target of shape "
                         f"{tuple(target.shape)}")
    if pred.is_floating_point() or target.is_floating_point():
        raise ValueError(f"confusion_matrix: expected integer class ids, got {pred.dtype} and {target.dtype} "
                         "(take logits.argmax(1) first)")
    if num_classes < 1:
        raise ValueError(f"confusion_matrix: num_classes must be at least 1, got {num_classes}")
    pred = pred.reshape(-1).long()
    target = target.reshape(-1).long().to(pred.device)
    if ignore_index is not None:
        keep = target != ignore_index
        pred, target = pred[keep], target[keep]
    for name, ids in (("prediction", pred), ("target", target)):
        bad = (ids < 0) | (ids >= num_classes)
        if bool(bad.any()):
            raise ValueError(f"confusion_matrix: {name} holds class id {int(ids[bad][0])}, outside 0..{num_classes - 1}"
                             + (f" (and {ignore_index}, ignore)" if name == "target" and ignore_index is not None
                                else ""))
    return torch.bincount(target * num_classes + pred, minlength=num_classes ** 2).reshape(num_classes, num_classes)


class ConfusionMeter:
    """Accumulates a confusion matrix over batches (see `confusion_matrix`), on the batches' device.

    Args:
        num_classes: K.
        ignore_index: the truth value of pixels not counted.

    Example:
        >>> meter = ConfusionMeter(3)
        >>> meter.update(torch.tensor([[0, 1], [2, 2]]), torch.tensor([[0, 1], [1, 255]]))
        >>> meter.update(torch.tensor([2]), torch.tensor([2]))
        >>> meter.matrix
        tensor([[1, 0, 0],
                [0, 1, 1],
                [0, 0, 1]])
        >>> round(meter.compute()["miou"], 4)       # (1 + 1/2 + 1/2) / 3
        0.6667
    """

    def __init__(self, num_classes: int, ignore_index: int | None = IGNORE_INDEX):
        self.num_classes, self.ignore_index = num_classes, ignore_index
        self._matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64)

    def update(self, pred, target) -> None:
        """Adds a batch: predicted ids and true ids of the same shape (e.g. (N, H, W))."""
        counts = confusion_matrix(pred, target, self.num_classes, self.ignore_index)
        if self._matrix.device != counts.device:
            self._matrix = self._matrix.to(counts.device)
        self._matrix += counts

    @property
    def matrix(self) -> torch.Tensor:
        """The accumulated int64 (K, K) matrix, on the CPU (rows = truth, columns = prediction)."""
        return self._matrix.cpu()

    def reset(self) -> None:
        """Back to an empty matrix."""
        self._matrix = torch.zeros_like(self._matrix)

    def compute(self, classes: Sequence[str] | None = None) -> dict:
        """`segmentation_metrics` of the accumulated matrix."""
        return segmentation_metrics(self.matrix, classes)


def _ratio(a: float, b: float) -> float | None:
    return a / b if b > 0 else None


def _mean(values: Sequence[float | None]) -> float:
    defined = [v for v in values if v is not None]
    return sum(defined) / len(defined) if defined else math.nan


def segmentation_metrics(matrix, classes: Sequence[str] | None = None) -> dict:
    """The metrics of a pixel confusion matrix (rows = truth, columns = prediction).

    With TP_k the diagonal, T_k the row sums (true pixels of class k) and P_k the column sums (pixels predicted k):

    * ``iou``: per class, TP_k / (T_k + P_k - TP_k). **A class absent from both the target and the prediction**
      (T_k = P_k = 0) has IoU 0/0: it is undefined, given as None and **left out of the mean**, as torchmetrics
      and mmsegmentation do (a dataset without any cat does not score cats). A class absent from the target but
      predicted somewhere has IoU 0 and counts in the mean (it is a false alarm);
    * ``miou``: the mean of the defined IoUs (NaN when none is defined: every pixel ignored);
    * ``accuracy``: per class, TP_k / T_k (recall), None when the class has no true pixel;
    * ``mean_accuracy``: the mean of the defined accuracies (NaN when none);
    * ``pixel_accuracy``: sum TP / all counted pixels (NaN when there is none);
    * ``frequency_weighted_iou``: sum over classes with true pixels of T_k / sum T times IoU_k (NaN when none);
    * ``present``: per class, whether it has true pixels (T_k > 0);
    * ``pixels``: the pixels counted; ``classes``: the names, when given.

    Scalars are floats (NaN when undefined); per-class lists hold floats or None.

    Args:
        matrix: (K, K) pixel counts (a tensor, array or nested list).
        classes: the K class names, copied into the result.

    Returns:
        A dict with the keys above.

    Example:
        >>> m = segmentation_metrics([[3, 1, 0], [0, 2, 0], [0, 0, 0]], ["background", "cat", "dog"])
        >>> m["iou"], m["miou"], m["pixel_accuracy"]      # no dog in the truth nor the prediction
        ([0.75, 0.6666666666666666, None], 0.7083333333333333, 0.8333333333333334)
        >>> m["accuracy"], m["present"]
        ([0.75, 1.0, None], [True, True, False])
    """
    m = torch.as_tensor(matrix, dtype=torch.float64).cpu()
    if m.dim() != 2 or m.shape[0] != m.shape[1]:
        raise ValueError(f"segmentation_metrics: expected a square (K, K) matrix, got shape {tuple(m.shape)}")
    if classes is not None and len(classes) != m.shape[0]:
        raise ValueError(f"segmentation_metrics: {len(classes)} class names for a {m.shape[0]}x{m.shape[0]} matrix")
    tp, truth, predicted = m.diag().tolist(), m.sum(1).tolist(), m.sum(0).tolist()
    total = sum(truth)
    iou = [_ratio(t, a + b - t) for t, a, b in zip(tp, truth, predicted)]
    accuracy = [_ratio(t, a) for t, a in zip(tp, truth)]
    weighted = sum(a / total * v for a, v in zip(truth, iou) if a > 0) if total > 0 else math.nan
    result = {"miou": _mean(iou), "pixel_accuracy": sum(tp) / total if total > 0 else math.nan,
              "mean_accuracy": _mean(accuracy), "frequency_weighted_iou": weighted, "iou": iou,
              "accuracy": accuracy, "present": [a > 0 for a in truth], "pixels": int(total)}
    if classes is not None:
        result["classes"] = list(classes)
    return result
