"""Semantic segmenters: FCN-32s/16s/8s on convkit backbones, U-Net, the stacked hourglass, a convolutionized classifier.

Every segmenter maps normalised images ``(N, C, H, W)`` to logits ``(N, K, H, W)`` at the input's size (the stacked
hourglass in training mode: a list of such logits, one per stack, for intermediate supervision).
`build_segmenter(kind, ...)` builds one of `SEGMENTERS` with a ``model_cfg`` (task "segment") whose spec
``{"kind": "segmenter", "segmenter": kind, ...}`` rebuilds it (`segmenter_from_spec`, called by
`convkit.models.reference.build_from_spec`).

* **FCN** (Long, Shelhamer & Darrell, CVPR 2015): the backbone's last three stages (`convkit.reuse.model_stages`,
  the head excluded; ResNet-18: layer2-layer4 at strides 8/16/32; fastcnn, which downsamples twice, stage1-stage3
  at strides 2/4/4), a 1 x 1 score convolution on each, and ``nn.ConvTranspose2d`` upsampling initialised to
  bilinear interpolation (learnable). FCN-32s upsamples the last stage's scores to the input; FCN-16s first adds
  the previous stage's scores (upsampled to its map by the strides' ratio, or as they are when the strides are
  equal); FCN-8s adds the stage before that too. The skips' score layers start at zero, as in the paper. The
  output is cropped (or edge-padded) to the input size.
* **U-Net** (Ronneberger, Fischer & Brox, MICCAI 2015): ``depth`` max-pool levels, double 3 x 3 conv-BN-ReLU
  blocks whose widths double per level from ``width``, ``nn.ConvTranspose2d`` (2 x 2, stride 2) up, the encoder's
  map concatenated at each level. Inputs whose sides are not multiples of ``2**depth`` are zero-padded at the
  bottom and right, and the output cropped back: the output always has the input's size.
* **Stacked hourglass** (Newell, Yang & Deng, ECCV 2016): hourglasses (max pool down, nearest-neighbour up, a
  residual skip at every level, ``width`` channels throughout) in sequence, each with its own 1 x 1 prediction
  head; the predictions and features are mapped back and added to the next stack's input.

Example:
    >>> net = build_segmenter("unet", num_classes=3, in_channels=1, depth=2, width=8)
    >>> net.eval()(torch.zeros(1, 1, 37, 50)).shape
    torch.Size([1, 3, 37, 50])
    >>> net.model_cfg.spec["segmenter"], net.model_cfg.task
    ('unet', 'segment')
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from convkit.models._registry import ModelArgumentError
from convkit.utils import shorten

__all__ = ["DEFAULT_BACKBONE", "FCN", "SEGMENTERS", "StackedHourglass", "UNet", "bilinear_kernel",
           "build_segmenter", "fcn", "hourglass", "segmenter_from_spec", "unet"]

SEGMENTERS = {
    "unet": "U-Net: double 3x3 conv-BN-ReLU blocks, widths doubling per level, transposed-conv up, skip concat",
    "fcn8s": "FCN-8s: a backbone's last three stages scored, fused by sum, transposed convs initialised to bilinear",
    "fcn16s": "FCN-16s: a backbone's last two stages scored, fused by sum, bilinear-initialised upsampling",
    "fcn32s": "FCN-32s: a backbone's last stage scored and upsampled to the input (bilinear-initialised)",
    "hourglass": "stacked hourglass: U-shaped modules in sequence, a prediction per stack (intermediate supervision)",
    "convolutionized": "a classifier whose fully connected head became convolutions, slid over the image",
}
DEFAULT_BACKBONE = "fastcnn"
# The FCNs' default backbone when none is named: fastcnn with a fourth stage (strides 2, 4, 8 for the skips; a
# 6-epoch trial on the scenes: 0.46 mIoU against 0.35 for the 3-stage fastcnn, FCN-8s, same recipe)
DEFAULT_FCN_BACKBONE_KWARGS = {"widths": [16, 32, 64, 128], "depths": [1, 2, 2, 2]}
_OPTIONS = {"unet": ("depth", "width"), "hourglass": ("stacks", "depth", "width"),
            "fcn8s": ("returned_stages",), "fcn16s": ("returned_stages",), "fcn32s": ("returned_stages",),
            "convolutionized": ("upsample", "input_shape")}


# --- FCN ------------------------------------------------------------------------------------------------------

def bilinear_kernel(channels: int, factor: int) -> torch.Tensor:
    """Weights of a ``ConvTranspose2d(channels, channels, 2 * factor - factor % 2, stride=factor)`` that upsample each
    channel by bilinear interpolation (FCN's ``upsample_filt``; no mixing between channels).

    With padding ``(factor - factor % 2) // 2`` (`_upsampler`) the result matches
    ``F.interpolate(mode="bilinear", align_corners=False)`` away from the borders.

    >>> bilinear_kernel(1, 2)[0, 0]
    tensor([[0.0625, 0.1875, 0.1875, 0.0625],
            [0.1875, 0.5625, 0.5625, 0.1875],
            [0.1875, 0.5625, 0.5625, 0.1875],
            [0.0625, 0.1875, 0.1875, 0.0625]])
    """
    size = 2 * factor - factor % 2
    centre = factor - 1 if size % 2 == 1 else factor - 0.5
    taps = 1 - (torch.arange(size, dtype=torch.float64) - centre).abs() / factor
    weight = torch.zeros(channels, channels, size, size, dtype=torch.float64)
    for c in range(channels):
        weight[c, c] = taps[:, None] * taps[None, :]
    return weight.float()


def _upsampler(channels: int, factor: int) -> nn.Module:
    """x ``factor`` (learnable ``ConvTranspose2d`` initialised to bilinear), or the identity for 1."""
    if factor == 1:
        return nn.Identity()
    up = nn.ConvTranspose2d(channels, channels, 2 * factor - factor % 2, stride=factor,
                            padding=(factor - factor % 2) // 2, bias=False)
    with torch.no_grad():
        up.weight.copy_(bilinear_kernel(channels, factor))
    return up


def _match(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Crop ``x`` at the bottom/right to ``size``, or pad it there by repeating the edge."""
    h, w = int(size[0]), int(size[1])
    x = x[..., :h, :w]
    if x.shape[-2] < h or x.shape[-1] < w:
        x = F.pad(x, (0, w - x.shape[-1], 0, h - x.shape[-2]), mode="replicate")
    return x


class FCN(nn.Module):
    """A fully convolutional network on a backbone's stages (see the module docstring).

    Attributes:
        body: the feature extractor returning the stages' maps ``{"0": ..., }``, finest first.
        stages, strides, channels: the stage names, their strides and channels (finest first).
        score: 1 x 1 score convolutions, one per used stage (coarsest first).
        up: the upsamplings between them, then to the input (``ConvTranspose2d`` or ``Identity``).
        variant: "32s", "16s" or "8s".
    """

    def __init__(self, body: nn.Module, stages: list[str], strides: list[int], channels: list[int],
                 num_classes: int, variant: str = "8s"):
        super().__init__()
        self.body, self.variant = body, variant
        self.stages, self.strides, self.channels = stages, strides, channels
        self.num_classes = num_classes
        used = list(range(len(stages)))[::-1]  # coarsest first
        self.score = nn.ModuleList()
        for n, i in enumerate(used):
            conv = nn.Conv2d(channels[i], num_classes, 1)
            if n > 0:  # the skips start at zero (the paper): FCN-16s begins as FCN-32s
                nn.init.zeros_(conv.weight)
                nn.init.zeros_(conv.bias)
            self.score.append(conv)
        factors = [max(1, round(strides[a] / strides[b])) for a, b in zip(used, used[1:])] + [strides[used[-1]]]
        self.factors = factors
        self.up = nn.ModuleList(_upsampler(num_classes, f) for f in factors)
        self._used = used

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        maps = self.body(x)
        scores = None
        for n, i in enumerate(self._used):
            s = self.score[n](maps[str(i)])
            scores = s if scores is None else _match(scores, s.shape[-2:]) + s
            scores = self.up[n](scores)
        return _match(scores, x.shape[-2:])


def fcn(backbone: Any = DEFAULT_BACKBONE, num_classes: int = 11, variant: str = "8s", in_channels: int = 1,
        returned_stages: Sequence[str] | None = None, backbone_kwargs: Mapping | None = None) -> FCN:
    """FCN-32s, -16s or -8s on a convkit backbone (nothing downloaded).

    Args:
        backbone: a zoo name, a model file, a run folder or checkpoint (its trained weights come along), or a
            convkit module.
        num_classes: K, the output channels.
        variant: "32s" (the last stage), "16s" (+ the one before), "8s" (+ the one before that).
        in_channels: image channels, for a zoo name.
        returned_stages: the stages to read, input side first (1 for 32s, 2 for 16s, 3 for 8s); default: the
            backbone's last stages before its head.
        backbone_kwargs: a zoo backbone's builder arguments.

    Returns:
        An `FCN`.

    Raises:
        ModelArgumentError: an unknown variant or stage, a backbone with too few stages, or whose channels
            differ from ``in_channels``.

    Example:
        >>> net = fcn("fastcnn", num_classes=3, variant="8s")
        >>> net.stages, net.strides
        (['stage1', 'stage2', 'stage3'], [2, 4, 4])
        >>> net(torch.zeros(2, 1, 30, 45)).shape
        torch.Size([2, 3, 30, 45])
    """
    from torchvision.models.feature_extraction import create_feature_extractor

    from convkit.reuse.freeze import model_stages
    from convkit.tasks.detection.detector import _backbone_module
    from convkit.tasks.detection.models import _probe

    variant = str(variant).lower().removeprefix("fcn")
    count = {"32s": 1, "16s": 2, "8s": 3}.get(variant)
    if count is None:
        raise ModelArgumentError(f"variant={shorten(variant)}: expected '32s', '16s' or '8s'")
    model = _backbone_module(backbone, in_channels, backbone_kwargs)
    stages = [s for s in model_stages(model) if s.name != "head"]
    names = [s.name for s in stages]
    if returned_stages is None:
        if len(names) < count:
            raise ModelArgumentError(f"FCN-{variant}: the backbone {model.model_cfg.name} has {len(names)} stage(s) "
                                     f"({', '.join(names)}); FCN-{variant} reads {count}")
        chosen = names[-count:]
    else:
        chosen = [returned_stages] if isinstance(returned_stages, str) else list(returned_stages)
        if len(chosen) != count or any(n not in names for n in chosen):
            raise ModelArgumentError(f"returned_stages={shorten(returned_stages)}: FCN-{variant} reads {count} of "
                                     f"{model.model_cfg.name}'s stages {', '.join(names)}")
        chosen = sorted(chosen, key=names.index)
    nodes = {stages[names.index(n)].modules[-1]: str(i) for i, n in enumerate(chosen)}
    try:
        body = create_feature_extractor(model, nodes)
    except Exception as err:  # torch.fx cannot trace data-dependent control flow
        raise ModelArgumentError(f"{model.model_cfg.name}: its stages cannot be cut out by torch.fx "
                                 f"({shorten(str(err), 200)})") from err
    shapes = _probe(body, model.model_cfg.input_shape[0] if model.model_cfg.input_shape else in_channels)
    return FCN(body, chosen, [s for _, s in shapes], [c for c, _ in shapes], num_classes, variant)


# --- U-Net ----------------------------------------------------------------------------------------------------

def _double_conv(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                         nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class UNet(nn.Module):
    """U-Net (see the module docstring); modules ``enc0``..``enc{depth}`` (double convs), ``up{l}``
    (``ConvTranspose2d`` from level l to l - 1), ``dec{l}`` (the double conv after it), ``head`` (1 x 1).

    Example:
        >>> UNet(2, depth=1, width=4).up1
        ConvTranspose2d(8, 4, kernel_size=(2, 2), stride=(2, 2))
    """

    def __init__(self, num_classes: int, in_channels: int = 1, depth: int = 4, width: int = 32):
        super().__init__()
        self.depth, self.width, self.num_classes = depth, width, num_classes
        widths = [width * 2**level for level in range(depth + 1)]
        self.pool = nn.MaxPool2d(2)
        for level in range(depth + 1):
            self.add_module(f"enc{level}", _double_conv(in_channels if level == 0 else widths[level - 1],
                                                        widths[level]))
        for level in range(depth, 0, -1):
            self.add_module(f"up{level}", nn.ConvTranspose2d(widths[level], widths[level - 1], 2, stride=2))
            self.add_module(f"dec{level}", _double_conv(2 * widths[level - 1], widths[level - 1]))
        self.head = nn.Conv2d(width, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        multiple = 2**self.depth
        x = F.pad(x, (0, -w % multiple, 0, -h % multiple))
        skips = []
        for level in range(self.depth + 1):
            x = getattr(self, f"enc{level}")(x if level == 0 else self.pool(x))
            skips.append(x)
        for level in range(self.depth, 0, -1):
            x = getattr(self, f"up{level}")(x)
            x = getattr(self, f"dec{level}")(torch.cat([skips[level - 1], x], 1))
        return self.head(x)[..., :h, :w]


def unet(num_classes: int = 11, in_channels: int = 1, depth: int = 4, width: int = 32) -> UNet:
    """A U-Net with ``depth`` poolings and ``width`` filters at the top level (doubling per level).

    Raises:
        ModelArgumentError: depth < 1 or width < 1.

    Example:
        >>> sum(p.numel() for p in unet(2, depth=1, width=4).parameters())
        1682
    """
    _positive(depth=depth, width=width)
    return UNet(num_classes, in_channels, int(depth), int(width))


# --- stacked hourglass ----------------------------------------------------------------------------------------

class _Residual(nn.Module):
    """conv-BN-ReLU, conv-BN, + the input, ReLU (a basic residual block, ``width`` channels)."""

    def __init__(self, width: int):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width),
                                  nn.ReLU(inplace=True), nn.Conv2d(width, width, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.body(x))


class _Hourglass(nn.Module):
    """One hourglass: skip(x) + up(inner(down(maxpool(x)))), recursively ``depth`` levels deep."""

    def __init__(self, depth: int, width: int):
        super().__init__()
        self.skip, self.down, self.up = _Residual(width), _Residual(width), _Residual(width)
        self.inner = _Hourglass(depth - 1, width) if depth > 1 else _Residual(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        low = self.up(self.inner(self.down(F.max_pool2d(x, 2, ceil_mode=True))))
        return self.skip(x) + F.interpolate(low, size=x.shape[-2:], mode="nearest")


class StackedHourglass(nn.Module):
    """Stacked hourglass (see the module docstring): training mode -> a list of logits (one per stack, the last
    the final output), eval mode -> the last stack's logits.

    Attributes:
        stem: conv 3 x 3 - BN - ReLU to ``width`` channels (full resolution).
        hourglasses, features, predict: per stack: the hourglass, a 1 x 1 conv-BN-ReLU, the 1 x 1 prediction.
        merge_features, merge_predictions: per stack but the last: 1 x 1 convs added to the next stack's input.
    """

    def __init__(self, num_classes: int, in_channels: int = 1, stacks: int = 2, depth: int = 3, width: int = 32):
        super().__init__()
        self.stacks, self.depth, self.width, self.num_classes = stacks, depth, width, num_classes
        self.stem = nn.Sequential(nn.Conv2d(in_channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width),
                                  nn.ReLU(inplace=True), _Residual(width))
        self.hourglasses = nn.ModuleList(_Hourglass(depth, width) for _ in range(stacks))
        self.features = nn.ModuleList(nn.Sequential(nn.Conv2d(width, width, 1, bias=False), nn.BatchNorm2d(width),
                                                    nn.ReLU(inplace=True)) for _ in range(stacks))
        self.predict = nn.ModuleList(nn.Conv2d(width, num_classes, 1) for _ in range(stacks))
        self.merge_features = nn.ModuleList(nn.Conv2d(width, width, 1) for _ in range(stacks - 1))
        self.merge_predictions = nn.ModuleList(nn.Conv2d(num_classes, width, 1) for _ in range(stacks - 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        x = self.stem(x)
        outputs = []
        for i in range(self.stacks):
            features = self.features[i](self.hourglasses[i](x))
            prediction = self.predict[i](features)
            outputs.append(prediction)
            if i < self.stacks - 1:
                x = x + self.merge_features[i](features) + self.merge_predictions[i](prediction)
        return outputs if self.training else outputs[-1]


def hourglass(num_classes: int = 11, in_channels: int = 1, stacks: int = 2, depth: int = 3,
              width: int = 32) -> StackedHourglass:
    """A stacked hourglass of ``stacks`` hourglasses, each ``depth`` poolings deep, ``width`` channels.

    Raises:
        ModelArgumentError: stacks, depth or width < 1.

    Example:
        >>> net = hourglass(3, stacks=2, depth=2, width=8)
        >>> [tuple(o.shape) for o in net.train()(torch.zeros(2, 1, 21, 30))]
        [(2, 3, 21, 30), (2, 3, 21, 30)]
        >>> net.eval()(torch.zeros(2, 1, 21, 30)).shape
        torch.Size([2, 3, 21, 30])
    """
    _positive(stacks=stacks, depth=depth, width=width)
    return StackedHourglass(num_classes, in_channels, int(stacks), int(depth), int(width))


def _positive(**values) -> None:
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ModelArgumentError(f"{name}={shorten(value)}: expected an integer >= 1")


# --- one builder ----------------------------------------------------------------------------------------------

def _check_kind(kind: Any) -> str:
    if kind not in SEGMENTERS:
        raise ModelArgumentError(f"unknown segmenter {shorten(kind)}; the segmenters are: "
                                 + "; ".join(f"{k} ({v})" for k, v in SEGMENTERS.items()))
    return kind


def build_segmenter(kind: str, backbone: Any = None, num_classes: int = 11, in_channels: int = 1,
                    image_size: tuple[int, int] = (96, 96), backbone_kwargs: Mapping | None = None,
                    **options) -> nn.Module:
    """Builds one of `SEGMENTERS` with a ``model_cfg`` (task "segment") whose spec rebuilds it.

    Args:
        kind: "unet", "fcn8s", "fcn16s", "fcn32s", "hourglass" or "convolutionized".
        backbone: fcn*: the backbone (a zoo name, model file, run folder, checkpoint or module; default
            "fastcnn" with a fourth stage, `DEFAULT_FCN_BACKBONE_KWARGS`); convolutionized: the classifier (default "fastcnn"; a zoo name is built with
            ``num_classes`` outputs, a run or module keeps its own classes); unet and hourglass build their own
            encoder and refuse one.
        num_classes: K, the output channels (background included where the data has one).
        in_channels: image channels, 1 or 3.
        image_size: (H, W) of the training images (recorded; every segmenter takes any size).
        backbone_kwargs: a zoo backbone's builder arguments.
        **options: unet ``depth`` (4), ``width`` (32); hourglass ``stacks`` (2), ``depth`` (3), ``width`` (32);
            fcn* ``returned_stages``; convolutionized ``upsample`` (False: the raw map; True: resized to the
            input, the segmenter's form) and ``input_shape`` (the classifier's training input).

    Returns:
        The segmenter (``nn.Module``) with ``model_cfg``.

    Raises:
        ModelArgumentError: an unknown kind or option (the message lists the choices), a backbone given to
            unet/hourglass, a backbone whose channels differ from ``in_channels``.

    Example:
        >>> net = build_segmenter("fcn32s", "fastcnn", num_classes=4)
        >>> net.model_cfg.spec["backbone"]["name"], net(torch.zeros(1, 1, 40, 40)).shape
        ('fastcnn', torch.Size([1, 4, 40, 40]))
    """
    from convkit.models.reference import ModelCfg

    _check_kind(kind)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ModelArgumentError(f"num_classes must be an integer >= 1, got {shorten(num_classes)}")
    unknown = sorted(set(options) - set(_OPTIONS[kind]))
    if unknown:
        raise ModelArgumentError(f"{kind}: unknown option {shorten(unknown[0])}; {kind} takes "
                                 f"{', '.join(_OPTIONS[kind])}")
    image_size = (int(image_size[0]), int(image_size[1]))
    if kind == "convolutionized":
        return _convolutionized(backbone, num_classes, in_channels, image_size, backbone_kwargs, options)
    backbone_spec, name = None, kind
    if kind in ("unet", "hourglass"):
        if backbone is not None or backbone_kwargs:
            raise ModelArgumentError(f"{kind} builds its own encoder: drop the backbone "
                                     f"({shorten(str(backbone if backbone is not None else backbone_kwargs))})")
        net = (unet if kind == "unet" else hourglass)(num_classes, in_channels, **options)
    else:
        from convkit.tasks.detection.detector import _backbone_module

        if backbone is None:  # the default: fastcnn with a fourth stage (stride 8: a wider view, measured better)
            backbone, backbone_kwargs = DEFAULT_BACKBONE, backbone_kwargs or DEFAULT_FCN_BACKBONE_KWARGS
        body = _backbone_module(backbone, in_channels, backbone_kwargs)
        backbone_spec = _spec_of(body, in_channels)
        net = fcn(body, num_classes, kind[3:], in_channels, **options)
        name = f"{kind}-{body.model_cfg.name}"
    spec = {"kind": "segmenter", "segmenter": kind, "backbone": backbone_spec, "num_classes": num_classes,
            "in_channels": in_channels, "image_size": list(image_size), "kwargs": _jsonable(options)}
    net.model_cfg = ModelCfg(name, task="segment", input_shape=(in_channels, *image_size), num_classes=num_classes,
                             spec=spec, source="module")
    return net


def _spec_of(module: nn.Module, in_channels: int) -> dict:
    spec = copy.deepcopy(module.model_cfg.spec)
    if spec.get("kind") in ("zoo", "file") and spec.get("in_channels") is None:
        spec["in_channels"] = in_channels  # rebuilt with the data's channels, not the builder's default
    return spec


def _jsonable(options: Mapping) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in options.items()}


def _convolutionized(classifier: Any, num_classes: int, in_channels: int, image_size: tuple[int, int],
                     backbone_kwargs: Mapping | None, options: dict) -> nn.Module:
    from convkit.models.reference import resolve_model
    from convkit.tasks.segmentation.convolutionize import convolutionize

    classifier = DEFAULT_BACKBONE if classifier is None else classifier
    if isinstance(classifier, str) and not classifier.endswith(".safetensors") and "/" not in classifier \
            and not classifier.lower().endswith((".yaml", ".yml")):
        classifier = resolve_model(classifier, num_classes=num_classes, in_channels=in_channels,
                                   **dict(backbone_kwargs or {}))
    elif backbone_kwargs:
        raise ModelArgumentError(f"backbone arguments {shorten(dict(backbone_kwargs))} are for a zoo name; "
                                 f"{shorten(str(classifier))} is built already")
    shape = options.get("input_shape")
    net = convolutionize(classifier, shape)
    if net.input_shape[0] != in_channels:
        raise ModelArgumentError(f"classifier {net.model_cfg.name} takes {net.input_shape[0]}-channel images, the "
                                 f"data has {in_channels} channels")
    net.upsample = bool(options.get("upsample", False))
    spec = net.model_cfg.spec
    if spec["classifier"].get("kind") in ("zoo", "file") and spec["classifier"].get("in_channels") is None:
        spec["classifier"]["in_channels"] = in_channels
    spec["image_size"] = list(image_size)
    spec["kwargs"] = {"upsample": net.upsample, "input_shape": list(net.input_shape)}
    return net


def segmenter_from_spec(spec: Mapping) -> nn.Module:
    """Rebuilds a segmenter (untrained) from its spec (`convkit.models.reference.build_from_spec` calls this).

    Raises:
        ModelArgumentError, KeyError, TypeError: a malformed spec.

    Example:
        >>> net = build_segmenter("fcn16s", "fastcnn", num_classes=3)
        >>> again = segmenter_from_spec(net.model_cfg.spec)
        >>> again.model_cfg.spec == net.model_cfg.spec, sorted(again.state_dict()) == sorted(net.state_dict())
        (True, True)
    """
    kind = _check_kind(spec["segmenter"])
    kwargs = dict(spec.get("kwargs") or {})
    size = tuple(spec["image_size"])
    if kind in ("unet", "hourglass"):
        return build_segmenter(kind, None, int(spec["num_classes"]), int(spec["in_channels"]), size, **kwargs)
    inner = spec["classifier"] if kind == "convolutionized" else spec["backbone"]
    module = _rebuilt(inner, kwargs.get("input_shape"))
    return build_segmenter(kind, module, int(spec["num_classes"]), int(spec["in_channels"]), size, **kwargs)


def _rebuilt(spec: Mapping, input_shape: Sequence[int] | None) -> nn.Module:
    """A backbone or classifier rebuilt from its spec, carrying that spec (so the segmenter's spec is the same)."""
    from convkit.models.reference import ModelCfg, build_from_spec, model_cfg

    if not isinstance(spec, Mapping) or spec.get("kind") == "segmenter":
        raise ModelArgumentError(f"a segmenter's backbone spec: found {shorten(spec)}, expected a model spec")
    module = build_from_spec(dict(spec))
    cfg = model_cfg(module)
    shape = tuple(input_shape) if input_shape else cfg.input_shape
    if shape is not None and spec.get("in_channels"):
        shape = (int(spec["in_channels"]), *shape[1:])
    module.model_cfg = ModelCfg(cfg.name if spec.get("kind") != "zoo" else str(spec["name"]), input_shape=shape,
                                num_classes=cfg.num_classes, spec=copy.deepcopy(dict(spec)), source="module")
    return module

