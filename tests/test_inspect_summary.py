"""convkit.inspect.summary: hand-worked numbers, exact parameter counts, output formats, the model left alone."""

import csv
import io
import json
import warnings

import pytest
import torch
import torchvision
from torch import nn

from convkit.inspect import CONVENTIONS, Summary, dense_equivalent, summary
from convkit.layers.shapes import ShapeWarning


def test_alexnet_first_layer_worked_by_hand():
    # Krizhevsky et al.: 96 filters of 11x11x3, stride 4; with padding 2 a 224x224 input gives 55x55.
    # W2 = (224 - 11 + 2*2) / 4 + 1 = 55 (floor); params = (11*11*3 + 1)*96; MACs = 55*55*96 * 11*11*3.
    conv = nn.Conv2d(3, 96, 11, stride=4, padding=2)
    row = summary(nn.Sequential(conv), (3, 224, 224)).rows[0]
    assert row.output_shape == (96, 55, 55)
    assert row.params == 34_944 == (11 * 11 * 3 + 1) * 96
    assert row.macs == 105_415_200 == 55 * 55 * 96 * 11 * 11 * 3
    assert row.activations == 96 * 55 * 55 and row.activation_bytes == 4 * 96 * 55 * 55
    assert (row.kernel, row.stride, row.padding) == ((11, 11), (4, 4), (2, 2, 2, 2))
    assert row.geometry_text() == "11x11/4/2"
    assert row.receptive_field.size == (11, 11) and row.receptive_field.jump == (4, 4)
    assert row.receptive_field.start == (3, 3)  # centre of the first window: -2 + 5


def test_zoo_alexnet_lrn_has_the_papers_first_layer():
    row = summary("alexnet_lrn").rows[0]
    assert row.output_shape == (96, 55, 55) and row.params == 34_944


def test_lenet5_parameters_and_output_sizes():
    result = summary("lenet5")
    assert result.totals["parameters"] == 61_706
    weighted = [(r.type, r.output_shape, r.params) for r in result.rows if r.type in ("Conv2d", "AvgPool2d", "Linear")]
    assert weighted == [
        ("Conv2d", (6, 28, 28), (5 * 5 * 1 + 1) * 6),
        ("AvgPool2d", (6, 14, 14), 0),
        ("Conv2d", (16, 10, 10), (5 * 5 * 6 + 1) * 16),
        ("AvgPool2d", (16, 5, 5), 0),
        ("Conv2d", (120, 1, 1), (5 * 5 * 16 + 1) * 120),
        ("Linear", (84,), 120 * 84 + 84),
        ("Linear", (10,), 84 * 10 + 10),
    ]
    assert result.totals["macs"] == 28 * 28 * 6 * 25 + 10 * 10 * 16 * 150 + 120 * 400 + 120 * 84 + 84 * 10
    assert result.totals["flops"] == 2 * result.totals["macs"]


@pytest.mark.parametrize("name, expected", [("resnet18", 11_689_512), ("resnet50", 25_557_032),
                                            ("vgg16", 138_357_544)])
def test_parameter_counts_equal_torchvision(name, expected):
    with torch.device("meta"):
        reference = getattr(torchvision.models, name)()
    assert sum(p.numel() for p in reference.parameters()) == expected
    assert summary(reference).totals["parameters"] == expected
    result = summary(name)  # the zoo's own model, built on meta from its name
    assert result.totals["parameters"] == expected == result.totals["parameters_in_layers"]
    assert result.totals["parameter_bytes"] == 4 * expected


def test_dense_equivalent_of_the_lectures_example():
    # Dense(1000) on a 640x480 RGB image: 921,600,000 weights + 1,000 biases
    assert dense_equivalent((3, 480, 640), (1000,)) == 921_601_000
    assert dense_equivalent((3, 480, 640), (1000,), bias=False) == 640 * 480 * 3 * 1000
    row = summary(nn.Sequential(nn.Conv2d(3, 8, 3, padding=1)), (3, 16, 16)).rows[0]
    assert row.dense_equivalent == (3 * 16 * 16) * (8 * 16 * 16) + 8 * 16 * 16
    assert row.params == 3 * 9 * 8 + 8  # what weight sharing needs instead


