"""Faster R-CNN and RetinaNet from torchvision on convkit backbones (issue 13): convkit.tasks.detection.models."""


import pytest
import torch
from torch import nn
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
from torchvision.ops import roi_pool

from convkit.data.errors import DataFormatError
from convkit.models._registry import ModelArgumentError
from convkit.models.reference import model_spec, resolve_model
from convkit.models.weights import save_tensors
from convkit.tasks.detection.models import (
    SMALL_IMAGE_PROPOSALS,
    DetectionBackbone,
    MultiScaleRoIMaxPool,
    default_anchor_sizes,
    detection_backbone,
    faster_rcnn,
    from_torchvision_detections,
    retinanet,
    to_torchvision_images,
    to_torchvision_targets,
)


def _scenes(channels: int = 3, size: int = 64):
    """Two images with bright rectangles on black, and their targets in convkit's form (0-based labels)."""
    images = torch.zeros(2, channels, size, size, dtype=torch.uint8)
    images[0, :, 8:30, 10:40] = 255
    images[1, :, 30:60, 20:36] = 200
    targets = [{"boxes": torch.tensor([[10.0, 8.0, 40.0, 30.0]]), "labels": torch.tensor([0])},
               {"boxes": torch.tensor([[20.0, 30.0, 36.0, 60.0]]), "labels": torch.tensor([1])}]
    return images, targets


def _count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_parameter_count_and_outputs_equal_torchvisions_own_assembly():
    # torchvision's resnet_fpn_backbone('resnet18') configured as convkit's (trainable BN, all layers trainable,
    # layer1-4, FPN 256, P6 by max pooling) and its default anchors / RoIAlign / box head.
    torch.manual_seed(0)
    theirs = FasterRCNN(resnet_fpn_backbone(backbone_name="resnet18", weights=None, trainable_layers=5,
                                            norm_layer=nn.BatchNorm2d), num_classes=3, min_size=64, max_size=64,
                        **SMALL_IMAGE_PROPOSALS)
    ours = faster_rcnn("resnet18", num_classes=2, min_size=64, max_size=64, out_channels=256,
                       anchor_sizes=((32,), (64,), (128,), (256,), (512,)),
                       image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225])
    assert _count(ours) == _count(theirs) == 28_288_606
    # the same tensor names and shapes, so torchvision's weights load strictly and give the same detections
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in theirs.state_dict().items()}
    ours.load_state_dict(theirs.state_dict())
    ours.eval(), theirs.eval()
    images, _ = _scenes()
    with torch.no_grad():
        a, b = ours(to_torchvision_images(images)), theirs(to_torchvision_images(images))
    assert torch.equal(a[0]["boxes"], b[0]["boxes"]) and torch.equal(a[1]["scores"], b[1]["scores"])


def test_backbone_stages_of_resnet18_resnet20_and_fastcnn():
    net = detection_backbone("resnet18")
    assert (net.stages, net.strides, net.out_channels) == (["layer1", "layer2", "layer3", "layer4"], [4, 8, 16, 32], 64)
    maps = net(torch.zeros(1, 3, 96, 96))
    assert list(maps) == ["0", "1", "2", "3", "pool"] and maps["0"].shape == (1, 64, 24, 24)
    # resnet20 (CIFAR-style: strides 1, 2, 4) keeps layer3; fastcnn's stage3 (stride 4) is its last map
    assert detection_backbone("resnet20").stages == ["layer3"]
    fast = detection_backbone("fastcnn", fpn=False)
    assert (fast.stages, fast.strides, fast.out_channels, fast.in_channels) == (["stage3"], [4], 64, 1)
    assert list(fast(torch.zeros(1, 1, 96, 96))) == ["0"]
    chosen = detection_backbone("fastcnn", returned_stages=["stage2", "stage1"], out_channels=16)
    assert (chosen.stages, chosen.strides) == (["stage1", "stage2"], [2, 4])
    assert detection_backbone("resnet18", extra_blocks="p6p7").num_levels == 6


@pytest.mark.parametrize("kwargs, words", [
    ({"returned_stages": ["layer9"]}, ["layer9", "layer1, layer2, layer3, layer4"]),
    ({"returned_stages": ["head"]}, ["head"]),
    ({"fpn": False, "out_channels": 32}, ["out_channels=32", "without FPN"]),
    ({"fpn": False, "returned_stages": ["layer3", "layer4"]}, ["one map"]),
    ({"extra_blocks": "p7"}, ["extra_blocks", "'p7'"]),
])
def test_backbone_argument_mistakes_name_the_argument(kwargs, words):
    with pytest.raises(ModelArgumentError) as err:
        detection_backbone("resnet18", **kwargs)
    assert all(w in str(err.value) for w in words), str(err.value)


