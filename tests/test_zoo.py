"""The model zoo: every registered model builds, runs and has the uniform interface; parameter counts equal
torchvision's or the papers' (computed here by hand, layer by layer); torchvision's weights load.

Big models are built on the meta device wherever only shapes matter, so the file stays fast on 2 CPU cores.
"""

import math

import pytest
import torch
import torchvision
from torch import nn

from convkit.models import count_parameters, create_model, list_models, model_info
from convkit.models.base import ClassifierNet

META = torch.device("meta")
ALL = list_models()


# ---------------------------------------------------------------- hand-counting helpers

def conv(cin, cout, k, groups=1, bias=True):
    """Parameters of a k x k convolution: (cin / groups) * k * k weights per filter, plus a bias each."""
    return cin // groups * k * k * cout + (cout if bias else 0)


def fc(n_in, n_out):
    return n_in * n_out + n_out


def bn(c):
    return 2 * c  # gamma and beta (running statistics are buffers, not parameters)


def meta_model(name, **kwargs):
    with META:
        return create_model(name, **kwargs)


def params(name, **kwargs):
    return count_parameters(meta_model(name, **kwargs))


# ---------------------------------------------------------------- every model

def test_zoo_lists_the_families():
    expected = {
        "lenet5", "alexnet", "alexnet_lrn", "zfnet", "vgg11", "vgg11_bn", "vgg11_lrn", "vgg13", "vgg13_bn",
        "vgg16_c", "vgg16_c_bn", "vgg16", "vgg16_bn", "vgg19", "vgg19_bn", "nin", "nin_cifar", "googlenet",
        "googlenet_bn", "resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "resnext50_32x4d",
        "wide_resnet50_2", "fastcnn", "resnet20", "resnet32", "resnet44", "resnet56", "resnet110",
    }
    assert expected <= set(ALL)
    for name in ALL:
        info = model_info(name)
        assert info.paper and info.description and len(info.input_size) == 3
        assert info.family in {"lenet", "alexnet", "zfnet", "vgg", "nin", "googlenet", "resnet", "small"}
        if info.torchvision:
            assert hasattr(torchvision.models, info.torchvision)


@pytest.mark.parametrize("name", ALL)
def test_meta_forward_and_interface(name):
    """Default build, forward at the default input size (meta: shapes only), head/feature split, new heads."""
    info = model_info(name)
    model = meta_model(name).eval()
    assert isinstance(model, ClassifierNet)
    x = torch.empty(2, *info.input_size, device=META)
    assert model(x).shape == (2, info.num_classes)
    features = model.forward_features(x)
    assert features.ndim == 4 and features.shape[:2] == (2, model.num_features)
    assert model.forward_head(features).shape == (2, info.num_classes) and model.num_classes == info.num_classes
    assert model.forward_head(features, pre_logits=True).shape[0] == 2
    assert isinstance(model.get_classifier(), (nn.Linear, nn.Conv2d))
    model.reset_classifier(7)
    assert model(x).shape == (2, 7) and model.num_classes == 7
    assert model.get_classifier().weight.device.type == "meta"

    gray = meta_model(name, in_channels=1, num_classes=5).eval()
    assert gray(torch.empty(1, 1, *info.input_size[1:], device=META)).shape == (1, 5)
    first = next(m for m in gray.modules() if isinstance(m, nn.Conv2d))
    assert first.in_channels == 1


# A real CPU forward, at a reduced resolution for the 224x224 models (they all pool adaptively before their
# FC layers): 32x32, or the smallest size that the large first kernels and strides of the AlexNets, ZFNet and
# NiN take; the small models run at their default size. Models whose class another model tested here shares
# (the other VGG columns, the deeper ResNets) run only on meta above: their weights alone take seconds to
# initialise on 2 CPU cores. vgg11 and alexnet run for real in the torchvision comparison below.
REDUCED = {"alexnet_lrn": 67, "zfnet": 64, "nin": 96}
META_ONLY = {"alexnet", "vgg11", "vgg11_bn", "vgg13", "vgg13_bn", "vgg16", "vgg16_bn", "vgg16_c", "vgg19",
             "vgg19_bn", "resnet101", "resnet152", "wide_resnet50_2"}


