"""convkit.explain's core: sources, filters, feature maps, attribution, activation maximisation, the CLI verbs.

Each test checks what is computed or drawn against an independent truth: kernels planted in a layer, the
forward pass sliced by hand, gradients from torch.autograd, a model built to look at one quadrant only.
"""

import argparse
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

import convkit
from convkit.cli import explain_cmds
from convkit.data.errors import DataFormatError
from convkit.explain.attribution import (
    METHODS,
    attribute,
    explain_image,
    gradcam_layer,
    overlay,
    save_attribution,
)
from convkit.explain.features import feature_grid, feature_maps, save_feature_maps
from convkit.explain.filters import filter_grid, filter_layout, save_filters
from convkit.explain.maximize import maximize, objective_value, save_maximized
from convkit.explain.source import (
    LayerError,
    conv_layers,
    find_layer,
    load_explainable,
    load_image,
    resolve_layer,
)
from convkit.models import UnknownModelError

# --- fixtures -----------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory):
    """One short training run of fastcnn on the shipped Fashion-MNIST subset, shared by the tests."""
    result = convkit.train(epochs=1, limit=256, test_limit=128, batch_size=64,
                           runs_dir=str(tmp_path_factory.mktemp("runs")), quiet=True)  # str: TrainConfig writes it as YAML
    return result.run_dir


@pytest.fixture(scope="session")
def shoe(run_dir, tmp_path_factory):
    """A test image of the run's data, written as an RGB PNG (the model reads 1x28x28)."""
    from convkit.data import load_dataset

    image = load_dataset("default", "test", progress=False).images[0]
    path = tmp_path_factory.mktemp("img") / "item.png"
    Image.fromarray(image[0].numpy()).convert("RGB").save(path)
    return path


@pytest.fixture(scope="session")
def lenet():
    torch.manual_seed(0)
    return convkit.create_model("lenet5").eval()


class Quadrant(nn.Module):
    """Looks only at the top-left quadrant of a 3x32x32 input: the input is masked, and the head averages
    only the top-left quadrant of the last map. Positive conv weights and inputs keep every unit active, so
    class 0's score grows with every pixel of the quadrant and ignores the rest."""

    def __init__(self):
        super().__init__()
        mask = torch.zeros(1, 1, 32, 32)
        mask[..., :16, :16] = 1
        self.register_buffer("mask", mask)
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.relu1 = nn.ReLU(inplace=True)  # Captum's hooks need it out of place: attribute() swaps it
        self.pool = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.relu2 = nn.ReLU()
        self.fc = nn.Linear(8, 2)
        with torch.no_grad():
            for conv in (self.conv1, self.conv2):
                conv.weight.abs_()
            self.fc.weight[0].abs_()
            self.fc.weight[1] = -self.fc.weight[0]

    def forward(self, x):
        f = self.relu2(self.conv2(self.pool(self.relu1(self.conv1(x * self.mask)))))  # (N, 8, 16, 16)
        return self.fc(f[..., :8, :8].mean((2, 3)))


@pytest.fixture
def quadrant():
    torch.manual_seed(1)
    return Quadrant().eval()


