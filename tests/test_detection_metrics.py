"""Detection metrics (issue 13): COCO's 12 numbers against pycocotools called directly, VOC AP worked by hand.

Every COCO case builds the COCO dicts by hand (ids, xywh boxes, areas, crowd flags written out), runs
pycocotools' COCO + loadRes + COCOeval itself, and asserts that `coco_metrics` returns the same numbers.
"""

import contextlib
import copy
import io
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from convkit.data.errors import DataFormatError
from convkit.errors import ConvkitError
from convkit.tasks.detection.metrics import (
    COCO_METRIC_NAMES,
    coco_metrics,
    format_metrics_table,
    plot_pr_curves,
    to_coco_dataset,
    to_coco_results,
    voc_ap,
)

# --- helpers: the inputs in convkit's form, and pycocotools run directly on hand-built dicts ---------------------

def target(boxes, labels, **extra):
    out = {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
           "labels": torch.tensor(labels, dtype=torch.int64)}
    out.update({k: torch.tensor(v) for k, v in extra.items()})
    return out


def pred(boxes, scores, labels):
    return {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            "scores": torch.tensor(scores, dtype=torch.float32), "labels": torch.tensor(labels, dtype=torch.int64)}


def categories(n):
    return [{"id": c + 1, "name": str(c)} for c in range(n)]


def gt_ann(ann_id, image_id, category_id, xywh, iscrowd=0, area=None):
    """One ground-truth annotation written as COCO writes it (area = w * h unless given)."""
    return {"id": ann_id, "image_id": image_id, "category_id": category_id, "bbox": list(xywh),
            "area": xywh[2] * xywh[3] if area is None else area, "iscrowd": iscrowd}


def dt(image_id, category_id, xywh, score):
    return {"image_id": image_id, "category_id": category_id, "bbox": list(xywh), "score": score}


def cocoeval_direct(images, annotations, num_classes, results, iou_type="bbox"):
    """pycocotools on its own: COCO from the dicts, loadRes (or an empty results COCO), COCOeval."""
    dataset = {"images": images, "annotations": annotations, "categories": categories(num_classes)}
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = copy.deepcopy(dataset)
        gt.createIndex()
        if results:
            found = gt.loadRes(copy.deepcopy(results))
        else:
            found = COCO()
            found.dataset = {"images": images, "categories": categories(num_classes), "annotations": []}
            found.createIndex()
        ev = COCOeval(gt, found, iou_type)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev


def per_class_direct(ev, k, iou_index=slice(None)):
    p = ev.eval["precision"][iou_index, :, k, 0, 2]
    p = p[p > -1]
    return float(p.mean()) if p.size else math.nan


def assert_same(ours, ev, num_classes=None):
    """Our 12 numbers (and per-class AP) are COCOeval's."""
    np.testing.assert_allclose([ours[k] for k in COCO_METRIC_NAMES], ev.stats, rtol=0, atol=1e-12)
    if num_classes:
        np.testing.assert_allclose(ours["per_class_AP"], [per_class_direct(ev, k) for k in range(num_classes)],
                                   atol=1e-12)
        np.testing.assert_allclose(ours["per_class_AP50"],
                                   [per_class_direct(ev, k, 0) for k in range(num_classes)], atol=1e-12)


def images(n, size=(128, 128)):
    return [{"id": i + 1, "height": size[0], "width": size[1]} for i in range(n)]


# --- COCO: each case of the conversion --------------------------------------------------------------------------

def test_perfect_prediction_gives_ap_one_for_every_size():
    # a small (10x10 = 100 px), a medium (40x40) and a large (100x100) object, each found exactly
    boxes = [[5, 5, 15, 15], [20, 20, 60, 60], [0, 0, 100, 100]]
    t = target(boxes, [0, 1, 1])
    p = pred(boxes, [0.9, 0.8, 0.7], [0, 1, 1])
    ours = coco_metrics([p], [t], num_classes=2)
    for name in COCO_METRIC_NAMES:
        # AR1: at most 1 detection per image and class, so class 1 recalls 1 of its 2: (1 + 1/2) / 2
        assert ours[name] == pytest.approx(0.75 if name == "AR1" else 1.0), name
    anns = [gt_ann(1, 1, 1, [5, 5, 10, 10]), gt_ann(2, 1, 2, [20, 20, 40, 40]), gt_ann(3, 1, 2, [0, 0, 100, 100])]
    results = [dt(1, 1, [5, 5, 10, 10], 0.9), dt(1, 2, [20, 20, 40, 40], 0.8), dt(1, 2, [0, 0, 100, 100], 0.7)]
    assert_same(ours, cocoeval_direct(images(1), anns, 2, results), num_classes=2)


