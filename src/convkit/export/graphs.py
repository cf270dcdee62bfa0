"""What goes into an exported file, task by task: `export_graph(model, task)` -> an `ExportGraph`.

Every graph reads one input, ``input``: float32 images ``(N, C, H, W)`` normalised as the model was trained,
``(x / 255 - mean) / std`` (the file's metadata holds mean and std), and gives:

* classifier: ``logits`` (N, classes);
* segmenter: ``logits`` (N, classes, H, W) (the last stack's for an hourglass); a convolutionized classifier's
  height and width are free too, and its map is coarser (resized to the image by the reader);
* YOLO v1: its whole post-processing in the graph, for any batch: every (box, class) pair scoring above
  `GRAPH_SCORE_THRESHOLD`, clipped, small boxes dropped, then NMS class by class and image by image (one
  ``batched_nms`` over keys ``image * C + class``), as rows ``detections`` (K, 7): image index, x1, y1, x2, y2,
  score, label, best first. The reader keeps each image's first 100 and those above its own threshold: the same
  boxes as PyTorch's, since NMS only ever removes a box for a better-scoring one;
* the localiser: ``boxes`` (N, 4), ``scores`` (N,), ``labels`` (N,), one box per image;
* torchvision's detectors (Faster R-CNN, RetinaNet, Mask R-CNN): their own post-processing (per-class NMS, box
  decoding, mask pasting) for ONE image, ``boxes``, ``labels`` (1-based, torchvision's), ``scores`` (and
  ``masks`` (K, 1, H, W) probabilities): their transform loops over the images in Python, which a trace unrolls,
  so the batch is fixed at 1 and the reader feeds images one by one.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

__all__ = ["GRAPH_SCORE_THRESHOLD", "BinMeans", "ExportGraph", "binned_pools", "export_graph", "model_name"]

GRAPH_SCORE_THRESHOLD = 0.01  # the least score a YOLO graph keeps: evaluation's (detector.EVAL_SCORE_THRESHOLD)
YOLO_IOU, YOLO_MAX_DETECTIONS, YOLO_MIN_SIZE = 0.5, 100, 1.0  # `convkit.tasks.detection.yolo.decode`'s defaults


def model_name(cfg) -> str:
    """What a trained model is called in files and answers: a segmenter's or detector's kind ("fcn8s", "yolo"),
    else its zoo or model-file name (a checkpoint's own name is its file's, "best")."""
    spec = cfg.meta.get("model") or cfg.spec or {}
    if isinstance(spec, str):
        import json

        spec = json.loads(spec)
    return str(spec.get("segmenter") or spec.get("detector") or cfg.name)


@dataclass
class ExportGraph:
    """A module to export and how its file is read.

    Attributes:
        module: the ``nn.Module`` traced or exported (eval mode).
        outputs: the names of its outputs, in order.
        batch: "dynamic" or a fixed batch size.
        dynamic_size: whether height and width are free too (a convolutionized classifier).
        example: an example input (float32, normalised-range noise) of a legal shape.
    """

    module: nn.Module
    outputs: list[str]
    batch: str | int = "dynamic"
    dynamic_size: bool = False
    example: torch.Tensor = field(default_factory=lambda: torch.zeros(0))


class BinMeans(nn.Module):
    """``nn.AdaptiveAvgPool2d`` written as the mean of each bin (rows ``floor(i * H / h)`` to ``ceil((i + 1) * H /
    h)``, as PyTorch bins), for an input size fixed when traced: the legacy ONNX exporter refuses adaptive pooling
    to a size that does not divide the input (YOLO's S x S grid, VGG's 7 x 7 at small inputs).

    >>> x = torch.randn(1, 2, 5, 7)
    >>> torch.allclose(BinMeans(3)(x), nn.AdaptiveAvgPool2d(3)(x), atol=1e-6)
    True
    """

    def __init__(self, output_size):
        super().__init__()
        size = output_size if isinstance(output_size, tuple | list) else (output_size, output_size)
        self.output_size = tuple(size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = int(x.shape[-2]), int(x.shape[-1])
        h, w = (v if v is not None else d for v, d in zip(self.output_size, (height, width)))
        rows = [(i * height // h, -(-(i + 1) * height // h)) for i in range(h)]
        cols = [(j * width // w, -(-(j + 1) * width // w)) for j in range(w)]
        return torch.stack([torch.stack([x[..., r0:r1, c0:c1].mean(dim=(-2, -1)) for c0, c1 in cols], dim=-1)
                            for r0, r1 in rows], dim=-2)


class binned_pools:  # noqa: N801  (a context manager used as a function)
    """Within the block, every ``nn.AdaptiveAvgPool2d`` of `module` whose output is not 1 x 1 is a `BinMeans`."""

    def __init__(self, module: nn.Module):
        self.module, self.swapped = module, []

    def __enter__(self):
        for parent in self.module.modules():
            for name, child in list(parent.named_children()):
                if isinstance(child, nn.AdaptiveAvgPool2d) and child.output_size not in (1, (1, 1)):
                    self.swapped.append((parent, name, child))
                    setattr(parent, name, BinMeans(child.output_size))
        return self.module

    def __exit__(self, *exc):
        for parent, name, child in self.swapped:
            setattr(parent, name, child)
        return False


class _Logits(nn.Module):
    """A segmenter's last output (a stacked hourglass gives one per stack)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(x)
        return (out[-1] if isinstance(out, list | tuple) else out).float()


