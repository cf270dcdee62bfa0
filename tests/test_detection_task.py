"""Detection as a task of the training engine: `convkit train --task detect`, evaluate and predict for detectors.

Truth: pycocotools called directly on the files convkit writes, the byte-exact weights of an uninterrupted run,
the scenes generator's own boxes."""

import contextlib
import io
import json

import pytest
import torch
from helpers import one_and_two_processes
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from safetensors.torch import load_file

from convkit.cli.main import main
from convkit.models.reference import load_checkpoint
from convkit.tasks.detection.data import DetectionDataset, load_detection
from convkit.tasks.detection.detector import Detector
from convkit.tasks.detection.inference import evaluate_detector, predict_detections
from convkit.tasks.detection.scenes import make_scenes, write_scenes
from convkit.tasks.detection.task import load_detection_data, scenes_dataset
from convkit.train import NonFiniteLossError, TrainConfig, Trainer, train
from convkit.train.runfolder import read_metrics

SMALL = {"limit": 48, "test_limit": 12, "batch_size": 16, "quiet": True, "threads": 1}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One small YOLO run on the built-in scenes (the task's defaults otherwise)."""
    root = tmp_path_factory.mktemp("detect")
    result = train(task="detect", epochs=2, runs_dir=str(root / "runs"), name="yolo", **SMALL)
    return root, result


def weights(path):
    return {k: v.numpy().tobytes() for k, v in load_file(str(path)).items()}


def test_a_detection_run_writes_its_folder_and_a_rebuildable_checkpoint(run):
    root, result = run
    folder = result.run_dir
    for name in ("config.yaml", "metrics.csv", "curves.png", "val_predictions.png", "best.safetensors",
                 "last.safetensors", "resume.safetensors"):
        assert (folder / name).is_file(), name
    config = TrainConfig.from_yaml(folder / "config.yaml")
    assert (config.task, config.model, config.batch_size) == ("detect", "yolo", 16)
    rows = read_metrics(folder / "metrics.csv")
    assert [r["epoch"] for r in rows] == [1, 2]
    for column in ("loss_xy", "loss_wh", "loss_obj", "loss_noobj", "loss_class", "test_map", "test_map50"):
        assert column in rows[0]
    # the terms are the loss: their per-image means add up to the epoch's mean loss
    terms = ("loss_xy", "loss_wh", "loss_obj", "loss_noobj", "loss_class")
    assert sum(rows[-1][t] for t in terms) == pytest.approx(rows[-1]["train_loss"], rel=1e-5)
    assert all(0 <= r["test_map"] <= r["test_map50"] <= 1 for r in rows)
    ckpt = load_checkpoint(folder)
    assert isinstance(ckpt.model, Detector) and ckpt.model.kind == "yolo"
    assert ckpt.classes == scenes_dataset("val", count=1).classes
    assert ckpt.meta["model"]["kind"] == "detector" and ckpt.meta["model"]["backbone"]["name"] == "fastcnn"


def test_evaluate_scores_the_runs_own_validation_set_as_training_did(run):
    _, result = run
    evaluation = evaluate_detector(result.run_dir)
    assert evaluation.images == 12
    assert evaluation.coco["AP"] == pytest.approx(max(0.0, result.best["test_map"]), abs=2e-3)
    assert evaluation.coco["AP50"] == pytest.approx(max(0.0, result.best["test_map50"]), abs=2e-3)


def test_predict_coco_results_scored_by_pycocotools_directly_equal_evaluate(run, tmp_path):
    _, result = run
    val = scenes_dataset("val", count=12)
    gt_file = val.to_coco(tmp_path / "val" / "annotations.json")  # writes the PNGs beside it (images/)
    predictions, coco_results = predict_detections(result.run_dir, sorted((tmp_path / "val" / "images").glob("*.png")),
                                                   score_threshold=0.01)
    assert len(predictions) == 12 and not any(p.error for p in predictions)
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(gt_file))
        if coco_results:
            evaluator = COCOeval(gt, gt.loadRes(coco_results), "bbox")
            evaluator.evaluate()
            evaluator.accumulate()
            evaluator.summarize()
    direct = evaluator.stats[0] if coco_results else 0.0
    ours = evaluate_detector(result.run_dir, str(gt_file)).coco["AP"]
    assert ours == pytest.approx(max(direct, 0.0) if coco_results else max(ours, 0.0), abs=1e-6)