def in_top_left(maps: torch.Tensor) -> bool:
    """Every map's maximum lies in the top-left quadrant."""
    h, w = maps.shape[-2:]
    rows, cols = np.unravel_index(maps.flatten(1).argmax(1).numpy(), (h, w))
    return bool(np.all(rows < h // 2) and np.all(cols < w // 2))


def outside_quadrant(maps: torch.Tensor, margin: int = 0) -> torch.Tensor:
    """The values more than `margin` pixels outside the top-left quadrant."""
    h, w = maps.shape[-2:]
    keep = torch.ones(h, w, dtype=torch.bool)
    keep[: h // 2 + margin, : w // 2 + margin] = False
    return maps[:, keep]


# --- source -------------------------------------------------------------------------------------------------


def test_zoo_source_has_its_default_input_and_untrained_statistics():
    ex = load_explainable("lenet5")
    assert ex.input_shape == (1, 32, 32) and ex.classes is None and ex.run_dir is None and ex.name == "lenet5"
    assert torch.equal(ex.mean, torch.tensor([0.5])) and torch.equal(ex.std, torch.tensor([0.5]))
    assert not ex.model.training
    ex = load_explainable("resnet18", num_classes=10, input_shape=(3, 64, 64))
    assert ex.input_shape == (3, 64, 64) and ex.num_classes == 10 and ex.class_name(3) == "class 3"
    assert load_explainable("fastcnn", in_channels=3).input_shape == (3, 28, 28)
    x = torch.tensor([0, 255], dtype=torch.uint8).view(1, 1, 1, 2)
    assert torch.allclose(ex.normalize(x.expand(1, 3, 1, 2)), torch.tensor([-1.0, 1.0]).expand(1, 3, 1, 2))
    assert torch.equal(ex.to_uint8(ex.normalize(x.expand(1, 3, 1, 2))), x.expand(1, 3, 1, 2))


def test_model_file_and_module_sources():
    from conftest import EXAMPLES

    ex = load_explainable(EXAMPLES / "lenet5.yaml")
    assert ex.name == "lenet5" and len(ex.input_shape) == 3 and conv_layers(ex.model)
    module = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.LazyLinear(3))
    ex = load_explainable(module, input_shape=(1, 8, 8))
    assert ex.input_shape == (1, 8, 8) and ex.num_classes == 3
    with pytest.raises(ValueError, match="input_shape"):
        load_explainable(nn.Conv2d(1, 2, 3))


def test_bad_sources_are_named_with_suggestions(tmp_path):
    with pytest.raises(UnknownModelError, match="resnet18"):
        load_explainable("resnt18")
    with pytest.raises(TypeError, match="source"):
        load_explainable(42)
    with pytest.raises(FileNotFoundError, match="nope"):
        load_explainable(str(tmp_path / "nope"))
    bogus = tmp_path / "weights.safetensors"
    bogus.write_bytes(b"\x80\x04not a checkpoint")
    with pytest.raises(ValueError, match="weights.safetensors"):  # CheckpointError, never unpickled
        load_explainable(bogus)


def test_trained_run_source_matches_its_checkpoint(run_dir):
    ex = load_explainable(run_dir)
    ckpt = convkit.load_checkpoint(run_dir)
    assert ex.run_dir == run_dir and ex.classes == ckpt.classes and ex.input_shape == (1, 28, 28)
    images = torch.randint(0, 256, (4, 1, 28, 28), dtype=torch.uint8)
    assert torch.equal(ex.normalize(images), ckpt.normalize(images))  # the same bits as predict
    assert ex.class_index(ex.classes[3]) == 3 and ex.class_index("3") == 3
    with pytest.raises(ValueError, match="Did you mean"):
        ex.class_index(ex.classes[1][:-1])
    with pytest.raises(ValueError, match="out of range"):
        ex.class_index(10)
    with pytest.raises(ValueError, match="num_classes"):
        load_explainable(run_dir, num_classes=3)


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "I;16", "RGB"])
def test_load_image_turns_any_mode_into_the_models_input(tmp_path, mode):
    rgb = np.zeros((20, 30, 3), np.uint8)
    rgb[:, :15] = (255, 255, 255)  # left half white
    img = Image.fromarray(rgb)
    if mode == "I;16":
        img = Image.fromarray(np.asarray(img.convert("L")).astype(np.uint16) * 257)  # 16-bit gray
        assert img.mode == "I;16"
    elif mode != "RGB":
        img = img.convert(mode)
    img.save(tmp_path / "x.png")
    for shape in [(1, 10, 12), (3, 20, 30)]:
        x = load_image(tmp_path / "x.png", shape)
        assert x.dtype == torch.uint8 and tuple(x.shape) == shape
        assert x[:, :, 1].min() > 200 and x[:, :, -2].max() < 50  # white left, black right
    (tmp_path / "bad.png").write_bytes(b"not an image")
    with pytest.raises(DataFormatError, match="bad.png"):
        load_image(tmp_path / "bad.png", (1, 8, 8))


def test_layers_are_listed_and_bad_names_suggest_close_ones(lenet):
    assert conv_layers(lenet) == ["features.c1", "features.c3", "features.c5"]
    assert find_layer(lenet) is lenet.features.c1
    assert resolve_layer(lenet, None, default="last") == ("features.c5", lenet.features.c5)
    assert find_layer(lenet, "features.s2") is lenet.features.s2  # any module, not only convolutions
    with pytest.raises(LayerError) as err:
        find_layer(lenet, "features.c4")
    message = str(err.value)
    assert "features.c4" in message and "Did you mean" in message
    assert "features.c1, features.c3, features.c5" in message
    with pytest.raises(LayerError, match="no Conv2d"):
        find_layer(nn.Sequential(nn.Linear(2, 2)))


