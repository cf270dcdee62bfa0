"""Segmentation models (issue 14): convolutionize's equalities, FCN, U-Net, the stacked hourglass, their specs,
summaries and animations."""

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from convkit.cli.main import main
from convkit.inspect import summary
from convkit.models._registry import ModelArgumentError
from convkit.models.reference import ModelCfg, build_from_spec, resolve_model
from convkit.models.weights import CheckpointError, check_meta, save_tensors
from convkit.tasks.segmentation.convolutionize import (
    Convolutionized,
    class_map,
    convolutionize,
    save_class_map,
)
from convkit.tasks.segmentation.models import (
    SEGMENTERS,
    bilinear_kernel,
    build_segmenter,
    fcn,
    hourglass,
    unet,
)

DEEP_HEAD = "input: 1x20x20\nlayers: [conv3-8, maxpool, conv3-16, maxpool, FC-64, dropout, bn, FC-32, FC-7]\n"


def _eval(name, **kwargs):
    torch.manual_seed(0)
    return resolve_model(name, **kwargs).eval()


# --- convolutionize -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["lenet5", "fastcnn", "resnet20", "nin_cifar", "deep.yaml"])
def test_convolutionized_equals_the_classifier_at_its_training_size(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "deep.yaml").write_text(DEEP_HEAD)
    model = _eval(name)
    with torch.no_grad():  # a trained-looking BatchNorm1d: its statistics must carry over
        for m in model.modules():
            if isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    net = convolutionize(model).eval()
    x = torch.randn(3, *net.input_shape)
    with torch.no_grad():
        out, logits = net(x), model(x)
    assert out.shape == (3, logits.shape[1], 1, 1) and net.num_classes == logits.shape[1]
    assert torch.allclose(out[..., 0, 0], logits, atol=1e-5, rtol=0)
    assert not any(isinstance(m, nn.Linear) for m in net.modules())


def test_convolutionized_alexnet_deep_head_on_a_small_input():
    model = _eval("alexnet", num_classes=5)
    net = convolutionize(model, (3, 67, 67)).eval()  # AlexNet's 6x6 adaptive pool over a 1x1 map: folded
    assert [type(m).__name__ for m in net.head] == ["Dropout", "Conv2d", "ReLU", "Dropout", "Conv2d", "ReLU",
                                                     "Conv2d"]
    x = torch.randn(2, 3, 67, 67)
    with torch.no_grad():
        assert torch.allclose(net(x)[..., 0, 0], model(x), atol=1e-5, rtol=0)
        assert net(torch.randn(1, 3, 67 + 64, 67 + 32)).shape == (1, 5, 3, 2)  # stride 32
    assert net.stride == 32


