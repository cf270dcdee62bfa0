"""Faster R-CNN and RetinaNet from torchvision on convkit backbones, sized for small images, nothing downloaded.

torchvision's detectors (``FasterRCNN``, ``RetinaNet``) take a *backbone*: a module with ``out_channels`` that
maps a batch of images to an ordered dict of feature maps. :func:`detection_backbone` makes one from any convkit
classifier (a zoo name, a model file, a run folder or checkpoint whose trained weights come along, foreign
torchvision/timm weights through `convkit.models.foreign`, or an ``nn.Module``): the stages of
`convkit.reuse.model_stages` are cut out with ``create_feature_extractor`` and, optionally, joined by a Feature
Pyramid Network. :func:`faster_rcnn` and :func:`retinanet` build the detectors with torchvision's classes (never
the builders that fetch weights).

Conventions at the boundary (convkit's internal form on one side, torchvision's on the other):

* **Labels shift by one.** convkit's labels are ``0..C-1`` without background; torchvision reserves label 0 for
  the background, so the detectors are built with ``num_classes + 1`` outputs, :func:`to_torchvision_targets`
  adds 1 and :func:`from_torchvision_detections` subtracts it. RetinaNet (sigmoid classes, no background
  class) gets the same ``+ 1`` so that one convention serves both, as torchvision's COCO models do: its output
  0 is never a target, and detections of it are dropped.
* **Images** are float ``(C, H, W)`` on 0..1 (:func:`to_torchvision_images` divides uint8 by 255), 1 or 3
  channels; the detector's ``GeneralizedRCNNTransform`` normalises them with the backbone's own mean and std
  (``(x - mean) / std``, convkit's normalisation: 0.5/0.5 for an untrained model, the training statistics for a
  checkpoint), resizes them so the short side is ``min_size`` (96 by default: the scenes' size, so they are
  not resized) unless the long side would pass ``max_size``, and pads the batch to a multiple of 32.
* **Anchors** (:func:`default_anchor_sizes`): the finest feature map gets anchors from ``smallest`` (12 px, the
  scenes' smallest objects) and each coarser level twice the previous, as the maps' strides double; within an
  octave, 2 sizes (Faster R-CNN: a square object lies between two anchors a factor sqrt(2) apart, so one of
  them overlaps it with IoU >= 1/sqrt(2) ~ 0.71, above the RPN's 0.7 threshold) or 3 (RetinaNet, as in the
  paper), each at aspect ratios 0.5, 1 and 2. torchvision's defaults (32-512 px) suit 800-px images, not 96-px
  scenes with 12-56 px objects.

Example::

    >>> model = faster_rcnn("resnet18", num_classes=3).eval()
    >>> with torch.no_grad():
    ...     out = model(to_torchvision_images(torch.zeros(1, 3, 96, 96, dtype=torch.uint8)))
    >>> sorted(from_torchvision_detections(out)[0])
    ['boxes', 'labels', 'scores']
"""

from __future__ import annotations

import math
import os
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn
from torchvision.models.detection import FasterRCNN, MaskRCNN, RetinaNet
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.models.feature_extraction import create_feature_extractor
from torchvision.ops import FeaturePyramidNetwork, MultiScaleRoIAlign, roi_pool
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool, LastLevelP6P7
from torchvision.ops.poolers import LevelMapper

from convkit.data.errors import DataFormatError
from convkit.models._registry import ModelArgumentError
from convkit.utils import shorten

__all__ = ["SMALL_IMAGE_PROPOSALS", "DetectionBackbone", "MultiScaleRoIMaxPool", "default_anchor_sizes", "detection_backbone",
           "faster_rcnn", "from_torchvision_detections", "mask_rcnn", "retinanet", "to_torchvision_images",
           "to_torchvision_targets"]

SMALLEST_OBJECT = 12  # px: the scenes' smallest objects; the finest level's first anchor
MIN_SIZE, MAX_SIZE = 96, 160  # the detectors' resize: 96-px scenes pass unchanged
MIN_STRIDE = 4  # default stages: maps at stride >= 4 (finer ones cost too much on a CPU)
# Proposals for a 96-px image with a few objects: torchvision's 2000 (train) / 1000 (test) proposals and 512
# sampled RoIs per image are for 800-px COCO images; these make a training step about 3x faster on a CPU.
SMALL_IMAGE_PROPOSALS = {"rpn_pre_nms_top_n_train": 600, "rpn_post_nms_top_n_train": 300,
                         "rpn_pre_nms_top_n_test": 300, "rpn_post_nms_top_n_test": 100,
                         "box_batch_size_per_image": 128}