def test_annotation_ids_start_at_one_because_id_zero_breaks_cocoeval():
    t = target([[10, 10, 50, 50]], [0])
    coco = to_coco_dataset([t, target([], [])], 1)
    assert [a["id"] for a in coco["annotations"]] == [1]
    assert [i["id"] for i in coco["images"]] == [1, 2]
    assert coco["categories"] == [{"id": 1, "name": "0"}]
    # why it matters: with id 0, COCOeval stores "matched to 0", which reads as unmatched: a perfect
    # detection becomes a false positive (this is the mistake the conversion must not make)
    results = [dt(1, 1, [10, 10, 40, 40], 0.9)]
    broken = cocoeval_direct(images(1), [gt_ann(0, 1, 1, [10, 10, 40, 40])], 1, results)
    assert broken.stats[0] == 0.0
    ours = coco_metrics([pred([[10, 10, 50, 50]], [0.9], [0])], [t], 1)
    assert ours["AP"] == pytest.approx(1.0)
    assert_same(ours, cocoeval_direct(images(1), [gt_ann(1, 1, 1, [10, 10, 40, 40])], 1, results))


def test_boxes_become_xywh_and_ious_are_coco_s():
    # ground truth 40x40 at (20, 20); detections of IoU 0.8 (x2 cut by 8: 32*40 / 40*40) and 0.6 (cut by 16),
    # and one of a second object of class 1 in xyxy [60, 10, 100, 30]
    t = target([[20, 20, 60, 60], [60, 10, 100, 30]], [0, 1])
    p = pred([[20, 20, 52, 60], [20, 20, 44, 60], [60, 10, 100, 30]], [0.9, 0.6, 0.8], [0, 0, 1])
    ours = coco_metrics([p], [t], num_classes=2)
    assert to_coco_dataset([t], 2)["annotations"][1]["bbox"] == [60.0, 10.0, 40.0, 20.0]
    anns = [gt_ann(1, 1, 1, [20, 20, 40, 40]), gt_ann(2, 1, 2, [60, 10, 40, 20])]
    results = [dt(1, 1, [20, 20, 32, 40], 0.9), dt(1, 1, [20, 20, 24, 40], 0.6), dt(1, 2, [60, 10, 40, 20], 0.8)]
    ev = cocoeval_direct(images(1), anns, 2, results)
    assert_same(ours, ev, num_classes=2)
    # class 0 is found at IoU 0.8: AP over 0.50, 0.55, ..., 0.80 (7 of 10 thresholds) = 0.7
    assert ours["per_class_AP"][0] == pytest.approx(0.7)
    assert ours["AP50"] == pytest.approx(1.0)


def test_area_is_the_box_area_and_sorts_objects_by_size():
    # 31x33 = 1023 px < 32^2: small; 33x32 = 1056: medium. Only the small one is found.
    t = target([[0, 0, 31, 33], [50, 50, 83, 82]], [0, 0])
    p = pred([[0, 0, 31, 33]], [0.9], [0])
    ours = coco_metrics([p], [t], 1)
    assert [a["area"] for a in to_coco_dataset([t], 1)["annotations"]] == [1023.0, 1056.0]
    assert (ours["APs"], ours["APm"], ours["APl"]) == (pytest.approx(1.0), 0.0, -1.0)
    anns = [gt_ann(1, 1, 1, [0, 0, 31, 33]), gt_ann(2, 1, 1, [50, 50, 33, 32])]
    assert_same(ours, cocoeval_direct(images(1), anns, 1, [dt(1, 1, [0, 0, 31, 33], 0.9)]))
    # an "area" given with the target (e.g. COCO's mask areas) is used instead: both objects become large
    ours = coco_metrics([p], [target([[0, 0, 31, 33], [50, 50, 83, 82]], [0, 0], area=[20000.0, 20000.0])], 1)
    # one of two found: the envelope is 1 at recall 0.00..0.50 (51 of COCO's 101 points), then 0
    assert (ours["APs"], ours["APm"], ours["APl"]) == (-1.0, -1.0, pytest.approx(51 / 101))
    anns = [gt_ann(1, 1, 1, [0, 0, 31, 33], area=20000.0), gt_ann(2, 1, 1, [50, 50, 33, 32], area=20000.0)]
    assert_same(ours, cocoeval_direct(images(1), anns, 1, [dt(1, 1, [0, 0, 31, 33], 0.9)]))