def _test_size(info):
    return REDUCED.get(info.name, 32 if info.input_size[1] >= 224 else info.input_size[1])


@pytest.mark.parametrize("name", [n for n in ALL if n not in META_ONLY])
def test_real_forward_head_of_features_equals_forward(name):
    info = model_info(name)
    model = create_model(name).eval()
    size = _test_size(info)
    x = torch.randn(2, info.input_size[0], size, size)
    with torch.no_grad():
        out = model(x)
        split = model.forward_head(model.forward_features(x))
    assert out.shape == (2, info.num_classes)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(split, out, rtol=0, atol=0)
    # the two samples differ: the network is not a constant (relative: fresh BN nets can output ~1e-12)
    assert (out[0] - out[1]).abs().max() > 1e-4 * out.abs().max()


# ---------------------------------------------------------------- torchvision parity

TORCHVISION = ["alexnet", "vgg11", "vgg11_bn", "vgg13", "vgg13_bn", "vgg16", "vgg16_bn", "vgg19", "vgg19_bn",
               "googlenet_bn", "resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "resnext50_32x4d",
               "wide_resnet50_2"]


def tv_model(name, **kwargs):
    tv_name = model_info(name).torchvision
    if tv_name == "googlenet":
        kwargs = {"aux_logits": False, "init_weights": False, **kwargs}
    return getattr(torchvision.models, tv_name)(**kwargs)


def test_torchvision_list_is_complete():
    assert sorted(TORCHVISION) == sorted(n for n in ALL if model_info(n).torchvision)


@pytest.mark.parametrize("name", TORCHVISION)
def test_params_and_state_dict_equal_torchvision(name):
    with META:
        ours, theirs = create_model(name), tv_model(name)
    assert count_parameters(ours) == count_parameters(theirs)
    ours_sd, theirs_sd = ours.state_dict(), theirs.state_dict()
    assert {k: v.shape for k, v in ours_sd.items()} == {k: v.shape for k, v in theirs_sd.items()}
    ours.load_state_dict(theirs_sd, strict=True)


def test_torchvision_published_counts():
    # The counts in torchvision's weight tables (the `num_params` of each Weights enum).
    published = {"alexnet": 61_100_840, "vgg11": 132_863_336, "vgg16": 138_357_544, "vgg19_bn": 143_678_248,
                 "googlenet_bn": 6_624_904, "resnet18": 11_689_512, "resnet50": 25_557_032,
                 "resnet152": 60_192_808, "resnext50_32x4d": 25_028_904, "wide_resnet50_2": 68_883_240}
    assert {n: params(n) for n in published} == published


def _randomise(model):
    # BN at its initial state is the identity in eval mode, and torchvision's GoogLeNet init (std 0.01) makes
    # the output independent of the input: He-initialised convs and random BN statistics make the check bite.
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)


@pytest.mark.parametrize("name, size", [("resnet18", 64), ("googlenet_bn", 64), ("vgg11", 32), ("alexnet", 64)])
def test_torchvision_weights_give_torchvision_outputs(name, size):
    theirs = tv_model(name).eval()
    _randomise(theirs)
    if count_parameters(theirs) < 20e6:
        ours = create_model(name)
        ours.load_state_dict(theirs.state_dict(), strict=True)
    else:  # skip initialising 60-130M weights only to overwrite them: take torchvision's tensors as they are
        ours = meta_model(name)
        ours.load_state_dict(theirs.state_dict(), strict=True, assign=True)
    ours.eval()
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        expected = theirs(x)
        torch.testing.assert_close(ours(x), expected)
        assert (expected[0] - expected[1]).abs().max() > 1e-4 * expected.abs().max()


def test_googlenet_bn_aux_heads_load_torchvision():
    with META:
        ours = create_model("googlenet_bn", aux_logits=True)
        theirs = torchvision.models.googlenet(aux_logits=True, init_weights=False)
    assert count_parameters(ours) == count_parameters(theirs)
    ours.load_state_dict(theirs.state_dict(), strict=True)


