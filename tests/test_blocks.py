"""The zoo's blocks: shapes, lazy building, and torchvision's names and numbers where torchvision has them."""

import importlib

import pytest
import torch
from torch import nn

from convkit.layers.base import NotBuiltError, is_built
from convkit.layers.blocks import BasicBlock, Bottleneck, ConvBNAct, InceptionModule, MLPConv
from convkit.layers.shapes import ShapeError, ShapeWarning

# the modules, not the builder functions of the same name that torchvision.models exports
tv_resnet = importlib.import_module("torchvision.models.resnet")
tv_googlenet = importlib.import_module("torchvision.models.googlenet")


def n_params(module):
    return sum(p.numel() for p in module.parameters())


def shapes(module):
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def randomise_bn(module):
    # BN at its initial state is the identity in eval mode; random statistics make the comparison bite.
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)


# ---------------------------------------------------------------- ConvBNAct

def test_convbnact_children_padding_and_shape():
    block = ConvBNAct(32, 5, stride=2, in_channels=3)
    assert [n for n, _ in block.named_children()] == ["conv", "bn", "act"]
    assert block.conv.padding == (2, 2) and block.conv.bias is None       # k // 2; no bias before BN
    assert isinstance(block.bn, nn.BatchNorm2d) and isinstance(block.act, nn.ReLU)
    assert block(torch.randn(2, 3, 28, 28)).shape == (2, 32, 14, 14)
    assert n_params(block) == 3 * 25 * 32 + 2 * 32


def test_convbnact_options():
    block = ConvBNAct(8, (1, 3), activation=None, bn_eps=1e-3, groups=2, in_channels=4)
    assert block.conv.padding == (0, 1) and block.conv.groups == 2
    assert isinstance(block.act, nn.Identity) and block.bn.eps == 1e-3
    plain = ConvBNAct(8, 3, batch_norm=False, activation="tanh", in_channels=4)
    assert isinstance(plain.bn, nn.Identity) and plain.conv.bias is not None and isinstance(plain.act, nn.Tanh)
    x = torch.randn(1, 4, 5, 5)
    assert torch.equal(plain(x), torch.tanh(plain.conv(x)))
    with pytest.raises(ValueError, match="unknown activation"):
        ConvBNAct(8, 3, activation="relu7")
    with pytest.raises(ValueError, match="groups"):
        ConvBNAct(8, 3, groups=3, in_channels=4)


def test_convbnact_is_lazy():
    block = ConvBNAct(16, 3, stride=2)
    assert not is_built(block) and block.in_channels is None
    with pytest.raises(NotBuiltError):
        block(torch.zeros(1, 3, 8, 8))
    assert block.output_shape((3, 9, 9)) == (16, 5, 5)
    block.build((3, 9, 9))
    assert is_built(block) and block.conv.in_channels == 3
    assert block(torch.zeros(1, 3, 9, 9)).shape == (1, 16, 5, 5)
    block.build((7, 9, 9))  # a no-op once built
    assert block.conv.in_channels == 3


def test_output_shape_reports_the_layer():
    with pytest.raises(ShapeError, match="kernel 7"):
        ConvBNAct(4, 7, padding=0).output_shape((3, 5, 5))


# ---------------------------------------------------------------- residual blocks