_PROBE = 128  # side of the zero image that measures each stage's stride


class DetectionBackbone(nn.Module):
    """A convkit classifier's body as torchvision's detectors want it (``BackboneWithFPN``'s interface).

    Attributes:
        body: the feature extractor (a ``torch.fx.GraphModule``) returning the chosen stages' maps as
            ``{"0": ..., "1": ...}``, finest first.
        fpn: the ``FeaturePyramidNetwork`` over them, or None (then only the last map is returned, as ``"0"``).
        out_channels: channels of every returned map.
        stages: the convkit stage names the maps come from; strides: their strides in pixels.
        featmap_names: the names of the maps RoI pooling reads (the FPN's extra levels excluded).
        image_mean, image_std: the classifier's normalisation (per channel, on 0..1), for the detector.
        in_channels: image channels the backbone takes (1 or 3).
    """

    def __init__(self, body: nn.Module, fpn: nn.Module | None, out_channels: int, stages: list[str],
                 strides: list[int], image_mean: list[float], image_std: list[float], in_channels: int):
        super().__init__()
        self.body = body
        self.fpn = fpn
        self.out_channels = out_channels
        self.stages, self.strides = stages, strides
        self.image_mean, self.image_std, self.in_channels = image_mean, image_std, in_channels
        self.featmap_names = [str(i) for i in range(len(stages))] if fpn is not None else ["0"]

    @property
    def num_levels(self) -> int:
        """How many maps the forward pass returns (the FPN's extra levels included)."""
        extra = self.fpn.extra_blocks if self.fpn is not None else None
        return len(self.featmap_names) + (1 if isinstance(extra, LastLevelMaxPool) else
                                          2 if isinstance(extra, LastLevelP6P7) else 0)

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        maps = self.body(x)
        if self.fpn is None:
            return OrderedDict([("0", maps[str(len(self.stages) - 1)])])
        return self.fpn(maps)


def _resolve(backbone: Any, in_channels: int | None) -> nn.Module:
    from convkit.models.foreign import load_foreign
    from convkit.models.reference import resolve_model

    if isinstance(backbone, Mapping):  # a state dict (torchvision's resnet18, a timm model): its zoo twin
        model, _ = load_foreign(dict(backbone), in_channels=in_channels)
        return resolve_model(model)
    if isinstance(backbone, nn.Module):
        if in_channels is not None:
            raise ModelArgumentError(f"in_channels={in_channels}: the backbone module is already built; build it "
                                     "with the channels wanted")
        return resolve_model(backbone)
    if isinstance(backbone, str | os.PathLike) and (os.path.isdir(backbone) or str(backbone).endswith(
            ".safetensors")):
        if in_channels is not None:
            raise ModelArgumentError(f"in_channels={in_channels}: the checkpoint {shorten(str(backbone))} fixes "
                                     "its input channels")
        return resolve_model(backbone)
    return resolve_model(backbone, in_channels=in_channels)


def _channels(model: nn.Module) -> int:
    shape = model.model_cfg.input_shape
    if shape is not None:
        return int(shape[0])
    first = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    return int(first.in_channels) if first is not None else 3


def _probe(extractor: nn.Module, channels: int) -> list[tuple[int, int]]:
    """(channels, stride) of each map the extractor returns, from one zero image (in eval mode: BN untouched)."""
    was_training = extractor.training
    extractor.eval()
    try:
        with torch.no_grad():
            device = next(extractor.parameters()).device
            maps = extractor(torch.zeros(1, channels, _PROBE, _PROBE, device=device))
    finally:
        extractor.train(was_training)
    return [(int(m.shape[1]), max(1, round(_PROBE / m.shape[-1]))) for m in maps.values()]


