"""Mask R-CNN and instance segmentation: `build_detector("maskrcnn")`, `convkit train --task instance`, evaluate
(mask AP and box AP) and predict (RLE masks) of an instance run.

Truth: pycocotools' COCOeval(segm) and mask decoding called directly in the tests, the scenes generator's own
masks, masks flipped by hand."""

import contextlib
import io
import json

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from convkit.cli.main import main
from convkit.data import AugmentConfig, Augmenter
from convkit.models._registry import ModelArgumentError
from convkit.models.reference import load_checkpoint
from convkit.tasks.detection.data import DetectionDataset, load_detection
from convkit.tasks.detection.detector import LOSS_TERMS, build_detector, detector_from_spec
from convkit.tasks.detection.inference import evaluate_detector
from convkit.tasks.detection.scenes import make_scenes, write_scenes
from convkit.tasks.detection.task import scenes_dataset
from convkit.train.runfolder import read_metrics

KEYS = ("boxes", "labels", "masks")


def scenes(count, canvas=48, seed=1):
    images, targets, classes = make_scenes(count, canvas=canvas, seed=seed, objects=(1, 2))
    return images, [{k: t[k] for k in KEYS} for t in targets], classes


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny instance run through the CLI on COCO files with masks (64x64 scenes): 1 epoch, a small lr, so the
    detector stays near its start and gives many low-scoring detections with masks."""
    root = tmp_path_factory.mktemp("instance")
    paths = write_scenes(root / "scenes", train=8, val=4, canvas=64, objects=(1, 2), seed=3)
    code = main(["train", "--task", "instance", "--data", str(paths["train_annotations"]), "--val-data",
                 str(paths["val_annotations"]), "--epochs", "1", "--batch-size", "4", "--lr", "1e-5", "--threads", "1",
                 "-q", "--runs-dir", str(root / "runs"), "--name", "inst"])
    assert code == 0
    return root, paths, root / "runs" / "inst"


def test_mask_rcnn_loss_terms_binary_masks_of_the_image_size_and_spec():
    det = build_detector("maskrcnn", "fastcnn", num_classes=3, in_channels=1, image_size=(48, 48))
    assert det.loss_terms == LOSS_TERMS["fasterrcnn"] + ("loss_mask",)
    images, targets, _ = scenes(2)
    x = images.float() / 127.5 - 1
    losses = det.train()(x, [{**t, "labels": t["labels"] % 3} for t in targets])
    assert list(losses) == list(det.loss_terms) and all(torch.isfinite(v) for v in losses.values())
    found = det.eval()(x)
    for d in found:
        k = len(d["boxes"])
        assert d["masks"].dtype == torch.uint8 and tuple(d["masks"].shape) == (k, 48, 48)
        assert set(d["masks"].unique().tolist()) <= {0, 1} and len(d["labels"]) == len(d["scores"]) == k
    assert sum(len(d["boxes"]) for d in found) > 0  # an untrained head scores every class about 1/4 > 0.01
    rebuilt = detector_from_spec(det.model_cfg.spec)
    assert rebuilt.kind == "maskrcnn" and rebuilt.state_dict().keys() == det.state_dict().keys()
    with pytest.raises(ModelArgumentError, match="roi_pool='max'.*align"):
        build_detector("maskrcnn", "fastcnn", 3, 1, (48, 48), roi_pool="max")


def test_training_on_repeated_scenes_lowers_the_mask_loss():
    torch.manual_seed(0)
    det = build_detector("maskrcnn", "fastcnn", num_classes=10, in_channels=1, image_size=(48, 48),
                         mask_layers=[16, 16], box_batch_size_per_image=32, rpn_post_nms_top_n_train=64).train()
    images, targets, _ = scenes(1, seed=4)
    x = images.float() / 127.5 - 1
    optimizer = torch.optim.SGD(det.parameters(), lr=0.02, momentum=0.9)
    seen = []
    for _ in range(8):
        losses = det(x, targets)
        seen.append(losses["loss_mask"].item())
        optimizer.zero_grad()
        sum(losses.values()).backward()
        optimizer.step()
    assert np.mean(seen[-3:]) < 0.9 * np.mean(seen[:3]), seen


def test_datasets_and_the_augmenter_carry_the_masks():
    data = scenes_dataset("val", count=4, masks=True)
    _, truth, _ = make_scenes(4, split="test")
    assert all(torch.equal(t["masks"], u["masks"]) for t, u in zip(data.targets, truth))
    assert "masks" not in scenes_dataset("val", count=4).targets[0]
    for _, targets in data.subset([3, 1]).batches(2, shuffle=False):
        assert torch.equal(targets[0]["masks"], truth[3]["masks"])
    small = data.resized(48, 48)
    assert tuple(small.targets[0]["masks"].shape[1:]) == (48, 48)
    images = data.images_tensor()
    flipped, moved = Augmenter(AugmentConfig(horizontal_flip=True), seed=0).detection(images, data.targets)
    for image, original, target, before in zip(flipped, images, moved, data.targets):
        mirrored = torch.equal(image, original.float().flip(-1))  # a symmetric scene is not one of these
        assert mirrored != torch.equal(image, original.float())
        assert torch.equal(target["masks"], before["masks"].flip(-1) if mirrored else before["masks"])


def test_the_cli_run_logs_mask_ap_and_draws_masks(run):
    root, _, folder = run
    rows = read_metrics(folder / "metrics.csv")
    for column in ("loss_mask", "test_mask_map", "test_mask_map50", "test_map", "test_map50"):
        assert column in rows[0]
    assert 0 <= rows[0]["test_mask_map"] <= rows[0]["test_mask_map50"] <= 1
    ckpt = load_checkpoint(folder)
    assert ckpt.meta["task"] == "instance" and ckpt.model.kind == "maskrcnn"
    assert Image.open(folder / "val_predictions.png").size[0] > 0


def _cocoeval_segm(found, targets) -> float:
    """COCOeval(segm) run here, on pycocotools' own RLEs of the same masks."""
    images, annotations, results = [], [], []
    for i, (d, t) in enumerate(zip(found, targets), start=1):
        images.append({"id": i, "height": 64, "width": 64})
        for j, m in enumerate(t["masks"].numpy()):
            rle = mask_utils.encode(np.asfortranarray(m))
            annotations.append({"id": len(annotations) + 1, "image_id": i, "category_id": int(t["labels"][j]) + 1,
                                "segmentation": rle, "area": float(mask_utils.area(rle)), "iscrowd": 0,
                                "bbox": list(mask_utils.toBbox(rle))})
        for m, label, score in zip(d["masks"].numpy(), d["labels"].tolist(), d["scores"].tolist()):
            results.append({"image_id": i, "category_id": label + 1, "score": score,
                            "segmentation": mask_utils.encode(np.asfortranarray(m))})
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = {"images": images, "annotations": annotations,
                      "categories": [{"id": k + 1, "name": str(k)} for k in range(10)]}
        gt.createIndex()
        evaluator = COCOeval(gt, gt.loadRes(results), "segm")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return float(evaluator.stats[0])


