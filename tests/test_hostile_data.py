"""Careless and hostile image folders and CSVs (issue 10): link loops, mixed modes and sizes, huge images,
FIFOs, bad CSV headers and labels, corrupt files while streaming. Each case is fed, as the user made it, to the
CLI or the loader, and checked against truth computed here: the right images with the right labels, or one
line naming the file (and line) with exit code 2. Cases that used to exhaust memory or hang run in a
subprocess under an address-space cap and a time limit."""

import json
import os
import resource
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import convkit
from convkit.cli.main import main
from convkit.data import (
    DataFormatError,
    ImageFileDataset,
    LabelError,
    decode_image,
    load_dataset,
    read_csv,
)

SIZE = 16
SRC = str(Path(convkit.__file__).resolve().parents[1])
ADDRESS_SPACE = int(4.5 * 2**30)  # torch maps about 3.3 GiB; a 12000x12000 image upscaled batch-wide is far more
QUICK = ["--epochs", "1", "--threads", "1", "--quiet", "--model-arg", "widths=[8,16,32]", "--batch-size", "8"]


def pixels(seed: int, mode: str = "RGB", size=(SIZE, SIZE)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    shape = (size[0], size[1], 3) if mode == "RGB" else size
    return rng.integers(0, 256, shape, dtype=np.uint8)


def truth(path: Path) -> torch.Tensor:
    """The image as the test reads it with PIL alone (RGB, C x H x W)."""
    return torch.from_numpy(np.array(Image.open(path).convert("RGB"))).permute(2, 0, 1)


@pytest.fixture
def pets(tmp_path):
    """pets/cat and pets/dog, 4 distinct RGB PNGs each."""
    root = tmp_path / "pets"
    for c, name in enumerate(("cat", "dog")):
        (root / name).mkdir(parents=True)
        for i in range(4):
            Image.fromarray(pixels(10 * c + i)).save(root / name / f"{i:03d}.png")
    return root


def cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def capped(*argv, timeout: float = 120) -> subprocess.CompletedProcess:
    """Runs `python *argv` in a subprocess under the address-space cap and a time limit."""
    def cap():
        resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))

    env = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, *map(str, argv)], capture_output=True, text=True, timeout=timeout,
                          preexec_fn=cap, env=env)


