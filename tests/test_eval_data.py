"""What a model is evaluated on: `load_eval_data` (folders and CSVs whole, train/ + test/ folders on test/, named
datasets on their test split), labels matched to the model's classes by name, and `convkit evaluate --data`."""

import csv
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from convkit.data import (
    DatasetNotFoundError,
    ImageTensorDataset,
    LabelError,
    load_dataset,
    load_eval_data,
    match_classes,
)

CLI = [sys.executable, "-m", "convkit"]
FASHION = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


@pytest.fixture(scope="module")
def shipped():
    return load_dataset("default", "test")


def _write(folder: Path, shipped, name: str, count: int, skip: int = 0) -> list[Path]:
    """`count` shipped test images of class `name` as PNGs in `folder`; returns their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    index = (shipped.labels == shipped.classes.index(name)).nonzero().flatten()[skip:skip + count].tolist()
    paths = []
    for i in index:
        paths.append(folder / f"{i:04d}.png")
        Image.fromarray(shipped.images[i, 0].numpy(), "L").save(paths[-1])
    return paths


def _by_hand(files: list[tuple[Path, str]], classes: list[str]) -> ImageTensorDataset:
    """The images read with PIL and labelled with the model's number of their class name: the independent truth."""
    images = torch.stack([torch.from_numpy(np.array(Image.open(p).convert("L")))[None] for p, _ in files])
    labels = torch.tensor([classes.index(name) for _, name in files])
    return ImageTensorDataset(images, labels, classes, "by hand")


# -- the data layer ---------------------------------------------------------------------------------------------


def test_a_folder_of_class_folders_is_evaluated_whole(tmp_path, shipped):
    _write(tmp_path / "photos" / "Bag", shipped, "Bag", 3)
    _write(tmp_path / "photos" / "Sneaker", shipped, "Sneaker", 2)
    data, what = load_eval_data(tmp_path / "photos")
    assert what == f"{tmp_path / 'photos'}/ (whole folder)"
    assert len(data) == 5 and data.classes == ["Bag", "Sneaker"] and data.labels.tolist() == [0, 0, 0, 1, 1]
    # the same folder for training still refuses a test split (it would test on its training data)
    with pytest.raises(DatasetNotFoundError, match="one collection"):
        load_dataset(tmp_path / "photos", "test")


def test_a_folder_with_train_and_test_is_evaluated_on_test(tmp_path, shipped):
    for name in ("Bag", "Coat"):
        _write(tmp_path / "photos" / "train" / name, shipped, name, 2)
        _write(tmp_path / "photos" / "test" / name, shipped, name, 3, skip=2)
    data, what = load_eval_data(tmp_path / "photos")
    assert what == str(tmp_path / "photos" / "test") and len(data) == 6
    data, what = load_eval_data(tmp_path / "photos", "train")
    assert what == str(tmp_path / "photos" / "train") and len(data) == 4
    (tmp_path / "only").mkdir()
    (tmp_path / "photos" / "train").rename(tmp_path / "only" / "train")
    with pytest.raises(DatasetNotFoundError, match="no test/ or val/ or validation/ subfolder"):
        load_eval_data(tmp_path / "only")


def test_a_csv_is_evaluated_whole_and_named_datasets_use_their_test_split(tmp_path, shipped):
    paths = _write(tmp_path / "img", shipped, "Trouser", 2) + _write(tmp_path / "img", shipped, "Dress", 1)
    rows = [(p.relative_to(tmp_path), name) for p, name in zip(paths, ["Trouser", "Trouser", "Dress"])]
    with open(tmp_path / "labels.csv", "w", newline="") as f:
        csv.writer(f).writerows(rows)
    data, what = load_eval_data(tmp_path / "labels.csv", classes=FASHION)
    assert what == f"{tmp_path / 'labels.csv'} (whole file)"
    assert data.labels.tolist() == [1, 1, 3] and data.classes == FASHION
    data, what = load_eval_data("default")
    assert what == "default (test split)" and len(data) == len(shipped)
    assert torch.equal(data.labels, shipped.labels)


def test_labels_are_matched_to_the_model_by_name_not_position():
    images = torch.zeros(4, 1, 2, 2, dtype=torch.uint8)
    data = ImageTensorDataset(images, torch.tensor([0, 1, 1, 0]), ["Bag", "Sneaker"], "photos")
    matched = match_classes(data, FASHION)
    assert matched.labels.tolist() == [8, 7, 7, 8] and matched.classes == FASHION  # Bag is 8, Sneaker 7
    assert match_classes(matched, FASHION) is matched
    # a class the model does not know is named
    odd = ImageTensorDataset(images, torch.tensor([0, 1, 1, 0]), ["Bag", "Giraffe"], "zoo/")
    with pytest.raises(LabelError, match="zoo/: class 'Giraffe' is not one of the model's 10 classes"):
        match_classes(odd, FASHION)
    # an empty class folder of an unknown name is no error: nothing carries its label
    assert match_classes(ImageTensorDataset(images, torch.zeros(4), ["Bag", "Giraffe"], "z"), FASHION).labels.tolist() \
        == [8, 8, 8, 8]
    # plain label numbers (a CSV of numbers) are the model's numbers; out of range is refused
    numbers = ImageTensorDataset(images, torch.tensor([3, 0, 9, 1]), [str(i) for i in range(10)], "n.csv")
    assert match_classes(numbers, FASHION).labels.tolist() == [3, 0, 9, 1]
    with pytest.raises(LabelError, match="label 3 at index 0"):
        match_classes(numbers, ["a", "b", "c"])


