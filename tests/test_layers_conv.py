"""Conv2d and ConvTranspose2d against scipy, hand-worked examples and torch's own layers."""

import math
import random
import warnings

import numpy as np
import pytest
import torch
import torch.fx
from scipy.signal import correlate2d
from torch import nn

from convkit.layers.base import NotBuiltError, is_built
from convkit.layers.conv import Conv2d, ConvTranspose2d
from convkit.layers.padding import PADDING_MODES
from convkit.layers.shapes import ShapeError, ShapeWarning

NUMPY_MODES = {"zeros": "constant", "replicate": "edge", "reflect": "reflect", "symmetric": "symmetric",
               "circular": "wrap"}


def reference_conv(x, w, b=None, stride=(1, 1), pads=(0, 0, 0, 0), dilation=(1, 1), groups=1, mode="zeros"):
    """One sample (C, H, W) by scipy: pad with numpy, dilate the kernel with zeros, subsample for the stride."""
    left, right, top, bottom = pads
    x = np.pad(x, ((0, 0), (top, bottom), (left, right)), NUMPY_MODES[mode])
    out_c, in_per_group, kh, kw = w.shape
    dilated = np.zeros((out_c, in_per_group, dilation[0] * (kh - 1) + 1, dilation[1] * (kw - 1) + 1))
    dilated[:, :, :: dilation[0], :: dilation[1]] = w
    out_per_group = out_c // groups
    maps = []
    for o in range(out_c):
        g = o // out_per_group
        acc = sum(correlate2d(x[g * in_per_group + c], dilated[o, c], mode="valid") for c in range(in_per_group))
        maps.append(acc[:: stride[0], :: stride[1]] + (0.0 if b is None else b[o]))
    return np.stack(maps)


def test_worked_example():
    image = torch.tensor([[3, 3, 2, 1, 0], [0, 0, 1, 3, 1], [3, 1, 2, 2, 3], [2, 0, 0, 2, 2], [2, 0, 0, 0, 1]],
                         dtype=torch.float32)
    kernel = torch.tensor([[0, 1, 2], [2, 2, 0], [0, 1, 2]], dtype=torch.float32)
    conv = Conv2d(1, 3, bias=False, in_channels=1)
    with torch.no_grad():
        conv.weight.copy_(kernel.view(1, 1, 3, 3))
    out = conv(image.view(1, 1, 5, 5))
    assert out.view(3, 3).tolist() == [[12, 12, 17], [10, 17, 19], [9, 6, 14]]


@pytest.mark.parametrize("mode", PADDING_MODES)
def test_against_scipy_for_every_padding_mode(mode):
    rng = random.Random(hash(mode) % 1000)
    for _ in range(6):
        groups = rng.choice([1, 1, 2])
        cin, cout = groups * rng.randint(1, 2), groups * rng.randint(1, 2)
        kernel = (rng.randint(1, 4), rng.randint(1, 4))
        stride, dilation = (rng.randint(1, 3), rng.randint(1, 2)), (rng.randint(1, 2), rng.randint(1, 2))
        pads = tuple(rng.randint(0, 3) for _ in range(4))
        size = (rng.randint(7, 10), rng.randint(7, 10))
        conv = Conv2d(cout, kernel, stride, pads, dilation, groups, padding_mode=mode, in_channels=cin,
                      dtype=torch.float64)
        x = torch.randn(2, cin, *size, dtype=torch.float64)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ShapeWarning)
            y = conv(x).detach().numpy()
        w, b = conv.weight.detach().numpy(), conv.bias.detach().numpy()
        for n in range(2):
            expected = reference_conv(x[n].numpy(), w, b, stride, pads, dilation, groups, mode)
            np.testing.assert_allclose(y[n], expected, rtol=1e-10, atol=1e-10)


def test_int_and_pair_padding_is_symmetric_and_valid_is_none():
    x = torch.randn(1, 2, 6, 7, dtype=torch.float64)
    conv = Conv2d(3, (3, 2), padding=(2, 1), padding_mode="reflect", in_channels=2, dtype=torch.float64)
    w, b = conv.weight.detach().numpy(), conv.bias.detach().numpy()
    expected = reference_conv(x[0].numpy(), w, b, pads=(1, 1, 2, 2), mode="reflect")
    np.testing.assert_allclose(conv(x)[0].detach().numpy(), expected, atol=1e-12)
    assert conv.padding == (2, 1) and conv.resolve_padding((6, 7)) == (1, 1, 2, 2)
    assert Conv2d(3, 3, padding="valid", in_channels=2)(x.float()).shape == (1, 3, 4, 5)
    assert Conv2d(3, 3, padding=1, in_channels=2).resolve_padding((6, 7)) == (1, 1, 1, 1)