def test_detector_argument_mistakes():
    with pytest.raises(ModelArgumentError, match="roi_pool='avg'"):
        faster_rcnn("fastcnn", 2, roi_pool="avg")
    with pytest.raises(ModelArgumentError, match="num_classes=0"):
        retinanet("fastcnn", 0)
    with pytest.raises(ModelArgumentError, match="2 levels given, the backbone returns 1"):
        faster_rcnn("fastcnn", 2, fpn=False, anchor_sizes=((16,), (32,)))
    with pytest.raises(ModelArgumentError, match="3/3 values for a backbone of 1 input channels"):
        faster_rcnn("fastcnn", 2, image_mean=[0.5] * 3, image_std=[0.5] * 3)


def test_default_anchor_sizes_cover_small_objects():
    assert default_anchor_sizes(5) == ((12, 17), (24, 34), (48, 68), (96, 136), (192, 272))
    assert default_anchor_sizes(2, per_octave=3) == ((12, 15, 19), (24, 30, 38))
    # every square object of 12..56 px has an anchor within a factor sqrt(2): IoU >= 0.707 when centred
    sizes = [s for level in default_anchor_sizes(5) for s in level]
    assert all(max(min(s, o) ** 2 / max(s, o) ** 2 for s in sizes) >= 0.69 for o in range(12, 57))


@pytest.mark.parametrize("channels", [1, 3])
def test_faster_rcnn_train_losses_and_eval_detections(channels):
    torch.manual_seed(0)
    model = faster_rcnn("fastcnn" if channels == 1 else "resnet18", num_classes=2, min_size=64, max_size=64,
                        in_channels=channels)
    assert model.transform.image_mean == [0.5] * channels  # an untrained backbone's 0.5/0.5
    images, targets = _scenes(channels)
    losses = model(to_torchvision_images(images), to_torchvision_targets(targets))
    assert sorted(losses) == ["loss_box_reg", "loss_classifier", "loss_objectness", "loss_rpn_box_reg"]
    assert all(torch.isfinite(v) for v in losses.values())
    model.eval()
    with torch.no_grad():
        out = from_torchvision_detections(model(to_torchvision_images(images)))
    assert len(out) == 2 and sorted(out[0]) == ["boxes", "labels", "scores"]
    assert out[0]["boxes"].shape[1] == 4 and ((out[0]["labels"] >= 0) & (out[0]["labels"] < 2)).all()


@pytest.mark.parametrize("channels", [1, 3])
def test_retinanet_train_losses_and_eval_detections(channels):
    torch.manual_seed(0)
    model = retinanet("fastcnn", num_classes=2, min_size=64, max_size=64, in_channels=channels)
    images, targets = _scenes(channels)
    losses = model(to_torchvision_images(images), to_torchvision_targets(targets))
    assert sorted(losses) == ["bbox_regression", "classification"] and all(torch.isfinite(v) for v in losses.values())
    model.eval()
    with torch.no_grad():
        out = from_torchvision_detections(model(to_torchvision_images(images)))
    assert all(((o["labels"] >= 0) & (o["labels"] < 2)).all() for o in out)


def test_empty_images_train():
    model = faster_rcnn("fastcnn", num_classes=2, min_size=64, max_size=64)
    images, _ = _scenes(1)
    empty = [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}] * 2
    losses = model(to_torchvision_images(images), to_torchvision_targets(empty))
    assert all(torch.isfinite(v) for v in losses.values())


def test_checkpoint_weights_and_normalisation_are_in_the_detector(tmp_path):
    classifier = resolve_model("fastcnn", num_classes=4)
    with torch.no_grad():
        classifier.features.stage3[1].conv.weight.normal_()
    path = save_tensors(tmp_path / "best.safetensors", classifier.state_dict(),
                        {"task": "classification", "model": model_spec("fastcnn", num_classes=4), "mean": [0.3],
                         "std": [0.2], "input_shape": [1, 28, 28]})
    model = faster_rcnn(path, num_classes=2)
    inside = dict(model.named_parameters())["backbone.body.features.stage3.1.conv.weight"]
    assert torch.equal(inside, classifier.features.stage3[1].conv.weight)
    assert (model.transform.image_mean, model.transform.image_std) == ([pytest.approx(0.3)], [pytest.approx(0.2)])
    with pytest.raises(ModelArgumentError, match="fixes its input channels"):
        faster_rcnn(path, num_classes=2, in_channels=3)


def test_torchvision_state_dict_backbone_nothing_downloaded():
    theirs = resolve_model("resnet18").state_dict()  # a torchvision-named resnet18 state dict (the zoo twin's)
    theirs["layer2.0.conv1.weight"] = torch.randn_like(theirs["layer2.0.conv1.weight"])
    net = detection_backbone(theirs, in_channels=1)
    assert net.in_channels == 1
    assert torch.equal(net.body.get_parameter("layer2.0.conv1.weight"), theirs["layer2.0.conv1.weight"])


