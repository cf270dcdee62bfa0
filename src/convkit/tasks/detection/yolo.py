"""YOLO v1: the output layout, the loss of equation (3), decoding and NMS.

    Redmon, Divvala, Girshick, Farhadi. "You Only Look Once: Unified, Real-Time Object Detection."
    CVPR 2016. arXiv:1506.02640.

The image is cut into an ``S x S`` grid. Each cell predicts ``B`` boxes, each ``(x, y, w, h, conf)``, and one set
of ``C`` class probabilities, so the network's output is ``(N, S, S, B * 5 + C)``: ``pred[n, i, j]`` is the cell
in row ``i`` (from the top) and column ``j`` (from the left), laid out as
``[x_1, y_1, w_1, h_1, conf_1, ..., x_B, y_B, w_B, h_B, conf_B, p_1, ..., p_C]``:

* ``x, y``: the box centre's offset inside its cell, 0..1 (0 = the cell's left / top edge);
* ``w, h``: the box's size relative to the whole image, 0..1;
* ``conf``: the confidence, trained towards the IoU of the box with the object it is responsible for;
* ``p_c``: the probability of class ``c`` given that the cell holds an object.

The loss (:func:`yolo_v1_loss`) and the decoder (:func:`decode`) take this layout as it is: any activation is
applied by the head (:class:`YoloV1Head`), not by them. Boxes in and out are convkit's internal form, xyxy in
pixels; :func:`encode_targets` turns a batch of targets into the layout's frame.

Example::

    >>> from convkit.models import create_model
    >>> model = YoloV1(create_model("fastcnn"), S=4, B=2, C=3)
    >>> pred = model(torch.zeros(2, 1, 64, 64))
    >>> pred.shape
    torch.Size([2, 4, 4, 13])
    >>> targets = [{"boxes": torch.tensor([[8.0, 8.0, 40.0, 24.0]]), "labels": torch.tensor([2])},
    ...            {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}]
    >>> sorted(model.loss(pred, encode_targets(targets, S=4, C=3, image_size=(64, 64))))
    ['class', 'loss', 'noobj', 'obj', 'wh', 'xy']
    >>> len(model.decode(pred, image_size=(64, 64)))
    2
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn
from torchvision.ops import batched_nms, box_convert, clip_boxes_to_image, remove_small_boxes

from convkit.models._registry import ModelArgumentError
from convkit.tasks.detection.boxes import target_tensors
from convkit.utils import shorten

__all__ = ["YoloTargets", "YoloV1", "YoloV1Head", "decode", "encode_targets", "yolo_v1_loss"]

ACTIVATIONS = ("sigmoid", "linear")

# sqrt(|w| + SQRT_EPS): keeps the square root's slope finite (at most 1 / (2 sqrt(eps)) = 500) at w = 0.
SQRT_EPS = 1e-6


def _check_layout(pred: torch.Tensor, S: int, B: int, C: int) -> None:
    """Raises ValueError unless ``pred`` is ``(N, S, S, B * 5 + C)``."""
    if pred.dim() != 4 or tuple(pred.shape[1:]) != (S, S, B * 5 + C):
        raise ValueError(f"YOLO v1 predictions must be (N, S, S, B*5+C) = (N, {S}, {S}, {B * 5 + C}) for S={S}, "
                         f"B={B}, C={C}; got {tuple(pred.shape)}")


def _split(pred: torch.Tensor, B: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The layout's parts: boxes ``(N, S, S, B, 4)`` (x, y, w, h), confidences ``(N, S, S, B)``, class
    probabilities ``(N, S, S, C)``."""
    boxes = pred[..., :B * 5].unflatten(-1, (B, 5))
    return boxes[..., :4], boxes[..., 4], pred[..., B * 5:]


def _cells_to_image(xywh: torch.Tensor) -> torch.Tensor:
    """The layout's boxes ``(N, S, S, K, 4)`` (centre offset in the cell, size relative to the image; ``K`` boxes
    per cell) -> image-relative xyxy (0..1), the one frame in which convkit compares YOLO boxes.

    The cell of ``xywh[n, i, j, k]`` is row ``i``, column ``j``: ``cx = (j + x) / S``, ``cy = (i + y) / S``.
    """
    S = xywh.shape[1]
    index = torch.arange(S, device=xywh.device, dtype=xywh.dtype)
    cx = (index.view(1, S, 1) + xywh[..., 0]) / S  # column j along dim 2
    cy = (index.view(S, 1, 1) + xywh[..., 1]) / S  # row i along dim 1
    return box_convert(torch.stack([cx, cy, xywh[..., 2], xywh[..., 3]], dim=-1), "cxcywh", "xyxy")