def test_crowd_regions_neither_reward_nor_punish():
    # a crowd region (class 0) with two detections inside it and one real object found once
    t = target([[0, 0, 60, 60], [80, 80, 120, 120]], [0, 0], iscrowd=[True, False])
    p = pred([[0, 0, 30, 30], [30, 30, 60, 60], [80, 80, 120, 120]], [0.95, 0.9, 0.5], [0, 0, 0])
    ours = coco_metrics([p], [t], 1)
    anns = [gt_ann(1, 1, 1, [0, 0, 60, 60], iscrowd=1), gt_ann(2, 1, 1, [80, 80, 40, 40])]
    results = [dt(1, 1, [0, 0, 30, 30], 0.95), dt(1, 1, [30, 30, 30, 30], 0.9), dt(1, 1, [80, 80, 40, 40], 0.5)]
    assert_same(ours, cocoeval_direct(images(1), anns, 1, results))
    assert ours["AP"] == pytest.approx(1.0)  # were the crowd a plain object, the two would be FP, one TP
    assert ours["per_class_num_gt"] == [1]
    plain = coco_metrics([p], [target([[0, 0, 60, 60], [80, 80, 120, 120]], [0, 0])], 1)
    assert plain["AP"] < 0.7


def test_images_without_ground_truth_still_count_their_false_positives():
    t = [target([[10, 10, 50, 50]], [0]), target([], [])]
    p = [pred([[10, 10, 50, 50]], [0.5], [0]), pred([[0, 0, 40, 40]], [0.9], [0])]
    ours = coco_metrics(p, t, 1)
    anns = [gt_ann(1, 1, 1, [10, 10, 40, 40])]
    results = [dt(1, 1, [10, 10, 40, 40], 0.5), dt(2, 1, [0, 0, 40, 40], 0.9)]
    assert_same(ours, cocoeval_direct(images(2), anns, 1, results))
    # ranked FP (image 2) then TP: precision 1/2 at recall 1
    assert ours["AP"] == pytest.approx(0.5)
    # had the empty image been left out of the COCO images, its false positive would vanish: AP 1
    assert cocoeval_direct(images(1), anns, 1, results[:1]).stats[0] == pytest.approx(1.0)


def test_no_predictions_at_all_gives_zeros_where_there_is_ground_truth_and_minus_one_elsewhere():
    t = [target([[10, 10, 50, 50]], [0]), target([], [])]
    p = [pred([], [], []), {"boxes": np.zeros((0, 4)), "scores": np.zeros(0), "labels": np.zeros(0, int)}]
    ours = coco_metrics(p, t, 2)
    anns = [gt_ann(1, 1, 1, [10, 10, 40, 40])]
    with pytest.raises(IndexError), contextlib.redirect_stdout(io.StringIO()):  # why convkit cannot use loadRes
        gt = COCO()
        gt.dataset = {"images": images(2), "annotations": anns, "categories": categories(2)}
        gt.createIndex()
        gt.loadRes([])
    assert_same(ours, cocoeval_direct(images(2), anns, 2, []))
    # by hand: one medium object, nothing found: 0 for the numbers that measure it, -1 for small and large
    expected = {k: 0.0 for k in COCO_METRIC_NAMES} | {"APs": -1.0, "APl": -1.0, "ARs": -1.0, "ARl": -1.0}
    assert {k: ours[k] for k in COCO_METRIC_NAMES} == expected
    assert ours["per_class_AP"][0] == 0.0 and math.isnan(ours["per_class_AP"][1])


