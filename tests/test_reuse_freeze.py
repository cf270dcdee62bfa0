"""Stages, freezing, the batch-norm policy, parameter groups and input/head adaptation (issue 12).

Truth is independent of the code under test: torchvision's own layer layout and models, a real optimizer
step, hand-worked learning rates and map sizes, and the outputs of the unadapted network.
"""

import copy
import json

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

import convkit
from convkit.errors import ConvkitError
from convkit.layers import Conv2d, Dense, Flatten, MaxPool2d
from convkit.models.reference import ModelCfg, resolve_model
from convkit.models.sequential import Sequential
from convkit.reuse import (
    AdaptError,
    FreezeError,
    FreezeRecord,
    adapt_head,
    adapt_input_channels,
    apply_bn_policy,
    freeze,
    model_stages,
    param_groups,
)


def meta_model(name: str, **kwargs) -> nn.Module:
    with torch.device("meta"):
        return convkit.create_model(name, **kwargs)


# --- stages --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["resnet18", "vgg16", "alexnet", "lenet5", "googlenet", "nin", "fastcnn",
                                  "resnet20", "zfnet", "vgg11_bn"])
def test_stages_cover_every_parameter_exactly_once(name):
    model = meta_model(name)
    stages = model_stages(model)
    listed = [p for s in stages for p in s.params]
    assert len(listed) == len(set(listed))
    assert sorted(listed) == sorted(n for n, _ in model.named_parameters())
    assert stages[-1].name == "head" and all(s.params for s in stages)
    # the stages run from input to output: parameters appear in registration order within the model
    order = {n: i for i, (n, _) in enumerate(model.named_parameters())}
    firsts = [order[s.params[0]] for s in stages]
    if name != "googlenet":  # GoogLeNet registers its head's fc last but nothing else out of order
        assert firsts == sorted(firsts)


def test_resnet18_stages_are_torchvisions_top_level_layers():
    stages = {s.name: s.params for s in model_stages(meta_model("resnet18"))}
    with torch.device("meta"):
        tv = torchvision.models.resnet18()
    tops = {}
    for n, _ in tv.named_parameters():
        tops.setdefault(n.split(".")[0], []).append(n)
    assert list(stages) == ["stem", "layer1", "layer2", "layer3", "layer4", "head"]
    assert stages["stem"] == tops["conv1"] + tops["bn1"]
    assert stages["head"] == tops["fc"]
    for i in range(1, 5):
        assert stages[f"layer{i}"] == tops[f"layer{i}"]


@pytest.mark.parametrize("name", ["vgg16", "alexnet"])
def test_vgg_alexnet_blocks_end_at_torchvisions_max_pools(name):
    with torch.device("meta"):
        tv = getattr(torchvision.models, name)()
    pools = [i for i, m in enumerate(tv.features) if isinstance(m, nn.MaxPool2d)]
    convs = [i for i, m in enumerate(tv.features) if isinstance(m, nn.Conv2d)]
    expected = []  # per block, the torchvision conv indices between two pools
    start = 0
    for p in pools:
        expected.append([f"features.{i}.weight" for i in convs if start <= i < p])
        start = p + 1
    stages = model_stages(meta_model(name))
    blocks = [[p for p in s.params if p.endswith("weight")] for s in stages[:-1]]
    assert blocks == expected
    assert stages[-1].params == [n for n, _ in tv.named_parameters() if n.startswith("classifier.")]


def test_sequential_model_stages_split_at_pools_and_dense_layers():
    net = Sequential([Conv2d(4, 3), MaxPool2d(2), Conv2d(8, 3), MaxPool2d(2), Flatten(), Dense(16), Dense(3)],
                     input_shape=(1, 22, 22))
    stages = model_stages(net)
    assert [(s.name, s.params) for s in stages] == [
        ("block1", ["conv1.weight", "conv1.bias"]), ("block2", ["conv2.weight", "conv2.bias"]),
        ("fc1", ["fc1.weight", "fc1.bias"]), ("head", ["fc2.weight", "fc2.bias"])]


def test_plain_module_falls_back_to_top_level_children():
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 4 * 4, 3))
    assert [(s.name, s.params) for s in model_stages(net)] == [("0", ["0.weight", "0.bias"]),
                                                              ("head", ["3.weight", "3.bias"])]


# --- freezing ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("trainable, expected", [
    ("head", ["head"]), (0, ["head"]), (2, ["layer3", "layer4", "head"]), ("layer2", ["layer2", "layer3", "layer4", "head"]),
    ("all", ["stem", "layer1", "layer2", "layer3", "layer4", "head"]), ("none", []), (99, None)])
