"""Every detector behind one interface, as the training engine and `convkit evaluate`/`predict` use them.

`build_detector(kind, backbone, num_classes, ...)` builds one of `DETECTORS` on a convkit backbone and wraps it in
a `Detector`, an ``nn.Module`` with one calling convention whatever is inside:

* ``detector(images, targets)`` (training mode): the loss terms, a dict of scalars whose sum is the loss
  (YOLO v1: xy, wh, obj, noobj, class; Faster R-CNN: the RPN's objectness and box terms and the head's class
  and box terms; Mask R-CNN: those and the mask term (targets carry "masks" uint8 (M, H, W)); RetinaNet: the focal classification loss and the box regression; the localiser: class and
  box);
* ``detector(images)`` (eval mode): one dict per image in convkit's form, ``{"boxes": (K, 4) xyxy pixels,
  "labels": (K,) 0-based, "scores": (K,)}``, on the CPU, what `convkit.tasks.detection.metrics` takes; Mask
  R-CNN adds ``"masks"``: uint8 (K, H, W) binary instance masks (probabilities cut at `MASK_THRESHOLD`).

Images come in normalised as the training engine normalises them, ``(x / 255 - mean) / std`` with the training
set's statistics (`Detector.model_cfg` records them): torchvision's detectors are built with an identity
normalisation (mean 0, std 1) and a resize that keeps the training size, so their ``GeneralizedRCNNTransform``
only batches. Targets are convkit's (`convkit.tasks.detection.data`): 0-based labels, xyxy pixel boxes.

A detector carries a spec (``{"kind": "detector", "detector": "yolo", "backbone": {...}, ...}``) from which
`convkit.models.reference.build_from_spec` rebuilds it for a checkpoint, as for any zoo model.

Example:
    >>> det = build_detector("yolo", "fastcnn", num_classes=3, in_channels=1, image_size=(96, 96))
    >>> det.loss_terms
    ('xy', 'wh', 'obj', 'noobj', 'class')
    >>> target = {"boxes": torch.tensor([[10.0, 10.0, 40.0, 50.0]]), "labels": torch.tensor([2])}
    >>> sorted(det.train()(torch.zeros(1, 1, 96, 96), [target]))
    ['class', 'noobj', 'obj', 'wh', 'xy']
    >>> sorted(det.eval()(torch.zeros(1, 1, 96, 96))[0])
    ['boxes', 'labels', 'scores']
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from convkit.models._registry import ModelArgumentError
from convkit.utils import shorten

__all__ = ["DEFAULT_BACKBONE", "DEFAULT_DETECTOR", "DETECTORS", "MASK_THRESHOLD", "Detector", "build_detector", "detector_from_spec",
           "finish_detections"]

# The detectors `convkit train --task detect --model NAME` builds, with what each is (for --help and messages).
DETECTORS = {
    "yolo": "YOLO v1: an S x S grid, B boxes per cell, the loss of Redmon et al. 2016",
    "fasterrcnn": "Faster R-CNN: RPN + RoIAlign (roi_pool=max: RoI max pooling) + box head, on an FPN",
    "retinanet": "RetinaNet: FPN with P6/P7, focal loss",
    "localizer": "classification + localisation: one box per image, a class head and a box head",
    "maskrcnn": "Mask R-CNN: Faster R-CNN + a binary mask head (instance segmentation)",
}
DEFAULT_DETECTOR = "yolo"  # the best for its time on 2 CPU cores (benchmarks/bench_detect.py; README)
DEFAULT_BACKBONE = "fastcnn"
LOSS_TERMS = {"yolo": ("xy", "wh", "obj", "noobj", "class"),
              "fasterrcnn": ("loss_objectness", "loss_rpn_box_reg", "loss_classifier", "loss_box_reg"),
              "retinanet": ("classification", "bbox_regression"),
              "localizer": ("class", "box"),
              "maskrcnn": ("loss_objectness", "loss_rpn_box_reg", "loss_classifier", "loss_box_reg", "loss_mask")}
MASK_THRESHOLD = 0.5  # Mask R-CNN's mask probabilities -> binary masks (the paper's and torchvision's cut)
EVAL_SCORE_THRESHOLD = 0.01  # detections kept for evaluation (COCO's AP needs the low-scoring tail)


def _grid(image_size: tuple[int, int]) -> int:
    """YOLO's default grid side: cells of about 12 pixels (the scenes' smallest objects), 8 for 96 pixels."""
    return max(2, round(min(image_size) / 12))


class Detector(nn.Module):
    """A detector with convkit's calling convention (see the module docstring).

    Attributes:
        kind: one of `DETECTORS`.
        net: the detector inside (`YoloV1`, torchvision's ``FasterRCNN`` or ``RetinaNet``, `Localizer`).
        num_classes: convkit's classes (no background).
        image_size: (H, W) the detector is built for (torchvision's transform keeps it; YOLO's grid covers it).
        options: the builder's keyword arguments (recorded in the spec).
        loss_terms: the names of the loss terms, in the order `losses` returns them.
        score_threshold: the least score `detect` keeps by default.
    """

    def __init__(self, kind: str, net: nn.Module, num_classes: int, image_size: tuple[int, int],
                 options: Mapping[str, Any] | None = None):
        super().__init__()
        self.kind, self.net, self.num_classes = kind, net, int(num_classes)
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.options = dict(options or {})
        self.loss_terms = LOSS_TERMS[kind]
        self.score_threshold = EVAL_SCORE_THRESHOLD

    def forward(self, images: torch.Tensor, targets: Sequence[Mapping] | None = None):
        """Training mode with targets: the loss terms; otherwise the detections (see the module docstring)."""
        if targets is not None and self.training:
            return self.losses(images, targets)
        return self.detect(images)

    def losses(self, images: torch.Tensor, targets: Sequence[Mapping]) -> dict[str, torch.Tensor]:
        """The loss terms of a batch (float32 scalars; their sum is the loss), in `loss_terms` order."""
        if self.kind == "yolo":
            from convkit.tasks.detection.yolo import encode_targets

            net = self.net
            terms = net.loss(net(images).float(), encode_targets(list(targets), net.S, net.C, self.image_size))
        elif self.kind == "localizer":
            from convkit.tasks.detection.localize import localization_loss

            outputs = {k: v.float() for k, v in self.net(images).items()}
            terms = localization_loss(outputs, targets, self.image_size, **self._loss_options())
        else:
            from convkit.tasks.detection.models import to_torchvision_targets

            terms = self.net(list(images), to_torchvision_targets(targets))
        return {name: terms[name].float() for name in self.loss_terms}

    def _loss_options(self) -> dict:
        return {k: self.options[k] for k in ("box_loss", "box_weight") if k in self.options}

    @torch.no_grad()
    def detect(self, images: torch.Tensor, score_threshold: float | None = None) -> list[dict[str, torch.Tensor]]:
        """The detections of a batch of normalised images: one dict per image (boxes, labels, scores), CPU."""
        threshold = self.score_threshold if score_threshold is None else float(score_threshold)
        size = tuple(images.shape[-2:])
        if self.kind == "yolo":
            out = self.net.decode(self.net(images).float(), size, conf_threshold=threshold)
        elif self.kind == "localizer":
            from convkit.tasks.detection.localize import decode

            out = decode({k: v.float() for k, v in self.net(images).items()}, size)
        else:
            from convkit.tasks.detection.models import from_torchvision_detections

            out = from_torchvision_detections(self.net(list(images)))
        return finish_detections(out, self.kind, size, threshold)

    def stage_layout(self):
        """The inner detector's stages, for freezing and per-stage learning rates (`convkit.reuse.model_stages`)."""
        inner = getattr(self.net, "stage_layout", None)
        layout = inner() if callable(inner) else None
        return None if not layout else [(name, [f"net.{m}" for m in modules]) for name, modules in layout]

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}, num_classes={self.num_classes}, image_size={self.image_size}"


