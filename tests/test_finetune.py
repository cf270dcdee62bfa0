"""`convkit finetune` / `convkit.finetune` on the training engine (issue 12).

Truth is independent of the code under test: the source run's own weights (frozen stages must come out
bit-identical, batch-norm statistics untouched), a hand-worked plan of phases and rates, torch's optimizer
groups, the saved network re-read from its checkpoint and run on the images (features: the folded
standardisation must give the head's own predictions), torchvision models saved to files, scikit-learn's digits.
"""

import json

import pytest
import torch
import torchvision
from safetensors.torch import load_file

import convkit
from convkit.cli.main import main
from convkit.data import load_dataset
from convkit.errors import ConvkitError
from convkit.models.weights import CheckpointError, read_meta
from convkit.tasks.classification.metrics import predict_dataset
from convkit.train.config import ConfigError, FinetuneConfig, TrainConfig
from convkit.train.finetuning import FinetuneError, plan_phases

QUICK = {"limit": 256, "test_limit": 100, "batch_size": 64, "quiet": True, "threads": 1}


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A fastcnn trained one epoch on 512 real Fashion-MNIST images: the network to reuse."""
    root = tmp_path_factory.mktemp("source")
    result = convkit.train(epochs=1, limit=512, test_limit=100, quiet=True, runs_dir=root / "runs", name="src",
                           model_kwargs={"widths": [8, 16, 32]})
    return result.run_dir


def state(path):
    return load_file(str(path))


# --- the plan ---------------------------------------------------------------------------------------------------

def test_plan_of_each_strategy_is_the_hand_worked_one():
    stages = ["stem", "layer1", "layer2", "layer3", "head"]
    cfg = FinetuneConfig(strategy="finetune", epochs=5, head_epochs=2, lr=0.01, unfreeze="2", lr_decay=0.5)
    head, tune = plan_phases(cfg, stages)
    assert (head.name, head.start, head.epochs, head.trainable, head.lr) == ("head", 0, 2, "head", 0.01)
    assert (tune.name, tune.start, tune.epochs, tune.trainable, tune.lr, tune.stage_lrs) == \
        ("finetune", 2, 3, 2, 0.001, 0.5)
    cfg = FinetuneConfig(strategy="gradual", epochs=7, head_epochs=1, unfreeze="layer2", unfreeze_every=2,
                         finetune_lr=0.003)
    assert [(p.name, p.start, p.epochs, p.trainable, p.lr) for p in plan_phases(cfg, stages)] == [
        ("head", 0, 1, "head", 6e-3), ("unfreeze layer3", 1, 2, 1, 0.003), ("unfreeze layer2", 3, 4, 2, 0.003)]
    for strategy in ("features", "head"):
        (only,) = plan_phases(FinetuneConfig(strategy=strategy, epochs=4), stages)
        assert (only.start, only.epochs, only.trainable) == (0, 4, "head")
    with pytest.raises(ConfigError, match="unfreeze 'layer9' is not a stage.*stem, layer1"):
        plan_phases(FinetuneConfig(unfreeze="layer9", epochs=3), stages)


@pytest.mark.parametrize("changes, message", [
    ({"head_epochs": 3, "epochs": 3}, "head_epochs \\(3\\) must be fewer than epochs \\(3\\)"),
    ({"lr_decay": 0}, "lr_decay must lie in \\(0, 1\\]"),
    ({"unfreeze": "0"}, "unfreeze must be all, a number"),
    ({"strategy": "features", "augment": {"horizontal_flip": True}}, "features: .*augment cannot apply"),
    ({"model": "runs/x", "weights": "resnet18.DEFAULT"}, "give SOURCE .* or weights .*, not both"),
    ({"stage_lrs": {"layer4": -1}}, "stage_lrs: 'layer4'=-1"),
])
def test_bad_recipes_are_refused_naming_the_field(changes, message):
    with pytest.raises(ConfigError, match=message):
        FinetuneConfig(**{"epochs": 4, **changes})


def test_a_saved_recipe_reads_back_as_a_finetune_config():
    cfg = FinetuneConfig(model="runs/a", strategy="gradual", epochs=5, unfreeze=2)
    again = TrainConfig.from_yaml(cfg.to_yaml())
    assert isinstance(again, FinetuneConfig) and again == cfg and again.unfreeze == "2"


# --- phases on the engine ---------------------------------------------------------------------------------------

def test_finetune_freezes_the_body_then_trains_it_at_the_smaller_rate(source, tmp_path):
    before = state(source / "best.safetensors")
    result = convkit.finetune(source, data="digits", strategy="finetune", epochs=3, head_epochs=1, lr=0.01,
                              lr_decay=0.5, runs_dir=tmp_path, name="ft", **QUICK)
    run = result.run_dir
    record = json.loads((run / "finetune.json").read_text())
    head, tune = record["phases"]
    assert head["frozen_stages"] == ["stage1", "stage2", "stage3"] and head["trainable_stages"] == ["head"]
    assert head["group_lrs"] == {"head": 0.01}
    # discriminative rates: head 0.001 (lr / 10), each stage below half the one above
    assert tune["group_lrs"] == pytest.approx({"stage1": 0.000125, "stage2": 0.00025, "stage3": 0.0005,
                                               "head": 0.001})
    params = [k for k in before if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    assert tune["frozen_params"] == [] and sorted(tune["trainable_params"]) == sorted(params)
    assert [r["phase"] for r in record["lr_per_epoch"]] == ["head", "finetune", "finetune"]
    assert set(record["lr_per_epoch"][1]["lrs"]) == {"stage1", "stage2", "stage3", "head"}
    assert record["source"]["sha256"] == __import__("hashlib").sha256(
        (source / "best.safetensors").read_bytes()).hexdigest()
    assert record["normalisation"]["from"] == "source"
    rows = (run / "metrics.csv").read_text().splitlines()
    assert rows[0].split(",").count("phase") == 1 and [r.split(",")[rows[0].split(",").index("phase")]
                                                      for r in rows[1:]] == ["head", "finetune", "finetune"]
    # the saved network is a convkit checkpoint like any: it reloads and carries the new classes
    model = convkit.resolve_model(run)
    assert model.model_cfg.classes == [str(d) for d in range(10)]
    assert read_meta(run / "best.safetensors")["finetune"]["source"] == str(source)


def test_a_head_run_leaves_the_frozen_body_bit_identical_batch_norm_statistics_included(source, tmp_path):
    before = state(source / "best.safetensors")
    result = convkit.finetune(source, data="digits", strategy="head", epochs=2, ema=0, runs_dir=tmp_path,
                              name="head", **QUICK)
    after = state(result.run_dir / "last.safetensors")
    body = [k for k in before if not k.startswith("fc.")]
    assert any("running_mean" in k for k in body)
    for key in body:  # weights and running statistics of every frozen layer: untouched
        assert torch.equal(before[key], after[key]), key
    assert not torch.equal(before["fc.weight"], after["fc.weight"])


def test_bn_train_lets_frozen_batch_norms_update_their_statistics(source, tmp_path):
    before = state(source / "best.safetensors")
    result = convkit.finetune(source, data="digits", strategy="head", epochs=1, bn="train", ema=0,
                              runs_dir=tmp_path, name="bn", **QUICK)
    after = state(result.run_dir / "last.safetensors")
    assert not torch.equal(before["features.stage1.0.bn.running_mean"], after["features.stage1.0.bn.running_mean"])
    assert torch.equal(before["features.stage1.0.conv.weight"], after["features.stage1.0.conv.weight"])


def test_gradual_unfreezes_one_stage_per_phase(source, tmp_path):
    result = convkit.finetune(source, data="digits", strategy="gradual", epochs=4, head_epochs=1,
                              runs_dir=tmp_path, name="gradual", **QUICK)
    phases = json.loads((result.run_dir / "finetune.json").read_text())["phases"]
    assert [p["name"] for p in phases] == ["head", "unfreeze stage3", "unfreeze stage2", "unfreeze stage1"]
    assert [p["trainable_stages"] for p in phases] == [
        ["head"], ["stage3", "head"], ["stage2", "stage3", "head"], ["stage1", "stage2", "stage3", "head"]]
    sizes = [p["frozen_size"] for p in phases]
    assert sizes == sorted(sizes, reverse=True) and sizes[-1] == 0


def test_features_trains_on_cached_features_and_saves_a_network_that_reads_images(source, tmp_path):
    cache = tmp_path / "cache"
    result = convkit.finetune(source, data="digits", strategy="features", epochs=2, runs_dir=tmp_path,
                              name="feat", features_cache=str(cache), **QUICK)
    assert len(list(cache.glob("features-*.safetensors"))) == 2  # train and test, computed once
    best = result.best["test_acc"]
    model = convkit.resolve_model(result.run_dir)  # best.safetensors: body + folded classifier
    test = load_dataset("digits", "test").subset(range(100))
    logits = predict_dataset(model, test, *model.model_cfg.mean_std())
    assert (logits.argmax(1) == test.labels).float().mean().item() == pytest.approx(best, abs=0.011)
    record = json.loads((result.run_dir / "finetune.json").read_text())
    (phase,) = record["phases"]
    assert phase["trainable_params"] == ["fc.weight", "fc.bias"]
    assert len(phase["frozen_params"]) == len(state(source / "best.safetensors")) - 2 - sum(
        1 for k in state(source / "best.safetensors") if "running" in k or "num_batches" in k)
    body = state(source / "best.safetensors")
    saved = state(result.run_dir / "best.safetensors")
    assert all(torch.equal(body[k], saved[k]) for k in body if not k.startswith("fc."))
    again = convkit.finetune(source, data="digits", strategy="features", epochs=1, runs_dir=tmp_path,
                             name="feat2", features_cache=str(cache), **QUICK)
    assert len(list(cache.glob("*.safetensors"))) == 2 and again.history  # the cache was used, not rewritten


# --- sources ----------------------------------------------------------------------------------------------------

def test_torchvision_weights_file_is_matched_adapted_and_fine_tuned(tmp_path, capsys):
    torch.manual_seed(0)
    theirs = torchvision.models.resnet18(num_classes=7)
    torch.save(theirs.state_dict(), tmp_path / "resnet18.pth")
    result = convkit.finetune(tmp_path / "resnet18.pth", data="digits", strategy="head", epochs=1, limit=64,
                              test_limit=32, batch_size=32, quiet=True, runs_dir=tmp_path, name="tv")
    out = capsys.readouterr().out
    assert "all 122 tensors fit" in out or "tensors fit" in out
    assert "input channels 3 -> 1" in out and "classes 7 -> 10" in out
    record = json.loads((result.run_dir / "finetune.json").read_text())
    assert record["source"]["kind"] == "foreign" and record["source"]["weight_match"]["ok"]
    saved = state(result.run_dir / "last.safetensors")
    summed = theirs.conv1.weight.detach().sum(1, keepdim=True)  # 3 -> 1 channels: summed over them
    assert torch.allclose(saved["conv1.weight"], summed)
    assert torch.equal(saved["layer4.1.conv2.weight"], theirs.layer4[1].conv2.weight.detach())


def test_weights_of_another_architecture_stop_with_the_table_naming_the_file(tmp_path, capsys):
    theirs = torchvision.models.resnet18().state_dict()
    theirs["layer9.weight"] = torch.zeros(2)  # one tensor the zoo twin does not have
    del theirs["layer4.1.bn2.bias"]
    torch.save(theirs, tmp_path / "odd.pth")
    code = main(["finetune", str(tmp_path / "odd.pth"), "--data", "digits", "--runs-dir", str(tmp_path), "-q"])
    err = capsys.readouterr().err
    assert code == 2 and "odd.pth" in err and "layer9.weight" in err and "layer4.1.bn2.bias" in err
    assert not (tmp_path / "odd").exists() and not list(tmp_path.glob("*/finetune.json"))


def test_a_pickle_weights_only_refuses_runs_nothing(tmp_path):
    import os
    import pickle

    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    with open(tmp_path / "evil.pth", "wb") as f:
        pickle.dump({"state_dict": Evil()}, f)
    with pytest.raises(CheckpointError, match="evil.pth"):
        convkit.finetune(tmp_path / "evil.pth", data="digits", runs_dir=tmp_path, **QUICK)
    assert not marker.exists()


# --- bad data ---------------------------------------------------------------------------------------------------

def _dataset(labels):
    from convkit.data.tensor import ImageTensorDataset

    images = torch.randint(0, 255, (len(labels), 1, 28, 28), dtype=torch.uint8)
    return ImageTensorDataset(images, torch.tensor(labels), ["a", "b"], "toy")


@pytest.mark.parametrize("labels, message", [([0, 0, 0, 0], "has 1 class"), ([], "empty")])
def test_one_class_or_empty_data_is_refused_before_any_training(source, tmp_path, labels, message):
    test = _dataset([0, 1])
    with pytest.raises((FinetuneError, ConvkitError, ValueError), match=message):
        convkit.finetune(source, train_data=_dataset(labels), test_data=test, runs_dir=tmp_path, name="bad",
                         quiet=True)
    assert not (tmp_path / "bad" / "metrics.csv").exists()


def test_cli_one_class_folder_is_one_line_exit_2(source, tmp_path, capsys):
    from PIL import Image

    for split in ("train", "test"):
        folder = tmp_path / "one" / split / "cat"
        folder.mkdir(parents=True)
        for i in range(3):
            Image.new("L", (28, 28), i * 40).save(folder / f"{i}.png")
    code = main(["finetune", str(source), "--data", str(tmp_path / "one"), "--runs-dir", str(tmp_path / "r"), "-q"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "1 class" in err[0] and "at least two" in err[0]


def test_cli_without_source_says_what_to_give(capsys):
    assert main(["finetune", "--data", "digits"]) == 2
    assert "give SOURCE" in capsys.readouterr().err


def test_cli_finetune_runs_and_resume_refuses_a_changed_recipe(source, tmp_path, capsys):
    code = main(["finetune", str(source), "--data", "digits", "--strategy", "head", "--epochs", "1", "--limit", "128",
                 "--test-limit", "50", "--runs-dir", str(tmp_path), "--name", "cli", "-q"])
    assert code == 0
    out = capsys.readouterr().out
    assert "phase head: epochs 1-1" in out and "test accuracy" in out
    assert main(["finetune", "--resume", str(tmp_path / "cli"), "--lr", "0.1"]) == 2
    assert "drop lr" in capsys.readouterr().err


def test_cli_weights_name_uses_torchvision_cache_and_records_its_checksum(tmp_path, monkeypatch, capsys):
    import hashlib

    from convkit.models.foreign import MIRROR_ENV

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "home"))
    monkeypatch.setenv(MIRROR_ENV, "http://127.0.0.1:9")  # were it to download, it would fail
    cached = tmp_path / "home" / "hub" / "checkpoints" / "resnet18-f37072fd.pth"  # torchvision's file name
    cached.parent.mkdir(parents=True)
    torch.manual_seed(0)
    torch.save(torchvision.models.resnet18().state_dict(), cached)
    code = main(["finetune", "--weights", "resnet18.IMAGENET1K_V1", "--data", "digits", "--strategy", "head",
                 "--epochs", "1", "--limit", "64", "--test-limit", "32", "--batch-size", "32", "--runs-dir",
                 str(tmp_path / "runs"), "--name", "w", "-q"])
    assert code == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "classes 1000 -> 10" in out and "input channels 3 -> 1" in out
    record = json.loads((tmp_path / "runs" / "w" / "finetune.json").read_text())
    assert record["source"]["kind"] == "torchvision" and record["source"]["ref"] == "resnet18.IMAGENET1K_V1"
    assert record["source"]["sha256"] == hashlib.sha256(cached.read_bytes()).hexdigest()
    # ImageNet's normalisation, averaged over the three channels the first convolution was summed from
    assert record["normalisation"]["from"] == "source"
    assert record["normalisation"]["mean"] == pytest.approx([(0.485 + 0.456 + 0.406) / 3])
    cached.unlink()
    assert main(["finetune", "--weights", "resnet18.IMAGENET1K_V1", "--data", "digits", "-q",
                 "--runs-dir", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert "put the file https://download.pytorch.org/models/resnet18-f37072fd.pth at" in err


def _random_set(channels, size, n=32, seed=0):
    from convkit.data.tensor import ImageTensorDataset

    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 255, (n, channels, size, size), dtype=torch.uint8, generator=g)
    return ImageTensorDataset(images, torch.arange(n) % 2, ["a", "b"], f"random {channels}x{size}x{size}")


def test_rgb_data_into_a_grey_network_replicates_the_first_convolution(source, tmp_path, capsys):
    result = convkit.finetune(source, train_data=_random_set(3, 28), test_data=_random_set(3, 28, 16, 1),
                              strategy="head", epochs=1, ema=0, quiet=True, runs_dir=tmp_path, name="rgb")
    assert "input channels 1 -> 3" in capsys.readouterr().out
    grey = state(source / "best.safetensors")["features.stage1.0.conv.weight"]
    saved = state(result.run_dir / "last.safetensors")["features.stage1.0.conv.weight"]
    assert saved.shape[1] == 3 and torch.equal(saved, (grey / 3).repeat(1, 3, 1, 1))
    record = json.loads((result.run_dir / "finetune.json").read_text())
    assert [a["kind"] for a in record["adaptations"]] == ["input_channels", "classes"]
    assert record["normalisation"]["mean"] == pytest.approx(read_meta(source / "best.safetensors")["mean"] * 3)


def test_another_input_size_gets_a_pool_and_the_run_rebuilds_from_its_spec(tmp_path, capsys):
    train, test = _random_set(1, 36), _random_set(1, 36, 16, 1)
    result = convkit.finetune("lenet5", train_data=train, test_data=test, strategy="finetune", epochs=2,
                              head_epochs=1, quiet=True, runs_dir=tmp_path, name="size")
    out = capsys.readouterr().out
    assert "input 1x32x32 -> 1x36x36: features.act5 now followed by AdaptiveAvgPool2d((1, 1))" in out
    rebuilt = convkit.resolve_model(result.run_dir)  # the pool is in the spec: the checkpoint rebuilds and loads
    assert rebuilt.model_cfg.input_shape == (1, 36, 36)
    x = rebuilt.model_cfg.normalize(test.images)
    with torch.no_grad():
        assert torch.allclose(rebuilt(x), result.model.eval()(x), atol=1e-6)


@pytest.mark.parametrize("adapt, message", [
    ([{"kind": "input_size", "layer": "features.nosuch", "after": [1, 28, 28],
       "details": {"inserted": "AdaptiveAvgPool2d", "output_size": [1, 1]}}], "nosuch"),
    ([{"kind": "input_size", "layer": "fc", "details": {}}], "inserted or rebuilt"),
    ("pool", "model.adapt"),
])
def test_a_checkpoint_with_a_broken_adaptation_record_is_one_error_naming_the_file(source, tmp_path, adapt, message):
    from convkit.models.weights import load_tensors, save_tensors

    tensors, meta = load_tensors(source / "best.safetensors")
    meta["model"] = {**meta["model"], "adapt": adapt}
    save_tensors(tmp_path / "bad.safetensors", tensors, meta)
    with pytest.raises(CheckpointError, match=message) as err:
        convkit.resolve_model(tmp_path / "bad.safetensors")
    assert "bad.safetensors" in str(err.value)


def test_the_report_of_a_finetune_run_shows_its_source_and_phases(source, tmp_path):
    from convkit.report import build_report

    result = convkit.finetune(source, data="digits", strategy="finetune", epochs=2, head_epochs=1,
                              runs_dir=tmp_path, name="rep", **QUICK)
    page = build_report(result.run_dir, gradcams=0).read_text()
    record = json.loads((result.run_dir / "finetune.json").read_text())
    assert "<h2>Reuse</h2>" in page and record["source"]["sha256"][:16] in page
    assert "<td>head</td><td>1–1</td>" in page and "<td>finetune</td><td>2–2</td>" in page
    assert "other classes than the source" in page


@pytest.mark.parametrize("strategy", ["features"])  # finetune: the killed-process test resumes it the same way
def test_a_run_resumes_from_its_own_checkpoint_when_the_source_is_gone(source, tmp_path, strategy):
    import shutil
    import signal

    from convkit.train.finetuning import FinetuneTrainer

    gone = tmp_path / "src"
    shutil.copytree(source, gone)
    options = {"data": "digits", "strategy": strategy, "epochs": 2, "head_epochs": 1, "runs_dir": tmp_path,
               "features_cache": str(tmp_path / "cache"), **QUICK}
    whole = convkit.finetune(gone, name="whole", **options)
    trainer = FinetuneTrainer(model=str(gone), name="cut", **options)
    trainer.on_epoch_end.append(lambda t, row: setattr(t, "_stop_signal", signal.SIGINT))  # stop in epoch 2
    assert trainer.fit().stopped == "interrupted"
    shutil.rmtree(gone)  # the source is gone: the run rebuilds its network from its own checkpoint
    resumed = convkit.finetune(resume=tmp_path / "cut", quiet=True)
    assert resumed.stopped == "completed" and len(resumed.history) == 2
    for name in ("last.safetensors", "best.safetensors"):
        ours, theirs = state(tmp_path / "cut" / name), state(whole.run_dir / name)
        assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours), name
