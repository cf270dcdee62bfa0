"""Output-size arithmetic against torch's real outputs and the lectures' formula."""

import itertools
import random
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from convkit.inspect.fastmeta import NOT_HANDLED, meta_rule
from convkit.layers.shapes import (
    ShapeError,
    ShapeWarning,
    conv_output_size,
    format_pair,
    format_shape,
    pair,
    same_padding,
    transposed_output_size,
    window_output_size,
)

aten = torch.ops.aten

# every small geometry: sizes 1-9, kernels 1-4, strides 1-3, paddings 0-2, dilations 1-2
SIZES, KERNELS, STRIDES, PADDINGS, DILATIONS = range(1, 10), range(1, 5), range(1, 4), range(3), (1, 2)


def _torch_size(op, *args, **kwargs) -> int:
    """The last dimension torch's real (CPU) kernel gives, or 0 when torch refuses the geometry."""
    try:
        return op(*args, **kwargs).shape[-1]
    except RuntimeError:
        return 0


def _fast(func, *args) -> int:
    """The last dimension convkit.inspect.fastmeta's rule gives on meta tensors, or 0 when it passes."""
    out = meta_rule(func)(args, {})
    if out is NOT_HANDLED:
        return 0
    return (out[0] if isinstance(out, tuple) else out).shape[-1]


def test_lecture_examples():
    assert conv_output_size(227, 11, stride=4) == 55  # AlexNet conv1: (227 - 11)/4 + 1
    assert conv_output_size(224, 11, stride=4, padding=2) == 55  # torchvision's AlexNet: drops only padding
    assert conv_output_size(32, 5) == 28  # LeNet C1
    assert conv_output_size(7, 3, stride=2) == 3
    assert conv_output_size(5, 3, padding=1) == 5


def test_kernel_larger_than_padded_input_is_an_error_with_the_formula():
    with pytest.raises(ShapeError) as info:
        conv_output_size(4, 5, padding=0, layer="conv3", input_shape=(16, 4, 4))
    message = str(info.value)
    assert "conv3" in message and "16x4x4" in message and "(4 + 0 - 5) / 1 + 1" in message


def test_uneven_stride_warns_how_many_pixels_are_dropped():
    with pytest.warns(ShapeWarning, match=r"last 1 input pixel"):
        assert conv_output_size(7, 3, stride=3) == 2  # floor((7 - 3) / 3) + 1, one column never covered
    with pytest.warns(ShapeWarning, match=r"last 2 input pixel"):
        assert conv_output_size(8, 3, stride=3, padding=(0, 0)) == 2
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        conv_output_size(7, 3, stride=2)  # divides evenly: silent
        conv_output_size(224, 7, stride=2, padding=3)  # ResNet's stem: only a padding pixel is left over
        conv_output_size(7, 1, stride=2)  # a 1x1/2 shortcut skips pixels by design


def test_matches_torch_on_random_geometries():
    rng = random.Random(0)
    for _ in range(300):
        k, s, d = rng.randint(1, 5), rng.randint(1, 4), rng.randint(1, 2)
        p = rng.randint(0, k // 2)
        size = rng.randint(d * (k - 1) + 1, 20)
        x = torch.zeros(1, 1, size, size)
        conv = F.conv2d(x, torch.zeros(1, 1, k, k), stride=s, padding=p, dilation=d)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ShapeWarning)
            assert conv_output_size(size, k, s, p, d) == conv.shape[-1]
            for ceil in (False, True):
                pool = F.max_pool2d(x, k, s, p, d, ceil_mode=ceil)
                assert conv_output_size(size, k, s, p, d, ceil_mode=ceil) == pool.shape[-1], (size, k, s, p, d, ceil)


