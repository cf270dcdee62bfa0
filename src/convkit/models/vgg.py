"""VGG networks, configurations A to E.

Paper: K. Simonyan, A. Zisserman. "Very Deep Convolutional Networks for Large-Scale Image Recognition."
ICLR 2015. arXiv:1409.1556. https://arxiv.org/abs/1409.1556

Batch-normalised variants (``_bn``) follow torchvision (S. Ioffe, C. Szegedy, "Batch Normalization",
ICML 2015, arXiv:1502.03167).
"""

from __future__ import annotations

import re

import torch
from torch import nn

from convkit.models._registry import register_model
from convkit.models.alexnet import paper_lrn
from convkit.models.base import ClassifierNet, pool_blocks

__all__ = ["CONFIGS", "VGG", "make_layers", "vgg11", "vgg11_bn", "vgg11_lrn", "vgg13", "vgg13_bn", "vgg16",
           "vgg16_bn", "vgg16_c", "vgg16_c_bn", "vgg19", "vgg19_bn"]

_PAPER = "Simonyan & Zisserman, 2015. Very Deep Convolutional Networks for Large-Scale Image Recognition"

# The paper's Table 1, column by column, in its own notation: "convK-N" is a KxK convolution with N
# filters (stride 1, padding that keeps the size, ReLU), "maxpool" is 2x2 max pooling with stride 2,
# "LRN" is local response normalisation. The three FC layers are the same for every column.
CONFIGS: dict[str, list[str]] = {
    "A": ["conv3-64", "maxpool",
          "conv3-128", "maxpool",
          "conv3-256", "conv3-256", "maxpool",
          "conv3-512", "conv3-512", "maxpool",
          "conv3-512", "conv3-512", "maxpool"],
    "A-LRN": ["conv3-64", "LRN", "maxpool",
              "conv3-128", "maxpool",
              "conv3-256", "conv3-256", "maxpool",
              "conv3-512", "conv3-512", "maxpool",
              "conv3-512", "conv3-512", "maxpool"],
    "B": ["conv3-64", "conv3-64", "maxpool",
          "conv3-128", "conv3-128", "maxpool",
          "conv3-256", "conv3-256", "maxpool",
          "conv3-512", "conv3-512", "maxpool",
          "conv3-512", "conv3-512", "maxpool"],
    "C": ["conv3-64", "conv3-64", "maxpool",
          "conv3-128", "conv3-128", "maxpool",
          "conv3-256", "conv3-256", "conv1-256", "maxpool",
          "conv3-512", "conv3-512", "conv1-512", "maxpool",
          "conv3-512", "conv3-512", "conv1-512", "maxpool"],
    "D": ["conv3-64", "conv3-64", "maxpool",
          "conv3-128", "conv3-128", "maxpool",
          "conv3-256", "conv3-256", "conv3-256", "maxpool",
          "conv3-512", "conv3-512", "conv3-512", "maxpool",
          "conv3-512", "conv3-512", "conv3-512", "maxpool"],
    "E": ["conv3-64", "conv3-64", "maxpool",
          "conv3-128", "conv3-128", "maxpool",
          "conv3-256", "conv3-256", "conv3-256", "conv3-256", "maxpool",
          "conv3-512", "conv3-512", "conv3-512", "conv3-512", "maxpool",
          "conv3-512", "conv3-512", "conv3-512", "conv3-512", "maxpool"],
}

_CONV = re.compile(r"conv(\d+)-(\d+)$")


