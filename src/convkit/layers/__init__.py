"""CNN layers as ``nn.Module``s: batched, CPU and CUDA, autograd, Keras-style arguments.

Layers may leave their input size out (``Conv2d(32, 5)``); :class:`convkit.Sequential` infers it.
"""

from convkit.layers.base import LazyModule, NotBuiltError, is_built
from convkit.layers.blocks import (
    BasicBlock,
    Bottleneck,
    ConvBNAct,
    InceptionModule,
    MLPConv,
)
from convkit.layers.conv import Conv2d, ConvTranspose2d
from convkit.layers.core import (
    ACTIVATIONS,
    BatchNorm1d,
    BatchNorm2d,
    Dense,
    Dropout,
    Flatten,
    LocalResponseNorm,
    Softmax,
    get_activation,
)
from convkit.layers.padding import PADDING_MODES, Pad2d, pad2d
from convkit.layers.pooling import AvgPool2d, GlobalAvgPool2d, GlobalMaxPool2d, MaxPool2d, SumPool2d
from convkit.layers.shapes import ShapeError, ShapeWarning, conv_output_size, infer_output_shape, same_padding

__all__ = [
    "ACTIVATIONS", "AvgPool2d", "BasicBlock", "BatchNorm1d", "BatchNorm2d", "Bottleneck", "Conv2d",
    "ConvBNAct", "ConvTranspose2d", "Dense", "Dropout", "Flatten", "GlobalAvgPool2d", "GlobalMaxPool2d",
    "InceptionModule", "LazyModule", "LocalResponseNorm", "MLPConv", "MaxPool2d", "NotBuiltError",
    "PADDING_MODES", "Pad2d", "ShapeError", "ShapeWarning", "Softmax", "SumPool2d", "conv_output_size",
    "get_activation", "infer_output_shape", "is_built", "pad2d", "same_padding",
]