def test_memory_arithmetic():
    result = summary("resnet18", (3, 64, 64), batch_size=8, optimizer="adam")
    t, train, infer = result.totals, result.memory["training"], result.memory["inference"]
    assert train["weights"] == train["gradients"] == t["parameter_bytes"] == 4 * 11_689_512
    assert train["optimizer_state"] == 2 * t["parameter_bytes"]  # Adam: two moments
    assert train["activations"] == 8 * t["saved_activation_bytes"]
    assert train["input"] == 8 * 3 * 64 * 64 * 4
    assert train["total"] == sum(v for k, v in train.items() if k != "total")
    assert infer["total"] == t["parameter_bytes"] + t["buffer_bytes"] + infer["activations"]
    assert summary("resnet18", (3, 64, 64), optimizer="sgd").memory["training"]["optimizer_state"] == 0
    momentum = summary("resnet18", (3, 64, 64), optimizer="momentum").memory["training"]["optimizer_state"]
    assert momentum == t["parameter_bytes"]


def test_frozen_parameters_have_no_gradient_or_state():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 6 * 6, 10))
    model[0].requires_grad_(False)
    result = summary(model, (3, 8, 8), optimizer="adam")
    frozen = 3 * 9 * 8 + 8
    assert result.totals["frozen_parameters"] == frozen == result.rows[0].frozen_params
    assert result.memory["training"]["gradients"] == 4 * (result.totals["parameters"] - frozen)
    assert result.memory["training"]["optimizer_state"] == 2 * result.memory["training"]["gradients"]


def test_dtype_changes_bytes_not_counts():
    half = summary("lenet5", dtype="float16")
    full = summary("lenet5")
    assert half.dtype == "float16" and full.dtype == "float32"
    assert half.totals["parameters"] == full.totals["parameters"]
    assert half.totals["parameter_bytes"] * 2 == full.totals["parameter_bytes"]
    assert half.totals["forward_activation_bytes"] * 2 == full.totals["forward_activation_bytes"]


def test_shared_module_counts_parameters_once_and_macs_per_call():
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(4, 4, 3, padding=1)

        def forward(self, x):
            return self.conv(torch.relu(self.conv(x)))

    result = summary(Twice(), (4, 8, 8))
    convs = [r for r in result.rows if r.type == "Conv2d"]
    assert len(convs) == 2 and convs[1].repeat
    assert convs[0].params == 4 * 4 * 9 + 4 and convs[1].params == 0
    assert result.totals["parameters"] == 4 * 4 * 9 + 4
    assert result.totals["macs"] == 2 * 8 * 8 * 4 * 4 * 9


def test_functional_operations_are_traced():
    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(3, 4, 1)
            self.b = nn.Conv2d(3, 4, 3, padding=1)
            self.fc = nn.Linear(8, 2)

        def forward(self, x):
            y = torch.cat([torch.relu(self.a(x)), nn.functional.relu(self.b(x))], dim=1)
            y = y + y.mean(dim=(2, 3), keepdim=True)
            return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(y, 1), 1))

    result = summary(Branchy(), (3, 16, 16))
    assert result.totals["macs"] == 16 * 16 * (3 * 4 + 27 * 4) + 8 * 2
    assert result["fc"].output_shape == (2,)


def test_model_is_left_as_it_was():
    model = torchvision.models.resnet18().eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    pointers = [p.data_ptr() for p in model.parameters()]
    hooks = (len(nn.modules.module._global_forward_hooks), len(nn.modules.module._global_forward_pre_hooks))
    summary(model, (3, 32, 32))
    assert not model.training and all(not m.training for m in model.modules())
    assert [p.data_ptr() for p in model.parameters()] == pointers
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # BN stats untouched
    assert all(p.device.type == "cpu" for p in model.parameters())
    assert (len(nn.modules.module._global_forward_hooks), len(nn.modules.module._global_forward_pre_hooks)) == hooks


def test_default_input_size_and_model_arguments():
    assert summary("lenet5").input_size == (1, 32, 32)
    result = summary("resnet18", num_classes=10, in_channels=1)
    assert result.input_size == (1, 224, 224) and result.rows[-1].output_shape == (10,)
    model = torchvision.models.resnet18(num_classes=5)
    assert summary(model).input_size == (3, 224, 224)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="optimizer"):
        summary("lenet5", optimizer="adamax")
    with pytest.raises(ValueError, match="batch_size"):
        summary("lenet5", batch_size=0)
    with pytest.raises(ValueError, match="dtype"):
        summary("lenet5", dtype="int8")
    with pytest.raises(KeyError, match="resnet18"):
        summary("resnet19")