# ---------------------------------------------------------------- hand-computed counts

def test_lenet5_count_and_sizes():
    expected = (conv(1, 6, 5)          # C1: 6 maps, 5x5 on 1 channel: 150 + 6
                + conv(6, 16, 5)       # C3, fully connected to S2: 2,400 + 16
                + conv(16, 120, 5)     # C5: 48,000 + 120
                + fc(120, 84)          # F6
                + fc(84, 10))          # output
    assert expected == 156 + 2_416 + 48_120 + 10_164 + 850 == 61_706
    assert params("lenet5") == expected

    model = create_model("lenet5").eval()
    assert sum(isinstance(m, nn.Tanh) for m in model.modules()) == 4
    assert model.forward_features(torch.zeros(1, 1, 32, 32)).shape == (1, 120, 1, 1)
    mnist = create_model("lenet5", input_size=28)
    assert count_parameters(mnist) == 61_706
    assert mnist(torch.zeros(3, 1, 28, 28)).shape == (3, 10)
    assert mnist.features.c1(torch.zeros(1, 1, 28, 28)).shape == (1, 6, 28, 28)  # as C1 on a 32x32 input
    relu = create_model("lenet5", activation="relu")
    assert not any(isinstance(m, nn.Tanh) for m in relu.modules())
    with pytest.raises(ValueError, match="28"):
        create_model("lenet5", input_size=64)


def _spatial_sizes(model, names, size, channels=3):
    sizes = {}
    hooks = [model.get_submodule(n).register_forward_hook(
        lambda m, i, o, n=n: sizes.__setitem__(n, tuple(o.shape[1:]))) for n in names]
    model(torch.empty(1, channels, size, size, device=META))
    for h in hooks:
        h.remove()
    return [sizes[n] for n in names]


def test_alexnet_lrn_count_and_sizes():
    expected = (conv(3, 96, 11)                  # conv1: 34,848 + 96
                + conv(96, 256, 5, groups=2)     # conv2, two towers: each filter sees 48 maps
                + conv(256, 384, 3)              # conv3 connects across the towers
                + conv(384, 384, 3, groups=2)    # conv4
                + conv(384, 256, 3, groups=2)    # conv5
                + fc(256 * 6 * 6, 4096)          # fc6
                + fc(4096, 4096)                 # fc7
                + fc(4096, 1000))                # fc8
    assert expected == 34_944 + 307_456 + 885_120 + 663_936 + 442_624 + 37_752_832 + 16_781_312 + 4_097_000
    assert expected == 60_965_224
    assert params("alexnet_lrn") == expected
    model = meta_model("alexnet_lrn")
    names = ["features.conv1", "features.pool1", "features.conv2", "features.pool2", "features.conv3",
             "features.conv4", "features.conv5", "features.pool5"]
    assert [s[1] for s in _spatial_sizes(model, names, 227)] == [55, 27, 27, 13, 13, 13, 13, 6]
    assert [model.features.get_submodule(f"conv{i}").groups for i in range(1, 6)] == [1, 2, 1, 2, 2]


def test_alexnet_lrn_is_the_papers_formula():
    # b = a / (k + alpha * sum over n=5 neighbouring channels of a^2)^beta, k=2, alpha=1e-4, beta=0.75
    lrn = create_model("alexnet_lrn").features.norm1
    a = torch.randn(1, 8, 2, 2) * 30
    sq = a.pow(2)
    expected = torch.stack([
        a[:, c] / (2 + 1e-4 * sq[:, max(0, c - 2): c + 3].sum(1)) ** 0.75 for c in range(8)], 1)
    torch.testing.assert_close(lrn(a), expected)


