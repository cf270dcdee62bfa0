"""Pooling layers against hand-worked examples and torch's real output sizes."""

import random
import warnings

import pytest
import torch
from torch import nn

from convkit.layers.base import is_built
from convkit.layers.pooling import AvgPool2d, GlobalAvgPool2d, GlobalMaxPool2d, MaxPool2d, SumPool2d
from convkit.layers.shapes import ShapeError, ShapeWarning

GRID = torch.tensor([[1, 1, 2, 4], [5, 6, 7, 8], [3, 2, 1, 0], [1, 2, 3, 4]], dtype=torch.float32).view(1, 1, 4, 4)


def test_max_pool_worked_example():
    assert MaxPool2d(2)(GRID).view(2, 2).tolist() == [[6, 8], [3, 4]]
    assert MaxPool2d(2, stride=2)(GRID).view(2, 2).tolist() == [[6, 8], [3, 4]]


def test_avg_and_sum_pools_by_hand():
    assert AvgPool2d(2)(GRID).view(2, 2).tolist() == [[13 / 4, 21 / 4], [8 / 4, 8 / 4]]
    assert SumPool2d(2)(GRID).view(2, 2).tolist() == [[13, 21], [8, 8]]
    # 3x3 windows, stride 1: the four window sums of the grid
    assert SumPool2d(3, stride=1)(GRID).view(2, 2).tolist() == [[28, 31], [30, 33]]
    # zero padding adds nothing to a sum: the corner window covers only 1 (plus three zeros)
    assert SumPool2d(2, padding=1)(GRID)[0, 0, 0, 0].item() == 1
    assert AvgPool2d(2, padding=1)(GRID)[0, 0, 0, 0].item() == 1 / 4
    assert AvgPool2d(2, padding=1, count_include_pad=False)(GRID)[0, 0, 0, 0].item() == 1


def test_sum_pool_is_area_times_mean_on_random_input():
    x = torch.randn(2, 3, 9, 8)
    torch.testing.assert_close(SumPool2d((3, 2), stride=(2, 1))(x), 6 * AvgPool2d((3, 2), stride=(2, 1))(x))


def test_stride_defaults_to_the_window_and_subclasses_torch():
    pool = MaxPool2d(3)
    assert pool.stride == (3, 3) and isinstance(pool, nn.MaxPool2d)
    assert AvgPool2d((2, 3)).stride == (2, 3) and isinstance(AvgPool2d(), nn.AvgPool2d)
    assert MaxPool2d(3, stride=2).stride == (2, 2)
    assert all(is_built(p) for p in (pool, SumPool2d(), GlobalAvgPool2d()))


def _random_pool(rng):
    kind = rng.choice([MaxPool2d, AvgPool2d, SumPool2d])
    kernel = (rng.randint(1, 4), rng.randint(1, 4))
    stride = (rng.randint(1, 3), rng.randint(1, 3))
    padding = tuple(rng.randint(0, k // 2) for k in kernel)
    kwargs = {"dilation": (rng.randint(1, 2), rng.randint(1, 2))} if kind is MaxPool2d else {}
    return kind(kernel, stride, padding, ceil_mode=rng.random() < 0.6, **kwargs)


def test_output_shape_matches_torchs_real_output_with_and_without_ceil_mode():
    rng = random.Random(3)
    ceil_differs = 0
    for _ in range(150):
        pool = _random_pool(rng)
        size = (rng.randint(4, 12), rng.randint(4, 12))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ShapeWarning)
            try:
                predicted = pool.output_shape((2, *size))
            except ShapeError:
                with pytest.raises(RuntimeError):  # torch agrees that the window does not fit
                    pool(torch.zeros(1, 2, *size))
                continue
        assert predicted == tuple(pool(torch.zeros(1, 2, *size)).shape[1:]), (pool, size)
        if pool.ceil_mode:
            pool.ceil_mode = False
            ceil_differs += pool(torch.zeros(1, 2, *size)).shape[2:] != predicted[1:]
    assert ceil_differs > 10


def test_ceil_mode_keeps_the_partial_window():
    x = torch.arange(25.0).view(1, 1, 5, 5)
    assert MaxPool2d(2, ceil_mode=True)(x).view(3, 3)[2].tolist() == [21, 23, 24]
    assert MaxPool2d(2, ceil_mode=True).output_shape((1, 5, 5)) == (1, 3, 3)
    with pytest.warns(ShapeWarning):
        assert MaxPool2d(2).output_shape((1, 5, 5)) == (1, 2, 2)


@pytest.mark.parametrize("cls", [MaxPool2d, AvgPool2d, SumPool2d])
def test_padding_over_half_the_window_is_refused(cls):
    with pytest.raises(ValueError, match="at most half the pool size"):
        cls(3, padding=2)
    cls(4, padding=2)  # exactly half is allowed, as in torch


def test_window_larger_than_input_is_a_shape_error():
    with pytest.raises(ShapeError, match="larger than the padded input"):
        MaxPool2d(5).output_shape((3, 4, 4))
    with pytest.raises(ShapeError, match=r"\(C, H, W\)"):
        AvgPool2d().output_shape((4, 4))


def test_global_pools():
    x = torch.randn(2, 5, 3, 4)
    torch.testing.assert_close(GlobalAvgPool2d()(x), x.mean(dim=(2, 3)))
    torch.testing.assert_close(GlobalMaxPool2d()(x), x.amax(dim=(2, 3)))
    assert GlobalAvgPool2d(keepdims=True)(x).shape == (2, 5, 1, 1)
    assert GlobalMaxPool2d(keepdims=True)(x).shape == (2, 5, 1, 1)
    assert GlobalAvgPool2d()(x[0]).shape == (5,)
    assert GlobalAvgPool2d().output_shape((5, 3, 4)) == (5,)
    assert GlobalMaxPool2d(keepdims=True).output_shape((5, 3, 4)) == (5, 1, 1)
    with pytest.raises(ShapeError):
        GlobalAvgPool2d().output_shape((5,))
