"""Small-input networks for 28x28 and 32x32 images: a fast CNN, and the CIFAR-10 ResNets.

Papers:
    * K. He, X. Zhang, S. Ren, J. Sun. "Deep Residual Learning for Image Recognition." CVPR 2016.
      arXiv:1512.03385, Sec. 4.2 "CIFAR-10 and Analysis". https://arxiv.org/abs/1512.03385
      (``resnet20`` ... ``resnet110``)
    * S. Ioffe, C. Szegedy. "Batch Normalization: Accelerating Deep Network Training by Reducing
      Internal Covariate Shift." ICML 2015. arXiv:1502.03167. (``fastcnn``'s conv-BN-ReLU units)
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from convkit.layers.blocks import BasicBlock, ConvBNAct
from convkit.models._registry import register_model
from convkit.models.base import ClassifierNet

__all__ = ["CifarResNet", "FastCNN", "ZeroPadShortcut", "fastcnn", "resnet20", "resnet32", "resnet44",
           "resnet56", "resnet110"]

_RESNET = "He, Zhang, Ren & Sun, 2016. Deep Residual Learning for Image Recognition (Sec. 4.2, CIFAR-10)"
_BN = "Ioffe & Szegedy, 2015. Batch Normalization (conv-BN-ReLU stages)"


class FastCNN(ClassifierNet):
    """A compact conv-BN-ReLU network that trains in about a minute on two CPU cores.

    Stages of 3x3 conv-BN-ReLU units (``depths[i]`` units of ``widths[i]`` filters), a 2x2 max pool
    after every stage but the last, an adaptive average pool to ``pool`` x ``pool`` maps, dropout and one
    linear layer on the flattened maps. The adaptive pool makes it take any input size (32x32 CIFAR with
    ``in_channels=3``).

    The default (widths 16/32/64, depths 1/2/2; 28 -> 14 -> 7) costs 5.6 M multiply-adds at 28x28 and
    has 101 K parameters, so that two CPU cores train about three epochs of Fashion-MNIST a minute
    (about 3,000 training images/s measured) and reach about 92% (convkit's default recipe: AdamW,
    one-cycle, EMA, flips). ``pool=7`` is the identity at 28x28: the linear layer sees *where* each
    feature is, which Fashion-MNIST's centred garments reward; global average pooling (``pool=1``)
    throws that away and needs more epochs (measured 89.4% against 91.2% after two epochs, same recipe
    otherwise). Compute, not capacity, is the limit on CPUs: ``widths=(32, 64, 128), depths=2``
    (29 M multiply-adds) is the stronger net when minutes are available, at about 440 images/s.

    Args:
        num_classes: outputs of the linear layer.
        in_channels: image channels (1 for MNIST/Fashion-MNIST, 3 for CIFAR).
        widths: filters of each stage.
        depths: conv-BN-ReLU units per stage (one entry per stage, or an int for all).
        dropout: dropout rate before the linear layer.
        pool: the side of the maps the linear layer sees (adaptive average pooling; 1 = global).

    Example::

        >>> model = FastCNN(widths=(32, 64, 128), depths=2)
        >>> model(torch.zeros(2, 1, 28, 28)).shape
        torch.Size([2, 10])
    """

    classifier_name = "fc"

    def __init__(self, num_classes: int = 10, in_channels: int = 1, widths: Sequence[int] = (16, 32, 64),
                 depths: int | Sequence[int] = (1, 2, 2), dropout: float = 0.0, pool: int = 7):
        super().__init__()
        widths = tuple(int(w) for w in widths)
        depths = (int(depths),) * len(widths) if isinstance(depths, int) else tuple(int(d) for d in depths)
        if not widths or len(depths) != len(widths) or min(depths) < 1:
            raise ValueError(f"widths and depths need one entry (>= 1) per stage, got {widths} and {depths}")
        self.widths, self.depths = widths, depths
        self.num_classes = num_classes
        self.num_features = widths[-1]
        layers: list[tuple[str, nn.Module]] = []
        channels = in_channels
        for i, (width, depth) in enumerate(zip(widths, depths), 1):
            units = []
            for _ in range(depth):
                units.append(ConvBNAct(width, 3, in_channels=channels))
                channels = width
            layers.append((f"stage{i}", nn.Sequential(*units)))
            if i < len(widths):
                layers.append((f"pool{i}", nn.MaxPool2d(2)))
        self.features = nn.Sequential(OrderedDict(layers))
        self.pool = nn.AdaptiveAvgPool2d(pool)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(widths[-1] * pool * pool, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def stage_layout(self) -> list[tuple[str, list[str]]]:
        """``stage1``... (each with the pool after it), ``head`` (fc)."""
        children = [n for n, _ in self.features.named_children()]
        return [*((n, [f"features.{m}" for m in (n, f"pool{n[5:]}") if m in children])
                  for n in children if n.startswith("stage")), ("head", ["fc"])]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Images -> the last stage's maps ``(N, widths[-1], H/4, W/4)``."""
        return self.features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.dropout(torch.flatten(self.pool(x), 1))
        return x if pre_logits else self.fc(x)