@pytest.mark.parametrize("size,kernel,stride", [(224, 7, 2), (5, 3, 2), (6, 3, 2), (28, 5, 1), (32, 4, 3), (1, 3, 1)])
def test_same_padding_gives_ceil_of_size_over_stride(size, kernel, stride):
    before, after = same_padding(size, kernel, stride)
    assert after - before in (0, 1)  # TensorFlow puts the odd pixel after
    assert conv_output_size(size, kernel, stride, (before, after), warn=False) == -(-size // stride)


def test_hand_worked_sizes():
    assert window_output_size(224, 7, 2, 3) == 112  # (224 + 6 - 7) // 2 + 1
    assert window_output_size(112, 3, 2, 1) == 56  # ResNet's max pool
    assert window_output_size(112, 3, 2, 0, ceil_mode=True) == 56  # GoogLeNet: ceil(109 / 2) + 1
    assert window_output_size(112, 3, 2, 0) == 55
    assert window_output_size(5, 2, 2, 1, ceil_mode=True) == 3  # ceil(4 / 2) + 1 = 3; the 4th would start in padding
    assert window_output_size(4, 5) == 0  # does not fit
    assert window_output_size(8, 3, 1, (0, 2)) == 8  # asymmetric padding
    assert transposed_output_size(3, 3, stride=2, padding=1) == 5  # (3 - 1)*2 - 2 + 2 + 1
    assert transposed_output_size(7, 4, stride=2, padding=1, output_padding=1) == 15
    assert same_padding(5, 3, 2) == (1, 1)  # 3 outputs: (3 - 1)*2 + 3 - 5 = 2 pixels
    assert same_padding(6, 3, 2) == (0, 1)  # 3 outputs: (3 - 1)*2 + 3 - 6 = 1 pixel, after
    assert same_padding(10, 3, 1, dilation=2) == (2, 2)


def test_conv_sizes_match_torch_on_every_small_geometry():
    for size, k, s, p, d in itertools.product(SIZES, KERNELS, STRIDES, PADDINGS, DILATIONS):
        x, w = torch.zeros(1, 1, 1, size), torch.zeros(1, 1, 1, k)
        truth = _torch_size(F.conv2d, x, w, stride=(1, s), padding=(0, p), dilation=(1, d))
        geometry = (size, k, s, p, d)
        assert max(window_output_size(size, k, s, p, d), 0) == truth, geometry
        fast = _fast(aten.convolution.default, x.to("meta"), w.to("meta"), None, [1, s], [0, p], [1, d], False,
                     [0, 0], 1)
        assert fast == truth, geometry
        if truth:
            assert conv_output_size(size, k, s, p, d, warn=False) == truth, geometry
        else:
            with pytest.raises(ShapeError, match="larger than the padded input"):
                conv_output_size(size, k, s, p, d, warn=False)


@pytest.mark.parametrize("ceil_mode", [False, True])
def test_pool_sizes_match_torch_on_every_small_geometry(ceil_mode):
    for size, k, s, p, d in itertools.product(SIZES, KERNELS, STRIDES, PADDINGS, DILATIONS):
        if p > k // 2:
            continue  # torch pools only with padding of at most half the window
        geometry = (size, k, s, p, d, ceil_mode)
        x = torch.zeros(1, 1, 1, size)
        truth = _torch_size(F.max_pool2d, x, (1, k), (1, s), (0, p), (1, d), ceil_mode=ceil_mode)
        assert max(window_output_size(size, k, s, p, d, ceil_mode), 0) == truth, geometry
        fast = _fast(aten.max_pool2d_with_indices.default, x.to("meta"), [1, k], [1, s], [0, p], [1, d], ceil_mode)
        assert fast == truth, geometry
        if truth:
            assert conv_output_size(size, k, s, p, d, ceil_mode, warn=False) == truth, geometry
        else:
            with pytest.raises(ShapeError):
                conv_output_size(size, k, s, p, d, ceil_mode, warn=False)
        if d == 1:
            average = _torch_size(F.avg_pool2d, x, (1, k), (1, s), (0, p), ceil_mode=ceil_mode)
            assert average == truth, geometry
            fast = _fast(aten.avg_pool2d.default, x.to("meta"), [1, k], [1, s], [0, p], ceil_mode)
            assert fast == truth, geometry


def test_transposed_sizes_match_torch_on_every_small_geometry():
    for size, k, s, p, d in itertools.product(SIZES, KERNELS, STRIDES, PADDINGS, DILATIONS):
        for op in range(max(s, d)):  # torch: output_padding smaller than the stride or the dilation
            geometry = (size, k, s, p, op, d)
            x, w = torch.zeros(1, 1, 1, size), torch.zeros(1, 1, 1, k)
            truth = _torch_size(F.conv_transpose2d, x, w, stride=(1, s), padding=(0, p), output_padding=(0, op),
                                dilation=(1, d))
            fast = _fast(aten.convolution.default, x.to("meta"), w.to("meta"), None, [1, s], [0, p], [1, d], True,
                         [0, op], 1)
            assert fast == truth, geometry
            if truth:
                assert transposed_output_size(size, k, s, p, op, d) == truth, geometry
            else:
                with pytest.raises(ShapeError, match=r"padding \d+ leaves no output along width: out = "):
                    transposed_output_size(size, k, s, p, op, d, axis="width")


def test_ceil_mode_keeps_a_window_hanging_over_the_end_as_torch_does():
    # a 3-window on 2 pixels with stride 2: torch's ceil mode gives one output, floor none
    x = torch.arange(4.0).view(1, 1, 2, 2)
    assert F.max_pool2d(x, 3, 2, ceil_mode=True).shape[-1] == 1
    assert conv_output_size(2, 3, 2, ceil_mode=True) == 1
    with pytest.raises(ShapeError):
        conv_output_size(2, 3, 2)


@pytest.mark.filterwarnings("ignore:Using padding='same'")
def test_same_padding_matches_torch_same_with_stride_1():
    for size, k, d in itertools.product(SIZES, KERNELS, DILATIONS):
        before, after = same_padding(size, k, 1, d)
        x, w = torch.randn(1, 1, 1, size), torch.randn(1, 1, 1, k)
        same = F.conv2d(x, w, padding="same", dilation=(1, d))
        padded = F.conv2d(F.pad(x, (before, after)), w, dilation=(1, d))
        torch.testing.assert_close(padded, same)


def test_pair_and_printing():
    assert pair(3) == (3, 3) and pair([2, 5]) == (2, 5) and pair(np.int64(4)) == (4, 4)
    assert pair((np.int32(1), np.int64(2))) == (1, 2) and all(type(v) is int for v in pair((np.int32(1), 2)))
    for bad in (True, 2.0, (1, 2, 3), "3", None):
        with pytest.raises(TypeError, match="kernel_size must be an int or a pair"):
            pair(bad, "kernel_size")
    assert format_shape((3, 224, 224)) == "3x224x224" and format_shape(torch.Size([1, 28])) == "1x28"
    assert format_pair((3, 3)) == "3" and format_pair((3, 5)) == "3x5" and format_pair((-1, -1)) == "-1"
    assert format_pair((1.5, 2.0)) == "1.5x2" and format_pair((7.25, 7.25)) == "7.25"
