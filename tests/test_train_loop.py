"""Training from Python: a tiny real run learns, its run folder is complete, bad runs stop clearly."""

import csv
import subprocess

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from test_train_resume import CLI
from torch import nn

from convkit.data import ImageTensorDataset, LabelError, load_default
from convkit.data.idx import write_idx
from convkit.models import create_model
from convkit.train import (
    NonFiniteLossError,
    TrainConfig,
    Trainer,
    evaluate,
    load_checkpoint,
    lr_sweep,
    suggest_lr,
    train,
)
from convkit.train.runfolder import METRIC_FIELDS

TINY = {"limit": 1000, "test_limit": 300, "batch_size": 50, "threads": 1, "quiet": True,
        "model_kwargs": {"widths": [8, 16, 32]}}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    runs = tmp_path_factory.mktemp("runs")
    return train(epochs=3, runs_dir=str(runs), name="tiny", ema=0.9, **TINY)


def test_a_tiny_run_learns_well_above_chance(tiny_run):
    assert tiny_run.stopped == "completed"
    assert tiny_run.test_accuracy > 0.45  # 10 classes: chance is 0.10
    assert tiny_run.history[-1]["train_loss"] < tiny_run.history[0]["train_loss"]


def test_run_folder_holds_config_metrics_plots_and_checkpoints(tiny_run):
    run = tiny_run.run_dir
    config = TrainConfig.from_yaml(run / "config.yaml")
    assert config == TrainConfig(epochs=3, runs_dir=config.runs_dir, name="tiny", ema=0.9, **TINY)
    assert TrainConfig.from_yaml(config.to_yaml()) == config
    with open(run / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3] and tuple(rows[0]) == METRIC_FIELDS
    assert float(rows[-1]["test_acc"]) == pytest.approx(tiny_run.test_accuracy, abs=1e-5)
    for name in ("curves.png", "confusion.png"):
        image = np.asarray(Image.open(run / name).convert("L"), dtype=np.float64)
        assert image.shape[0] > 200 and image.std() > 10, name  # drawn, not blank
    for name in ("best.safetensors", "last.safetensors", "resume.safetensors"):
        assert (run / name).is_file()
    assert not list(run.glob("*.tmp")), "a temporary file was left behind"


def test_checkpoint_metadata_rebuilds_the_model_and_reproduces_its_accuracy(tiny_run):
    ckpt = load_checkpoint(tiny_run.run_dir, prefer="last")
    meta = ckpt.meta
    assert meta["model"] == {"kind": "zoo", "name": "fastcnn", "kwargs": {"widths": [8, 16, 32]},
                             "num_classes": 10, "in_channels": 1}
    assert ckpt.classes == load_default().classes and ckpt.input_shape == (1, 28, 28)
    assert meta["epoch"] == 3 and meta["ema"] is True
    train_set = load_default("train").subset(range(1000))
    assert ckpt.mean.tolist() == pytest.approx(train_set.mean.tolist())
    assert ckpt.std.tolist() == pytest.approx(train_set.std.tolist())
    result = evaluate(ckpt, load_default("test").subset(range(300)))
    assert result.top1 == pytest.approx(tiny_run.history[-1]["test_acc"], abs=1e-6)
    # the EMA weights are what gets saved and evaluated
    ema = tiny_run.model.state_dict()
    saved = load_file(str(tiny_run.run_dir / "last.safetensors"))
    assert all(torch.equal(ema[k].cpu(), saved[k]) for k in saved)


class NaNAfter(nn.Module):
    """A classifier whose output turns NaN from the `after`-th training call on."""

    def __init__(self, after: int):
        super().__init__()
        self.net = create_model("fastcnn", widths=[8, 8, 8])
        self.num_classes, self.after, self.calls = 10, after, 0

    def forward(self, x):
        out = self.net(x)
        if self.training:
            self.calls += 1
            if self.calls >= self.after:
                out = out * float("nan")
        return out