# --- filters ------------------------------------------------------------------------------------------------


def test_single_channel_filters_grid_and_planted_kernel(lenet):
    kernel = torch.arange(25, dtype=torch.float32).view(5, 5) - 7  # a ramp, min -7, max 17
    model = convkit.create_model("lenet5").eval()
    with torch.no_grad():
        model.features.c1.weight[4, 0] = kernel
    assert filter_layout(model)["mode"] == "gray"
    grid = filter_grid(model)  # 6 filters of 5x5: zoom 4 (20 px tiles), 2 rows x 3 columns, border 2
    assert grid.shape == (2 * 20 + 3 * 2, 3 * 20 + 4 * 2, 3) and grid.dtype == np.float32
    assert grid.min() >= 0 and grid.max() <= 1
    top, left = 2 + 1 * (20 + 2), 2 + 1 * (20 + 2)  # filter 4: row 1, column 1
    tile = grid[top:top + 20, left:left + 20]
    expected = ((kernel - kernel.min()) / (kernel.max() - kernel.min())).numpy()
    assert np.allclose(tile[..., 0], np.kron(expected, np.ones((4, 4))))  # nearest upscaling, per-filter scale
    assert np.array_equal(tile[..., 0], tile[..., 2])  # gray
    assert np.all(grid[:2] == 1) and np.all(grid[:, 22:24] == 1)  # white borders


def test_deeper_layer_has_a_tile_per_filter_and_input_channel():
    model = convkit.create_model("lenet5").eval()
    with torch.no_grad():
        model.features.c3.weight[3] = 0
        model.features.c3.weight[3, 4] = torch.eye(5) * 2  # filter 3 reads only input channel 4, diagonally
    info = filter_layout(model, "features.c3")
    assert (info["mode"], info["rows"], info["columns"]) == ("per-channel", 16, 6)
    grid = filter_grid(model, "features.c3")
    assert grid.shape == (16 * 20 + 17 * 2, 6 * 20 + 7 * 2, 3)
    top = 2 + 3 * 22
    row = [grid[top:top + 20, 2 + j * 22: 2 + j * 22 + 20, 0] for j in range(6)]
    assert np.allclose(row[4], np.kron(np.eye(5), np.ones((4, 4))))  # scaled over the filter: 0..2 -> 0..1
    assert all(np.all(tile == 0) for j, tile in enumerate(row) if j != 4)  # the zeros are the filter's minimum
    limited = filter_grid(model, "features.c3", max_filters=4, max_channels=2)
    assert limited.shape == (4 * 20 + 5 * 2, 2 * 20 + 3 * 2, 3)


def test_rgb_first_layer_tiles_are_colour_and_global_scale_shows_strength():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 2, 3))
    with torch.no_grad():
        model[0].weight.zero_()
        model[0].weight[0, 0] = 1.0  # filter 0: red only
        model[0].weight[1, 2] = 0.01  # filter 1: faint blue
        model[0].weight[2, 1, 1, 1] = -1  # filter 2: a dark green dot on nothing
    assert filter_layout(model)["mode"] == "rgb" and filter_layout(model, "2")["mode"] == "per-channel"
    grid = filter_grid(model, min_tile=3, border=1)  # 2x2 grid of 3x3 tiles
    assert grid.shape == (2 * 3 + 3, 2 * 3 + 3, 3)
    red = grid[1:4, 1:4]
    assert np.all(red[..., 0] == 1) and np.all(red[..., 1:] == 0)
    blue = grid[1:4, 5:8]
    assert np.all(blue[..., 2] == 1) and np.all(blue[..., :2] == 0)  # per filter: faint is full contrast
    overall = filter_grid(model, min_tile=3, border=1, normalize="global")  # one scale: -1..1
    assert np.allclose(overall[1:4, 5:8, 2], 0.505) and np.allclose(overall[1:4, 1:4, 0], 1)
    assert np.allclose(overall[6, 2], [0.5, 0, 0.5]) and np.allclose(overall[6, 6], 0.5)  # filter 2: dark green
    with pytest.raises(ValueError, match="normalize"):
        filter_grid(model, normalize="tile")