def _paired_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of each box of ``a`` with the box at the same place in ``b`` (xyxy, any matching leading shape).

    torchvision's ``box_iou`` compares every box with every other (``N x M``); the loss needs the pairs only.
    Negative widths or heights count as empty boxes, so the IoU stays in 0..1 and is never NaN.
    """
    size_a = (a[..., 2:] - a[..., :2]).clamp(min=0)
    size_b = (b[..., 2:] - b[..., :2]).clamp(min=0)
    overlap = (torch.minimum(a[..., 2:], b[..., 2:]) - torch.maximum(a[..., :2], b[..., :2])).clamp(min=0)
    inter = overlap[..., 0] * overlap[..., 1]
    union = size_a[..., 0] * size_a[..., 1] + size_b[..., 0] * size_b[..., 1] - inter
    return inter / union.clamp(min=1e-12)


def _signed_sqrt(x: torch.Tensor) -> torch.Tensor:
    """``sign(x) * sqrt(|x| + eps)`` (with ``sign(0) = 1``): the loss's square root of w and h that a negative
    prediction cannot break.

    A linear output can predict a negative width; ``sqrt`` of it is NaN and poisons the whole loss. Clamping at 0
    instead would make the gradient of every negative width 0, so it would stay negative for ever; the signed
    root keeps a finite, positive slope (``1 / (2 sqrt(|x| + eps))``, at most 500) everywhere, 0 included, that
    pulls it back towards the target. (``torch.sign`` and ``abs`` would give 0 and a zero gradient at 0.)
    """
    positive = x >= 0
    root = torch.sqrt(torch.where(positive, x, -x) + SQRT_EPS)
    return torch.where(positive, root, -root)


class YoloV1Head(nn.Module):
    """The YOLO v1 output layer on a backbone's feature map: ``(N, in_channels, h, w) -> (N, S, S, B * 5 + C)``.

    Convolutional, not the paper's two fully connected layers (which tie the model to one input size and cost
    most of its parameters): the feature map is average-pooled to ``S x S`` (``nn.AdaptiveAvgPool2d``, so any
    input size works), then a 3x3 convolution to ``hidden`` channels with the paper's leaky ReLU (0.1) lets each
    cell see its neighbours (an object centred in one cell spreads into the next), and a 1x1 convolution gives
    each cell its ``B * 5 + C`` numbers.

    Activations of the outputs (``activation``):

    * ``"sigmoid"`` (the default, the common, safer choice): ``x``, ``y`` and ``conf`` through a sigmoid (their
      targets lie in 0..1), the class scores through a softmax (so ``conf * p(c)`` is a probability);
      ``w`` and ``h`` stay linear, as in the paper (the loss's signed square root copes with negative ones).
    * ``"linear"``: every output linear, exactly the paper ("a linear activation function for the final layer").

    Args:
        in_channels: channels of the feature map (a zoo model's ``num_features``).
        S: the grid's side.
        B: boxes per cell.
        C: classes.
        hidden: channels of the 3x3 convolution.
        activation: ``"sigmoid"`` or ``"linear"``, see above.

    Raises:
        ModelArgumentError: a size below 1 or an unknown activation.

    Example:
        >>> head = YoloV1Head(64, S=7, B=2, C=20)
        >>> out = head(torch.zeros(1, 64, 5, 5))
        >>> out.shape
        torch.Size([1, 7, 7, 30])
        >>> bool(((out[..., 4] > 0) & (out[..., 4] < 1)).all())  # conf through a sigmoid
        True
        >>> round(out[0, 3, 3, 10:].sum().item(), 4)  # class probabilities through a softmax
        1.0
    """

    def __init__(self, in_channels: int, S: int = 7, B: int = 2, C: int = 20, hidden: int = 256,
                 activation: str = "sigmoid"):
        super().__init__()
        for name, value in (("in_channels", in_channels), ("S", S), ("B", B), ("C", C), ("hidden", hidden)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ModelArgumentError(f"YOLO v1 head: {name} must be an integer >= 1, got {shorten(value)}")
        if activation not in ACTIVATIONS:
            raise ModelArgumentError(f"YOLO v1 head: activation must be one of {', '.join(ACTIVATIONS)}, "
                                     f"got {shorten(activation)}")
        self.S, self.B, self.C, self.activation = S, B, C, activation
        self.pool = nn.AdaptiveAvgPool2d(S)
        self.conv = nn.Conv2d(in_channels, hidden, 3, padding=1)
        self.act = nn.LeakyReLU(0.1)
        self.out = nn.Conv2d(hidden, B * 5 + C, 1)
        nn.init.zeros_(self.out.bias)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x = self.out(self.act(self.conv(self.pool(features)))).permute(0, 2, 3, 1)  # (N, S, S, B*5+C)
        if self.activation == "linear":
            return x
        B = self.B
        boxes = x[..., :B * 5].unflatten(-1, (B, 5))
        squashed = torch.cat([boxes[..., :2].sigmoid(), boxes[..., 2:4], boxes[..., 4:].sigmoid()], dim=-1)
        return torch.cat([squashed.flatten(-2), x[..., B * 5:].softmax(dim=-1)], dim=-1)


class YoloTargets(NamedTuple):
    """A batch of targets in the YOLO v1 layout's frame (:func:`encode_targets`).

    Attributes:
        boxes: ``(N, S, S, 4)`` float: ``x, y`` (the centre's offset in its cell), ``w, h`` (relative to the
            image) of the object each cell is responsible for; 0 in cells without one.
        has_object: ``(N, S, S)`` bool: the cell holds an object's centre (the paper's ``1^obj_i``).
        classes: ``(N, S, S, C)`` float: the object's class, one-hot; 0 in cells without one.
        dropped: objects left out because a larger one's centre fell into the same cell (YOLO v1's limit of one
            object per cell), over the whole batch.
    """

    boxes: torch.Tensor
    has_object: torch.Tensor
    classes: torch.Tensor
    dropped: int


def encode_targets(targets: list[dict], S: int, C: int, image_size: tuple[int, int]) -> YoloTargets:
    """A batch of targets (xyxy pixel boxes, 0-based labels) -> the YOLO v1 layout's frame.

    The cell that holds an object's centre is responsible for it (a centre on a cell's edge belongs to the cell
    below / to the right; one on the image's last edge to the last cell). A cell holds one object: when several
    centres fall into one cell (the paper's limitation: "each grid cell only predicts two boxes and can only have
    one class"), the largest box (by area; the first of equal ones) is kept and the others are left out of the
    loss and counted in ``dropped``. Crowd regions (``iscrowd`` true) are not objects to find and are left out too.

    Args:
        targets: one dict per image: ``"boxes"`` float ``(M, 4)`` xyxy pixels, ``"labels"`` int ``(M,)``
            in 0..C-1, optional ``"iscrowd"`` bool ``(M,)``. ``M`` may be 0.
        S: the grid's side.
        C: classes.
        image_size: ``(H, W)`` of the images in pixels (one size for the batch).

    Returns:
        A :class:`YoloTargets` on the first target's device.

    Raises:
        LabelError: a label outside 0..C-1 (naming the image's index in the batch and the label).
        ValueError: boxes that are not ``(M, 4)``, or labels not ``(M,)``.

    Example:
        >>> t = encode_targets([{"boxes": torch.tensor([[57.0, 0.0, 93.0, 64.0]]), "labels": torch.tensor([1])}],
        ...                    S=2, C=2, image_size=(100, 100))
        >>> t.has_object[0].tolist()  # row 0, column 1 holds the centre (75, 32)
        [[False, True], [False, False]]
        >>> [round(v, 4) for v in t.boxes[0, 0, 1].tolist()], t.classes[0, 0, 1].tolist()
        ([0.5, 0.64, 0.36, 0.64], [0.0, 1.0])
    """
    height, width = (float(v) for v in image_size)
    device = targets[0]["boxes"].device if targets else torch.device("cpu")
    N = len(targets)
    boxes = torch.zeros(N, S * S, 4, device=device)
    has_object = torch.zeros(N, S * S, dtype=torch.bool, device=device)
    classes = torch.zeros(N, S * S, C, device=device)
    dropped = 0
    for n, target in enumerate(targets):
        xyxy, labels = target_tensors(target, n, device, num_classes=C)
        if not len(labels):
            continue
        scale = torch.tensor([width, height, width, height], device=device)
        cxcywh = box_convert(xyxy / scale, "xyxy", "cxcywh")
        grid = (cxcywh[:, :2] * S).clamp(0, S - 1e-4)  # the centre in cell units; the far edge -> last cell
        cell = grid.floor()
        index = (cell[:, 1] * S + cell[:, 0]).long()  # row * S + column
        # one object per cell: the largest first (a stable sort keeps the first of equal areas first), then the
        # first of each cell
        by_area = torch.sort(-cxcywh[:, 2] * cxcywh[:, 3], stable=True).indices
        by_cell = torch.sort(index[by_area], stable=True)
        first = torch.ones_like(by_cell.values, dtype=torch.bool)
        first[1:] = by_cell.values[1:] != by_cell.values[:-1]
        chosen = by_area[by_cell.indices[first]]
        dropped += len(labels) - len(chosen)
        k = index[chosen]
        boxes[n, k] = torch.cat([grid[chosen] - cell[chosen], cxcywh[chosen, 2:]], dim=1)
        has_object[n, k] = True
        classes[n, k] = nn.functional.one_hot(labels[chosen], C).float()
    return YoloTargets(boxes.view(N, S, S, 4), has_object.view(N, S, S), classes.view(N, S, S, C), dropped)


def yolo_v1_loss(pred: torch.Tensor, targets: YoloTargets, S: int, B: int, C: int, lambda_coord: float = 5.0,
                 lambda_noobj: float = 0.5) -> dict[str, torch.Tensor]:
    """The loss of YOLO v1 (equation 3 of Redmon et al. 2016), term by term.

    With ``1^obj_ij`` the responsible predictor ``j`` of a cell ``i`` that holds an object, ``1^noobj_ij`` every
    other predictor (those of empty cells and the other ``B - 1`` of a cell with an object), and ``1^obj_i`` a cell
    that holds an object::

        xy    = lambda_coord * sum 1^obj_ij  [(x - x^)^2 + (y - y^)^2]
        wh    = lambda_coord * sum 1^obj_ij  [(sqrt w - sqrt w^)^2 + (sqrt h - sqrt h^)^2]
        obj   =                sum 1^obj_ij  (conf - IoU)^2
        noobj = lambda_noobj * sum 1^noobj_ij conf^2
        class =                sum 1^obj_i   sum_c (p(c) - p^(c))^2

    * The responsible predictor is the one of the ``B`` whose box has the highest IoU with the object (the first
      one on a tie, e.g. all zero), the IoU computed in one frame, image-relative xyxy, with each cell offset
      turned into an image position (``cx = (column + x) / S``); comparing cell offsets with image-relative sizes
      picks the wrong one.
    * Its confidence target is that IoU, detached (no gradient flows through the target); the others' is 0.
    * The square root of a predicted ``w`` or ``h`` is ``sign(w) * sqrt(|w| + 1e-6)``, so a negative (or zero)
      prediction gives a finite loss and a finite gradient that pulls it back up (a plain ``sqrt`` gives NaN; a
      clamp at 0 gives no gradient at all). Targets go through the same root (they are positive).
    * Each sum runs over the whole batch and is divided by the batch size (the loss per image).

    Args:
        pred: ``(N, S, S, B * 5 + C)``, the layout (after the head's activation).
        targets: the batch's targets, from :func:`encode_targets` (moved to ``pred``'s device).
        S: the grid's side.
        B: boxes per cell.
        C: classes.
        lambda_coord: the weight of the coordinate terms (the paper's 5).
        lambda_noobj: the weight of the confidences of predictors without an object (the paper's 0.5).

    Returns:
        ``{"xy", "wh", "obj", "noobj", "class"}``: the five terms, each already multiplied by its weight, and
        ``"loss"``, their sum; scalar tensors.

    Raises:
        ValueError: ``pred`` or ``targets`` does not have the shapes that ``S``, ``B``, ``C`` give.

    Example:
        >>> pred = torch.zeros(1, 2, 2, 2 * 5 + 2)
        >>> pred[..., 4] = 0.5  # every cell's first predictor: conf 0.5, the second: 0
        >>> empty = encode_targets([{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0)}], 2, 2, (64, 64))
        >>> {k: v.item() for k, v in yolo_v1_loss(pred, empty, S=2, B=2, C=2).items()}  # 0.5 * 4 * 0.5^2
        {'xy': 0.0, 'wh': 0.0, 'obj': 0.0, 'noobj': 0.5, 'class': 0.0, 'loss': 0.5}
    """
    _check_layout(pred, S, B, C)
    N = pred.shape[0]
    if tuple(targets.boxes.shape) != (N, S, S, 4) or tuple(targets.classes.shape) != (N, S, S, C):
        raise ValueError(f"YOLO v1 targets must be encoded for {N} images, S={S}, C={C}: boxes (N, S, S, 4), "
                         f"classes (N, S, S, C); got {tuple(targets.boxes.shape)} and {tuple(targets.classes.shape)}")
    gt_xywh = targets.boxes.to(pred.device, pred.dtype)
    has_object = targets.has_object.to(pred.device)
    gt_classes = targets.classes.to(pred.device, pred.dtype)
    xywh, conf, probs = _split(pred, B)  # (N, S, S, B, 4), (N, S, S, B), (N, S, S, C)

    with torch.no_grad():  # the choice of predictor and the confidence target carry no gradient
        iou = _paired_iou(_cells_to_image(xywh), _cells_to_image(gt_xywh.unsqueeze(-2)))  # (N, S, S, B)
        best = iou.argmax(dim=-1, keepdim=True)
        responsible = torch.zeros_like(iou, dtype=torch.bool).scatter_(-1, best, True) & has_object.unsqueeze(-1)
        target_iou = iou.gather(-1, best).squeeze(-1)  # (N, S, S)

    mask = responsible.to(pred.dtype)
    gt = gt_xywh.unsqueeze(-2)  # (N, S, S, 1, 4)
    xy = ((xywh[..., :2] - gt[..., :2]) ** 2).sum(-1)
    wh = ((_signed_sqrt(xywh[..., 2:]) - _signed_sqrt(gt[..., 2:])) ** 2).sum(-1)
    obj = (conf - target_iou.unsqueeze(-1)) ** 2
    noobj = conf ** 2
    cls = ((probs - gt_classes) ** 2).sum(-1)
    terms = {
        "xy": lambda_coord * (mask * xy).sum() / N,
        "wh": lambda_coord * (mask * wh).sum() / N,
        "obj": (mask * obj).sum() / N,
        "noobj": lambda_noobj * ((1 - mask) * noobj).sum() / N,
        "class": (has_object.to(pred.dtype) * cls).sum() / N,
    }
    terms["loss"] = sum(terms.values())
    return terms


def decode(pred: torch.Tensor, S: int, B: int, C: int, conf_threshold: float = 0.2, iou_threshold: float = 0.5, *,
           image_size: tuple[int, int], max_detections: int = 100,
           min_size: float = 1.0) -> list[dict[str, torch.Tensor]]:
    """The detections of a batch of YOLO v1 outputs: class scores over a threshold, then NMS per class.

    Each predicted box gets one score per class, ``C_j = conf * p(c)`` (the paper's class-specific confidence);
    the (box, class) pairs with ``C_j > conf_threshold`` are kept, their boxes turned into pixels and clipped to
    the image, boxes narrower or lower than ``min_size`` pixels dropped, and ``torchvision.ops.batched_nms``
    removes, class by class, each box that overlaps a higher-scoring one of its class by more than
    ``iou_threshold``. A box may thus come out under two classes.

    Args:
        pred: ``(N, S, S, B * 5 + C)``, the layout (after the head's activation).
        S: the grid's side.
        B: boxes per cell.
        C: classes.
        conf_threshold: the least class score kept (exclusive).
        iou_threshold: NMS's overlap limit.
        image_size: ``(H, W)`` of the images in pixels (keyword only: no default that could be silently wrong).
        max_detections: the most detections per image, the best first (COCO counts 100).
        min_size: the least width and height in pixels, after clipping.

    Returns:
        One dict per image in convkit's internal form: ``"boxes"`` float ``(K, 4)`` xyxy pixels, ``"scores"``
        ``(K,)`` (decreasing), ``"labels"`` int64 ``(K,)``; ``K`` may be 0. Without gradient.

    Raises:
        ValueError: ``pred`` does not have the shape that ``S``, ``B``, ``C`` give.

    Example:
        >>> pred = torch.zeros(1, 2, 2, 2 * 5 + 2)
        >>> pred[0, 0, 1, :5] = torch.tensor([0.5, 0.64, 0.36, 0.64, 0.9])  # row 0, column 1, first box
        >>> pred[0, 0, 1, 10:] = torch.tensor([0.0, 1.0])  # class 1
        >>> out = decode(pred, S=2, B=2, C=2, image_size=(100, 100))[0]
        >>> [round(v, 2) for v in out["boxes"][0].tolist()], round(out["scores"][0].item(), 4), out["labels"].tolist()
        ([57.0, 0.0, 93.0, 64.0], 0.9, [1])
    """
    _check_layout(pred, S, B, C)
    height, width = (int(v) for v in image_size)
    scale = torch.tensor([width, height, width, height], device=pred.device, dtype=pred.dtype)
    results = []
    with torch.no_grad():
        xywh, conf, probs = _split(pred.detach(), B)
        boxes = _cells_to_image(xywh) * scale  # (N, S, S, B, 4) pixels
        scores = conf.unsqueeze(-1) * probs.unsqueeze(-2)  # (N, S, S, B, C)
        for n in range(pred.shape[0]):
            score = scores[n].reshape(-1)
            keep = torch.nonzero(score > conf_threshold).squeeze(1)
            box_index, label = keep // C, keep % C
            kept_boxes = clip_boxes_to_image(boxes[n].reshape(-1, 4)[box_index], (height, width))
            large = remove_small_boxes(kept_boxes, min_size)
            kept_boxes, score, label = kept_boxes[large], score[keep][large], label[large]
            order = batched_nms(kept_boxes, score, label, iou_threshold)[:max_detections]
            results.append({"boxes": kept_boxes[order].float(), "scores": score[order], "labels": label[order]})
    return results


class YoloV1(nn.Module):
    """A YOLO v1 detector on any convkit backbone: ``backbone.forward_features`` then a :class:`YoloV1Head`.

    The backbone is any zoo model (``convkit.create_model``) or other module with ``forward_features(images) ->
    (N, num_features, h, w)`` and ``num_features``; its classifier is dropped (``reset_classifier(0)``, when it
    has one), so that it holds no parameters the detector never uses. The input is a float image batch
    ``(N, C, H, W)`` normalised as the backbone expects; the output the layout ``(N, S, S, B * 5 + C)``.

    Args:
        backbone: the feature extractor.
        S: the grid's side (the paper's 7).
        B: boxes per cell (the paper's 2).
        C: classes (the paper's 20 for Pascal VOC).
        hidden: channels of the head's hidden convolution.
        activation: the head's output activation, ``"sigmoid"`` or ``"linear"`` (see :class:`YoloV1Head`).

    Raises:
        ModelArgumentError: the backbone has no ``forward_features`` or ``num_features``; bad sizes.

    Example:
        >>> from convkit.models import create_model
        >>> YoloV1(create_model("fastcnn"), S=7, B=2, C=20)(torch.zeros(1, 1, 96, 96)).shape
        torch.Size([1, 7, 7, 30])
    """

    def __init__(self, backbone: nn.Module, S: int = 7, B: int = 2, C: int = 20, hidden: int = 256,
                 activation: str = "sigmoid"):
        super().__init__()
        features = getattr(backbone, "num_features", None)
        if not callable(getattr(backbone, "forward_features", None)) or not isinstance(features, int):
            raise ModelArgumentError(f"YOLO v1 needs a backbone with forward_features() and num_features (a convkit "
                                     f"zoo model); {type(backbone).__name__} has not")
        if callable(getattr(backbone, "reset_classifier", None)):
            backbone.reset_classifier(0)
        self.backbone = backbone
        self.head = YoloV1Head(features, S, B, C, hidden, activation)
        self.S, self.B, self.C = S, B, C

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone.forward_features(images))

    def stage_layout(self) -> list[tuple[str, list[str]]] | None:
        """The backbone's stages (less its classifier, its last stage), then ``head``; ``None`` if the backbone
        does not say (freezing and per-stage learning rates, :func:`convkit.reuse.model_stages`)."""
        method = getattr(self.backbone, "stage_layout", None)
        inner = method() if callable(method) else None
        if not inner:
            return None
        return [*((name, [f"backbone.{m}" for m in modules]) for name, modules in inner[:-1]), ("head", ["head"])]

    def loss(self, pred: torch.Tensor, targets: YoloTargets, lambda_coord: float = 5.0,
             lambda_noobj: float = 0.5) -> dict[str, torch.Tensor]:
        """:func:`yolo_v1_loss` with this model's ``S``, ``B``, ``C``."""
        return yolo_v1_loss(pred, targets, self.S, self.B, self.C, lambda_coord, lambda_noobj)

    def decode(self, pred: torch.Tensor, image_size: tuple[int, int], conf_threshold: float = 0.2,
               iou_threshold: float = 0.5, max_detections: int = 100) -> list[dict[str, torch.Tensor]]:
        """:func:`decode` with this model's ``S``, ``B``, ``C``."""
        return decode(pred, self.S, self.B, self.C, conf_threshold, iou_threshold, image_size=image_size,
                      max_detections=max_detections)