def test_nan_loss_stops_with_a_clear_message_and_keeps_the_last_good_checkpoint(tmp_path):
    model = NaNAfter(after=25)  # 1,000 images / 50 = 20 steps an epoch: NaN at epoch 2, step 25
    with pytest.raises(NonFiniteLossError, match=r"nan at epoch 2, step 25.*last good checkpoint"):
        train(model=model, epochs=3, runs_dir=str(tmp_path), name="nan", **TINY)
    last = load_checkpoint(tmp_path / "nan", model=NaNAfter(10**9), prefer="last")
    assert last.meta["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in last.model.state_dict().values() if v.is_floating_point())


def test_huge_learning_rate_is_stopped_not_trained_on(tmp_path):
    with pytest.raises(NonFiniteLossError, match="Lower the learning rate"):
        train(epochs=1, lr=1e8, runs_dir=str(tmp_path), name="lr", **{**TINY, "limit": 500})


def test_labels_outside_the_class_range_are_refused_before_training_naming_the_file(tmp_path):
    images = torch.randint(0, 255, (8, 1, 28, 28), dtype=torch.uint8)
    labels = torch.tensor([0, 1, 2, 1, 0, 7, 2, 1])
    files = [f"photos/img{i}.png" for i in range(8)]
    bad = ImageTensorDataset(images, labels, ["a", "b", "c"], "photos", sample_sources=files)
    good = ImageTensorDataset(images, labels.clamp(max=2), ["a", "b", "c"], "photos")
    with pytest.raises(LabelError, match=r"photos/img5\.png: label 7"):
        train(train_data=bad, test_data=good, epochs=1, runs_dir=str(tmp_path), quiet=True)
    assert not (tmp_path).exists() or not any(tmp_path.iterdir())  # nothing was started


def test_cli_refuses_an_idx_label_file_with_a_bad_label(tmp_path):
    folder = tmp_path / "fashion-mnist"  # a known name: its 10 class names make label 12 out of range
    folder.mkdir()
    images = torch.zeros(4, 28, 28, dtype=torch.uint8)
    for split in ("train", "t10k"):
        write_idx(folder / f"{split}-images-idx3-ubyte", images)
        write_idx(folder / f"{split}-labels-idx1-ubyte", torch.tensor([0, 1, 12, 3], dtype=torch.uint8))
    result = subprocess.run([*CLI, "train", "--data", str(folder), "--runs-dir", str(tmp_path / "runs")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "labels-idx1-ubyte" in result.stderr and "label 12" in result.stderr
    assert not (tmp_path / "runs").exists()


def test_lr_finder_suggests_a_rate_inside_the_sweep_and_restores_the_model(tmp_path):
    trainer = Trainer(epochs=1, **TINY)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    result = trainer.find_lr(start=1e-4, end=10, steps=40, plot=tmp_path / "lr_find.png")
    assert 1e-4 <= result.suggestion <= 10 and result.suggestion in result.lrs
    assert min(result.lrs) >= 1e-4 and max(result.lrs) <= 10 * (1 + 1e-9)
    assert Image.open(tmp_path / "lr_find.png").size[0] > 200
    assert all(torch.equal(before[k], v) for k, v in trainer.model.state_dict().items())
    trainer.set_lr(result.suggestion)
    assert trainer.config.lr == result.suggestion


def test_lr_sweep_on_a_known_curve():
    # loss falls fastest around lr = 1e-2 (a logistic step in log10(lr)) and explodes beyond 1
    def loss(lr):
        x = np.log10(lr)
        return 2.0 - 1.5 / (1 + np.exp(-4 * (x + 2))) + (100.0 if lr > 1 else 0.0)

    result = lr_sweep(loss, 1e-5, 100, steps=120, smoothing=0.0)
    assert 10**-2.3 < result.suggestion < 10**-1.7
    assert result.lrs[-1] < 2  # stopped once the loss exploded
    assert suggest_lr([1e-3, 1e-2], [1.0, 0.5]) is None  # too few points to say


def test_config_round_trip_and_helpful_errors(tmp_path):
    cfg = TrainConfig(model="resnet20", epochs=7, augment={"crop_padding": 4}, betas=(0.8, 0.9))
    assert TrainConfig.from_yaml(cfg.to_yaml(tmp_path / "c.yaml")) == cfg
    assert TrainConfig.from_yaml(tmp_path / "c.yaml") == cfg
    with pytest.raises(ValueError, match="did you mean 'epochs'"):
        TrainConfig.from_dict({"epoch": 3})
    with pytest.raises(ValueError, match="optimizer must be one of"):
        TrainConfig(optimizer="lion")
    with pytest.raises(ValueError, match="unknown augmentation 'flip'"):
        TrainConfig(augment={"flip": True})


def test_train_with_find_lr_uses_the_suggestion_and_keeps_the_plot(tmp_path):
    result = train(find_lr=True, epochs=1, runs_dir=str(tmp_path), name="found", **{**TINY, "limit": 500})
    config = TrainConfig.from_yaml(result.run_dir / "config.yaml")
    assert config.lr != TrainConfig().lr and 1e-6 <= config.lr <= 10
    assert (result.run_dir / "lr_find.png").stat().st_size > 1000


@pytest.mark.parametrize("schedule", ["onecycle", "cosine", "step", "constant"])
@pytest.mark.parametrize("steps_per_epoch", [1, 3, 50])
def test_schedules_peak_at_lr_and_survive_tiny_runs(schedule, steps_per_epoch):
    from convkit.train.schedule import build_optimizer, build_scheduler

    cfg = TrainConfig(schedule=schedule, epochs=2, lr=0.1, warmup_epochs=0.3, step_size=1, gamma=0.5)
    model = nn.Linear(2, 2)
    opt = build_optimizer(model, cfg)
    sched = build_scheduler(opt, cfg, steps_per_epoch)
    lrs = []
    for _ in range(2 * steps_per_epoch):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert max(lrs) == pytest.approx(0.1) and min(lrs) > 0
    if steps_per_epoch == 50:  # 15 warm-up steps (0.3 epochs), then the schedule itself
        assert lrs[0] < 0.02
        assert lrs[-1] == pytest.approx({"onecycle": 0, "cosine": 0, "step": 0.05, "constant": 0.1}[schedule],
                                        abs=1e-3)
        if schedule == "step":  # halved one epoch (50 steps) after the warm-up
            assert lrs[64] == pytest.approx(0.1) and lrs[65] == pytest.approx(0.05)
    assert [g["weight_decay"] for g in opt.param_groups] == [cfg.weight_decay, 0.0]  # no decay on the bias


def test_compiled_training_gives_the_eager_weights(tmp_path):
    # aot_eager runs the graph that TorchDynamo captures and AOTAutograd differentiates, without generating code:
    # the run goes through torch.compile and must train the same network as the eager run (Inductor itself is
    # exercised by benchmarks/bench_train_gpu.py --compile; it needs half a minute of C++ compilation on a CPU).
    small = {**TINY, "limit": 200, "test_limit": 50, "epochs": 1}
    eager = train(runs_dir=str(tmp_path), name="eager", **small)
    compiled = train(runs_dir=str(tmp_path), name="compiled", compile="aot_eager", **small)
    assert TrainConfig.from_yaml(compiled.run_dir / "config.yaml").compile == "aot_eager"
    a, b = eager.model.state_dict(), compiled.model.state_dict()
    assert a.keys() == b.keys()  # no "_orig_mod." prefixes in what is saved
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=1e-4, atol=1e-5, msg=name)
    assert load_checkpoint(compiled.run_dir).classes == eager.classes