def tf_same_pads(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow's documented rule for "SAME" (nn.convolution docs), written independently of shapes.py."""
    total = max(kernel - stride, 0) if size % stride == 0 else max(kernel - size % stride, 0)
    return total // 2, total - total // 2


@pytest.mark.parametrize("stride", [1, 2, 3])
def test_same_padding_follows_tensorflow(stride):
    for size in range(1, 12):
        for kernel in range(1, 6):
            conv = Conv2d(1, kernel, stride=stride, padding="same", bias=False, in_channels=1, dtype=torch.float64)
            x = torch.randn(1, 1, size, size + 1, dtype=torch.float64)
            y = conv(x)
            assert tuple(y.shape[2:]) == (math.ceil(size / stride), math.ceil((size + 1) / stride))
            top, bottom = tf_same_pads(size, kernel, stride)
            left, right = tf_same_pads(size + 1, kernel, stride)
            assert conv.resolve_padding((size, size + 1)) == (left, right, top, bottom)
            expected = reference_conv(x[0].numpy(), conv.weight.detach().numpy(), stride=(stride, stride),
                                      pads=(left, right, top, bottom))
            np.testing.assert_allclose(y[0].detach().numpy(), expected, atol=1e-12)


def test_same_with_stride_2_puts_the_odd_pixel_after():
    conv = Conv2d(4, 3, stride=2, padding="same", in_channels=3)
    assert conv.resolve_padding((224, 224)) == (0, 1, 0, 1)
    assert conv.output_shape((3, 224, 224)) == (4, 112, 112)
    assert Conv2d(4, 7, stride=2, padding="SAME").resolve_padding((224, 225)) == (3, 3, 2, 3)


def test_lazy_build_keeps_the_configuration():
    conv = Conv2d(8, 3, stride=2, padding="same", padding_mode="symmetric", activation="relu")
    assert conv.in_channels is None and not is_built(conv) and list(conv.parameters()) == []
    conv.eval()
    seen = []
    conv.register_forward_hook(lambda module, args, out: seen.append(out.shape))
    conv.build((3, 9, 9))
    assert is_built(conv) and conv.in_channels == 3 and conv.weight.shape == (8, 3, 3, 3)
    assert not conv.training and conv.padding == "same" and conv.padding_mode == "symmetric"
    assert isinstance(conv.activation, nn.ReLU) and conv.stride == (2, 2)
    y = conv(torch.randn(2, 3, 9, 9))
    assert y.shape == (2, 8, 5, 5) and (y >= 0).all() and seen == [y.shape]
    weight = conv.weight
    conv.build((5, 9, 9))  # already built: a no-op
    assert conv.weight is weight


def test_build_takes_device_and_dtype():
    conv = Conv2d(4, 3, dtype=torch.float64)
    conv.build((2, 5, 5))
    assert conv.weight.dtype == torch.float64 and conv.bias.dtype == torch.float64


def test_unbuilt_call_raises_not_built_error():
    with pytest.raises(NotBuiltError, match=r"in_channels.*build\(input_shape\)"):
        Conv2d(8, 3)(torch.zeros(1, 3, 5, 5))
    with pytest.raises(NotBuiltError):
        ConvTranspose2d(8, 3)(torch.zeros(1, 3, 5, 5))


def test_gradcheck_with_symmetric_padding():
    conv = Conv2d(2, 3, stride=2, padding="same", padding_mode="symmetric", in_channels=2, dtype=torch.float64)
    x = torch.randn(1, 2, 5, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: conv(t), (x,))
    assert torch.autograd.gradcheck(lambda w: torch.nn.functional.conv2d(x, w), (conv.weight,), fast_mode=True)


def test_output_shape_matches_forward_for_random_geometries():
    rng = random.Random(1)
    for _ in range(60):
        groups = rng.choice([1, 2])
        kernel, stride = (rng.randint(1, 5), rng.randint(1, 5)), (rng.randint(1, 3), rng.randint(1, 3))
        dilation = (rng.randint(1, 2), rng.randint(1, 2))
        padding = rng.choice(["same", "valid", rng.randint(0, 2), tuple(rng.randint(0, 3) for _ in range(4))])
        mode = rng.choice(PADDING_MODES)
        size = (rng.randint(9, 16), rng.randint(9, 16))
        conv = Conv2d(2 * groups, kernel, stride, padding, dilation, groups, padding_mode=mode)
        conv.build((2 * groups, *size))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ShapeWarning)
            predicted = conv.output_shape((2 * groups, *size))
        assert predicted == tuple(conv(torch.zeros(1, 2 * groups, *size)).shape[1:]), conv


def test_kernel_larger_than_padded_input_is_a_shape_error_with_the_formula():
    conv = Conv2d(4, 7, padding=1, in_channels=1)
    with pytest.raises(ShapeError, match=r"out = \(4 \+ 2 - 7\) / 1 \+ 1") as info:
        conv.output_shape((1, 4, 5))
    assert "height" in str(info.value)


def test_uneven_stride_warns():
    with pytest.warns(ShapeWarning, match="stride 3 does not divide evenly"):
        assert Conv2d(4, 3, stride=3, in_channels=1).output_shape((1, 7, 7)) == (4, 2, 2)


def test_channel_and_group_errors():
    with pytest.raises(ShapeError, match="expects 3 input channels, got 4"):
        Conv2d(8, 3, in_channels=3).output_shape((4, 8, 8))
    with pytest.raises(ShapeError, match="not divisible by groups=2"):
        Conv2d(8, 3, groups=2).output_shape((3, 8, 8))
    with pytest.raises(ShapeError, match="not divisible by groups=2"):
        Conv2d(8, 3, groups=2).build((3, 8, 8))
    with pytest.raises(ShapeError, match=r"\(C, H, W\)"):
        Conv2d(8, 3).output_shape((8, 8))