@pytest.mark.parametrize("ours, theirs, cin, planes, stride", [
    (BasicBlock, tv_resnet.BasicBlock, 64, 64, 1),       # identity shortcut
    (BasicBlock, tv_resnet.BasicBlock, 64, 128, 2),      # projection shortcut
    (Bottleneck, tv_resnet.Bottleneck, 64, 64, 1),       # channels change: projection at stride 1
    (Bottleneck, tv_resnet.Bottleneck, 256, 64, 1),      # identity
    (Bottleneck, tv_resnet.Bottleneck, 256, 128, 2),
])
def test_residual_blocks_equal_torchvision(ours, theirs, cin, planes, stride):
    block = ours(planes, stride=stride, in_channels=cin)
    needs_projection = stride != 1 or cin != planes * ours.expansion
    downsample = nn.Sequential(tv_resnet.conv1x1(cin, planes * ours.expansion, stride),
                               nn.BatchNorm2d(planes * ours.expansion)) if needs_projection else None
    reference = theirs(cin, planes, stride, downsample)
    assert (block.downsample is not None) == needs_projection
    assert shapes(block) == shapes(reference)
    randomise_bn(reference)
    block.load_state_dict(reference.state_dict(), strict=True)
    block.eval(), reference.eval()
    x = torch.randn(2, cin, 12, 12)
    out = block(x)
    assert out.shape == (2, planes * ours.expansion, 12 // stride, 12 // stride)
    assert block.out_channels == planes * ours.expansion
    torch.testing.assert_close(out, reference(x))


def test_bottleneck_groups_and_width():
    block = Bottleneck(64, groups=32, base_width=4, in_channels=256)   # ResNeXt 32x4d, stage 1
    assert block.conv2.groups == 32 and block.conv2.out_channels == 128
    wide = Bottleneck(64, base_width=128, in_channels=256)             # WRN-50-2, stage 1
    assert wide.conv2.out_channels == 128 and wide.out_channels == 256
    ref = tv_resnet.Bottleneck(256, 64, groups=32, base_width=4)
    assert shapes(block) == shapes(ref)


def test_residual_block_dilation_and_checks():
    block = Bottleneck(64, dilation=2, in_channels=256)
    assert block.conv2.dilation == (2, 2) and block.conv2.padding == (2, 2)
    assert block(torch.zeros(1, 256, 9, 9)).shape == (1, 256, 9, 9)
    with pytest.raises(ValueError, match="groups=1"):
        BasicBlock(64, groups=2)
    assert Bottleneck.expansion == 4 and BasicBlock.expansion == 1


@pytest.mark.parametrize("cls, size", [(BasicBlock, 15), (BasicBlock, 16), (Bottleneck, 7)])
def test_residual_blocks_lazy_and_output_shape(cls, size):
    block = cls(32, stride=2)
    assert not is_built(block)
    predicted = block.output_shape((16, size, size))
    block.build((16, size, size))
    assert block(torch.zeros(1, 16, size, size)).shape[1:] == predicted


def test_residual_block_is_a_residual():
    block = BasicBlock(8, in_channels=8).eval()
    for bn in (block.bn1, block.bn2):  # zero the residual branch: the block is relu(x)
        nn.init.zeros_(bn.weight)
    x = torch.randn(1, 8, 5, 5)
    torch.testing.assert_close(block(x), torch.relu(x))


# ---------------------------------------------------------------- Inception

TABLE1_3A = (64, 96, 128, 16, 32, 32)


def test_inception_equals_torchvision_with_bn_and_3x3():
    block = InceptionModule(*TABLE1_3A, batch_norm=True, branch3_kernel=3, in_channels=192)
    reference = tv_googlenet.Inception(192, *TABLE1_3A)
    assert shapes(block) == shapes(reference)
    randomise_bn(reference)
    block.load_state_dict(reference.state_dict(), strict=True)
    block.eval(), reference.eval()
    x = torch.randn(1, 192, 9, 9)
    torch.testing.assert_close(block(x), reference(x))


def test_inception_paper_form():
    block = InceptionModule(*TABLE1_3A, in_channels=192)
    assert block.out_channels == 256 and block(torch.zeros(1, 192, 28, 28)).shape == (1, 256, 28, 28)
    assert block.branch3[1].conv.kernel_size == (5, 5) and block.branch3[1].conv.padding == (2, 2)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in block.modules())
    # Table 1, inception (3a): weights + biases of the six convolutions
    expected = (192 * 64 + 64) + (192 * 96 + 96) + (96 * 9 * 128 + 128) + (192 * 16 + 16) + (16 * 25 * 32 + 32) \
        + (192 * 32 + 32)
    assert n_params(block) == expected == 163_696


def test_inception_lazy():
    block = InceptionModule(*TABLE1_3A)
    assert block.output_shape((192, 28, 28)) == (256, 28, 28)
    block.build((192, 28, 28))
    assert block.branch1.conv.in_channels == 192
    with pytest.raises(ValueError, match="odd"):
        InceptionModule(*TABLE1_3A, branch3_kernel=4)


# ---------------------------------------------------------------- MLPConv

def test_mlpconv():
    block = MLPConv(96, 11, stride=4, in_channels=3)
    assert [n for n, _ in block.named_children()] == ["conv", "relu", "mlp1", "relu1", "mlp2", "relu2"]
    assert block(torch.zeros(1, 3, 224, 224)).shape == (1, 96, 54, 54)
    assert n_params(block) == (3 * 121 * 96 + 96) + 2 * (96 * 96 + 96)
    with pytest.warns(ShapeWarning, match="dropped"):  # (224 - 11) / 4 leaves a pixel: D2L's NiN drops it
        assert block.output_shape((3, 224, 224)) == (96, 54, 54)
    out = block(torch.randn(1, 3, 31, 31))
    assert (out >= 0).all()  # each layer ends in a ReLU


def test_mlpconv_filters_per_layer_and_lazy():
    block = MLPConv(192, 5, padding=2, mlp_filters=[160, 96])
    assert block.out_channels == 96 and block.num_mlp == 2
    block.build((3, 32, 32))
    assert block(torch.zeros(1, 3, 32, 32)).shape == (1, 96, 32, 32)
    assert block.mlp1.out_channels == 160
    three = MLPConv(10, 3, num_mlp=3, in_channels=4)
    assert three.mlp3.out_channels == 10
    with pytest.raises(ValueError, match="num_mlp"):
        MLPConv(10, 3, mlp_filters=[4, 5], num_mlp=3)


def test_blocks_in_convkit_sequential():
    from convkit.models.sequential import Sequential

    net = Sequential([ConvBNAct(16, 3), BasicBlock(32, stride=2), Bottleneck(8), InceptionModule(*TABLE1_3A),
                      MLPConv(10, 1)], input_shape=(3, 32, 32))
    assert list(net.shapes.values()) == [(16, 32, 32), (32, 16, 16), (32, 16, 16), (256, 16, 16), (10, 16, 16)]
    assert net(torch.zeros(2, 3, 32, 32)).shape[1:] == (10, 16, 16)
