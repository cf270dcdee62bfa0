"""pad2d against numpy.pad, which is the reference for every mode and every pad size."""

import random

import numpy as np
import pytest
import torch

from convkit.layers.padding import PADDING_MODES, Pad2d, normalize_padding_mode, pad2d
from convkit.layers.shapes import ShapeError

NUMPY_MODES = {"zeros": "constant", "replicate": "edge", "reflect": "reflect", "symmetric": "symmetric",
               "circular": "wrap"}


def numpy_pad(x: torch.Tensor, pads, mode: str, value: float = 0.0) -> np.ndarray:
    left, right, top, bottom = pads
    widths = [(0, 0)] * (x.dim() - 2) + [(top, bottom), (left, right)]
    kwargs = {"constant_values": value} if mode == "zeros" else {}
    return np.pad(x.numpy(), widths, NUMPY_MODES[mode], **kwargs)


def test_modes_are_the_five_documented():
    assert PADDING_MODES == ("zeros", "replicate", "reflect", "symmetric", "circular")
    assert set(NUMPY_MODES) == set(PADDING_MODES)


@pytest.mark.parametrize("mode", PADDING_MODES)
def test_matches_numpy_pad_for_random_sizes_including_pads_larger_than_the_input(mode):
    rng = random.Random(hash(mode) % 1000)
    large = 0
    for _ in range(40):
        shape = [rng.randint(1, 3), rng.randint(1, 3), rng.randint(1, 6), rng.randint(1, 6)]
        if rng.random() < 0.3:
            shape = shape[1:]  # an unbatched (C, H, W) image
        x = torch.randn(shape)
        pads = tuple(rng.randint(0, 14) for _ in range(4))
        large += max(pads) > min(shape[-2:])
        np.testing.assert_array_equal(pad2d(x, pads, mode).numpy(), numpy_pad(x, pads, mode), err_msg=f"{shape} {pads}")
    assert large > 10  # the gather path, beyond what F.pad allows, was exercised


@pytest.mark.parametrize("mode", ["reflect", "circular"])
def test_pads_just_inside_and_just_outside_torchs_limit(mode):
    x = torch.randn(1, 2, 4, 5)
    for pad in (3, 4, 5, 6):
        pads = (pad, pad - 1, pad, 0)
        np.testing.assert_array_equal(pad2d(x, pads, mode).numpy(), numpy_pad(x, pads, mode))


def test_zeros_mode_fills_with_value():
    x = torch.randn(2, 3, 4)
    np.testing.assert_array_equal(pad2d(x, (1, 2, 3, 0), "zeros", value=-7.5).numpy(),
                                  numpy_pad(x, (1, 2, 3, 0), "zeros", -7.5))


def test_symmetric_by_hand():
    row = torch.tensor([[[1.0, 2.0, 3.0]]])  # A B C
    assert pad2d(row, (2, 2, 0, 0), "symmetric").tolist() == [[[2.0, 1.0, 1.0, 2.0, 3.0, 3.0, 2.0]]]  # B A|A B C|C B
    assert pad2d(row, (2, 2, 0, 0), "reflect").tolist() == [[[3.0, 2.0, 1.0, 2.0, 3.0, 2.0, 1.0]]]  # C B|A B C|B A
    assert pad2d(row, (2, 2, 0, 0), "circular").tolist() == [[[2.0, 3.0, 1.0, 2.0, 3.0, 1.0, 2.0]]]  # B C|A B C|A B
    column = row.transpose(1, 2)
    assert pad2d(column, (0, 0, 1, 2), "symmetric").flatten().tolist() == [1.0, 1.0, 2.0, 3.0, 3.0, 2.0]


@pytest.mark.parametrize("mode", PADDING_MODES)
@pytest.mark.parametrize("pads", [(1, 2, 0, 1), (5, 4, 6, 3)])
def test_gradcheck(mode, pads):
    x = torch.randn(1, 2, 3, 4, dtype=torch.float64, requires_grad=True)
    # where F.pad does the work, its gradient is torch's (and its full check takes seconds): fast mode
    # suffices; the gather path (symmetric, large reflect/circular pads) gets the full check
    fast = mode in ("zeros", "replicate") or (mode != "symmetric" and max(pads) < 3)
    assert torch.autograd.gradcheck(lambda t: pad2d(t, pads, mode), (x,), fast_mode=fast)


def test_symmetric_gradient_counts_each_use_of_a_pixel():
    x = torch.zeros(1, 1, 1, 3, requires_grad=True)
    pad2d(x, (2, 2, 0, 0), "symmetric").sum().backward()
    assert x.grad.flatten().tolist() == [2.0, 3.0, 2.0]  # B A|A B C|C B: A twice, B three times, C twice


@pytest.mark.parametrize("alias, mode", [("constant", "zeros"), ("edge", "replicate"), ("border", "replicate"),
                                         ("mirror", "reflect"), ("wrap", "circular"), ("cyclic", "circular"),
                                         ("SYMMETRIC", "symmetric"), ("Reflect", "reflect")])
def test_aliases(alias, mode):
    assert normalize_padding_mode(alias) == mode
    x = torch.randn(1, 3, 4)
    assert torch.equal(pad2d(x, (2, 1, 1, 2), alias), pad2d(x, (2, 1, 1, 2), mode))


def test_unknown_mode_lists_the_valid_ones():
    with pytest.raises(ValueError, match="zeros, replicate, reflect, symmetric, circular"):
        normalize_padding_mode("mirrored")
    with pytest.raises(ValueError, match="padding_mode"):
        pad2d(torch.zeros(1, 2, 2), 1, "nearest")


@pytest.mark.parametrize("pads", [(1, 2, 3), (-1, 0, 0, 0), (1.5, 0, 0, 0), "same"])
def test_bad_pads(pads):
    with pytest.raises(ValueError, match="pads"):
        pad2d(torch.zeros(1, 2, 2), pads)


def test_bad_input_and_value():
    with pytest.raises(ValueError, match=r"\(N, C, H, W\) or \(C, H, W\)"):
        pad2d(torch.zeros(4, 4), 1, "symmetric")
    with pytest.raises(ValueError, match="only used by mode 'zeros'"):
        pad2d(torch.zeros(1, 4, 4), 1, "reflect", value=1.0)
    with pytest.raises(ValueError, match="empty"):
        pad2d(torch.zeros(1, 0, 4), 1, "symmetric")


def test_int_pads_and_zero_pads():
    x = torch.randn(2, 1, 3, 3)
    assert pad2d(x, 2, "symmetric").shape == (2, 1, 7, 7)
    assert pad2d(x, 0, "reflect") is x


def test_pad2d_module():
    layer = Pad2d((1, 2, 3, 4), "wrap")
    x = torch.randn(2, 3, 5, 6)
    y = layer(x)
    np.testing.assert_array_equal(y.numpy(), numpy_pad(x, (1, 2, 3, 4), "circular"))
    assert layer.output_shape((3, 5, 6)) == tuple(y.shape[1:])
    assert "circular" in repr(layer)
    with pytest.raises(ShapeError):
        layer.output_shape((5, 6))
