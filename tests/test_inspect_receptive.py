"""Receptive fields, checked against values worked by hand."""

import pytest
import torch
from torch import nn

from convkit.inspect import receptive_field_chain, summary


def test_three_stacked_3x3_convolutions_see_7x7():
    # Simonyan & Zisserman: three 3x3 layers have the field of one 7x7 layer (r = 1 + 3*2)
    fields = receptive_field_chain([(3, 1, 1)] * 3)
    assert [f.size for f in fields] == [(3, 3), (5, 5), (7, 7)]
    model = nn.Sequential(*[nn.Conv2d(4, 4, 3, padding=1) for _ in range(3)])
    rows = summary(model, (4, 32, 32)).rows
    assert [r.receptive_field.size for r in rows] == [(3, 3), (5, 5), (7, 7)]
    assert all(r.receptive_field.jump == (1, 1) and r.receptive_field.start == (0, 0) for r in rows)


def test_alexnet_chain_by_hand():
    # conv1 11/4 -> 11, jump 4; pool 3/2 -> 11 + 2*4 = 19, jump 8; conv2 5/1 -> 19 + 4*8 = 51
    fields = receptive_field_chain([(11, 4, 2), (3, 2, 0), (5, 1, 2)])
    assert [(f.size[0], f.jump[0]) for f in fields] == [(11, 4), (19, 8), (51, 8)]


def test_vgg16_receptive_fields():
    # conv5_3 sees 196x196 pixels and pool5 212x212 (jump 32): 1 + 2*(2*1 + 2*2 + 3*4 + 3*8 + 3*16) = 196,
    # then pool5 adds (2 - 1)*16 = 16
    result = summary("vgg16")
    convs = [r for r in result.rows if r.type == "Conv2d"]
    assert convs[0].receptive_field.size == (3, 3)
    assert convs[-1].receptive_field.size == (196, 196) and convs[-1].receptive_field.jump == (16, 16)
    pool5 = [r for r in result.rows if r.type == "MaxPool2d"][-1]
    assert pool5.receptive_field.size == (212, 212) and pool5.receptive_field.jump == (32, 32)
    assert result.totals["receptive_field"]["size"] == [212, 212]


def test_lenet5_c5_sees_the_whole_32x32_input():
    result = summary("lenet5")
    c5 = result["features.c5"]
    assert c5.receptive_field.size == (32, 32) and c5.receptive_field.start == (15.5, 15.5)


def test_residual_sum_takes_the_largest_path():
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(4, 4, 3, padding=1)
            self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
            self.relu = nn.ReLU()

        def forward(self, x):
            return self.relu(self.conv2(self.conv1(x)) + x)

    result = summary(nn.Sequential(Block(), Block()), (4, 16, 16))
    relus = [r for r in result.rows if r.type == "ReLU"]
    assert [r.receptive_field.size for r in relus] == [(5, 5), (9, 9)]


def test_inception_concatenation_takes_the_widest_branch():
    class Inception(nn.Module):
        def __init__(self):
            super().__init__()
            self.b1 = nn.Conv2d(4, 2, 1)
            self.b3 = nn.Conv2d(4, 2, 3, padding=1)
            self.b5 = nn.Conv2d(4, 2, 5, padding=2)

        def forward(self, x):
            return torch.cat([self.b1(x), self.b3(x), self.b5(x)], 1)

    result = summary(nn.Sequential(nn.Conv2d(3, 4, 3, stride=2, padding=1), Inception()), (3, 32, 32))
    assert result.totals["receptive_field"]["size"] == [3 + 4 * 2, 3 + 4 * 2]


def test_asymmetric_geometry_and_dilation():
    model = nn.Sequential(nn.Conv2d(1, 1, (3, 5), stride=(1, 2), dilation=(2, 1)))
    field = summary(model, (1, 21, 21)).rows[0].receptive_field
    assert field.size == (5, 5) and field.jump == (1, 2) and field.start == (2, 2)


def test_cifar_resnet_shortcut_by_slicing():
    # option A shortcuts subsample with x[:, :, ::2, ::2]: the jump doubles on that path too
    result = summary("resnet20")
    field = result.totals["receptive_field"]
    assert field["jump"] == [4, 4]
    # 19 convolutions of 3x3 on the main path: 8 at jump 1 (conv1, stage 1, the strided one of stage 2),
    # 6 at jump 2, 5 at jump 4
    assert field["size"] == [1 + 2 * (8 * 1 + 6 * 2 + 5 * 4)] * 2 == [81, 81]


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_resnet_fields_worked_by_hand(name):
    # Along the main path (the shortcuts see less): stem 7x7/2 -> 7 (jump 2), max pool 3/2 -> 11 (jump 4).
    # ResNet-18: 3x3 convs at jumps 4, 8, 16, 32: 4 + 1 at jump 4 (the strided one of stage 2 runs at
    # the old jump), 3 + 1 at 8, 3 + 1 at 16, 3 at 32: 11 + 2*(5*4 + 4*8 + 4*16 + 3*32) = 435.
    # ResNet-50 (stride on the 3x3, v1.5): one 3x3 per bottleneck, 3 + 1 at jump 4, 3 + 1 at 8,
    # 5 + 1 at 16, 2 at 32: 11 + 2*(4*4 + 4*8 + 6*16 + 2*32) = 427.
    expected = {"resnet18": 11 + 2 * (5 * 4 + 4 * 8 + 4 * 16 + 3 * 32),
                "resnet50": 11 + 2 * (4 * 4 + 4 * 8 + 6 * 16 + 2 * 32)}[name]
    assert expected == {"resnet18": 435, "resnet50": 427}[name]
    assert summary(name).totals["receptive_field"]["size"] == [expected, expected]