# -- through the real CLI -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    runs = tmp_path_factory.mktemp("runs")
    result = subprocess.run([*CLI, "train", "--epochs", "1", "--limit", "256", "--test-limit", "128", "--quiet",
                             "--threads", "1", "--runs-dir", str(runs), "--name", "r"],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    return runs / "r"


def _evaluate(run: Path, data: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, "evaluate", str(run), "--data", str(data), "--no-plots", *extra],
                          capture_output=True, text=True, timeout=300)


def _direct_top1(run: Path, dataset: ImageTensorDataset) -> float:
    from convkit.train import evaluate, load_checkpoint, predict_logits

    ckpt = load_checkpoint(run)
    top1 = evaluate(ckpt, dataset).top1
    logits = predict_logits(ckpt.model, dataset.images, ckpt.mean, ckpt.std, tta=bool(ckpt.meta.get("tta")))
    assert top1 == float((logits.argmax(1) == dataset.labels).float().mean())  # evaluate's arithmetic, by hand
    return top1


def test_cli_evaluates_a_folder_of_class_folders(run, tmp_path, shipped):
    # two classes that are not the model's first two: matching by position would call them T-shirt and Trouser
    files = [(p, "Sneaker") for p in _write(tmp_path / "photos" / "Sneaker", shipped, "Sneaker", 3)]
    files += [(p, "Bag") for p in _write(tmp_path / "photos" / "Bag", shipped, "Bag", 2)]
    files.sort()  # Bag/ before Sneaker/, as the folder is read
    result = _evaluate(run, tmp_path / "photos")
    assert result.returncode == 0, result.stderr
    assert f"on {tmp_path / 'photos'}/ (whole folder):" in result.stdout
    printed = re.search(r"5 images: top-1 ([\d.]+)%", result.stdout).group(1)
    assert printed == f"{100 * _direct_top1(run, _by_hand(files, FASHION)):.2f}"
    support = {line.split()[0]: int(line.split()[-1]) for line in result.stdout.splitlines()[4:]}
    assert support["Sneaker"] == 3 and support["Bag"] == 2 and support["Trouser"] == 0
    # an unknown class is named, not mislabelled
    _write(tmp_path / "photos" / "Giraffe", shipped, "Coat", 1)
    result = _evaluate(run, tmp_path / "photos")
    assert result.returncode != 0 and "class 'Giraffe' is not one of the model's 10 classes" in result.stderr


def test_cli_evaluates_the_test_folder_of_a_split_folder(run, tmp_path, shipped):
    split = {}
    for part, skip, count in (("train", 0, 2), ("test", 2, 3)):
        split[part] = [(p, name) for name in ("Coat", "Sandal")
                       for p in _write(tmp_path / "photos" / part / name, shipped, name, count, skip)]
    for part, extra in (("test", ()), ("train", ("--split", "train"))):
        result = _evaluate(run, tmp_path / "photos", "--json", *extra)
        assert result.returncode == 0, result.stderr
        report = json.loads(result.stdout)
        assert report["evaluated_on"] == str(tmp_path / "photos" / part)
        assert report["count"] == len(split[part])
        assert report["top1"] == pytest.approx(_direct_top1(run, _by_hand(sorted(split[part]), FASHION)), abs=1e-9)


def test_cli_evaluates_a_csv(run, tmp_path, shipped):
    files = [(p, name) for name in ("T-shirt/top", "Ankle boot", "Shirt")
             for p in _write(tmp_path / "img", shipped, name, 2)]
    with open(tmp_path / "labels.csv", "w", newline="") as f:
        csv.writer(f).writerows((f"img/{p.name}", name) for p, name in files)
    result = _evaluate(run, tmp_path / "labels.csv", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["evaluated_on"] == f"{tmp_path / 'labels.csv'} (whole file)" and report["count"] == 6
    assert report["top1"] == pytest.approx(_direct_top1(run, _by_hand(files, FASHION)), abs=1e-9)
    assert [c["support"] for c in report["per_class"]] == [2, 0, 0, 0, 0, 0, 2, 0, 0, 2]