def test_lenet5_without_padding_equals_the_classifier_on_every_crop():
    model = _eval("lenet5")
    net = convolutionize(model).eval()
    assert (net.stride, net.receptive_field, net.margin) == (4, (32, 32), 0)
    x = torch.randn(1, 1, 48, 44)
    with torch.no_grad():
        y = net(x)
        assert y.shape == (1, 10, (48 - 32) // 4 + 1, (44 - 32) // 4 + 1)
        crops = torch.cat([x[..., i * 4:i * 4 + 32, j * 4:j * 4 + 32] for i in range(5) for j in range(4)])
        expected = model(crops).reshape(5, 4, 10).permute(2, 0, 1)
    assert torch.allclose(y[0], expected, atol=1e-5, rtol=0)


def test_padded_fastcnn_equals_the_crop_only_where_the_padding_is_reproduced():
    model = _eval("fastcnn")
    net = convolutionize(model).eval()
    # margin by hand: sum of padding x input stride over fastcnn's 3x3 convs (stride 1, 2, 2, 4, 4 before each)
    assert (net.stride, net.receptive_field, net.margin) == (4, (28, 28), 1 * 1 + 1 * 2 + 1 * 2 + 1 * 4 + 1 * 4)
    s, r, m = 4, 28, 13
    at = 4 * s  # the crop's place in the big image: on the stride grid, at least M from the border
    side = at + r + m + 3
    crop = torch.randn(1, 1, r, r)
    zero_band = crop.clone()
    zero_band[..., :m, :] = zero_band[..., -m:, :] = zero_band[..., :, :m] = zero_band[..., :, -m:] = 0

    def place(content, background):
        big = background.clone()
        big[..., at:at + r, at:at + r] = content
        return big

    zeros = torch.zeros(1, 1, side, side)
    with torch.no_grad():
        def gap(content, background):  # |convolutionized at the crop's position - classifier on the crop|
            return (net(place(content, background))[0, :, at // s, at // s] - model(content)[0]).abs().max().item()

        # zero within M of the crop's border on both sides (and an untrained net: zeros give zero features)
        assert gap(zero_band, zeros) < 1e-5
        # zero outside only: the features at the classifier's padded positions see the crop's own pixels
        assert gap(crop, zeros) > 1e-3
        # a random image: the classifier's padding replaces real neighbours
        assert gap(crop, torch.randn(1, 1, side, side)) > 1e-3
        # a trained-like net (BN shifts): zero input no longer gives zero features, so the zero band is not enough
        for bn in (mod for mod in model.modules() if isinstance(mod, nn.BatchNorm2d)):
            bn.bias.uniform_(0.1, 0.5)
        assert gap(zero_band, zeros) > 1e-3


def test_padded_output_away_from_the_borders_does_not_depend_on_the_image_beyond_its_window():
    net = convolutionize(_eval("fastcnn")).eval()
    s, r, m = net.stride, 28, net.margin
    x = torch.randn(1, 1, 84, 84)
    changed = x.clone()
    i = j = 5  # window rows i*s - m .. i*s + r + m = 7 .. 68 of 84: inside the image
    changed[..., : i * s - m, :] = torch.randn_like(changed[..., : i * s - m, :])
    changed[..., i * s + r + m:, :] = 7.0
    with torch.no_grad():
        a, b = net(x), net(changed)
        assert torch.allclose(a[..., i, j], b[..., i, j], atol=1e-5)
        assert not torch.allclose(a[..., i - 1, j], b[..., i - 1, j], atol=1e-3)  # its window reaches row 3
        inside = x.clone()
        inside[..., i * s - m, :] += 1.0  # the window's first row
        assert not torch.allclose(net(inside)[..., i, j], a[..., i, j], atol=1e-4)


def test_convolutionize_upsample_view_spec_and_refusals(tmp_path):
    net = convolutionize("fastcnn")
    assert isinstance(net, Convolutionized) and net.model_cfg.task == "segment"
    spec = net.model_cfg.spec
    assert spec["kind"] == "segmenter" and spec["segmenter"] == "convolutionized"
    assert spec["classifier"]["name"] == "fastcnn"
    x = torch.randn(2, 1, 45, 37)
    assert net.eval()(x).shape == (2, 10, 5, 3)
    assert net(x, upsample=True).shape == (2, 10, 45, 37)
    net.upsample = True
    assert net(x).shape == (2, 10, 45, 37)
    bare = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Conv2d(4, 2, 1))
    bare.model_cfg = ModelCfg("bare", input_shape=(1, 8, 8))
    with pytest.raises(ModelArgumentError, match="bare: no flatten before its head"):
        convolutionize(bare)
    gru = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.Linear(144, 8), nn.Softmax(1))
    gru.model_cfg = ModelCfg("soft", input_shape=(1, 14, 14))
    with pytest.raises(ModelArgumentError, match="soft: its head has a Softmax"):
        convolutionize(gru)
    with pytest.raises(ModelArgumentError, match="input_shape"):
        convolutionize(nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.Linear(4, 2)))


def test_class_map_and_its_picture(tmp_path):
    from convkit.tasks.detection.scenes import make_scenes

    scenes = make_scenes(1, canvas=64, objects=2, scale=(1.0, 1.2))
    net = convolutionize("fastcnn")
    ids, probs = class_map(net, scenes.images[0])
    assert ids.shape == (10, 10) and probs.shape == (10, 10, 10)
    assert torch.allclose(probs.sum(0), torch.ones(10, 10)) and torch.equal(ids, probs.argmax(0))
    path = save_class_map(scenes.images[0], ids, scenes.classes, tmp_path / "map.png", title="fastcnn",
                          stride=net.stride, receptive_field=net.receptive_field)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000
    with pytest.raises(ModelArgumentError, match="at least 28x28"):
        class_map(net, torch.zeros(1, 20, 64, dtype=torch.uint8))


# --- FCN, U-Net, hourglass ------------------------------------------------------------------------------------

