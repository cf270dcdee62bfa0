"""AlexNet.

Paper: A. Krizhevsky, I. Sutskever, G. E. Hinton. "ImageNet Classification with Deep Convolutional
Neural Networks." NeurIPS (NIPS) 2012.
https://papers.nips.cc/paper/2012/hash/c399862d3b9d6b76c8436e924a68c45b-Abstract.html

The single-tower form (torchvision's ``alexnet``) follows A. Krizhevsky. "One weird trick for
parallelizing convolutional neural networks." arXiv:1404.5997, 2014.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from convkit.models._registry import register_model
from convkit.models.base import ClassifierNet, pool_blocks

__all__ = ["AlexNet", "AlexNetLRN", "alexnet", "alexnet_lrn"]

_PAPER = "Krizhevsky, Sutskever & Hinton, 2012. ImageNet Classification with Deep Convolutional Neural Networks"

# The paper's local response normalisation: b = a / (k + alpha * sum_{n neighbours} a^2)^beta with
# k=2, n=5, alpha=1e-4, beta=0.75. torch's nn.LocalResponseNorm divides alpha by n (as Caffe does), so
# the paper's alpha is passed as alpha * n = 5e-4.
LRN_SIZE, LRN_ALPHA, LRN_BETA, LRN_K = 5, 1e-4, 0.75, 2.0


def paper_lrn() -> nn.LocalResponseNorm:
    """AlexNet's LRN with the paper's constants (k=2, n=5, alpha=1e-4, beta=0.75), in torch's convention."""
    return nn.LocalResponseNorm(LRN_SIZE, alpha=LRN_ALPHA * LRN_SIZE, beta=LRN_BETA, k=LRN_K)


class _AlexNetHead(ClassifierNet):
    """``features`` -> ``avgpool`` (adaptive, 6x6) -> ``classifier`` (Dropout-FC-ReLU x 2, FC)."""

    classifier_name = "classifier.6"

    def _make_head(self, num_classes: int, dropout: float) -> None:
        self.num_classes = num_classes
        self.num_features = 256
        # Adaptive pooling makes the head independent of the input size; at 224/227 the maps are
        # already 6x6 and it is the identity.
        self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
        self.classifier = nn.Sequential(
            nn.Dropout(p=dropout),
            nn.Linear(256 * 6 * 6, 4096),
            nn.ReLU(),
            nn.Dropout(p=dropout),
            nn.Linear(4096, 4096),
            nn.ReLU(),
            nn.Linear(4096, num_classes),
        )

    def stage_layout(self) -> list[tuple[str, list[str]]]:
        """``block1``... (``features`` split after each max pool), ``head`` (the three FC layers)."""
        return [*pool_blocks(self.features, "features"), ("head", ["classifier"])]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Images -> the last (pooled) conv maps ``(N, 256, 6, 6)`` at 224x224/227x227."""
        return self.features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = torch.flatten(self.avgpool(x), 1)
        return self.classifier[:-1](x) if pre_logits else self.classifier(x)


class AlexNet(_AlexNetHead):
    """AlexNet in torchvision's single-tower form: 64-192-384-256-256 filters, no LRN, 61,100,840 parameters.

    Module names and shapes are torchvision's, so ``load_state_dict(torchvision.models.alexnet().state_dict())``
    works.

    Args:
        num_classes: outputs of the last layer.
        in_channels: image channels.
        dropout: dropout rate before the two hidden FC layers.

    Example::

        >>> AlexNet(num_classes=10)(torch.zeros(1, 3, 224, 224)).shape
        torch.Size([1, 10])
    """

    def __init__(self, num_classes: int = 1000, in_channels: int = 3, dropout: float = 0.5):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 64, kernel_size=11, stride=4, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(64, 192, kernel_size=5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(192, 384, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.Conv2d(384, 256, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.Conv2d(256, 256, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(kernel_size=3, stride=2),
        )
        self._make_head(num_classes, dropout)


class AlexNetLRN(_AlexNetHead):
    """AlexNet as published: two GPU towers (``groups=2``) and local response normalisation.

    The paper splits the network over two GPUs; conv2, conv4 and conv5 only see the maps of their own
    GPU, which is exactly a grouped convolution with ``groups=2`` (conv3 and the FC layers connect
    across GPUs). LRN follows the ReLU of conv1 and conv2, and max pooling (3x3, stride 2:
    "overlapping") follows each LRN and conv5. With a 227x227 input (the paper's 224 does not give
    its 55x55 maps) the maps are 96@55, 96@27, 256@27, 256@13, 384@13, 384@13, 256@13, 256@6, and the
    network has 60,965,224 parameters (the count of Caffe's bvlc_alexnet/CaffeNet).

    Args:
        num_classes: outputs of the last layer.
        in_channels: image channels.
        dropout: dropout rate before the two hidden FC layers.

    Example::

        >>> AlexNetLRN()(torch.zeros(1, 3, 227, 227)).shape
        torch.Size([1, 1000])
    """

    def __init__(self, num_classes: int = 1000, in_channels: int = 3, dropout: float = 0.5):
        super().__init__()
        self.features = nn.Sequential(OrderedDict([
            ("conv1", nn.Conv2d(in_channels, 96, kernel_size=11, stride=4)),
            ("relu1", nn.ReLU()),
            ("norm1", paper_lrn()),
            ("pool1", nn.MaxPool2d(kernel_size=3, stride=2)),
            ("conv2", nn.Conv2d(96, 256, kernel_size=5, padding=2, groups=2)),
            ("relu2", nn.ReLU()),
            ("norm2", paper_lrn()),
            ("pool2", nn.MaxPool2d(kernel_size=3, stride=2)),
            ("conv3", nn.Conv2d(256, 384, kernel_size=3, padding=1)),
            ("relu3", nn.ReLU()),
            ("conv4", nn.Conv2d(384, 384, kernel_size=3, padding=1, groups=2)),
            ("relu4", nn.ReLU()),
            ("conv5", nn.Conv2d(384, 256, kernel_size=3, padding=1, groups=2)),
            ("relu5", nn.ReLU()),
            ("pool5", nn.MaxPool2d(kernel_size=3, stride=2)),
        ]))
        self._make_head(num_classes, dropout)


@register_model(paper=_PAPER, input_size=(3, 224, 224), num_classes=1000, torchvision="alexnet",
                description="AlexNet, torchvision's single-tower form (64-192-384-256-256, no LRN)")
def alexnet(num_classes: int = 1000, in_channels: int = 3, **kwargs) -> AlexNet:
    """AlexNet as in torchvision (61,100,840 parameters); ``dropout=`` sets the FC dropout.

    Example::

        >>> alexnet(num_classes=10)(torch.zeros(1, 3, 224, 224)).shape
        torch.Size([1, 10])
    """
    return AlexNet(num_classes=num_classes, in_channels=in_channels, **kwargs)


@register_model(paper=_PAPER, input_size=(3, 227, 227), num_classes=1000,
                description="AlexNet as published: two towers as groups=2, LRN after conv1 and conv2")
def alexnet_lrn(num_classes: int = 1000, in_channels: int = 3, **kwargs) -> AlexNetLRN:
    """The paper's AlexNet (60,965,224 parameters), input 227x227.

    Example::

        >>> alexnet_lrn()(torch.zeros(1, 3, 227, 227)).shape
        torch.Size([1, 1000])
    """
    return AlexNetLRN(num_classes=num_classes, in_channels=in_channels, **kwargs)