def test_to_dict_round_trips_through_json():
    result = summary("resnet18", (3, 32, 32), batch_size=4, optimizer="momentum")
    data = result.to_dict()
    assert json.loads(json.dumps(data)) == data
    assert set(data) >= {"model", "input_size", "layers", "totals", "memory", "conventions"}
    assert data["conventions"] == CONVENTIONS
    again = Summary.from_dict(json.loads(json.dumps(data)))
    assert again.to_dict() == data
    assert again.rows == result.rows and str(again) == str(result)


def test_to_csv_has_one_line_per_layer(tmp_path):
    result = summary("lenet5")
    path = tmp_path / "lenet5.csv"
    text = result.to_csv(path)
    assert path.read_text() == text
    rows = list(csv.DictReader(io.StringIO(text)))
    assert len(rows) == len(result.rows)
    for line, row in zip(rows, result.rows):
        assert line["name"] == row.name and line["type"] == row.type
        assert int(line["params"]) == row.params and int(line["macs"]) == row.macs
        assert line["output_shape"] == "x".join(map(str, row.output_shape))
    assert rows[0]["kernel"] == "5x5" and rows[0]["rf_size"] == "5" and rows[0]["padding"] == "0,0,0,0"


def test_str_shows_the_table_and_totals():
    text = str(summary("vgg16", batch_size=64, optimizer="adam"))
    for word in ("Layer", "Type", "Kernel/S/P", "Output", "Params", "MACs", "RF size/jump/start"):
        assert word in text.splitlines()[2]
    assert "138,357,544" in text and "FLOPs = 2 x MACs" in text
    assert "Training memory" in text and "Inference memory" in text and "adam" in text
    assert "features.28" in text and "3x3/1/1" in text


def test_zoo_summaries_need_no_warning_for_their_intended_geometry():
    # ResNet's 7x7/2 stem on 224 leaves one padding pixel uncovered: that is no dropped image content
    with warnings.catch_warnings():
        warnings.simplefilter("error", ShapeWarning)
        for name in ("resnet18", "vgg16", "alexnet", "googlenet_bn", "lenet5"):
            summary(name)


@pytest.mark.parametrize("name", ["lenet5", "vgg11", "resnet18"])
def test_training_needs_at_least_what_inference_needs(name):
    # Training holds everything inference does plus gradients and saved tensors; a prediction that says
    # otherwise has left out the temporaries live during the forward pass.
    result = summary(name, batch_size=64, optimizer="sgd")
    train, infer = result.memory["training"], result.memory["inference"]
    assert train["total"] >= infer["total"]
    assert train["workspace"] == 64 * max(row.activation_bytes for row in result.rows)


# -- the forward activation total: the input + one map per conv, pool and fc layer, each tensor once --------

# CS231n's VGG-16 slide, layer by layer (values per image at 3x224x224):
#   INPUT 224*224*3 = 150,528
#   conv1_1, conv1_2  2 x 224*224*64 = 6,422,528   pool1 112*112*64 = 802,816
#   conv2_1, conv2_2  2 x 112*112*128 = 3,211,264  pool2 56*56*128 = 401,408
#   conv3_1..3        3 x 56*56*256 = 2,408,448    pool3 28*28*256 = 200,704
#   conv4_1..3        3 x 28*28*512 = 1,204,224    pool4 14*14*512 = 100,352
#   conv5_1..3        3 x 14*14*512 = 301,056      pool5 7*7*512 = 25,088
#   FC 4096 + 4096 + 1000 = 9,192
# 150,528 + 6,422,528 + 802,816 + 3,211,264 + 401,408 + 2,408,448 + 200,704 + 1,204,224 + 100,352 + 301,056
#   + 25,088 + 9,192 = 15,237,608 values (the slide's rounded figures sum to about 15.2M; its "TOTAL memory: 24M"
#   is an arithmetic slip).
VGG16_FORWARD_VALUES = 15_237_608