def detection_backbone(backbone: Any, fpn: bool = True, returned_stages: Sequence[str] | None = None,
                       out_channels: int | None = None, extra_blocks: str | None = "maxpool",
                       in_channels: int | None = None) -> DetectionBackbone:
    """A convkit classifier -> the backbone torchvision's Faster R-CNN and RetinaNet take.

    Args:
        backbone: a zoo name ("resnet18", "fastcnn"), a model file, a run folder or checkpoint (its trained
            weights and normalisation come along), foreign weights (a torchvision/timm state dict as a file or a
            dict: loaded into the zoo twin, nothing downloaded), or an ``nn.Module`` classifier.
        fpn: join the stages with a Feature Pyramid Network; False returns the last stage's map only.
        returned_stages: stage names of `convkit.reuse.model_stages` ("layer2", "stage3"...), input side
            first. None: of the stages (the head excluded) whose maps have stride >= 4, the last one of each
            stride (resnet18: layer1-layer4; fastcnn: stage3), and without FPN the last of them only.
        out_channels: the FPN's channels (default 64: cheap on a CPU); without FPN the map keeps its own.
        extra_blocks: the FPN's extra levels: "maxpool" (P6 by max pooling, Faster R-CNN's), "p6p7" (P6 and
            P7 by strided convolutions, RetinaNet's) or None.
        in_channels: image channels (1 or 3) for a zoo name or foreign weights (a checkpoint or module fixes its
            own).

    Returns:
        A `DetectionBackbone`: maps ``{"0", "1", ..., "pool"}`` with ``out_channels`` channels each.

    Raises:
        ModelArgumentError: an unknown stage (the message lists the model's), the head asked for, out_channels
            without FPN, an unknown extra_blocks, a model that cannot be traced.
        UnknownModelError, CheckpointError, FileNotFoundError: from `convkit.models.reference.resolve_model`.

    Example:
        >>> net = detection_backbone("resnet18", out_channels=32)
        >>> net.stages, net.strides, net.out_channels
        (['layer1', 'layer2', 'layer3', 'layer4'], [4, 8, 16, 32], 32)
        >>> {k: tuple(v.shape) for k, v in net(torch.zeros(1, 3, 64, 64)).items()}
        {'0': (1, 32, 16, 16), '1': (1, 32, 8, 8), '2': (1, 32, 4, 4), '3': (1, 32, 2, 2), 'pool': (1, 32, 1, 1)}
    """
    from convkit.reuse.freeze import model_stages

    if not fpn and out_channels is not None:
        raise ModelArgumentError(f"out_channels={out_channels} is the FPN's width; without FPN the map keeps "
                                 "its own channels")
    if extra_blocks not in ("maxpool", "p6p7", None):
        raise ModelArgumentError(f"extra_blocks={shorten(extra_blocks)}: expected 'maxpool', 'p6p7' or None")
    model = _resolve(backbone, in_channels)
    channels = _channels(model)
    stages = [s for s in model_stages(model) if s.name != "head"]
    names = [s.name for s in stages]
    if returned_stages is not None:
        returned_stages = [returned_stages] if isinstance(returned_stages, str) else list(returned_stages)
        unknown = [s for s in returned_stages if s not in names]
        if unknown or not returned_stages:
            raise ModelArgumentError(f"returned_stages={shorten(returned_stages)}: {model.model_cfg.name} has the "
                                     f"stages {', '.join(names)} (the head is not a feature map)")
        chosen = sorted(set(returned_stages), key=names.index)
    else:
        chosen = names
    nodes = {stages[names.index(n)].modules[-1]: n for n in chosen}
    try:
        extractor = create_feature_extractor(model, {node: str(i) for i, node in enumerate(nodes)})
    except Exception as err:  # torch.fx cannot trace data-dependent control flow
        raise ModelArgumentError(f"{model.model_cfg.name}: its stages cannot be cut out by torch.fx "
                                 f"({shorten(str(err), 200)}); pass a zoo model or a model file") from err
    shapes = _probe(extractor, channels)
    if returned_stages is None:  # the last stage of each stride >= MIN_STRIDE (all of them if none is that coarse)
        keep = [i for i, (_, s) in enumerate(shapes) if s >= MIN_STRIDE or s == shapes[-1][1]]
        keep = [i for i in keep if i == len(shapes) - 1 or shapes[i + 1][1] != shapes[i][1]]
        if not fpn:
            keep = keep[-1:]
        chosen = [chosen[i] for i in keep]
        shapes = [shapes[i] for i in keep]
        nodes = {stages[names.index(n)].modules[-1]: n for n in chosen}
        extractor = create_feature_extractor(model, {node: str(i) for i, node in enumerate(nodes)})
    elif not fpn and len(chosen) > 1:
        raise ModelArgumentError(f"returned_stages={shorten(returned_stages)}: without FPN the detector reads "
                                 "one map; name one stage")
    mean, std = model.model_cfg.mean_std(channels)
    if fpn:
        width = out_channels or 64
        extra = {"maxpool": LastLevelMaxPool(), "p6p7": LastLevelP6P7(width, width), None: None}[extra_blocks]
        pyramid = FeaturePyramidNetwork([c for c, _ in shapes], width, extra_blocks=extra)
    else:
        width, pyramid = shapes[-1][0], None
    return DetectionBackbone(extractor, pyramid, width, chosen, [s for _, s in shapes], mean.tolist(),
                             std.tolist(), channels)


