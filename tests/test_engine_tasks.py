"""The training engine runs any task: a new one plugs in with no change to the loop (issue 9).

A toy segmentation task (one bright square per image, a mask of where it is) is defined here and nowhere in
convkit. The engine trains it with its own loss, metrics, checkpoints, metrics.csv columns, picture and exact
resume; its augmentation moves the masks with the images (`Augmenter.with_targets`).
"""

import csv
import json
import signal

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from convkit.data import AugmentConfig, Augmenter, ImageTensorDataset
from convkit.models.weights import read_header
from convkit.train import Task, Trainer, get_task, list_tasks, register_task, torch_settings
from convkit.train.runfolder import METRIC_FIELDS

SIZE = 12


def squares(n: int, seed: int) -> ImageTensorDataset:
    """Dark images with one bright square each, and the square's mask as the 'labels' (N, H, W)."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 40, (n, 1, SIZE, SIZE), generator=g, dtype=torch.uint8)
    masks = torch.zeros(n, SIZE, SIZE, dtype=torch.long)
    for i in range(n):
        y, x = torch.randint(0, SIZE - 4, (2,), generator=g).tolist()
        images[i, 0, y:y + 4, x:x + 4] = 220
        masks[i, y:y + 4, x:x + 4] = 1
    return ImageTensorDataset(images, masks, ["background", "square"], f"squares-{seed}")


class _MaskAugmenter:
    def __init__(self, config):
        self.augmenter = Augmenter(AugmentConfig(horizontal_flip=True, vertical_flip=True), seed=config.seed)

    def __call__(self, images, masks):
        x, masks, _, _ = self.augmenter.with_targets(images, masks=masks)
        return x, (masks,)

    def state_dict(self):
        return self.augmenter.state_dict()

    def load_state_dict(self, state):
        self.augmenter.load_state_dict(state)


@register_task
class SquareTask(Task):
    """Per-pixel foreground: BCE loss, pixel accuracy while training, IoU to pick the best checkpoint."""

    name = "toy-squares"
    monitor = "test_iou"
    train_fields = ("train_pixel_acc",)
    eval_fields = ("test_loss", "test_iou")

    def setup(self, train, test, model, meta):
        self.seen_setup = True

    def model_args(self, train):
        return {}

    def augmenter(self, config):
        return _MaskAugmenter(config)

    def loss(self, outputs, targets):
        (masks,) = targets
        logits = outputs.float()[:, 0]
        loss = F.binary_cross_entropy_with_logits(logits, masks.float())
        correct = ((logits > 0) == (masks > 0)).float().mean(dim=(1, 2)).sum()  # per image, summed
        return loss, correct.view(1)

    @torch.no_grad()
    def evaluate(self, model, data, mean, std, **options):
        model.eval()
        x = (data.images.float() / 255 - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)
        logits = model(x)[:, 0]
        masks = data.labels.float()
        pred = logits > 0
        inter, union = (pred & (masks > 0)).sum(), (pred | (masks > 0)).sum()
        row = {"test_loss": float(F.binary_cross_entropy_with_logits(logits, masks)),
               "test_iou": float(inter / union.clamp_min(1))}
        return row, {"intersection": int(inter), "union": int(union)}

    def meta(self):
        return {"foreground": "square"}

    def plots(self, run_dir, history, best, extra, title):
        (run_dir / "iou.json").write_text(json.dumps({"best": best["test_iou"], **extra}))


def tiny_fcn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
                         nn.Conv2d(8, 1, 1))


RECIPE = {"epochs": 3, "batch_size": 16, "lr": 0.02, "ema": 0.0, "threads": 1, "quiet": True, "tta": False}


def test_a_new_task_trains_through_the_unchanged_engine(tmp_path):
    train, test = squares(128, 0), squares(32, 1)
    trainer = Trainer(task="toy-squares", model=tiny_fcn(), train_data=train, test_data=test,
                      runs_dir=str(tmp_path), name="toy", **RECIPE)
    assert isinstance(trainer.task, SquareTask) and trainer.task.seen_setup
    result = trainer.fit()
    run = result.run_dir
    # the task's columns, not classification's
    with open(run / "metrics.csv", newline="") as f:
        header = next(csv.reader(f))
    assert header == ["epoch", "train_loss", "train_pixel_acc", "test_loss", "test_iou", "lr", "epoch_s",
                      "images_per_s", "elapsed_s"]
    assert "test_acc" not in result.history[-1] and result.classes is None and result.confusion is None
    # it learned: IoU far above a blank or all-foreground guess (16 of 144 pixels: IoU 0.11)
    assert result.best["test_iou"] > 0.5
    assert result.best == max(result.history, key=lambda r: r["test_iou"])
    # checkpoints record the task and its own metadata; its picture was drawn
    meta = json.loads(read_header(run / "best.safetensors")["__metadata__"]["convkit"])
    assert meta["task"] == "toy-squares" and meta["foreground"] == "square" and "classes" not in meta
    assert json.loads((run / "iou.json").read_text())["best"] == result.best["test_iou"]
    assert result.extra["union"] > 0


def test_a_new_task_resumes_bit_for_bit(tmp_path):
    train, test = squares(96, 0), squares(16, 1)
    whole = Trainer(task=SquareTask(), model=tiny_fcn(), train_data=train, test_data=test,
                    runs_dir=str(tmp_path), name="whole", checkpoint_every=2, **RECIPE).fit()

    first = Trainer(task=SquareTask(), model=tiny_fcn(), train_data=train, test_data=test,
                    runs_dir=str(tmp_path), name="cut", checkpoint_every=2, **RECIPE)

    def stop_after_one_epoch(trainer, row):  # as SIGINT would: finish the step, save, stop
        trainer._stop_signal = signal.SIGINT

    first.on_epoch_end.append(stop_after_one_epoch)
    assert first.fit().stopped == "interrupted"
    resumed = Trainer(task=SquareTask(), model=tiny_fcn(), train_data=train, test_data=test,
                      resume=tmp_path / "cut").fit()
    assert resumed.stopped == "completed"
    for (name, a), b in zip(whole.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name
    strip = ("elapsed_s", "epoch_s", "images_per_s")
    assert [{k: v for k, v in r.items() if k not in strip} for r in whole.history] == \
        [{k: v for k, v in r.items() if k not in strip} for r in resumed.history]


def test_tasks_are_found_by_name_and_unknown_names_are_refused():
    assert {"classification", "toy-squares"} <= set(list_tasks())
    assert get_task("classification").monitor == "test_acc"
    assert get_task("classification").train_fields + get_task("classification").eval_fields == \
        tuple(f for f in METRIC_FIELDS if f.startswith(("train_acc", "test_")))
    with pytest.raises(ValueError, match="unknown task 'detektion'.*classification"):
        get_task("detektion")


def test_torch_settings_restore_every_switch_even_after_an_error():
    before = (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled(),
              torch.backends.cudnn.benchmark, torch.get_float32_matmul_precision(),
              torch.utils.deterministic.fill_uninitialized_memory)
    with pytest.raises(RuntimeError, match="boom"), torch_settings(
            threads=1, deterministic=True, matmul_precision="medium"):
        assert torch.get_num_threads() == 1 and torch.are_deterministic_algorithms_enabled()
        assert torch.get_float32_matmul_precision() == "medium"
        assert torch.utils.deterministic.fill_uninitialized_memory is False
        # flush-to-zero is on: the smallest subnormal float becomes 0 in arithmetic
        assert float(torch.tensor([1e-45]) * 1) == 0.0
        raise RuntimeError("boom")
    after = (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled(),
             torch.backends.cudnn.benchmark, torch.get_float32_matmul_precision(),
             torch.utils.deterministic.fill_uninitialized_memory)
    assert after == before
    assert float(torch.tensor([1e-45]) * 1) > 0.0


def test_train_takes_a_model_name(tmp_path):
    import convkit

    result = convkit.train(model="fastcnn", epochs=1, limit=64, test_limit=32, quiet=True, runs_dir=str(tmp_path),
                           model_kwargs={}, augment={}, tta=False)
    cfg = result.model.model_cfg
    assert cfg.name == "fastcnn" and cfg.task == "classification" and cfg.input_shape == (1, 28, 28)
    assert len(cfg.classes) == 10 and cfg.spec == {"num_classes": 10, "in_channels": 1, "kind": "zoo",
                                                   "name": "fastcnn", "kwargs": {}}
