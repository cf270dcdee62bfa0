"""What `convkit.inspect.summary` needs to know about detectors: how to call them, how to count them, their parts.

Four detector kinds are known: torchvision's ``FasterRCNN`` and ``RetinaNet`` (as
`convkit.tasks.detection.models` builds them on convkit backbones), the localiser
(`convkit.tasks.detection.localize.Localizer`) and YOLO v1 (`convkit.tasks.detection.yolo.YoloV1`).

* **The localiser and YOLO** take a batch tensor and return a dict or a tensor: they trace on the meta device like
  any classifier; only their parts are added.
* **Faster R-CNN and RetinaNet** take a *list* of ``(C, H, W)`` images and select proposals and detections with
  ``topk``, ``nonzero`` and NMS, whose shapes depend on values: the meta device cannot run them (and a meta pass
  would leave meta tensors in the anchor generator's cache). They run for real on the CPU, on zero images, under
  the same instruments (so multiply-adds are counted by the same operators, with real tensors). Every
  multiply-add of RetinaNet is data-independent (the dense head runs on every anchor position; NMS does no
  multiply-adds). Faster R-CNN's RoI heads run once per proposal: for the count, the RPN's NMS is switched off
  (``nms_thresh = 1``) so that exactly ``rpn.post_nms_top_n`` proposals per image reach the RoI heads (the
  post-NMS count of the mode counted: 100 at test time with convkit's defaults), the most a real image gives;
  the count used is stated in the part's note. Training memory comes from a training-mode pass on the same zero
  images with one ground-truth box per image (the RPN then keeps its training post-NMS count and the RoI heads
  sample ``box_batch_size_per_image`` RoIs per image).
* **Parts**: per-part parameters (every parameter of the part's modules, once), multiply-adds and new activation
  bytes (sums of the layer rows inside the part); rows outside every part form ``(other)``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

__all__ = ["DetectorPlan", "Part", "detector_plan", "part_totals", "unwrap_detector"]


@dataclass(frozen=True)
class Part:
    """A named group of modules: ``include`` qualified-name prefixes less ``exclude`` ones, and a note."""

    name: str
    include: tuple[str, ...]
    exclude: tuple[str, ...] = ()
    note: str = ""

    def owns(self, name: str) -> bool:
        """Whether the module called ``name`` is in this part."""
        def under(prefixes):
            return any(p == "" or name == p or name.startswith(p + ".") for p in prefixes)
        return under(self.include) and not under(self.exclude)


@dataclass
class DetectorPlan:
    """How to summarise one detector.

    Attributes:
        kind: ``"faster_rcnn"``, ``"retinanet"``, ``"localizer"`` or ``"yolo_v1"``.
        parts: its `Part` list.
        device: ``"cpu"`` when the forward needs real values, else ``None`` (the caller's device).
        call: the batch tensor -> the model's positional arguments (eval/as-is pass); ``None``: ``(x,)``.
        train_call: the same for the training-mode pass (with targets), or ``None``.
        notes: lines printed under the parts table.
    """

    kind: str
    parts: list[Part]
    device: str | None = None
    call: Callable[[torch.Tensor], tuple] | None = None
    train_call: Callable[[torch.Tensor], tuple] | None = None
    notes: list[str] = field(default_factory=list)
    _contexts: list[Callable[[], Any]] = field(default_factory=list)

    @contextmanager
    def counting(self) -> Iterator[None]:
        """Settings held while the model is traced (the RPN's NMS off), restored after."""
        undo = [setup() for setup in self._contexts]
        try:
            yield
        finally:
            for restore in reversed(undo):
                restore()


def _images(x: torch.Tensor) -> tuple:
    return (list(x.unbind(0)),)


def _train_images(x: torch.Tensor) -> tuple:
    n, _, h, w = x.shape
    box = torch.tensor([[w / 4, h / 4, 3 * w / 4, 3 * h / 4]], dtype=torch.float32)
    targets = [{"boxes": box.clone(), "labels": torch.ones(1, dtype=torch.int64)} for _ in range(n)]
    return list(x.unbind(0)), targets


def _head_modules(backbone: nn.Module) -> tuple[str, ...]:
    """The modules of a zoo classifier's ``head`` stage (`convkit.reuse.model_stages`), or ``()``."""
    from convkit.reuse.freeze import model_stages

    try:
        stages = model_stages(backbone)
    except Exception:  # a backbone that does not say
        return ()
    return tuple(m for s in stages if s.name == "head" for m in s.modules)


def _anchor_cache(generator: nn.Module) -> Callable[[], Callable[[], None]]:
    def setup():
        cells = list(getattr(generator, "cell_anchors", []))

        def restore():
            generator.cell_anchors = cells
        return restore
    return setup


def _rpn_nms_off(rpn: nn.Module) -> Callable[[], None]:
    old = rpn.nms_thresh
    rpn.nms_thresh = 1.0  # IoU > 1 never: every proposal survives, up to post_nms_top_n

    def restore():
        rpn.nms_thresh = old
    return restore


def unwrap_detector(model: nn.Module) -> nn.Module:
    """The detector inside a trained run's `convkit.tasks.detection.detector.Detector` (what the plans know);
    any other module as it is."""
    from convkit.tasks.detection.detector import Detector

    return model.net if isinstance(model, Detector) else model


def detector_plan(model: nn.Module) -> DetectorPlan | None:
    """How to summarise ``model`` if it is one of the known detectors, else ``None``.

    Args:
        model: any module.

    Returns:
        A `DetectorPlan`, or ``None`` for a model that is not a known detector.

    Example:
        >>> from convkit.models import create_model
        >>> from convkit.tasks.detection.yolo import YoloV1
        >>> plan = detector_plan(YoloV1(create_model("fastcnn"), S=7, B=2, C=3))
        >>> plan.kind, [p.name for p in plan.parts]
        ('yolo_v1', ['backbone', 'head'])
    """
    from torchvision.models.detection import FasterRCNN, RetinaNet

    from convkit.tasks.detection.localize import Localizer
    from convkit.tasks.detection.yolo import YoloV1

    if isinstance(model, FasterRCNN):
        rpn = model.rpn
        test_n, train_n = rpn._post_nms_top_n["testing"], rpn._post_nms_top_n["training"]
        sampled = model.roi_heads.fg_bg_sampler.batch_size_per_image
        parts = [Part("transform", ("transform",), note="normalise, resize, pad to a multiple of 32"),
                 Part("backbone body", ("backbone.body",)),
                 Part("FPN", ("backbone.fpn",)),
                 Part("RPN", ("rpn",), note="head on every position; proposal selection does no multiply-adds"),
                 Part("RoI heads", ("roi_heads",),
                      note=f"at {test_n} proposals per image (the RPN's post-NMS test count; the most it passes)")]
        plan = DetectorPlan("faster_rcnn", parts, "cpu", _images, _train_images)
        plan._contexts = [_anchor_cache(rpn.anchor_generator), lambda: _rpn_nms_off(rpn)]
        plan.notes.append(f"Faster R-CNN runs for real on CPU (zero images, eval mode): proposal selection and NMS "
                          f"need values. RoI heads counted at {test_n} proposals per image (the RPN's NMS off for "
                          f"the count, so every image passes rpn_post_nms_top_n_test); training memory at "
                          f"{train_n} proposals and {sampled} sampled RoIs per image, one box per image")
        return plan
    if isinstance(model, RetinaNet):
        parts = [Part("transform", ("transform",), note="normalise, resize, pad to a multiple of 32"),
                 Part("backbone body", ("backbone.body",)),
                 Part("FPN", ("backbone.fpn",)),
                 Part("head", ("head",), note="classification and box subnets on every level"),
                 Part("anchors", ("anchor_generator",), note="anchor boxes of every level: no parameters")]
        plan = DetectorPlan("retinanet", parts, "cpu", _images, _train_images)
        plan._contexts = [_anchor_cache(model.anchor_generator)]
        plan.notes.append("RetinaNet runs for real on CPU (zero images, eval mode): detection selection (topk, NMS) "
                          "needs values but does no multiply-adds, so every figure is exact for any image of "
                          "this size; training memory with one box per image")
        return plan
    if isinstance(model, Localizer):
        head = tuple(f"backbone.{m}" for m in _head_modules(model.backbone))
        class_head = ("class_head",) if model.class_head is not None else head
        parts = [Part("backbone", ("backbone",), exclude=head), Part("class head", class_head),
                 Part("box head", ("box_head",))]
        return DetectorPlan("localizer", parts)
    if isinstance(model, YoloV1):
        head = tuple(f"backbone.{m}" for m in _head_modules(model.backbone))
        return DetectorPlan("yolo_v1", [Part("backbone", ("backbone",), exclude=head), Part("head", ("head",))])
    return None


def part_totals(model: nn.Module, rows: Sequence[Any], parts: Sequence[Part]) -> list[dict[str, Any]]:
    """Per-part ``{"name", "params", "macs", "activation_bytes", "note"}`` of a summary's rows.

    ``params``: every parameter of the part's modules, each once (tied weights once, in the first part that
    has them); ``macs`` and ``activation_bytes``: sums of the part's rows (``macs``, ``new_activation_bytes``),
    per image. Rows outside every part and parameters outside every part form a last ``(other)`` part, shown
    only when it holds something.

    Args:
        model: the summarised module.
        rows: `convkit.inspect.summary.LayerRow` objects.
        parts: the `Part` list.

    Returns:
        One dict per part, in order.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten())
        >>> part_totals(net, [], [Part("conv", ("0",))])[0]["params"]
        20
    """
    seen: set[int] = set()
    out = []
    for part in [*parts, Part("(other)", ("",))]:
        params = 0
        for name, module in model.named_modules():
            if not part.owns(name):
                continue
            for p in module._parameters.values():
                if p is not None and id(p) not in seen:
                    seen.add(id(p))
                    params += p.numel()
        if part.name == "(other)":
            mine = [r for r in rows if not any(q.owns(r.name) for q in parts)]
        else:
            mine = [r for r in rows if part.owns(r.name)]
        macs = sum(r.macs for r in mine)
        act = sum(r.new_activation_bytes for r in mine)
        if part.name == "(other)" and not (params or macs or act):
            continue
        out.append({"name": part.name, "params": params, "macs": macs, "activation_bytes": act, "note": part.note})
    return out


#: ``convkit summary BACKBONE --detector KIND``: the detector kinds the CLI builds.
DETECTORS = ("fasterrcnn", "retinanet", "localizer", "yolo")


def build_detector(kind: str, backbone: Any, num_classes: int | None = None, in_channels: int | None = None
                   ) -> tuple[nn.Module, tuple[int, int, int]]:
    """A detector of ``kind`` on ``backbone`` with its random initial weights, and the input it is summarised at.

    Args:
        kind: one of :data:`DETECTORS`.
        backbone: a zoo name, model file, run folder or checkpoint (as `convkit.models.resolve_model` takes).
        num_classes: object classes (default 3); YOLO uses S=7, B=2.
        in_channels: image channels (default: the backbone's).

    Returns:
        ``(model, (C, 96, 96))``: 96 px, the scenes' size and the two-stage detectors' ``min_size`` (no resize).

    Raises:
        ModelArgumentError: an unknown kind, and what the builders raise.

    Example:
        >>> model, size = build_detector("yolo", "fastcnn", num_classes=2)
        >>> type(model).__name__, size
        ('YoloV1', (1, 96, 96))
    """
    from convkit.models._registry import ModelArgumentError
    from convkit.models.reference import resolve_model
    from convkit.tasks.detection import models as det
    from convkit.tasks.detection.localize import Localizer
    from convkit.tasks.detection.yolo import YoloV1
    from convkit.utils import shorten

    classes = 3 if num_classes is None else num_classes
    if kind == "fasterrcnn":
        model = det.faster_rcnn(backbone, classes, in_channels=in_channels)
        channels = model.backbone.in_channels
    elif kind == "retinanet":
        model = det.retinanet(backbone, classes, in_channels=in_channels)
        channels = model.backbone.in_channels
    elif kind in ("localizer", "yolo"):
        body = resolve_model(backbone, in_channels=in_channels)
        model = Localizer(body, classes) if kind == "localizer" else YoloV1(body, S=7, B=2, C=classes)
        channels = next(m.in_channels for m in body.modules() if isinstance(m, nn.Conv2d))
    else:
        raise ModelArgumentError(f"detector {shorten(kind)}: expected one of {', '.join(DETECTORS)}")
    return model, (channels, 96, 96)