@pytest.mark.parametrize("kwargs, match", [
    ({"padding": "full"}, "padding"), ({"padding": -1}, "padding"), ({"padding": (1, 2, 3)}, "padding"),
    ({"padding_mode": "nearest"}, "padding_mode"), ({"groups": 3}, "groups"), ({"stride": 0}, "stride"),
    ({"kernel_size": (3, 3, 3)}, "kernel_size"),
])
def test_invalid_arguments(kwargs, match):
    args = {"filters": 8, "kernel_size": 3, **kwargs}
    with pytest.raises((ValueError, TypeError), match=match):
        Conv2d(**args)


def test_is_a_torch_conv_with_the_same_state_dict():
    ours = Conv2d(6, (3, 5), stride=2, padding=(1, 2), in_channels=4)
    theirs = nn.Conv2d(4, 6, (3, 5), stride=2, padding=(1, 2))
    assert isinstance(ours, nn.Conv2d)
    assert list(ours.state_dict()) == list(theirs.state_dict()) == ["weight", "bias"]
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(2, 4, 11, 12)
    torch.testing.assert_close(ours(x), theirs(x))
    assert list(Conv2d(6, 3, bias=False, activation="relu", in_channels=4).state_dict()) == ["weight"]


def test_unbatched_input_and_repr():
    conv = Conv2d(4, 3, padding="same", padding_mode="mirror", activation="tanh", in_channels=2)
    assert conv(torch.randn(2, 5, 5)).shape == (4, 5, 5)
    text = repr(conv)
    assert "padding_mode='reflect'" in text and "activation=Tanh()" in text and "\n" not in text


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_runs_on_cuda():
    conv = Conv2d(4, 3, padding="same", padding_mode="symmetric", activation="relu", in_channels=2).cuda()
    x = torch.randn(2, 2, 8, 8)
    cpu = Conv2d(4, 3, padding="same", padding_mode="symmetric", activation="relu", in_channels=2)
    cpu.load_state_dict({k: v.cpu() for k, v in conv.state_dict().items()})
    torch.testing.assert_close(conv(x.cuda()).cpu(), cpu(x), rtol=1e-4, atol=1e-4)
    lazy = Conv2d(4, 3, device="cuda")
    lazy.build((2, 8, 8))
    assert lazy.weight.is_cuda


def test_conv_transpose_matches_torch_and_its_formula():
    rng = random.Random(2)
    for _ in range(25):
        kernel, stride = (rng.randint(1, 4), rng.randint(1, 4)), (rng.randint(1, 3), rng.randint(1, 3))
        dilation = (rng.randint(1, 2), rng.randint(1, 2))
        padding = (rng.randint(0, 1), rng.randint(0, 1))
        output_padding = tuple(rng.randint(0, max(s, d) - 1) for s, d in zip(stride, dilation))
        size = (rng.randint(3, 7), rng.randint(3, 7))
        ours = ConvTranspose2d(3, kernel, stride, padding, output_padding, dilation)
        ours.build((2, *size))
        theirs = nn.ConvTranspose2d(2, 3, kernel, stride, padding, output_padding, dilation=dilation)
        theirs.load_state_dict(ours.state_dict())
        x = torch.randn(1, 2, *size)
        y = ours(x)
        torch.testing.assert_close(y, theirs(x))
        expected = tuple((n - 1) * s - 2 * p + d * (k - 1) + op + 1
                         for n, s, p, d, k, op in zip(size, stride, padding, dilation, kernel, output_padding))
        assert ours.output_shape((2, *size)) == (3, *expected) == tuple(y.shape[1:])


def test_conv_transpose_errors_and_activation():
    with pytest.raises(ValueError, match="output_padding must be smaller"):
        ConvTranspose2d(4, 3, stride=2, output_padding=2)
    with pytest.raises(ShapeError, match="leaves no output"):
        ConvTranspose2d(4, 1, padding=1, in_channels=1).output_shape((1, 1, 1))
    with pytest.raises(ShapeError, match="expects 2 input channels"):
        ConvTranspose2d(4, 3, in_channels=2).output_shape((3, 4, 4))
    up = ConvTranspose2d(4, 2, stride=2, activation="sigmoid", in_channels=3)
    y = up(torch.randn(1, 3, 4, 4))
    assert y.shape == (1, 4, 8, 8) and ((y > 0) & (y < 1)).all()
    assert isinstance(up, nn.ConvTranspose2d) and list(up.state_dict()) == ["weight", "bias"]


def test_same_padding_with_stride_1_traces_with_torch_fx():
    conv = Conv2d(4, (3, 4), padding="same", activation="relu", in_channels=2)
    traced = torch.fx.symbolic_trace(conv)
    x = torch.randn(1, 2, 6, 7)
    torch.testing.assert_close(traced(x), conv(x))
    assert traced(x).shape == (1, 4, 6, 7)
