"""IDX files: hand-written bytes, gzip or not, damaged files named, the real Fashion-MNIST."""

import gzip
import struct
from pathlib import Path

import pytest
import torch

from convkit.data import DataFormatError, LabelError, find_idx_pair, load_dataset, read_idx, write_idx

FASHION = Path(__file__).resolve().parents[2] / "shared" / "data" / "fashion-mnist"


def idx_bytes(type_code: int, dims: tuple[int, ...], payload: bytes) -> bytes:
    """An IDX file written by hand from the format's description (LeCun's MNIST page)."""
    return bytes([0, 0, type_code, len(dims)]) + b"".join(struct.pack(">i", d) for d in dims) + payload


IMAGES = idx_bytes(0x08, (2, 3, 4), bytes(range(24)))  # magic 0x00000803


@pytest.mark.parametrize("compressed", [False, True])
def test_reads_hand_written_ubyte_images_plain_and_gzipped(tmp_path, compressed):
    path = tmp_path / "x-idx3-ubyte"
    path.write_bytes(gzip.compress(IMAGES) if compressed else IMAGES)
    x = read_idx(path)
    assert x.dtype == torch.uint8 and x.shape == (2, 3, 4)
    assert x[1, 2, 3] == 23 and x[0, 1, 0] == 4  # C order: index (i, j, k) holds 12 i + 4 j + k


def test_reads_big_endian_int16_and_float32(tmp_path):
    (tmp_path / "s").write_bytes(idx_bytes(0x0B, (3,), b"\x01\x02\xff\xfe\x00\x07"))
    assert read_idx(tmp_path / "s").tolist() == [258, -2, 7]
    (tmp_path / "f").write_bytes(idx_bytes(0x0D, (2,), struct.pack(">ff", 1.5, -0.25)))
    assert read_idx(tmp_path / "f").tolist() == [1.5, -0.25]


@pytest.mark.parametrize("name", ["a-idx3-ubyte", "a-idx3-ubyte.gz"])
def test_write_idx_gives_the_hand_written_bytes(tmp_path, name):
    path = write_idx(tmp_path / name, torch.arange(24, dtype=torch.uint8).view(2, 3, 4))
    raw = path.read_bytes()
    assert (gzip.decompress(raw) if name.endswith(".gz") else raw) == IMAGES
    assert [p.name for p in tmp_path.iterdir()] == [name]  # no temp file left behind


@pytest.mark.parametrize("data, message", [
    (b"\x00\x00\x08\x03" + struct.pack(">iii", 2, 3, 4) + bytes(20), "truncated"),
    (IMAGES + b"\x00", "trailing"),
    (b"\x00\x00\x08\x03\x00\x00", "truncated IDX header"),
    (b"\x1f\x8b\x08\x00" + bytes(8), "gzip"),
    (b"P5\n28 28\n255\n" + bytes(784), "magic number"),
    (b"\x00\x00\x07\x01" + struct.pack(">i", 1) + b"\x00", "magic number"),
])
def test_damaged_files_are_named_with_what_was_expected(tmp_path, data, message):
    path = tmp_path / "bad-idx3-ubyte"
    path.write_bytes(data)
    with pytest.raises(DataFormatError, match=message) as err:
        read_idx(path)
    assert str(path) in str(err.value)


def test_truncated_gzip_is_reported(tmp_path):
    path = tmp_path / "cut-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(IMAGES)[:-10])
    with pytest.raises(DataFormatError, match="cut-idx3-ubyte.gz"):
        read_idx(path)


def write_split(folder: Path, prefix: str, images: torch.Tensor, labels: torch.Tensor, gz: str = ".gz"):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{prefix}-images-idx3-ubyte{gz}").write_bytes(
        idx_bytes(0x08, tuple(images.shape), images.numpy().tobytes()))
    (folder / f"{prefix}-labels-idx1-ubyte{gz}").write_bytes(idx_bytes(0x08, (len(labels),), labels.numpy().tobytes()))


def test_folder_of_idx_files_loads_both_splits(tmp_path):
    images = torch.randint(0, 256, (5, 4, 3), dtype=torch.uint8)
    write_split(tmp_path, "train", images, torch.tensor([0, 1, 2, 1, 0], dtype=torch.uint8), gz="")
    write_split(tmp_path, "t10k", images[:2], torch.tensor([2, 2], dtype=torch.uint8), gz="")
    train, test = load_dataset(tmp_path), load_dataset(tmp_path, "test")
    assert train.images.shape == (5, 1, 4, 3) and torch.equal(train.images[:, 0], images)
    assert train.labels.dtype == torch.int64 and train.labels.tolist() == [0, 1, 2, 1, 0]
    assert train.classes == ["0", "1", "2"] and len(test) == 2
    assert find_idx_pair(tmp_path, "test")[0].name == "t10k-images-idx3-ubyte"


def test_mismatched_counts_and_negative_labels_name_the_labels_file(tmp_path):
    images = torch.zeros(3, 2, 2, dtype=torch.uint8)
    write_split(tmp_path / "a", "train", images, torch.tensor([0, 1], dtype=torch.uint8))
    with pytest.raises(DataFormatError, match="train-labels-idx1-ubyte.gz: 2 labels for 3 images"):
        load_dataset(tmp_path / "a")
    b = tmp_path / "b"
    write_split(b, "train", images, torch.zeros(3, dtype=torch.uint8))
    (b / "train-labels-idx1-ubyte.gz").write_bytes(idx_bytes(0x0C, (3,), struct.pack(">iii", 0, -1, 1)))
    with pytest.raises(LabelError, match=r"train-labels-idx1-ubyte.gz: label -1 at index 1"):
        load_dataset(b)


def test_a_single_images_file_finds_its_labels_beside_it(tmp_path):
    write_split(tmp_path, "train", torch.ones(2, 3, 3, dtype=torch.uint8), torch.tensor([1, 0], dtype=torch.uint8))
    ds = load_dataset(tmp_path / "train-images-idx3-ubyte.gz")
    assert ds.labels.tolist() == [1, 0] and ds.images.shape == (2, 1, 3, 3)


@pytest.mark.skipif(not FASHION.is_dir(), reason=f"the real Fashion-MNIST is not at {FASHION}")
def test_real_fashion_mnist():
    images, labels = read_idx(FASHION / "train-images-idx3-ubyte.gz"), read_idx(FASHION / "train-labels-idx1-ubyte.gz")
    assert images.shape == (60000, 28, 28) and images.dtype == torch.uint8
    assert torch.bincount(labels.long()).tolist() == [6000] * 10
    assert labels[:10].tolist() == [9, 0, 0, 3, 0, 2, 7, 2, 5, 5]  # the first one is the famous ankle boot
    test = load_dataset(FASHION, "test")
    assert test.images.shape == (10000, 1, 28, 28) and test.classes[9] == "Ankle boot"
    assert torch.bincount(test.labels).tolist() == [1000] * 10