def test_no_ground_truth_and_no_images():
    ours = coco_metrics([pred([[0, 0, 5, 5]], [0.5], [0])], [target([], [])], 1)
    assert all(ours[k] == -1.0 for k in COCO_METRIC_NAMES)
    ours = coco_metrics([], [], 3)
    assert all(ours[k] == -1.0 for k in COCO_METRIC_NAMES) and all(math.isnan(v) for v in ours["per_class_AP"])


@pytest.mark.parametrize("hit_first", [True, False])
def test_tied_scores_keep_the_order_given_as_pycocotools_ranks_them(hit_first):
    t = [target([[10, 10, 50, 50]], [0])]
    hit, miss = [10, 10, 50, 50], [70, 70, 110, 110]
    boxes = [hit, miss] if hit_first else [miss, hit]
    ours = coco_metrics([pred(boxes, [0.7, 0.7], [0, 0])], t, 1)
    xywh = {tuple(hit): [10, 10, 40, 40], tuple(miss): [70, 70, 40, 40]}
    results = [dt(1, 1, xywh[tuple(b)], 0.7) for b in boxes]
    assert_same(ours, cocoeval_direct(images(1), [gt_ann(1, 1, 1, [10, 10, 40, 40])], 1, results))
    # hit then miss: precision 1 at recall 1; miss then hit: 1/2
    assert ours["AP"] == pytest.approx(1.0 if hit_first else 0.5)


def test_tied_scores_across_images_rank_in_image_order():
    t = [target([[10, 10, 50, 50]], [0]), target([[10, 10, 50, 50]], [0])]
    p = [pred([[70, 70, 110, 110]], [0.7], [0]), pred([[10, 10, 50, 50]], [0.7], [0])]
    ours = coco_metrics(p, t, 1)
    anns = [gt_ann(1, 1, 1, [10, 10, 40, 40]), gt_ann(2, 2, 1, [10, 10, 40, 40])]
    results = [dt(1, 1, [70, 70, 40, 40], 0.7), dt(2, 1, [10, 10, 40, 40], 0.7)]
    assert_same(ours, cocoeval_direct(images(2), anns, 1, results))


def test_classes_absent_from_ground_truth_are_nan_per_class_and_left_out_of_the_mean():
    t = [target([[10, 10, 50, 50]], [1])]
    p = [pred([[10, 10, 50, 50], [60, 60, 100, 100]], [0.9, 0.95], [1, 2])]  # class 2: nothing to find
    ours = coco_metrics(p, t, 3)
    results = [dt(1, 2, [10, 10, 40, 40], 0.9), dt(1, 3, [60, 60, 40, 40], 0.95)]
    ev = cocoeval_direct(images(1), [gt_ann(1, 1, 2, [10, 10, 40, 40])], 3, results)
    assert_same(ours, ev, num_classes=3)
    assert (ev.eval["precision"][:, :, [0, 2]] == -1).all()  # COCO marks them -1 ...
    assert math.isnan(ours["per_class_AP"][0]) and math.isnan(ours["per_class_AP"][2])  # ... convkit NaN
    assert ours["AP"] == pytest.approx(1.0)
    assert ours["per_class_num_gt"] == [0, 1, 0]


def test_many_images_and_classes_match_cocoeval():
    """A random scene set (fixed seed): jittered, missed and spurious detections over 3 classes, 6 images."""
    rng = np.random.default_rng(0)
    targets, predictions, anns, results = [], [], [], []
    for i in range(6):
        m = int(rng.integers(0, 6))
        xy = rng.uniform(0, 80, (m, 2))
        wh = rng.uniform(4, 60, (m, 2))
        boxes = np.concatenate([xy, xy + wh], 1).astype(np.float32)
        labels = rng.integers(0, 3, m)
        crowd = rng.random(m) < 0.15
        targets.append({"boxes": torch.from_numpy(boxes), "labels": torch.from_numpy(labels),
                        "iscrowd": torch.from_numpy(crowd)})
        keep = rng.random(m) < 0.8
        jitter = rng.normal(0, 3, (m, 4)).astype(np.float32)
        found = (boxes + jitter)[keep]
        spurious = rng.uniform(0, 100, (int(rng.integers(0, 4)), 2)).astype(np.float32)
        found = np.concatenate([found, np.concatenate([spurious, spurious + 20], 1)])
        found_labels = np.concatenate([labels[keep], rng.integers(0, 3, len(spurious))])
        scores = rng.random(len(found)).round(1).astype(np.float32)  # rounded: ties happen
        predictions.append({"boxes": torch.from_numpy(found), "scores": torch.from_numpy(scores),
                            "labels": torch.from_numpy(found_labels)})
        for b, c, k in zip(boxes.astype(float), labels, crowd):
            xywh = [b[0], b[1], b[2] - b[0], b[3] - b[1]]
            anns.append(gt_ann(len(anns) + 1, i + 1, int(c) + 1, xywh, iscrowd=int(k)))
        for b, c, s in zip(found.astype(float), found_labels, scores.astype(float)):
            results.append(dt(i + 1, int(c) + 1, [b[0], b[1], max(b[2] - b[0], 0), max(b[3] - b[1], 0)], s))
    ours = coco_metrics(predictions, targets, 3)
    ev = cocoeval_direct(images(6), anns, 3, results)
    assert_same(ours, ev, num_classes=3)
    assert 0.05 < ours["AP"] < ours["AP50"] < 0.95  # a real mix, not a trivial case