def finish_detections(out: Sequence[Mapping[str, torch.Tensor]], kind: str, size: tuple[int, int],
                      threshold: float) -> list[dict[str, torch.Tensor]]:
    """A detector's decoded outputs -> `Detector.detect`'s answer: scores above `threshold` (the localiser keeps
    its one box), on the CPU; Mask R-CNN's (K, 1, H, W) mask probabilities cut at `MASK_THRESHOLD` to uint8 (K, H, W).
    Shared with the exported detectors (`convkit.export`), so that both answer alike.

    >>> d = finish_detections([{"boxes": torch.ones(2, 4), "labels": torch.tensor([0, 1]),
    ...                         "scores": torch.tensor([0.9, 0.1])}], "yolo", (8, 8), 0.5)[0]
    >>> d["labels"].tolist(), d["scores"].tolist()
    ([0], [0.8999999761581421])
    """
    result = []
    for d in out:
        keep = d["scores"] > threshold if kind != "localizer" else torch.ones_like(d["scores"], dtype=torch.bool)
        entry = {"boxes": d["boxes"][keep].float().cpu(), "labels": d["labels"][keep].long().cpu(),
                 "scores": d["scores"][keep].float().cpu()}
        if kind == "maskrcnn":  # (K, 1, H, W) probabilities -> (K, H, W) binary
            masks = d["masks"][keep].float()
            entry["masks"] = (masks.reshape(len(masks), *size) > MASK_THRESHOLD).to(torch.uint8).cpu()
        result.append(entry)
    return result


