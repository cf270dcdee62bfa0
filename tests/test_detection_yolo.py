"""YOLO v1 (issue 13): the loss of equation (3) against a 2x2 example worked by hand, the known pitfalls of
reimplementations, encoding, decoding with NMS, and a tiny overfit on a fastcnn backbone."""

import math

import pytest
import torch
from torchvision.ops import box_iou

from convkit.data.errors import LabelError
from convkit.errors import ConvkitError
from convkit.models import create_model
from convkit.models._registry import ModelArgumentError
from convkit.reuse import model_stages
from convkit.tasks.detection.yolo import YoloV1, YoloV1Head, decode, encode_targets, yolo_v1_loss


def target(boxes, labels, **extra):
    return {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            "labels": torch.tensor(labels, dtype=torch.int64), **extra}


def cell(*predictors_and_probs):
    """One cell's numbers: B boxes of (x, y, w, h, conf), then the class probabilities."""
    return [v for part in predictors_and_probs for v in part]


# ---------------------------------------------------------------------------------------------------------------
# The hand-worked example: a 100x100 image, S = 2 (cells of 50x50 pixels), B = 2, C = 2, two objects.
#
# object 1: class 0, pixels (16, 16, 32, 32): centre (24, 24) -> cell row 0, column 0; offset 24/50 = 0.48 both
#           ways; w = h = 16/100 = 0.16 (sqrt 0.4). Image frame: [0.16, 0.32] x [0.16, 0.32].
# object 2: class 1, pixels (57, 0, 93, 64): centre (75, 32) -> row 0 (32/50 = 0.64), column 1 (75/50 = 1.5);
#           offset x 0.5, y 0.64; w 0.36 (sqrt 0.6), h 0.64 (sqrt 0.8). Image frame: [0.57, 0.93] x [0, 0.64].
#           (Off the diagonal, so a row/column swap puts it in the wrong cell.)
HAND_TARGETS = [target([[16, 16, 32, 32], [57, 0, 93, 64]], [0, 1])]
HAND_PRED = torch.tensor([[[
    # row 0, column 0 (object 1). Both predictors lie inside the object's box, so IoU = their area / its area:
    #   P0: centre (0 + 0.52) / 2 = 0.26, 0.24, size 0.04: [0.24, 0.28] x [0.22, 0.26]; IoU 0.04^2/0.16^2 = 1/16
    #   P1: centre 0.25, 0.22, size 0.09: [0.205, 0.295] x [0.175, 0.265]; IoU 0.09^2/0.16^2 = 81/256 -> responsible
    cell([0.52, 0.48, 0.04, 0.04, 0.5], [0.50, 0.44, 0.09, 0.09, 0.6], [0.7, 0.3]),
    # row 0, column 1 (object 2):
    #   P0: centre (1 + 0.5) / 2 = 0.75, 0.32, size 0.25 x 0.64: [0.625, 0.875] x [0, 0.64];
    #       IoU (0.25 * 0.64) / (0.36 * 0.64) = 25/36 -> responsible
    #   P1: centre 0.75, 0.32, size 0.16: [0.67, 0.83] x [0.24, 0.40]; IoU 0.16^2 / (0.36 * 0.64) = 1/9
    cell([0.5, 0.64, 0.25, 0.64, 0.8], [0.5, 0.64, 0.16, 0.16, 0.3], [0.4, 0.6]),
], [
    # row 1: no objects; only the confidences count (noobj). Garbage boxes, a negative width among them.
    cell([0.3, 0.3, -0.2, 0.5, 0.1], [0.9, 0.1, 0.3, -0.4, 0.2], [0.9, 0.1]),
    cell([0.0, 0.0, 0.0, 0.0, 0.0], [0.2, 0.2, 0.2, 0.2, 0.3], [0.5, 0.5]),
]]])