def test_segm_uses_masks_and_their_areas():
    h, w = 40, 50
    gt_masks = np.zeros((2, h, w), dtype=np.uint8)
    gt_masks[0, 5:15, 5:25] = 1  # 200 px
    gt_masks[1, 20:38, 10:48] = 1  # 684 px
    found_masks = gt_masks.copy()
    found_masks[1, 20:30] = 0  # half of the second object: IoU 8*38/684 = 0.444
    t = target([[5, 5, 25, 15], [10, 20, 48, 38]], [0, 0], masks=gt_masks)
    p = {**pred([[5, 5, 25, 15], [10, 30, 48, 38]], [0.9, 0.8], [0, 0]), "masks": torch.from_numpy(found_masks)}
    ours = coco_metrics([p], [t], 1, iou_type="segm")

    def rle(m):
        r = mask_utils.encode(np.asfortranarray(m))
        return {"size": r["size"], "counts": r["counts"].decode()}

    anns = [{"id": j + 1, "image_id": 1, "category_id": 1, "bbox": b, "area": float(gt_masks[j].sum()),
             "iscrowd": 0, "segmentation": rle(gt_masks[j])} for j, b in enumerate([[5, 5, 20, 10], [10, 20, 38, 18]])]
    results = [{"image_id": 1, "category_id": 1, "segmentation": rle(found_masks[j]), "score": s}
               for j, s in enumerate([0.9, 0.8])]
    ev = cocoeval_direct(images(1, (h, w)), anns, 1, results, iou_type="segm")
    assert_same(ours, ev)
    assert ours["AP50"] == pytest.approx(51 / 101)  # one of two objects found: 51 of 101 recall points
    assert [a["area"] for a in to_coco_dataset([t], 1, iou_type="segm")["annotations"]] == [200.0, 684.0]
    # probabilities (K, 1, H, W), as Mask R-CNN gives them, are cut at 0.5
    p_soft = {**p, "masks": torch.from_numpy(found_masks).float()[:, None] * 0.9}
    assert coco_metrics([p_soft], [t], 1, iou_type="segm")["AP"] == pytest.approx(ours["AP"])
    # and mask results carry no bbox: loadRes would otherwise take the box's area for the mask's
    assert "bbox" not in to_coco_results([p], iou_type="segm")[0]


# --- the COCO results file ------------------------------------------------------------------------------------

def test_to_coco_results_is_a_results_file_coco_tools_read(tmp_path):
    p = [pred([[10, 20, 40, 30], [0, 0, 5, 5]], [0.75, 0.5], [1, 0]), pred([], [], [])]
    results = to_coco_results(p)
    assert results == [{"image_id": 1, "category_id": 2, "bbox": [10.0, 20.0, 30.0, 10.0], "score": 0.75},
                       {"image_id": 1, "category_id": 1, "bbox": [0.0, 0.0, 5.0, 5.0], "score": 0.5}]
    mapped = to_coco_results(p, image_ids=[139, 285], category_ids=[18, 44])  # COCO's own, with gaps
    assert [(r["image_id"], r["category_id"]) for r in mapped] == [(139, 44), (139, 18)]
    path = tmp_path / "results.json"
    path.write_text(json.dumps(results))
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = to_coco_dataset([target([[10, 20, 40, 30]], [1]), target([], [])], 2)
        gt.createIndex()
        loaded = gt.loadRes(str(path))
    assert len(loaded.getAnnIds()) == 2
    # an untrained model's inverted box is written as an empty one, not with a negative width
    assert to_coco_results([pred([[10, 10, 5, 20]], [0.1], [0])])[0]["bbox"] == [10.0, 10.0, 0.0, 10.0]