def _check_kind(kind: str) -> str:
    if kind not in DETECTORS:
        raise ModelArgumentError(f"unknown detector {shorten(kind)}; the detectors are: "
                                 + "; ".join(f"{k} ({v})" for k, v in DETECTORS.items()))
    return kind


def _backbone_module(backbone: Any, in_channels: int, kwargs: Mapping | None = None) -> nn.Module:
    """A zoo name, model file, run, checkpoint or module -> a convkit model with ``model_cfg`` (weights kept);
    `kwargs` go to a zoo builder."""
    from convkit.models.reference import resolve_model
    from convkit.tasks.detection.models import _resolve

    if kwargs:
        if not isinstance(backbone, str) or _fixes_channels(backbone):
            raise ModelArgumentError(f"backbone arguments {shorten(dict(kwargs))} are for a zoo name; "
                                     f"{shorten(str(backbone))} is built already")
        return resolve_model(backbone, in_channels=in_channels, **kwargs)
    if isinstance(backbone, nn.Module) and not hasattr(backbone, "model_cfg"):
        return resolve_model(backbone)
    module = _resolve(backbone, None if _fixes_channels(backbone) else in_channels)
    channels = module.model_cfg.input_shape[0] if module.model_cfg.input_shape else in_channels
    if channels != in_channels:
        raise ModelArgumentError(f"backbone {shorten(str(getattr(module.model_cfg, 'name', backbone)))} takes "
                                 f"{channels}-channel images, the data has {in_channels} channels")
    return module


def _fixes_channels(backbone: Any) -> bool:
    import os

    return isinstance(backbone, nn.Module | Mapping) or (isinstance(backbone, str | os.PathLike) and (
        os.path.isdir(backbone) or str(backbone).endswith(".safetensors")))