def test_zfnet_count_and_paper_sizes():
    expected = (conv(3, 96, 7) + conv(96, 256, 5) + conv(256, 384, 3) + conv(384, 384, 3) + conv(384, 256, 3)
                + fc(256 * 6 * 6, 4096) + fc(4096, 4096) + fc(4096, 1000))
    assert expected == 14_208 + 614_656 + 885_120 + 1_327_488 + 884_992 + 58_631_144 == 62_357_608
    assert params("zfnet") == expected
    names = ["features.conv1", "features.pool1", "features.conv2", "features.pool2", "features.conv3",
             "features.conv4", "features.conv5", "features.pool5"]
    sizes = _spatial_sizes(meta_model("zfnet"), names, 224)
    # the paper's Fig. 3: 110, 55, 26, 13, 13, 13, 6 (conv5's 13 before its pool)
    assert [s[1] for s in sizes] == [110, 55, 26, 13, 13, 13, 13, 6]
    assert [s[0] for s in sizes] == [96, 96, 256, 256, 384, 384, 256, 256]


VGG_FC = fc(512 * 7 * 7, 4096) + fc(4096, 4096) + fc(4096, 1000)  # 123,642,856, the same in every column


def test_vgg_a_lrn_count():
    convs = (conv(3, 64, 3) + conv(64, 128, 3) + conv(128, 256, 3) + conv(256, 256, 3)
             + conv(256, 512, 3) + conv(512, 512, 3) + conv(512, 512, 3) + conv(512, 512, 3))
    assert VGG_FC == 123_642_856
    assert convs + VGG_FC == 132_863_336 == params("vgg11_lrn") == params("vgg11")  # LRN has no parameters
    model = meta_model("vgg11_lrn")
    lrn = [i for i, m in enumerate(model.features) if isinstance(m, nn.LocalResponseNorm)]
    assert lrn == [2] and isinstance(model.features[3], nn.MaxPool2d)  # conv3-64, ReLU, LRN, maxpool


def test_vgg_c_count_and_layout():
    b_convs = (conv(3, 64, 3) + conv(64, 64, 3) + conv(64, 128, 3) + conv(128, 128, 3)
               + conv(128, 256, 3) + conv(256, 256, 3)
               + conv(256, 512, 3) + conv(512, 512, 3)
               + conv(512, 512, 3) + conv(512, 512, 3))
    assert b_convs + VGG_FC == params("vgg13")
    c_extra = conv(256, 256, 1) + conv(512, 512, 1) + conv(512, 512, 1)  # conv1-256, conv1-512, conv1-512
    assert b_convs + c_extra + VGG_FC == 133_638_952 == params("vgg16_c")
    kernels = [m.kernel_size[0] for m in meta_model("vgg16_c").features if isinstance(m, nn.Conv2d)]
    assert kernels == [3, 3, 3, 3, 3, 3, 1, 3, 3, 1, 3, 3, 1]
    assert params("vgg16_c_bn") == 133_638_952 + bn(64) * 2 + bn(128) * 2 + bn(256) * 3 + bn(512) * 6


def test_vgg_table2_millions():
    # The paper's Table 2 ("Number of parameters (in millions)"): A, A-LRN, B: 133; C: 134; D: 138; E: 144.
    table2 = {"vgg11": 133, "vgg11_lrn": 133, "vgg13": 133, "vgg16_c": 134, "vgg16": 138, "vgg19": 144}
    assert {n: round(params(n) / 1e6) for n in table2} == table2
    # weight layers (conv + FC): 11, 11, 13, 16, 16, 19
    depth = {n: sum(isinstance(m, (nn.Conv2d, nn.Linear)) for m in meta_model(n).modules()) for n in table2}
    assert depth == {"vgg11": 11, "vgg11_lrn": 11, "vgg13": 13, "vgg16_c": 16, "vgg16": 16, "vgg19": 19}


def test_vgg_small_inputs_and_options():
    model = meta_model("vgg11", num_classes=10, dropout=0.2).eval()
    assert model.classifier[2].p == 0.2 and model.classifier[5].p == 0.2
    assert model.forward_features(torch.zeros(1, 3, 32, 32, device=META)).shape == (1, 512, 1, 1)
    assert model(torch.zeros(1, 3, 32, 32, device=META)).shape == (1, 10)
    assert any(isinstance(m, nn.BatchNorm2d) for m in meta_model("vgg11", batch_norm=True).modules())


def mlpconv(cin, filters, k, mlp):
    layers, count = [filters, *mlp], conv(cin, filters, k)
    for a, b in zip(layers, layers[1:]):
        count += conv(a, b, 1)
    return count