def test_save_filters_draws_at_least_pixel_for_pixel(tmp_path):
    model = convkit.create_model("resnet18", num_classes=10)
    path = save_filters(model, tmp_path / "f.png", max_filters=10)
    grid = filter_grid(model, max_filters=10)
    with Image.open(path) as img:
        assert img.width >= grid.shape[1] and img.height >= grid.shape[0]
    assert filter_layout(model, max_filters=10)["filters"] == 10


# --- features -----------------------------------------------------------------------------------------------


def test_hooked_feature_maps_equal_the_forward_sliced_by_hand(lenet):
    x = torch.randn(2, 1, 32, 32)
    maps = feature_maps(lenet, x, ["features.c3", "features.c1", "features.act3"])
    assert list(maps) == ["features.c3", "features.c1", "features.act3"]
    with torch.no_grad():
        assert torch.equal(maps["features.c1"], lenet.features[:1](x))
        assert torch.equal(maps["features.c3"], lenet.features[:4](x))
        assert torch.equal(maps["features.act3"], lenet.features[:5](x))
    assert all(not m._forward_hooks for m in lenet.modules())


def test_hooks_are_removed_when_the_forward_fails_and_modes_are_kept(lenet):
    with pytest.raises(RuntimeError):
        feature_maps(lenet, torch.randn(1, 1, 8, 8), ["features.c1"])  # too small for C3
    assert all(not m._forward_hooks for m in lenet.modules())
    with pytest.raises(LayerError):
        feature_maps(lenet, torch.randn(1, 1, 32, 32), ["features.c9"])
    model = convkit.create_model("fastcnn").train()
    before = model.features.stage1[0].bn.running_mean.clone()
    feature_maps(model, torch.randn(2, 1, 28, 28), ["features.stage1"])
    assert model.training and torch.equal(model.features.stage1[0].bn.running_mean, before)


def test_feature_grid_shares_one_scale_and_draws_one_panel_per_layer(lenet, tmp_path):
    maps = torch.zeros(5, 4, 4)
    maps[1] = 2.0
    maps[3, 0, 0] = 4.0
    grid = feature_grid(maps, border=1)  # 5 maps: 3 columns, 2 rows
    assert grid.shape == (2 * 4 + 3, 3 * 4 + 4)
    assert np.all(grid[1:5, 6:10] == 0.5) and grid[6, 1] == 1.0 and np.isnan(grid[0, 0])
    assert np.all(np.isnan(grid[6:10, 11:15]))  # the sixth cell is empty
    assert feature_grid(maps, max_channels=2).shape == (4 + 2, 2 * 4 + 3)
    image = torch.randint(0, 256, (1, 32, 32), dtype=torch.uint8)
    path = save_feature_maps(lenet, image, ["features.c1", "features.c3"], tmp_path / "maps.png")
    with Image.open(path) as img:
        assert img.size == (300 * 3, 360)


# --- attribution --------------------------------------------------------------------------------------------


def test_saliency_is_the_gradient_computed_by_hand(lenet):
    x = torch.randn(2, 1, 32, 32, requires_grad=True)
    (grad,) = torch.autograd.grad(lenet(x)[:, 7].sum(), x)
    expected = grad.abs().amax(1)
    raw = attribute(lenet, x.detach(), "saliency", target=7, scale=False)
    assert torch.allclose(raw, expected, atol=1e-7)
    scaled = attribute(lenet, x.detach(), "saliency", target=7)
    assert torch.allclose(scaled, expected / expected.flatten(1).amax(1).view(-1, 1, 1), atol=1e-6)
    linear = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 5))
    raw = attribute(linear, torch.randn(1, 3, 4, 4), "saliency", target=2, scale=False)
    assert torch.allclose(raw[0], linear[1].weight[2].view(3, 4, 4).abs().amax(0))  # a linear model's weights


def test_guided_backprop_and_deconvnet_follow_their_rules():
    # x -> W1 -> ReLU -> W2: the gradient at the ReLU is W2[t]; plain backprop masks it by h > 0, guided
    # backprop also drops its negative part, deconvnet drops the negative part but not the mask.
    torch.manual_seed(3)
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3))
    x = torch.randn(1, 1, 2, 2)
    w1, w2 = model[1].weight.detach(), model[3].weight.detach()
    h = model[1](x.flatten(1)).detach()[0]
    guided = (w1.T @ (F.relu(w2[1]) * (h > 0))).abs().view(2, 2)
    deconv = (w1.T @ F.relu(w2[1])).abs().view(2, 2)
    assert torch.allclose(attribute(model, x, "guided-backprop", target=1, scale=False)[0], guided, atol=1e-6)
    assert torch.allclose(attribute(model, x, "deconvnet", target=1, scale=False)[0], deconv, atol=1e-6)


