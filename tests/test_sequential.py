"""convkit.Sequential: Keras-style shape inference, parameter counts worked by hand, clear shape errors."""

import pytest
import torch
from torch import nn

from convkit import Sequential
from convkit.layers import Conv2d, Dense, Flatten, MaxPool2d, ShapeError


def count(model):
    return sum(p.numel() for p in model.parameters())


def test_infers_input_sizes_and_counts_match_hand_arithmetic():
    net = Sequential([Conv2d(32, 5, activation="relu"), MaxPool2d(2), Conv2d(64, 3), Dense(128), Dense(10)],
                     input_shape=(1, 28, 28))
    assert list(net.shapes) == ["conv1", "pool1", "conv2", "fc1", "fc2"]
    assert net.shapes["conv1"] == (32, 24, 24)  # (28 - 5)/1 + 1
    assert net.shapes["pool1"] == (32, 12, 12)
    assert net.shapes["conv2"] == (64, 10, 10)
    assert net.shapes["fc2"] == (10,)
    expected = (5 * 5 * 1 + 1) * 32 + (3 * 3 * 32 + 1) * 64 + (64 * 10 * 10 + 1) * 128 + (128 + 1) * 10
    assert count(net) == expected
    out = net(torch.randn(4, 1, 28, 28))
    assert out.shape == (4, 10)


def test_mixes_with_torch_modules_including_lazy_ones():
    net = Sequential([nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), Conv2d(16, 3, stride=2, padding="same"),
                      nn.Flatten(), nn.LazyLinear(5)], input_shape=(3, 16, 16))
    assert net.shapes["conv2"] == (16, 8, 8)
    assert count(net) == (27 + 1) * 8 + (72 + 1) * 16 + (16 * 8 * 8 + 1) * 5
    assert net(torch.randn(2, 3, 16, 16)).shape == (2, 5)


def test_named_layers_are_kept():
    net = Sequential({"stem": Conv2d(4, 3), "head": Dense(2)}, input_shape=(1, 5, 5))
    assert list(net.shapes) == ["stem", "head"]
    assert net.stem.weight.shape == (4, 1, 3, 3)


def test_a_layer_that_does_not_fit_is_named_with_its_input_and_formula():
    with pytest.raises(ShapeError) as info:
        Sequential([Conv2d(8, 3), MaxPool2d(2), Conv2d(8, 5)], input_shape=(1, 8, 8))
    message = str(info.value)
    assert info.value.layer == "conv2"
    assert "8x3x3" in message  # the input that reached conv2: 8 -> 6 -> 3
    assert "(3 + 0 - 5) / 1 + 1" in message


def test_features_head_split_and_reset_classifier():
    net = Sequential([Conv2d(8, 3, activation="relu"), MaxPool2d(2), Flatten(), Dense(32), Dense(10)],
                     input_shape=(1, 10, 10))
    x = torch.randn(3, 1, 10, 10)
    features = net.forward_features(x)
    assert features.shape == (3, 8, 4, 4) and net.num_features == 8
    torch.testing.assert_close(net.forward_head(features), net(x))
    assert net.forward_head(features, pre_logits=True).shape == (3, 32)
    net.reset_classifier(3)
    assert net(x).shape == (3, 3) and net.num_classes == 3
    assert count(net.get_classifier()) == 32 * 3 + 3