def test_evaluate_mask_ap_equals_cocoeval_segm_and_the_cli_prints_both(run, capsys):
    _, paths, folder = run
    data = load_detection(paths["val_annotations"], masks=True)
    ckpt = load_checkpoint(folder)
    rng = np.random.default_rng(0)
    fake = []  # the true masks, some eroded or shifted, with random scores: an AP strictly between 0 and 1
    for t in data.targets:
        masks = t["masks"].clone()
        masks[0] = masks[0].roll(int(rng.integers(2, 6)), dims=1)
        fake.append({"boxes": t["boxes"].clone(), "labels": t["labels"].clone(), "masks": masks,
                     "scores": torch.tensor(rng.random(len(masks)), dtype=torch.float32)})
    ckpt.model.detect = lambda images, threshold=None: [dict(d) for d in fake[:len(images)]]
    evaluation = evaluate_detector(ckpt, data, batch_size=len(data))
    expected = _cocoeval_segm(fake, data.targets)
    assert 0 < expected < 1 and evaluation.segm["AP"] == pytest.approx(expected, abs=1e-9)
    assert evaluation.coco["AP"] == pytest.approx(1.0)  # the boxes are the true ones
    assert len([k for k in evaluation.to_dict()["segm"] if not k.startswith("per_class")]) == 12
    assert main(["evaluate", str(folder), "--no-plots"]) == 0  # the real model on the run's validation set
    out = capsys.readouterr().out
    assert "masks (COCO segm)" in out and "boxes (COCO bbox)" in out and out.count("AR100") == 2


def test_predict_json_rle_masks_decode_to_the_drawn_size(run, tmp_path, capsys):
    _, paths, folder = run
    code = main(["predict", str(folder), str(paths["val"]), "--json", "--conf", "0.01", "--out", str(tmp_path)])
    records = json.loads(capsys.readouterr().out)
    assert code == 0 and len(records) == 4
    detections = [d for r in records for d in r["detections"]]
    assert detections, "the near-untrained detector finds low-scoring objects"
    for record in records:
        drawn = Image.open(record["drawn"])
        for d in record["detections"]:
            mask = mask_utils.decode({"size": d["mask"]["size"], "counts": d["mask"]["counts"].encode()})
            assert mask.shape == (64, 64) and d["area"] == int(mask.sum())
            assert drawn.size[0] % 64 == 0 and drawn.size[0] // 64 == drawn.size[1] // 64


def test_data_without_masks_is_refused_with_one_line(tmp_path, capsys):
    ds = DetectionDataset(torch.zeros(2, 1, 32, 32, dtype=torch.uint8),
                          [{"boxes": [[1, 1, 9, 9]], "labels": [0]}, {"boxes": [[2, 2, 8, 8]], "labels": [0]}], ["a"])
    boxes = ds.to_coco(tmp_path / "boxes" / "annotations.json")
    for task in (["--task", "instance"], ["--task", "segment", "--model", "maskrcnn"]):
        code = main(["train", *task, "--data", str(boxes), "--epochs", "1", "--runs-dir", str(tmp_path / "runs")])
        err = capsys.readouterr().err.strip()
        assert code == 2 and "instance segmentation needs instance masks" in err and str(boxes) in err
        assert len(err.splitlines()) == 1
    code = main(["train", "--task", "instance", "--model", "yolo", "--runs-dir", str(tmp_path / "runs")])
    err = capsys.readouterr().err
    assert code == 2 and "maskrcnn" in err and not (tmp_path / "runs").exists()