def default_anchor_sizes(num_levels: int, per_octave: int = 2, smallest: float = SMALLEST_OBJECT,
                         largest: float = MIN_SIZE) -> tuple[tuple[int, ...], ...]:
    """Anchor sizes per feature level: ``smallest * 2**level * 2**(k / per_octave)``, k = 0..per_octave-1.

    With one level (no FPN) every size from ``smallest`` up to ``largest`` goes on that map instead.

    Args:
        num_levels: feature maps the detector reads (the FPN's extra levels included).
        per_octave: sizes per doubling (2 for Faster R-CNN, 3 for RetinaNet).
        smallest: the finest level's first size, in pixels.
        largest: with one level, the largest size (the image side).

    Returns:
        One tuple of sizes (rounded pixels) per level, as ``AnchorGenerator`` takes them.

    Example:
        >>> default_anchor_sizes(3)
        ((12, 17), (24, 34), (48, 68))
        >>> default_anchor_sizes(1)
        ((12, 17, 24, 34, 48, 68, 96),)
    """
    if num_levels == 1:
        count = int(math.floor(per_octave * math.log2(largest / smallest) + 1e-9)) + 1
        return (tuple(round(smallest * 2 ** (k / per_octave)) for k in range(max(count, 1))),)
    return tuple(tuple(round(smallest * 2 ** (level + k / per_octave)) for k in range(per_octave))
                 for level in range(num_levels))


def _anchors(backbone: DetectionBackbone, anchor_sizes, aspect_ratios, per_octave: int,
             min_size: int) -> AnchorGenerator:
    sizes = anchor_sizes or default_anchor_sizes(backbone.num_levels, per_octave, largest=min_size)
    sizes = tuple(tuple(s) if isinstance(s, Sequence) else (s,) for s in sizes)
    if len(sizes) != backbone.num_levels:
        raise ModelArgumentError(f"anchor_sizes: {len(sizes)} levels given, the backbone returns "
                                 f"{backbone.num_levels} maps")
    return AnchorGenerator(sizes, (tuple(aspect_ratios),) * len(sizes))


def _backbone(backbone, fpn, returned_stages, out_channels, extra, in_channels) -> DetectionBackbone:
    if isinstance(backbone, DetectionBackbone):
        return backbone
    return detection_backbone(backbone, fpn=fpn, returned_stages=returned_stages, out_channels=out_channels,
                              extra_blocks=extra if fpn else None, in_channels=in_channels)


def _normalisation(backbone: DetectionBackbone, kwargs: dict) -> None:
    kwargs.setdefault("image_mean", backbone.image_mean)
    kwargs.setdefault("image_std", backbone.image_std)
    if len(kwargs["image_mean"]) != backbone.in_channels or len(kwargs["image_std"]) != backbone.in_channels:
        raise ModelArgumentError(f"image_mean/image_std: {len(kwargs['image_mean'])}/{len(kwargs['image_std'])} "
                                 f"values for a backbone of {backbone.in_channels} input channels")