# The five terms by hand:
#   xy    = 5 * [(0.50 - 0.48)^2 + (0.44 - 0.48)^2]                      (P1 of cell 00; P0 of cell 01 is exact)
#         = 5 * (0.0004 + 0.0016) = 0.01
#   wh    = 5 * [(0.3 - 0.4)^2 * 2                                       (cell 00, P1: sqrt 0.09 against sqrt 0.16)
#              + (0.5 - 0.6)^2 + (0.8 - 0.8)^2]                          (cell 01, P0: sqrt 0.25 against sqrt 0.36)
#         = 5 * (0.02 + 0.01) = 0.15
#   obj   = (0.6 - 81/256)^2 + (0.8 - 25/36)^2 = 0.28359375^2 + (3.8/36)^2 = 0.0804254150 + 0.0111419753
#   noobj = 0.5 * [0.5^2 (cell 00 P0) + 0.3^2 (cell 01 P1) + 0.1^2 + 0.2^2 (cell 10) + 0^2 + 0.3^2 (cell 11)]
#         = 0.5 * (0.25 + 0.09 + 0.05 + 0.09) = 0.24
#   class = [(0.7 - 1)^2 + (0.3 - 0)^2] + [(0.4 - 0)^2 + (0.6 - 1)^2] = 0.18 + 0.32 = 0.5  (row 1's cells: none)
HAND_TERMS = {"xy": 0.01, "wh": 0.15, "obj": (0.6 - 81 / 256) ** 2 + (0.8 - 25 / 36) ** 2, "noobj": 0.24,
              "class": 0.5}
HAND_TERMS["loss"] = sum(HAND_TERMS.values())  # 0.99156739...


def test_hand_worked_encoding():
    enc = encode_targets(HAND_TARGETS, S=2, C=2, image_size=(100, 100))
    assert enc.has_object[0].tolist() == [[True, True], [False, False]]
    assert enc.boxes[0, 0, 0].tolist() == pytest.approx([0.48, 0.48, 0.16, 0.16])
    assert enc.boxes[0, 0, 1].tolist() == pytest.approx([0.5, 0.64, 0.36, 0.64])
    assert enc.classes[0].tolist() == [[[1, 0], [0, 1]], [[0, 0], [0, 0]]]
    assert enc.boxes[0, 1].abs().sum() == 0 and enc.dropped == 0


def test_hand_worked_loss_term_by_term():
    enc = encode_targets(HAND_TARGETS, S=2, C=2, image_size=(100, 100))
    terms = yolo_v1_loss(HAND_PRED, enc, S=2, B=2, C=2)
    assert set(terms) == set(HAND_TERMS)
    for name, expected in HAND_TERMS.items():
        assert terms[name].item() == pytest.approx(expected, abs=1e-5), name


def test_loss_weights_and_batch_mean():
    """The lambdas scale their terms only, and a batch of two copies gives the loss per image (sum / N)."""
    enc = encode_targets(HAND_TARGETS, S=2, C=2, image_size=(100, 100))
    plain = yolo_v1_loss(HAND_PRED, enc, S=2, B=2, C=2, lambda_coord=1.0, lambda_noobj=1.0)
    assert plain["xy"].item() == pytest.approx(0.002, abs=1e-6)
    assert plain["wh"].item() == pytest.approx(0.03, abs=1e-5)
    assert plain["noobj"].item() == pytest.approx(0.48, abs=1e-6)
    assert plain["class"].item() == pytest.approx(0.5, abs=1e-6)

    twice = encode_targets(HAND_TARGETS * 2, S=2, C=2, image_size=(100, 100))
    doubled = yolo_v1_loss(HAND_PRED.repeat(2, 1, 1, 1), twice, S=2, B=2, C=2)
    assert doubled["loss"].item() == pytest.approx(HAND_TERMS["loss"], abs=1e-5)
    # a second image with nothing in it and nothing predicted halves the per-image loss
    empty = encode_targets(HAND_TARGETS + [target([], [])], S=2, C=2, image_size=(100, 100))
    mixed = yolo_v1_loss(torch.cat([HAND_PRED, torch.zeros_like(HAND_PRED)]), empty, S=2, B=2, C=2)
    assert mixed["loss"].item() == pytest.approx(HAND_TERMS["loss"] / 2, abs=1e-5)