def test_freeze_choices(trainable, expected):
    model = meta_model("resnet18")
    record = freeze(model, trainable)
    expected = expected if expected is not None else record.stages
    assert record.trainable_stages == expected
    by_stage = {s.name: s.params for s in model_stages(model)}
    want = {p for s in expected for p in by_stage[s]}
    assert {n for n, p in model.named_parameters() if p.requires_grad} == want
    assert set(record.frozen_params) == {n for n, p in model.named_parameters() if not p.requires_grad}


def test_freeze_again_unfreezes_gradually_and_record_is_json():
    model = meta_model("resnet18")
    freeze(model, "head")
    record = freeze(model, 1)
    assert model.layer4[0].conv1.weight.requires_grad and not model.layer3[0].conv1.weight.requires_grad
    data = json.loads(json.dumps(record.to_dict()))
    assert FreezeRecord.from_dict(data) == record
    assert "bn1" in record.frozen_bn and "layer4.0.bn1" not in record.frozen_bn
    assert record.text.startswith("frozen: stem, layer1, layer2, layer3 (")
    # torchvision's resnet18 has 8,393,728 weights in layer4 and 513,000 in fc (512 * 1000 + 1000)
    with torch.device("meta"):
        tv = torchvision.models.resnet18()
    assert record.stage_sizes["layer4"] == sum(p.numel() for p in tv.layer4.parameters()) == 8_393_728
    assert record.trainable_size == 8_393_728 + 513_000
    assert record.frozen_size + record.trainable_size == sum(p.numel() for p in tv.parameters())


@pytest.mark.parametrize("kwargs, words", [({"trainable": "layer9"}, ["layer9", "stem", "layer4"]),
                                           ({"trainable": -1}, [">= 0"]), ({"bn": "moving"}, ["moving", "train"])])
def test_freeze_errors_name_the_choices(kwargs, words):
    with pytest.raises(FreezeError) as info:
        freeze(meta_model("resnet18"), **kwargs)
    assert isinstance(info.value, ConvkitError)
    assert all(w in str(info.value) for w in words)


def _train_steps(model, record, steps=3, lr=0.1, groups=True):
    torch.manual_seed(0)
    x, y = torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,))
    params = param_groups(model, lr) if groups else model.parameters()  # torch skips params without a grad
    optimizer = torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=1e-2)
    for _ in range(steps):
        model.train()
        apply_bn_policy(model, record)
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()


@pytest.mark.parametrize("groups", [True, False])
def test_frozen_parameters_get_no_gradient_and_do_not_move(groups):
    torch.manual_seed(0)
    model = convkit.create_model("fastcnn")
    record = freeze(model, 1)  # stage3 and the head train
    before = {n: t.clone() for n, t in model.state_dict().items()}
    _train_steps(model, record, groups=groups)
    params = dict(model.named_parameters())
    for name in record.frozen_params:
        assert params[name].grad is None
        assert torch.equal(params[name], before[name]), name
    for name in record.trainable_params:
        assert params[name].grad is not None and not torch.equal(params[name], before[name]), name
    # frozen stages' batch norm kept its running statistics; the trained stage's moved
    frozen_stats = [k for k in before if k.startswith(("features.stage1", "features.stage2")) and "running" in k]
    trained_stats = [k for k in before if k.startswith("features.stage3") and "running_mean" in k]
    assert frozen_stats and trained_stats
    state = model.state_dict()
    assert all(torch.equal(state[k], before[k]) for k in frozen_stats)
    assert all(not torch.equal(state[k], before[k]) for k in trained_stats)


def test_bn_train_policy_updates_running_statistics_of_frozen_stages():
    torch.manual_seed(0)
    model = convkit.create_model("fastcnn")
    record = freeze(model, "head", bn="train")
    assert record.frozen_bn == []
    stats = [k for k in model.state_dict() if k.startswith("features.stage1") and k.endswith("running_mean")]
    before = {k: model.state_dict()[k].clone() for k in stats}
    _train_steps(model, record, steps=1)
    assert stats and all(not torch.equal(model.state_dict()[k], before[k]) for k in stats)
    assert all(not p.requires_grad for n, p in model.named_parameters() if n.startswith("features."))


# --- parameter groups -----------------------------------------------------------------------------------------

def test_param_groups_decay_per_stage_hand_worked():
    model = meta_model("resnet18")
    groups = param_groups(model, 0.1, 0.5)
    assert [g["name"] for g in groups] == ["stem", "layer1", "layer2", "layer3", "layer4", "head"]
    assert [g["lr"] for g in groups] == pytest.approx([0.003125, 0.00625, 0.0125, 0.025, 0.05, 0.1])
    listed = [id(p) for g in groups for p in g["params"]]
    assert sorted(listed) == sorted(id(p) for p in model.parameters())


