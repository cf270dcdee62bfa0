"""Classification + localisation (issue 13): the loss against a 2-image example worked by hand, IoU metrics
against hand examples, decoding into pixels, one-object rules, freezing, and overfits on synthetic shapes and on
Fashion-MNIST scenes."""

import math

import pytest
import torch

from convkit.data.errors import LabelError
from convkit.errors import ConvkitError
from convkit.models import create_model
from convkit.models._registry import ModelArgumentError
from convkit.reuse import freeze, model_stages, param_groups
from convkit.tasks.detection.localize import (
    BoxHead,
    Localizer,
    decode,
    localization_loss,
    localization_metrics,
    single_boxes,
)
from convkit.tasks.detection.metrics import coco_metrics


def target(boxes, labels, **extra):
    return {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            "labels": torch.tensor(labels, dtype=torch.int64), **extra}


# ---------------------------------------------------------------------------------------------------------------
# The hand-worked example: images of H = 100, W = 200 pixels (width and height differ, so a frame mix-up shows),
# C = 3 classes, two images.
#
# Class term (cross-entropy from the logits):
#   image 0: logits (0, 0, 0), label 2: p = 1/3, CE = ln 3 = 1.0986123
#   image 1: logits (ln 3, 0, 0), label 0: p = 3 / (3 + 1 + 1) = 0.6, CE = -ln 0.6 = 0.5108256
#   class = (1.0986123 + 0.5108256) / 2 = 0.8047190
#
# Boxes, image-relative (x / 200, y / 100):
#   image 0: truth pixels (20, 10, 100, 50) -> xyxy (0.1, 0.1, 0.5, 0.5) -> cxcywh (0.3, 0.3, 0.4, 0.4)
#            predicted cxcywh (0.4, 0.3, 0.4, 0.4) -> xyxy (0.2, 0.1, 0.6, 0.5)
#            L1 = |0.4 - 0.3| = 0.1
#            intersection x 0.2..0.5 (0.3) * y 0.1..0.5 (0.4) = 0.12; areas 0.16 + 0.16; union 0.2; IoU 0.6
#            (in pixels: 60 * 40 = 2400 over 4000 = 0.6); enclosing box x 0.1..0.6 * y 0.1..0.5 = 0.2 = union,
#            GIoU = 0.6 - 0 = 0.6, 1 - GIoU = 0.4
#   image 1: truth pixels (0, 0, 40, 20) -> xyxy (0, 0, 0.2, 0.2) -> cxcywh (0.1, 0.1, 0.2, 0.2)
#            predicted cxcywh (0.5, 0.5, 0.2, 0.2) -> xyxy (0.4, 0.4, 0.6, 0.6): disjoint
#            L1 = 0.4 + 0.4 = 0.8
#            IoU = 0, union 0.04 + 0.04 = 0.08, enclosing (0, 0, 0.6, 0.6) = 0.36,
#            GIoU = 0 - (0.36 - 0.08) / 0.36 = -7/9, 1 - GIoU = 16/9 = 1.7777778
#   L1 = (0.1 + 0.8) / 2 = 0.45; GIoU term = (0.4 + 16/9) / 2 = 1.0888889; box = 1.5388889
#   with box_weight = 2: box = 3.0777778, loss = 0.8047190 + 3.0777778 = 3.8824968
#
# Smooth L1 (beta = 1/9): image 0: 0.5 * 0.1^2 / (1/9) = 0.045 (0.1 < beta); image 1: 2 * (0.4 - 0.5/9) = 0.6888889;
#   box = (0.045 + 0.6888889) / 2 = 0.3669444
# ---------------------------------------------------------------------------------------------------------------

SIZE = (100, 200)  # (H, W)


def hand_outputs():
    return {"logits": torch.tensor([[0.0, 0.0, 0.0], [math.log(3.0), 0.0, 0.0]]),
            "boxes": torch.tensor([[0.4, 0.3, 0.4, 0.4], [0.5, 0.5, 0.2, 0.2]])}


def hand_targets():
    return [target([[20, 10, 100, 50]], [2]), target([[0, 0, 40, 20]], [0])]


def test_loss_matches_the_hand_worked_example():
    terms = localization_loss(hand_outputs(), hand_targets(), SIZE, box_weight=2.0)
    assert terms["class"].item() == pytest.approx((math.log(3) - math.log(0.6)) / 2, abs=1e-6)
    assert terms["class"].item() == pytest.approx(0.8047190, abs=1e-6)
    assert terms["box"].item() == pytest.approx(2 * (0.45 + (0.4 + 16 / 9) / 2), abs=1e-6)
    assert terms["loss"].item() == pytest.approx(3.8824968, abs=1e-6)
    assert set(terms) == {"class", "box", "loss"}


