"""Model files: the papers' notation and the long form, checked against hand-worked shapes and counts."""

import pytest
import torch
from conftest import EXAMPLES

import convkit
from convkit.models import ModelFileError, parse_model_file


def count(model):
    return sum(p.numel() for p in model.parameters())


def test_vgg_notation_example():
    net = convkit.load_model_file(EXAMPLES / "vgg_cifar.yaml")
    assert net.shapes["conv7"] == (256, 8, 8)  # conv1-256 keeps the size
    assert net.shapes["pool3"] == (256, 4, 4)
    convs = [(3, 3, 64), (3, 64, 64), (3, 64, 128), (3, 128, 128), (3, 128, 256), (3, 256, 256), (1, 256, 256)]
    expected = sum((k * k * c_in + 1) * c_out for k, c_in, c_out in convs)
    expected += (256 * 4 * 4 + 1) * 512 + (512 + 1) * 10
    assert count(net) == expected
    probs = net(torch.randn(2, 3, 32, 32))
    torch.testing.assert_close(probs.sum(1), torch.ones(2))  # ends in soft-max


def test_every_conv_and_fc_but_the_classifier_gets_a_relu():
    net = parse_model_file("input: 1x8x8\nlayers: [conv3-4, FC-6, FC-3]")
    assert net.conv1.activation is not None and net.fc1.activation is not None
    assert net.fc2.activation is None
    net = parse_model_file("input: 1x8x8\nlayers: [{conv: {filters: 4, kernel: 3, activation: none}}, FC-3]")
    assert net.conv1.activation is None


def test_alexnet_long_form_matches_the_paper_arithmetic():
    net = convkit.load_model_file(EXAMPLES / "alexnet.yaml")
    sizes = [net.shapes[n][1] for n in ("conv1", "pool1", "conv2", "pool2", "conv5", "pool3")]
    assert sizes == [55, 27, 27, 13, 13, 6]
    # (11*11*3+1)*96 + (5*5*96+1)*256 + (3*3*256+1)*384 + (3*3*384+1)*384 + (3*3*384+1)*256 + FCs
    assert count(net) == 34_944 + 614_656 + 885_120 + 1_327_488 + 884_992 + 37_752_832 + 16_781_312 + 4_097_000


def test_lenet_file_has_lenet5_parameter_count():
    net = convkit.load_model_file(EXAMPLES / "lenet5.yaml")
    assert count(net) == 156 + 2_416 + 48_120 + 10_164 + 850  # C1, C3, C5, F6, output = 61,706
    assert isinstance(net.conv1.activation, torch.nn.Tanh)


def test_blocks_by_name():
    net = convkit.load_model_file(EXAMPLES / "mini_resnet.yaml")
    assert net.shapes["res2"] == (64, 14, 14)
    assert net.shapes["res3"] == (128, 7, 7)  # bottleneck: 4 x 32 channels
    assert net.shapes["inception1"] == (32 + 64 + 16 + 16, 7, 7)
    assert net(torch.randn(2, 1, 28, 28)).shape == (2, 10)


def test_overrides_for_classes_and_channels():
    net = convkit.create_model(EXAMPLES / "vgg_cifar.yaml", num_classes=4, in_channels=1)
    assert net(torch.randn(1, 1, 32, 32)).shape == (1, 4)
    assert net.input_shape == (1, 32, 32)


BAD = [
    ("input: 1x8x8\nlayers:\n  - conv3-8\n  - conv3x8\n", 4, "unknown layer 'conv3x8'"),
    ("input: 1x8x8\nlayers:\n  - conv3-8\n  - pooling\n", 4, "did you mean"),
    ("input: 1x8x8\nlayers:\n  - conv: {filters: 8, kernal: 3}\n", 3, "no argument 'kernal'"),
    ("input: 1x8x8\nlayers:\n  - conv: {filters: 8}\n", 3, "needs kernel_size"),
    ("input: 8x8\nlayers: [conv3-8]\n", 1, "C x H x W"),
    ("layers: [conv3-8]\n", 1, "missing 'input:'"),
    ("input: 1x8x8\nlayers:\n  - conv3-8\n  - [oops\n", 5, "not valid YAML"),
    ("input: 1x8x8\nlayer: [conv3-8]\n", 2, "unknown key 'layer'"),
    ("input: 1x8x8\nlayers:\n  - maxpool\n  - maxpool\n  - maxpool\n  - conv: {filters: 4, kernel: 3}\n", 6,
     "(1 + 0 - 3) / 1 + 1"),
    ("input: 1x8x8\nlayers:\n  - inception: [1, 2, 3]\n", 3, "six integers"),
]


@pytest.mark.parametrize("text,line,words", BAD)
def test_bad_files_name_the_line_and_what_was_expected(text, line, words):
    with pytest.raises(ModelFileError) as info:
        parse_model_file(text, "bad.yaml")
    assert info.value.line == line, str(info.value)
    assert str(info.value).startswith(f"bad.yaml:{line}:")
    assert words in str(info.value)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        convkit.load_model_file(tmp_path / "nope.yaml")
