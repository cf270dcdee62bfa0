"""Output-size arithmetic against torch's real outputs and the lectures' formula."""

import random
import warnings

import pytest
import torch
import torch.nn.functional as F

from convkit.layers.shapes import ShapeError, ShapeWarning, conv_output_size, same_padding


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
