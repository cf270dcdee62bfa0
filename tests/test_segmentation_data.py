"""Segmentation data: folder round trips (grayscale and palette masks), classes.txt, COCO polygons and RLE rasterised
(against pycocotools' own decode), every data error naming its file, resizing, and the dataset's order."""

import json
import re

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils

from convkit.data.errors import DataFormatError, DatasetNotFoundError
from convkit.data.tensor import ImageTensorDataset
from convkit.tasks.segmentation.data import (
    IGNORE_INDEX,
    SegmentationDataset,
    load_segmentation,
    read_mask,
    scenes_segmentation,
    write_mask,
    write_segmentation_folder,
)


def toy(n=6, channels=3, size=(10, 14), k=4, seed=0) -> SegmentationDataset:
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, channels, *size), generator=g, dtype=torch.uint8)
    masks = torch.randint(0, k, (n, *size), generator=g, dtype=torch.uint8)
    masks[:, 0, :3] = IGNORE_INDEX
    return SegmentationDataset(images, masks, ["background", *(f"c{i}" for i in range(1, k))], "toy")


def folder(root, masks: dict, size=(6, 8), suffix=".png", classes=None):
    """A folder with images/<name><suffix> (grey images) and masks/<name>.png (grayscale ids) for each name."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    for name, mask in masks.items():
        mask = np.asarray(mask, dtype=np.uint8)
        Image.new("L", (mask.shape[1], mask.shape[0]), 99).save(root / "images" / f"{name}{suffix}")
        Image.fromarray(mask, "L").save(root / "masks" / f"{name}.png")
    if classes:
        (root / "classes.txt").write_text("\n".join(classes) + "\n")
    return root


# ------------------------------------------------------------------------------------------------------- folders

@pytest.mark.parametrize("palette", [True, False])
def test_folder_round_trip(tmp_path, palette):
    ds = toy()
    write_segmentation_folder(tmp_path / "d", ds, palette=palette)
    with Image.open(tmp_path / "d" / "masks" / "000000.png") as img:
        assert img.mode == ("P" if palette else "L")
        assert np.array_equal(np.asarray(img), ds.masks[0].numpy())  # palette index / grey level = class id
    back = load_segmentation(tmp_path / "d")
    assert torch.equal(back.images, ds.images) and torch.equal(back.masks, ds.masks)
    assert back.classes == ds.classes and back.files[0].endswith("masks/000000.png")


def test_voc_palette_masks_read_as_palette_indices(tmp_path):
    ids = np.array([[0, 1, 1], [15, 20, 255]], dtype=np.uint8)
    img = Image.fromarray(ids, "P")  # Pascal VOC's layout: the palette index is the class; any colours
    img.putpalette([(i * 37) % 256 for i in range(768)])
    img.save(tmp_path / "voc.png")
    assert read_mask(tmp_path / "voc.png").tolist() == ids.tolist()
    Image.fromarray(np.zeros((2, 3, 3), np.uint8)).save(tmp_path / "rgb.png")
    with pytest.raises(DataFormatError, match=re.escape(str(tmp_path / "rgb.png")) + ".*RGB"):
        read_mask(tmp_path / "rgb.png")
    Image.fromarray(np.array([[0, 300]], dtype=np.uint16)).save(tmp_path / "wide.png")  # 16-bit grayscale
    with pytest.raises(DataFormatError, match="wide.png: .*300"):
        read_mask(tmp_path / "wide.png")
    write_mask(tmp_path / "w.png", torch.tensor([[3, 255]]), palette=True)
    with Image.open(tmp_path / "w.png") as w:
        assert w.getpalette()[3 * 255:3 * 256] == [255, 255, 255]  # ignore drawn white


def test_classes_txt_and_stem_matching(tmp_path):
    root = folder(tmp_path / "d", {"a": [[0, 1], [2, 0]], "b": [[2, 2], [255, 0]]}, suffix=".jpg",
                  classes=["background", "cat", "dog"])
    ds = load_segmentation(root)  # a.jpg goes with a.png
    assert ds.classes == ["background", "cat", "dog"] and ds.image_shape == (1, 2, 2)
    assert ds.masks.tolist() == [[[0, 1], [2, 0]], [[2, 2], [255, 0]]]
    assert ds.class_pixels().tolist() == [3, 1, 3]
    (root / "classes.txt").unlink()
    assert load_segmentation(root).classes == ["class_0", "class_1", "class_2"]  # largest id + 1, 255 excluded
    assert load_segmentation(root, classes="bg,x,y,z").classes == ["bg", "x", "y", "z"]  # forced names


def test_split_folders(tmp_path):
    folder(tmp_path / "train", {"a": [[0, 1]]})
    folder(tmp_path / "val", {"b": [[1, 1]], "c": [[0, 0]]})
    train = load_segmentation(tmp_path, split="train")
    val = load_segmentation(tmp_path, split="val", classes=train.classes)
    assert len(train) == 1 and len(val) == 2 and val.classes == train.classes == ["class_0", "class_1"]
    assert len(load_segmentation(tmp_path)) == 1  # no images/ here: the train split


def test_images_of_other_sizes_are_resized_with_a_warning(tmp_path):
    root = folder(tmp_path / "d", {"a": np.zeros((4, 6))})
    big = np.zeros((8, 12), np.uint8)
    big[:4, :6] = 1
    folder(root, {"b": big})
    with pytest.warns(UserWarning, match=re.escape(str(root)) + ".*1 of 2 images"):
        ds = load_segmentation(root)
    assert ds.image_shape == (1, 4, 6)
    assert ds.masks[1].tolist() == [[1, 1, 1, 0, 0, 0]] * 2 + [[0] * 6] * 2


# -------------------------------------------------------------------------------------------------------- errors

def test_image_without_mask_and_mask_without_image(tmp_path):
    root = folder(tmp_path / "d", {"a": [[0, 1]], "b": [[0, 1]]})
    (root / "masks" / "b.png").unlink()
    with pytest.raises(DataFormatError, match=re.escape(str(root / "images" / "b.png")) + ": an image without a mask"):
        load_segmentation(root)
    (root / "images" / "b.png").unlink()
    Image.new("L", (2, 1)).save(root / "masks" / "c.png")
    with pytest.raises(DataFormatError, match=re.escape(str(root / "masks" / "c.png")) + ": a mask without an image"):
        load_segmentation(root)


def test_mask_of_another_size_names_both_sizes(tmp_path):
    root = folder(tmp_path / "d", {"a": np.zeros((6, 8))})
    Image.new("L", (7, 5)).save(root / "masks" / "a.png")
    with pytest.raises(DataFormatError) as err:
        load_segmentation(root)
    assert str(root / "masks" / "a.png") in str(err.value)
    assert "7x5 mask" in str(err.value) and "8x6 image" in str(err.value)


def test_ids_outside_the_class_list(tmp_path):
    # b is larger than a: ids are checked before resizing (which would drop the 5)
    root = folder(tmp_path / "d", {"a": [[0, 1]], "b": [[0, 5], [255, 0]]}, classes=["background", "cat"])
    with pytest.raises(DataFormatError, match=re.escape(str(root / "masks" / "b.png")) + ": class id 5 outside 0..1 "
                       r"\(classes \['background', 'cat'\]\)"):
        load_segmentation(root)
    (root / "classes.txt").unlink()
    with pytest.raises(DataFormatError, match="b.png: class id 5"):
        load_segmentation(root, classes=["background", "cat", "dog"])


def test_undecodable_files_and_empty_folders(tmp_path):
    root = folder(tmp_path / "d", {"a": [[0, 1]]})
    (root / "masks" / "a.png").write_bytes(b"not a png")
    with pytest.raises(DataFormatError, match=re.escape(str(root / "masks" / "a.png")) + ": cannot decode"):
        load_segmentation(root)
    folder(root, {"a": [[0, 1]]})
    (root / "images" / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    with pytest.raises(DataFormatError, match=re.escape(str(root / "images" / "a.png")) + ": cannot decode"):
        load_segmentation(root)
    empty = tmp_path / "empty"
    (empty / "images").mkdir(parents=True)
    (empty / "masks").mkdir()
    with pytest.raises(DataFormatError, match=re.escape(str(empty / "images")) + ": no image files"):
        load_segmentation(empty)
    with pytest.raises(DataFormatError, match=re.escape(str(tmp_path)) + ": expected a segmentation folder"):
        load_segmentation(tmp_path, split="test")
    with pytest.raises(DatasetNotFoundError, match="nowhere"):
        load_segmentation(tmp_path / "nowhere")


# ---------------------------------------------------------------------------------------------------------- COCO

@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # pycocotools' decode under NumPy 2
def test_coco_polygons_and_rle_rasterised_as_pycocotools_decodes(tmp_path):
    h, w = 20, 24
    Image.new("RGB", (w, h), (10, 20, 30)).save(tmp_path / "a.png")
    Image.new("RGB", (w, h)).save(tmp_path / "b.png")
    polygon = [[2.0, 2.0, 14.0, 2.0, 14.0, 12.0, 2.0, 12.0]]
    square = np.zeros((h, w), np.uint8, order="F")
    square[8:18, 10:22] = 1
    rle = mask_utils.encode(np.asfortranarray(square))
    crowd = np.zeros((h, w), np.uint8)
    crowd[15:, :5] = 1
    crowd_rle = mask_utils.encode(np.asfortranarray(crowd))
    uncompressed = {"size": [h, w], "counts": [0, h * w // 2, h * w - h * w // 2]}  # the left half, column-major
    coco = {"images": [{"id": 1, "file_name": "a.png"}, {"id": 2, "file_name": "b.png"}],
            "categories": [{"id": 7, "name": "cat"}, {"id": 9, "name": "dog"}],
            "annotations": [
                {"id": 1, "image_id": 1, "category_id": 7, "bbox": [2, 2, 12, 10], "segmentation": polygon},
                {"id": 2, "image_id": 1, "category_id": 9, "bbox": [10, 8, 12, 10],
                 "segmentation": {"size": [h, w], "counts": rle["counts"].decode()}},  # drawn over the cat
                {"id": 3, "image_id": 1, "category_id": 7, "bbox": [0, 15, 5, 5], "iscrowd": 1,
                 "segmentation": {"size": [h, w], "counts": crowd_rle["counts"].decode()}},
                {"id": 4, "image_id": 2, "category_id": 9, "bbox": [0, 0, 12, 20], "segmentation": uncompressed}]}
    (tmp_path / "train.json").write_text(json.dumps(coco))
    ds = load_segmentation(tmp_path / "train.json")
    assert ds.classes == ["background", "cat", "dog"] and ds.image_shape == (3, h, w)
    # the truth, from pycocotools' own decode, painted in annotation order
    cat = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(polygon, h, w))).astype(bool)
    dog = mask_utils.decode(rle).astype(bool)
    expected = np.zeros((h, w), np.uint8)
    expected[cat], expected[dog], expected[crowd.astype(bool)] = 1, 2, 255
    assert cat.sum() > 50 and (cat & dog).sum() > 0
    assert np.array_equal(ds.masks[0].numpy(), expected)
    half = mask_utils.decode(mask_utils.frPyObjects(uncompressed, h, w)).astype(bool)
    assert np.array_equal(ds.masks[1].numpy(), np.where(half, 2, 0).astype(np.uint8))
    # validation data takes the training set's classes (first: the background)
    again = load_segmentation(tmp_path / "train.json", classes=["background", "dog", "cat"])
    assert again.masks[0][cat & ~dog & ~crowd.astype(bool)].unique().tolist() == [2]
    # a folder holding the JSON (and no images/ + masks/) is read as COCO
    assert torch.equal(load_segmentation(tmp_path).masks, ds.masks)


# --------------------------------------------------------------------------------------------- the dataset itself

def test_order_of_subset_split_and_batches_matches_image_tensor_dataset():
    ds = toy(n=11)
    plain = ImageTensorDataset(ds.images, torch.arange(11), [str(i) for i in range(11)], "toy")
    for kwargs in ({"seed": 3, "epoch": 2}, {"shuffle": False}, {"seed": 1, "epoch": 0, "start": 4, "drop_last": True}):
        ours = list(ds.batches(4, **kwargs))
        theirs = list(plain.batches(4, **kwargs))
        assert len(ours) == len(theirs) > 0
        for (x, m), (y, i) in zip(ours, theirs):
            assert torch.equal(x, y) and torch.equal(m, ds.masks[i]) and m.dtype == torch.uint8
    index = [7, 2, 9]
    assert torch.equal(ds.subset(index).images, plain.subset(index).images)
    assert torch.equal(ds.subset(index).masks, ds.masks[index])
    rest, held = ds.split(0.3, seed=5)
    again_rest, again_held = ds.split(0.3, seed=5)
    assert len(held) == 3 and len(rest) == 8 and torch.equal(held.masks, again_held.masks)
    rows = {bytes(x.numpy()) for x in ds.images}
    assert {bytes(x.numpy()) for x in torch.cat([rest.images, held.images])} == rows
    assert not torch.equal(ds.split(0.3, seed=6)[1].images, held.images)


def test_resized_keeps_masks_nearest_and_stats():
    ds = toy(n=3, size=(9, 13), k=8)
    ds.masks[ds.masks == 5] = 7
    small = ds.resized(5, 6)
    big = ds.resized(20, 31)
    for out, (h, w) in ((small, (5, 6)), (big, (20, 31))):
        assert out.image_shape == (3, h, w) and out.masks.shape == (3, h, w)
        assert set(out.masks.unique().tolist()) <= set(ds.masks.unique().tolist())  # no new ids
    assert torch.equal(ds.resized(18, 26).masks[:, ::2, ::2], ds.masks)  # doubling copies each pixel
    stats = ds.with_stats([0.5, 0.5, 0.5], [0.1, 0.2, 0.3])
    assert stats.resized(5, 6).std.tolist() == pytest.approx([0.1, 0.2, 0.3])
    assert stats.normalize(torch.full((1, 3, 1, 1), 255, dtype=torch.uint8)).flatten().tolist() == \
        pytest.approx([5.0, 2.5, 5 / 3])


def test_check_and_class_pixels():
    ds = toy(n=4, k=3)
    expected = np.bincount(ds.masks.numpy().ravel(), minlength=256)[:3]
    assert ds.class_pixels().tolist() == expected.tolist()
    ds.check()
    ds.masks[2, 3, 3] = 9
    named = SegmentationDataset(ds.images, ds.masks, ds.classes, "toy", files=[f"m{i}.png" for i in range(4)])
    with pytest.raises(DataFormatError, match=r"m2.png: class id 9 outside 0..2 .*1 of 4 masks"):
        named.check()
    with pytest.raises(DataFormatError, match=r"toy: masks\[2\]: class id 9"):
        ds.check()
    with pytest.raises(DataFormatError, match="masks: expected uint8"):
        SegmentationDataset(ds.images, ds.masks[:, :4], ds.classes, "toy")


def test_scenes_segmentation_gives_the_scenes_semantic_masks():
    from convkit.tasks.detection.scenes import make_scenes

    ds = scenes_segmentation("val", count=3)
    images, targets, names = make_scenes(3, split="test", masks=False)
    assert torch.equal(ds.images, images)
    assert torch.equal(ds.masks, torch.stack([t["semantic"] for t in targets]))
    assert ds.classes == ["background", *names] and ds.num_classes == 11
    assert scenes_segmentation("val", count=3) is ds  # cached
    ds.check()


def test_coco_errors_name_the_file(tmp_path):
    coco = {"images": [{"id": 1, "file_name": "missing.png"}], "categories": [{"id": 1, "name": "cat"}],
            "annotations": []}
    (tmp_path / "a.json").write_text(json.dumps(coco))
    with pytest.raises(DataFormatError, match=r"a\.json: .*missing\.png.*cannot open"):
        load_segmentation(tmp_path / "a.json")
    Image.new("L", (8, 8)).save(tmp_path / "b.png")
    coco["images"].append({"id": 2, "file_name": "b.png"})  # one image read, one not: an error, not a skip
    (tmp_path / "a.json").write_text(json.dumps(coco))
    with pytest.raises(DataFormatError, match=r"missing\.png.*cannot open"), pytest.warns(UserWarning):
        load_segmentation(tmp_path / "a.json")
    coco = {"images": [{"id": 1, "file_name": "b.png"}], "categories": [{"id": 1, "name": "cat"}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 4, 4], "segmentation": [[1, 2]]}]}
    (tmp_path / "c.json").write_text(json.dumps(coco))
    with pytest.raises(DataFormatError, match=r"c\.json: annotations\[0\]\.segmentation: expected polygons"):
        load_segmentation(tmp_path / "c.json")
    with pytest.raises(DataFormatError, match="at least one category"):
        load_segmentation(tmp_path / "c.json", classes=["background"])
