"""Image folders and CSVs: every format and mode decoded to the channels asked for, bad files named."""

import csv

import numpy as np
import pytest
import torch
from PIL import Image

from convkit.data import (
    DataFormatError,
    DatasetNotFoundError,
    ImageFileDataset,
    ImageTensorDataset,
    LabelError,
    decode_image,
    load_dataset,
)

H, W = 16, 24


def pattern(seed: int) -> np.ndarray:
    """An RGB image of 4x4 blocks, so lossy formats keep it recognisable."""
    blocks = np.random.default_rng(seed).integers(0, 256, (H // 4, W // 4, 3), dtype=np.uint8)
    return blocks.repeat(4, 0).repeat(4, 1)


def chw(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(a).permute(2, 0, 1) if a.ndim == 3 else torch.from_numpy(a)[None]


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "pets"
    for name in ("cat", "dog", "empty", ".hidden_class", "cat/.ipynb_checkpoints"):
        (root / name).mkdir(parents=True)
    Image.fromarray(pattern(0)).save(root / "cat" / "a.png")
    Image.fromarray(pattern(1)).save(root / "cat" / "b.jpg", quality=95, subsampling=0)
    Image.fromarray(pattern(2)).save(root / "cat" / "c.bmp")
    Image.fromarray(pattern(3)).save(root / "cat" / "d.webp", lossless=True)
    Image.fromarray(pattern(4)).save(root / "cat" / ".thumbnail.png")
    Image.fromarray(pattern(5)).save(root / "cat" / ".ipynb_checkpoints" / "e.png")
    Image.fromarray(pattern(6)).save(root / ".hidden_class" / "f.png")
    Image.fromarray(pattern(7)[..., 0]).save(root / "dog" / "g.PNG")
    (root / "dog" / "notes.txt").write_text("not an image")
    return root


def test_folder_formats_hidden_names_and_empty_class(folder):
    with pytest.warns(UserWarning, match="without images: empty"):
        ds = load_dataset(folder)
    assert isinstance(ds, ImageTensorDataset)
    assert ds.classes == ["cat", "dog", "empty"]  # hidden folder skipped; the empty class keeps its number
    assert ds.labels.tolist() == [0, 0, 0, 0, 1] and ds.images.shape == (5, 3, H, W)
    assert [s.rsplit("/", 1)[1] for s in ds.sample_sources] == ["a.png", "b.jpg", "c.bmp", "d.webp", "g.PNG"]
    for i, seed in ((0, 0), (2, 2), (3, 3)):  # lossless formats: exact
        assert torch.equal(ds.images[i], chw(pattern(seed)))
    assert (ds.images[1].float() - chw(pattern(1)).float()).abs().mean() < 4  # JPEG: close
    assert torch.equal(ds.images[4], chw(pattern(7)[..., 0]).expand(3, H, W))  # gray -> RGB by replication


def test_corrupt_file_is_reported_by_path_and_the_others_load(folder):
    bad = folder / "dog" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    cut = folder / "cat" / "truncated.jpg"
    cut.write_bytes((folder / "cat" / "b.jpg").read_bytes()[:200])
    with pytest.warns(UserWarning) as record:
        ds = load_dataset(folder)
    text = "\n".join(str(w.message) for w in record)
    assert str(bad) in text and str(cut) in text and "skipped 2 file(s)" in text
    assert len(ds) == 5
    with pytest.raises(DataFormatError, match="broken.png: cannot decode image"):
        decode_image(bad)


def test_modes_are_converted_to_the_channels_asked_for(tmp_path):
    rgb = pattern(0)
    Image.fromarray(np.dstack([rgb, np.full((H, W), 77, np.uint8)]), "RGBA").save(tmp_path / "rgba.png")
    assert torch.equal(decode_image(tmp_path / "rgba.png"), chw(rgb))  # alpha dropped, colours kept
    assert decode_image(tmp_path / "rgba.png", channels=4)[3].eq(77).all()

    palette = [255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * 759
    index = np.arange(H * W, dtype=np.uint8).reshape(H, W) % 3
    p = Image.fromarray(index, "P")
    p.putpalette(palette)
    p.save(tmp_path / "palette.png", transparency=2)
    expected = np.array(palette[:9], np.uint8).reshape(3, 3)[index]
    assert torch.equal(decode_image(tmp_path / "palette.png"), chw(expected))

    gray8 = pattern(1)[..., 1]
    Image.fromarray(gray8.astype(np.uint16) * 257).save(tmp_path / "gray16.png")  # 16-bit, full range
    assert Image.open(tmp_path / "gray16.png").mode.startswith("I")
    assert torch.equal(decode_image(tmp_path / "gray16.png", channels=1), chw(gray8))
    assert decode_image(tmp_path / "gray16.png", channels=None).shape == (1, H, W)  # grayscale stays 1 channel

    r, g, b = (rgb[..., i].astype(np.float64) for i in range(3))
    luma = (r * 299 + g * 587 + b * 114) / 1000  # ITU-R 601-2, PIL's documented L conversion
    assert (decode_image(tmp_path / "rgba.png", channels=1)[0].double() - torch.from_numpy(luma)).abs().max() <= 1


def test_exif_orientation_is_applied(tmp_path):
    shown = np.zeros((H, W, 3), np.uint8)
    shown[:4, :8] = 255  # a white block top-left, as displayed
    stored = Image.fromarray(shown).transpose(Image.Transpose.ROTATE_90)  # the sensor's view, 24 high, 16 wide
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    stored.save(tmp_path / "phone.jpg", exif=exif.tobytes(), quality=95)
    x = decode_image(tmp_path / "phone.jpg")
    assert x.shape == (3, H, W)
    assert x[:, :4, :8].float().mean() > 200 and x[:, 4:, 8:].float().mean() < 30


def test_sizes_must_agree_unless_resized(tmp_path):
    for name, size in (("a", (8, 8)), ("b", (10, 6))):
        (tmp_path / "c" / name).mkdir(parents=True)
        Image.new("RGB", size, (10, 20, 30)).save(tmp_path / "c" / name / "x.png")
    with pytest.raises(DataFormatError, match=r"images differ in size .*image_size"):
        load_dataset(tmp_path / "c")
    ds = load_dataset(tmp_path / "c", image_size=(5, 7), channels=1)
    assert ds.images.shape == (2, 1, 5, 7)


def test_train_and_test_subfolders_and_single_collection(tmp_path, folder):
    for split, n in (("train", 2), ("test", 1)):
        for cls in ("a", "b"):
            (tmp_path / "ds" / split / cls).mkdir(parents=True)
            for i in range(n):
                Image.fromarray(pattern(i)).save(tmp_path / "ds" / split / cls / f"{i}.png")
    assert len(load_dataset(tmp_path / "ds")) == 4 and len(load_dataset(tmp_path / "ds", "test")) == 2
    with pytest.raises(DatasetNotFoundError, match="no separate 'test' split"):
        load_dataset(folder, "test")


def write_csv(path, rows):
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows(rows)


def test_csv_of_paths_and_labels(folder):
    write_csv(folder / "labels.csv", [("path", "label"), ("cat/a.png", "tabby"), ("dog/g.PNG", "hound"),
                                      ("cat/c.bmp", "tabby"), ("cat/missing.png", "hound")])
    with pytest.warns(UserWarning, match="missing.png"):
        ds = load_dataset(folder / "labels.csv", channels=1)
    assert ds.classes == ["hound", "tabby"] and ds.labels.tolist() == [1, 0, 1]
    assert ds.images.shape == (3, 1, H, W) and ds.sample_sources[1].endswith("labels.csv:3 (dog/g.PNG)")

    write_csv(folder / "numbers.csv", [("cat/a.png", "0"), ("dog/g.PNG", "2")])  # no header, numeric labels
    ds = load_dataset(folder / "numbers.csv")
    assert ds.classes == ["0", "1", "2"] and ds.labels.tolist() == [0, 2]
    message = r"numbers.csv:2 \(dog/g.PNG\): label 2 at index 1 is outside the class range 0..1"
    with pytest.raises(LabelError, match=message):
        load_dataset(folder / "numbers.csv", classes=["cat", "dog"])
    with pytest.raises(LabelError, match=message):
        ds.check_labels(2)  # the model has fewer classes than the data: the file and line are named


@pytest.mark.filterwarnings("ignore:.*class folder.s. without images")
def test_beyond_the_memory_budget_images_stream_through_workers(tmp_path, folder):
    in_memory = load_dataset(folder, image_size=(H, W))
    streamed = load_dataset(folder, image_size=(H, W), memory_budget=100)
    assert isinstance(streamed, ImageFileDataset) and streamed.classes == in_memory.classes
    loader = torch.utils.data.DataLoader(streamed, batch_size=2, num_workers=2)
    images, labels = zip(*loader)
    assert torch.equal(torch.cat(images), in_memory.images) and torch.cat(labels).tolist() == in_memory.labels.tolist()
    assert torch.allclose(streamed.mean, in_memory.mean) and streamed.image_shape == (3, H, W)