def test_smooth_l1_matches_the_hand_worked_example():
    terms = localization_loss(hand_outputs(), hand_targets(), SIZE, box_loss="smooth_l1")
    assert terms["box"].item() == pytest.approx((0.045 + 2 * (0.4 - 0.5 / 9)) / 2, abs=1e-6)
    assert terms["loss"].item() == pytest.approx(0.8047190 + 0.3669444, abs=1e-6)


def test_loss_gradients_are_finite_and_reach_both_heads():
    model = Localizer(create_model("fastcnn", widths=(8, 16), depths=1), num_classes=3, box_hidden=16)
    out = model(torch.rand(2, 1, 100, 200))
    localization_loss(out, hand_targets(), SIZE)["loss"].backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    assert all(g is not None and torch.isfinite(g).all() for g in grads.values())
    assert grads["box_head.fc2.bias"].abs().sum() > 0 and grads["backbone.fc.weight"].abs().sum() > 0


def test_metrics_match_a_hand_example():
    # image 0: argmax of (0, 0, 0) is class 0, truth 2: wrong class, IoU 0.6 (above); image 1: right class, IoU 0
    metrics = localization_metrics(hand_outputs(), hand_targets(), SIZE)
    assert metrics["accuracy"] == 0.5
    assert metrics["mean_iou"] == pytest.approx(0.3, abs=1e-6)
    assert metrics["iou50"] == 0.5
    assert metrics["acc_at_iou50"] == 0.0  # neither image is right in class AND box
    assert metrics["count"] == 2


def test_metrics_iou_uses_the_box_clipped_to_the_image():
    # 100x100: cxcywh (0.9, 0.5, 0.4, 0.2) -> (70, 40, 110, 60), clipped to (70, 40, 100, 60): area 600;
    # truth (80, 40, 100, 60): area 400, inside the clipped box: IoU 400/600 = 2/3 (unclipped it would be 0.5)
    out = {"logits": torch.tensor([[0.0, 1.0]]), "boxes": torch.tensor([[0.9, 0.5, 0.4, 0.2]])}
    metrics = localization_metrics(out, [target([[80, 40, 100, 60]], [1])], (100, 100))
    assert metrics["mean_iou"] == pytest.approx(2 / 3, abs=1e-6)
    assert metrics["accuracy"] == metrics["iou50"] == metrics["acc_at_iou50"] == 1.0


def test_decode_gives_pixel_boxes_labels_and_softmax_scores():
    # 64 high, 96 wide: cxcywh (0.5, 0.25, 0.25, 0.5) -> centre (48, 16), size 24 x 32 -> (36, 0, 60, 32)
    out = {"logits": torch.tensor([[1.0, 3.0, 0.0], [0.0, 0.0, 0.0]]),
           "boxes": torch.tensor([[0.5, 0.25, 0.25, 0.5], [0.1, 0.1, 0.1, 0.1]], requires_grad=True)}
    found = decode(out, (64, 96))
    assert len(found) == 2
    assert found[0]["boxes"][0].tolist() == pytest.approx([36.0, 0.0, 60.0, 32.0], abs=1e-4)
    assert found[0]["labels"].tolist() == [1]
    assert found[0]["scores"].item() == pytest.approx(math.exp(3) / (math.exp(1) + math.exp(3) + 1), abs=1e-6)
    assert found[1]["boxes"][0].tolist() == pytest.approx([4.8, 3.2, 14.4, 9.6], abs=1e-4)
    assert found[1]["scores"].item() == pytest.approx(1 / 3, abs=1e-6) and found[1]["labels"].tolist() == [0]
    assert not found[0]["boxes"].requires_grad and found[0]["boxes"].dtype == torch.float32


def test_decoded_outputs_run_through_the_coco_metrics():
    # exact predictions of the right class: AP 1; the same boxes with the wrong class: AP 0
    truth = [target([[20, 10, 100, 50]], [2]), target([[0, 0, 40, 20]], [0])]
    exact = {"logits": torch.tensor([[0.0, 0.0, 5.0], [5.0, 0.0, 0.0]]),
             "boxes": torch.tensor([[0.3, 0.3, 0.4, 0.4], [0.1, 0.1, 0.2, 0.2]])}
    assert coco_metrics(decode(exact, SIZE), truth, num_classes=3)["AP"] == pytest.approx(1.0)
    wrong = dict(exact, logits=exact["logits"].flip(1))
    assert coco_metrics(decode(wrong, SIZE), truth, num_classes=3)["AP"] == pytest.approx(0.0)