# --- mistakes in the inputs -----------------------------------------------------------------------------------

@pytest.mark.parametrize("call, named", [
    (lambda: coco_metrics([pred([], [], [])], [], 1), "predictions: 1 images, targets: 0"),
    (lambda: coco_metrics([pred([[0, 0, 5, 5]], [0.5], [3])], [target([], [])], 2), "predictions[0]['labels'][0]"),
    (lambda: coco_metrics([pred([[0, 0, 5, 5]], [float("nan")], [0])], [target([], [])], 1),
     "predictions[0]['scores'][0]"),
    (lambda: coco_metrics([{"boxes": torch.zeros(1, 4), "labels": torch.zeros(1)}], [target([], [])], 1),
     "predictions[0]: no 'scores'"),
    (lambda: voc_ap([pred([], [], [])], [target([[0, 0, 5, 5], [1, 1, 2, 2]], [0, -1])], 1),
     "targets[0]['labels'][1]"),
    (lambda: voc_ap([pred([], [], [])], [{"boxes": torch.zeros(2, 3), "labels": torch.zeros(2)}], 1),
     "targets[0]['boxes']: shape (2, 3)"),
    (lambda: coco_metrics([pred([], [], [])], [target([[9, 0, 5, 5]], [0])], 1), "targets[0]['boxes'][0]"),
    (lambda: coco_metrics([pred([], [], [])], [target([[0, 0, 5, 5]], [0], iscrowd=[0, 1])], 1),
     "targets[0]['iscrowd']: shape (2,)"),
    (lambda: coco_metrics([pred([], [], [])], [target([], [])], 1, iou_type="keypoints"), "iou_type"),
    (lambda: coco_metrics([pred([], [], [])], [target([], [])], 1, iou_type="segm"), "targets[0]: no 'masks'"),
    (lambda: to_coco_results([pred([[0, 0, 5, 5]], [0.5], [2])], category_ids=[1, 2]), "predictions[0]['labels'][0]"),
    (lambda: coco_metrics(pred([], [], []), [target([], [])], 1), "predictions: expected a list"),
])
def test_malformed_inputs_are_named(call, named):
    with pytest.raises(DataFormatError) as err:
        call()
    assert isinstance(err.value, ConvkitError)
    assert named in str(err.value) and "\n" not in str(err.value)


# --- VOC AP ---------------------------------------------------------------------------------------------------

def test_voc_ap_worked_by_hand():
    # 2 objects; detections by score: 0.9 hits A, 0.8 hits nothing, 0.7 hits B.
    # recall 1/2, 1/2, 2/2; precision 1/1, 1/2, 2/3. Envelope: 1 up to recall 1/2, 2/3 up to 1.
    # all-point AP = (1/2 - 0) * 1 + (1 - 1/2) * 2/3 = 0.5 + 0.3333 = 0.8333
    t = [target([[0, 0, 10, 10], [20, 20, 30, 30]], [0, 0])]
    p = [pred([[0, 0, 10, 10], [50, 50, 60, 60], [20, 20, 30, 30]], [0.9, 0.8, 0.7], [0, 0, 0])]
    result = voc_ap(p, t, 1)
    assert result["mAP"] == pytest.approx(0.5 + 0.5 * 2 / 3)
    recall, precision = result["curves"][0]
    np.testing.assert_allclose(recall, [0.5, 0.5, 1.0])
    np.testing.assert_allclose(precision, [1.0, 0.5, 2 / 3])
    assert result["num_gt"] == [2]
    # COCO's AP50 on the same: the envelope read at 101 recall points, 0.00..0.50 (51 points) at 1 and
    # 0.51..1.00 (50 points) at 2/3: (51 + 50 * 2/3) / 101 = 0.8350, not 0.8333
    assert coco_metrics(p, t, 1)["AP50"] == pytest.approx((51 + 50 * 2 / 3) / 101)


