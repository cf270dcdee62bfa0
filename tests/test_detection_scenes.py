"""The built-in scenes (issue 13): real Fashion-MNIST items on larger canvases, checked against truth computed here.

Boxes are recomputed from the masks with numpy; the pixels under each mask are recomputed by resizing the
source item with F.interpolate; the COCO files are read back by pycocotools itself.
"""

import contextlib
import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from pycocotools.coco import COCO
from torchvision.ops import box_iou

from convkit.data import ImageTensorDataset, load_default
from convkit.errors import ConvkitError
from convkit.tasks.detection.scenes import _PALETTE, ScenesError, draw_scenes, make_scenes, write_scenes

CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
SHARED = [p / "shared" / "data" for p in Path(__file__).resolve().parents[2:4]]
FULL = next((p for p in SHARED if (p / "fashion-mnist").is_dir()), None)


@pytest.fixture(scope="module")
def scenes():
    return make_scenes(60, seed=3)


@pytest.fixture(scope="module")
def items():
    return load_default("train")


def resized(item: torch.Tensor, h: int, w: int) -> np.ndarray:
    """The item as the scenes should show it: bilinear (antialiased) in float64, rounded half up."""
    x = F.interpolate(item[None].double(), size=(h, w), mode="bilinear", align_corners=False, antialias=True)[0]
    return torch.floor(x + 0.5).clamp(0, 255).to(torch.uint8).numpy()


def tight_box(mask: np.ndarray) -> list[float]:
    ys, xs = np.nonzero(mask)
    return [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]


def test_shapes_types_and_class_names(scenes):
    images, targets, classes = scenes
    assert images.shape == (60, 1, 96, 96) and images.dtype == torch.uint8 and classes == CLASSES
    for t in targets:
        m = len(t["labels"])
        assert t["boxes"].shape == (m, 4) and t["boxes"].dtype == torch.float32
        assert t["labels"].dtype == torch.int64 and t["masks"].shape == (m, 96, 96) and t["masks"].dtype == torch.uint8
        assert t["semantic"].shape == (96, 96) and t["semantic"].dtype == torch.uint8


def test_boxes_are_the_tight_boxes_of_the_masks(scenes):
    for t in scenes.targets:
        truth = [tight_box(m) for m in t["masks"].numpy()]
        assert t["boxes"].tolist() == truth


def test_masks_are_disjoint_and_cover_exactly_the_painted_pixels(scenes):
    images, targets, _ = scenes
    for image, t in zip(images, targets):
        masks = t["masks"].numpy().astype(bool)
        assert masks.sum(0).max() <= 1                                     # visible masks never overlap
        assert (masks.any(0) == (t["semantic"].numpy() > 0)).all()          # their union is the semantic mask
        assert (masks.any(0) == (image[0].numpy() > 0)).all()               # no painted pixel is unlabelled
        for mask, label in zip(masks, t["labels"].tolist()):
            assert (t["semantic"].numpy()[mask] == label + 1).all()


def test_every_visible_pixel_is_its_items_resized_pixel_and_labels_are_the_items_classes(scenes, items):
    images, targets, _ = scenes
    for image, t in zip(images, targets):
        assert t["labels"].tolist() == items.labels[t["items"]].tolist()
        for mask, item, (x1, y1, x2, y2) in zip(t["masks"].numpy().astype(bool), t["items"].tolist(),
                                                  t["placed"].int().tolist()):
            truth = np.zeros((96, 96), np.uint8)
            truth[y1:y2, x1:x2] = resized(items.images[item], y2 - y1, x2 - x1)[0]
            assert (image[0].numpy()[mask] == truth[mask]).all()
            assert not mask[truth == 0].any()                               # a mask holds only the item's pixels


def test_a_lone_item_is_pasted_exactly_as_resized(items):
    images, targets, _ = make_scenes(12, seed=5, objects=1)
    sizes = set()
    for image, t in zip(images, targets):
        (x1, y1, x2, y2), item = t["placed"][0].int().tolist(), int(t["items"][0])
        truth = np.zeros((96, 96), np.uint8)
        truth[y1:y2, x1:x2] = resized(items.images[item], y2 - y1, x2 - x1)[0]
        assert (image[0].numpy() == truth).all()
        assert (t["masks"][0].numpy() == (truth > 0)).all() and t["boxes"][0].tolist() == tight_box(truth > 0)
        assert 17 <= y2 - y1 <= 56 and y2 - y1 == x2 - x1                   # 28 px scaled by 0.6..2.0
        sizes.add(y2 - y1)
    assert len(sizes) > 5                                                   # varied sizes