def test_gradcam_is_the_weighted_map_computed_by_hand(quadrant):
    x = torch.rand(2, 3, 32, 32)
    assert gradcam_layer(quadrant, x) == "conv2"
    acts = {}
    handle = quadrant.conv2.register_forward_hook(lambda m, i, out: acts.setdefault("a", out))
    logits = quadrant(x)
    handle.remove()
    (grads,) = torch.autograd.grad(logits[:, 0].sum(), acts["a"])
    cam = F.relu((grads.mean((2, 3), keepdim=True) * acts["a"]).sum(1, keepdim=True))
    expected = F.interpolate(cam, size=(32, 32), mode="bilinear", align_corners=False)[:, 0]
    assert torch.allclose(attribute(quadrant, x, "gradcam", target=0, scale=False), expected.detach(), atol=1e-6)


def test_a_model_that_looks_at_one_quadrant_is_explained_there(quadrant):
    x = torch.rand(2, 3, 32, 32)
    maps = {m: attribute(quadrant, x, m, target=0) for m in METHODS}
    for method, m in maps.items():
        assert m.shape == (2, 32, 32) and m.min() >= 0, method
        assert torch.allclose(m.flatten(1).amax(1), torch.ones(2)), method  # scaled to [0, 1]
        assert in_top_left(m), method
    for method in ("saliency", "guided-backprop", "deconvnet"):
        assert torch.all(outside_quadrant(maps[method]) == 0), method  # the mask's gradient is exactly zero
    assert torch.all(outside_quadrant(maps["occlusion"], margin=4) == 0)  # windows straddling the edge: 4 px
    # conv1, the pooling and conv2 each reach one unit past the quadrant: 5 px once upsampled
    assert torch.all(outside_quadrant(maps["gradcam"], margin=5) == 0)
    assert quadrant.relu1.inplace and not quadrant.training  # the in-place ReLU is given back


def test_attribution_defaults_and_errors(quadrant):
    x = torch.rand(1, 3, 32, 32)
    predicted = int(quadrant(x).argmax())
    assert torch.equal(attribute(quadrant, x, "saliency"), attribute(quadrant, x, "saliency", target=predicted))
    with pytest.raises(ValueError, match="method"):
        attribute(quadrant, x, "lrp")
    with pytest.raises(TypeError, match="window"):
        attribute(quadrant, x, "saliency", window=4)
    with pytest.raises(LayerError, match="conv1, conv2"):
        attribute(quadrant, x, "gradcam", layer="conv3")
    with pytest.raises(LayerError, match="spatial"):
        attribute(quadrant, x, "gradcam", layer="fc")
    coarse = attribute(quadrant, x, "occlusion", target=0, window=16, stride=16)  # four windows
    assert len(torch.unique(coarse)) <= 4 and in_top_left(coarse)


def test_every_method_runs_on_a_zoo_model():
    ex = load_explainable("resnet18", num_classes=10, input_shape=(3, 64, 64))
    image = torch.randint(0, 256, (1, 3, 64, 64), dtype=torch.uint8)
    assert gradcam_layer(ex.model, ex.normalize(image)) == "layer4"  # forward_features' output, 2x2 here
    for method in METHODS:
        options = {"window": 16, "stride": 16} if method == "occlusion" else {}
        maps = attribute(ex, image, method, **options)
        assert maps.shape == (1, 64, 64) and maps.min() >= 0 and maps.max() == 1, method
    lenet = load_explainable("lenet5")
    assert gradcam_layer(lenet.model, torch.zeros(1, 1, 32, 32)) == "features.c3"  # C5 is 1x1
    with pytest.warns(UserWarning, match="no nn.ReLU"):
        attribute(lenet, torch.zeros(1, 1, 32, 32, dtype=torch.uint8), "guided-backprop")


def test_overlay_blends_a_colormap_over_the_image():
    image = torch.full((1, 8, 8), 100, dtype=torch.uint8)
    heat = torch.zeros(4, 4)
    heat[:2, :2] = 1.0
    out = overlay(image, heat, alpha=0.0)
    assert out.shape == (8, 8, 3) and out.dtype == np.uint8 and np.all(out == 100)
    hot = overlay(image, heat, alpha=1.0)  # jet: 0 is dark blue, 1 dark red
    assert tuple(hot[0, 0]) == (128, 0, 0) and tuple(hot[7, 7]) == (0, 0, 128)
    half = overlay(torch.zeros(3, 4, 4, dtype=torch.uint8), torch.ones(4, 4), alpha=0.5)
    assert tuple(half[0, 0]) == (64, 0, 0)


