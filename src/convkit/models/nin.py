"""Network in Network.

Paper: M. Lin, Q. Chen, S. Yan. "Network In Network." ICLR 2014. arXiv:1312.4400.
https://arxiv.org/abs/1312.4400

The ImageNet form follows A. Zhang, Z. C. Lipton, M. Li, A. J. Smola. "Dive into Deep Learning",
Sec. 8.3 "Network in Network (NiN)". https://d2l.ai/chapter_convolutional-modern/nin.html
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from convkit.layers.blocks import MLPConv
from convkit.models._registry import register_model
from convkit.models.base import ClassifierNet, pool_blocks

__all__ = ["NiN", "nin", "nin_cifar"]

_PAPER = "Lin, Chen & Yan, 2014. Network In Network"


class NiN(ClassifierNet):
    """Network in Network: mlpconv layers and a global-average-pooling head, no FC layers.

    The last mlpconv layer has one output map per class; global average pooling turns each map into
    that class's score (Lin et al., Sec. 3.2). The classifier (what :meth:`reset_classifier` replaces)
    is therefore that block's final 1x1 convolution, ``features.<last>.mlp<k>``.

    ``forward_features`` returns the input of that convolution: the last block's maps after all its
    layers but the final 1x1 convolution and its ReLU. In the ImageNet form these are ``num_classes``
    maps (the block is ``mlpconv(num_classes)`` throughout, as in D2L); in the CIFAR form 192 maps.
    ``forward_head`` applies the final 1x1 convolution, its ReLU (both papers' nets keep it before the
    pooling) and global average pooling.

    Args:
        blocks: ``(name, module)`` pairs of the body; the last one must be an :class:`MLPConv`.
        num_classes: outputs (the last block's output maps).

    Example::

        >>> model = nin(num_classes=10)
        >>> model.classifier_name
        'features.mlpconv4.mlp2'
    """

    def __init__(self, blocks: list[tuple[str, nn.Module]], num_classes: int):
        super().__init__()
        self.features = nn.Sequential(OrderedDict(blocks))
        last_name, last = blocks[-1]
        if not isinstance(last, MLPConv) or last.num_mlp < 1:
            raise ValueError("NiN's last block must be an MLPConv with at least one 1x1 convolution")
        self._last = last_name
        self.classifier_name = f"features.{last_name}.mlp{last.num_mlp}"
        self.num_classes = num_classes
        self.num_features = last.mlp_filters[-2] if last.num_mlp > 1 else last.filters
        self.global_pool = nn.AdaptiveAvgPool2d(1)

    def _head_layers(self) -> list[nn.Module]:
        return list(self.features[-1].children())[-2:]  # the final 1x1 conv and its ReLU

    def stage_layout(self) -> list[tuple[str, list[str]]]:
        """One stage per mlpconv block (with the pooling and dropout after it); ``head`` is the last block's
        final 1x1 convolution (the classifier), the rest of that block being the deepest body stage."""
        return [*pool_blocks(self.features, "features", name="mlpconv"), ("head", [self.classifier_name])]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Images -> the input of the classifier convolution ``(N, num_features, h, w)``."""
        x = self.features[:-1](x)
        for layer in list(self.features[-1].children())[:-2]:
            x = layer(x)
        return x

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if pre_logits:  # the pooled features that the classifier convolution reads
            return torch.flatten(self.global_pool(x), 1)
        for layer in self._head_layers():
            x = layer(x)
        return torch.flatten(self.global_pool(x), 1)


@register_model(paper=_PAPER, input_size=(3, 224, 224), num_classes=1000,
                description="NiN for ImageNet (D2L's form): 4 mlpconv blocks, global average pooling")
def nin(num_classes: int = 1000, in_channels: int = 3, dropout: float = 0.5, **kwargs) -> NiN:
    """NiN for 224x224 images, as in Dive into Deep Learning::

        mlpconv(96, 11, stride 4) -> maxpool 3/2 -> mlpconv(256, 5, pad 2) -> maxpool 3/2
        -> mlpconv(384, 3, pad 1) -> maxpool 3/2 -> dropout -> mlpconv(num_classes, 3, pad 1) -> GAP

    each mlpconv being a conv and two 1x1 convs of the same width, each with ReLU.

    Example::

        >>> nin(num_classes=10)(torch.zeros(1, 3, 224, 224)).shape
        torch.Size([1, 10])
    """
    if kwargs:
        raise TypeError(f"nin got unexpected arguments: {', '.join(kwargs)}")
    blocks = [
        ("mlpconv1", MLPConv(96, 11, stride=4, in_channels=in_channels)),
        ("pool1", nn.MaxPool2d(3, stride=2)),
        ("mlpconv2", MLPConv(256, 5, padding=2, in_channels=96)),
        ("pool2", nn.MaxPool2d(3, stride=2)),
        ("mlpconv3", MLPConv(384, 3, padding=1, in_channels=256)),
        ("pool3", nn.MaxPool2d(3, stride=2)),
        ("dropout", nn.Dropout(dropout)),
        ("mlpconv4", MLPConv(num_classes, 3, padding=1, in_channels=384)),
    ]
    return NiN(blocks, num_classes)


@register_model(paper=_PAPER, input_size=(3, 32, 32), num_classes=10,
                description="NiN for CIFAR-10 as in the paper: 192-160-96 / 192-192-192 / 192-192-10")
def nin_cifar(num_classes: int = 10, in_channels: int = 3, dropout: float = 0.5, **kwargs) -> NiN:
    """The paper's CIFAR-10 network (its Caffe model): three mlpconv layers and global average pooling::

        mlpconv 192@5x5 pad 2, 160, 96  -> maxpool 3/2 -> dropout     32 -> 16
        mlpconv 192@5x5 pad 2, 192, 192 -> avgpool 3/2 -> dropout     16 -> 8
        mlpconv 192@3x3 pad 1, 192, num_classes -> global average pooling

    The pools round up (Caffe's convention), which gives the 16x16 and 8x8 maps of the Caffe model.

    Example::

        >>> nin_cifar()(torch.zeros(1, 3, 32, 32)).shape
        torch.Size([1, 10])
    """
    if kwargs:
        raise TypeError(f"nin_cifar got unexpected arguments: {', '.join(kwargs)}")
    blocks = [
        ("mlpconv1", MLPConv(192, 5, padding=2, mlp_filters=[160, 96], in_channels=in_channels)),
        ("pool1", nn.MaxPool2d(3, stride=2, ceil_mode=True)),
        ("dropout1", nn.Dropout(dropout)),
        ("mlpconv2", MLPConv(192, 5, padding=2, mlp_filters=[192, 192], in_channels=96)),
        ("pool2", nn.AvgPool2d(3, stride=2, ceil_mode=True)),
        ("dropout2", nn.Dropout(dropout)),
        ("mlpconv3", MLPConv(192, 3, padding=1, mlp_filters=[192, num_classes], in_channels=192)),
    ]
    return NiN(blocks, num_classes)
