"""Segmentation as a task of the training engine: `convkit train --task segment`, evaluate and predict.

Truth: scikit-learn's confusion matrix of the model's own argmax, the byte-exact weights of an uninterrupted run,
the scenes generator's masks, the pixels of the mask PNGs read back with Pillow."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import one_and_two_processes
from PIL import Image
from safetensors.torch import load_file
from sklearn.metrics import confusion_matrix as sk_confusion

from convkit.cli.main import main
from convkit.models._registry import ModelArgumentError
from convkit.models.reference import load_checkpoint
from convkit.tasks.segmentation.data import (
    SegmentationDataset,
    scenes_segmentation,
    write_segmentation_folder,
)
from convkit.tasks.segmentation.inference import evaluate_segmenter
from convkit.train import TrainConfig, Trainer, train
from convkit.train.runfolder import read_metrics

TINY = {"depth": 2, "width": 8}
SMALL = {"limit": 48, "test_limit": 12, "batch_size": 16, "quiet": True, "threads": 1, "model": "unet",
         "model_kwargs": TINY}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One small U-Net run on the built-in scenes (the task's defaults otherwise)."""
    root = tmp_path_factory.mktemp("segment")
    result = train(task="segment", epochs=2, runs_dir=str(root / "runs"), name="unet", **SMALL)
    return root, result


def weights(path):
    return {k: v.numpy().tobytes() for k, v in load_file(str(path)).items()}


def miou_by_sklearn(pred: np.ndarray, truth: np.ndarray, k: int) -> float:
    keep = truth != 255
    m = sk_confusion(truth[keep], pred[keep], labels=list(range(k)))
    union = m.sum(0) + m.sum(1) - np.diag(m)
    return float(np.mean([m[i, i] / union[i] for i in range(k) if union[i] > 0]))


def test_a_segmentation_run_writes_its_folder_and_a_rebuildable_checkpoint(run):
    _, result = run
    folder = result.run_dir
    for name in ("config.yaml", "metrics.csv", "curves.png", "iou.png", "val_predictions.png", "best.safetensors",
                 "last.safetensors", "resume.safetensors"):
        assert (folder / name).is_file(), name
    config = TrainConfig.from_yaml(folder / "config.yaml")
    assert (config.task, config.model) == ("segment", "unet")
    rows = read_metrics(folder / "metrics.csv")
    assert [r["epoch"] for r in rows] == [1, 2]
    assert all(0 <= r["test_miou"] <= 1 and 0 <= r["test_pixel_accuracy"] <= 1 for r in rows)
    ckpt = load_checkpoint(folder)
    assert ckpt.classes == scenes_segmentation("val", count=1).classes
    assert ckpt.classes[0] == "background" and len(ckpt.classes) == 11
    assert ckpt.meta["model"]["kind"] == "segmenter"


def test_evaluate_equals_the_best_epoch_and_sklearn_on_the_models_own_argmax(run):
    _, result = run
    evaluation = evaluate_segmenter(result.run_dir)
    assert evaluation.images == 12
    assert evaluation.metrics["miou"] == pytest.approx(result.best["test_miou"], abs=1e-6)
    ckpt = load_checkpoint(result.run_dir)
    val = scenes_segmentation("val").subset(range(12))
    with torch.no_grad():
        pred = ckpt.model.eval()(ckpt.normalize(val.images)).argmax(1)
    assert evaluation.metrics["miou"] == pytest.approx(miou_by_sklearn(pred.numpy(), val.masks.numpy(), 11), abs=1e-6)


def test_resume_after_an_interruption_mid_epoch_is_bit_identical(tmp_path, monkeypatch):
    options = dict(task="segment", model="unet", epochs=2, checkpoint_every=2, runs_dir=str(tmp_path), limit=32, test_limit=8,
                   batch_size=8, quiet=True, threads=1, model_kwargs=TINY,
                   augment={"horizontal_flip": True, "crop_padding": 4, "rotation": 10})
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