def test_attribution_of_a_trained_run_names_the_class(run_dir, shoe, tmp_path):
    ex = load_explainable(run_dir)
    image = load_image(shoe, ex.input_shape)
    result = explain_image(ex, image, "gradcam")
    with torch.no_grad():
        probs = ex.model(ex.normalize(image[None])).softmax(1)[0]
    # fastcnn's head flattens its last map, so Grad-CAM moves to the last conv layer, where it is not empty
    assert result.predicted == int(probs.argmax()) == result.target and result.layer == "features.stage3.1.conv"
    assert result.target_name == ex.classes[result.target] and result.probability == pytest.approx(float(probs.max()))
    assert result.heatmap.shape == (28, 28) and result.heatmap[result.peak] == 1
    path = save_attribution(ex, image, "saliency", tmp_path / "a.png", target=ex.classes[0])
    with Image.open(path) as img:
        assert img.size == (900, 340)


# --- maximize -----------------------------------------------------------------------------------------------


def test_maximisation_excites_the_channel_far_more_than_gray(lenet):
    state = {k: v.clone() for k, v in lenet.state_dict().items()}
    goal = {"layer": "features.c3", "channel": 5}
    image = maximize(lenet, **goal, input_shape=(1, 32, 32), steps=25, lr=0.1)
    assert image.shape == (1, 32, 32) and image.min() >= 0 and image.max() <= 1
    gray = float(objective_value(lenet, torch.full((1, 32, 32), 0.5), **goal))
    noise = objective_value(lenet, torch.rand(32, 1, 32, 32), **goal)  # 32 random images
    reached = float(objective_value(lenet, image, **goal))
    assert reached > max(gray, float(noise.max())) + 10 * float(noise.std())  # far beyond any of them
    assert all(torch.equal(v, lenet.state_dict()[k]) for k, v in state.items()) and not lenet.training
    short = maximize(lenet, **goal, input_shape=(1, 32, 32), steps=5)
    assert torch.equal(short, maximize(lenet, **goal, input_shape=(1, 32, 32), steps=5))  # seeded
    assert not torch.equal(short, maximize(lenet, **goal, input_shape=(1, 32, 32), steps=5, seed=1))


def test_class_maximisation_and_the_blur_regulariser(lenet):
    common = {"input_shape": (1, 32, 32), "steps": 25, "lr": 0.1}
    image = maximize(lenet, target_class=2, **common)
    noise = objective_value(lenet, torch.rand(32, 1, 32, 32), target_class=2)
    assert float(objective_value(lenet, image, target_class=2)) > float(noise.max()) + 10 * float(noise.std())

    def roughness(x):  # total variation
        return float((x[:, 1:] - x[:, :-1]).abs().mean() + (x[:, :, 1:] - x[:, :, :-1]).abs().mean())

    sharp = maximize(lenet, layer="features.c1", channel=0, blur_every=0, jitter=0, **common)
    smooth = maximize(lenet, layer="features.c1", channel=0, blur_every=1, blur_sigma=1.0, jitter=0, **common)
    assert roughness(smooth) < 0.7 * roughness(sharp)
    with pytest.raises(ValueError, match="channel"):
        maximize(lenet, layer="features.c1", channel=6, **common)
    with pytest.raises(ValueError, match="either"):
        maximize(lenet, channel=1, target_class=1, **common)


def test_save_maximized_on_a_trained_run(run_dir, tmp_path):
    ex = load_explainable(run_dir)
    path = save_maximized(ex, tmp_path / "m.png", target_class=1, steps=10)
    with Image.open(path) as img:
        assert img.size == (400, 440)


# --- CLI ----------------------------------------------------------------------------------------------------


def cli(capsys, *argv):
    """Runs `convkit explain ...` through a parser built with explain_cmds.register, as cli.main does."""
    from convkit.cli.common import USER_ERRORS

    parser = argparse.ArgumentParser(prog="convkit")
    explain_cmds.register(parser.add_subparsers(dest="verb"), argparse.RawDescriptionHelpFormatter)
    args = parser.parse_args(["explain", *argv])
    try:
        code = args.run(args)
    except USER_ERRORS as err:  # what `convkit` prints as one error line
        code = 2
        print(f"convkit: error: {err}", file=__import__("sys").stderr)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("verb", ["filters", "features", "attribution", "maximize"])