def test_resume_after_an_interruption_mid_epoch_is_bit_identical(tmp_path, monkeypatch):
    options = dict(task="detect", epochs=2, checkpoint_every=2, runs_dir=str(tmp_path), limit=32, test_limit=8,
                   batch_size=8, quiet=True, threads=1, augment={"horizontal_flip": True, "scale_jitter": 0.2})
    reference = train(name="ref", **options).run_dir
    trainer = Trainer(name="cut", **options)
    original, steps = Trainer._step, []

    def step(self, *args, **kwargs):  # the 7th step dies like kill -9 (the checkpoint of step 6 survives)
        if len(steps) == 6:
            raise KeyboardInterrupt
        steps.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "_step", step)
    with pytest.raises(KeyboardInterrupt):
        trainer.fit()
    monkeypatch.setattr(Trainer, "_step", original)
    resumed = train(resume=tmp_path / "cut")
    assert resumed.stopped == "completed"
    assert weights(tmp_path / "cut" / "last.safetensors") == weights(reference / "last.safetensors")


@pytest.mark.parametrize("kind, options, terms", [
    ("fasterrcnn", {"roi_pool": "max"}, ("loss_objectness", "loss_rpn_box_reg", "loss_classifier", "loss_box_reg")),
    ("retinanet", {}, ("loss_classification", "loss_bbox_regression")),
    ("localizer", {}, ("loss_class", "loss_box")),
])
def test_every_detector_trains_on_the_engine(tmp_path, kind, options, terms):
    result = train(task="detect", model=kind, model_kwargs=options, epochs=1, runs_dir=str(tmp_path), limit=8,
                   test_limit=4, batch_size=4, quiet=True)
    row = result.history[-1]
    assert all(row[t] >= 0 for t in terms)
    assert sum(row[t] for t in terms) == pytest.approx(row["train_loss"], rel=1e-5)
    ckpt = load_checkpoint(result.run_dir)
    assert ckpt.model.kind == kind
    if kind == "localizer":  # one object per scene for the localiser's default data
        assert all(len(t["labels"]) == 1 for t in load_detection_data(TrainConfig.for_task("detect").replace(
            model="localizer"), log=lambda _: None)[1].targets[:20])


def test_colour_images_and_a_backbone_argument(tmp_path):
    images, targets, classes = make_scenes(12, seed=3, channels=3, masks=False)
    data = DetectionDataset(images, targets, classes, "colour scenes")
    train_set, val_set = data.split(0.25, seed=0)
    result = train(task="detect", model="yolo", backbone="lenet5", epochs=1, runs_dir=str(tmp_path),
                   train_data=train_set, test_data=val_set, batch_size=3, quiet=True)
    ckpt = load_checkpoint(result.run_dir)
    assert ckpt.input_shape == (3, 96, 96) and ckpt.meta["model"]["backbone"]["name"] == "lenet5"


def test_images_of_different_sizes_are_resized_with_their_boxes(tmp_path):
    images = [torch.zeros(1, 96, 96, dtype=torch.uint8), torch.zeros(1, 48, 64, dtype=torch.uint8)] * 3
    targets = [{"boxes": [[8.0, 8.0, 40.0, 40.0]], "labels": [0]}, {"boxes": [[4.0, 4.0, 20.0, 16.0]], "labels": [1]}] * 3
    data = DetectionDataset(images, targets, ["a", "b"], "mixed")
    trainer = Trainer(task="detect", train_data=data, test_data=data.subset([0, 1]), epochs=1, batch_size=2,
                      runs_dir=str(tmp_path), quiet=True)
    assert trainer.train_data.image_shape == (1, 96, 96)
    assert trainer.train_data.targets[1]["boxes"].tolist() == [[6.0, 8.0, 30.0, 32.0]]  # x * 1.5, y * 2


def test_a_nan_loss_term_stops_the_run_naming_the_term_and_keeps_the_checkpoint(tmp_path, monkeypatch):
    original, calls = Detector.losses, []

    def losses(self, images, targets):
        terms = original(self, images, targets)
        calls.append(1)
        if len(calls) >= 3:
            terms["wh"] = terms["wh"] * float("nan")
        return terms

    monkeypatch.setattr(Detector, "losses", losses)
    with pytest.raises(NonFiniteLossError, match=r"loss_wh.*last good checkpoint is kept"):
        train(task="detect", epochs=1, checkpoint_every=1, log_every=1, runs_dir=str(tmp_path), name="nan",
              limit=32, test_limit=4, batch_size=8, quiet=True)
    assert (tmp_path / "nan" / "last.safetensors").is_file()


