"""Evaluation: top-1/top-5 accuracy, per-class precision and recall, the confusion matrix, the worst examples.

`classification_metrics` is plain arithmetic on logits and labels (testable by hand); `predict_logits`
runs a model over uint8 images in large no-grad batches (`predict_dataset` over a dataset in memory or
streamed from files); `evaluate` ties them to a checkpoint and a dataset.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from convkit.utils import fit_images  # noqa: F401  (re-exported: evaluation fits images to the model)


@torch.no_grad()
def predict_logits(model: nn.Module, images: torch.Tensor | Iterable[torch.Tensor], mean: torch.Tensor,
                   std: torch.Tensor,
                   batch_size: int = 1000, device: str | torch.device | None = None,
                   autocast_dtype: torch.dtype | None = None, channels_last: bool = False,
                   tta: bool = False) -> torch.Tensor:
    """Runs a model over uint8 images (N, C, H, W), normalised by mean/std (on the 0..1 scale), in eval mode.

    Args:
        model: the classifier (left in eval mode).
        images: uint8 (or float 0..255) images, on any device; or an iterable of such batches (run as they
            come, e.g. a streamed dataset's).
        mean, std: per-channel normalisation on the 0..1 scale.
        batch_size: images per forward pass.
        device: where to run (None: the model's device).
        autocast_dtype: torch.bfloat16 / torch.float16 to run under autocast, None for fp32.
        channels_last: feed NHWC tensors (as the model was trained).
        tta: average the logits of each image and its left-right mirror image.

    Returns:
        float32 logits (N, num_classes) on the CPU.

    Example:
        >>> from convkit.models import create_model
        >>> model = create_model("fastcnn")              # untrained: 10 classes, 1x28x28 inputs
        >>> images = torch.zeros(4, 1, 28, 28, dtype=torch.uint8)
        >>> logits = predict_logits(model, images, mean=torch.tensor([0.5]), std=torch.tensor([0.5]))
        >>> logits.shape, logits.dtype
        (torch.Size([4, 10]), torch.float32)
    """
    model.eval()
    device = torch.device(device) if device is not None else next(model.parameters()).device
    scale = (1 / (255 * std.float())).to(device).view(1, -1, 1, 1)
    shift = (-mean.float() / std.float()).to(device).view(1, -1, 1, 1)
    out = []
    for chunk in images.split(batch_size) if isinstance(images, torch.Tensor) else images:
        x = chunk.to(device, non_blocking=True).float() * scale + shift
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
            logits = model(x).float()
            if tta:
                logits = (logits + model(x.flip(-1)).float()) / 2
        out.append(logits)
    return torch.cat(out).cpu() if out else torch.zeros(0)


def predict_dataset(model: nn.Module, dataset, mean: torch.Tensor, std: torch.Tensor, batch_size: int = 1000,
                    device: str | torch.device | None = None, fit: Callable | None = None,
                    **options) -> torch.Tensor:
    """`predict_logits` over a whole dataset in its stored order: its tensor if in memory, else its batches.

    Args:
        model, mean, std, batch_size, device: as `predict_logits`.
        dataset: an `ImageTensorDataset`, or an `ImageFileDataset` (decoded batch by batch, never all at once).
        fit: applied to each uint8 batch first (e.g. `fit_images` to the model's input shape).
        **options: autocast_dtype, channels_last, tta (see `predict_logits`).

    Returns:
        float32 logits (N, num_classes) on the CPU, row i for sample i.

    Raises:
        DataFormatError: a streamed file cannot be decoded (named).

    Example:
        >>> from convkit.data import load_dataset
        >>> from convkit.models import create_model
        >>> model = create_model("fastcnn")
        >>> test = load_dataset("default", "test").subset(range(100))    # in memory
        >>> predict_dataset(model, test, test.mean, test.std).shape
        torch.Size([100, 10])
        >>> photos = load_dataset(image_folder("photos"), memory_budget=0)   # 6 RGB 24x32 PNGs, streamed
        >>> logits = predict_dataset(model, photos, torch.tensor([0.5]), torch.tensor([0.5]),
        ...                          fit=lambda images: fit_images(images, (1, 28, 28)))
        >>> logits.shape
        torch.Size([6, 10])
    """
    fit = fit or (lambda images: images)
    if hasattr(dataset, "images"):
        images = fit(dataset.images)
    else:
        images = (fit(x) for x, _ in dataset.batches(batch_size, shuffle=False))
    return predict_logits(model, images, mean, std, batch_size, device, **options)


def confusion_matrix(predicted: torch.Tensor, labels: torch.Tensor, num_classes: int) -> np.ndarray:
    """Counts (num_classes, num_classes): row = true class, column = predicted class."""
    index = labels.long().cpu() * num_classes + predicted.long().cpu()
    return torch.bincount(index, minlength=num_classes * num_classes).view(num_classes, num_classes).numpy()


def classification_metrics(logits: torch.Tensor, labels: torch.Tensor, num_classes: int | None = None) -> dict:
    """Loss, top-1 and top-5 accuracy, per-class precision/recall and the confusion matrix.

    Precision of class c = correct predictions of c / all predictions of c; recall = correct predictions
    of c / all samples of c. A class never predicted (or never present) gets precision (recall) 0.

    Args:
        logits: (N, K) scores.
        labels: (N,) true classes.
        num_classes: K (default: logits.shape[1]).

    Returns:
        {"loss", "top1", "top5", "precision": [K], "recall": [K], "support": [K], "confusion": (K, K) array,
        "count"}; top5 is top-min(5, K).

    Example:
        >>> m = classification_metrics(torch.tensor([[2., 1, 0], [0, 1, 2]]), torch.tensor([0, 1]))
        >>> m["top1"], m["top5"], round(m["loss"], 4)    # top5 is top-3 here: 3 classes
        (0.5, 1.0, 0.9076)
        >>> m["precision"], m["recall"], m["support"]   # class 2 is predicted once, wrongly
        ([1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [1, 1, 0])
        >>> m["confusion"]                              # row = true class, column = predicted
        array([[1, 0, 0],
               [0, 0, 1],
               [0, 0, 0]])
    """
    logits, labels = logits.float().cpu(), labels.long().cpu()
    k = num_classes or logits.shape[1]
    n = len(labels)
    if n == 0:
        return {"loss": float("nan"), "top1": float("nan"), "top5": float("nan"), "precision": [0.0] * k,
                "recall": [0.0] * k, "support": [0] * k, "confusion": np.zeros((k, k), np.int64), "count": 0}
    predicted = logits.argmax(1)
    top = logits.topk(min(5, logits.shape[1]), dim=1).indices
    confusion = confusion_matrix(predicted, labels, k)
    correct = np.diag(confusion).astype(np.float64)
    predicted_count, support = confusion.sum(0), confusion.sum(1)
    return {
        "loss": float(F.cross_entropy(logits, labels)),
        "top1": float((predicted == labels).float().mean()),
        "top5": float((top == labels[:, None]).any(1).float().mean()),
        "precision": np.divide(correct, predicted_count, out=np.zeros(k), where=predicted_count > 0).tolist(),
        "recall": np.divide(correct, support, out=np.zeros(k), where=support > 0).tolist(),
        "support": support.tolist(),
        "confusion": confusion,
        "count": n,
    }


def worst_examples(logits: torch.Tensor, labels: torch.Tensor, count: int = 16) -> list[int]:
    """Indices of the `count` misclassified samples given the lowest probability of their true class."""
    probs = logits.float().softmax(1)
    true_prob = probs.gather(1, labels.long().view(-1, 1)).squeeze(1)
    wrong = (probs.argmax(1) != labels).nonzero().flatten()
    order = true_prob[wrong].argsort()
    return wrong[order[:count]].tolist()


@dataclass
class EvalResult:
    """What `evaluate` measured. `to_dict()` is the JSON of `convkit evaluate --json`.

    Attributes:
        top1, top5, loss: over the whole set.
        precision, recall, support: per class.
        confusion: (K, K) counts, row = true class.
        classes: class names.
        worst: the worst-classified examples: {"index", "source", "true", "predicted", "probability"}.
        files: images written (confusion matrix, worst examples).
    """

    top1: float
    top5: float
    loss: float
    precision: list[float]
    recall: list[float]
    support: list[int]
    confusion: np.ndarray
    classes: list[str]
    count: int
    worst: list[dict] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "count": self.count, "top1": self.top1, "top5": self.top5, "loss": self.loss,
            "per_class": [{"class": c, "precision": p, "recall": r, "support": s}
                          for c, p, r, s in zip(self.classes, self.precision, self.recall, self.support)],
            "confusion": np.asarray(self.confusion).tolist(), "classes": self.classes, "worst": self.worst,
            "files": self.files,
        }

    def __str__(self) -> str:
        width = max(8, *(len(c) for c in self.classes))
        lines = [f"{self.count} images: top-1 {100 * self.top1:.2f}%  top-5 {100 * self.top5:.2f}%  "
                 f"loss {self.loss:.4f}", "", f"{'class':<{width}}  precision  recall  support"]
        for c, p, r, s in zip(self.classes, self.precision, self.recall, self.support):
            lines.append(f"{c:<{width}}  {100 * p:8.1f}%  {100 * r:5.1f}%  {s:7d}")
        return "\n".join(lines)


def evaluate(checkpoint, dataset, batch_size: int = 1000, device: str | torch.device = "cpu", worst: int = 16,
             out_dir: str | os.PathLike | None = None) -> EvalResult:
    """Evaluates a checkpoint on a dataset; optionally draws the confusion matrix and the worst examples.

    Args:
        checkpoint: a trained model: a run folder, a .safetensors checkpoint, a `Checkpoint`, or a module that
            carries its `ModelCfg` with class names (see `convkit.models.resolve_model`).
        dataset: an `ImageTensorDataset` (e.g. `load_dataset("fashion-mnist", "test")`), or an
            `ImageFileDataset` (streamed; only the worst examples' files are decoded again for the picture).
        batch_size: images per forward pass.
        device: where to run.
        worst: how many worst-classified examples to report and draw.
        out_dir: where to write `eval_confusion.png` and `eval_worst.png` (None: nothing is written).

    Returns:
        An `EvalResult`.

    Raises:
        LabelError: a class not among the model's (labels are matched by class name, see
            `convkit.data.match_classes`), or a label outside its range (naming the file).

    Example:
        >>> from convkit.data import load_dataset
        >>> result = evaluate(tiny_run, load_dataset("default", "test").subset(range(64)), out_dir="eval")
        >>> print(result)          # tiny_run: convkit.train(epochs=1, limit=128).run_dir; the scores vary
        64 images: top-1 ...%  top-5 ...%  loss ...
        <BLANKLINE>
        class        precision  recall  support
        T-shirt/top  ...  10
        Trouser      ...   5
        ...
        Ankle boot   ...   7
        >>> 0 <= result.top1 <= result.top5 <= 1, result.count
        (True, 64)
        >>> sorted(result.files)   # eval/eval_confusion.png and eval/eval_worst.png
        ['confusion', 'worst']
    """
    from convkit.data import match_classes
    from convkit.train.runfolder import plot_confusion, plot_image_grid

    model = trained_model(checkpoint, device)
    cfg = model.model_cfg
    classes = cfg.classes
    dataset = match_classes(dataset, classes)  # labels by class name: the data may hold a subset of the classes
    mean, std = cfg.mean_std()
    logits = predict_dataset(model, dataset, mean, std, batch_size, device,
                             fit=lambda images: fit_images(images, cfg.input_shape), tta=cfg.tta)
    m = classification_metrics(logits, dataset.labels, len(classes))
    probs = logits.softmax(1)
    sources = getattr(dataset, "sample_sources", None)
    worst_rows = []
    for i in worst_examples(logits, dataset.labels, worst):
        y, p = int(dataset.labels[i]), int(probs[i].argmax())
        worst_rows.append({"index": i, "source": sources[i] if sources else None, "true": classes[y],
                           "predicted": classes[p], "probability": float(probs[i, p]),
                           "true_probability": float(probs[i, y])})
    result = EvalResult(m["top1"], m["top5"], m["loss"], m["precision"], m["recall"], m["support"], m["confusion"],
                        classes, m["count"], worst_rows)
    if out_dir is not None:
        out = Path(out_dir)
        result.files["confusion"] = str(plot_confusion(m["confusion"], classes, out / "eval_confusion.png",
                                                       f"confusion matrix ({m['count']} images)"))
        if worst_rows:
            # Item by item: a streamed set decodes just these files.
            picked = torch.stack([dataset[r["index"]][0] for r in worst_rows]).cpu().numpy()
            captions = [f"{r['true']}\n-> {r['predicted']} {r['probability']:.2f}" for r in worst_rows]
            result.files["worst"] = str(plot_image_grid(picked, captions, out / "eval_worst.png",
                                                        "worst-classified (true -> predicted, probability)"))
    return result


def trained_model(ref, device: str | torch.device = "cpu") -> nn.Module:
    """A trained classifier from any model reference, on `device`, in eval mode, carrying its `ModelCfg`.

    Raises:
        ValueError: a model without class names (not trained by convkit): nothing says what its outputs mean.
    """
    from convkit.models.reference import Checkpoint, resolve_model

    model = ref.model if isinstance(ref, Checkpoint) else resolve_model(ref, device=device)
    cfg = model.model_cfg
    if not cfg.classes or cfg.input_shape is None:
        raise ValueError(f"{cfg.name}: not a trained classifier (no class names or input shape); evaluate and "
                         "predict take a run folder or a .safetensors checkpoint written by `convkit train`")
    return model.to(device).eval()
