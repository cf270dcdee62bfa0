"""Layers that do not fit their input are reported before anything runs, with the formula."""

import warnings

import pytest
import torch
from torch import nn

from convkit.inspect import MetaUnsupportedError, summary
from convkit.layers import Conv2d, Dense, MaxPool2d
from convkit.layers.shapes import ShapeError, ShapeWarning


def test_kernel_larger_than_padded_input_is_an_error():
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.MaxPool2d(2), nn.Conv2d(4, 8, 5))
    with pytest.raises(ShapeError) as info:
        summary(model, (1, 8, 8))  # 8 -> 6 -> 3, and a 5x5 kernel does not fit 3x3
    err = info.value
    assert err.layer == "2" and err.input_shape == (4, 3, 3)
    assert "kernel 5 is larger than the padded input 3" in str(err)
    assert "out = (3 + 0 - 5) / 1 + 1 < 1" in str(err)


def test_model_is_restored_after_an_error():
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Conv2d(4, 8, 9)).eval()
    with pytest.raises(ShapeError):
        summary(model, (1, 8, 8))
    assert all(t.device.type == "cpu" for t in [*model.parameters(), *model.buffers()])
    assert not model.training and int(model[1].num_batches_tracked) == 0
    assert model(torch.zeros(1, 1, 12, 12)).shape == (1, 8, 2, 2)  # no hook left behind


def test_uneven_stride_warns_with_the_dropped_pixels():
    # 7x7 input, 3x3 kernel, stride 3: (7 - 3)/3 + 1 = 2.33 -> 2 windows, the last column and row unused
    model = nn.Sequential(nn.Conv2d(1, 2, 3, stride=3))
    with pytest.warns(ShapeWarning) as record:
        result = summary(model, (1, 7, 7))
    messages = [str(w.message) for w in record]
    assert len(messages) == 2 and "along height" in messages[0] and "along width" in messages[1]
    assert "does not divide evenly" in messages[0] and "the last 1 input pixel(s)" in messages[0]
    assert "floor((7 + 0 - 3) / 3 + 1) = 2" in messages[0]
    assert result.rows[0].output_shape == (2, 2, 2)
    assert result.warnings == messages


def test_no_warning_when_only_padding_or_skipped_pixels_are_dropped():
    with warnings.catch_warnings():
        warnings.simplefilter("error", ShapeWarning)
        summary(nn.Sequential(nn.Conv2d(3, 8, 7, stride=2, padding=3)), (3, 224, 224))  # ResNet stem
        summary(nn.Sequential(nn.Conv2d(3, 8, 1, stride=2)), (3, 55, 55))  # 1x1/2 shortcut
        summary(nn.Sequential(nn.MaxPool2d(3, 2, ceil_mode=True)), (3, 112, 112))  # GoogLeNet pools


def test_convkit_layers_and_same_padding():
    conv = Conv2d(8, 3, stride=2, padding="same", in_channels=3)
    row = summary(nn.Sequential(conv), (3, 224, 224)).rows[0]
    assert row.output_shape == (8, 112, 112) and row.padding == (0, 1, 0, 1)
    model = nn.Sequential(Conv2d(4, 3, in_channels=1), MaxPool2d(2), Dense(10, in_features=4 * 3 * 3))
    assert summary(model, (1, 8, 8)).rows[-1].output_shape == (10,)
    with pytest.raises(ShapeError, match="Dense expects 36 input features"):
        summary(model, (1, 10, 10))


def test_wrong_channels_and_features_name_the_layer():
    with pytest.raises(ShapeError, match="layer 0 .*expects 3 input channels, got 1"):
        summary(nn.Sequential(nn.Conv2d(3, 4, 3)), (1, 8, 8))
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.Linear(100, 10))
    with pytest.raises(ShapeError) as info:
        summary(model, (1, 8, 8))
    assert info.value.layer == "2" and info.value.input_shape == (144,)
    assert "in_features=100" in str(info.value) and "got 144" in str(info.value)


def test_errors_raised_by_torch_are_wrapped_with_the_module_path():
    class Reshape(nn.Module):
        def forward(self, x):
            return x.view(x.shape[0], 7, -1)

    with pytest.raises(ShapeError) as info:
        summary(nn.Sequential(nn.Conv2d(1, 4, 3), Reshape()), (1, 8, 8))
    assert info.value.layer == "1" and info.value.input_shape == (4, 6, 6)
    assert "RuntimeError" in str(info.value)


def test_data_dependent_forward_needs_a_real_device():
    class Positive(nn.Module):
        def forward(self, x):
            return x[x > 0]

    model = nn.Sequential(nn.Conv2d(1, 4, 3), Positive())
    with pytest.raises(MetaUnsupportedError, match="device='cpu'"):
        summary(model, (1, 8, 8))
    result = summary(model, (1, 8, 8), device="cpu")
    assert result.rows[0].output_shape == (4, 6, 6)


def test_real_device_gives_the_same_figures_and_restores_buffers():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2))
    model.eval()
    meta, cpu = summary(model, (3, 16, 16)), summary(model, (3, 16, 16), device="cpu")
    assert meta.rows == cpu.rows
    assert meta.totals["saved_activation_bytes"] == cpu.totals["saved_activation_bytes"]
    assert int(model[1].num_batches_tracked) == 0 and torch.equal(model[1].running_mean, torch.zeros(8))
    assert not model.training