def test_data_from_coco_files_equals_the_built_in_scenes_and_a_part_is_held_out(tmp_path):
    write_scenes(tmp_path / "scenes", train=20, val=6)
    config = TrainConfig.for_task("detect").replace(data=str(tmp_path / "scenes"))
    train_set, val_set, what = load_detection_data(config, log=lambda _: None)
    assert (len(train_set), len(val_set)) == (20, 6) and "val split" in what
    assert torch.equal(train_set.images_tensor(), scenes_dataset("train", count=20).images_tensor())
    assert torch.equal(train_set.targets[5]["boxes"], scenes_dataset("train", count=20).targets[5]["boxes"])
    yolo = load_detection(tmp_path / "scenes" / "annotations" / "instances_train.json").to_yolo(tmp_path / "yolo")
    said = []
    train_set, val_set, what = load_detection_data(config.replace(data=str(yolo.parent if yolo.is_file() else yolo)),
                                                   log=said.append)
    assert (len(train_set), len(val_set)) == (18, 2) and "held-out 10%" in what and "holding out" in said[0]


def test_the_cli_trains_evaluates_and_predicts_a_detector(tmp_path, capsys):
    runs = tmp_path / "runs"
    code = main(["train", "--task", "detect", "--limit", "32", "--test-limit", "8", "--epochs", "1", "--batch-size",
                 "16", "-q", "--runs-dir", str(runs), "--name", "cli"])
    out = capsys.readouterr().out
    assert code == 0 and "validation mAP@[.5:.95]" in out and "convkit evaluate" in out
    assert main(["evaluate", str(runs / "cli"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["images"] == 8 and len([k for k in report["coco"] if not k.startswith("per_class")]) == 12
    assert (runs / "cli" / "eval_pr.png").is_file()
    paths = write_scenes(tmp_path / "scenes", train=0, val=3)
    (paths["val"] / "broken.png").write_bytes(b"not a png")
    code = main(["predict", str(runs / "cli"), str(paths["val"]), "--out", str(tmp_path / "drawn"), "--conf", "0.01",
                 "--format", "coco"])
    captured = capsys.readouterr()
    assert code == 1 and "broken.png" in captured.err  # reported by path; the other images go on
    results = json.loads(captured.out)
    assert all(set(r) == {"image_id", "category_id", "bbox", "score"} for r in results)
    assert len(list((tmp_path / "drawn").glob("*.png"))) == 3


def test_an_unknown_detector_or_backbone_is_one_line(tmp_path, capsys):
    code = main(["train", "--task", "detect", "nosuch", "--limit", "8", "--runs-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and "nosuch" in err and len(err.strip().splitlines()) == 1
    # --model is the positional's flag (not an abbreviation of --model-arg)
    code = main(["train", "--task", "detect", "--model", "yolo", "--backbone", "nosuch", "--runs-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and "--backbone nosuch" in err and len(err.strip().splitlines()) == 1


def test_summary_of_a_trained_detector_has_its_parts_and_report_and_explain_say_what_to_use(run, capsys):
    _, result = run
    assert main(["summary", str(result.run_dir)]) == 0
    out = capsys.readouterr().out
    assert "Parts" in out and "backbone" in out and "head" in out
    assert main(["report", str(result.run_dir)]) == 2
    err = capsys.readouterr().err
    assert "convkit evaluate" in err and len(err.strip().splitlines()) == 1
    assert main(["explain", "filters", str(result.run_dir)]) == 2
    assert "classifiers" in capsys.readouterr().err


@pytest.mark.slow
def test_a_detector_under_torchrun_with_two_processes_matches_one_process(tmp_path):
    """YOLO v1 on lenet5 (no batch norm, no dropout: each rank's statistics would differ by design); the batch
    of 21 splits unevenly (11 + 10) to check that each rank's targets follow its slice of the images."""
    write_scenes(tmp_path / "scenes", train=63, val=8)  # files (a folder named like the built-in set wins)
    args = ["train", "--task", "detect", "--backbone", "lenet5", "--data", "scenes", "--epochs", "1", "--batch-size",
            "21", "--threads", "1", "--quiet", "--runs-dir", "runs", "--optimizer", "sgd", "--lr", "0.002"]  # SGD: Adam turns float noise in near-zero gradients into steps of the learning rate
    runs = one_and_two_processes(tmp_path, args)
    assert "cpu x2" in runs["stdout"] and "63 images" in runs["stdout"]
    a, b = runs["one"], runs["two"]
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-4, atol=1e-5, msg=key)
    # the loss terms of the epoch, summed over both ranks, are the one process's
    rows_one, rows_two = runs["rows_one"], runs["rows_two"]
    assert [r.split(",")[:7] for r in rows_one] == [r.split(",")[:7] for r in rows_two]