def faster_rcnn(backbone: Any, num_classes: int, min_size: int = MIN_SIZE, max_size: int = MAX_SIZE,
                roi_pool: str = "align", fpn: bool = True, returned_stages: Sequence[str] | None = None,
                out_channels: int | None = None, in_channels: int | None = None,
                anchor_sizes: Sequence[Sequence[int]] | None = None,
                aspect_ratios: Sequence[float] = (0.5, 1.0, 2.0), **kwargs) -> FasterRCNN:
    """torchvision's Faster R-CNN (RPN + RoI pooling + box head, trained jointly) on a convkit backbone.

    Args:
        backbone: anything `detection_backbone` takes, or a `DetectionBackbone` (then fpn, returned_stages,
            out_channels and in_channels are its own).
        num_classes: convkit's classes, without background (the model has ``num_classes + 1`` outputs).
        min_size, max_size: the transform's resize (short side to min_size unless the long side passes
            max_size).
        roi_pool: "align" (torchvision's ``MultiScaleRoIAlign``, 7x7, sampling ratio 2) or "max" (the lecture's
            RoI max pooling, `MultiScaleRoIMaxPool`).
        fpn, returned_stages, out_channels, in_channels: see `detection_backbone`.
        anchor_sizes: per-level sizes; default `default_anchor_sizes` (2 per octave from 12 px).
        aspect_ratios: height/width ratios of the anchors, the same on every level.
        **kwargs: FasterRCNN's other arguments (rpn_*, box_*; image_mean/image_std override the backbone's).
            Proposal counts default to `SMALL_IMAGE_PROPOSALS` (600/300 RPN proposals before/after NMS in
            training, 300/100 in evaluation, 128 sampled RoIs per image) instead of torchvision's COCO values.

    Returns:
        A ``torchvision.models.detection.FasterRCNN``: in train mode ``model(images, targets)`` returns the loss
        dict (loss_classifier, loss_box_reg, loss_objectness, loss_rpn_box_reg); in eval mode
        ``model(images)`` returns ``[{"boxes", "labels", "scores"}]`` with torchvision's labels (1-based).

    Raises:
        ModelArgumentError: an unknown roi_pool, anchor levels that are not the backbone's, num_classes < 1,
            and what `detection_backbone` raises.

    Example:
        >>> model = faster_rcnn("fastcnn", num_classes=2, roi_pool="max")
        >>> type(model.roi_heads.box_roi_pool).__name__, model.backbone.in_channels
        ('MultiScaleRoIMaxPool', 1)
    """
    if roi_pool not in ("align", "max"):
        raise ModelArgumentError(f"roi_pool={shorten(roi_pool)}: expected 'align' (RoIAlign) or 'max' "
                                 "(RoI max pooling)")
    _check_classes(num_classes)
    body = _backbone(backbone, fpn, returned_stages, out_channels, "maxpool", in_channels)
    _normalisation(body, kwargs)
    for key, value in SMALL_IMAGE_PROPOSALS.items():
        kwargs.setdefault(key, value)
    anchors = kwargs.pop("rpn_anchor_generator", None) or _anchors(body, anchor_sizes, aspect_ratios, 2, min_size)
    pool = kwargs.pop("box_roi_pool", None) or MultiScaleRoIAlign(body.featmap_names, output_size=7,
                                                                  sampling_ratio=2)
    model = FasterRCNN(body, num_classes=num_classes + 1, min_size=min_size, max_size=max_size,
                       rpn_anchor_generator=anchors, box_roi_pool=pool, **kwargs)
    if roi_pool == "max":  # FasterRCNN's constructor accepts RoIAlign only: swapped after it
        model.roi_heads.box_roi_pool = MultiScaleRoIMaxPool(pool.featmap_names, output_size=pool.output_size)
    return model