# ---------------------------------------------------------------------------------------------------------------
# One object per image
# ---------------------------------------------------------------------------------------------------------------

def test_an_image_without_an_object_is_an_error_naming_it():
    targets = [target([[0, 0, 4, 4]], [0]), target([], [])]
    outputs = {"logits": torch.zeros(2, 2), "boxes": torch.full((2, 4), 0.5)}
    with pytest.raises(LabelError, match=r"target 1: the image has no object") as error:
        localization_loss(outputs, targets, (8, 8))
    assert isinstance(error.value, ConvkitError)
    with pytest.raises(LabelError, match=r"target 1"):
        localization_metrics(outputs, targets, (8, 8))


def test_several_objects_are_an_error_or_the_largest():
    targets = [target([[0, 0, 4, 4]], [0]), target([[0, 0, 2, 2], [0, 0, 6, 6], [1, 1, 7, 7]], [0, 1, 0])]
    outputs = {"logits": torch.zeros(2, 2), "boxes": torch.full((2, 4), 0.5)}
    with pytest.raises(LabelError, match=r"target 1: the image has 3 objects"):
        localization_loss(outputs, targets, (8, 8))
    boxes, labels = single_boxes(targets, multiple="largest")  # two of area 36: the first
    assert boxes.tolist() == [[0, 0, 4, 4], [0, 0, 6, 6]] and labels.tolist() == [0, 1]
    assert localization_loss(outputs, targets, (8, 8), multiple="largest")["loss"].isfinite()


def test_crowd_regions_are_not_the_object():
    t = target([[0, 0, 8, 8], [2, 2, 4, 4]], [1, 0], iscrowd=torch.tensor([True, False]))
    boxes, labels = single_boxes([t])
    assert boxes.tolist() == [[2, 2, 4, 4]] and labels.tolist() == [0]


def test_bad_labels_shapes_and_options_are_named():
    outputs = {"logits": torch.zeros(1, 2), "boxes": torch.full((1, 4), 0.5)}
    with pytest.raises(LabelError, match=r"target 0: label 2 is outside the 2 classes 0..1"):
        localization_loss(outputs, [target([[0, 0, 4, 4]], [2])], (8, 8))
    with pytest.raises(ValueError, match=r"box_loss must be one of l1\+giou, smooth_l1"):
        localization_loss(outputs, [target([[0, 0, 4, 4]], [1])], (8, 8), box_loss="l2")
    with pytest.raises(ValueError, match=r"2 targets for 1 outputs"):
        localization_loss(outputs, [target([[0, 0, 4, 4]], [1])] * 2, (8, 8))
    with pytest.raises(ValueError, match=r"target 0: boxes must be \(M, 4\)"):
        localization_loss(outputs, [{"boxes": torch.zeros(1, 3), "labels": torch.zeros(1)}], (8, 8))
    with pytest.raises(ValueError, match=r"logits \(N, C\) and boxes \(N, 4\)"):
        decode({"logits": torch.zeros(1, 2), "boxes": torch.zeros(1, 5)}, (8, 8))


# ---------------------------------------------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------------------------------------------

def test_outputs_are_bounded_and_start_at_the_centred_box():
    model = Localizer(create_model("fastcnn"), num_classes=4)
    out = model(torch.rand(3, 1, 40, 56))
    assert out["logits"].shape == (3, 4) and out["boxes"].shape == (3, 4)
    assert torch.equal(out["boxes"], torch.full((3, 4), 0.5))
    with torch.no_grad():
        model.box_head.fc2.bias.fill_(100.0)
    assert bool(((out := model(torch.rand(1, 1, 40, 56))["boxes"]) <= 1).all() and (out >= 0).all())


