"""ZFNet.

Paper: M. D. Zeiler, R. Fergus. "Visualizing and Understanding Convolutional Networks." ECCV 2014.
arXiv:1311.2901. https://arxiv.org/abs/1311.2901
"""

from __future__ import annotations

from collections import OrderedDict

from torch import nn

from convkit.models._registry import register_model
from convkit.models.alexnet import _AlexNetHead, paper_lrn

__all__ = ["ZFNet", "zfnet"]

_PAPER = "Zeiler & Fergus, 2014. Visualizing and Understanding Convolutional Networks"


class ZFNet(_AlexNetHead):
    """ZFNet (Zeiler & Fergus, 2014, Fig. 3): AlexNet with a smaller first-layer filter and stride.

    Their visualisations showed AlexNet's 11x11/4 first layer leaves dead filters and aliasing, so
    layer 1 is 96@7x7/2 and layer 2 has stride 2; layers 3-5 are densely connected (no GPU split).
    Layer by layer, for a 224x224 input (the paper's Fig. 3 sizes)::

        conv1 96@7x7/2 pad 1 -> 110   max pool 3/2 -> 55   LRN
        conv2 256@5x5/2      -> 26    max pool 3/2 -> 13   LRN
        conv3 384@3x3 pad 1  -> 13
        conv4 384@3x3 pad 1  -> 13
        conv5 256@3x3 pad 1  -> 13    max pool 3/2 -> 6
        FC 4096, FC 4096, FC num_classes

    The pools round up (``ceil_mode=True``), as Caffe does: floor would give 54 and 12, not the
    paper's 55 and 13. The contrast normalisation is AlexNet's LRN constants (the paper gives none).

    Args:
        num_classes: outputs of the last layer.
        in_channels: image channels.
        dropout: dropout rate before the two hidden FC layers (the paper uses 0.5).

    Example::

        >>> import torch
        >>> ZFNet()(torch.zeros(1, 3, 224, 224)).shape
        torch.Size([1, 1000])
    """

    def __init__(self, num_classes: int = 1000, in_channels: int = 3, dropout: float = 0.5):
        super().__init__()
        self.features = nn.Sequential(OrderedDict([
            ("conv1", nn.Conv2d(in_channels, 96, kernel_size=7, stride=2, padding=1)),
            ("relu1", nn.ReLU()),
            ("pool1", nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True)),
            ("norm1", paper_lrn()),
            ("conv2", nn.Conv2d(96, 256, kernel_size=5, stride=2)),
            ("relu2", nn.ReLU()),
            ("pool2", nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True)),
            ("norm2", paper_lrn()),
            ("conv3", nn.Conv2d(256, 384, kernel_size=3, padding=1)),
            ("relu3", nn.ReLU()),
            ("conv4", nn.Conv2d(384, 384, kernel_size=3, padding=1)),
            ("relu4", nn.ReLU()),
            ("conv5", nn.Conv2d(384, 256, kernel_size=3, padding=1)),
            ("relu5", nn.ReLU()),
            ("pool5", nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True)),
        ]))
        self._make_head(num_classes, dropout)


@register_model(paper=_PAPER, input_size=(3, 224, 224), num_classes=1000,
                description="ZFNet: AlexNet with 7x7/2 conv1, stride-2 conv2, dense conv3-5")
def zfnet(num_classes: int = 1000, in_channels: int = 3, **kwargs) -> ZFNet:
    """ZFNet for 224x224 images (62,357,608 parameters).

    Example::

        >>> import torch
        >>> zfnet(num_classes=10)(torch.zeros(1, 3, 224, 224)).shape
        torch.Size([1, 10])
    """
    return ZFNet(num_classes=num_classes, in_channels=in_channels, **kwargs)