def test_every_sub_verb_has_help_with_an_example(capsys, verb):
    with pytest.raises(SystemExit):
        cli(capsys, verb, "--help")
    out = capsys.readouterr().out
    assert "examples:" in out and f"convkit explain {verb}" in out.split("examples:")[1]


def test_cli_filters_and_bad_layer(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, _ = cli(capsys, "filters", "lenet5", "--layer", "features.c3", "--max-filters", "4", "--json")
    data = json.loads(out)
    assert code == 0 and data["path"] == "lenet5-filters-features.c3.png" and (tmp_path / data["path"]).is_file()
    assert (data["filters"], data["channels"], data["weight_shape"]) == (4, 6, [16, 6, 5, 5])
    code, _, err = cli(capsys, "filters", "lenet5", "--layer", "c3")
    assert code == 2 and "features.c3" in err and "features.c1, features.c3, features.c5" in err


def test_cli_on_a_trained_run(capsys, run_dir, shoe):
    code, out, _ = cli(capsys, "attribution", str(run_dir), str(shoe), "--method", "occlusion", "--json")
    data = json.loads(out)
    assert code == 0 and data["path"] == str(run_dir / "explain" / "attribution-occlusion-item.png")
    with Image.open(data["path"]) as img:
        assert img.size == (900, 340)
    ex = load_explainable(run_dir)
    assert data["class_name"] == ex.classes[data["predicted"]] and 0 <= data["peak"][0] < 28

    code, out, _ = cli(capsys, "features", str(run_dir), str(shoe), "--layer", "features.stage1", "features.pool1",
                        "--json")
    data = json.loads(out)
    assert code == 0 and data["layers"]["features.stage1"]["shape"] == [16, 28, 28]
    assert data["layers"]["features.pool1"]["shape"] == [16, 14, 14]
    with Image.open(data["path"]) as img:
        assert img.size == (900, 360)

    code, out, err = cli(capsys, "maximize", str(run_dir), "--layer", "features.stage1", "--channel", "2",
                         "--steps", "15")
    assert code == 0 and out.strip().endswith("maximize-features.stage1-c2.png") and "gray" in err
    code, _, err = cli(capsys, "attribution", str(run_dir), str(shoe), "--class", "Sneakers")
    assert code == 2 and "Sneaker" in err  # close names suggested


def test_cli_maximize_class_on_a_zoo_model(capsys, tmp_path):
    code, out, _ = cli(capsys, "maximize", "lenet5", "--class", "3", "--steps", "20", "--lr", "0.1",
                       "--out", str(tmp_path / "c3.png"), "--json")
    data = json.loads(out)
    assert code == 0 and data["class"] == 3 and data["objective"] > data["objective_gray"]
    assert data["size"] == [1, 32, 32] and (tmp_path / "c3.png").is_file()


def test_gradcam_layer_is_the_last_map_only_under_a_global_pooling_head():
    from convkit.explain.attribution import gradcam_layer

    resnet = convkit.create_model("resnet18", num_classes=10).eval()
    assert gradcam_layer(resnet, torch.randn(1, 3, 64, 64)) == "layer4"  # global average pool: Grad-CAM = CAM
    fast = convkit.create_model("fastcnn").eval()  # flatten + linear: the last conv layer instead
    assert gradcam_layer(fast, torch.randn(1, 1, 28, 28)) == conv_layers(fast)[-1]


def test_a_layer_that_returns_no_tensor_is_a_layer_error_naming_it():
    from convkit.explain.features import feature_maps
    from convkit.explain.source import LayerError

    class Pair(torch.nn.Module):
        def forward(self, x):
            return {"maps": x}

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.pair = torch.nn.Conv2d(1, 2, 3), Pair()

        def forward(self, x):
            return self.pair(self.conv(x))["maps"]

    with pytest.raises(LayerError, match="'pair' returns dict"):
        feature_maps(Net(), torch.zeros(1, 1, 8, 8), ["pair"])
    assert feature_maps(Net(), torch.zeros(1, 1, 8, 8), ["conv"])["conv"].shape == (1, 2, 6, 6)