def test_transposed_conv_initialised_to_bilinear_matches_interpolation_in_the_interior():
    net = fcn("fastcnn", num_classes=2, variant="8s")
    up = net.up[1]  # stage2 (stride 4) -> stage1 (stride 2): x2
    assert isinstance(up, nn.ConvTranspose2d) and up.stride == (2, 2) and net.factors == [1, 2, 2]
    ramp = (torch.arange(8.0)[None, :] * 0.5 + torch.arange(6.0)[:, None] * 2.0).expand(1, 2, 6, 8).clone()
    const = torch.full((1, 2, 6, 8), 3.0)
    for x in (ramp, const):
        with torch.no_grad():
            a = up(x)
        b = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        assert a.shape == b.shape == (1, 2, 12, 16)
        assert torch.allclose(a[..., 2:-2, 2:-2], b[..., 2:-2, 2:-2], atol=1e-5)
    # x4 (fcn32s on fastcnn) and the kernel's values by hand: (1 - |i - 1.5| / 2) outer product
    taps = torch.tensor([0.25, 0.75, 0.75, 0.25])
    assert torch.allclose(bilinear_kernel(1, 2)[0, 0], taps[:, None] * taps[None, :])
    up4 = fcn("fastcnn", num_classes=1, variant="32s").up[0]
    x = torch.randn(1, 1, 5, 5)
    with torch.no_grad():
        assert torch.allclose(up4(x)[..., 4:-4, 4:-4],
                              F.interpolate(x, scale_factor=4, mode="bilinear")[..., 4:-4, 4:-4], atol=1e-5)


def test_fcn_variants_stages_and_sizes():
    net = fcn("resnet18", num_classes=3, variant="8s", in_channels=1)
    assert net.stages == ["layer2", "layer3", "layer4"] and net.strides == [8, 16, 32]
    assert net.factors == [2, 2, 8]
    with torch.no_grad():
        assert net.eval()(torch.zeros(1, 1, 37, 45)).shape == (1, 3, 37, 45)
    for kind, count in (("fcn32s", 1), ("fcn16s", 2), ("fcn8s", 3)):
        seg = build_segmenter(kind, "fastcnn", num_classes=4)
        assert len(seg.score) == count and seg.eval()(torch.zeros(2, 1, 33, 41)).shape == (2, 4, 33, 41)
        # the skips' scores start at zero: every variant starts as FCN-32s's prediction
        assert all(not s.weight.detach().any() and not s.bias.detach().any() for s in seg.score[1:])
    with pytest.raises(ModelArgumentError, match="expected '32s', '16s' or '8s'"):
        fcn("fastcnn", variant="4s")
    with pytest.raises(ModelArgumentError, match="stage1, stage2, stage3"):
        fcn("fastcnn", variant="16s", returned_stages=["stage9", "stage3"])


def test_unet_odd_sizes_and_parameter_count_by_hand():
    net = unet(2, in_channels=1, depth=1, width=4)
    enc0 = (1 * 4 * 9 + 2 * 4) + (4 * 4 * 9 + 2 * 4)  # conv (no bias: BN) + BN, twice
    enc1 = (4 * 8 * 9 + 2 * 8) + (8 * 8 * 9 + 2 * 8)
    up1 = 8 * 4 * 2 * 2 + 4  # ConvTranspose2d(8, 4, 2, stride 2) with bias
    dec1 = (8 * 4 * 9 + 2 * 4) + (4 * 4 * 9 + 2 * 4)  # the concat: 4 + 4 channels in
    head = 4 * 2 + 2
    assert sum(p.numel() for p in net.parameters()) == enc0 + enc1 + up1 + dec1 + head == 1682
    deep = unet(3, depth=3, width=4).eval()
    for h, w in ((17, 23), (8, 8), (1, 9), (33, 30)):
        assert deep(torch.randn(1, 1, h, w)).shape == (1, 3, h, w)
    with pytest.raises(ModelArgumentError, match="depth=0: expected an integer >= 1"):
        unet(2, depth=0)


def test_hourglass_intermediate_supervision():
    net = hourglass(3, in_channels=1, stacks=3, depth=1, width=4)
    out = net.train()(torch.randn(2, 1, 11, 14))
    assert isinstance(out, list) and [o.shape for o in out] == [(2, 3, 11, 14)] * 3
    sum(F.cross_entropy(o, torch.zeros(2, 11, 14, dtype=torch.long)) for o in out).backward()
    assert all(p.weight.grad is not None and p.weight.grad.abs().sum() > 0 for p in net.predict)  # every stack's loss
    final = net.eval()(torch.randn(2, 1, 11, 14))
    assert isinstance(final, torch.Tensor) and final.shape == (2, 3, 11, 14)


