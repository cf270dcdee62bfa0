"""CIFAR python batches, written here like the real ones, and the refusal of pickles that would run code."""

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from convkit.data import DataFormatError, LabelError, load_cifar, load_dataset, load_named, safe_unpickle

CIFAR10_NAMES = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]


def dump(path: Path, obj) -> None:
    path.write_bytes(pickle.dumps(obj, protocol=2))  # protocol 2 and bytes keys, as the real batches


def batch(n: int, seed: int, label_key=b"labels", classes=10) -> tuple[dict, np.ndarray, list[int]]:
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
    labels = rng.integers(0, classes, n).tolist()
    return {b"batch_label": b"batch", label_key: labels, b"data": data, b"filenames": [b"x.png"] * n}, data, labels


def write_cifar10(folder: Path, per_batch: int = 3) -> dict:
    """A miniature cifar-10-batches-py; returns what each split should read back as."""
    folder.mkdir(parents=True, exist_ok=True)
    dump(folder / "batches.meta", {b"label_names": CIFAR10_NAMES, b"num_cases_per_batch": per_batch})
    truth = {"train": ([], []), "test": ([], [])}
    for i, name in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        content, data, labels = batch(per_batch, i)
        dump(folder / name, content)
        split = "test" if name == "test_batch" else "train"
        truth[split][0].append(data)
        truth[split][1].extend(labels)
    return {s: (np.concatenate(d), y) for s, (d, y) in truth.items()}


def test_cifar10_batches_load_as_nchw_uint8(tmp_path):
    truth = write_cifar10(tmp_path / "cifar-10-batches-py")
    images, labels, classes, files = load_cifar(tmp_path, "train")  # the parent folder works too
    assert images.shape == (15, 3, 32, 32) and images.dtype == torch.uint8
    assert labels.tolist() == truth["train"][1] and classes[0] == "airplane" and classes[9] == "truck"
    row = truth["train"][0][4]
    # The rows are 1024 red, then 1024 green, then 1024 blue values, each plane row-major (CIFAR's page).
    assert images[4, 1, 2, 5] == row[1024 + 2 * 32 + 5] and images[4, 2, 31, 31] == row[3071]
    assert [f.name for f in files] == [f"data_batch_{k}" for k in range(1, 6)]
    test = load_dataset(tmp_path / "cifar-10-batches-py", "test")
    assert len(test) == 3 and test.labels.tolist() == truth["test"][1] and test.num_classes == 10


def test_cifar100_uses_fine_labels_and_names(tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    names = [f"class{i}".encode() for i in range(100)]
    dump(folder / "meta", {b"fine_label_names": names, b"coarse_label_names": [b"c"] * 20})
    for split, seed in (("train", 1), ("test", 2)):
        content, data, labels = batch(4, seed, b"fine_labels", 100)
        content[b"coarse_labels"] = [0] * 4
        dump(folder / split, content)
    ds = load_dataset(folder, "test")
    assert ds.num_classes == 100 and ds.classes[42] == "class42" and ds.labels.tolist() == labels
    assert torch.equal(ds.images.flatten(1), torch.from_numpy(data))


def test_python3_pickles_with_numpy_protocol_5_load_too(tmp_path):
    content, data, _ = batch(2, 0)
    (tmp_path / "p5").write_bytes(pickle.dumps(content, protocol=5))
    assert np.array_equal(safe_unpickle(tmp_path / "p5")[b"data"], data)


class RunsShell:
    """Unpickling this calls os.system: what a malicious 'dataset' would do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


class Evaluates:
    def __reduce__(self):
        return eval, ("__import__('os').getpid()",)


@pytest.mark.parametrize("make", [lambda m: RunsShell(m), lambda m: Evaluates(), lambda m: {b"data": RunsShell(m)}])
def test_malicious_pickle_is_refused_without_running(tmp_path, make):
    marker = tmp_path / "pwned"
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar10(folder)
    dump(folder / "data_batch_3", make(marker))
    with pytest.raises(DataFormatError, match="refused to unpickle global") as err:
        load_cifar(folder, "train")
    assert "data_batch_3" in str(err.value)
    assert not marker.exists()


def test_wrong_shape_missing_batch_and_bad_labels_are_named(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar10(folder)
    dump(folder / "data_batch_2", {b"data": np.zeros((2, 1024), np.uint8), b"labels": [0, 1]})
    with pytest.raises(DataFormatError, match=r"data_batch_2: expected 'data' as a uint8 array of shape \(N, 3072\)"):
        load_cifar(folder, "train")
    dump(folder / "data_batch_2", {b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 10]})
    with pytest.raises(LabelError, match=r"data_batch_2: label 10 at index 1 is outside the class range 0..9"):
        load_cifar(folder, "train")
    (folder / "data_batch_5").unlink()
    with pytest.raises(FileNotFoundError, match="data_batch_5"):
        load_cifar(folder, "train")
    (folder / "test_batch").write_bytes(b"\x80\x02garbage")
    with pytest.raises(DataFormatError, match="test_batch: not a readable CIFAR pickle"):
        load_cifar(folder, "test", kind="cifar10")


def test_named_cifar10_is_found_in_data_dir_and_in_torchvision_layout(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("CONVKIT_DATA", raising=False)
    write_cifar10(tmp_path / "data" / "cifar10" / "cifar-10-batches-py")
    assert len(load_named("cifar10", "test", data_dir=tmp_path / "data")) == 3
    write_cifar10(tmp_path / "tv" / "cifar-10-batches-py", per_batch=2)  # torchvision's root=... layout
    monkeypatch.setenv("CONVKIT_DATA", str(tmp_path / "tv"))
    assert len(load_dataset("CIFAR-10", "train")) == 10