def test_responsible_predictor_is_chosen_by_iou_in_the_image_frame():
    """S = 2, one object centred in cell 00 (offset 0.5, 0.5; w = h = 0.5; image frame [0, 0.5]^2).

    A: offset (0.5, 0.5), size 0.25: image frame [0.125, 0.375]^2 inside the object: IoU 0.25^2 / 0.5^2 = 0.25.
    B: offset (0.9, 0.5), size 0.5: image frame [0.2, 0.7] x [0, 0.5]: overlap 0.3 * 0.5 = 0.15, union
       0.25 + 0.25 - 0.15 = 0.35: IoU 3/7 = 0.43 -> B is responsible.
    Mixing frames (cell offsets with image sizes) gives A 0.25 and B 0.05 / 0.45 = 0.11, and would pick A.
    """
    enc = encode_targets([target([[0, 0, 50, 50]], [0])], S=2, C=1, image_size=(100, 100))
    pred = torch.zeros(1, 2, 2, 2 * 5 + 1)
    pred[0, 0, 0] = torch.tensor([0.5, 0.5, 0.25, 0.25, 0.0, 0.9, 0.5, 0.5, 0.5, 0.0, 1.0])
    # the premise: in the mixed frame A wins
    mixed = box_iou(torch.tensor([[0.375, 0.375, 0.625, 0.625], [0.65, 0.25, 1.15, 0.75]]),
                    torch.tensor([[0.25, 0.25, 0.75, 0.75]]))
    assert mixed[0, 0] > mixed[1, 0]
    terms = yolo_v1_loss(pred, enc, S=2, B=2, C=1, lambda_coord=1.0)
    assert terms["xy"].item() == pytest.approx(0.4 ** 2)  # B's x: 0.9 against 0.5; A's would be 0
    assert terms["wh"].item() == pytest.approx(0.0, abs=1e-6)  # B's size is exact; A's would not be
    assert terms["obj"].item() == pytest.approx((3 / 7) ** 2, abs=1e-6)  # conf 0 against IoU 3/7


def test_confidence_target_is_detached():
    """The obj term's target (the IoU) carries no gradient into the box: only conf moves."""
    enc = encode_targets(HAND_TARGETS, S=2, C=2, image_size=(100, 100))
    pred = HAND_PRED.clone().requires_grad_(True)
    yolo_v1_loss(pred, enc, S=2, B=2, C=2)["obj"].backward()
    grad = pred.grad[0, 0, 0, :10].view(2, 5)
    assert grad[:, :4].abs().sum() == 0
    assert grad[1, 4].item() == pytest.approx(2 * (0.6 - 81 / 256), abs=1e-6)  # d/dconf (conf - IoU)^2, P1
    assert grad[0, 4].item() == 0  # P0 is not responsible: no obj term


@pytest.mark.parametrize("w, h", [(-0.25, -0.01), (0.0, 0.0), (-1e-9, 0.5)])
def test_negative_or_zero_sizes_give_finite_loss_and_gradients(w, h):
    """S = B = C = 1; the object fills the image (w = h = 1). A plain sqrt of w would be NaN."""
    enc = encode_targets([target([[0, 0, 10, 10]], [0])], S=1, C=1, image_size=(10, 10))
    pred = torch.tensor([[[[0.5, 0.5, w, h, 1.0, 1.0]]]], requires_grad=True)
    assert torch.isnan(torch.sqrt(pred[..., 2:4])).any() == (w < 0 or h < 0)  # the pitfall is real
    terms = yolo_v1_loss(pred, enc, S=1, B=1, C=1)
    assert all(torch.isfinite(v) for v in terms.values())
    terms["loss"].backward()
    assert torch.isfinite(pred.grad).all()
    assert (pred.grad[0, 0, 0, 2:4] < 0).all()  # descent makes w and h larger, towards the target 1
    root = [math.copysign(math.sqrt(abs(v) + 1e-6), v if v else 1.0) for v in (w, h)]
    assert terms["wh"].item() == pytest.approx(5 * ((root[0] - 1) ** 2 + (root[1] - 1) ** 2), rel=1e-5)