def test_backbones_with_and_without_their_own_head():
    resnet = Localizer(create_model("resnet18"), num_classes=3)
    assert resnet(torch.zeros(1, 3, 64, 64))["logits"].shape == (1, 3)
    assert resnet.backbone.fc.out_features == 3  # the backbone's classifier, reset to the classes

    class Body(torch.nn.Module):
        num_features = 8

        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(1, 8, 3)

        def forward_features(self, x):
            return self.conv(x)

    bare = Localizer(Body(), num_classes=2, box_head=BoxHead(8, pool=2, hidden=4))
    assert bare(torch.zeros(2, 1, 16, 16))["logits"].shape == (2, 2)
    assert [s.name for s in model_stages(bare)][-1] == "head"
    with pytest.raises(ModelArgumentError, match=r"forward_features\(\) and num_features"):
        Localizer(torch.nn.Conv2d(1, 1, 1), num_classes=2)
    with pytest.raises(ModelArgumentError, match=r"num_classes must be an integer >= 1, got 0"):
        Localizer(create_model("fastcnn"), num_classes=0)


def test_stage_layout_freezes_the_body_and_trains_both_heads():
    model = Localizer(create_model("fastcnn"), num_classes=2)
    stages = model_stages(model)
    assert [s.name for s in stages] == ["stage1", "stage2", "stage3", "head"]
    assert {p.split(".")[0] for p in stages[-1].params} == {"backbone", "box_head"}
    record = freeze(model, trainable="head")
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == set(record.trainable_params)
    assert trainable == {"backbone.fc.weight", "backbone.fc.bias", "box_head.fc1.weight", "box_head.fc1.bias",
                         "box_head.fc2.weight", "box_head.fc2.bias"}
    assert [g["name"] for g in param_groups(model, lr=0.1)] == ["head"]


# ---------------------------------------------------------------------------------------------------------------
# Learning: 4 synthetic images (a bright square or disc of varying position and size), then real scenes
# ---------------------------------------------------------------------------------------------------------------

def shapes(side=32):
    """Class 0: a filled square; class 1: a filled disc, whose box is its bounding square."""
    spec = [(0, 4, 6, 14, 16), (1, 16, 10, 28, 22), (0, 18, 3, 30, 15), (1, 2, 14, 12, 24)]
    yy, xx = torch.meshgrid(torch.arange(side) + 0.5, torch.arange(side) + 0.5, indexing="ij")
    images, targets = torch.zeros(len(spec), 1, side, side), []
    for i, (c, x1, y1, x2, y2) in enumerate(spec):
        if c == 0:
            images[i, 0, y1:y2, x1:x2] = 1.0
        else:
            r = (x2 - x1) / 2
            images[i, 0] = (((xx - (x1 + x2) / 2) ** 2 + (yy - (y1 + y2) / 2) ** 2) <= r * r).float()
        targets.append(target([[x1, y1, x2, y2]], [c]))
    return images, targets


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_overfits_four_synthetic_shapes(one_thread):
    torch.manual_seed(0)
    images, targets = shapes()
    model = Localizer(create_model("fastcnn", num_classes=2, widths=(8, 16, 16), depths=1), num_classes=2,
                      box_hidden=64)
    before = localization_metrics(model(images), targets, (32, 32))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(150):
        loss = localization_loss(model(images), targets, (32, 32))["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        after = localization_metrics(model(images), targets, (32, 32))
    assert before["mean_iou"] < 0.5
    assert after["accuracy"] == 1.0 and after["acc_at_iou50"] == 1.0
    assert after["mean_iou"] > 0.8


def test_two_epochs_on_fashion_mnist_scenes(one_thread):
    from convkit.tasks.detection.scenes import make_scenes

    torch.manual_seed(0)
    images, targets, classes = make_scenes(64, objects=(1, 1), masks=False)  # one item per 96x96 image
    model = Localizer(create_model("fastcnn", widths=(8, 16, 32), depths=1), num_classes=len(classes),
                      box_hidden=64)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    size = tuple(images.shape[-2:])
    epochs = []
    for _ in range(2):  # 4 batches of 16 each (about 0.7 s)
        losses = []
        for i in range(0, len(images), 16):
            terms = localization_loss(model(images[i:i + 16].float() / 255), targets[i:i + 16], size)
            optimizer.zero_grad()
            terms["loss"].backward()
            optimizer.step()
            losses.append(terms["loss"].item())
        epochs.append(sum(losses) / len(losses))
    assert epochs[1] < epochs[0]  # measured 4.3 -> 3.1
    model.eval()
    with torch.no_grad():
        out = model(images.float() / 255)
    metrics = localization_metrics(out, targets, size)
    assert metrics["count"] == 64 and 0 <= metrics["mean_iou"] <= 1
    found = decode(out, size)
    assert len(found) == 64 and all(((d["boxes"] >= 0) & (d["boxes"] <= 96)).all() for d in found)