def test_vgg16_forward_activations_are_the_slides_per_layer_sum():
    by_hand = (150_528 + 6_422_528 + 802_816 + 3_211_264 + 401_408 + 2_408_448 + 200_704 + 1_204_224 + 100_352
               + 301_056 + 25_088 + 9_192)
    assert by_hand == VGG16_FORWARD_VALUES
    assert by_hand == (3 * 224 * 224 + 2 * 64 * 224 * 224 + 64 * 112 * 112 + 2 * 128 * 112 * 112 + 128 * 56 * 56
                       + 3 * 256 * 56 * 56 + 256 * 28 * 28 + 3 * 512 * 28 * 28 + 512 * 14 * 14
                       + 3 * 512 * 14 * 14 + 512 * 7 * 7 + 4096 + 4096 + 1000)
    result = summary("vgg16")  # ReLUs out of place: each ReLU's output is the conv's map passed on
    assert result.totals["forward_activations"] == VGG16_FORWARD_VALUES
    assert result.totals["forward_activation_bytes"] == 4 * VGG16_FORWARD_VALUES
    # torchvision's VGG-16: ReLU(inplace=True) writes into the conv's own tensor, found by storage
    with torch.device("meta"):
        reference = torchvision.models.vgg16()
    assert summary(reference).totals["forward_activations"] == VGG16_FORWARD_VALUES
    # the per-row Act. still shows each layer's own output; only the total counts a map once
    relu = result["features.1"]
    assert relu.activations == 64 * 224 * 224 and relu.new_activations == 0 and relu.new_activation_bytes == 0
    assert result["features.0"].new_activations == 64 * 224 * 224
    assert result["avgpool"].new_activations == 0  # 7x7 -> 7x7: the identity at 224x224
    assert [r.new_activations for r in result.rows if r.type == "Dropout"] == [0, 0]
    text = str(result)
    assert "(12.2 MiB)" in text and "15,237,608 values per image" in text and "58.1 MiB" in text


def test_lenet5_and_alexnet_forward_activations_by_hand():
    # LeNet-5 (32x32): input 1,024 + C1 6*28*28 + S2 6*14*14 + C3 16*10*10 + S4 16*5*5 + C5 120 + F6 84 + out 10
    # (its tanh layers map each value to one value of the same shape: not a new map)
    assert summary("lenet5").totals["forward_activations"] == 1_024 + 4_704 + 1_176 + 1_600 + 400 + 120 + 84 + 10
    assert 1_024 + 4_704 + 1_176 + 1_600 + 400 + 120 + 84 + 10 == 9_118
    # AlexNet (convkit's, 224x224): input 3*224*224 + conv1 64*55*55 + pool1 64*27*27 + conv2 192*27*27
    # + pool2 192*13*13 + conv3 384*13*13 + conv4 256*13*13 + conv5 256*13*13 + pool3 256*6*6 + FC 4096+4096+1000
    by_hand = (150_528 + 193_600 + 46_656 + 139_968 + 32_448 + 64_896 + 43_264 + 43_264 + 9_216
               + 4_096 + 4_096 + 1_000)
    assert by_hand == 733_032
    assert summary("alexnet").totals["forward_activations"] == by_hand


def test_forward_total_counts_a_tensor_once_through_in_place_ops_views_and_dropout():
    class InPlace(nn.Module):  # a layer that updates its input in place
        def forward(self, x):
            return x.mul_(2)

    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),      # 4*8*8 = 256, new
        nn.BatchNorm2d(4),                  # 256, new (a new map, as the layer computes it)
        nn.ReLU(inplace=True),              # same tensor
        InPlace(),                          # same tensor
        nn.Identity(),                      # same tensor
        nn.AdaptiveAvgPool2d(4),            # 4*4*4 = 64, new: 8x8 -> 4x4 is no identity
        nn.Flatten(),                       # a view
        nn.Dropout(0.5),                    # the identity at inference
        nn.Linear(64, 5),                   # 5, new
    )
    result = summary(model, (3, 8, 8))
    assert [r.new_activations for r in result.rows] == [256, 256, 0, 0, 0, 64, 0, 0, 5]
    assert [r.activations for r in result.rows] == [256, 256, 256, 256, 256, 64, 64, 64, 5]
    assert result.totals["forward_activations"] == 3 * 8 * 8 + 256 + 256 + 64 + 5
    assert result.totals["forward_activation_bytes"] == 4 * (3 * 8 * 8 + 256 + 256 + 64 + 5)
    assert "each tensor once" in result.to_dict()["conventions"]["activations"]