def huge_png(path: Path, width: int, height: int) -> None:
    """A valid black RGB PNG of width x height, written row by row: a few MB on disk, no big buffer here."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    z, row = zlib.compressobj(1), b"\0" + bytes(3 * width)
    body = b"".join(z.compress(row) for _ in range(height)) + z.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b""))


# --- links -------------------------------------------------------------------------------------------------


def test_a_symlink_loop_is_not_followed_and_each_image_keeps_its_class(pets):
    os.symlink("..", pets / "cat" / "loop")  # cat/loop/dog/... would label the dogs cat, 40 levels deep
    with pytest.warns(UserWarning, match=r"cat/loop: a link back to .*\(a loop\); not followed"):
        ds = load_dataset(pets)
    files = sorted((pets / "cat").glob("*.png")) + sorted((pets / "dog").glob("*.png"))
    assert len(ds) == 8 and ds.labels.tolist() == [0] * 4 + [1] * 4
    assert torch.equal(ds.images, torch.stack([truth(f) for f in files]))


def test_the_cli_trains_on_a_looped_folder_with_each_image_once_under_a_memory_cap(pets, tmp_path):
    os.symlink("..", pets / "cat" / "loop")
    os.symlink("../..", pets / "dog" / "up")  # a link above the data, which holds it: two loops, 2^40 paths
    result = capped("-m", "convkit", "train", "--data", pets, "--test-data", pets, *QUICK,
                    "--runs-dir", tmp_path / "runs", timeout=180)
    assert result.returncode == 0, result.stderr[-2000:]
    assert ": 8 images 3x16x16, 2 classes; test 8" in result.stdout
    assert "cat/loop: a link back to" in result.stderr and "dog/up: a link back to" in result.stderr


def test_a_folder_or_file_reachable_from_two_classes_is_an_error_naming_both(pets, tmp_path, capsys):
    os.symlink("../cat", pets / "dog" / "cats")
    code, _, err = cli(capsys, "train", "--data", pets, *QUICK, "--runs-dir", tmp_path / "runs")
    assert code == 2 and err.count("\n") == 1
    assert f"{pets / 'dog' / 'cats'}: links to {pets / 'cat'}, a folder of another class" in err
    (pets / "dog" / "cats").unlink()
    os.symlink("../cat/001.png", pets / "dog" / "zz.png")
    with pytest.raises(LabelError, match=r"dog/zz\.png: the same file as .*cat/001\.png .* in class cat and in "
                                         r"class dog"):
        load_dataset(pets)


def test_a_link_outside_is_followed_once_and_a_file_seen_twice_in_a_class_counts_once(pets, tmp_path):
    outside = tmp_path / "more_cats"
    outside.mkdir()
    for i in range(2):
        Image.fromarray(pixels(100 + i)).save(outside / f"x{i}.png")
    os.symlink(outside, pets / "cat" / "more")
    os.symlink(outside, pets / "cat" / "more_again")
    os.symlink("000.png", pets / "cat" / "copy.png")
    with pytest.warns(UserWarning) as record:
        ds = load_dataset(pets)
    text = "\n".join(str(w.message) for w in record)
    assert "cat/more_again: a link to" in text and "cat/copy.png: the same file as" in text
    assert ds.labels.tolist() == [0] * 6 + [1] * 4  # 4 cats, 2 linked from outside, once; 4 dogs
    assert sum(torch.equal(image, truth(outside / "x0.png")) for image in ds.images) == 1


# --- channels, size, huge images ---------------------------------------------------------------------------


def test_channels_come_from_the_majority_not_the_first_file(pets):
    gray = pixels(99, "L")
    Image.fromarray(gray).save(pets / "cat" / "000-gray.png")  # sorts first
    for budget in (2 << 30, 0):  # in memory and streamed
        with pytest.warns(UserWarning, match=r"8 of 9 images are colour, 1 grayscale \(e.g. .*000-gray\.png\)"):
            ds = load_dataset(pets, memory_budget=budget)
        assert tuple(ds.image_shape) == (3, SIZE, SIZE) and len(ds) == 9
    assert torch.equal(ds[0][0], torch.from_numpy(gray).expand(3, SIZE, SIZE))


def test_sizes_that_differ_stop_with_the_majority_size_and_an_odd_file(pets):
    Image.fromarray(pixels(98, size=(40, 30))).save(pets / "cat" / "000-big.png")
    with pytest.raises(DataFormatError, match=r"images differ in size \(8 of 9 are 16x16, .*cat/000-big\.png is "
                                              r"40x30\); pass image_size"):
        load_dataset(pets, memory_budget=0)
    assert load_dataset(pets, image_size=(8, 8)).images.shape == (9, 3, 8, 8)


def test_a_huge_image_is_refused_by_its_header_under_a_memory_cap(pets, tmp_path):
    huge = pets / "cat" / "000-huge.png"
    huge_png(huge, 12000, 12000)  # about 400 KB on disk; 432 MB decoded, 3.5 GB per batch of 8 upscaled
    assert Image.open(huge).size == (12000, 12000)
    with pytest.raises(DataFormatError, match=r"000-huge\.png: 12000x12000 pixels \(144,000,000\), more than the "
                                              r"89,478,485"):
        decode_image(huge)
    script = ("import json, sys, convkit.data as d; ds = d.load_dataset(sys.argv[1], memory_budget=0);"
              "x, y = next(iter(ds.to('cpu', workers=0).batches(8, shuffle=False)));"
              "print(json.dumps([len(ds), list(x.shape)]))")
    result = capped("-c", script, pets)
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout) == [8, [8, 3, SIZE, SIZE]]  # the others, at their own size
    assert "skipped 1 file(s)" in result.stderr and "000-huge.png: 12000x12000 pixels" in result.stderr


# --- FIFOs and other paths that are not files --------------------------------------------------------------


def test_fifos_folders_and_devices_named_like_images_are_skipped_not_read(pets, tmp_path):
    os.mkfifo(pets / "cat" / "x.png")  # opening it for reading waits for a writer: for ever
    (pets / "dog" / "folder.png").mkdir()
    rows = ["path,label", "cat/000.png,cat", "dog/000.png,dog", "cat/x.png,cat", "dog/folder.png,dog",
            "/dev/zero,dog", "cat/001.png,cat", "dog/001.png,dog"]
    (pets / "labels.csv").write_text("\n".join(rows) + "\n")
    script = "import json, sys, convkit.data as d; print(json.dumps([len(d.load_dataset(p)) for p in sys.argv[1:]]))"
    result = capped("-c", script, pets, pets / "labels.csv", timeout=60)  # a reader that opens the FIFO would hang here, not for ever
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout) == [8, 4]
    assert f"{pets}: skipped 1 path(s):\n  {pets / 'cat' / 'x.png'}: a FIFO (named pipe), not an image file" \
        in result.stderr
    assert "labels.csv: skipped 3 file(s) that could not be read" in result.stderr
    for text, times in (("cat/x.png: a FIFO", 2), ("dog/folder.png: a folder", 1), ("/dev/zero: a character", 1)):
        assert result.stderr.count(text) == times  # once by the folder, once by the CSV, which lists it too


# --- CSV labels --------------------------------------------------------------------------------------------


def write(path: Path, *lines: str) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


def test_a_class_list_from_the_cli_refuses_an_unknown_label_by_file_and_line(pets, tmp_path, capsys):
    labels = write(pets / "labels.csv", "cat/000.png,cat", "dog/000.png,dog", "dog/001.png,cow")
    code, _, err = cli(capsys, "train", "--data", labels, "--classes", "cat,dog", *QUICK, "--runs-dir", tmp_path)
    assert code == 2 and err.count("\n") == 1
    assert f"{labels}:3 (dog/001.png): label 'cow' is not one of the 2 classes (['cat', 'dog'])" in err
    names = write(tmp_path / "names.txt", "dog", "cat", "cow")  # a file of one name a line; its order counts
    samples, classes, _ = read_csv(labels, str(names))
    assert classes == ["dog", "cat", "cow"] and [y for _, y in samples] == [1, 0, 2]
    write(pets / "classes.txt", "cat", "dog")  # beside the CSV: read without being asked for
    with pytest.raises(LabelError, match=r"labels.csv:3 \(dog/001.png\): label 'cow' is not one of the 2"):
        load_dataset(labels)


def test_a_class_list_orders_and_checks_an_image_folder_too(pets, tmp_path, capsys):
    ds = load_dataset(pets, classes="dog,cat")
    assert ds.classes == ["dog", "cat"] and ds.labels.tolist() == [1] * 4 + [0] * 4
    code, _, err = cli(capsys, "train", "--data", pets, "--classes", "cat,cow", *QUICK, "--runs-dir", tmp_path)
    assert code == 2 and "class 'dog' is not one of the model's 2 classes (cat, cow)" in err
    code, _, err = cli(capsys, "train", "--data", pets, "--classes", "cat,cat", *QUICK, "--runs-dir", tmp_path)
    assert code == 2 and "classes: class 'cat' is listed twice" in err


def test_a_header_with_extra_columns_is_read_by_its_words(pets):
    labels = write(pets / "labels.csv", "path,label,split,notes", "cat/000.png,cat,train,ok", "dog/000.png,dog,test,")
    with pytest.warns(UserWarning, match=r"labels.csv:1: the `split` column is ignored"):
        ds = load_dataset(labels)
    assert ds.classes == ["cat", "dog"] and ds.labels.tolist() == [0, 1]  # no class "label" from the header
    swapped = write(pets / "swapped.csv", "class,id,filename", "dog,7,dog/001.png", "cat,8,cat/001.png")
    ds = load_dataset(swapped)
    assert ds.labels.tolist() == [1, 0] and torch.equal(ds.images[0], truth(pets / "dog" / "001.png"))


def test_swapped_columns_without_a_header_say_the_first_column_is_the_path(pets, tmp_path, capsys):
    labels = write(pets / "labels.csv", "cat,cat/000.png", "dog,dog/000.png")
    code, _, err = cli(capsys, "train", "--data", labels, *QUICK, "--runs-dir", tmp_path)
    assert code == 2 and err.count("\n") == 1
    assert f"{labels}:1: the label 'cat/000.png' is an image file name and the path 'cat' is not: the first " \
           "column should be the image path" in err


def test_a_huge_label_number_is_refused_under_a_memory_cap(pets, tmp_path):
    labels = write(pets / "labels.csv", "cat/000.png,0", "dog/000.png,1", "dog/001.png,999999999")
    result = capped("-m", "convkit", "train", "--data", labels, *QUICK, "--runs-dir", tmp_path)
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.strip() == (f"convkit: error: {labels}:3 (dog/001.png): label 999999999 would make "
                                     "1,000,000,000 classes; without a class list label numbers go up to 10,000 "
                                     "(list the classes in classes.txt beside the CSV, one a line, or pass --classes)")
    with pytest.raises(LabelError, match=r"labels.csv:3 \(dog/001.png\): label 999999999 at index 2 is outside "
                                         r"the class range 0..1"):
        read_csv(labels, ["cat", "dog"])  # with a class list, a number is checked against it


# --- corrupt files: in memory and streamed alike -----------------------------------------------------------


def test_a_file_that_fails_to_decode_is_skipped_in_memory_and_streamed_and_resumes_exactly(pets):
    whole = (pets / "dog" / "000.png").read_bytes()
    (pets / "dog" / "zz.png").write_bytes(whole[:len(whole) // 2])  # its header reads; its pixels do not
    with pytest.warns(UserWarning, match=r"skipped 1 file\(s\) that could not be read:\n  .*dog/zz\.png: cannot "
                                         r"decode image \(OSError: image file is truncated"):
        memory = load_dataset(pets)
    assert len(memory) == 8 and not any(s.endswith("zz.png") for s in memory.sample_sources)
    stream = load_dataset(pets, memory_budget=0).to("cpu", workers=0)
    assert isinstance(stream, ImageFileDataset) and len(stream) == 9  # found out only when decoded
    with pytest.warns(UserWarning) as record:
        epoch = list(stream.batches(3, seed=1, epoch=0))
        again = list(stream.batches(3, seed=1, epoch=0))
    assert [str(w.message).count("dog/zz.png") for w in record] == [1]  # once, by path
    served = torch.cat([x for x, _ in epoch])
    assert len(served) == 8 and sorted(map(bytes, served.flatten(1).numpy())) == sorted(
        map(bytes, memory.images.flatten(1).numpy()))  # the same images as in memory
    assert all(torch.equal(a[0], b[0]) for a, b in zip(epoch, again))
    for start in (3, 6):  # resuming after one or two batches serves the batches still to come, the same ones
        resumed = list(stream.batches(3, seed=1, epoch=0, start=start))
        assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
                   for a, b in zip(resumed, epoch[start // 3:], strict=True))