class _YoloGraph(nn.Module):
    def __init__(self, detector: nn.Module):
        super().__init__()
        self.net, self.size = detector.net, detector.image_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from torchvision.ops import batched_nms, box_iou  # noqa: F401  (box_iou: keeps torchvision's ops loaded)

        from convkit.tasks.detection.yolo import _cells_to_image, _split

        net = self.net
        pred = net(x).float()
        c = net.C
        h, w = x.shape[-2], x.shape[-1]  # fixed (the training size); the batch is free: no size below uses it
        xywh, conf, probs = _split(pred, net.B)
        scale = torch.stack([torch.tensor(w), torch.tensor(h), torch.tensor(w), torch.tensor(h)]).to(pred)
        boxes = (_cells_to_image(xywh) * scale).flatten(1, 3)  # (N, S*S*B, 4) pixels
        scores = (conf.unsqueeze(-1) * probs.unsqueeze(-2)).flatten(1)  # (N, S*S*B*C)
        keep = torch.nonzero(scores > GRAPH_SCORE_THRESHOLD)
        image, flat = keep[:, 0], keep[:, 1]
        label = flat % c
        kept = boxes[image, flat // c]
        kept = torch.stack([kept[:, 0].clamp(0, w), kept[:, 1].clamp(0, h), kept[:, 2].clamp(0, w),
                            kept[:, 3].clamp(0, h)], dim=1)
        score = scores[image, flat]
        large = ((kept[:, 2] - kept[:, 0]) >= YOLO_MIN_SIZE) & ((kept[:, 3] - kept[:, 1]) >= YOLO_MIN_SIZE)
        kept, score, label, image = kept[large], score[large], label[large], image[large]
        order = batched_nms(kept, score, image * c + label, YOLO_IOU)
        return torch.cat([image[order, None].float(), kept[order], score[order, None], label[order, None].float()], 1)


class _LocalizerGraph(nn.Module):
    def __init__(self, detector: nn.Module):
        super().__init__()
        self.net = detector.net

    def forward(self, x: torch.Tensor):
        from torchvision.ops import box_convert

        out = self.net(x)
        h, w = x.shape[-2], x.shape[-1]
        scale = torch.stack([torch.tensor(w), torch.tensor(h), torch.tensor(w), torch.tensor(h)]).to(out["boxes"])
        xyxy = box_convert(out["boxes"].float() * scale, "cxcywh", "xyxy")
        xyxy = torch.stack([xyxy[:, 0].clamp(0, w), xyxy[:, 1].clamp(0, h), xyxy[:, 2].clamp(0, w),
                            xyxy[:, 3].clamp(0, h)], dim=1)
        scores, labels = out["logits"].float().softmax(dim=1).max(dim=1)
        return xyxy, scores, labels


class _TorchvisionGraph(nn.Module):
    def __init__(self, detector: nn.Module):
        super().__init__()
        self.net, self.masks = detector.net, detector.kind == "maskrcnn"

    def forward(self, x: torch.Tensor):
        out = self.net([x[0]])[0]
        parts = (out["boxes"], out["labels"], out["scores"])
        return (*parts, out["masks"]) if self.masks else parts


def export_graph(model: nn.Module, task: str, input_shape: tuple[int, int, int]) -> ExportGraph:
    """The graph to export for a trained model of `task` ("classification", "segment", "detect", "instance").

    Args:
        model: the trained model (a classifier, a segmenter, or a `convkit.tasks.detection.Detector`).
        task: the checkpoint's task.
        input_shape: (C, H, W) it was trained at.

    Returns:
        An `ExportGraph` (see the module docstring for each task's outputs).

    >>> g = export_graph(convkit.create_model("lenet5", num_classes=3).eval(), "classification", (1, 32, 32))
    >>> g.outputs, g.batch, tuple(g.module(g.example).shape)
    (['logits'], 'dynamic', (2, 3))
    """
    c, h, w = input_shape
    example = torch.randn(2, c, h, w, generator=torch.Generator().manual_seed(0))
    model = model.eval()
    if task in ("detect", "instance"):
        kind = getattr(model, "kind", None)
        if kind == "yolo":
            return ExportGraph(_YoloGraph(model).eval(), ["detections"], example=example)
        if kind == "localizer":
            return ExportGraph(_LocalizerGraph(model).eval(), ["boxes", "scores", "labels"], example=example)
        names = ["boxes", "labels", "scores"] + (["masks"] if kind == "maskrcnn" else [])
        return ExportGraph(_TorchvisionGraph(model).eval(), names, batch=1, example=example[:1])
    if task == "segment":
        spec = getattr(getattr(model, "model_cfg", None), "spec", None) or {}
        free = spec.get("segmenter") == "convolutionized" or type(model).__name__ == "Convolutionized"
        return ExportGraph(_Logits(model).eval(), ["logits"], dynamic_size=free, example=example)
    return ExportGraph(model, ["logits"], example=example)