def build_detector(kind: str, backbone: Any = DEFAULT_BACKBONE, num_classes: int = 10, in_channels: int = 1,
                   image_size: tuple[int, int] = (96, 96), backbone_kwargs: Mapping | None = None,
                   **options) -> Detector:
    """Builds a detector on a convkit backbone (nothing downloaded).

    Args:
        kind: "yolo", "fasterrcnn", "retinanet", "localizer" or "maskrcnn" (`DETECTORS`).
        backbone: a zoo name, a model file, a run folder or checkpoint (its trained weights come along), foreign
            weights, or a convkit module.
        num_classes: the classes, without background.
        in_channels: image channels, 1 or 3.
        image_size: (H, W) of the training images.
        backbone_kwargs: a zoo backbone's builder arguments (e.g. ``{"widths": [16, 32, 64, 128]}``).
        **options: the detector's own arguments: yolo ``S`` (default: cells of about 12 px), ``B`` (2),
            ``hidden``, ``activation``; fasterrcnn ``roi_pool`` ("align" or "max"), ``out_channels``,
            ``returned_stages``, ``anchor_sizes`` and FasterRCNN's keywords; maskrcnn those of fasterrcnn (roi_pool
            "align" only) and ``mask_layers``; retinanet ``out_channels``,
            ``returned_stages`` and RetinaNet's keywords; localizer ``box_loss``, ``box_weight``, ``box_pool``.

    Returns:
        A `Detector` with ``model_cfg`` (its spec rebuilds it).

    Raises:
        ModelArgumentError: an unknown detector or option, a backbone whose channels differ from the data's.

    Example:
        >>> det = build_detector("fasterrcnn", "fastcnn", num_classes=2, in_channels=1, image_size=(64, 64),
        ...                      roi_pool="max")
        >>> det.kind, det.model_cfg.spec["detector"], det.model_cfg.spec["backbone"]["name"]
        ('fasterrcnn', 'fasterrcnn', 'fastcnn')
    """
    from convkit.models.reference import ModelCfg

    _check_kind(kind)
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ModelArgumentError(f"num_classes must be an integer >= 1, got {shorten(num_classes)}")
    image_size = (int(image_size[0]), int(image_size[1]))
    body = _backbone_module(backbone, in_channels, backbone_kwargs)
    backbone_spec = copy.deepcopy(body.model_cfg.spec)
    if backbone_spec.get("kind") in ("zoo", "file") and backbone_spec.get("in_channels") is None:
        backbone_spec["in_channels"] = in_channels  # rebuilt with the data's channels, not the builder's default
    name = body.model_cfg.name
    net = _build_net(kind, body, num_classes, in_channels, image_size, dict(options))
    detector = Detector(kind, net, num_classes, image_size, options)
    spec = {"kind": "detector", "detector": kind, "backbone": backbone_spec, "num_classes": num_classes,
            "in_channels": in_channels, "image_size": list(image_size), "kwargs": dict(options)}
    detector.model_cfg = ModelCfg(f"{kind}-{name}", task="detect", input_shape=(in_channels, *image_size),
                                  num_classes=num_classes, spec=spec, source="module")
    return detector


def _build_net(kind: str, body: nn.Module, num_classes: int, in_channels: int, image_size: tuple[int, int],
               options: dict) -> nn.Module:
    try:
        if kind == "yolo":
            from convkit.tasks.detection.yolo import YoloV1

            return YoloV1(body, S=options.pop("S", _grid(image_size)), C=num_classes, **options)
        if kind == "localizer":
            from convkit.tasks.detection.localize import Localizer

            for key in ("box_loss", "box_weight"):
                options.pop(key, None)
            return Localizer(body, num_classes, **options)
        from convkit.tasks.detection.models import faster_rcnn, mask_rcnn, retinanet

        identity = {"image_mean": [0.0] * in_channels, "image_std": [1.0] * in_channels,
                    "min_size": min(image_size), "max_size": max(image_size)}
        if kind == "maskrcnn":
            return mask_rcnn(body, num_classes, **{"box_score_thresh": EVAL_SCORE_THRESHOLD, **identity, **options})
        if kind == "fasterrcnn":
            return faster_rcnn(body, num_classes, **{"box_score_thresh": EVAL_SCORE_THRESHOLD, **identity, **options})
        return retinanet(body, num_classes, **{"score_thresh": EVAL_SCORE_THRESHOLD, "detections_per_img": 100,
                                               **identity, **options})
    except TypeError as err:  # an option the detector does not take
        raise ModelArgumentError(f"{kind}: {err}") from None


def detector_from_spec(spec: Mapping) -> Detector:
    """Rebuilds a detector (untrained) from its spec (`convkit.models.reference.build_from_spec` calls this).

    Raises:
        ModelArgumentError, KeyError: a malformed spec.
    """
    from convkit.models.reference import build_from_spec

    body = build_from_spec(dict(spec["backbone"]))
    return build_detector(spec["detector"], body, int(spec["num_classes"]), int(spec["in_channels"]),
                          tuple(spec["image_size"]), **dict(spec.get("kwargs") or {}))
