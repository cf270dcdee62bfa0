"""Training and evaluating from image files streamed through DataLoader workers (GitHub issue 4): the same
batches, the same weights, the same resume as from the in-memory tensor; clear errors for what cannot be."""

import shutil

import pytest
import torch
from PIL import Image
from test_train_resume import weights

from convkit.cli.main import _parser
from convkit.data import ImageFileDataset, ImageTensorDataset, load_dataset
from convkit.data.tensor import epoch_permutation
from convkit.train import Trainer, evaluate, load_checkpoint
from convkit.train import trainer as trainer_module

CLASSES, PER_CLASS, SIZE = 10, 20, 16
# 180 training images (10% held out for testing) in 9 batches of 20; checkpoints every 4 steps: two of them
# fall inside an epoch. Dropout draws from the global RNG, which the data loaders must leave alone.
RECIPE = {"epochs": 2, "batch_size": 20, "threads": 1, "quiet": True, "ema": 0.9, "checkpoint_every": 4,
          "model_kwargs": {"widths": [8, 16, 32], "dropout": 0.1},
          "augment": {"horizontal_flip": True, "crop_padding": 2}}
TIMES = ("elapsed_s", "epoch_s", "images_per_s")


@pytest.fixture(scope="module")
def source():
    """The 16x16 crops written to the folder, in the folder's order (class, then file name): the truth."""
    data = load_dataset("default", "train")
    index = torch.cat([(data.labels == c).nonzero().flatten()[:PER_CLASS] for c in range(CLASSES)])
    return index, data.images[index, :, 6:6 + SIZE, 6:6 + SIZE].contiguous(), data.labels[index]


@pytest.fixture(scope="module")
def folder(tmp_path_factory, source):
    root = tmp_path_factory.mktemp("stream") / "crops"
    index, images, labels = source
    for i, image, label in zip(index.tolist(), images, labels.tolist()):
        (root / f"c{label}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(image[0].numpy(), "L").save(root / f"c{label}" / f"{i:05d}.png")
    return root


def rows(history):
    return [{k: v for k, v in row.items() if k not in TIMES} for row in history]


def test_streamed_batches_are_the_in_memory_batches(folder, source):
    _, truth, labels = source
    memory, stream = load_dataset(folder), load_dataset(folder, memory_budget=0)
    assert isinstance(memory, ImageTensorDataset) and isinstance(stream, ImageFileDataset)
    assert torch.equal(memory.images, truth)
    stream = stream.to("cpu", workers=2)
    for epoch in range(3):
        served = list(stream.batches(32, seed=5, epoch=epoch))
        assert [len(y) for _, y in served] == [32] * 6 + [8]
        order = epoch_permutation(len(truth), 5, epoch)  # the in-memory order, by definition
        assert torch.equal(torch.cat([x for x, _ in served]), truth[order])
        assert torch.equal(torch.cat([y for _, y in served]), labels[order])
    # Resuming inside an epoch, dropping the last batch: the same batches as the tensor serves, same count.
    streamed = stream.to("cpu", workers=0).batches(32, seed=5, epoch=1, start=70, drop_last=True)
    in_memory = memory.batches(32, seed=5, epoch=1, start=70, drop_last=True)
    assert len(streamed) == len(in_memory) == 4  # 70..192 of 200
    pairs = list(zip(streamed, in_memory, strict=True))
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in pairs)
    assert streamed.position == in_memory.position == 192 and len(streamed) == 0
    # Views keep the files' labels and the stratified split of the in-memory set.
    for (a, b) in zip(stream.split(0.1, seed=3), memory.split(0.1, seed=3)):
        assert a.sample_sources == b.sample_sources and torch.equal(a.labels, b.labels)
    assert stream.class_counts().tolist() == [PER_CLASS] * CLASSES


@pytest.fixture(scope="module")
def runs(folder, tmp_path_factory):
    """The recipe trained on the folder in memory and streamed (with and without workers)."""
    out = tmp_path_factory.mktemp("runs")
    done = {}
    for name, options in {"memory": {"stream": False}, "stream0": {"stream": True, "workers": 0},
                          "stream2": {"stream": True, "workers": 2}}.items():
        trainer = Trainer(data=str(folder), runs_dir=str(out), name=name, **RECIPE, **options)
        done[name] = trainer, trainer.fit()
    return done


def test_streamed_training_gives_the_in_memory_weights_with_any_workers(runs):
    memory, result = runs["memory"]
    assert isinstance(memory.train_data, ImageTensorDataset) and result.stopped == "completed"
    for name in ("stream0", "stream2"):
        trainer, streamed = runs[name]
        assert isinstance(trainer.train_data, ImageFileDataset) and isinstance(trainer.test_data, ImageFileDataset)
        # A streamed set's statistics are estimated from up to 1,000 seeded files; these 180 are all of them,
        # summed in another order in float64, which rounds to the same float32 (else the weights would differ).
        assert torch.equal(trainer.mean, memory.mean) and torch.equal(trainer.std, memory.std)
        assert rows(streamed.history) == rows(result.history)
        assert weights(streamed.run_dir / "last.safetensors") == weights(result.run_dir / "last.safetensors")
        assert weights(streamed.run_dir / "best.safetensors") == weights(result.run_dir / "best.safetensors")