def mask_rcnn(backbone: Any, num_classes: int, min_size: int = MIN_SIZE, max_size: int = MAX_SIZE,
              roi_pool: str = "align", fpn: bool = True, returned_stages: Sequence[str] | None = None,
              out_channels: int | None = None, in_channels: int | None = None,
              anchor_sizes: Sequence[Sequence[int]] | None = None,
              aspect_ratios: Sequence[float] = (0.5, 1.0, 2.0), mask_layers: Sequence[int] | None = None,
              **kwargs) -> MaskRCNN:
    """torchvision's Mask R-CNN (Faster R-CNN + a binary mask head per class, trained jointly) on a convkit
    backbone: `faster_rcnn`'s backbone, anchors, normalisation and proposal counts, and a mask branch that reads
    14 x 14 RoIAlign cells of the same maps and predicts a 28 x 28 mask per RoI.

    Args:
        backbone, num_classes, min_size, max_size, fpn, returned_stages, out_channels, in_channels, anchor_sizes,
            aspect_ratios: as in `faster_rcnn`.
        roi_pool: "align" only (the mask branch needs RoIAlign's sub-pixel alignment).
        mask_layers: the channels of the mask head's 3 x 3 convolutions (default: 4 of the backbone's width,
            the paper's head at the FPN's width; torchvision's is 4 x 256).
        **kwargs: MaskRCNN's other arguments (rpn_*, box_*, mask_roi_pool, mask_head, mask_predictor).

    Returns:
        A ``torchvision.models.detection.MaskRCNN``: train mode ``model(images, targets)`` (targets with
        ``"masks"`` uint8 (M, H, W)) returns Faster R-CNN's losses plus ``loss_mask``; eval mode adds ``"masks"``
        (K, 1, H, W) probabilities in the image's pixels to each detection dict.

    Raises:
        ModelArgumentError: roi_pool other than "align", and what `faster_rcnn` raises.

    Example:
        >>> model = mask_rcnn("fastcnn", num_classes=2)
        >>> type(model.roi_heads.mask_roi_pool).__name__, model.roi_heads.mask_roi_pool.output_size
        ('MultiScaleRoIAlign', (14, 14))
    """
    if roi_pool != "align":
        raise ModelArgumentError(f"roi_pool={shorten(roi_pool)}: Mask R-CNN takes 'align' (RoIAlign) only")
    _check_classes(num_classes)
    body = _backbone(backbone, fpn, returned_stages, out_channels, "maxpool", in_channels)
    _normalisation(body, kwargs)
    for key, value in SMALL_IMAGE_PROPOSALS.items():
        kwargs.setdefault(key, value)
    anchors = kwargs.pop("rpn_anchor_generator", None) or _anchors(body, anchor_sizes, aspect_ratios, 2, min_size)
    pool = kwargs.pop("box_roi_pool", None) or MultiScaleRoIAlign(body.featmap_names, output_size=7,
                                                                  sampling_ratio=2)
    mask_pool = kwargs.pop("mask_roi_pool", None) or MultiScaleRoIAlign(body.featmap_names, output_size=14,
                                                                        sampling_ratio=2)
    layers = [int(c) for c in (mask_layers or (body.out_channels,) * 4)]
    if not layers or min(layers) < 1:
        raise ModelArgumentError(f"mask_layers={shorten(mask_layers)}: expected channel counts >= 1")
    head = kwargs.pop("mask_head", None) or MaskRCNNHeads(body.out_channels, layers, 1)
    predictor = kwargs.pop("mask_predictor", None)
    model = MaskRCNN(body, num_classes=num_classes + 1, min_size=min_size, max_size=max_size,
                     rpn_anchor_generator=anchors, box_roi_pool=pool, mask_roi_pool=mask_pool, mask_head=head,
                     **kwargs)
    # MaskRCNN's constructor sizes its own predictor for a 256-channel head (a given one needs num_classes=None
    # and a box predictor too): swapped after it for the head's width
    model.roi_heads.mask_predictor = predictor or MaskRCNNPredictor(layers[-1], layers[-1], num_classes + 1)
    return model


def retinanet(backbone: Any, num_classes: int, min_size: int = MIN_SIZE, max_size: int = MAX_SIZE,
              returned_stages: Sequence[str] | None = None, out_channels: int | None = None,
              in_channels: int | None = None, anchor_sizes: Sequence[Sequence[int]] | None = None,
              aspect_ratios: Sequence[float] = (0.5, 1.0, 2.0), **kwargs) -> RetinaNet:
    """torchvision's RetinaNet (FPN with P6/P7, focal loss) on a convkit backbone.

    Args:
        backbone: anything `detection_backbone` takes (built with an FPN and ``extra_blocks="p6p7"``), or a
            `DetectionBackbone`.
        num_classes: convkit's classes; the head has ``num_classes + 1`` outputs (output 0 never a target).
        min_size, max_size: the transform's resize, as in `faster_rcnn`.
        returned_stages, out_channels, in_channels: see `detection_backbone`.
        anchor_sizes: per-level sizes; default `default_anchor_sizes` with 3 per octave (the paper's).
        aspect_ratios: as in `faster_rcnn`.
        **kwargs: RetinaNet's other arguments (score_thresh, nms_thresh, detections_per_img, fg_iou_thresh...).

    Returns:
        A ``torchvision.models.detection.RetinaNet``; train mode: {classification, bbox_regression} losses.

    Raises:
        ModelArgumentError: as `faster_rcnn`.

    Example:
        >>> model = retinanet("resnet18", num_classes=2)
        >>> model.backbone.num_levels, model.anchor_generator.sizes[0]
        (6, (12, 15, 19))
    """
    _check_classes(num_classes)
    body = _backbone(backbone, True, returned_stages, out_channels, "p6p7", in_channels)
    _normalisation(body, kwargs)
    anchors = kwargs.pop("anchor_generator", None) or _anchors(body, anchor_sizes, aspect_ratios, 3, min_size)
    return RetinaNet(body, num_classes=num_classes + 1, min_size=min_size, max_size=max_size,
                     anchor_generator=anchors, **kwargs)