def test_param_groups_leave_frozen_out_and_work_with_torch_optimizers():
    model = convkit.create_model("lenet5")
    freeze(model, "block3")
    groups = param_groups(model, 0.01, {"block3": 0.001})
    assert [(g["name"], g["lr"]) for g in groups] == [("block3", 0.001), ("head", 0.01)]
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert {id(p) for g in groups for p in g["params"]} == trainable
    optimizer = torch.optim.AdamW(groups, lr=0.5)
    assert [(g["name"], g["lr"]) for g in optimizer.state_dict()["param_groups"]] == [("block3", 0.001),
                                                                                      ("head", 0.01)]


@pytest.mark.parametrize("stage_lrs, words", [({"layer9": 0.1}, ["layer9", "stem"]), (1.5, ["(0, 1]"]),
                                              ({"head": 0.0}, ["head=0.0"])])
def test_param_groups_errors(stage_lrs, words):
    with pytest.raises(FreezeError) as info:
        param_groups(meta_model("resnet18"), 0.1, stage_lrs)
    assert all(w in str(info.value) for w in words)


def test_param_groups_all_frozen_is_an_error():
    model = meta_model("lenet5")
    freeze(model, "none")
    with pytest.raises(FreezeError, match="every stage is frozen"):
        param_groups(model, 0.1)


# --- input channels -------------------------------------------------------------------------------------------

def test_three_channel_net_on_grey_images_is_exact():
    torch.manual_seed(0)
    original = torchvision.models.resnet18(num_classes=7).eval()
    adapted = copy.deepcopy(original)
    change = adapt_input_channels(adapted, 1)
    grey = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        expected = original(grey.repeat(1, 3, 1, 1))
        got = adapted(grey)
    assert adapted.conv1.weight.shape == (64, 1, 7, 7)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert change.to_dict()["before"] == 3 and change.after == 1 and "3 -> 1" in change.text


def test_one_channel_net_on_equal_rgb_channels_is_exact():
    torch.manual_seed(0)
    original = convkit.create_model("lenet5").eval()
    adapted = copy.deepcopy(original)
    change = adapt_input_channels(adapted, 3)
    grey = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        expected = original(grey)
        got = adapted(grey.repeat(1, 3, 1, 1))
        different = adapted(torch.cat([grey, -grey, grey], 1))
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(different, expected, atol=1e-3)  # other images do change the output
    assert "replicated and divided by 3" in change.text
    assert adapt_input_channels(adapted, 3) is None


def test_channel_adaptation_updates_the_model_cfg():
    model = resolve_model("resnet18", num_classes=4)
    model.model_cfg.mean, model.model_cfg.std = (0.5, 0.4, 0.3), (0.2, 0.2, 0.5)
    adapt_input_channels(model, 1)
    cfg = model.model_cfg
    assert isinstance(cfg, ModelCfg) and cfg.input_shape == (1, 224, 224)
    assert cfg.mean == pytest.approx((0.4,)) and cfg.std == pytest.approx((0.3,))
    assert cfg.spec["in_channels"] == 1
    assert convkit.models.reference.build_from_spec(cfg.spec).conv1.in_channels == 1


def test_channel_adaptation_errors():
    with pytest.raises(AdaptError, match="no Conv2d"):
        adapt_input_channels(nn.Linear(3, 3), 1)
    with pytest.raises(AdaptError, match="grouped"):
        adapt_input_channels(nn.Sequential(nn.Conv2d(4, 4, 3, groups=2)), 1)
    with pytest.raises(AdaptError, match="positive"):
        adapt_input_channels(meta_model("lenet5"), 0)


# --- head -----------------------------------------------------------------------------------------------------

def test_lenet_bigger_input_gets_a_pool_that_keeps_every_weight():
    torch.manual_seed(0)
    original = convkit.create_model("lenet5").eval()
    model = copy.deepcopy(original)
    changes = adapt_head(model, None, (1, 64, 64))
    assert [c.kind for c in changes] == ["input_size"]
    # hand-worked: 64 -> C1 60 -> S2 30 -> C3 26 -> S4 13 -> C5 9, pooled to the 1x1 that F6 was built for
    assert changes[0].details["map"] == [120, 9, 9] and changes[0].details["output_size"] == [1, 1]
    assert set(original.state_dict()) == set(model.state_dict())
    x = torch.randn(3, 1, 64, 64)
    with torch.no_grad():
        expected = original.forward_head(F.adaptive_avg_pool2d(original.forward_features(x), 1))
        torch.testing.assert_close(model(x), expected)
        small = torch.randn(3, 1, 32, 32)  # the pool is the identity at the size the head was built for
        torch.testing.assert_close(model(small), original(small))