def test_box_edges_of_a_solid_item_are_its_placed_rectangle():
    solid = ImageTensorDataset(torch.full((1, 1, 28, 28), 200, dtype=torch.uint8), torch.tensor([1]), ["a", "b"], "solid")
    images, targets, classes = make_scenes(5, seed=0, canvas=40, objects=1, scale=1.0, source=solid)
    assert classes == ["a", "b"]
    for image, t in zip(images, targets):
        x1, y1, x2, y2 = t["boxes"][0].int().tolist()
        assert t["boxes"][0].tolist() == t["placed"][0].tolist() and (x2 - x1, y2 - y1) == (28, 28)
        assert int(image[0].sum()) == 200 * 28 * 28 and (image[0, y1:y2, x1:x2] == 200).all()   # x2, y2 exclusive
        assert t["labels"].tolist() == [1] and t["masks"][0].sum() == 28 * 28


def test_same_arguments_same_bytes_other_seed_or_split_differs():
    a, b = make_scenes(20, seed=7), make_scenes(20, seed=7)
    assert torch.equal(a.images, b.images)
    for ta, tb in zip(a.targets, b.targets):
        assert ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta)
    assert not torch.equal(a.images, make_scenes(20, seed=8).images)
    assert not torch.equal(a.images, make_scenes(20, seed=7, split="test").images)
    prefix = make_scenes(5, seed=7)                                         # scene i depends on (seed, i) only
    assert torch.equal(prefix.images, a.images[:5])


def test_without_masks_the_scenes_are_the_same():
    full, light = make_scenes(6, seed=9), make_scenes(6, seed=9, masks=False)
    assert torch.equal(full.images, light.images)
    for a, b in zip(full.targets, light.targets):
        assert "masks" not in b and sorted(b) == sorted(k for k in a if k != "masks")
        assert all(torch.equal(a[k], b[k]) for k in b)


def test_the_bytes_are_pinned():
    """The same arguments give these bytes on any machine (resizing in float64, numbers from a CPU generator)."""
    images, targets, _ = make_scenes(30, seed=0)
    digest = hashlib.sha256(images.numpy().tobytes())
    for t in targets:
        digest.update(t["boxes"].numpy().tobytes() + t["labels"].numpy().tobytes() + t["masks"].numpy().tobytes())
    assert digest.hexdigest() == PINNED


PINNED = "40ab985f4a02ed7c8a9b51df16e32becfd5aed5de5882ba9d21aa3d2bbb9625c"  # torch 2.x CPU generator (mt19937)


def test_overlap_is_bounded_and_happens(scenes, items):
    ious = []
    for t in make_scenes(80, seed=1, objects=(3, 4), max_overlap=0.2).targets:
        iou = box_iou(t["boxes"], t["boxes"]).fill_diagonal_(0)
        ious.append(float(iou.max()))
    assert max(ious) <= 0.2 and max(ious) > 0.1                             # the bound binds: boxes do overlap
    for t in make_scenes(40, seed=1, objects=(3, 4), max_overlap=0.0).targets:
        assert float(box_iou(t["boxes"], t["boxes"]).fill_diagonal_(0).max()) == 0
    default = [float(box_iou(t["boxes"], t["boxes"]).fill_diagonal_(0).max()) for t in scenes.targets
               if len(t["labels"]) > 1]
    assert max(default) <= 0.5 and max(default) > 0.2                       # default 0.5 allows more than 0.2
    hidden = 0
    for t in scenes.targets:
        for mask, item, (x1, y1, x2, y2) in zip(t["masks"], t["items"].tolist(), t["placed"].int().tolist()):
            hidden += int(mask.sum()) < int((resized(items.images[item], y2 - y1, x2 - x1) > 0).sum())
    assert hidden > 0                                                       # some items are partly hidden


