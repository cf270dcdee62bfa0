"""`convkit summary` on the four detector kinds: per-part parameters, multiply-adds against independent counts."""

from __future__ import annotations

import json
from collections import OrderedDict

import pytest
import torch
from fvcore.nn import FlopCountAnalysis

from convkit.cli.main import main
from convkit.inspect import summary
from convkit.models import create_model
from convkit.tasks.detection.localize import Localizer
from convkit.tasks.detection.models import faster_rcnn, retinanet
from convkit.tasks.detection.yolo import YoloV1


def _numel(*modules) -> int:
    return sum(p.numel() for m in modules for p in m.parameters())


def _parts(result) -> dict:
    return {p["name"]: p for p in result.parts}


def _fvcore(module, inputs) -> int:
    counter = FlopCountAnalysis(module.eval(), inputs)  # fvcore's "flops" are multiply-adds of conv and matmul
    counter.unsupported_ops_warnings(False)
    counter.uncalled_modules_warnings(False)
    # convkit counts convolutions and matrix products only; fvcore also counts adaptive pooling
    return sum(v for k, v in counter.by_operator().items() if k in ("conv", "linear", "matmul", "addmm", "bmm"))


def _head(name: str) -> tuple[str, ...]:
    """The zoo classifier's head modules (its stage "head"), which the detection body cuts off."""
    from convkit.reuse.freeze import model_stages

    return tuple(m for s in model_stages(create_model(name)) if s.name == "head" for m in s.modules)


def _classifier_macs_to_cut(name: str, channels: int, head: tuple[str, ...]) -> int:
    """convkit's own summary of the plain zoo classifier, less its head rows: the backbone body's truth."""
    plain = summary(create_model(name, in_channels=channels), (channels, 96, 96))
    return sum(r.macs for r in plain.rows if not r.name.startswith(head))


@pytest.mark.parametrize("channels", [1])
def test_faster_rcnn_parts(channels):
    model = faster_rcnn("fastcnn", num_classes=3, in_channels=channels)
    result = summary(model, (channels, 96, 96))
    parts = _parts(result)
    assert list(parts) == ["transform", "backbone body", "FPN", "RPN", "RoI heads"]
    assert parts["backbone body"]["params"] == _numel(model.backbone.body)
    assert parts["FPN"]["params"] == _numel(model.backbone.fpn)
    assert parts["RPN"]["params"] == _numel(model.rpn)
    assert parts["RoI heads"]["params"] == _numel(model.roi_heads)
    assert sum(p["params"] for p in result.parts) == _numel(model) == result.totals["parameters"]
    assert sum(p["macs"] for p in result.parts) == result.totals["macs"]
    # the body is the classifier's convolution stack up to the cut (96 px: the transform does not resize)
    assert parts["backbone body"]["macs"] == _classifier_macs_to_cut("fastcnn", channels, _head("fastcnn"))
    # FPN and the RPN head alone, under fvcore, on the body's real maps
    x = torch.zeros(1, channels, 96, 96)
    with torch.no_grad():
        maps = model.backbone.body(x)
        pyramid = model.backbone.fpn(maps)
    assert parts["FPN"]["macs"] == _fvcore(model.backbone.fpn, (OrderedDict(maps),))
    assert parts["RPN"]["macs"] == _fvcore(model.rpn.head, (list(pyramid.values()),))
    # RoI heads at the stated count: the RPN's post-NMS test count (100), box head + predictor per RoI
    n = model.rpn._post_nms_top_n["testing"]
    assert f"at {n} proposals per image" in parts["RoI heads"]["note"]
    rois = torch.zeros(n, model.backbone.out_channels, 7, 7)
    per_rois = _fvcore(torch.nn.Sequential(model.roi_heads.box_head, model.roi_heads.box_predictor.cls_score), rois)
    per_rois += _fvcore(torch.nn.Sequential(model.roi_heads.box_head, model.roi_heads.box_predictor.bbox_pred), rois)
    per_rois -= _fvcore(model.roi_heads.box_head, rois)  # the shared MLP counted once
    assert parts["RoI heads"]["macs"] == per_rois
    # the model is left as it was: it still runs, in its own mode, with its NMS threshold and real anchors
    assert model.training and model.rpn.nms_thresh == 0.7
    model.eval()
    with torch.no_grad():
        out = model([torch.rand(channels, 96, 96)])
    assert out[0]["boxes"].device.type == "cpu"
    text = str(result)
    assert "Parts (per image" in text and "RoI heads counted at 100 proposals per image" in text


def test_retinanet_parts_three_channels():
    model = retinanet("fastcnn", num_classes=2, in_channels=3)
    result = summary(model, (3, 96, 96))
    parts = _parts(result)
    assert list(parts) == ["transform", "backbone body", "FPN", "head", "anchors"]
    assert parts["backbone body"]["params"] == _numel(model.backbone.body)
    assert parts["FPN"]["params"] == _numel(model.backbone.fpn)
    assert parts["head"]["params"] == _numel(model.head)
    assert sum(p["params"] for p in result.parts) == _numel(model)
    assert parts["backbone body"]["macs"] == _classifier_macs_to_cut("fastcnn", 3, _head("fastcnn"))
    with torch.no_grad():
        pyramid = model.backbone(torch.zeros(1, 3, 96, 96))
    assert parts["head"]["macs"] == _fvcore(model.head, (list(pyramid.values()),))
    assert result.mode == "eval" and result.memory["training"]["activations"] > 0


@pytest.mark.parametrize("channels", [1, 3])
def test_localizer_and_yolo_parts(channels):
    loc = Localizer(create_model("fastcnn", in_channels=channels), num_classes=3)
    parts = _parts(summary(loc, (channels, 96, 96)))
    assert list(parts) == ["backbone", "class head", "box head"]
    assert parts["box head"]["params"] == _numel(loc.box_head)
    assert parts["backbone"]["params"] + parts["class head"]["params"] == _numel(loc.backbone)
    assert parts["box head"]["macs"] == _fvcore(loc.box_head, (loc.backbone.forward_features(
        torch.zeros(1, channels, 96, 96)),))
    yolo = YoloV1(create_model("fastcnn", in_channels=channels), S=7, B=2, C=3)
    result = summary(yolo, (channels, 96, 96))
    parts = _parts(result)
    assert list(parts) == ["backbone", "head"]
    assert parts["head"]["params"] == _numel(yolo.head) and parts["backbone"]["params"] == _numel(yolo.backbone)
    with torch.no_grad():
        features = yolo.backbone.forward_features(torch.zeros(1, channels, 96, 96))
    assert parts["head"]["macs"] == _fvcore(yolo.head, (features,))
    assert parts["backbone"]["macs"] + parts["head"]["macs"] == result.totals["macs"]


def test_cli_detector(capsys):
    assert main(["summary", "fastcnn", "--detector", "yolo", "--num-classes", "2", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["input_size"] == [1, 96, 96]
    assert [p["name"] for p in data["parts"]] == ["backbone", "head"]
    assert sum(p["params"] for p in data["parts"]) == data["totals"]["parameters"]
    assert main(["summary", "fastcnn", "--detector", "localizer", "--in-channels", "3"]) == 0
    out = capsys.readouterr().out
    assert "input 3x96x96" in out and "Parts (per image" in out and "box head" in out


def test_plain_model_has_no_parts():
    result = summary(create_model("lenet5"))
    assert result.parts == [] and "Parts" not in str(result)