def test_a_streamed_run_stopped_mid_epoch_resumes_to_the_same_weights(folder, runs, tmp_path):
    class Killed(Exception):
        pass

    trainer = Trainer(data=str(folder), runs_dir=str(tmp_path), name="killed", stream=True, workers=2, **RECIPE)
    save = trainer._save_resume

    def save_then_die():  # as kill -9 right after the checkpoint of step 12 (epoch 2, position 60)
        save()
        if trainer.step == 12:
            raise Killed

    trainer._save_resume = save_then_die
    with pytest.raises(Killed):
        trainer.fit()
    resumed = Trainer(resume=trainer.run_dir)
    assert (resumed.epoch, resumed.position) == (1, 60) and isinstance(resumed.train_data, ImageFileDataset)
    result = resumed.fit()
    reference = runs["stream2"][1]
    assert rows(result.history) == rows(reference.history)
    assert weights(trainer.run_dir / "last.safetensors") == weights(reference.run_dir / "last.safetensors")


def test_evaluate_runs_over_a_streamed_set_as_over_the_tensor(folder, runs, tmp_path):
    ckpt = load_checkpoint(runs["stream0"][1].run_dir)
    in_memory = evaluate(ckpt, load_dataset(folder), batch_size=64, worst=4)
    streamed = evaluate(ckpt, load_dataset(folder, memory_budget=0), batch_size=64, worst=4, out_dir=tmp_path)
    assert (streamed.top1, streamed.loss, streamed.worst) == (in_memory.top1, in_memory.loss, in_memory.worst)
    assert (tmp_path / "eval_worst.png").is_file()


def test_stream_false_refuses_a_set_beyond_the_budget_and_says_how_big(folder, monkeypatch):
    monkeypatch.setattr(trainer_module, "MEMORY_BUDGET", 10_000)  # the folder's 51,200 bytes exceed it
    with pytest.raises(ValueError, match=r"200 images of 1x16x16 take 50.0 KiB as uint8, more than the 9.8 KiB "
                                         r"held in memory, and stream is off: allow streaming"):
        Trainer(data=str(folder), stream=False, **RECIPE)


def test_cli_stream_and_workers_options(folder, tmp_path, capsys):
    args = _parser().parse_args(["train", "--data", str(folder), "--stream", "--workers", "2", "--epochs", "1",
                                 "--threads", "1", "--quiet", "--model-arg", "widths=[8,16,32]",
                                 "--runs-dir", str(tmp_path), "--name", "cli"])
    assert args.run(args) == 0
    out = capsys.readouterr().out
    assert "(streamed from disk, 2 workers)" in out and "test accuracy" in out
    config = (tmp_path / "cli" / "config.yaml").read_text()
    assert "stream: true" in config and "workers: 2" in config
    args = _parser().parse_args(["train", "--no-stream"])
    assert args.stream is False and "workers" not in args  # left out: the config's value stands


def test_a_corrupt_file_is_named_even_from_a_worker_and_left_out_of_its_batch(folder, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(folder, broken)
    (broken / "c3" / "zz-corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a picture")  # no header
    whole = (broken / "c3" / sorted((broken / "c3").iterdir())[0].name).read_bytes()
    (broken / "c3" / "zz-truncated.png").write_bytes(whole[:len(whole) // 2])  # a header, half the pixels
    with pytest.warns(UserWarning, match=r"skipped 1 file\(s\) that could not be read:\n  .*zz-corrupt\.png"):
        stream = load_dataset(broken, memory_budget=0).to("cpu", workers=2)
    assert len(stream) == 201  # the header-less file is left out before the epoch order is drawn
    with pytest.warns(UserWarning) as record:
        served = [list(stream.batches(50, seed=0, epoch=e)) for e in range(2)]
    messages = [str(w.message) for w in record if "zz-truncated.png" in str(w.message)]
    assert len(messages) == 1 and "zz-truncated.png: cannot decode image" in messages[0]  # once, by path
    assert "Traceback" not in messages[0]  # the file's message, not a worker's traceback dump
    assert [sum(len(y) for _, y in epoch) for epoch in served] == [200, 200]  # its batch is one smaller
    with pytest.warns(UserWarning, match=r"zz-truncated\.png"):
        result = Trainer(data=str(broken), runs_dir=str(tmp_path), stream=True, workers=2, **RECIPE).fit()
    assert result.stopped == "completed"
