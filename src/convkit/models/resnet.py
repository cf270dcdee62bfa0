"""ResNet, ResNeXt and Wide ResNet for ImageNet-sized images.

Papers:
    * K. He, X. Zhang, S. Ren, J. Sun. "Deep Residual Learning for Image Recognition." CVPR 2016.
      arXiv:1512.03385. https://arxiv.org/abs/1512.03385
    * S. Xie, R. Girshick, P. Dollar, Z. Tu, K. He. "Aggregated Residual Transformations for Deep
      Neural Networks." CVPR 2017. arXiv:1611.05431. (``resnext50_32x4d``)
    * S. Zagoruyko, N. Komodakis. "Wide Residual Networks." BMVC 2016. arXiv:1605.07146.
      (``wide_resnet50_2``)

The layout, names and initialisation are torchvision's (``models/resnet.py``), so parameter counts
equal torchvision's and its state_dicts load with ``strict=True``. The CIFAR-10 ResNets of the paper's
Sec. 4.2 (ResNet-20 to 110) are in :mod:`convkit.models.small`.
"""

from __future__ import annotations

import torch
from torch import nn

from convkit.layers.blocks import BasicBlock, Bottleneck
from convkit.models._registry import register_model
from convkit.models.base import ClassifierNet

__all__ = ["ResNet", "resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "resnext50_32x4d",
           "wide_resnet50_2"]

_PAPER = "He, Zhang, Ren & Sun, 2016. Deep Residual Learning for Image Recognition"
_RESNEXT = "Xie, Girshick, Dollar, Tu & He, 2017. Aggregated Residual Transformations for Deep Neural Networks"
_WRN = "Zagoruyko & Komodakis, 2016. Wide Residual Networks"