def test_a_stacked_hourglass_has_one_loss_per_stack_and_fcn8s_trains(tmp_path):
    result = train(task="segment", model="hourglass", model_kwargs={"stacks": 2, "depth": 2, "width": 8}, epochs=1,
                   runs_dir=str(tmp_path), limit=16, test_limit=4, batch_size=8, quiet=True)
    row = result.history[-1]
    assert row["loss_stack1"] > 0 and row["loss_stack2"] > 0
    assert row["loss_stack1"] + row["loss_stack2"] == pytest.approx(row["train_loss"], rel=1e-5)
    result = train(task="segment", model="fcn8s", backbone="fastcnn", epochs=1, runs_dir=str(tmp_path), limit=16,
                   test_limit=4, batch_size=8, quiet=True)
    ckpt = load_checkpoint(result.run_dir)
    assert ckpt.meta["model"]["segmenter"] == "fcn8s"


def _folder(tmp_path, count=24, seed=0):
    data = scenes_segmentation("val").subset(range(count))
    return write_segmentation_folder(tmp_path / "folder", data)


def test_the_cli_trains_on_a_folder_then_evaluates_and_predicts(tmp_path, capsys):
    folder = _folder(tmp_path)
    code = main(["train", "--task", "segment", "unet", "--data", str(folder), "--epochs", "1", "--batch-size", "8",
                 "--model-arg", "depth=2", "--model-arg", "width=8", "--runs-dir", str(tmp_path / "runs"),
                 "--name", "f", "--quiet"])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert "holding out 10%" in out.out + out.err and "mIoU" in out.out
    run_dir = tmp_path / "runs" / "f"
    assert load_checkpoint(run_dir).meta["model"]["kwargs"] == {"depth": 2, "width": 8}  # repeated --model-arg merge
    assert main(["evaluate", str(run_dir), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert 0 <= report["miou"] <= 1 and len(report["iou"]) == 11
    images = sorted((folder / "images").glob("*.png"))[:3]
    big = tmp_path / "big.png"  # another size: the mask comes back in the image's own pixels
    Image.open(images[0]).resize((150, 120)).save(big)
    assert main(["predict", str(run_dir), *map(str, images), str(big), "--json", "--out", str(tmp_path / "p")]) == 0
    records = json.loads(capsys.readouterr().out)
    assert len(records) == 4
    for r in records:
        mask = np.array(Image.open(r["mask"]))
        assert sum(r["areas"].values()) == mask.size == r["size"][0] * r["size"][1]
        counts = np.bincount(mask.flatten(), minlength=11)
        names = load_checkpoint(run_dir).classes
        assert r["areas"] == {names[k]: int(n) for k, n in enumerate(counts) if n}
        assert Path(r["overlay"]).is_file()
    assert records[-1]["size"] == [120, 150]


def test_masks_that_do_not_fit_are_refused_naming_the_file(tmp_path, capsys):
    folder = _folder(tmp_path, count=6)
    bad = sorted((folder / "masks").glob("*.png"))[2]
    Image.fromarray(np.zeros((50, 50), np.uint8)).save(bad)
    code = main(["train", "--task", "segment", "--data", str(folder), "--epochs", "1", "--runs-dir",
                 str(tmp_path / "runs"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and bad.name in err and "50" in err
    Image.fromarray(np.full((96, 96), 40, np.uint8)).save(bad)  # class id 40 of 11 classes (classes.txt)
    code = main(["train", "--task", "segment", "--data", str(folder), "--epochs", "1", "--runs-dir",
                 str(tmp_path / "runs"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and bad.name in err and "40" in err


def test_an_unknown_segmenter_and_maskrcnn_under_segment_are_one_line(tmp_path, capsys):
    assert main(["train", "--task", "segment", "--model", "unett", "--runs-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unett" in err and "unet" in err
    with pytest.raises(ModelArgumentError, match="task is 'instance'"):  # the CLI maps it; Python says so
        train(task="segment", model="maskrcnn", runs_dir=str(tmp_path))


def test_summary_of_segmenters_by_name_and_of_a_trained_run(run, capsys):
    _, result = run
    assert main(["summary", "unet", "--input", "1x96x96", "--json"]) == 0
    table = json.loads(capsys.readouterr().out)
    model = __import__("convkit").tasks.segmentation.models.build_segmenter("unet", None, 11, 1, (96, 96))
    assert table["totals"]["parameters"] == sum(p.numel() for p in model.parameters())
    assert any("ConvTranspose2d" in str(r.get("type", r.get("layer", ""))) for r in table["layers"])
    assert main(["summary", str(result.run_dir)]) == 0
    assert "ConvTranspose2d" in capsys.readouterr().out


def test_training_data_given_in_python(tmp_path):
    data = scenes_segmentation("val").subset(range(20))
    train_set, val_set = data.split(0.25, seed=0)
    assert isinstance(train_set, SegmentationDataset)
    result = train(task="segment", train_data=train_set, test_data=val_set, epochs=1, batch_size=5,
                   runs_dir=str(tmp_path), quiet=True)  # the task's default model, fcn8s
    assert result.run_dir.name.startswith("fcn8s")
    assert result.classes == data.classes


def test_a_coco_folder_written_by_write_scenes_gives_the_built_in_masks_and_its_val_split(tmp_path):
    from convkit.tasks.detection.scenes import write_scenes
    from convkit.tasks.segmentation.task import load_segmentation_data

    write_scenes(tmp_path / "sc", train=12, val=5)
    config = TrainConfig.for_task("segment").replace(data=str(tmp_path / "sc"))
    train_set, val_set, what = load_segmentation_data(config, log=lambda _: None)
    assert what.endswith("(val split)") and (len(train_set), len(val_set)) == (12, 5)
    assert torch.equal(train_set.masks, scenes_segmentation("train", count=12).masks)
    assert torch.equal(val_set.masks, scenes_segmentation("val", count=5).masks)


def test_segment_convolutionize_checks_the_logits_draws_maps_and_saves_a_predicting_checkpoint(tmp_path, capsys):
    saved = tmp_path / "conv.safetensors"
    assert main(["segment", "convolutionize", "lenet5", "--scenes", "2", "--out", str(tmp_path / "maps"),
                 "--save", str(saved), "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert (record["stride"], record["receptive_field"], record["margin"]) == (4, [32, 32], 0)
    assert record["max_abs_difference_at_training_size"] < 1e-5  # the same weights as the classifier's
    assert [m["map"] for m in record["maps"]] == [[17, 17], [17, 17]]  # (96 - 32) / 4 + 1
    assert all(Path(m["picture"]).is_file() for m in record["maps"])
    image = tmp_path / "wide.png"  # wider than the scenes: the map is slid over it at its own size
    Image.fromarray(np.zeros((40, 70), np.uint8)).save(image)
    assert main(["predict", str(saved), str(image), "--json", "--out", str(tmp_path / "p")]) == 0
    (record,) = json.loads(capsys.readouterr().out)
    assert record["size"] == [40, 70] and sum(record["areas"].values()) == 40 * 70


def test_animate_takes_a_segmenters_transposed_convolution_by_name(tmp_path, capsys):
    out = tmp_path / "up.gif"
    assert main(["animate", "--model", "unet", "--layer", "up1", "--input", "1x96x96", "--out", str(out),
                 "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert out.is_file() and record["transposed"] is True and record["layer"] == "unet up1"
    assert record["output_size"] == [2 * v for v in record["input_size"]]  # stride 2, kernel 2: the size doubles


@pytest.mark.slow  # two real processes under torchrun, then one: about a minute on 2 cores
def test_a_segmenter_under_torchrun_with_two_processes_matches_one_process(tmp_path):
    """FCN-8s on lenet5 (no batch norm, no dropout: each rank's statistics would differ by design); the batch of 21
    splits unevenly (11 + 10) to check that each rank's masks follow its slice of the images."""
    write_segmentation_folder(tmp_path / "folder", scenes_segmentation("val").subset(range(70)))
    args = ["train", "--task", "segment", "fcn8s", "--backbone", "lenet5", "--data", "folder", "--epochs", "1",
            "--batch-size", "21", "--threads", "1", "--quiet", "--runs-dir", "runs", "--optimizer", "sgd",
            "--lr", "0.01"]  # SGD: Adam turns float noise in near-zero gradients into steps of the learning rate
    runs = one_and_two_processes(tmp_path, args)
    assert "cpu x2" in runs["stdout"] and "63 images" in runs["stdout"]
    a, b = runs["one"], runs["two"]
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-4, atol=1e-5, msg=key)
    rows_one, rows_two = runs["rows_one"], runs["rows_two"]
    assert [r.split(",")[:5] for r in rows_one] == [r.split(",")[:5] for r in rows_two]