def test_nin_counts():
    imagenet = (mlpconv(3, 96, 11, [96, 96]) + mlpconv(96, 256, 5, [256, 256]) + mlpconv(256, 384, 3, [384, 384])
                + mlpconv(384, 1000, 3, [1000, 1000]))
    assert imagenet == 7_439_608 == params("nin")
    cifar = mlpconv(3, 192, 5, [160, 96]) + mlpconv(96, 192, 5, [192, 192]) + mlpconv(192, 192, 3, [192, 10])
    assert cifar == 966_986 == params("nin_cifar")


def test_nin_head_is_a_convolution():
    model = create_model("nin_cifar").eval()
    assert model.classifier_name == "features.mlpconv3.mlp2"
    head = model.get_classifier()
    assert isinstance(head, nn.Conv2d) and head.out_channels == 10
    x = torch.randn(2, 3, 32, 32)
    features = model.forward_features(x)
    assert features.shape == (2, 192, 8, 8) and model.num_features == 192
    with torch.no_grad():  # the head is the classifier conv, its ReLU and global average pooling
        torch.testing.assert_close(model.forward_head(features), torch.relu(head(features)).mean((2, 3)))
    assert model.forward_head(features, pre_logits=True).shape == (2, 192)
    model.reset_classifier(4)
    assert model(x).shape == (2, 4) and model.get_classifier().kernel_size == (1, 1)
    assert meta_model("nin").classifier_name == "features.mlpconv4.mlp2"


def inception(cin, c1, c3r, c3, c5r, c5, cp, bias=True):
    return (conv(cin, c1, 1, bias=bias) + conv(cin, c3r, 1, bias=bias) + conv(c3r, c3, 3, bias=bias)
            + conv(cin, c5r, 1, bias=bias) + conv(c5r, c5, 5, bias=bias) + conv(cin, cp, 1, bias=bias))


# The paper's Table 1: input channels, then #1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj,
# and the "params" column (in K, K = 1024).
TABLE1 = {
    "inception3a": (192, 64, 96, 128, 16, 32, 32, 159),
    "inception3b": (256, 128, 128, 192, 32, 96, 64, 380),
    "inception4a": (480, 192, 96, 208, 16, 48, 64, 364),
    "inception4b": (512, 160, 112, 224, 24, 64, 64, 437),
    "inception4c": (512, 128, 128, 256, 24, 64, 64, 463),
    "inception4d": (512, 112, 144, 288, 32, 64, 64, 580),
    "inception4e": (528, 256, 160, 320, 32, 128, 128, 840),
    "inception5a": (832, 256, 160, 320, 32, 128, 128, 1072),
    "inception5b": (832, 384, 192, 384, 48, 128, 128, 1388),
}


def test_googlenet_count_matches_table1():
    model = meta_model("googlenet")
    expected = (conv(3, 64, 7) + conv(64, 64, 1) + conv(64, 192, 3)
                + sum(inception(cin, *table) for cin, *table, _ in TABLE1.values())
                + fc(1024, 1000))
    assert expected == 6_998_552 == count_parameters(model)
    for name, (cin, *table, _) in TABLE1.items():
        assert count_parameters(model.get_submodule(name)) == inception(cin, *table), name

    # Table 1's "params" column counts weights only, in K = 1024. Its conv2 row is the 3x3 reduce and the 3x3
    # together: 64*64 + 64*9*192 = 114,688 = 112K; the linear layer: 1024*1000 = 1000K. Rows 3a, 3b and 4b
    # agree to 1K; the others are off by up to 7% in the paper itself (4c: 497.5K computed, 463K printed),
    # and conv1's 2.7K matches no reading of a 7x7 convolution from 3 to 64 channels (9,408 weights).
    assert (64 * 64 + 64 * 9 * 192) / 1024 == 112 and 1024 * 1000 / 1024 == 1000
    for name, (cin, *table, k_printed) in TABLE1.items():
        k_computed = inception(cin, *table, bias=False) / 1024
        assert abs(k_computed - k_printed) / k_printed < 0.08, name
        if name in ("inception3a", "inception3b", "inception4b"):
            assert abs(k_computed - k_printed) <= 1, name
    # The column summed (with conv1's real 9,408 weights) is the model's weight count to 0.5%.
    table_k = 7 * 7 * 3 * 64 / 1024 + 112 + sum(row[-1] for row in TABLE1.values()) + 1000
    weights = expected - sum(m.bias.numel() for m in model.modules() if getattr(m, "bias", None) is not None)
    assert abs(weights / 1024 - table_k) / table_k < 0.005


