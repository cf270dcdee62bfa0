"""Receptive fields of the torchvision zoo against a gradient probe.

The probe is independent of convkit's arithmetic: a real forward on the CPU with every weight
positive (random, fan-in scaled), batch norm in eval mode with neutral statistics and max pooling
replaced by average pooling of the same geometry (a max passes the gradient to one pixel only); the
gradient of one position of the layer convkit reports (summed over channels) with respect to the
input is nonzero exactly on the pixels that position sees. A numeric field must match that extent
exactly (clipped to the input) at the centre and at the corner position; a global field must see the
whole input even from the corner; an unknown one must say why. One model per family by default,
every torchvision classifier with CONVKIT_FULL_ZOO=1.
"""

import os

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from convkit.inspect import summary

# one model per family, at an input where the field fits when that is cheap (then the comparison is exact
# on both sides of the centre); ViT and MaxViT are built for a small input (their own arguments)
DEFAULT = {
    "alexnet": 224, "vgg11": 224, "resnet18": 448, "squeezenet1_0": 224, "densenet121": 96, "inception_v3": 299,
    "googlenet": 128, "shufflenet_v2_x0_5": 128, "mobilenet_v2": 96, "mobilenet_v3_small": 96,
    "mnasnet0_5": 96, "efficientnet_b0": 96, "efficientnet_v2_s": 64, "regnet_y_400mf": 96,
    "resnext50_32x4d": 96, "wide_resnet50_2": 96, "convnext_tiny": 64, "vit_b_16": 64, "swin_t": 224,
    "swin_v2_t": 256, "maxvit_t": 64,
}
SIZES = {"inception_v3": 299, "vit_h_14": 56, "squeezenet1_1": 227, "swin_t": 224, "swin_s": 224, "swin_b": 224, "swin_v2_t": 256,
         "swin_v2_s": 256, "swin_v2_b": 256}

if os.environ.get("CONVKIT_FULL_ZOO") == "1":
    CASES = {name: SIZES.get(name, DEFAULT.get(name, 128) if name != "resnet18" else 448)
             for name in torchvision.models.list_models(module=torchvision.models)}
    CASES.update({name: 64 for name in CASES if name.startswith("vit_") and name != "vit_h_14"})
    CASES["maxvit_t"] = 64
else:
    CASES = DEFAULT


def _build(name: str, size: int) -> nn.Module:
    """torchvision's model; ViT and MaxViT made for a small input with their own arguments."""
    if name.startswith("vit_") and size != 224:
        return torchvision.models.get_model(name, weights=None, image_size=size)
    if name == "maxvit_t" and size != 224:  # maxvit_t's own configuration, with 2x2 windows and grids
        return torchvision.models.MaxVit(input_size=(size, size), stem_channels=64, partition_size=2,
                                         block_channels=[64, 128, 256, 512], block_layers=[2, 2, 5, 2], head_dim=32,
                                         stochastic_depth_prob=0.2)
    return torchvision.models.get_model(name, weights=None)


def _avg_instead_of_max(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
                        return_indices=False):
    assert dilation in (1, (1, 1)) and not return_indices
    return F.avg_pool2d(input, kernel_size, stride, padding, ceil_mode, count_include_pad=True)


