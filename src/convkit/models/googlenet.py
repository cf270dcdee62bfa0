"""GoogLeNet (Inception v1).

Paper: C. Szegedy, W. Liu, Y. Jia, P. Sermanet, S. Reed, D. Anguelov, D. Erhan, V. Vanhoucke,
A. Rabinovich. "Going Deeper with Convolutions." CVPR 2015. arXiv:1409.4842.
https://arxiv.org/abs/1409.4842

``googlenet_bn`` is torchvision's ``googlenet``, which adds batch normalisation (S. Ioffe, C. Szegedy,
"Batch Normalization", ICML 2015, arXiv:1502.03167).
"""

from __future__ import annotations

from collections import namedtuple

import torch
from torch import nn

from convkit.layers.blocks import ConvBNAct, InceptionModule
from convkit.models._registry import register_model
from convkit.models.base import ClassifierNet

__all__ = ["GoogLeNet", "GoogLeNetOutputs", "InceptionAux", "googlenet", "googlenet_bn"]

_PAPER = "Szegedy et al., 2015. Going Deeper with Convolutions"

# The paper's Table 1: #1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj of each Inception module.
TABLE1: dict[str, tuple[int, int, int, int, int, int]] = {
    "inception3a": (64, 96, 128, 16, 32, 32),
    "inception3b": (128, 128, 192, 32, 96, 64),
    "inception4a": (192, 96, 208, 16, 48, 64),
    "inception4b": (160, 112, 224, 24, 64, 64),
    "inception4c": (128, 128, 256, 24, 64, 64),
    "inception4d": (112, 144, 288, 32, 64, 64),
    "inception4e": (256, 160, 320, 32, 128, 128),
    "inception5a": (256, 160, 320, 32, 128, 128),
    "inception5b": (384, 192, 384, 48, 128, 128),
}

#: What ``forward`` returns in training mode with ``aux_logits=True`` (torchvision's order).
GoogLeNetOutputs = namedtuple("GoogLeNetOutputs", ["logits", "aux_logits2", "aux_logits1"])