def test_encode_non_square_image_and_edges():
    # H = 50, W = 100: (60, 0, 100, 20) has centre (80, 10): column 80/100*2 = 1.6, row 10/50*2 = 0.4
    # (swapping H and W would put it in row 0 with a y offset of 0.2 and a column clamped to the last)
    enc = encode_targets([target([[60, 0, 100, 20], [40, 15, 60, 35]], [0, 1])], S=2, C=2, image_size=(50, 100))
    assert enc.boxes[0, 0, 1].tolist() == pytest.approx([0.6, 0.4, 0.4, 0.4])
    # centre (50, 25) is on both cell edges: it belongs to the cell below and to the right, offset 0
    assert enc.boxes[0, 1, 1].tolist() == pytest.approx([0.0, 0.0, 0.2, 0.4])
    assert enc.has_object.sum() == 2
    # centre (100, 50) is the image's far corner: the last cell, offset just under 1
    corner = encode_targets([target([[90, 40, 110, 60]], [0])], S=2, C=2, image_size=(50, 100))
    assert corner.has_object[0].tolist() == [[False, False], [False, True]]
    assert corner.boxes[0, 1, 1].tolist() == pytest.approx([1.0, 1.0, 0.2, 0.4], abs=1e-3)


def test_encode_one_object_per_cell_keeps_the_largest():
    small, large = [0, 0, 20, 20], [5, 5, 45, 45]  # centres (10, 10) and (25, 25): both in cell 00 at S = 2
    for boxes, labels in (([small, large], [0, 1]), ([large, small], [1, 0])):
        enc = encode_targets([target(boxes, labels)], S=2, C=2, image_size=(100, 100))
        assert enc.dropped == 1
        assert enc.classes[0, 0, 0].tolist() == [0, 1]
        assert enc.boxes[0, 0, 0].tolist() == pytest.approx([0.5, 0.5, 0.4, 0.4])


def test_encode_leaves_out_crowds_and_allows_empty_images():
    crowd = target([[0, 0, 40, 40], [60, 60, 90, 90]], [0, 1], iscrowd=torch.tensor([True, False]))
    enc = encode_targets([crowd, target([], [])], S=2, C=2, image_size=(100, 100))
    assert enc.has_object.tolist() == [[[False, False], [False, True]], [[False, False], [False, False]]]


def test_encode_rejects_an_unknown_class():
    with pytest.raises(LabelError, match=r"target 1: label 2 is outside the 2 classes 0\.\.1") as err:
        encode_targets([target([[0, 0, 5, 5]], [1]), target([[0, 0, 5, 5]], [2])], S=2, C=2, image_size=(10, 10))
    assert isinstance(err.value, ConvkitError)


def perfect_prediction(enc, B, C):
    """The layout that predicts ``enc`` exactly with each cell's first predictor, conf 1; the others conf 0."""
    N, S = enc.boxes.shape[:2]
    pred = torch.zeros(N, S, S, B * 5 + C)
    pred[..., :4] = enc.boxes
    pred[..., 4] = enc.has_object.float()
    pred[..., B * 5:] = enc.classes
    return pred


def test_decode_round_trips_a_perfect_prediction():
    # H = 96, W = 128, S = 4: cells of 32 x 24 pixels; the third box's centre (64, 48) lies on cell edges
    # centres (50, 22.5), (102, 77), (64, 48): cells (row 0, column 1), (3, 3), (2, 2)
    boxes = [[30, 5, 70, 40], [80, 60, 124, 94], [0, 0, 128, 96]]
    targets = [target(boxes, [1, 0, 2]), target([], [])]
    enc = encode_targets(targets, S=4, C=3, image_size=(96, 128))
    assert enc.has_object.sum() == 3
    out = decode(perfect_prediction(enc, B=2, C=3), S=4, B=2, C=3, image_size=(96, 128))
    assert len(out) == 2 and len(out[1]["boxes"]) == 0
    order = out[0]["labels"].argsort()
    assert out[0]["labels"][order].tolist() == [0, 1, 2]
    assert torch.allclose(out[0]["boxes"][order], torch.tensor(boxes, dtype=torch.float32)[[1, 0, 2]], atol=1.0)
    assert out[0]["scores"].tolist() == pytest.approx([1.0, 1.0, 1.0])
    assert out[0]["labels"].dtype == torch.int64