def test_object_counts_stay_within_bounds():
    counts = [len(t["labels"]) for t in make_scenes(100, seed=2, objects=(2, 3)).targets]
    assert set(counts) == {2, 3}
    images, targets, _ = make_scenes(3, objects=0)
    assert not images.any() and all(t["boxes"].shape == (0, 4) and t["masks"].shape == (0, 96, 96) for t in targets)


def test_crowded_scenes_leave_objects_out_but_never_hide_one_beyond_min_visible(items):
    images, targets, _ = make_scenes(30, seed=0, canvas=48, objects=6, scale=(1.0, 1.4), min_visible=0.6)
    counts = [len(t["labels"]) for t in targets]
    assert max(counts) <= 6 and min(counts) < 6                             # no room for six: some left out
    for t in targets:
        for mask, item, (x1, y1, x2, y2) in zip(t["masks"].numpy(), t["items"].tolist(), t["placed"].int().tolist()):
            full = int((resized(items.images[item], y2 - y1, x2 - x1) > 0).sum())
            assert mask.sum() >= 0.6 * full


def test_colour_scenes_tint_items_and_keep_the_grey_in_the_brightest_channel():
    grey, colour = make_scenes(10, seed=4), make_scenes(10, seed=4, channels=3)
    assert colour.images.shape == (10, 3, 96, 96)
    assert torch.equal(colour.images.amax(1, keepdim=True), grey.images)
    assert (colour.images[:, 0] != colour.images[:, 1]).any()              # really coloured
    for a, b in zip(grey.targets, colour.targets):
        assert torch.equal(a["boxes"], b["boxes"]) and torch.equal(a["masks"], b["masks"])


@pytest.mark.skipif(FULL is None, reason=f"the full Fashion-MNIST is not in {SHARED}")
def test_the_full_fashion_mnist_when_found():
    from convkit.data import load_dataset

    images, targets, classes = make_scenes(10, seed=0, source="fashion-mnist", data_dir=FULL)
    full = load_dataset("fashion-mnist", "train", FULL)
    assert len(full) == 60000 and classes == CLASSES
    assert max(int(t["items"].max()) for t in targets) >= 7000              # items beyond the shipped 6,000
    for t in targets:
        assert t["labels"].tolist() == full.labels[t["items"]].tolist()
    auto = make_scenes(10, seed=0, source="auto", data_dir=FULL)
    assert torch.equal(auto.images, images)