def test_roi_max_pool_equals_torchvision_roi_pool():
    torch.manual_seed(0)
    x = torch.randn(2, 8, 12, 12)
    boxes = [torch.tensor([[0.0, 0.0, 40.0, 40.0], [10.0, 4.0, 30.0, 44.0]]), torch.tensor([[5.0, 5.0, 47.0, 20.0]])]
    pool = MultiScaleRoIMaxPool(["0"], output_size=7)
    out = pool({"0": x}, boxes, [(48, 48), (48, 48)])
    assert out.shape == (3, 8, 7, 7)
    assert torch.equal(out, roi_pool(x, boxes, (7, 7), spatial_scale=0.25))
    # a hand example: a 4 x 4 map 0..15, the box over pixels 0..3 pooled to 2 x 2 cells: each cell's max
    hand = MultiScaleRoIMaxPool(["0"], output_size=2)({"0": torch.arange(16.0).view(1, 1, 4, 4)},
                                                      [torch.tensor([[0.0, 0.0, 3.0, 3.0]])], [(4, 4)])
    assert hand.flatten().tolist() == [5.0, 7.0, 13.0, 15.0]


def test_roi_max_pool_per_fpn_level():
    fine, coarse = torch.randn(1, 4, 16, 16), torch.randn(1, 4, 8, 8)
    small, large = [0.0, 0.0, 20.0, 20.0], [0.0, 0.0, 60.0, 60.0]  # sqrt(area) 20 and 60: levels 2 and 3
    pool = MultiScaleRoIMaxPool(["0", "1"], output_size=7, canonical_scale=40, canonical_level=3)
    out = pool({"0": fine, "1": coarse}, [torch.tensor([small, large])], [(64, 64)])
    assert out.shape == (2, 4, 7, 7)
    assert torch.equal(out[0], roi_pool(fine, [torch.tensor([small])], 7, 0.25)[0])
    assert torch.equal(out[1], roi_pool(coarse, [torch.tensor([large])], 7, 0.125)[0])


def test_faster_rcnn_with_roi_max_pooling_trains_on_fpn():
    model = faster_rcnn("resnet18", num_classes=2, roi_pool="max", min_size=64, max_size=64)
    assert isinstance(model.roi_heads.box_roi_pool, MultiScaleRoIMaxPool)
    images, targets = _scenes()
    losses = model(to_torchvision_images(images), to_torchvision_targets(targets))
    sum(losses.values()).backward()
    assert all(torch.isfinite(v) for v in losses.values())
    assert model.backbone.body.get_parameter("layer1.0.conv1.weight").grad.abs().sum() > 0


def test_target_and_detection_converters():
    target = {"boxes": torch.tensor([[1.0, 2.0, 5.0, 6.0], [0.0, 0.0, 9.0, 9.0]]), "labels": torch.tensor([0, 3]),
              "iscrowd": torch.tensor([False, True]), "masks": torch.ones(2, 10, 10, dtype=torch.bool)}
    (out,) = to_torchvision_targets([target])
    assert out["labels"].tolist() == [1] and out["boxes"].tolist() == [[1.0, 2.0, 5.0, 6.0]]
    assert out["masks"].shape == (1, 10, 10) and out["masks"].dtype == torch.uint8
    with pytest.raises(DataFormatError, match=r"targets\[0\]\['boxes'\]: shape \(4,\)"):
        to_torchvision_targets([{"boxes": torch.zeros(4), "labels": torch.zeros(1, dtype=torch.int64)}])
    with pytest.raises(DataFormatError, match=r"targets\[0\]\['labels'\]"):
        to_torchvision_targets([{"boxes": torch.zeros(1, 4), "labels": torch.tensor([-1])}])
    detections = [{"boxes": torch.tensor([[0.0, 0, 4, 4], [1, 1, 3, 3]]), "labels": torch.tensor([1, 0]),
                   "scores": torch.tensor([0.9, 0.3])}]
    (back,) = from_torchvision_detections(detections)
    assert back["labels"].tolist() == [0] and back["scores"].tolist() == [pytest.approx(0.9)]


def test_overfit_two_images_lowers_the_loss():
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = faster_rcnn("fastcnn", num_classes=2, min_size=64, max_size=64, out_channels=32)
    assert isinstance(model.backbone, DetectionBackbone)
    images, targets = _scenes(1)
    images, targets = to_torchvision_images(images), to_torchvision_targets(targets)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    history = []
    for _ in range(10):
        loss = sum(model(images, targets).values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append(loss.item())
    assert sum(history[-3:]) / 3 < 0.6 * sum(history[:3]) / 3, history
