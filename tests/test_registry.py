"""The registry (timm-style create_model / list_models) and the uniform model interface."""

import pytest
import torch
from conftest import EXAMPLES

import convkit
from convkit.models import UnknownModelError, create_model, list_models, model_info, register_model


def test_list_models_patterns_sorted_naturally():
    assert list_models("resnet*")[:5] == ["resnet18", "resnet20", "resnet32", "resnet34", "resnet44"]
    assert list_models("vgg1?") == ["vgg11", "vgg13", "vgg16", "vgg19"]
    assert list_models("nothing-like-this") == []
    assert set(list_models(family="vgg")) >= {"vgg11", "vgg16_c", "vgg19_bn"}


def test_unknown_names_get_the_closest_suggested():
    with pytest.raises(UnknownModelError) as info:
        create_model("resnet19")
    assert "resnet18" in str(info.value) and "convkit models" in str(info.value)
    with pytest.raises(UnknownModelError, match="vgg16"):
        model_info("vgg-16x")


def test_dashes_and_case_are_forgiven():
    assert model_info("ResNet-18").name == "resnet18"


def test_create_model_takes_a_model_file():
    net = create_model(str(EXAMPLES / "lenet5.yaml"), num_classes=3)
    assert net(torch.randn(1, 1, 32, 32)).shape == (1, 3)


def test_registering_a_name_twice_is_refused():
    with pytest.raises(ValueError, match="registered twice"):
        register_model(paper="x", name="resnet18")(lambda **kw: None)


def test_model_info_describes_before_building():
    info = model_info("vgg16")
    assert info.input_size == (3, 224, 224) and info.num_classes == 1000 and info.family == "vgg"
    assert info.torchvision == "vgg16"


def test_reset_classifier_zero_returns_pooled_features():
    model = convkit.create_model("resnet18")
    model.reset_classifier(0)
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 512)
    assert model.num_classes == 0