def _check_classes(num_classes: int) -> None:
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ModelArgumentError(f"num_classes={shorten(num_classes)}: expected the number of object classes "
                                 "(>= 1, background not counted)")


class MultiScaleRoIMaxPool(nn.Module):
    """RoI max pooling (Fast R-CNN's operator) as a drop-in for torchvision's ``MultiScaleRoIAlign``.

    Each box is cut out of one feature map and max-pooled to ``output_size`` x ``output_size`` cells
    (``torchvision.ops.roi_pool``, which rounds the box to the map's grid, unlike RoIAlign's bilinear samples).
    With several maps (an FPN), a box of side ``sqrt(area)`` reads level ``floor(4 + log2(sqrt(area) / 224))``,
    clamped to the maps given, as ``MultiScaleRoIAlign``'s level mapper chooses it.

    Args:
        featmap_names: the maps to read, finest first.
        output_size: cells per side (7).
        canonical_scale, canonical_level: the level mapper's (224 px boxes read level 4).

    ``roi_pool`` reads a box's x2, y2 as the last pixel *inside* it (Fast R-CNN's convention; convkit's and
    RoIAlign's x2 is the edge after it), so a box one pixel larger is pooled; torchvision's detectors feed it
    their boxes unchanged, and so does this module.

    Example (a 4 x 4 map, the box over pixels 0..3, 2 x 2 cells of 2 x 2 pixels each, the max of each):
        >>> pool = MultiScaleRoIMaxPool(["0"], output_size=2)
        >>> x = {"0": torch.arange(16.0).view(1, 1, 4, 4)}
        >>> pool(x, [torch.tensor([[0.0, 0.0, 3.0, 3.0]])], [(4, 4)]).flatten().tolist()
        [5.0, 7.0, 13.0, 15.0]
    """

    def __init__(self, featmap_names: Sequence[str], output_size: int = 7, canonical_scale: int = 224,
                 canonical_level: int = 4):
        super().__init__()
        self.featmap_names = list(featmap_names)
        self.output_size = (output_size, output_size) if isinstance(output_size, int) else tuple(output_size)
        self.canonical_scale, self.canonical_level = canonical_scale, canonical_level

    def forward(self, x: Mapping[str, torch.Tensor], boxes: list[torch.Tensor],
                image_shapes: list[tuple[int, int]]) -> torch.Tensor:
        maps = [x[name] for name in self.featmap_names]
        height = max(s[0] for s in image_shapes)
        scales = [2.0 ** round(math.log2(m.shape[-2] / height)) for m in maps]
        rois = torch.cat([torch.cat([torch.full_like(b[:, :1], i), b], dim=1) for i, b in enumerate(boxes)])
        if len(maps) == 1:
            return roi_pool(maps[0], rois, self.output_size, scales[0])
        mapper = LevelMapper(int(-math.log2(scales[0])), int(-math.log2(scales[-1])),
                             canonical_scale=self.canonical_scale, canonical_level=self.canonical_level)
        levels = mapper(boxes)
        out = rois.new_zeros((len(rois), maps[0].shape[1], *self.output_size))
        for level, (feature, scale) in enumerate(zip(maps, scales)):
            index = torch.where(levels == level)[0]
            out[index] = roi_pool(feature, rois[index], self.output_size, scale).to(out.dtype)
        return out