def make_layers(config: list[str], batch_norm: bool = False, in_channels: int = 3) -> nn.Sequential:
    """The convolutional part of a VGG column, laid out as torchvision's ``features``.

    Args:
        config: a column of the paper's table, e.g. ``["conv3-64", "maxpool", "conv1-256", "LRN"]``
            (``"M"`` is accepted for ``"maxpool"``, as in torchvision's tables).
        batch_norm: BN between each convolution and its ReLU.
        in_channels: image channels.

    Returns:
        An index-named ``nn.Sequential`` (``features.0`` is the first convolution), so the weights of
        torchvision's ``vgg*`` load.

    Example::

        >>> make_layers(["conv3-64", "maxpool"])
        Sequential(
          (0): Conv2d(3, 64, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1))
          (1): ReLU()
          (2): MaxPool2d(kernel_size=2, stride=2, padding=0, dilation=1, ceil_mode=False)
        )
    """
    layers: list[nn.Module] = []
    channels = in_channels
    for item in config:
        match = _CONV.match(item)
        if match:
            kernel, filters = int(match.group(1)), int(match.group(2))
            # padding k // 2 keeps the size: 1 for conv3, 0 for configuration C's conv1.
            layers.append(nn.Conv2d(channels, filters, kernel_size=kernel, padding=kernel // 2))
            if batch_norm:
                layers.append(nn.BatchNorm2d(filters))
            layers.append(nn.ReLU())
            channels = filters
        elif item in ("maxpool", "M"):
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        elif item == "LRN":
            layers.append(paper_lrn())
        else:
            raise ValueError(f"unknown VGG layer {item!r}; use 'convK-N', 'maxpool' or 'LRN'")
    return nn.Sequential(*layers)


class VGG(ClassifierNet):
    """A VGG network: a column of the paper's Table 1 and three FC layers.

    The layout is torchvision's: ``features`` (index-named), ``avgpool`` (adaptive, 7x7: the identity
    at 224x224, and what lets smaller inputs such as 32x32 through the same FC layers), ``classifier``
    (FC-4096, ReLU, dropout, FC-4096, ReLU, dropout, FC-num_classes). Weights are initialised as
    torchvision does (He normal for the convolutions, N(0, 0.01) for the FC layers).

    Args:
        config: a key of :data:`CONFIGS` (``"A"``, ``"A-LRN"``, ``"B"``, ``"C"``, ``"D"``, ``"E"``) or a
            list in the same notation.
        num_classes: outputs of the last layer.
        in_channels: image channels.
        batch_norm: BN after each convolution.
        dropout: dropout rate in the classifier.

    Example::

        >>> model = VGG("D", num_classes=10)
        >>> model.forward_features(torch.zeros(1, 3, 224, 224)).shape
        torch.Size([1, 512, 7, 7])
    """

    classifier_name = "classifier.6"

    def __init__(self, config: str | list[str] = "D", num_classes: int = 1000, in_channels: int = 3,
                 batch_norm: bool = False, dropout: float = 0.5):
        super().__init__()
        layers = CONFIGS[config] if isinstance(config, str) else list(config)
        self.config = config if isinstance(config, str) else None
        self.num_classes = num_classes
        self.features = make_layers(layers, batch_norm=batch_norm, in_channels=in_channels)
        self.num_features = [m for m in self.features if isinstance(m, nn.Conv2d)][-1].out_channels
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(
            nn.Linear(self.num_features * 7 * 7, 4096),
            nn.ReLU(),
            nn.Dropout(p=dropout),
            nn.Linear(4096, 4096),
            nn.ReLU(),
            nn.Dropout(p=dropout),
            nn.Linear(4096, num_classes),
        )
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def stage_layout(self) -> list[tuple[str, list[str]]]:
        """``block1``-``block5`` (``features`` split after each max pool), ``head`` (the three FC layers)."""
        return [*pool_blocks(self.features, "features"), ("head", ["classifier"])]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Images -> the last pooled conv maps ``(N, 512, H/32, W/32)``."""
        return self.features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = torch.flatten(self.avgpool(x), 1)
        return self.classifier[:-1](x) if pre_logits else self.classifier(x)


def _vgg(config: str, batch_norm: bool, num_classes: int, in_channels: int, kwargs: dict) -> VGG:
    return VGG(config, num_classes=num_classes, in_channels=in_channels,
               batch_norm=kwargs.pop("batch_norm", batch_norm), **kwargs)


_IN = (3, 224, 224)  # every column takes 224x224 crops and has 1000 ImageNet classes


@register_model(paper=_PAPER, input_size=_IN, num_classes=1000, torchvision="vgg11",
                description="VGG-11, configuration A")
def vgg11(num_classes: int = 1000, in_channels: int = 3, **kwargs) -> VGG:
    """VGG configuration A: 8 conv + 3 FC layers (132,863,336 parameters).

    Example::

        >>> vgg11(num_classes=10)(torch.zeros(1, 3, 32, 32)).shape
        torch.Size([1, 10])
    """
    return _vgg("A", False, num_classes, in_channels, kwargs)


@register_model(paper=_PAPER, input_size=_IN, num_classes=1000, torchvision="vgg11_bn",
                description="VGG-11 (A) with batch norm")
def vgg11_bn(num_classes: int = 1000, in_channels: int = 3, **kwargs) -> VGG:
    """VGG configuration A with BN after each convolution."""
    return _vgg("A", True, num_classes, in_channels, kwargs)


@register_model(paper=_PAPER, input_size=_IN, num_classes=1000,
                description="VGG-11 with LRN after the first layer (A-LRN)")
def vgg11_lrn(num_classes: int = 1000, in_channels: int = 3, **kwargs) -> VGG:
    """VGG configuration A-LRN: A with AlexNet's LRN after conv1 (the paper found it does not help)."""
    return _vgg("A-LRN", False, num_classes, in_channels, kwargs)


@register_model(paper=_PAPER, input_size=_IN, num_classes=1000, torchvision="vgg13",
                description="VGG-13, configuration B")
def vgg13(num_classes: int = 1000, in_channels: int = 3, **kwargs) -> VGG:
    """VGG configuration B: 10 conv + 3 FC layers."""
    return _vgg("B", False, num_classes, in_channels, kwargs)


@register_model(paper=_PAPER, input_size=_IN, num_classes=1000, torchvision="vgg13_bn",
                description="VGG-13 (B) with batch norm")
def vgg13_bn(num_classes: int = 1000, in_channels: int = 3, **kwargs) -> VGG:
    """VGG configuration B with BN after each convolution."""
    return _vgg("B", True, num_classes, in_channels, kwargs)


@register_model(paper=_PAPER, input_size=_IN, num_classes=1000,
                description="VGG-16, configuration C (1x1 convs in blocks 3-5)")
def vgg16_c(num_classes: int = 1000, in_channels: int = 3, **kwargs) -> VGG:
    """VGG configuration C: B plus a 1x1 convolution as the third layer of blocks 3, 4 and 5."""
    return _vgg("C", False, num_classes, in_channels, kwargs)


@register_model(paper=_PAPER, input_size=_IN, num_classes=1000,
                description="VGG-16 configuration C with batch norm")
def vgg16_c_bn(num_classes: int = 1000, in_channels: int = 3, **kwargs) -> VGG:
    """VGG configuration C with BN after each convolution."""
    return _vgg("C", True, num_classes, in_channels, kwargs)


@register_model(paper=_PAPER, input_size=_IN, num_classes=1000, torchvision="vgg16",
                description="VGG-16, configuration D")
def vgg16(num_classes: int = 1000, in_channels: int = 3, **kwargs) -> VGG:
    """VGG configuration D: 13 conv (all 3x3) + 3 FC layers (138,357,544 parameters)."""
    return _vgg("D", False, num_classes, in_channels, kwargs)


@register_model(paper=_PAPER, input_size=_IN, num_classes=1000, torchvision="vgg16_bn",
                description="VGG-16 (D) with batch norm")
def vgg16_bn(num_classes: int = 1000, in_channels: int = 3, **kwargs) -> VGG:
    """VGG configuration D with BN after each convolution."""
    return _vgg("D", True, num_classes, in_channels, kwargs)


@register_model(paper=_PAPER, input_size=_IN, num_classes=1000, torchvision="vgg19",
                description="VGG-19, configuration E")
def vgg19(num_classes: int = 1000, in_channels: int = 3, **kwargs) -> VGG:
    """VGG configuration E: 16 conv + 3 FC layers."""
    return _vgg("E", False, num_classes, in_channels, kwargs)


@register_model(paper=_PAPER, input_size=_IN, num_classes=1000, torchvision="vgg19_bn",
                description="VGG-19 (E) with batch norm")
def vgg19_bn(num_classes: int = 1000, in_channels: int = 3, **kwargs) -> VGG:
    """VGG configuration E with BN after each convolution."""
    return _vgg("E", True, num_classes, in_channels, kwargs)