def test_googlenet_table1_sizes():
    names = ["conv1", "maxpool1", "conv3", "maxpool2", "inception3a", "inception3b", "maxpool3", "inception4a",
             "inception4b", "inception4c", "inception4d", "inception4e", "maxpool4", "inception5a", "inception5b"]
    sizes = _spatial_sizes(meta_model("googlenet"), names, 224)
    assert sizes == [(64, 112, 112), (64, 56, 56), (192, 56, 56), (192, 28, 28), (256, 28, 28), (480, 28, 28),
                     (480, 14, 14), (512, 14, 14), (512, 14, 14), (512, 14, 14), (528, 14, 14), (832, 14, 14),
                     (832, 7, 7), (832, 7, 7), (1024, 7, 7)]
    model = meta_model("googlenet")
    assert model.inception3a.branch3[1].conv.kernel_size == (5, 5)
    assert model.dropout.p == 0.4 and isinstance(model.lrn1, nn.LocalResponseNorm)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())


def test_googlenet_aux_logits():
    model = meta_model("googlenet", aux_logits=True, num_classes=12)
    # aux1 reads inception (4a)'s 512 maps, aux2 (4d)'s 528: 1x1 conv 128, FC 128*4*4 -> 1024, FC 1024 -> 12
    aux = conv(512, 128, 1) + conv(528, 128, 1) + 2 * (fc(128 * 4 * 4, 1024) + fc(1024, 12))
    assert count_parameters(model) - params("googlenet", num_classes=12) == aux
    x = torch.empty(2, 3, 224, 224, device=META)
    out = model.train()(x)
    assert len(out) == 3 and all(o.shape == (2, 12) for o in out)
    assert out.logits.shape == (2, 12)
    assert model.eval()(x).shape == (2, 12)


def cifar_resnet(n, shortcut="A"):
    count = conv(3, 16, 3, bias=False) + bn(16)                                  # conv1
    for stage, (cin, planes) in enumerate([(16, 16), (16, 32), (32, 64)]):
        first = conv(cin, planes, 3, bias=False) + conv(planes, planes, 3, bias=False) + 2 * bn(planes)
        if stage and shortcut == "B":
            first += conv(cin, planes, 1, bias=False) + bn(planes)              # projection shortcut
        rest = 2 * conv(planes, planes, 3, bias=False) + 2 * bn(planes)
        count += first + (n - 1) * rest
    return count + fc(64, 10)


@pytest.mark.parametrize("name, n, option_a, option_b, paper_m", [
    ("resnet20", 3, 269_722, 272_474, 0.27), ("resnet32", 5, 464_154, 466_906, 0.46),
    ("resnet44", 7, 658_586, 661_338, 0.66), ("resnet56", 9, 853_018, 855_770, 0.85),
    ("resnet110", 18, 1_727_962, 1_730_714, 1.7),
])
def test_cifar_resnet_counts(name, n, option_a, option_b, paper_m):
    assert cifar_resnet(n) == option_a == params(name)
    assert cifar_resnet(n, "B") == option_b == params(name, shortcut="B")
    assert option_b - option_a == conv(16, 32, 1, bias=False) + bn(32) + conv(32, 64, 1, bias=False) + bn(64)
    # the paper's Table 6 (0.27M, 0.46M, 0.66M, 0.85M, 1.7M) is option A
    digits = 1 if paper_m >= 1 else 2
    assert round(option_a / 1e6, digits) == paper_m
    model = meta_model(name)
    assert model.depth == 6 * n + 2
    weighted = sum(isinstance(m, (nn.Conv2d, nn.Linear)) for m in model.modules())
    assert weighted == 6 * n + 2


