"""LeNet-5.

Paper: Y. LeCun, L. Bottou, Y. Bengio, P. Haffner. "Gradient-Based Learning Applied to Document
Recognition." Proceedings of the IEEE 86(11):2278-2324, 1998. doi:10.1109/5.726791.
http://yann.lecun.com/exdb/publis/pdf/lecun-01a.pdf
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from convkit.layers.core import get_activation
from convkit.models._registry import register_model
from convkit.models.base import ClassifierNet, pool_blocks

__all__ = ["LeNet5", "lenet5"]

_PAPER = "LeCun, Bottou, Bengio & Haffner, 1998. Gradient-Based Learning Applied to Document Recognition"


class LeNet5(ClassifierNet):
    """LeNet-5 (LeCun et al., 1998, Fig. 2), in the form most implementations use.

    Layers, named as in the paper::

        C1  conv 6@5x5          32x32 -> 6@28x28
        S2  2x2 average pool    -> 6@14x14
        C3  conv 16@5x5         -> 16@10x10
        S4  2x2 average pool    -> 16@5x5
        C5  conv 120@5x5        -> 120@1x1
        F6  fully connected 84
        output  fully connected num_classes

    with an activation after C1, C3, C5 and F6 (``tanh`` by default). Two parts of the paper are
    replaced, as in most implementations: C3's partial connection table (each C3 map reads a subset
    of the S2 maps, Table I) is a full connection, and the Euclidean RBF output units are a linear
    layer (use a softmax cross-entropy loss). The subsampling layers are plain average pools, without
    the paper's trainable coefficient and bias per map, and ``tanh`` is unscaled (the paper uses
    ``1.7159 tanh(2a/3)``). That gives 61,706 parameters for 10 classes.

    Args:
        num_classes: outputs of the last layer.
        in_channels: image channels.
        activation: activation name (``"tanh"``, ``"relu"``, ``"sigmoid"``...).
        input_size: 32 (the paper, MNIST digits padded to 32x32) or 28 (raw MNIST): with 28, C1 pads
            by 2 pixels, which gives the same 28x28 C1 maps and hence the same network.

    Example::

        >>> model = LeNet5(num_classes=10)
        >>> model(torch.zeros(1, 1, 32, 32)).shape
        torch.Size([1, 10])
    """

    classifier_name = "classifier.output"

    def __init__(self, num_classes: int = 10, in_channels: int = 1, activation: str = "tanh", input_size: int = 32):
        super().__init__()
        if input_size not in (28, 32):
            raise ValueError(f"LeNet5 takes 32x32 (the paper) or 28x28 inputs, got input_size={input_size}")
        self.num_classes = num_classes
        self.num_features = 120
        self.input_size = input_size
        self.features = nn.Sequential(OrderedDict([
            ("c1", nn.Conv2d(in_channels, 6, 5, padding=2 if input_size == 28 else 0)),
            ("act1", get_activation(activation)),
            ("s2", nn.AvgPool2d(2)),
            ("c3", nn.Conv2d(6, 16, 5)),
            ("act3", get_activation(activation)),
            ("s4", nn.AvgPool2d(2)),
            ("c5", nn.Conv2d(16, 120, 5)),
            ("act5", get_activation(activation)),
        ]))
        self.classifier = nn.Sequential(OrderedDict([
            ("f6", nn.Linear(120, 84)),
            ("act6", get_activation(activation)),
            ("output", nn.Linear(84, num_classes)),
        ]))

    def stage_layout(self) -> list[tuple[str, list[str]]]:
        """``block1`` (C1, S2), ``block2`` (C3, S4), ``block3`` (C5), ``head`` (F6 and the output layer)."""
        return [*pool_blocks(self.features, "features"), ("head", ["classifier"])]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Images -> C5's maps ``(N, 120, 1, 1)``."""
        return self.features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = torch.flatten(x, 1)
        x = self.classifier.act6(self.classifier.f6(x))
        return x if pre_logits else self.classifier.output(x)


@register_model(paper=_PAPER, input_size=(1, 32, 32), num_classes=10,
                description="LeNet-5: C1-S2-C3-S4-C5-F6, tanh, full C3 connections, linear output")
def lenet5(num_classes: int = 10, in_channels: int = 1, **kwargs) -> LeNet5:
    """LeNet-5 for 32x32 digits; ``input_size=28`` for raw MNIST, ``activation="relu"`` for ReLU.

    Example::

        >>> lenet5(input_size=28)(torch.zeros(1, 1, 28, 28)).shape
        torch.Size([1, 10])
    """
    return LeNet5(num_classes=num_classes, in_channels=in_channels, **kwargs)