def test_decode_nms_removes_a_duplicate():
    enc = encode_targets([target([[10, 5, 50, 40]], [1])], S=4, C=3, image_size=(96, 128))
    pred = perfect_prediction(enc, B=2, C=3)
    row, col = enc.has_object[0].nonzero()[0].tolist()
    pred[0, row, col, 5:10] = pred[0, row, col, :5] + torch.tensor([0.05, 0.05, 0.0, 0.0, -0.1])  # 2 px off, 0.9
    assert len(decode(pred, S=4, B=2, C=3, image_size=(96, 128))[0]["boxes"]) == 1
    kept = decode(pred, S=4, B=2, C=3, image_size=(96, 128), iou_threshold=0.99)[0]  # NMS did it
    assert kept["scores"].tolist() == pytest.approx([1.0, 0.9])


def test_decode_threshold_is_class_specific_and_strict():
    """C_j = conf * p(c): conf 0.5 with p = (0.4, 0.6) scores 0.2 and 0.3; only 0.3 is over 0.2."""
    pred = torch.zeros(1, 1, 1, 5 + 2)
    pred[0, 0, 0] = torch.tensor([0.5, 0.5, 0.5, 0.5, 0.5, 0.4, 0.6])
    out = decode(pred, S=1, B=1, C=2, image_size=(10, 10), conf_threshold=0.2)[0]
    assert out["labels"].tolist() == [1] and out["scores"].tolist() == pytest.approx([0.3])
    assert out["boxes"][0].tolist() == pytest.approx([2.5, 2.5, 7.5, 7.5])


def test_model_shapes_channels_and_errors():
    colour = YoloV1(create_model("fastcnn", in_channels=3), S=3, B=2, C=4, hidden=16)
    assert colour(torch.zeros(2, 3, 40, 56)).shape == (2, 3, 3, 14)
    linear = YoloV1(create_model("fastcnn"), S=2, B=1, C=2, hidden=8, activation="linear")
    assert linear(torch.randn(1, 1, 32, 32)).shape == (1, 2, 2, 7)
    with pytest.raises(ModelArgumentError, match="activation"):
        YoloV1Head(8, activation="relu")
    with pytest.raises(ModelArgumentError, match="S must be an integer >= 1"):
        YoloV1Head(8, S=0)
    with pytest.raises(ModelArgumentError, match="forward_features"):
        YoloV1(torch.nn.Conv2d(1, 4, 3))
    with pytest.raises(ValueError, match=r"\(N, 2, 2, 12\)"):
        yolo_v1_loss(HAND_PRED[:, :1], encode_targets(HAND_TARGETS, 2, 2, (100, 100)), S=2, B=2, C=2)


def test_stage_layout_covers_every_parameter():
    model = YoloV1(create_model("fastcnn"), S=2, B=2, C=2, hidden=8)
    stages = model_stages(model)
    assert [s.name for s in stages] == ["stage1", "stage2", "stage3", "head"]
    assert stages[-1].modules == ["head"]


@pytest.fixture
def one_thread():
    """A model this small gains nothing from a second thread, and loses much on a busy machine (25 s against 3 s
    measured with 2 threads on 2 shared cores)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_overfits_two_synthetic_images(one_thread):
    """A white square on black, class 0 in one image and class 1 in the other: 100 Adam steps learn both."""
    squares = [(8, 10, 28, 34), (30, 24, 58, 44)]
    images = torch.zeros(2, 1, 64, 64)
    for i, (x1, y1, x2, y2) in enumerate(squares):
        images[i, :, y1:y2, x1:x2] = 1.0
    targets = [target([box], [i]) for i, box in enumerate(squares)]
    model = YoloV1(create_model("fastcnn", widths=(8, 16, 32), depths=1), S=4, B=2, C=2, hidden=64)
    enc = encode_targets(targets, S=4, C=2, image_size=(64, 64))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    first = None
    for _ in range(100):
        terms = model.loss(model(images), enc)
        first = first if first is not None else terms["loss"].item()
        optimizer.zero_grad()
        terms["loss"].backward()
        optimizer.step()
    assert terms["loss"].item() < 0.1 < first
    model.eval()
    with torch.no_grad():
        found = model.decode(model(images), image_size=(64, 64))
    for i, (square, detections) in enumerate(zip(squares, found)):
        assert detections["labels"][0].item() == i
        assert box_iou(detections["boxes"][:1], torch.tensor([square], dtype=torch.float32)).item() > 0.7
