"""Box rules that every reader and augmentation of detection data follows (issue 13, "Bad annotations").

Boxes are float (M, 4) xyxy in pixels: x1, y1 the inclusive top-left edges, x2, y2 the exclusive bottom-right
edges (a box over pixels 3..5 has x1 = 3, x2 = 6; COCO's x + w), as `convkit.data.augment.warp_boxes` and
torchvision take them. Conversions and IoU are torchvision's (`torchvision.ops.box_convert`, `box_iou`).
"""

from __future__ import annotations

import torch
from torchvision.ops import clip_boxes_to_image

CLIP_TOLERANCE = 0.01  # pixels: a box reaching this little outside its image is clipped without being reported

__all__ = ["CLIP_TOLERANCE", "clip_boxes"]


def clip_boxes(boxes: torch.Tensor, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Clips boxes to their image and finds those left degenerate: the one rule for boxes outside the image.

    A box reaching outside the image is clipped to it; a box of zero width or height after clipping (one
    given so, or one wholly outside the image) is degenerate, to be dropped. Readers report both, naming the
    file; boxes reaching out by no more than `CLIP_TOLERANCE` pixels (rounding) are clipped silently.

    Args:
        boxes: float (M, 4) xyxy pixel boxes.
        height, width: the image's size.

    Returns:
        (clipped boxes (M, 4), keep: bool (M,) False for the degenerate boxes, clipped: bool (M,) True for the
        kept boxes that reached outside the image).

    Example:
        >>> boxes, keep, clipped = clip_boxes(torch.tensor([[2.0, 2.0, 5.0, 6.0], [-3.0, 1.0, 4.0, 9.0],
        ...                                                 [9.0, 0.0, 12.0, 4.0], [3.0, 3.0, 3.0, 5.0]]), 8, 8)
        >>> boxes.tolist(), keep.tolist(), clipped.tolist()
        ([[2.0, 2.0, 5.0, 6.0], [0.0, 1.0, 4.0, 8.0], [8.0, 0.0, 8.0, 4.0], [3.0, 3.0, 3.0, 5.0]],
         [True, True, False, False], [False, True, False, False])
    """
    out = clip_boxes_to_image(boxes, (height, width))
    keep = (out[:, 2] > out[:, 0]) & (out[:, 3] > out[:, 1])
    clipped = keep & ((out - boxes).abs() > CLIP_TOLERANCE).any(dim=1)
    return out, keep, clipped


def target_tensors(target: dict, index: int, device: torch.device | str | None = None,
                   num_classes: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One target's objects that count, as (boxes float32 (M, 4) xyxy, labels int64 (M,)): crowd regions left out.

    The one reading of a target for every loss that takes convkit's target dicts (YOLO's, the localiser's).

    Args:
        target: {"boxes", "labels", optional "iscrowd"}.
        index: its place in the batch, for messages.
        device: where the tensors go (default: the boxes' own device).
        num_classes: if given, labels outside 0..num_classes-1 are refused.

    Returns:
        (boxes, labels) of the objects that are not crowds.

    Raises:
        ValueError: boxes not (M, 4) or labels not (M,).
        LabelError: a label outside the classes.

    Example:
        >>> target_tensors({"boxes": torch.tensor([[0., 0, 4, 4], [1, 1, 2, 2]]), "labels": torch.tensor([1, 0]),
        ...                 "iscrowd": torch.tensor([False, True])}, 0, num_classes=2)
        (tensor([[0., 0., 4., 4.]]), tensor([1]))
    """
    from convkit.data.errors import LabelError

    boxes = torch.as_tensor(target["boxes"], dtype=torch.float32, device=device)
    labels = torch.as_tensor(target["labels"], device=boxes.device).long()
    if boxes.dim() != 2 or boxes.shape[1] != 4 or labels.shape != (boxes.shape[0],):
        raise ValueError(f"target {index}: boxes must be (M, 4) and labels (M,), got {tuple(boxes.shape)} and "
                         f"{tuple(labels.shape)}")
    if "iscrowd" in target:
        keep = ~torch.as_tensor(target["iscrowd"], device=boxes.device).bool()
        boxes, labels = boxes[keep], labels[keep]
    if num_classes is not None:
        bad = (labels < 0) | (labels >= num_classes)
        if bad.any():
            raise LabelError(f"target {index}: label {labels[bad][0].item()} is outside the {num_classes} classes "
                             f"0..{num_classes - 1}")
    return boxes, labels
