"""Classification + localisation: one object per image, a class head and a box head, evaluated with IoU.

The lectures' first step past "one centred object per image": beside the class, regress the object's box, so a
network answers *what* and *where*. :class:`Localizer` puts two heads on any convkit backbone:

* the class head is the backbone's own head (its classifier reset to ``num_classes``), so a pre-trained body and
  its hidden layers are reused as they are;
* the box head (:class:`BoxHead`) pools the last feature map to a small grid (so it still sees *where* things
  are; a global average would throw that away), then a small MLP gives 4 numbers that a sigmoid turns into
  ``(cx, cy, w, h)`` relative to the image's width and height.

Why a sigmoid: the target lies in 0..1 in that frame, so the prediction is bounded to the same range (never a
negative width, never a centre far outside the image), and its start is stable: with the last layer's bias at 0
every image starts at the centred box of half the image's side, not at a random, possibly huge or inverted box
that makes the first steps of GIoU and L1 jump. Its cost: a box as wide as the image is reached only in the limit
(the sigmoid saturates); a logit of 5 gives 0.993 of the side, close enough for any IoU threshold in use.

:func:`localization_loss` trains it (cross-entropy + L1 and GIoU, or smooth L1); :func:`localization_metrics`
measures it (accuracy, mean IoU, and both right at IoU >= 0.5, ILSVRC's localisation criterion);
:func:`decode` turns outputs into convkit's detection form (one box per image, xyxy pixels, score = the softmax's
maximum) so that the COCO metrics (:func:`convkit.tasks.detection.metrics.coco_metrics`) run on it too.

Example::

    >>> from convkit.models import create_model
    >>> model = Localizer(create_model("fastcnn"), num_classes=2)
    >>> out = model(torch.zeros(2, 1, 64, 64))
    >>> out["logits"].shape, out["boxes"].shape
    (torch.Size([2, 2]), torch.Size([2, 4]))
    >>> targets = [{"boxes": torch.tensor([[8.0, 8.0, 40.0, 24.0]]), "labels": torch.tensor([1])},
    ...            {"boxes": torch.tensor([[0.0, 0.0, 64.0, 64.0]]), "labels": torch.tensor([0])}]
    >>> sorted(localization_loss(out, targets, image_size=(64, 64)))
    ['box', 'class', 'loss']
    >>> sorted(localization_metrics(out, targets, image_size=(64, 64)))
    ['acc_at_iou50', 'accuracy', 'count', 'iou50', 'mean_iou']
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import box_convert, box_iou, clip_boxes_to_image, generalized_box_iou_loss

from convkit.data.errors import LabelError
from convkit.models._registry import ModelArgumentError
from convkit.reuse.freeze import model_stages
from convkit.tasks.detection.boxes import target_tensors
from convkit.utils import shorten

__all__ = ["BOX_LOSSES", "BoxHead", "Localizer", "decode", "localization_loss", "localization_metrics",
           "single_boxes"]

BOX_LOSSES = ("l1+giou", "smooth_l1")
MULTIPLE = ("error", "largest")
# Smooth L1's switch from quadratic to linear, in image-relative units (a ninth of the image, Fast R-CNN's 1/9 in
# its own frame): with torch's default of 1 every error inside the image would be on the quadratic part, an L2.
SMOOTH_L1_BETA = 1.0 / 9.0


class BoxHead(nn.Module):
    """The default box head: feature map ``(N, in_channels, h, w)`` -> 4 raw numbers per image ``(N, 4)``.

    Average-pools the map to ``pool x pool`` cells (``nn.AdaptiveAvgPool2d``, any input size), flattens them and
    applies ``Linear -> ReLU -> Linear(4)``. The grid keeps the object's position, which a global average loses.
    The last layer starts with zero weights and bias, so through :class:`Localizer`'s sigmoid every image starts
    at the centred box ``(0.5, 0.5, 0.5, 0.5)``.

    Args:
        in_channels: channels of the feature map (a zoo model's ``num_features``).
        pool: the side of the pooled grid.
        hidden: width of the hidden layer.

    Raises:
        ModelArgumentError: a size below 1.

    Example:
        >>> BoxHead(64, pool=4, hidden=32)(torch.zeros(3, 64, 7, 7)).shape
        torch.Size([3, 4])
    """

    def __init__(self, in_channels: int, pool: int = 4, hidden: int = 256):
        super().__init__()
        for name, value in (("in_channels", in_channels), ("pool", pool), ("hidden", hidden)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ModelArgumentError(f"box head: {name} must be an integer >= 1, got {shorten(value)}")
        self.pool = nn.AdaptiveAvgPool2d(pool)
        self.fc1 = nn.Linear(in_channels * pool * pool, hidden)
        self.act = nn.ReLU(inplace=True)
        self.fc2 = nn.Linear(hidden, 4)
        nn.init.zeros_(self.fc2.weight)
        nn.init.zeros_(self.fc2.bias)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(torch.flatten(self.pool(features), 1))))


class Localizer(nn.Module):
    """A classifier with a second head that regresses one box per image.

    ``forward(images) -> {"logits": (N, num_classes), "boxes": (N, 4)}``: ``boxes`` are ``(cx, cy, w, h)``
    relative to the image's width and height, each in 0..1 (a sigmoid; see the module's docstring for why).
    :func:`decode` turns them into pixels.

    The backbone is any zoo model (``convkit.create_model``) or other module with ``forward_features(images) ->
    (N, num_features, h, w)`` and ``num_features``. When it has ``reset_classifier`` and ``forward_head`` (every
    zoo classifier), its own head, with the last layer reset to ``num_classes``, is the class head; otherwise a
    global average pool and one linear layer are. The box head reads the same feature map.

    Args:
        backbone: the feature extractor (and class head).
        num_classes: C.
        box_head: a module ``(N, num_features, h, w) -> (N, 4)`` (raw numbers, before the sigmoid); ``None``: a
            :class:`BoxHead` with ``box_pool`` and ``box_hidden``.
        box_pool: the default box head's pooled grid side.
        box_hidden: the default box head's hidden width.

    Raises:
        ModelArgumentError: the backbone has no ``forward_features`` or ``num_features``; ``num_classes < 1``.

    Example:
        >>> from convkit.models import create_model
        >>> model = Localizer(create_model("resnet18"), num_classes=3)
        >>> model(torch.zeros(1, 3, 64, 64))["boxes"].tolist()  # the centred box at the start
        [[0.5, 0.5, 0.5, 0.5]]
        >>> [s.name for s in convkit.reuse.model_stages(model)]
        ['stem', 'layer1', 'layer2', 'layer3', 'layer4', 'head']
    """

    def __init__(self, backbone: nn.Module, num_classes: int, box_head: nn.Module | None = None, box_pool: int = 4,
                 box_hidden: int = 256):
        super().__init__()
        features = getattr(backbone, "num_features", None)
        if not callable(getattr(backbone, "forward_features", None)) or not isinstance(features, int):
            raise ModelArgumentError(f"the localiser needs a backbone with forward_features() and num_features (a "
                                     f"convkit zoo model); {type(backbone).__name__} has not")
        if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
            raise ModelArgumentError(f"the localiser: num_classes must be an integer >= 1, got {shorten(num_classes)}")
        own_head = callable(getattr(backbone, "reset_classifier", None)) and \
            callable(getattr(backbone, "forward_head", None))
        if own_head:
            backbone.reset_classifier(num_classes)
            self.class_head: nn.Module | None = None
        else:
            self.class_head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(features, num_classes))
        self.backbone = backbone
        self.box_head = box_head if box_head is not None else BoxHead(features, box_pool, box_hidden)
        self.num_classes = num_classes
        self.num_features = features

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.backbone.forward_features(images)
        logits = self.backbone.forward_head(features) if self.class_head is None else self.class_head(features)
        return {"logits": logits, "boxes": self.box_head(features).sigmoid()}

    def stage_layout(self) -> list[tuple[str, list[str]]]:
        """The backbone's stages (:func:`convkit.reuse.model_stages`) less its head, then ``head``: the class head
        (the backbone's head) and the box head together, so that ``freeze(model, "head")`` trains both."""
        stages = model_stages(self.backbone)
        body = [(s.name, [f"backbone.{m}" for m in s.modules]) for s in stages[:-1]]
        head = [f"backbone.{m}" for m in stages[-1].modules]
        if self.class_head is not None:  # the backbone's last stage is body, not a head we use
            body.append((stages[-1].name if stages[-1].name != "head" else "backbone_top", head))
            head = ["class_head"]
        return [*body, ("head", [*head, "box_head"])]

    def loss(self, outputs: Mapping[str, torch.Tensor], targets: Sequence[Mapping], image_size: tuple[int, int],
             **kwargs) -> dict[str, torch.Tensor]:
        """:func:`localization_loss` (its keyword arguments pass through)."""
        return localization_loss(outputs, targets, image_size, **kwargs)

    def decode(self, outputs: Mapping[str, torch.Tensor], image_size: tuple[int, int]) -> list[dict]:
        """:func:`decode`."""
        return decode(outputs, image_size)


def _check_outputs(outputs: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """``outputs["logits"]`` (N, C) and ``outputs["boxes"]`` (N, 4), or ValueError."""
    if not isinstance(outputs, Mapping) or "logits" not in outputs or "boxes" not in outputs:
        raise ValueError(f"localiser outputs must be a dict with 'logits' and 'boxes', got {shorten(outputs)}")
    logits, boxes = outputs["logits"], outputs["boxes"]
    if logits.dim() != 2 or boxes.dim() != 2 or boxes.shape[1] != 4 or boxes.shape[0] != logits.shape[0]:
        raise ValueError(f"localiser outputs must be logits (N, C) and boxes (N, 4), got {tuple(logits.shape)} "
                         f"and {tuple(boxes.shape)}")
    return logits, boxes


def single_boxes(targets: Sequence[Mapping], num_classes: int | None = None,
                 multiple: str = "error") -> tuple[torch.Tensor, torch.Tensor]:
    """The one object of each image: its box and its label, as two batch tensors.

    Crowd regions (``iscrowd`` true) are not objects and are left out first. An image with no object is an
    error (there is nothing to localise); one with several is an error too (``multiple="error"``, the default:
    a data set for this task has one object per image, and a silent choice would hide a wrong data set), or its
    largest box (by area; the first of equal ones) is taken (``multiple="largest"``, ILSVRC's "main object").

    Args:
        targets: one dict per image: ``"boxes"`` float ``(M, 4)`` xyxy pixels, ``"labels"`` int ``(M,)``,
            optional ``"iscrowd"`` bool ``(M,)``.
        num_classes: when given, labels must lie in 0..num_classes-1.
        multiple: ``"error"`` or ``"largest"``, see above.

    Returns:
        ``(boxes (N, 4) float32 xyxy pixels, labels (N,) int64)``, on the first target's device.

    Raises:
        LabelError: an image without an object, or with several (``multiple="error"``), or a label outside the
            classes; the message names the image's index in the batch.
        ValueError: boxes that are not ``(M, 4)`` or labels not ``(M,)``; an unknown ``multiple``.

    Example:
        >>> t = {"boxes": torch.tensor([[0.0, 0.0, 4.0, 4.0], [0.0, 0.0, 8.0, 8.0]]), "labels": torch.tensor([0, 1])}
        >>> single_boxes([t], multiple="largest")
        (tensor([[0., 0., 8., 8.]]), tensor([1]))
    """
    if multiple not in MULTIPLE:
        raise ValueError(f"multiple must be one of {', '.join(MULTIPLE)}, got {shorten(multiple)}")
    if not len(targets):
        raise ValueError("no targets: the batch is empty")
    device = torch.as_tensor(targets[0]["boxes"]).device
    boxes, labels = [], []
    for n, target in enumerate(targets):
        xyxy, label = target_tensors(target, n, device)
        if len(label) == 0:
            raise LabelError(f"target {n}: the image has no object; the localiser needs exactly one per image")
        if len(label) > 1:
            if multiple == "error":
                raise LabelError(f"target {n}: the image has {len(label)} objects; the localiser needs exactly one "
                                 f"per image (multiple='largest' takes the largest)")
            area = (xyxy[:, 2] - xyxy[:, 0]) * (xyxy[:, 3] - xyxy[:, 1])
            pick = int(torch.argmax(area))  # the first of equal maxima
            xyxy, label = xyxy[pick:pick + 1], label[pick:pick + 1]
        if num_classes is not None and not 0 <= int(label[0]) < num_classes:
            raise LabelError(f"target {n}: label {int(label[0])} is outside the {num_classes} classes "
                             f"0..{num_classes - 1}")
        boxes.append(xyxy)
        labels.append(label)
    return torch.cat(boxes), torch.cat(labels)


def _scale(image_size: tuple[int, int], like: torch.Tensor) -> torch.Tensor:
    """``(W, H, W, H)`` as a tensor like ``like``, from ``image_size = (H, W)``."""
    height, width = (float(v) for v in image_size)
    if height <= 0 or width <= 0:
        raise ValueError(f"image_size must be (H, W) > 0, got {shorten(image_size)}")
    return torch.tensor([width, height, width, height], device=like.device, dtype=like.dtype)


def localization_loss(outputs: Mapping[str, torch.Tensor], targets: Sequence[Mapping], image_size: tuple[int, int],
                      box_weight: float = 1.0, box_loss: str = "l1+giou",
                      multiple: str = "error") -> dict[str, torch.Tensor]:
    """The classification + localisation loss: cross-entropy on the class plus a box regression term.

    Boxes are compared in one frame, image-relative (pixels divided by the image's width and height):

    * ``"l1+giou"`` (DETR's pair): ``|cx - cx^| + |cy - cy^| + |w - w^| + |h - h^|`` in image-relative
      ``cxcywh`` (the head's own output), plus ``1 - GIoU`` of the boxes as image-relative ``xyxy``
      (``torchvision.ops.generalized_box_iou_loss``; GIoU is unchanged by scaling either axis, so it is the
      GIoU in pixels too). L1 alone weights a pixel of a small box as one of a large box; GIoU is relative to
      the boxes' size and still has a gradient when they do not overlap.
    * ``"smooth_l1"`` (Fast R-CNN's): smooth L1 (``beta = 1/9`` of the image) summed over the 4 image-relative
      ``cxcywh`` numbers.

    Each term is averaged over the images.

    Args:
        outputs: a :class:`Localizer`'s output, ``{"logits": (N, C), "boxes": (N, 4)}`` (boxes image-relative
            ``cxcywh``).
        targets: one target per image (convkit's form: ``"boxes"`` xyxy pixels, ``"labels"``), exactly one object
            each (see :func:`single_boxes` and ``multiple``).
        image_size: ``(H, W)`` of the images in pixels (one size for the batch).
        box_weight: the box term's weight against the class term.
        box_loss: ``"l1+giou"`` or ``"smooth_l1"``.
        multiple: what an image with several objects gives: ``"error"`` or ``"largest"`` (:func:`single_boxes`).

    Returns:
        ``{"class": cross-entropy, "box": box_weight * box term, "loss": their sum}``, scalar tensors.

    Raises:
        LabelError: an image without exactly one object, or with a label outside the classes (named by index).
        ValueError: malformed outputs or targets, an unknown ``box_loss``, a batch size that differs.

    Example:
        >>> out = {"logits": torch.tensor([[0.0, 0.0]]), "boxes": torch.tensor([[0.5, 0.5, 0.5, 0.5]])}
        >>> t = [{"boxes": torch.tensor([[25.0, 25.0, 75.0, 75.0]]), "labels": torch.tensor([1])}]
        >>> {k: round(v.item(), 4) for k, v in localization_loss(out, t, image_size=(100, 100)).items()}
        {'class': 0.6931, 'box': 0.0, 'loss': 0.6931}
    """
    if box_loss not in BOX_LOSSES:
        raise ValueError(f"box_loss must be one of {', '.join(BOX_LOSSES)}, got {shorten(box_loss)}")
    logits, pred = _check_outputs(outputs)
    gt_xyxy, labels = single_boxes(targets, logits.shape[1], multiple)
    if len(labels) != len(logits):
        raise ValueError(f"{len(targets)} targets for {len(logits)} outputs: one target per image is needed")
    gt_xyxy = gt_xyxy.to(pred.device, pred.dtype) / _scale(image_size, pred)
    gt_cxcywh = box_convert(gt_xyxy, "xyxy", "cxcywh")
    class_loss = F.cross_entropy(logits, labels.to(logits.device))
    if box_loss == "l1+giou":
        l1 = (pred - gt_cxcywh).abs().sum(dim=1).mean()
        giou = generalized_box_iou_loss(box_convert(pred, "cxcywh", "xyxy"), gt_xyxy, reduction="mean")
        box = l1 + giou
    else:
        box = F.smooth_l1_loss(pred, gt_cxcywh, beta=SMOOTH_L1_BETA, reduction="none").sum(dim=1).mean()
    terms = {"class": class_loss, "box": box_weight * box}
    terms["loss"] = terms["class"] + terms["box"]
    return terms


def decode(outputs: Mapping[str, torch.Tensor], image_size: tuple[int, int]) -> list[dict[str, torch.Tensor]]:
    """A batch of localiser outputs -> convkit's detection form: one box per image, in pixels.

    The box is the image-relative ``cxcywh`` scaled by the image's size, turned into ``xyxy`` and clipped to the
    image (a sigmoid keeps the centre and size in 0..1, not the corners); the label is the arg-max of the logits
    and the score its softmax probability. The COCO and VOC metrics
    (:mod:`convkit.tasks.detection.metrics`) take the result as it is.

    Args:
        outputs: ``{"logits": (N, C), "boxes": (N, 4)}``.
        image_size: ``(H, W)`` of the images in pixels.

    Returns:
        One dict per image: ``"boxes"`` float32 ``(1, 4)`` xyxy pixels, ``"scores"`` ``(1,)``, ``"labels"`` int64
        ``(1,)``. Without gradient.

    Raises:
        ValueError: malformed outputs or image size.

    Example:
        >>> out = {"logits": torch.tensor([[0.0, 2.0]]), "boxes": torch.tensor([[0.25, 0.5, 0.5, 0.25]])}
        >>> d = decode(out, image_size=(40, 100))[0]
        >>> d["boxes"].tolist(), round(d["scores"].item(), 4), d["labels"].tolist()
        ([[0.0, 15.0, 50.0, 25.0]], 0.8808, [1])
    """
    logits, boxes = _check_outputs(outputs)
    height, width = (int(v) for v in image_size)
    with torch.no_grad():
        xyxy = box_convert(boxes.detach().float() * _scale(image_size, boxes.detach().float()), "cxcywh", "xyxy")
        xyxy = clip_boxes_to_image(xyxy, (height, width))
        scores, labels = logits.detach().float().softmax(dim=1).max(dim=1)
    return [{"boxes": xyxy[n:n + 1], "scores": scores[n:n + 1], "labels": labels[n:n + 1]}
            for n in range(len(logits))]


def localization_metrics(outputs: Mapping[str, torch.Tensor], targets: Sequence[Mapping],
                         image_size: tuple[int, int], multiple: str = "error") -> dict[str, float]:
    """How well a batch (or a whole set, concatenated) is classified and localised.

    The IoU is that of the decoded box (:func:`decode`: in pixels, clipped to the image) with the true one,
    from ``torchvision.ops.box_iou``.

    Args:
        outputs: ``{"logits": (N, C), "boxes": (N, 4)}``.
        targets: one target per image, exactly one object each (see :func:`single_boxes`).
        image_size: ``(H, W)`` of the images in pixels.
        multiple: ``"error"`` or ``"largest"`` (:func:`single_boxes`).

    Returns:
        ``{"accuracy": right class, "mean_iou": mean IoU, "iou50": IoU >= 0.5, "acc_at_iou50": right class
        *and* IoU >= 0.5 (ILSVRC's localisation accuracy; 1 - it is its localisation error), "count": N}``,
        fractions of the images (``count`` lets batches be averaged with their weights).

    Raises:
        LabelError: an image without exactly one object, or a label outside the classes (named by index).
        ValueError: malformed outputs or targets, a batch size that differs.

    Example:
        >>> out = {"logits": torch.tensor([[2.0, 0.0], [2.0, 0.0]]),
        ...        "boxes": torch.tensor([[0.5, 0.5, 0.5, 0.5], [0.5, 0.5, 0.5, 0.5]])}
        >>> t = [{"boxes": torch.tensor([[25.0, 25.0, 75.0, 75.0]]), "labels": torch.tensor([0])},
        ...      {"boxes": torch.tensor([[25.0, 25.0, 75.0, 50.0]]), "labels": torch.tensor([1])}]
        >>> localization_metrics(out, t, image_size=(100, 100))
        {'accuracy': 0.5, 'mean_iou': 0.75, 'iou50': 1.0, 'acc_at_iou50': 0.5, 'count': 2}
    """
    logits, _ = _check_outputs(outputs)
    gt_boxes, labels = single_boxes(targets, logits.shape[1], multiple)
    if len(labels) != len(logits):
        raise ValueError(f"{len(targets)} targets for {len(logits)} outputs: one target per image is needed")
    found = decode(outputs, image_size)
    pred_boxes = torch.cat([d["boxes"] for d in found])
    pred_labels = torch.cat([d["labels"] for d in found])
    iou = box_iou(pred_boxes, gt_boxes.to(pred_boxes)).diagonal()
    right = pred_labels == labels.to(pred_labels.device)
    located = iou >= 0.5
    return {"accuracy": right.float().mean().item(), "mean_iou": iou.mean().item(),
            "iou50": located.float().mean().item(), "acc_at_iou50": (right & located).float().mean().item(),
            "count": len(labels)}
