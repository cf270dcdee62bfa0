"""The zoo's building blocks: conv-BN-activation, residual blocks, Inception and mlpconv.

Every block is a :class:`~convkit.layers.base.LazyModule`: it may be declared without its input
channels (``BasicBlock(128, stride=2)``) and built later by ``.build((C, H, W))`` or by
:class:`convkit.Sequential`, or declared with ``in_channels=...`` and used at once. Output sizes come
first in every signature, as in Keras.

The blocks are made of plain ``torch.nn`` modules and their children carry torchvision's names, so a
torchvision ``state_dict`` loads into the zoo models built from them.

References:
    * K. He, X. Zhang, S. Ren, J. Sun. "Deep Residual Learning for Image Recognition." CVPR 2016.
      arXiv:1512.03385. (:class:`BasicBlock`, :class:`Bottleneck`)
    * S. Xie, R. Girshick, P. Dollar, Z. Tu, K. He. "Aggregated Residual Transformations for Deep Neural
      Networks." CVPR 2017. arXiv:1611.05431. (``groups``/``base_width`` of :class:`Bottleneck`)
    * C. Szegedy et al. "Going Deeper with Convolutions." CVPR 2015. arXiv:1409.4842.
      (:class:`InceptionModule`)
    * M. Lin, Q. Chen, S. Yan. "Network In Network." ICLR 2014. arXiv:1312.4400. (:class:`MLPConv`)
    * S. Ioffe, C. Szegedy. "Batch Normalization." ICML 2015. arXiv:1502.03167. (:class:`ConvBNAct`)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from convkit.layers.base import LazyModule
from convkit.layers.core import get_activation
from convkit.layers.shapes import ShapeError, conv_output_size, pair

__all__ = ["BasicBlock", "Bottleneck", "ConvBNAct", "InceptionModule", "MLPConv"]

def _spatial(input_shape: Sequence[int], name: str) -> tuple[int, int]:
    if len(input_shape) != 3:
        raise ShapeError(f"expects a feature map (C, H, W), got {len(input_shape)} dimension(s)", name, input_shape)
    return int(input_shape[1]), int(input_shape[2])


def _conv_hw(hw: tuple[int, int], kernel, stride, padding, dilation=1, *, name, input_shape, warn=True):
    k, s, p, d = pair(kernel), pair(stride), pair(padding), pair(dilation)
    return tuple(
        conv_output_size(hw[i], k[i], s[i], p[i], d[i], layer=name, input_shape=input_shape, axis=axis, warn=warn)
        for i, axis in enumerate(("height", "width"))
    )


class ConvBNAct(LazyModule):
    """Convolution, batch normalisation, activation: the unit of most modern CNNs.

    The convolution has no bias when batch normalisation follows it, since BN's shift makes it
    redundant (Ioffe & Szegedy, 2015).

    Args:
        filters: output channels.
        kernel_size: an int or ``(kh, kw)``.
        stride: an int or a pair.
        padding: an int or a pair; ``None`` gives ``kernel_size // 2`` ("same" for odd kernels, stride 1).
        groups: grouped convolution (``in_channels`` and ``filters`` must both divide by it).
        activation: an activation name (see :func:`get_activation`) or ``None`` for none.
        bn_eps: BN's epsilon (torchvision's GoogLeNet and Inception use ``1e-3``).
        batch_norm: ``False`` replaces BN by ``nn.Identity`` and gives the convolution a bias (the
            pre-BN papers' conv + ReLU, e.g. GoogLeNet as published).
        in_channels: input channels; ``None`` defers building to :meth:`build`.

    Children: ``conv`` (``nn.Conv2d``), ``bn`` (``nn.BatchNorm2d`` or ``nn.Identity``), ``act``.

    Input: ``(N, in_channels, H, W)``. Output: ``(N, filters, H', W')``.

    Example::

        >>> block = ConvBNAct(32, 3, in_channels=3)
        >>> block(torch.zeros(2, 3, 28, 28)).shape
        torch.Size([2, 32, 28, 28])
        >>> lazy = ConvBNAct(32, 3, stride=2); lazy.build((3, 28, 28)); lazy.in_channels
        3
    """

    def __init__(
        self,
        filters: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] | None = None,
        groups: int = 1,
        activation: str | None = "relu",
        bn_eps: float = 1e-5,
        batch_norm: bool = True,
        in_channels: int | None = None,
    ):
        super().__init__()
        self.filters = int(filters)
        self.out_channels = self.filters
        self.kernel_size = pair(kernel_size, "kernel_size")
        self.stride = pair(stride, "stride")
        self.padding = tuple(k // 2 for k in self.kernel_size) if padding is None else pair(padding, "padding")
        self.groups = int(groups)
        self.activation = activation
        self.bn_eps = bn_eps
        self.batch_norm = bool(batch_norm)
        get_activation(activation)  # fail at declaration, not at build, on a misspelt name
        self.init_lazy(in_channels)

    def create(self, in_channels: int) -> None:
        if in_channels % self.groups or self.filters % self.groups:
            raise ValueError(f"groups={self.groups} must divide in_channels={in_channels} and filters={self.filters}")
        self.conv = nn.Conv2d(in_channels, self.filters, self.kernel_size, self.stride, self.padding,
                              groups=self.groups, bias=not self.batch_norm)
        self.bn = nn.BatchNorm2d(self.filters, eps=self.bn_eps) if self.batch_norm else nn.Identity()
        self.act = get_activation(self.activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))

    def output_shape(self, input_shape: Sequence[int]) -> tuple[int, int, int]:
        """Per-sample output shape ``(filters, H', W')`` for an input ``(C, H, W)``."""
        hw = _spatial(input_shape, type(self).__name__)
        return (self.filters, *_conv_hw(hw, self.kernel_size, self.stride, self.padding,
                                         name=type(self).__name__, input_shape=input_shape))

    def extra_repr(self) -> str:
        return "" if self.in_channels is not None else f"{self.filters}, kernel_size={self.kernel_size}, unbuilt"


def _conv3x3(cin: int, cout: int, stride: int = 1, groups: int = 1, dilation: int = 1) -> nn.Conv2d:
    # torchvision's conv3x3: padding = dilation keeps the size at stride 1; no bias before BN.
    return nn.Conv2d(cin, cout, 3, stride, padding=dilation, groups=groups, bias=False, dilation=dilation)


def _conv1x1(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 1, stride, bias=False)


class _Residual(LazyModule):
    """Shared parts of the two residual blocks (shortcut, shapes)."""

    expansion = 1

    def __init__(self, planes, stride, groups, base_width, dilation, in_channels):
        super().__init__()
        self.planes = int(planes)
        self.stride = int(stride)
        self.groups = int(groups)
        self.base_width = int(base_width)
        self.dilation = int(dilation)
        self.out_channels = self.planes * self.expansion
        self._check()
        self.init_lazy(in_channels)

    def _check(self) -> None:
        pass

    def _shortcut(self, in_channels: int) -> nn.Module | None:
        # The projection shortcut (paper's option B): a strided 1x1 conv + BN wherever the identity
        # cannot be added because the size or the number of channels changes. Named and laid out as
        # torchvision's `downsample` so its weights load.
        if self.stride != 1 or in_channels != self.out_channels:
            return nn.Sequential(_conv1x1(in_channels, self.out_channels, self.stride),
                                 nn.BatchNorm2d(self.out_channels))
        return None

    def output_shape(self, input_shape: Sequence[int]) -> tuple[int, int, int]:
        """Per-sample output shape ``(planes * expansion, H', W')`` for an input ``(C, H, W)``."""
        name = type(self).__name__
        hw = _spatial(input_shape, name)
        # warn=False: with stride 2 on an even size the dropped pixel is the 3x3 conv's zero padding,
        # not image content, which is the intended geometry of every ResNet.
        return (self.out_channels, *_conv_hw(hw, 3, self.stride, self.dilation, self.dilation,
                                             name=name, input_shape=input_shape, warn=False))

    def extra_repr(self) -> str:
        return "" if self.in_channels is not None else f"{self.planes}, stride={self.stride}, unbuilt"


class BasicBlock(_Residual):
    """ResNet's basic block: two 3x3 convolutions and a shortcut (ResNet-18/34, the CIFAR ResNets).

    ``relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))``. The shortcut is the identity, or a
    projection (``downsample`` = 1x1 conv with the block's stride + BN) when the stride is not 1 or the
    channels change. Child names are torchvision's (``conv1, bn1, relu, conv2, bn2, downsample``).

    Args:
        planes: output channels (``expansion = 1``).
        stride: stride of the first 3x3 convolution (2 halves the size).
        groups, base_width: must stay 1 and 64 (as in torchvision; grouped/wide forms use :class:`Bottleneck`).
        dilation: dilation of both 3x3 convolutions (padding follows it).
        in_channels: input channels; ``None`` defers building to :meth:`build`.

    Input: ``(N, in_channels, H, W)``. Output: ``(N, planes, H / stride, W / stride)``.

    Example::

        >>> block = BasicBlock(128, stride=2, in_channels=64)
        >>> block(torch.zeros(1, 64, 56, 56)).shape
        torch.Size([1, 128, 28, 28])
    """

    expansion = 1

    def __init__(self, planes: int, stride: int = 1, groups: int = 1, base_width: int = 64, dilation: int = 1,
                 in_channels: int | None = None):
        super().__init__(planes, stride, groups, base_width, dilation, in_channels)

    def _check(self) -> None:
        if self.groups != 1 or self.base_width != 64:
            raise ValueError("BasicBlock only supports groups=1 and base_width=64 (use Bottleneck)")

    def create(self, in_channels: int) -> None:
        self.conv1 = _conv3x3(in_channels, self.planes, self.stride, dilation=self.dilation)
        self.bn1 = nn.BatchNorm2d(self.planes)
        self.relu = nn.ReLU()
        self.conv2 = _conv3x3(self.planes, self.planes, dilation=self.dilation)
        self.bn2 = nn.BatchNorm2d(self.planes)
        self.downsample = self._shortcut(in_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(_Residual):
    """ResNet's bottleneck block: 1x1 reduce, 3x3, 1x1 expand (x4), and a shortcut (ResNet-50 and up).

    The stride sits on the 3x3 convolution (torchvision's "ResNet v1.5", which is about 0.5% more
    accurate than the paper's stride on the first 1x1). ``groups`` and ``base_width`` give ResNeXt
    (``groups=32, base_width=4``) and Wide ResNet (``base_width=128``): the inner width is
    ``int(planes * base_width / 64) * groups``. Child names are torchvision's
    (``conv1, bn1, conv2, bn2, conv3, bn3, relu, downsample``).

    Args:
        planes: the inner width for ``base_width=64, groups=1``; output channels are ``4 * planes``.
        stride: stride of the 3x3 convolution.
        groups: groups of the 3x3 convolution (ResNeXt's cardinality).
        base_width: width per group (64 for ResNet).
        dilation: dilation of the 3x3 convolution.
        in_channels: input channels; ``None`` defers building to :meth:`build`.

    Input: ``(N, in_channels, H, W)``. Output: ``(N, 4 * planes, H / stride, W / stride)``.

    Example::

        >>> block = Bottleneck(64, in_channels=64)
        >>> block(torch.zeros(1, 64, 56, 56)).shape
        torch.Size([1, 256, 56, 56])
    """

    expansion = 4

    def __init__(self, planes: int, stride: int = 1, groups: int = 1, base_width: int = 64, dilation: int = 1,
                 in_channels: int | None = None):
        super().__init__(planes, stride, groups, base_width, dilation, in_channels)

    def create(self, in_channels: int) -> None:
        width = int(self.planes * (self.base_width / 64.0)) * self.groups
        self.width = width
        self.conv1 = _conv1x1(in_channels, width)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = _conv3x3(width, width, self.stride, self.groups, self.dilation)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = _conv1x1(width, self.out_channels)
        self.bn3 = nn.BatchNorm2d(self.out_channels)
        self.relu = nn.ReLU()
        self.downsample = self._shortcut(in_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class InceptionModule(LazyModule):
    """GoogLeNet's Inception module with dimension reductions (Szegedy et al., 2015, Fig. 2b).

    Four parallel branches concatenated along the channels:

    * ``branch1``: 1x1 conv (``ch1x1``);
    * ``branch2``: 1x1 conv (``ch3x3red``) then 3x3 conv (``ch3x3``);
    * ``branch3``: 1x1 conv (``ch5x5red``) then ``branch3_kernel`` x ``branch3_kernel`` conv (``ch5x5``);
    * ``branch4``: 3x3 max pool (stride 1) then 1x1 conv (``pool_proj``).

    Each conv is a :class:`ConvBNAct`. The paper's form (default) is conv with bias + ReLU and a 5x5
    third branch. ``batch_norm=True, branch3_kernel=3`` is torchvision's ``Inception`` exactly (conv
    without bias + BN(eps=0.001) + ReLU, and a 3x3 conv in branch3, a known torchvision slip kept for
    its pretrained weights, pytorch/vision#906): same keys and shapes, so its weights load.

    Args:
        ch1x1, ch3x3red, ch3x3, ch5x5red, ch5x5, pool_proj: the columns of the paper's Table 1
            (#1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj).
        batch_norm: BN after each convolution.
        branch3_kernel: kernel of branch3's second convolution (5 in the paper, 3 in torchvision).
        in_channels: input channels; ``None`` defers building to :meth:`build`.

    Input: ``(N, in_channels, H, W)``. Output: ``(N, ch1x1 + ch3x3 + ch5x5 + pool_proj, H, W)``.

    Example::

        >>> block = InceptionModule(64, 96, 128, 16, 32, 32, in_channels=192)   # inception (3a)
        >>> block(torch.zeros(1, 192, 28, 28)).shape
        torch.Size([1, 256, 28, 28])
    """

    def __init__(self, ch1x1: int, ch3x3red: int, ch3x3: int, ch5x5red: int, ch5x5: int, pool_proj: int,
                 batch_norm: bool = False, branch3_kernel: int = 5, in_channels: int | None = None):
        super().__init__()
        self.channels = (int(ch1x1), int(ch3x3red), int(ch3x3), int(ch5x5red), int(ch5x5), int(pool_proj))
        self.batch_norm = bool(batch_norm)
        self.branch3_kernel = int(branch3_kernel)
        if self.branch3_kernel % 2 == 0:
            raise ValueError(f"branch3_kernel must be odd to keep the size, got {branch3_kernel}")
        self.out_channels = int(ch1x1) + int(ch3x3) + int(ch5x5) + int(pool_proj)
        self.init_lazy(in_channels)

    def create(self, in_channels: int) -> None:
        c1, c3r, c3, c5r, c5, cp = self.channels

        def conv(cin, cout, k):
            # torchvision's BasicConv2d uses eps=0.001 (from the TensorFlow Inception weights).
            return ConvBNAct(cout, k, batch_norm=self.batch_norm, bn_eps=1e-3, in_channels=cin)

        self.branch1 = conv(in_channels, c1, 1)
        self.branch2 = nn.Sequential(conv(in_channels, c3r, 1), conv(c3r, c3, 3))
        self.branch3 = nn.Sequential(conv(in_channels, c5r, 1), conv(c5r, c5, self.branch3_kernel))
        # ceil_mode as torchvision; with stride 1 and padding 1 it changes nothing.
        self.branch4 = nn.Sequential(nn.MaxPool2d(3, stride=1, padding=1, ceil_mode=True), conv(in_channels, cp, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], 1)

    def output_shape(self, input_shape: Sequence[int]) -> tuple[int, int, int]:
        """Per-sample output shape ``(ch1x1 + ch3x3 + ch5x5 + pool_proj, H, W)``."""
        h, w = _spatial(input_shape, type(self).__name__)
        return (self.out_channels, h, w)

    def extra_repr(self) -> str:
        return "" if self.in_channels is not None else f"{', '.join(map(str, self.channels))}, unbuilt"


class MLPConv(LazyModule):
    """Network-in-Network's mlpconv layer: a convolution followed by 1x1 convolutions, each with ReLU.

    The 1x1 convolutions act as a small multilayer perceptron slid over every position (Lin et al.,
    2014, Sec. 3.1). Children, in order: ``conv`` (the ``kernel_size`` convolution), ``relu``,
    ``mlp1``, ``relu1``, ..., ``mlp{num_mlp}``, ``relu{num_mlp}``.

    Args:
        filters: output channels of the first convolution.
        kernel_size, stride, padding: the first convolution's geometry.
        mlp_filters: output channels of the 1x1 convolutions: an int for all, or one per layer (the
            paper's CIFAR-10 net uses 192-160-96); defaults to ``filters``.
        num_mlp: number of 1x1 convolutions (2 in the paper); a list of ``mlp_filters`` sets it itself.
        in_channels: input channels; ``None`` defers building to :meth:`build`.

    Input: ``(N, in_channels, H, W)``. Output: ``(N, last mlp filters, H', W')``.

    Example::

        >>> block = MLPConv(96, 11, stride=4, in_channels=3)
        >>> block(torch.zeros(1, 3, 224, 224)).shape
        torch.Size([1, 96, 54, 54])
        >>> MLPConv(192, 5, padding=2, mlp_filters=[160, 96], in_channels=3).out_channels
        96
    """

    def __init__(self, filters: int, kernel_size: int | tuple[int, int], stride: int | tuple[int, int] = 1,
                 padding: int | tuple[int, int] = 0, mlp_filters: int | Sequence[int] | None = None,
                 num_mlp: int = 2, in_channels: int | None = None):
        super().__init__()
        self.filters = int(filters)
        self.kernel_size = pair(kernel_size, "kernel_size")
        self.stride = pair(stride, "stride")
        self.padding = pair(padding, "padding")
        if mlp_filters is None:
            mlp_filters = self.filters
        if isinstance(mlp_filters, int):
            mlp_filters = [mlp_filters] * int(num_mlp)
        elif len(mlp_filters) != num_mlp:
            if num_mlp != 2:  # num_mlp was given and disagrees with the list
                raise ValueError(f"mlp_filters has {len(mlp_filters)} entries but num_mlp={num_mlp}")
        self.mlp_filters = tuple(int(f) for f in mlp_filters)
        self.num_mlp = len(self.mlp_filters)
        self.out_channels = self.mlp_filters[-1] if self.mlp_filters else self.filters
        self.init_lazy(in_channels)

    def create(self, in_channels: int) -> None:
        self.conv = nn.Conv2d(in_channels, self.filters, self.kernel_size, self.stride, self.padding)
        self.relu = nn.ReLU()
        cin = self.filters
        for i, f in enumerate(self.mlp_filters, 1):
            self.add_module(f"mlp{i}", nn.Conv2d(cin, f, 1))
            self.add_module(f"relu{i}", nn.ReLU())
            cin = f

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.children():
            x = layer(x)
        return x

    def output_shape(self, input_shape: Sequence[int]) -> tuple[int, int, int]:
        """Per-sample output shape ``(out_channels, H', W')``."""
        hw = _spatial(input_shape, type(self).__name__)
        return (self.out_channels, *_conv_hw(hw, self.kernel_size, self.stride, self.padding,
                                             name=type(self).__name__, input_shape=input_shape))

    def extra_repr(self) -> str:
        return "" if self.in_channels is not None else f"{self.filters}, kernel_size={self.kernel_size}, unbuilt"