@register_model(paper=_BN, input_size=(1, 28, 28), num_classes=10,
                description="Fast conv-BN-ReLU CNN for MNIST/Fashion-MNIST/CIFAR (5.6 M mult-adds at 28x28)")
def fastcnn(num_classes: int = 10, in_channels: int = 1, **kwargs) -> FastCNN:
    """A small, fast CNN for 28x28 and 32x32 images; ``widths=(32, 64, 128), depths=2`` for a 5x bigger one.

    Example::

        >>> fastcnn(in_channels=3)(torch.zeros(1, 3, 32, 32)).shape
        torch.Size([1, 10])
    """
    return FastCNN(num_classes=num_classes, in_channels=in_channels, **kwargs)


class ZeroPadShortcut(nn.Module):
    """The paper's option A shortcut: identity, subsampled by the stride, with zero maps for the new channels.

    It has no parameters, which is why the CIFAR ResNets of Sec. 4.2 have exactly the parameters of
    their plain counterparts.
    """

    def __init__(self, stride: int, extra_channels: int):
        super().__init__()
        self.stride = stride
        self.extra_channels = extra_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride != 1:
            x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, 0, self.extra_channels)) if self.extra_channels else x

    def extra_repr(self) -> str:
        return f"stride={self.stride}, extra_channels={self.extra_channels}"