def test_cifar_resnet_option_a_shortcut():
    model = create_model("resnet20").eval()
    block = model.layer2[0]
    assert count_parameters(block.downsample) == 0 and model.layer1[0].downsample is None
    x = torch.randn(1, 16, 32, 32)
    shortcut = block.downsample(x)
    assert shortcut.shape == (1, 32, 16, 16)
    torch.testing.assert_close(shortcut[:, :16], x[:, :, ::2, ::2])
    assert shortcut[:, 16:].abs().sum() == 0
    assert model.forward_features(torch.zeros(1, 3, 32, 32)).shape == (1, 64, 8, 8)
    with pytest.raises(ValueError, match="shortcut"):
        create_model("resnet20", shortcut="C")


def test_zero_init_residual():
    model = meta_model("resnet50", zero_init_residual=True)
    small = create_model("resnet18", zero_init_residual=True)
    assert all(b.bn2.weight.abs().sum() == 0 for layer in (small.layer1, small.layer4) for b in layer)
    assert all(b.bn3.weight.device.type == "meta" for b in model.layer1)
    plain = create_model("resnet18")
    assert all((b.bn2.weight == 1).all() for b in plain.layer1)
    cifar = create_model("resnet20", zero_init_residual=True)
    assert all(b.bn2.weight.abs().sum() == 0 for b in cifar.layer3)


def test_resnext_and_wide_resnet_blocks():
    resnext = meta_model("resnext50_32x4d")
    assert resnext.layer1[0].conv2.groups == 32 and resnext.layer1[0].conv2.out_channels == 128
    wide = meta_model("wide_resnet50_2")
    assert wide.layer4[0].conv2.out_channels == 1024 and wide.num_features == 2048
    dilated = meta_model("resnet50", replace_stride_with_dilation=[False, True, True])
    x = torch.empty(1, 3, 224, 224, device=META)
    assert dilated.forward_features(x).shape == (1, 2048, 28, 28)


def _mult_adds(model, shape):
    total = 0

    def hook(m, i, o):
        nonlocal total
        if isinstance(m, nn.Conv2d):
            total += o[0].numel() * (m.in_channels // m.groups) * math.prod(m.kernel_size)
        else:
            total += m.in_features * m.out_features

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    model(torch.empty(1, *shape, device=META))
    for h in handles:
        h.remove()
    return total


def test_fastcnn_budget_and_options():
    model = meta_model("fastcnn")
    macs = _mult_adds(model, (1, 28, 28))
    # 1->16 at 28x28; 16->32, 32->32 at 14x14; 32->64, 64->64 at 7x7; FC on the flattened 64x7x7 maps -> 10
    assert macs == (9 * 16 * 784 + (9 * 16 * 32 + 9 * 32 * 32) * 196 + (9 * 32 * 64 + 9 * 64 * 64) * 49
                    + 64 * 49 * 10)
    assert 4e6 <= macs <= 8e6  # about two epochs of Fashion-MNIST a minute on 2 CPU cores
    assert count_parameters(model) == (conv(1, 16, 3, bias=False) + bn(16) + conv(16, 32, 3, bias=False) + bn(32)
                                       + conv(32, 32, 3, bias=False) + bn(32) + conv(32, 64, 3, bias=False) + bn(64)
                                       + conv(64, 64, 3, bias=False) + bn(64) + fc(64 * 49, 10))
    big = meta_model("fastcnn", widths=(32, 64, 128), depths=2)
    assert big.num_features == 128 and 20e6 <= _mult_adds(big, (1, 28, 28)) <= 60e6
    assert [len(big.features.get_submodule(f"stage{i}")) for i in (1, 2, 3)] == [2, 2, 2]
    cifar = meta_model("fastcnn", in_channels=3)
    assert cifar(torch.empty(2, 3, 32, 32, device=META)).shape == (2, 10)
    with pytest.raises(ValueError, match="depths"):
        create_model("fastcnn", widths=(8, 16), depths=(1, 2, 3))