def test_build_segmenter_choices_and_errors():
    assert set(SEGMENTERS) == {"unet", "fcn8s", "fcn16s", "fcn32s", "hourglass", "convolutionized"}
    with pytest.raises(ModelArgumentError, match=r"unknown segmenter 'unet3'.*unet \(U-Net"):
        build_segmenter("unet3")
    with pytest.raises(ModelArgumentError, match="unet: unknown option 'stacks'; unet takes depth, width"):
        build_segmenter("unet", stacks=2)
    with pytest.raises(ModelArgumentError, match="unet builds its own encoder: drop the backbone"):
        build_segmenter("unet", "resnet18")
    with pytest.raises(ModelArgumentError, match="3-channel images, the data has 1"):
        build_segmenter("fcn8s", resolve_model("resnet20"))
    with pytest.raises(ModelArgumentError, match="num_classes"):
        build_segmenter("hourglass", num_classes=0)


@pytest.mark.parametrize("kind", sorted(SEGMENTERS))
def test_spec_rebuilds_every_segmenter_and_a_checkpoint_loads(kind, tmp_path):
    small = {"unet": {"depth": 2, "width": 4}, "hourglass": {"stacks": 2, "depth": 1, "width": 4}}.get(kind, {})
    net = build_segmenter(kind, num_classes=10, image_size=(40, 40), **small).eval()
    spec = json.loads(json.dumps(net.model_cfg.spec))
    assert spec["kind"] == "segmenter" and spec["segmenter"] == kind and check_meta({"model": spec}, "x")
    file = save_tensors(tmp_path / "best.safetensors", {k: v.contiguous() for k, v in net.state_dict().items()},
                        {"model": spec, "input_shape": [1, 40, 40], "task": "segment"})
    again = resolve_model(file)
    assert again.model_cfg.spec == spec and type(again) is type(net)
    x = torch.randn(1, 1, 40, 40)
    with torch.no_grad():
        assert torch.equal(again(x), net(x))


def test_segmenter_spec_checks_name_the_field():
    spec = build_segmenter("fcn32s", num_classes=3).model_cfg.spec
    with pytest.raises(CheckpointError, match="metadata field model.depth: .*no such key; a segmenter spec has"):
        check_meta({"model": {**spec, "depth": 3}}, "w.safetensors")
    with pytest.raises(CheckpointError, match="model.backbone.kind"):
        check_meta({"model": {**spec, "backbone": {"kind": "weird"}}}, "w.safetensors")
    with pytest.raises(CheckpointError, match="the checkpoint's segmenter spec"):
        build_from_spec({**spec, "segmenter": "unet9"})


# --- summary and animate --------------------------------------------------------------------------------------

def test_summary_counts_transposed_convolutions_and_takes_the_hourglass():
    net = unet(2, depth=1, width=4)
    rows = {r.name: r for r in summary(net, (1, 16, 16)).rows}
    up = rows["up1"]
    assert up.type == "ConvTranspose2d" and up.input_shape == (8, 8, 8) and up.output_shape == (4, 16, 16)
    assert up.params == 8 * 4 * 2 * 2 + 4
    assert up.macs == 8 * 8 * (2 * 2 * 8 * 4)  # in_h * in_w * k * k * Cin * Cout (direct form, per input position)
    hg = hourglass(3, stacks=2, depth=2, width=8)
    result = summary(hg, (1, 20, 20))
    assert result.mode == "training" and result.totals["parameters"] == sum(p.numel() for p in hg.parameters())
    assert summary(hg.eval(), (1, 20, 20)).rows[-1].output_shape == (3, 20, 20)


def test_animate_a_segmenters_transposed_layer(tmp_path, capsys):
    net = build_segmenter("unet", num_classes=2, image_size=(24, 24), depth=2, width=4)
    file = save_tensors(tmp_path / "best.safetensors", dict(net.state_dict()),
                        {"model": net.model_cfg.spec, "input_shape": [1, 24, 24], "task": "segment"})
    code = main(["animate", "--model", str(file), "--layer", "up2", "--out", str(tmp_path / "up.gif"),
                 "--max-outputs", "2", "--json"])
    result = json.loads(capsys.readouterr().out)
    assert code == 0 and result["transposed"] is True and result["input_size"] == [6, 6]
    assert result["output_size"] == [12, 12] and result["kernel_size"] == [2, 2] and result["stride"] == [2, 2]
