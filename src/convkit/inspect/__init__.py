"""Inspect a CNN without running it: shapes, parameters, multiply-adds, memory, receptive fields.

>>> from convkit.inspect import summary, plot_summary
>>> result = summary("vgg16", input_size=(3, 224, 224), batch_size=64, optimizer="adam")
>>> print(result)                       # per-layer table and totals
convkit summary: vgg16  input 3x224x224  float32  batch 64  optimizer adam
...
Parameters:       138,357,544 (138,357,544 trainable, 0 frozen) = 527.8 MiB; buffers 0 = 0 B
...
>>> result.to_dict()["memory"]["training"]["total"]     # bytes
7730541184
>>> plot_summary(result, "vgg16.png")   # the layer stack as boxes sized by their feature maps
PosixPath('vgg16.png')
"""

from convkit.inspect.fastmeta import FastMetaMode
from convkit.inspect.memory import dense_equivalent, parse_dtype
from convkit.inspect.plot import plot_summary
from convkit.inspect.receptive import ReceptiveField, receptive_field_chain
from convkit.inspect.summary import CONVENTIONS, LayerRow, Summary, summary
from convkit.inspect.trace import MetaUnsupportedError
from convkit.utils import format_bytes

__all__ = [
    "CONVENTIONS", "FastMetaMode", "LayerRow", "MetaUnsupportedError", "ReceptiveField", "Summary", "dense_equivalent",
    "format_bytes", "parse_dtype", "plot_summary", "receptive_field_chain", "summary",
]
