"""Multiply-adds agree with fvcore and torchinfo for convolutions and linear layers.

The two tools disagree with each other, so the comparison is per convention:

* fvcore counts one multiply-add per weight per output position for conv and linear, no bias; it
  also counts batch norm (2 or 5 per value) and adaptive average pooling (1 per input value), which
  convkit leaves out. So fvcore's ``conv + linear`` operators equal convkit's total exactly.
* torchinfo counts ``(weights + bias) x output positions`` for every leaf layer with parameters:
  one more multiply-add per output value for a biased conv or linear layer, and ``2 x C`` per
  batch-norm layer. So torchinfo's figure for a conv/linear layer is convkit's plus its bias adds.
"""

import logging
import warnings

import pytest
import torch
import torchinfo
import torchvision
from fvcore.nn import FlopCountAnalysis

from convkit.inspect import summary
from convkit.models import create_model

# small inputs make some zoo pools drop border pixels; that is reported elsewhere, not compared here
pytestmark = pytest.mark.filterwarnings("ignore::convkit.layers.shapes.ShapeWarning")

CASES = [
    ("lenet5", (1, 32, 32)),
    ("fastcnn", (1, 28, 28)),
    ("alexnet", (3, 64, 64)),
    ("resnet18", (3, 64, 64)),
    ("resnext50_32x4d", (3, 64, 64)),
    ("googlenet", (3, 64, 64)),
    ("vgg11_bn", (3, 32, 32)),
    ("nin", (3, 96, 96)),
    ("resnet20", (3, 32, 32)),
]


def _fvcore_conv_linear(model, x) -> int:
    logging.getLogger("fvcore").setLevel(logging.ERROR)
    analysis = FlopCountAnalysis(model, x)
    analysis.unsupported_ops_warnings(False)
    analysis.uncalled_modules_warnings(False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # jit tracer warnings
        by_operator = analysis.by_operator()
    return sum(v for k, v in by_operator.items() if k in ("conv", "linear", "addmm", "matmul", "mm", "bmm"))


@pytest.mark.parametrize("name, size", CASES)
def test_macs_equal_fvcore_and_torchinfo_for_conv_and_linear(name, size):
    model = create_model(name).eval()
    ours = summary(model, size)
    x = torch.zeros(1, *size)
    assert ours.totals["macs"] == _fvcore_conv_linear(model, x)
    assert ours.totals["macs"] == ours.totals["macs_in_layers"]

    theirs = torchinfo.summary(model, input_size=(1, *size), verbose=0)
    modules = dict(model.named_modules())
    their_layers = {}
    for info in theirs.summary_list:
        if info.is_leaf_layer and info.class_name in ("Conv2d", "Linear") and info.macs:
            their_layers.setdefault(id(info.module), []).append(info.macs)
    compared = 0
    for row in ours.rows:
        if row.type not in ("Conv2d", "Linear"):
            continue
        module = modules[row.name]
        bias_adds = row.activations if module.bias is not None else 0
        assert their_layers[id(module)].pop(0) == row.macs + bias_adds, row.name
        compared += 1
    assert compared > 0 and not any(their_layers.values())


def test_torchvision_model_with_in_place_activations():
    model = torchvision.models.mobilenet_v2().eval()
    ours = summary(model, (3, 64, 64))
    assert ours.totals["macs"] == _fvcore_conv_linear(model, torch.zeros(1, 3, 64, 64))


def test_transposed_convolution_counts_input_positions():
    up = torch.nn.ConvTranspose2d(8, 4, 4, stride=2, padding=1)
    result = summary(torch.nn.Sequential(up), (8, 7, 7))
    assert result.rows[0].output_shape == (4, 14, 14)
    assert result.totals["macs"] == 7 * 7 * 8 * 4 * 4 * 4  # fvcore's count
    assert result.totals["macs"] == _fvcore_conv_linear(torch.nn.Sequential(up), torch.zeros(1, 8, 7, 7))


def test_grouped_convolution():
    conv = torch.nn.Conv2d(32, 64, 3, padding=1, groups=8, bias=False)
    row = summary(torch.nn.Sequential(conv), (32, 10, 10)).rows[0]
    assert row.params == 64 * 4 * 9 and row.macs == 10 * 10 * 64 * 4 * 9 and row.groups == 8
