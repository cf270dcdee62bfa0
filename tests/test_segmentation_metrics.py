"""Segmentation metrics (a confusion matrix worked by hand, sklearn's, the absent-class rule, all-ignore input) and
pictures (palette, the overlay's blend at known pixels, legends, files written)."""

import math

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.metrics import confusion_matrix as sk_confusion_matrix

from convkit.tasks.segmentation.metrics import ConfusionMeter, confusion_matrix, segmentation_metrics
from convkit.tasks.segmentation.plots import (
    _curves_figure,
    _grid_figure,
    _iou_figure,
    _overlay_figure,
    draw_segmentation_grid,
    legend_entries,
    overlay,
    palette,
    plot_iou_bars,
    plot_segmentation_curves,
    save_overlay,
)

# ------------------------------------------------------------------------------------------------------- metrics


def test_confusion_matrix_worked_by_hand():
    target = torch.tensor([[0, 0, 1, 1],
                           [0, 2, 2, 255],
                           [1, 1, 2, 255]])
    pred = torch.tensor([[0, 1, 1, 1],
                         [0, 2, 1, 0],
                         [1, 0, 2, 2]])
    # Pixels by (truth, prediction), the two 255 pixels skipped:
    #   truth 0: (0,0) (0,1) (0,0)         -> [2, 1, 0]
    #   truth 1: (1,1) (1,1) (1,1) (1,0)   -> [1, 3, 0]
    #   truth 2: (2,2) (2,1) (2,2)         -> [0, 1, 2]
    expected = torch.tensor([[2, 1, 0], [1, 3, 0], [0, 1, 2]])
    m = confusion_matrix(pred, target, 3)
    assert m.dtype == torch.int64 and torch.equal(m, expected)
    # IoU_k = TP / (row + column - TP): 2/(3+3-2), 3/(4+5-3), 2/(3+2-2)
    metrics = segmentation_metrics(m, ["background", "cat", "dog"])
    assert metrics["iou"] == pytest.approx([2 / 4, 3 / 6, 2 / 3])
    assert metrics["miou"] == pytest.approx((1 / 2 + 1 / 2 + 2 / 3) / 3)
    assert metrics["pixel_accuracy"] == pytest.approx(7 / 10)
    assert metrics["accuracy"] == pytest.approx([2 / 3, 3 / 4, 2 / 3])
    assert metrics["mean_accuracy"] == pytest.approx((2 / 3 + 3 / 4 + 2 / 3) / 3)
    assert metrics["frequency_weighted_iou"] == pytest.approx(3 / 10 * 1 / 2 + 4 / 10 * 1 / 2 + 3 / 10 * 2 / 3)
    assert metrics["present"] == [True, True, True] and metrics["pixels"] == 10
    assert metrics["classes"] == ["background", "cat", "dog"]


def test_confusion_matrix_equals_sklearn_with_ignored_pixels():
    g = torch.Generator().manual_seed(0)
    k = 6
    target = torch.randint(0, k, (4, 17, 23), generator=g)
    target[torch.rand(target.shape, generator=g) < 0.2] = 255
    pred = torch.randint(0, k, target.shape, generator=g)
    keep = (target != 255).flatten().numpy()
    expected = sk_confusion_matrix(target.flatten().numpy()[keep], pred.flatten().numpy()[keep], labels=list(range(k)))
    assert np.array_equal(confusion_matrix(pred, target.to(torch.uint8), k).numpy(), expected)
    meter = ConfusionMeter(k)  # batch by batch: the same sum
    for p, t in zip(pred, target):
        meter.update(p, t)
    assert np.array_equal(meter.matrix.numpy(), expected)
    meter.reset()
    assert int(meter.matrix.sum()) == 0


def test_absent_classes_rule():
    # Class 2 is in neither truth nor prediction: undefined, left out. Class 3 is predicted but never true: IoU 0,
    # counted.
    target = torch.tensor([0, 0, 1, 1, 1, 0])
    pred = torch.tensor([0, 3, 1, 1, 0, 0])
    m = segmentation_metrics(confusion_matrix(pred, target, 4))
    # class 0: TP 2, row 3, column 3 -> 2/4; class 1: TP 2, row 3, column 2 -> 2/3; class 3: 0/(0+1-0) = 0
    assert m["iou"][2] is None and m["iou"][3] == 0.0
    assert m["iou"][:2] == pytest.approx([1 / 2, 2 / 3])
    assert m["miou"] == pytest.approx((1 / 2 + 2 / 3 + 0) / 3)
    assert m["accuracy"][2] is None and m["accuracy"][3] is None
    assert m["present"] == [True, True, False, False]
    assert m["mean_accuracy"] == pytest.approx((2 / 3 + 2 / 3) / 2)


def test_all_ignored_input_gives_undefined_metrics():
    target = torch.full((2, 5, 5), 255, dtype=torch.uint8)
    m = confusion_matrix(torch.zeros(2, 5, 5, dtype=torch.long), target, 3)
    assert int(m.sum()) == 0
    metrics = segmentation_metrics(m)
    assert math.isnan(metrics["miou"]) and math.isnan(metrics["pixel_accuracy"])
    assert math.isnan(metrics["mean_accuracy"]) and math.isnan(metrics["frequency_weighted_iou"])
    assert metrics["iou"] == [None] * 3 and metrics["present"] == [False] * 3


