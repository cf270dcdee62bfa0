"""The shipped Fashion-MNIST subset and the in-memory dataset: seeded batches, resuming, splits, label checks."""

import gzip
import hashlib
import json
from importlib.resources import files
from pathlib import Path

import pytest
import torch

from convkit.data import ImageTensorDataset, LabelError, check_labels, load_dataset, load_default, read_idx

FASHION = Path(__file__).resolve().parents[2] / "shared" / "data" / "fashion-mnist"
ASSETS = Path(str(files("convkit") / "assets" / "fashion-mnist-small"))
CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


def test_shipped_subset_loads_stratified_with_no_arguments():
    train, test = load_default(), load_dataset("default", "test")
    assert train.images.shape == (6000, 1, 28, 28) and test.images.shape == (1000, 1, 28, 28)
    assert train.classes == CLASSES and test.classes == CLASSES
    assert train.class_counts().tolist() == [600] * 10 and test.class_counts().tolist() == [100] * 10
    assert 0.25 < float(train.mean) < 0.32 and 0.32 < float(train.std) < 0.38  # Fashion-MNIST's 0.286, 0.353
    size = sum(p.stat().st_size for p in ASSETS.iterdir())
    assert size < 3.3e6, f"the shipped subset grew to {size / 1e6:.2f} MB"


def test_shipped_files_match_their_recorded_checksums_and_licence():
    meta = json.loads((ASSETS / "dataset.json").read_text())
    for split in ("train", "test"):
        for name, info in meta["splits"][split]["files"].items():
            assert hashlib.sha256(gzip.decompress((ASSETS / name).read_bytes())).hexdigest() == info["sha256_decompressed"]
    assert "MIT" in (ASSETS / "LICENSE.txt").read_text() and "Zalando" in (ASSETS / "LICENSE.txt").read_text()


@pytest.mark.skipif(not FASHION.is_dir(), reason=f"the real Fashion-MNIST is not at {FASHION}")
def test_every_shipped_image_is_a_real_fashion_mnist_image_with_its_label():
    for split, prefix in (("train", "train"), ("test", "t10k")):
        real = read_idx(FASHION / f"{prefix}-images-idx3-ubyte.gz").flatten(1).numpy()
        real_labels = read_idx(FASHION / f"{prefix}-labels-idx1-ubyte.gz").tolist()
        lookup = {row.tobytes(): y for row, y in zip(real, real_labels)}
        ours = load_default(split)
        for image, label in zip(ours.images.flatten(1).numpy(), ours.labels.tolist()):
            assert lookup[image.tobytes()] == label


def toy(n=10, classes=2):
    images = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 1, 2, 2).contiguous()
    return ImageTensorDataset(images, torch.arange(n) % classes, [str(c) for c in range(classes)], "toy.idx",
                              sample_sources=[f"img{i}.png" for i in range(n)])


def test_batches_cover_every_sample_once_in_a_seeded_order():
    ds = toy(10)
    seen = [int(x[0, 0, 0]) for images, _ in ds.batches(3, seed=1, epoch=0) for x in images]
    assert sorted(seen) == list(range(10)) and seen != list(range(10))
    again = [int(x[0, 0, 0]) for images, _ in ds.batches(3, seed=1, epoch=0) for x in images]
    other = [int(x[0, 0, 0]) for images, _ in ds.batches(3, seed=1, epoch=1) for x in images]
    assert again == seen and other != seen
    plain = [b.shape[0] for b, _ in ds.batches(4, shuffle=False, drop_last=True)]
    assert plain == [4, 4] and len(ds.batches(4)) == 3


def test_resuming_from_a_position_serves_exactly_the_remaining_batches():
    ds = toy(23)
    full = [images[:, 0, 0, 0].tolist() for images, _ in ds.batches(5, seed=7, epoch=2)]
    run = ds.batches(5, seed=7, epoch=2)
    iterator = iter(run)
    next(iterator), next(iterator)
    state = run.state_dict()
    assert state == {"seed": 7, "epoch": 2, "position": 10}
    rest = [images[:, 0, 0, 0].tolist() for images, _ in ds.batches(5, seed=7, epoch=2, start=state["position"])]
    assert rest == full[2:]


def test_split_is_stratified_and_disjoint():
    ds = toy(40, classes=4)
    train, val = ds.split(0.3, seed=0)
    assert val.class_counts().tolist() == [3, 3, 3, 3] and train.class_counts().tolist() == [7, 7, 7, 7]
    assert ds.split(0.3, seed=0)[1].images.equal(val.images) and not ds.split(0.3, seed=1)[1].images.equal(val.images)
    values = set(train.images[:, 0, 0, 0].tolist()) | set(val.images[:, 0, 0, 0].tolist())
    assert len(values) == 40 and val.sample_sources[0].startswith("img")


def test_normalize_gives_zero_mean_unit_std():
    ds = load_default("test")
    x = ds.normalize(ds.images)
    assert abs(float(x.mean())) < 1e-4 and abs(float(x.std()) - 1) < 1e-3


def test_labels_outside_the_class_range_name_the_file_and_index():
    with pytest.raises(LabelError, match=r"labels.idx: label 10 at index 2 is outside the class range 0..9 \(2 of 4"):
        check_labels(torch.tensor([0, 9, 10, -1]), 10, "labels.idx")
    with pytest.raises(LabelError, match=r"img1.png: label 1 at index 1 is outside the class range 0..0 \(2 of 4"):
        toy(4).check_labels(1)  # a one-class model for two-class data: the first offending file is named
    toy(4).check_labels()