def test_voc_ap_equals_coco_ap50_where_both_must_agree():
    # They differ in general: COCO reads the precision envelope at 101 recall points (0, 0.01, ..., 1) and VOC
    # integrates it at every recall step (all-point); COCO also lets a detection take the best object not yet
    # taken, lets crowds absorb detections, keeps 100 detections per image. Here none of that matters: the
    # envelope is flat (a miss first, then hits only: precision 0, 1/2, 2/3, 3/4 -> envelope 3/4 everywhere)
    # and recall reaches 1, so both give 3/4; class 1 is found perfectly, 1 in both; the mean is 0.875.
    t = [target([[0, 0, 10, 10], [20, 20, 30, 30]], [0, 0]), target([[5, 5, 25, 25], [40, 40, 60, 60]], [0, 1])]
    p = [pred([[50, 50, 60, 60], [0, 0, 10, 10], [20, 20, 30, 30]], [0.95, 0.9, 0.7], [0, 0, 0]),
         pred([[5, 5, 25, 25], [40, 40, 60, 60]], [0.8, 0.6], [0, 1])]
    voc = voc_ap(p, t, 2)
    coco = coco_metrics(p, t, 2)
    assert voc["per_class"] == pytest.approx([0.75, 1.0])
    assert voc["mAP"] == pytest.approx(coco["AP50"]) == pytest.approx(0.875)
    assert voc["per_class"] == pytest.approx(coco["per_class_AP50"])


def test_voc_second_detection_of_an_object_is_a_false_positive():
    # the devkit's rule: a detection takes the object it overlaps most; already taken -> false positive, even
    # when it also overlaps (IoU 0.52) another object not yet taken. COCO would give that one to B instead.
    a, b = [0, 0, 20, 20], [10, 0, 30, 20]
    t = [target([a, b], [0, 0])]
    p = [pred([a, [4, 0, 24, 20]], [0.9, 0.8], [0, 0])]  # IoU with A: 16*20/(2*400-320) = 0.667, with B: 0.538
    result = voc_ap(p, t, 1)
    np.testing.assert_allclose(result["curves"][0][0], [0.5, 0.5])
    assert result["mAP"] == pytest.approx(0.5)
    assert coco_metrics(p, t, 1)["AP50"] == pytest.approx(1.0)


def test_voc_ignores_difficult_and_crowd_objects():
    # object A is difficult, C a crowd: detections on them are neither hits nor misses, and they are not counted
    a, b, c = [0, 0, 20, 20], [40, 40, 60, 60], [70, 70, 90, 90]
    t = [target([a, b, c], [0, 0, 0], difficult=[True, False, False], iscrowd=[False, False, True])]
    p = [pred([a, c, b, [100, 100, 110, 110]], [0.95, 0.9, 0.8, 0.7], [0, 0, 0, 0])]
    result = voc_ap(p, t, 1)
    assert result["num_gt"] == [1]
    np.testing.assert_allclose(result["curves"][0][0], [1.0, 1.0])  # only B (hit) and the miss count
    np.testing.assert_allclose(result["curves"][0][1], [1.0, 0.5])
    assert result["mAP"] == pytest.approx(1.0)
    # without the flags, A and C are objects found with the top scores: all 3 found, one miss last
    plain = voc_ap(p, [target([a, b, c], [0, 0, 0])], 1)
    assert plain["num_gt"] == [3] and plain["mAP"] == pytest.approx(1.0)
    # the flag changes which objects count: B found, A missed -> 0.5; A difficult -> B is all there is: 1
    assert voc_ap([pred([b], [0.9], [0])], [target([a, b], [0, 0])], 1)["mAP"] == pytest.approx(0.5)
    assert voc_ap([pred([b], [0.9], [0])], [target([a, b], [0, 0], difficult=[True, False])], 1)["mAP"] == 1.0