class InceptionAux(nn.Module):
    """An auxiliary classifier (Sec. 5): avg pool to 4x4, 1x1 conv 128 + ReLU, FC 1024 + ReLU, dropout 0.7, FC.

    The paper pools with a 5x5 window and stride 3 (14x14 -> 4x4); torchvision pools adaptively to 4x4,
    which differs slightly in the windows but has the same parameters. Names are torchvision's.
    """

    def __init__(self, in_channels: int, num_classes: int, batch_norm: bool, dropout: float = 0.7):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d((4, 4)) if batch_norm else nn.AvgPool2d(5, stride=3)
        self.conv = ConvBNAct(128, 1, batch_norm=batch_norm, bn_eps=1e-3, in_channels=in_channels)
        self.fc1 = nn.Linear(128 * 4 * 4, 1024)
        self.relu = nn.ReLU()
        self.dropout = nn.Dropout(p=dropout)
        self.fc2 = nn.Linear(1024, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(self.conv(self.pool(x)), 1)
        return self.fc2(self.dropout(self.relu(self.fc1(x))))


class GoogLeNet(ClassifierNet):
    """GoogLeNet: a stem, nine Inception modules (the paper's Table 1), global average pooling, one FC.

    Layer by layer at 224x224: conv1 7x7/2 (64) -> 112, max pool 3/2 -> 56, conv2 1x1 (64), conv3 3x3
    (192), max pool 3/2 -> 28, inception 3a, 3b (480), max pool -> 14, inception 4a-4e (832), max pool
    -> 7, inception 5a, 5b (1024), average pool -> 1, dropout, FC.

    Two forms:

    * ``batch_norm=False`` (the paper): every conv has a bias and a ReLU, the Inception modules have
      5x5 branches, LRN follows the first max pool and conv3, the last stem pool before inception 5a is
      3x3/2, dropout 0.4. Weights are initialised as Caffe's bvlc_googlenet (Xavier, bias 0.2), since
      without BN N(0, 0.01) would vanish through 22 layers.
    * ``batch_norm=True`` (torchvision's ``googlenet``): conv without bias + BN(eps=1e-3) + ReLU, no LRN,
      branch3's 3x3 slip, a 2x2/2 pool before 5a, dropout 0.2, torchvision's truncated-normal init.
      Names and shapes are torchvision's, so its weights load (``transform_input`` is not applied:
      normalise the input as for any other model).

    With ``aux_logits=True`` the two auxiliary classifiers (after 4a and 4d) are added and, in training
    mode only, ``forward`` returns :data:`GoogLeNetOutputs` ``(logits, aux_logits2, aux_logits1)``; the
    paper weights their losses by 0.3. In eval mode ``forward`` returns the logits.

    Args:
        num_classes: outputs of the classifier.
        in_channels: image channels.
        batch_norm: torchvision's BN form instead of the paper's.
        aux_logits: add the auxiliary classifiers.
        dropout: dropout before the FC layer (default 0.4 for the paper, 0.2 for torchvision's form).
        dropout_aux: dropout in the auxiliary classifiers.

    Example::

        >>> model = GoogLeNet(num_classes=10)
        >>> model.forward_features(torch.zeros(1, 3, 224, 224)).shape
        torch.Size([1, 1024, 7, 7])
    """

    classifier_name = "fc"

    def __init__(self, num_classes: int = 1000, in_channels: int = 3, batch_norm: bool = False,
                 aux_logits: bool = False, dropout: float | None = None, dropout_aux: float = 0.7):
        super().__init__()
        self.num_classes = num_classes
        self.num_features = 1024
        self.batch_norm = batch_norm
        self.aux_logits = aux_logits
        if dropout is None:
            dropout = 0.2 if batch_norm else 0.4

        def conv(cin, cout, k, stride=1):
            return ConvBNAct(cout, k, stride=stride, batch_norm=batch_norm, bn_eps=1e-3, in_channels=cin)

        def inception(name, cin):
            return InceptionModule(*TABLE1[name], batch_norm=batch_norm, branch3_kernel=3 if batch_norm else 5,
                                   in_channels=cin)

        # The paper's LRN (its Caffe model: n=5, alpha=1e-4, beta=0.75, k=1). Caffe and torch both divide
        # alpha by n, so the constants carry over unchanged.
        def lrn():
            return nn.Identity() if batch_norm else nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=1.0)

        # ceil_mode on the pools, as in Caffe and torchvision: 112 -> 56 -> 28 -> 14 -> 7 as in Table 1.
        self.conv1 = conv(in_channels, 64, 7, stride=2)
        self.maxpool1 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.lrn1 = lrn()
        self.conv2 = conv(64, 64, 1)
        self.conv3 = conv(64, 192, 3)
        self.lrn2 = lrn()
        self.maxpool2 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.inception3a = inception("inception3a", 192)
        self.inception3b = inception("inception3b", 256)
        self.maxpool3 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.inception4a = inception("inception4a", 480)
        self.inception4b = inception("inception4b", 512)
        self.inception4c = inception("inception4c", 512)
        self.inception4d = inception("inception4d", 512)
        self.inception4e = inception("inception4e", 528)
        self.maxpool4 = (nn.MaxPool2d(2, stride=2, ceil_mode=True) if batch_norm
                         else nn.MaxPool2d(3, stride=2, ceil_mode=True))
        self.inception5a = inception("inception5a", 832)
        self.inception5b = inception("inception5b", 832)
        if aux_logits:
            self.aux1 = InceptionAux(512, num_classes, batch_norm, dropout_aux)
            self.aux2 = InceptionAux(528, num_classes, batch_norm, dropout_aux)
        else:
            self.aux1 = self.aux2 = None
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.dropout = nn.Dropout(p=dropout)
        self.fc = nn.Linear(1024, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                if self.batch_norm:  # torchvision's googlenet(init_weights=True)
                    nn.init.trunc_normal_(m.weight, mean=0.0, std=0.01, a=-2, b=2)
                else:  # Caffe's bvlc_googlenet: xavier weights, constant 0.2 biases
                    nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.constant_(m.bias, 0.0 if self.batch_norm or isinstance(m, nn.Linear) else 0.2)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _body(self, x: torch.Tensor, with_aux: bool):
        x = self.maxpool1(self.conv1(x))
        x = self.lrn1(x)
        x = self.lrn2(self.conv3(self.conv2(x)))
        x = self.maxpool2(x)
        x = self.maxpool3(self.inception3b(self.inception3a(x)))
        x = self.inception4a(x)
        aux1 = self.aux1(x) if with_aux else None
        x = self.inception4d(self.inception4c(self.inception4b(x)))
        aux2 = self.aux2(x) if with_aux else None
        x = self.maxpool4(self.inception4e(x))
        x = self.inception5b(self.inception5a(x))
        return x, aux1, aux2

    def stage_layout(self) -> list[tuple[str, list[str]]]:
        """``stem`` (conv1-conv3), ``inception3`` (3a, 3b), ``inception4`` (4a-4e), ``inception5`` (5a, 5b),
        ``head`` (fc, and the auxiliary classifiers when there are any)."""
        children = [n for n, _ in self.named_children()]
        return [("stem", [n for n in children if n.startswith(("conv", "lrn", "maxpool1", "maxpool2"))]),
                *((f"inception{k}", [n for n in children if n.startswith(f"inception{k}")]) for k in (3, 4, 5)),
                ("head", [n for n in ("fc", "aux1", "aux2") if getattr(self, n, None) is not None])]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Images -> inception (5b)'s maps ``(N, 1024, 7, 7)`` at 224x224."""
        return self._body(x, with_aux=False)[0]

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.dropout(torch.flatten(self.avgpool(x), 1))
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor):
        if self.aux_logits and self.training:
            x, aux1, aux2 = self._body(x, with_aux=True)
            return GoogLeNetOutputs(self.forward_head(x), aux2, aux1)
        return self.forward_head(self.forward_features(x))


@register_model(paper=_PAPER, input_size=(3, 224, 224), num_classes=1000,
                description="GoogLeNet as published: 5x5 branches, LRN, no BN; aux_logits=True adds the aux heads")
def googlenet(num_classes: int = 1000, in_channels: int = 3, **kwargs) -> GoogLeNet:
    """The paper's GoogLeNet (Inception v1), without the auxiliary classifiers unless ``aux_logits=True``.

    Example::

        >>> googlenet(num_classes=10)(torch.zeros(1, 3, 224, 224)).shape
        torch.Size([1, 10])
    """
    kwargs.setdefault("batch_norm", False)
    return GoogLeNet(num_classes=num_classes, in_channels=in_channels, **kwargs)


@register_model(paper=_PAPER, input_size=(3, 224, 224), num_classes=1000, torchvision="googlenet",
                description="GoogLeNet with batch norm, torchvision's layout (loads its weights)")
def googlenet_bn(num_classes: int = 1000, in_channels: int = 3, **kwargs) -> GoogLeNet:
    """torchvision's GoogLeNet: 6,624,904 parameters without the auxiliary classifiers.

    Example::

        >>> googlenet_bn(num_classes=10)(torch.zeros(1, 3, 224, 224)).shape
        torch.Size([1, 10])
    """
    kwargs.setdefault("batch_norm", True)
    return GoogLeNet(num_classes=num_classes, in_channels=in_channels, **kwargs)