def test_out_of_range_ids_and_bad_shapes_are_errors():
    with pytest.raises(ValueError, match="prediction holds class id 3, outside 0..2"):
        confusion_matrix(torch.tensor([0, 3]), torch.tensor([0, 1]), 3)
    with pytest.raises(ValueError, match="target holds class id 7"):
        confusion_matrix(torch.tensor([0, 1]), torch.tensor([7, 1]), 3)
    with pytest.raises(ValueError, match="shape"):
        confusion_matrix(torch.zeros(2, 3, dtype=torch.long), torch.zeros(3, 2, dtype=torch.long), 3)
    with pytest.raises(ValueError, match="argmax"):
        confusion_matrix(torch.zeros(2, 3), torch.zeros(2, 3, dtype=torch.long), 3)
    # a prediction outside the classes is an error even on an ignored pixel's neighbour, not on the ignored pixel
    assert int(confusion_matrix(torch.tensor([9, 1]), torch.tensor([255, 1]), 3).sum()) == 1


# ------------------------------------------------------------------------------------------------------ pictures


def test_palette_is_black_then_distinct_and_never_white():
    colours = palette(60)
    assert colours.shape == (60, 3) and colours.dtype == np.uint8
    assert colours[0].tolist() == [0, 0, 0]
    assert len({tuple(c) for c in colours.tolist()}) == 60
    assert [255, 255, 255] not in colours.tolist()


def test_overlay_blends_known_pixels_by_hand():
    image = torch.tensor([[[10, 200], [90, 60]], [[20, 100], [91, 61]], [[30, 0], [92, 62]]], dtype=torch.uint8)
    mask = torch.tensor([[0, 2], [255, 1]], dtype=torch.uint8)
    out = overlay(image, mask, num_classes=3, alpha=0.3)
    assert out.shape == (2, 2, 3) and out.dtype == np.uint8
    colour = palette(3)
    assert out[0, 0].tolist() == [10, 20, 30]  # background: the image
    for (y, x), c in (((0, 1), colour[2]), ((1, 1), colour[1]), ((1, 0), np.array([255, 255, 255]))):
        hand = [round(0.7 * int(image[ch, y, x]) + 0.3 * int(c[ch])) for ch in range(3)]
        assert out[y, x].tolist() == hand
    gray = overlay(image[:1], mask, 3, alpha=0.3)  # a grayscale image is drawn grey
    assert gray[0, 0].tolist() == [10, 10, 10]
    with pytest.raises(ValueError, match="class id 5"):
        overlay(image, torch.tensor([[0, 5], [0, 0]]), 3)


def test_overlay_legend_names_present_classes(tmp_path):
    classes = ["background", "cat", "dog", "bird"]
    mask = torch.zeros(12, 16, dtype=torch.uint8)
    mask[2:5, 2:5], mask[8:, 8:] = 3, 255
    fig = _overlay_figure(torch.zeros(1, 12, 16, dtype=torch.uint8), mask, classes, "x")
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["background", "bird", "ignore"]
    path = save_overlay(torch.zeros(1, 12, 16, dtype=torch.uint8), mask, classes, tmp_path / "o.png")
    assert Image.open(path).format == "PNG"
    assert [name for name, _ in legend_entries([mask, torch.ones(2, 2)], classes)] == ["background", "cat", "bird",
                                                                                       "ignore"]


def test_iou_bars_mark_undefined_classes(tmp_path):
    fig = _iou_figure([0.9, None, 0.4], ["background", "cat", "dog"])
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert texts == ["0.900", "n/a", "0.400"]
    assert fig.axes[0].get_legend().get_texts()[0].get_text() == "mIoU 0.650"
    assert Image.open(plot_iou_bars([0.9, None, 0.4], ["background", "cat", "dog"], tmp_path / "iou.png")).size[0] > 100


def test_grid_has_three_columns_per_row_and_one_legend(tmp_path):
    images = torch.zeros(5, 3, 16, 16, dtype=torch.uint8)
    truths = torch.zeros(5, 16, 16, dtype=torch.uint8)
    truths[:, 4:8, 4:8] = 1
    predictions = truths.clone()
    predictions[0, 10:, 10:] = 2
    fig = _grid_figure(images, truths, predictions, ["background", "cat", "dog"], count=3)
    assert len(fig.axes) == 9 and [ax.get_title() for ax in fig.axes[:3]] == ["image", "truth", "prediction"]
    assert len(fig.legends) == 1
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["background", "cat", "dog"]
    path = draw_segmentation_grid(images, truths, predictions, ["background", "cat", "dog"], tmp_path / "g.png")
    assert Image.open(path).format == "PNG"


def test_curves_plot_every_loss_term_and_scores(tmp_path):
    history = [{"epoch": e, "train_loss": 1 / e, "test_loss": 1.2 / e, "loss_stack1": 0.6 / e, "loss_stack2": 0.4 / e,
                "test_miou": 0.3 * e, "test_pixel_accuracy": 0.4 * e} for e in (1, 2)]
    fig = _curves_figure(history)
    loss_ax, score_ax = fig.axes
    assert [line.get_label() for line in loss_ax.lines] == ["train", "test", "loss_stack1", "loss_stack2"]
    assert [line.get_label() for line in score_ax.lines] == ["miou", "pixel accuracy"]
    assert list(score_ax.lines[0].get_ydata()) == pytest.approx([0.3, 0.6])
    assert plot_segmentation_curves(history, tmp_path / "curves.png").is_file()
