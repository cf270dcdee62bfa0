"""Predicted saved activations agree with what autograd really saves on CPU.

The truth: a real forward pass on CPU in training mode under ``saved_tensors_hooks``, summing the
bytes of the distinct storages (by ``untyped_storage().data_ptr()``) of every tensor autograd saves,
leaving out parameters, buffers and the input, as convkit's prediction does.
"""

import math
import os
import warnings

import pytest
import torch
import torchvision
from torch import nn

from convkit.inspect import summary
from convkit.inspect.trace import trace_model
from convkit.layers.shapes import ShapeError, ShapeWarning
from convkit.models import create_meta_model, list_models, model_info

BATCH = 2
# Deeper twins of models checked anyway (the same blocks, more of them) take most of the time on two
# shared cores; CONVKIT_FULL_ZOO=1 checks them too (all agree exactly at the time of writing).
DEEPER_TWINS = {"resnet101": "resnet50", "resnet152": "resnet50", "resnet32": "resnet20", "resnet44": "resnet20",
                "resnet56": "resnet20", "resnet110": "resnet20"}


def measure_saved_bytes(model: nn.Module, x: torch.Tensor) -> int:
    """Bytes autograd really saves for backward in one training-mode forward on CPU."""
    exclude = {t.untyped_storage().data_ptr() for t in [*model.parameters(), *model.buffers(), x]}
    seen: dict[int, int] = {}

    def pack(t):
        storage = t.untyped_storage()
        pointer = storage.data_ptr()
        if pointer and pointer not in exclude:
            seen.setdefault(pointer, storage.nbytes())
        return t

    model.train()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(x)
    return sum(seen.values())


def check(meta_model: nn.Module, channels: int) -> tuple[int, int]:
    """Predicted and real saved bytes at the smallest input the model takes (32, 64 or 96 pixels)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ShapeWarning)  # small inputs make some pools drop a border pixel
        for side in (32, 64, 96):
            size = (channels, side, side)
            try:
                predicted = summary(meta_model, size, batch_size=BATCH).memory["training"]["activations"]
                break
            except ShapeError:
                continue
    # Memory without initialisation: the values do not change which tensors autograd saves.
    model = meta_model.to_empty(device="cpu")
    denormals = torch.set_flush_denormal(True)  # uninitialised memory may hold slow denormal floats
    try:
        real = measure_saved_bytes(model, torch.randn(BATCH, *size))
    finally:
        torch.set_flush_denormal(False) if denormals else None
    return predicted, real


@pytest.mark.parametrize("name", list_models())
def test_saved_activations_of_the_zoo_match_autograd(name):
    if name in DEEPER_TWINS and not os.environ.get("CONVKIT_FULL_ZOO"):
        pytest.skip(f"the blocks of {DEEPER_TWINS[name]}, deeper; CONVKIT_FULL_ZOO=1 checks it")
    predicted, real = check(create_meta_model(name), model_info(name).input_size[0])
    assert real > 0
    assert abs(predicted - real) / real < 0.05, (predicted, real)


@pytest.mark.parametrize("name", ["resnet18", "squeezenet1_0", "efficientnet_b0", "shufflenet_v2_x0_5"])
def test_saved_activations_of_torchvision_models_match_autograd(name):
    # in-place ReLU and SiLU, concatenations, squeeze-excitation broadcasts, channel shuffles
    with torch.device("meta"):
        model = getattr(torchvision.models, name)()
    predicted, real = check(model, 3)
    assert abs(predicted - real) / real < 0.05, (predicted, real)


def test_what_each_layer_saves():
    # conv saves its input, ReLU its output, max pool its input and int64 indices, linear its input
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                          nn.Linear(8 * 4 * 4, 10))
    rows = summary(model, (3, 8, 8)).rows
    saved = {r.type: r.saved_bytes for r in rows}
    assert saved["Conv2d"] == 0  # its input is the image, counted as the input
    assert saved["ReLU"] == 4 * 8 * 8 * 8  # its output; also what max pool reads, so counted once
    assert saved["MaxPool2d"] == 8 * 8 * 4 * 4  # the int64 argmax indices
    assert saved["Linear"] == 4 * 8 * 4 * 4  # the pool's output, through flatten's view
    assert sum(saved.values()) == summary(model, (3, 8, 8)).totals["saved_activation_bytes"]


def test_in_place_relu():
    plain = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 8, 3))
    in_place = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(inplace=True), nn.Conv2d(8, 8, 3))
    a, b = summary(plain, (3, 16, 16), batch_size=2), summary(in_place, (3, 16, 16), batch_size=2)
    map_bytes = 8 * 14 * 14 * 4
    # Backward keeps two maps either way: BN's input, and ReLU's output (which the second conv saves
    # too); in place, ReLU's output is BN's output overwritten. BN adds its mean and 1/std per channel.
    assert a.totals["saved_activation_bytes"] == b.totals["saved_activation_bytes"] == 2 * map_bytes + 2 * 8 * 4 // 2
    for result, model in ((a, plain), (b, in_place)):
        assert result.memory["training"]["activations"] == measure_saved_bytes(model, torch.randn(2, 3, 16, 16))


def test_in_place_relu_lowers_the_inference_peak():
    def net(inplace):
        return nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(inplace=inplace), nn.Conv2d(8, 1, 1))

    image, wide, narrow = 3 * 16 * 16 * 4, 8 * 14 * 14 * 4, 14 * 14 * 4
    # without gradients: the ReLU reads one map and writes another, unless in place; then the 1x1
    # conv reads it and writes a narrow one
    assert summary(net(False), (3, 16, 16)).totals["peak_activation_bytes"] == image + 2 * wide
    assert summary(net(True), (3, 16, 16)).totals["peak_activation_bytes"] == image + wide + narrow


def test_inference_peak_holds_the_largest_consecutive_pair():
    result = summary("vgg16")
    # conv1_2 reads a 64x224x224 map and writes another, with the input held by the caller
    biggest_pair = 2 * 64 * 224 * 224 * 4 + 3 * 224 * 224 * 4
    assert result.totals["peak_activation_bytes"] == biggest_pair
    assert result.memory["inference"]["activations"] == biggest_pair


def test_peak_counts_the_residual_branch():
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(4, 4, 3, padding=1)

        def forward(self, x):
            y = self.conv(x)
            return torch.relu(y) + x

    trace = trace_model(nn.Sequential(nn.Conv2d(1, 4, 1), Block()), (1, 8, 8), batch=1)
    per_map = 4 * 8 * 8 * 4
    # while relu(y) is made: input, x (held for the sum), y and relu(y)
    assert trace.peak_live_bytes == 8 * 8 * 4 + 3 * per_map
    assert math.isclose(trace.input_bytes, 8 * 8 * 4)