def test_voc_classes_without_ground_truth_and_no_detections():
    t = [target([[0, 0, 10, 10]], [0]), target([], [])]
    p = [pred([], [], []), pred([[0, 0, 10, 10]], [0.9], [1])]
    result = voc_ap(p, t, 3)
    assert result["per_class"][0] == 0.0  # an object, nothing found
    assert math.isnan(result["per_class"][1]) and math.isnan(result["per_class"][2])
    assert result["mAP"] == 0.0 and result["num_gt"] == [1, 0, 0]
    assert all(len(r) == 0 for r, _ in result["curves"])
    assert math.isnan(voc_ap([], [], 2)["mAP"])


@pytest.mark.parametrize("hit_first", [True, False])
def test_voc_tied_scores_keep_the_order_given(hit_first):
    # one object; two detections of equal score: hit, miss -> precision 1 at recall 1; miss, hit -> 1/2,
    # as COCO ranks them (its sorts are stable too), across images in image order
    hit, miss = [0, 0, 10, 10], [50, 50, 60, 60]
    t = [target([hit], [0]), target([], [])]
    first, second = (hit, miss) if hit_first else (miss, hit)
    same_image = voc_ap([pred([first, second], [0.7, 0.7], [0, 0]), pred([], [], [])], t, 1)
    assert same_image["mAP"] == (1.0 if hit_first else 0.5)
    t2 = [target([hit], [0]), target([hit], [0])]
    across = voc_ap([pred([first], [0.7], [0]), pred([second], [0.7], [0])], t2, 1)
    assert across["curves"][0][1].tolist() == ([1.0, 0.5] if hit_first else [0.0, 0.5])


def test_voc_iou_threshold_is_inclusive():
    # IoU exactly 0.5: [0, 0, 10, 10] against [0, 0, 10, 20] -> 100 / 200; counted at 0.5 (as the MATLAB devkit
    # and COCO), not at 0.51
    t = [target([[0, 0, 10, 20]], [0])]
    p = [pred([[0, 0, 10, 10]], [0.9], [0])]
    assert voc_ap(p, t, 1)["mAP"] == 1.0
    assert voc_ap(p, t, 1, iou=0.51)["mAP"] == 0.0


# --- pictures and tables --------------------------------------------------------------------------------------

def test_plot_pr_curves_writes_a_png(tmp_path):
    t = [target([[0, 0, 10, 10], [20, 20, 30, 30]], [0, 1])]
    p = [pred([[0, 0, 10, 10], [50, 50, 60, 60], [20, 20, 30, 30]], [0.9, 0.8, 0.7], [0, 0, 1])]
    result = voc_ap(p, t, 3)
    path = plot_pr_curves(result["curves"], ["shirt", "shoe", "bag"], tmp_path / "out" / "pr.png",
                          ap=result["per_class"])
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size[0] > 200
    assert [f.name for f in path.parent.iterdir()] == ["pr.png"]  # no temporary file left
    many = [(np.array([0.5, 1.0]), np.array([1.0, 0.5]))] * 30  # more classes than a legend can hold
    assert plot_pr_curves(many, [str(i) for i in range(30)], tmp_path / "many.png").stat().st_size > 0
    with pytest.raises(DataFormatError, match="3 curves, 2 class names"):
        plot_pr_curves(result["curves"], ["shirt", "shoe"], tmp_path / "bad.png")


def test_format_metrics_table_rows():
    t = [target([[0, 0, 10, 10], [20, 20, 30, 30]], [0, 0])]
    p = [pred([[0, 0, 10, 10], [50, 50, 60, 60], [20, 20, 30, 30]], [0.9, 0.8, 0.7], [0, 0, 0])]
    text = format_metrics_table(coco_metrics(p, t, 2), voc_ap(p, t, 2), classes=["shirt", "shoe"])
    lines = text.splitlines()
    assert lines[0].startswith("COCO  AP 0.") and "APs 0." in lines[0] and "APl n/a" in lines[0]
    assert lines[2] == "VOC   mAP@0.5 0.833"
    assert lines[3].split() == ["class", "objects", "AP", "AP50", "VOC", "AP@0.5"]
    assert lines[4].split() == ["shirt", "2", "0.835", "0.835", "0.833"]
    assert lines[5].split() == ["shoe", "0", "n/a", "n/a", "n/a"]
    assert format_metrics_table(voc=voc_ap(p, t, 2)).splitlines()[1].split() == ["class", "objects", "VOC", "AP@0.5"]
