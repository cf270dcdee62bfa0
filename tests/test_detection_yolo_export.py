"""DetectionDataset.to_yolo (issue 13, the peer benchmark's data): scenes exported to YOLO format read back by
convkit's own YOLO reader to the same images and boxes; the labels as Ultralytics reads them; bad uses named."""

import pytest
import torch
import yaml

from convkit.data.errors import DataFormatError
from convkit.tasks.detection.data import DetectionDataset, load_detection, read_yolo
from convkit.tasks.detection.scenes import write_scenes


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    root = tmp_path_factory.mktemp("scenes")
    write_scenes(root, train=12, val=5, seed=3, canvas=64, semantic=False)
    return root


def test_scenes_round_trip_through_yolo(scenes, tmp_path):
    """COCO scenes -> to_yolo -> read_yolo: identical pixels, labels, and boxes within the 8 digits written."""
    train = load_detection(scenes / "annotations" / "instances_train.json")
    val = load_detection(scenes / "annotations" / "instances_val.json")
    train.to_yolo(tmp_path / "yolo", "train")
    data_yaml = val.to_yolo(tmp_path / "yolo", "val")
    doc = yaml.safe_load(data_yaml.read_text())
    assert doc == {"path": str((tmp_path / "yolo").resolve()), "train": "images/train", "val": "images/val",
                   "names": train.classes}
    for split, original in (("train", train), ("val", val)):
        back = read_yolo(tmp_path / "yolo", split)
        assert back.classes == original.classes and len(back) == len(original)
        assert torch.equal(back.images_tensor(), original.images_tensor())
        for t, o in zip(back.targets, original.targets):
            assert torch.equal(t["labels"], o["labels"])
            assert torch.allclose(t["boxes"], o["boxes"], atol=1e-4, rtol=0)
    assert sum(len(t["labels"]) for t in train.targets) > len(train)  # scenes with several objects were tested


def test_label_lines_are_normalised_centre_and_size(tmp_path):
    """The text itself, worked by hand: a 64x32 image, a box over x 8..23, y 4..11 -> cx 16/64, cy 8/32, w 16/64,
    h 8/32; an image without objects gets an empty file; a crowd object is left out (YOLO has no crowd flag)."""
    ds = DetectionDataset(torch.zeros(2, 1, 32, 64, dtype=torch.uint8),
                          [{"boxes": [[8, 4, 24, 12], [0, 0, 64, 32]], "labels": [2, 0], "iscrowd": [False, True]},
                           {"boxes": [], "labels": []}], ["a", "b", "c"])
    ds.to_yolo(tmp_path, "train")
    assert (tmp_path / "labels/train/000000.txt").read_text() == "2 0.25 0.25 0.25 0.25\n"
    assert (tmp_path / "labels/train/000001.txt").read_text() == ""
    assert sorted(p.name for p in (tmp_path / "images/train").iterdir()) == ["000000.png", "000001.png"]
    assert not list(tmp_path.rglob("*.tmp"))  # atomic writes left no temporary file


def test_other_classes_in_the_folder_are_refused(tmp_path):
    one = DetectionDataset(torch.zeros(1, 3, 8, 8, dtype=torch.uint8), [{"boxes": [], "labels": []}], ["cat"])
    other = DetectionDataset(torch.zeros(1, 3, 8, 8, dtype=torch.uint8), [{"boxes": [], "labels": []}], ["dog"])
    one.to_yolo(tmp_path, "train")
    before = (tmp_path / "data.yaml").read_text()
    with pytest.raises(DataFormatError, match=r"data\.yaml: names: .*'cat'.*expected \['dog'\]"):
        other.to_yolo(tmp_path, "val")
    assert (tmp_path / "data.yaml").read_text() == before and not (tmp_path / "images" / "val").exists()


@pytest.mark.parametrize("split", ["../up", "", "a/b", 3])
def test_split_must_be_a_plain_name(tmp_path, split):
    ds = DetectionDataset(torch.zeros(1, 3, 8, 8, dtype=torch.uint8), [{"boxes": [], "labels": []}], ["cat"])
    with pytest.raises(DataFormatError, match="split: expected a plain folder name"):
        ds.to_yolo(tmp_path / "out", split)
    assert not (tmp_path / "out").exists()


def test_ultralytics_reads_the_same_labels(scenes, tmp_path):
    """Independent reader: Ultralytics' own label parser (when installed) finds the same normalised boxes.

    Ultralytics runs in a process of its own: importing it registers PIL plugins (HEIF) that would change how
    every later test in this process decodes images."""
    import importlib.util
    import json
    import subprocess
    import sys

    if importlib.util.find_spec("ultralytics") is None:
        pytest.skip("ultralytics is not installed (the bench extra: pip install -e '.[bench]')")
    val = load_detection(scenes / "annotations" / "instances_val.json")
    val.to_yolo(tmp_path, "val")
    image, label = tmp_path / "images/val/000000.png", tmp_path / "labels/val/000000.txt"
    code = ("import json, sys; from ultralytics.data.utils import verify_image_label; "
            f"out = verify_image_label(({str(image)!r}, {str(label)!r}, '', False, {len(val.classes)}, 0, 0, False)); "
            "print(json.dumps(out[1].tolist()))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    lb = torch.tensor(json.loads(done.stdout.strip().splitlines()[-1]))
    h, w = val.image_shape[1:]
    cx, cy, bw, bh = lb[:, 1:].double().unbind(1)
    boxes = torch.stack([(cx - bw / 2) * w, (cy - bh / 2) * h, (cx + bw / 2) * w, (cy + bh / 2) * h], 1)
    assert torch.equal(lb[:, 0].long(), val.targets[0]["labels"])
    assert torch.allclose(boxes.float(), val.targets[0]["boxes"], atol=1e-3)