def test_auto_falls_back_to_the_shipped_items(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("CONVKIT_DATA", raising=False)
    monkeypatch.setattr("convkit.data.named.SYSTEM_ROOTS", ())
    assert torch.equal(make_scenes(4, source="auto", data_dir=tmp_path).images, make_scenes(4).images)
    with pytest.raises(ConvkitError, match="fashion-mnist"):
        make_scenes(4, source="fashion-mnist", data_dir=tmp_path)


@pytest.mark.parametrize("kwargs, named", [
    ({"count": -1}, "count"), ({"count": 2.5}, "count"), ({"seed": -3}, "seed"), ({"canvas": 0}, "canvas"),
    ({"objects": (3, 1)}, "objects"), ({"objects": (1, 2, 3)}, "objects"), ({"scale": (0, 1)}, "scale"),
    ({"scale": (2.0, 1.0)}, "scale"), ({"scale": "big"}, "scale"), ({"source": "imagenet"}, "source"),
    ({"split": "validation"}, "split"), ({"channels": 2}, "channels"), ({"max_overlap": 1.5}, "max_overlap"),
    ({"min_visible": 0}, "min_visible"), ({"threshold": 255}, "threshold"),
])
def test_bad_arguments_name_themselves(kwargs, named):
    args = {"count": 2, **kwargs}
    with pytest.raises(ScenesError, match=named) as err:
        make_scenes(**args)
    assert isinstance(err.value, ConvkitError) and isinstance(err.value, ValueError)
    assert "\n" not in str(err.value)


def test_written_coco_files_read_back_with_pycocotools(tmp_path):
    paths = write_scenes(tmp_path / "scenes", train=8, val=4, seed=2, canvas=64)
    for name, split, count in (("train", "train", 8), ("val", "test", 4)):
        images, targets, classes = make_scenes(count, seed=2, canvas=64, split=split)
        with contextlib.redirect_stdout(io.StringIO()):
            coco = COCO(str(paths[f"{name}_annotations"]))
        assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == CLASSES and coco.getCatIds() == list(range(1, 11))
        assert sorted(coco.getImgIds()) == list(range(1, count + 1))
        assert sorted(coco.getAnnIds()) == list(range(1, sum(len(t["labels"]) for t in targets) + 1))
        for i, (image, t) in enumerate(zip(images, targets)):
            record = coco.loadImgs(i + 1)[0]
            assert (record["width"], record["height"]) == (64, 64)
            assert record["file_name"] == f"../{name}/{i:06d}.png"
            png = np.asarray(Image.open(paths[name] / record["file_name"]))                 # read as COCO tools do
            assert (png == np.asarray(Image.open(paths[f"{name}_annotations"].parent / record["file_name"]))).all()
            assert (png == image[0].numpy()).all()
            semantic = np.asarray(Image.open(paths[f"{name}_masks"] / f"{i:06d}.png"))
            assert (semantic == t["semantic"].numpy()).all()
            anns = coco.loadAnns(coco.getAnnIds(imgIds=i + 1))
            assert len(anns) == len(t["labels"])
            for ann, box, label, mask in zip(anns, t["boxes"].tolist(), t["labels"].tolist(), t["masks"].numpy()):
                x1, y1, x2, y2 = box
                assert ann["bbox"] == [x1, y1, x2 - x1, y2 - y1] and ann["category_id"] == label + 1
                assert (coco.annToMask(ann) == mask).all() and ann["area"] == mask.sum() and ann["iscrowd"] == 0
    assert json.loads(paths["train_annotations"].read_text())["info"]["generator"]["canvas"] == 64
    assert not list(tmp_path.rglob("*.tmp"))                                 # atomic writes leave nothing behind


def test_empty_scenes_and_empty_splits_write_valid_files(tmp_path):
    paths = write_scenes(tmp_path, train=2, val=0, objects=0, semantic=False)
    assert sorted(paths) == ["train", "train_annotations"] and not (tmp_path / "val").exists()
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(paths["train_annotations"]))
    assert len(coco.getImgIds()) == 2 and coco.getAnnIds() == []
    with pytest.raises(ScenesError, match="split"):
        write_scenes(tmp_path, split="test")
    with pytest.raises(ScenesError, match="masks"):
        write_scenes(tmp_path, masks=False)


def test_draw_scenes_writes_a_png_with_the_boxes_in_their_class_colour(tmp_path):
    images, targets, classes = make_scenes(3, seed=0, objects=1, canvas=64)
    path = draw_scenes(images, targets, classes, tmp_path / "grid.png", columns=2, zoom=3)
    sheet = np.asarray(Image.open(path).convert("RGB"))
    assert sheet.shape == (2 * 192 + 8, 2 * 192 + 8, 3)
    for i, t in enumerate(targets):
        x1, y1, x2, y2 = (int(v) * 3 for v in t["boxes"][0].tolist())
        left, top = (i % 2) * 200, (i // 2) * 200
        colour = _PALETTE[int(t["labels"][0])]
        assert tuple(sheet[top + (y1 + y2) // 2, left + x1]) == colour      # the left edge, half-way down
        assert tuple(sheet[top + (y1 + y2) // 2, left + x2 - 1]) == colour  # the right edge (x2 exclusive)
    assert tuple(sheet[195, 100]) == (255, 255, 255)                        # the white gap between scenes


def test_the_detection_reader_reads_the_written_scenes_back(tmp_path):
    """Once `convkit.tasks.detection.data` is beside this module: its COCO reader gives the generator's targets."""
    data = pytest.importorskip("convkit.tasks.detection.data")
    write_scenes(tmp_path, train=5, val=0, seed=1, canvas=64)
    images, targets, classes = make_scenes(5, seed=1, canvas=64)
    with contextlib.redirect_stdout(io.StringIO()):
        read = data.load_detection(tmp_path, split="train", masks=True)
    assert list(read.classes) == classes and len(read) == 5
    for i, (image, t) in enumerate(zip(images, targets)):
        got_image, got = read[i]
        assert torch.equal(got_image, image)
        assert torch.equal(got["boxes"], t["boxes"]) and torch.equal(got["labels"], t["labels"])
        assert torch.equal(got["masks"].to(torch.uint8), t["masks"])