def _probe(model: nn.Module, size: int, layer: str, corner_only: bool = False):
    """The map size of ``layer``'s output, and the rows and columns (first, last) of the input pixels that its
    centre position and its corner position (0, 0) depend on."""
    torch.manual_seed(0)
    model = model.eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() >= 2:
                p.copy_(torch.rand_like(p) / (p[0].numel() or 1))  # positive, gain about 1/2 per layer
            elif name.endswith("bias"):
                p.copy_(torch.rand_like(p) * 0.01)
            else:
                p.copy_(torch.rand_like(p) * 0.5 + 0.5)
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None:
                m.running_mean.zero_()
                m.running_var.fill_(1)
    module = dict(model.named_modules())[layer]
    captured = []
    handle = module.register_forward_hook(lambda m, a, out: captured.append(out[0] if isinstance(out, tuple) else out))
    x = (torch.rand(1, 3, size, size) * 0.5 + 0.5).requires_grad_(True)
    original = F.max_pool2d
    F.max_pool2d = _avg_instead_of_max
    try:
        model(x)
    finally:
        F.max_pool2d = original
        handle.remove()
    out = captured[-1]
    assert out.dim() == 4, out.shape
    channels_last = out.shape[-1] != out.shape[-2] and out.shape[1] == out.shape[2]
    hw = tuple(out.shape[1:3] if channels_last else out.shape[2:])
    result = []
    for i, j in ([] if corner_only else [(hw[0] // 2, hw[1] // 2)]) + [(0, 0)]:
        value = out[0, i, j, :].sum() if channels_last else out[0, :, i, j].sum()
        (grad,) = torch.autograd.grad(value, x, retain_graph=True)
        seen = grad[0].abs().sum(0) != 0
        rows = seen.any(1).nonzero().flatten()
        cols = seen.any(0).nonzero().flatten()
        result.append(((int(rows[0]), int(rows[-1])), (int(cols[0]), int(cols[-1]))))
    return hw, result


def _expected(field: dict, index: tuple[int, int], size: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """convkit's field of one position as input rows and columns (first, last), clipped to the input."""
    out = []
    for axis in (0, 1):
        centre = field["start"][axis] + index[axis] * field["jump"][axis]
        half = (field["size"][axis] - 1) / 2
        out.append((max(round(centre - half), 0), min(round(centre + half), size - 1)))
    return tuple(out)


@pytest.mark.parametrize("name", sorted(CASES))
def test_receptive_field_matches_a_gradient_probe(name):
    size = CASES[name]
    model = _build(name, size)
    result = summary(model, (3, size, size))
    field = check_receptive_field(model, result, size)
    if field["kind"] == "unknown":
        # windowed attention reshapes the map, ViT flattens it into tokens (both global in truth: the probe sees
        # the whole input); anything else unknown is a regression
        assert name.startswith(("swin", "vit")), field


def check_receptive_field(model: nn.Module, result, size: int) -> dict:
    """convkit's field at its reported layer against the probe: a numeric field is the exact extent at the centre
    and the corner, a global one sees the whole input from the corner; an unknown one has its reason (the caller
    says where unknown is allowed). Returns the field."""
    field, layer = result.totals["receptive_field"], result.totals["receptive_field_layer"]
    assert field is not None
    assert "nan" not in str(result) and "inf " not in str(result)
    everything = ((0, size - 1), (0, size - 1))
    if field["kind"] == "numeric":
        hw, (centre, corner) = _probe(model, size, layer)
        assert centre == _expected(field, (hw[0] // 2, hw[1] // 2), size), (field, centre)
        assert corner == _expected(field, (0, 0), size), (field, corner)
    elif field["kind"] == "global":
        # every output position sees the whole input, the corner one too
        hw, (corner,) = _probe(model, size, layer, corner_only=True)
        assert corner == everything, corner
    else:
        assert field["kind"] == "unknown" and field["reason"], field
    return field


def test_squeeze_and_excitation_is_global_not_a_compounded_number():
    # the issue: "Receptive field: 78285599643 pixels" for MobileNetV3; the pooled gate makes it global
    result = summary(torchvision.models.mobilenet_v3_large(), (3, 224, 224))
    field = result.totals["receptive_field"]
    assert field["kind"] == "global" and field["size"][0] < 1000  # the local path stays a plain CNN's
    assert "global (the whole input)" in str(result)


def test_plain_cnns_keep_their_numbers():
    assert summary(torchvision.models.resnet50(), (3, 224, 224)).totals["receptive_field"]["size"] == [427, 427]
    vgg = summary(torchvision.models.vgg16(), (3, 224, 224)).totals["receptive_field"]
    assert vgg["size"] == [212, 212] and vgg["kind"] == "numeric"


def test_channels_last_linear_is_a_1x1_convolution():
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(4, 4, 3, padding=1)
            self.fc = nn.Linear(4, 4)

        def forward(self, x):
            return self.fc(self.conv(x).permute(0, 2, 3, 1)).permute(0, 3, 1, 2)

    result = summary(nn.Sequential(Block(), Block()), (4, 16, 16))
    field = result.totals["receptive_field"]
    assert field["kind"] == "numeric" and field["size"] == [5, 5] and field["jump"] == [1, 1]
    fc = result["0.fc"].receptive_field
    assert fc.kind == "numeric" and fc.size == (3, 3)


def test_an_unfollowable_reshape_is_unknown_with_its_reason():
    class Windows(nn.Module):
        def forward(self, x):  # 8x8 map into 4 windows of 4x4, and back in another order
            n, c, h, w = x.shape
            return x.view(n, c, 2, 4, 2, 4).permute(0, 1, 3, 2, 5, 4).reshape(n, c, h, w)

    result = summary(nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), Windows(), nn.Conv2d(2, 2, 3, padding=1)),
                     (1, 8, 8))
    field = result.totals["receptive_field"]
    assert field["kind"] == "unknown" and "8x8 map" in field["reason"]
    assert "Receptive field:  unknown" in str(result)