# --- the boundary: convkit's internal form <-> torchvision's ----------------------------------------------------

def to_torchvision_images(images: torch.Tensor | Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """uint8 images (a batch ``(N, C, H, W)`` or a list of ``(C, H, W)``) -> torchvision's list of floats on 0..1.

    Float images are taken as already on 0..1.

    Example:
        >>> to_torchvision_images(torch.full((1, 1, 2, 2), 255, dtype=torch.uint8))[0].flatten().tolist()
        [1.0, 1.0, 1.0, 1.0]
    """
    return [image.float() / 255 if image.dtype == torch.uint8 else image for image in images]


def to_torchvision_targets(targets: Sequence[Mapping[str, torch.Tensor]],
                           device: str | torch.device | None = None) -> list[dict[str, torch.Tensor]]:
    """convkit targets -> torchvision's: labels + 1 (0 is torchvision's background), crowd objects left out.

    Args:
        targets: one dict per image, ``{"boxes": (M, 4) xyxy pixels, "labels": (M,) 0-based, optional "masks",
            optional "iscrowd"}``.
        device: where the tensors go (default: where they are).

    Returns:
        ``[{"boxes": float32 (M', 4), "labels": int64 (M',) 1-based[, "masks": uint8 (M', H, W)]}]``, M' the
        objects that are not crowds (torchvision's detectors have no crowd handling; COCO evaluation ignores
        detections matched to crowds).

    Raises:
        DataFormatError: boxes that are not (M, 4), or labels of another length or below 0, naming the target.

    Example:
        >>> to_torchvision_targets([{"boxes": torch.tensor([[1.0, 2.0, 5.0, 6.0]]), "labels": torch.tensor([0])}])
        [{'boxes': tensor([[1., 2., 5., 6.]]), 'labels': tensor([1])}]
    """
    out = []
    for i, target in enumerate(targets):
        boxes = torch.as_tensor(target["boxes"], dtype=torch.float32)
        labels = torch.as_tensor(target["labels"], dtype=torch.int64)
        if boxes.ndim != 2 or boxes.shape[1] != 4:
            raise DataFormatError(f"targets[{i}]['boxes']: shape {tuple(boxes.shape)}, expected (M, 4) xyxy boxes")
        if labels.shape != (len(boxes),) or (labels < 0).any():
            raise DataFormatError(f"targets[{i}]['labels']: {shorten(labels.tolist())}, expected {len(boxes)} "
                                  "class indices >= 0")
        keep = ~torch.as_tensor(target["iscrowd"], dtype=torch.bool) if "iscrowd" in target else None
        entry = {"boxes": boxes, "labels": labels + 1}
        if target.get("masks") is not None:
            entry["masks"] = torch.as_tensor(target["masks"]).to(torch.uint8)
        if keep is not None:
            entry = {k: v[keep] for k, v in entry.items()}
        out.append({k: v.to(device) if device is not None else v for k, v in entry.items()})
    return out


def from_torchvision_detections(outputs: Sequence[Mapping[str, torch.Tensor]]) -> list[dict[str, torch.Tensor]]:
    """torchvision's detections -> convkit's predictions: labels - 1 (detections of output 0 dropped), on the CPU.

    Args:
        outputs: what a detector returns in eval mode, ``[{"boxes", "labels", "scores"[, "masks"]}]``.

    Returns:
        ``[{"boxes": float32 (K, 4) xyxy pixels, "labels": int64 (K,) 0-based, "scores": float32 (K,)}]``, the
        form `convkit.tasks.detection.metrics` takes (masks kept when present).

    Example:
        >>> out = [{"boxes": torch.tensor([[0.0, 0, 4, 4], [1, 1, 3, 3]]), "labels": torch.tensor([2, 0]),
        ...         "scores": torch.tensor([0.9, 0.2])}]
        >>> from_torchvision_detections(out)[0]["labels"].tolist()
        [1]
    """
    result = []
    for output in outputs:
        keep = output["labels"] > 0
        entry = {"boxes": output["boxes"][keep].float(), "labels": output["labels"][keep].long() - 1,
                 "scores": output["scores"][keep].float()}
        if "masks" in output:
            entry["masks"] = output["masks"][keep]
        result.append({k: v.detach().cpu() for k, v in entry.items()})
    return result