def test_lenet_rebuild_mode_and_new_classes():
    model = convkit.create_model("lenet5")
    changes = adapt_head(model, 5, (1, 64, 64), mode="rebuild")
    assert [c.kind for c in changes] == ["input_size", "classes"]
    assert model.classifier.f6.in_features == 120 * 9 * 9
    assert model(torch.zeros(2, 1, 64, 64)).shape == (2, 5)
    assert all(json.dumps(c.to_dict()) for c in changes)


def test_pooled_heads_only_change_classes():
    model = meta_model("alexnet")
    changes = adapt_head(model, 7, (3, 100, 100))
    assert [(c.kind, c.before, c.after) for c in changes] == [("classes", 1000, 7)]
    assert model.classifier[6].out_features == 7
    model = convkit.create_model("resnet18", num_classes=1000)
    changes = adapt_head(model, 10, (3, 64, 64))
    assert changes[0].text == "classes 1000 -> 10: fc Linear(512 -> 1000) replaced by a new Linear(512 -> 10)"
    assert model(torch.zeros(2, 3, 64, 64)).shape == (2, 10)


def test_sequential_model_head_adaptation():
    net = Sequential([Conv2d(4, 3), MaxPool2d(2), Conv2d(8, 3), MaxPool2d(2), Flatten(), Dense(16), Dense(3)],
                     input_shape=(1, 22, 22))  # 22 -> 20 -> 10 -> 8 -> 4: fc1 reads 8x4x4
    changes = adapt_head(net, 6, (1, 46, 46))  # 46 -> 44 -> 22 -> 20 -> 10
    assert changes[0].details == {"inserted": "AdaptiveAvgPool2d", "output_size": [4, 4], "map": [8, 10, 10]}
    assert net(torch.zeros(2, 1, 46, 46)).shape == (2, 6)
    assert net.shapes["adapt_pool"] == (8, 4, 4)


def test_head_adaptation_errors():
    with pytest.raises(AdaptError, match="mode"):
        adapt_head(meta_model("lenet5"), 3, (1, 64, 64), mode="stretch")
    with pytest.raises(AdaptError, match="positive"):
        adapt_head(meta_model("lenet5"), 0)
    with pytest.raises(AdaptError, match=r"\(C, H, W\)"):
        adapt_head(meta_model("lenet5"), 3, (64, 64))


def test_fully_convolutional_head_takes_any_size_and_too_small_inputs_are_named():
    model = meta_model("nin_cifar")
    assert [c.kind for c in adapt_head(model, 4, (3, 48, 48))] == ["classes"]
    assert model.get_classifier().out_channels == 4
    with pytest.raises(AdaptError, match="LeNet5 cannot take 1x8x8 inputs"):
        adapt_head(meta_model("lenet5"), 3, (1, 8, 8))


def test_googlenet_auxiliary_classifiers_belong_to_the_head():
    model = meta_model("googlenet", aux_logits=True)
    stages = model_stages(model)
    head = stages[-1].params
    assert {p.split(".")[0] for p in head} == {"fc", "aux1", "aux2"}
    assert sorted(p for s in stages for p in s.params) == sorted(n for n, _ in model.named_parameters())
    record = freeze(model, "head")
    assert all(p.requires_grad == n.startswith(("fc", "aux")) for n, p in model.named_parameters())
    assert record.frozen_stages == ["stem", "inception3", "inception4", "inception5"]


@pytest.mark.parametrize("name", ["resnet18", "vgg16", "alexnet"])
def test_torchvision_models_fall_back_to_the_same_stages_as_their_zoo_twins(name):
    with torch.device("meta"):
        tv = getattr(torchvision.models, name)()
    ours = [s.params for s in model_stages(meta_model(name))]
    theirs = [s.params for s in model_stages(tv)]
    assert theirs == ours


def test_a_stage_layout_naming_a_missing_module_is_an_error():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.body, self.fc = nn.Conv2d(1, 2, 3), nn.Linear(2, 2)

        def stage_layout(self):
            return [("body", ["bdoy"]), ("head", ["fc"])]

    with pytest.raises(FreezeError, match="bdoy"):
        model_stages(Net())


@pytest.mark.parametrize("mode", ["pool", "rebuild"])
def test_replaying_the_adaptations_on_a_fresh_model_loads_the_adapted_weights(mode):
    torch.manual_seed(0)
    model = convkit.create_model("lenet5")
    adapt_input_channels(model, 3)
    adapt_head(model, 4, (3, 64, 64), mode=mode)
    fresh = convkit.create_model("lenet5")  # what a run folder's spec rebuilds
    adapt_input_channels(fresh, 3)
    adapt_head(fresh, 4, (3, 64, 64), mode=mode)
    fresh.load_state_dict(model.state_dict(), strict=True)
    x = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(fresh.eval()(x), model.eval()(x), rtol=0, atol=0)