class ResNet(ClassifierNet):
    """A ResNet for 224x224 images (He et al., 2016, Table 1).

    ``conv1`` 7x7/2 (64) + BN + ReLU -> 112, ``maxpool`` 3x3/2 -> 56, four stages ``layer1``-``layer4``
    of residual blocks with 64, 128, 256, 512 planes (stages 2-4 halve the size in their first block,
    with a projection shortcut), global average pooling (``avgpool``) and ``fc``.

    Args:
        block: :class:`~convkit.layers.BasicBlock` (ResNet-18/34) or :class:`~convkit.layers.Bottleneck`.
        layers: blocks per stage, e.g. ``[3, 4, 6, 3]``.
        num_classes: outputs of ``fc``.
        in_channels: image channels.
        zero_init_residual: start each block's last BN at zero, so every residual branch starts as the
            identity (Goyal et al., 2017, arXiv:1706.02677); improves accuracy by 0.2-0.3%.
        groups, width_per_group: the Bottleneck's cardinality and width per group (ResNeXt, WRN).
        replace_stride_with_dilation: for stages 2-4, dilate instead of striding (keeps resolution
            for dense prediction backbones).

    Example::

        >>> model = ResNet(BasicBlock, [2, 2, 2, 2], num_classes=10)
        >>> model.forward_features(torch.zeros(1, 3, 224, 224)).shape
        torch.Size([1, 512, 7, 7])
    """

    classifier_name = "fc"

    def __init__(self, block: type[BasicBlock] | type[Bottleneck], layers: list[int], num_classes: int = 1000,
                 in_channels: int = 3, zero_init_residual: bool = False, groups: int = 1,
                 width_per_group: int = 64, replace_stride_with_dilation: list[bool] | None = None):
        super().__init__()
        if replace_stride_with_dilation is None:
            replace_stride_with_dilation = [False, False, False]
        if len(replace_stride_with_dilation) != 3:
            raise ValueError(f"replace_stride_with_dilation needs 3 entries, got {replace_stride_with_dilation}")
        self.num_classes = num_classes
        self.inplanes = 64
        self.dilation = 1
        self.groups = groups
        self.base_width = width_per_group
        self.conv1 = nn.Conv2d(in_channels, self.inplanes, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(self.inplanes)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, 64, layers[0])
        self.layer2 = self._make_layer(block, 128, layers[1], 2, replace_stride_with_dilation[0])
        self.layer3 = self._make_layer(block, 256, layers[2], 2, replace_stride_with_dilation[1])
        self.layer4 = self._make_layer(block, 512, layers[3], 2, replace_stride_with_dilation[2])
        self.num_features = 512 * block.expansion
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(self.num_features, num_classes)

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, Bottleneck):
                    nn.init.zeros_(m.bn3.weight)
                elif isinstance(m, BasicBlock):
                    nn.init.zeros_(m.bn2.weight)

    def _make_layer(self, block, planes: int, blocks: int, stride: int = 1, dilate: bool = False) -> nn.Sequential:
        # The first block changes size and channels (and gets the projection shortcut); with `dilate`
        # the stride becomes dilation from the second block on, as in torchvision.
        previous_dilation = self.dilation
        if dilate:
            self.dilation *= stride
            stride = 1
        kw = {"groups": self.groups, "base_width": self.base_width}
        layers = [block(planes, stride, dilation=previous_dilation, in_channels=self.inplanes, **kw)]
        self.inplanes = planes * block.expansion
        layers += [block(planes, dilation=self.dilation, in_channels=self.inplanes, **kw) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def stage_layout(self) -> list[tuple[str, list[str]]]:
        """``stem`` (conv1, bn1), ``layer1``-``layer4``, ``head`` (fc)."""
        return [("stem", ["conv1", "bn1"]), *((f"layer{i}", [f"layer{i}"]) for i in range(1, 5)), ("head", ["fc"])]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Images -> ``layer4``'s maps ``(N, 512 * expansion, H/32, W/32)``."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = torch.flatten(self.avgpool(x), 1)
        return x if pre_logits else self.fc(x)


def _resnet(block, layers, num_classes, in_channels, kwargs, **defaults) -> ResNet:
    # As in timm, the caller's options override the variant's (e.g. resnext50_32x4d(groups=64)).
    return ResNet(block, layers, num_classes=num_classes, in_channels=in_channels, **{**defaults, **kwargs})


_IMAGENET = {"input_size": (3, 224, 224), "num_classes": 1000}


@register_model(paper=_PAPER, **_IMAGENET, torchvision="resnet18",
                description="ResNet-18: basic blocks [2, 2, 2, 2]")
def resnet18(num_classes: int = 1000, in_channels: int = 3, **kwargs) -> ResNet:
    """ResNet-18 (11,689,512 parameters).

    Example::

        >>> resnet18(num_classes=10)(torch.zeros(1, 3, 224, 224)).shape
        torch.Size([1, 10])
    """
    return _resnet(BasicBlock, [2, 2, 2, 2], num_classes, in_channels, kwargs)


@register_model(paper=_PAPER, **_IMAGENET, torchvision="resnet34",
                description="ResNet-34: basic blocks [3, 4, 6, 3]")
def resnet34(num_classes: int = 1000, in_channels: int = 3, **kwargs) -> ResNet:
    """ResNet-34 (21,797,672 parameters)."""
    return _resnet(BasicBlock, [3, 4, 6, 3], num_classes, in_channels, kwargs)


@register_model(paper=_PAPER, **_IMAGENET, torchvision="resnet50",
                description="ResNet-50: bottlenecks [3, 4, 6, 3]")
def resnet50(num_classes: int = 1000, in_channels: int = 3, **kwargs) -> ResNet:
    """ResNet-50 (25,557,032 parameters), stride on the 3x3 convolution (v1.5)."""
    return _resnet(Bottleneck, [3, 4, 6, 3], num_classes, in_channels, kwargs)


@register_model(paper=_PAPER, **_IMAGENET, torchvision="resnet101",
                description="ResNet-101: bottlenecks [3, 4, 23, 3]")
def resnet101(num_classes: int = 1000, in_channels: int = 3, **kwargs) -> ResNet:
    """ResNet-101 (44,549,160 parameters)."""
    return _resnet(Bottleneck, [3, 4, 23, 3], num_classes, in_channels, kwargs)


@register_model(paper=_PAPER, **_IMAGENET, torchvision="resnet152",
                description="ResNet-152: bottlenecks [3, 8, 36, 3]")
def resnet152(num_classes: int = 1000, in_channels: int = 3, **kwargs) -> ResNet:
    """ResNet-152 (60,192,808 parameters)."""
    return _resnet(Bottleneck, [3, 8, 36, 3], num_classes, in_channels, kwargs)


@register_model(paper=_RESNEXT, **_IMAGENET, torchvision="resnext50_32x4d",
                description="ResNeXt-50 32x4d: ResNet-50 with 32 groups of width 4 in the 3x3 convs")
def resnext50_32x4d(num_classes: int = 1000, in_channels: int = 3, **kwargs) -> ResNet:
    """ResNeXt-50 (32x4d): cardinality 32, 4 channels per group (25,028,904 parameters)."""
    return _resnet(Bottleneck, [3, 4, 6, 3], num_classes, in_channels, kwargs, groups=32, width_per_group=4)


@register_model(paper=_WRN, **_IMAGENET, torchvision="wide_resnet50_2",
                description="Wide ResNet-50-2: ResNet-50 with twice the bottleneck width")
def wide_resnet50_2(num_classes: int = 1000, in_channels: int = 3, **kwargs) -> ResNet:
    """Wide ResNet-50-2: the bottlenecks' inner width doubled (68,883,240 parameters)."""
    return _resnet(Bottleneck, [3, 4, 6, 3], num_classes, in_channels, kwargs, width_per_group=128)