class CifarResNet(ClassifierNet):
    """The CIFAR-10 ResNets of He et al., 2016, Sec. 4.2: 6n + 2 weighted layers.

    ``conv1`` 3x3 (16) + BN + ReLU on 32x32, three stages ``layer1``-``layer3`` of ``n`` basic blocks with
    16, 32, 64 filters on 32x32, 16x16, 8x8 maps (the first block of stages 2 and 3 subsamples with
    stride 2), global average pooling and ``fc``. n = 3, 5, 7, 9, 18 give ResNet-20, 32, 44, 56, 110.

    Shortcuts: ``"A"`` (the paper's choice for CIFAR) is the identity, zero-padded in the channels and
    subsampled where the size halves: no parameters, so ResNet-20 has 269,722 (the paper's "0.27M").
    ``"B"`` uses projection shortcuts (1x1 conv + BN) there instead, adding 2,752 parameters.

    Args:
        n: blocks per stage.
        num_classes: outputs of ``fc``.
        in_channels: image channels.
        shortcut: ``"A"`` or ``"B"``.
        zero_init_residual: start each block's last BN at zero.

    Example::

        >>> model = CifarResNet(3)
        >>> model.forward_features(torch.zeros(1, 3, 32, 32)).shape
        torch.Size([1, 64, 8, 8])
    """

    classifier_name = "fc"

    def __init__(self, n: int, num_classes: int = 10, in_channels: int = 3, shortcut: str = "A",
                 zero_init_residual: bool = False):
        super().__init__()
        shortcut = shortcut.upper()
        if shortcut not in ("A", "B"):
            raise ValueError(f"shortcut must be 'A' (zero-padding identity) or 'B' (projection), got {shortcut!r}")
        self.depth = 6 * n + 2
        self.shortcut = shortcut
        self.num_classes = num_classes
        self.num_features = 64
        self.conv1 = nn.Conv2d(in_channels, 16, kernel_size=3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU()
        channels = 16
        for i, (planes, stride) in enumerate([(16, 1), (32, 2), (64, 2)], 1):
            blocks = []
            for j in range(n):
                block = BasicBlock(planes, stride if j == 0 else 1, in_channels=channels)
                if shortcut == "A" and block.downsample is not None:
                    block.downsample = ZeroPadShortcut(block.stride, planes - channels)
                blocks.append(block)
                channels = planes
            self.add_module(f"layer{i}", nn.Sequential(*blocks))
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(64, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, BasicBlock):
                    nn.init.zeros_(m.bn2.weight)

    def stage_layout(self) -> list[tuple[str, list[str]]]:
        """``stem`` (conv1, bn1), ``layer1``-``layer3``, ``head`` (fc)."""
        return [("stem", ["conv1", "bn1"]), *((f"layer{i}", [f"layer{i}"]) for i in range(1, 4)), ("head", ["fc"])]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Images -> ``layer3``'s maps ``(N, 64, 8, 8)`` at 32x32."""
        x = self.relu(self.bn1(self.conv1(x)))
        return self.layer3(self.layer2(self.layer1(x)))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = torch.flatten(self.avgpool(x), 1)
        return x if pre_logits else self.fc(x)


def _cifar(n: int, num_classes: int, in_channels: int, kwargs: dict) -> CifarResNet:
    return CifarResNet(n, num_classes=num_classes, in_channels=in_channels, **kwargs)


_CIFAR = {"input_size": (3, 32, 32), "num_classes": 10, "paper": _RESNET}


@register_model(**_CIFAR, description="CIFAR ResNet-20 (n=3), option A shortcuts, 0.27M parameters")
def resnet20(num_classes: int = 10, in_channels: int = 3, **kwargs) -> CifarResNet:
    """ResNet-20 for 32x32 images (269,722 parameters; 272,474 with ``shortcut="B"``).

    Example::

        >>> resnet20()(torch.zeros(1, 3, 32, 32)).shape
        torch.Size([1, 10])
    """
    return _cifar(3, num_classes, in_channels, kwargs)


@register_model(**_CIFAR, description="CIFAR ResNet-32 (n=5), option A shortcuts, 0.46M parameters")
def resnet32(num_classes: int = 10, in_channels: int = 3, **kwargs) -> CifarResNet:
    """ResNet-32 for 32x32 images (464,154 parameters; 466,906 with ``shortcut="B"``)."""
    return _cifar(5, num_classes, in_channels, kwargs)


@register_model(**_CIFAR, description="CIFAR ResNet-44 (n=7), option A shortcuts, 0.66M parameters")
def resnet44(num_classes: int = 10, in_channels: int = 3, **kwargs) -> CifarResNet:
    """ResNet-44 for 32x32 images (658,586 parameters; 661,338 with ``shortcut="B"``)."""
    return _cifar(7, num_classes, in_channels, kwargs)


@register_model(**_CIFAR, description="CIFAR ResNet-56 (n=9), option A shortcuts, 0.85M parameters")
def resnet56(num_classes: int = 10, in_channels: int = 3, **kwargs) -> CifarResNet:
    """ResNet-56 for 32x32 images (853,018 parameters; 855,770 with ``shortcut="B"``)."""
    return _cifar(9, num_classes, in_channels, kwargs)


@register_model(**_CIFAR, description="CIFAR ResNet-110 (n=18), option A shortcuts, 1.7M parameters")
def resnet110(num_classes: int = 10, in_channels: int = 3, **kwargs) -> CifarResNet:
    """ResNet-110 for 32x32 images (1,727,962 parameters; 1,730,714 with ``shortcut="B"``)."""
    return _cifar(18, num_classes, in_channels, kwargs)
