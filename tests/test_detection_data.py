"""Detection data (issue 13): COCO, VOC and YOLO files describing the same boxes read to the same targets, COCO
export read back by pycocotools, and every bad-annotation rule."""

import contextlib
import io
import json
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from convkit.data.errors import DataFormatError, DatasetNotFoundError
from convkit.tasks.detection.data import DetectionDataset, load_detection, read_coco, read_voc, read_yolo

# The scene every format below describes, written by hand in each format's own convention.
# a.png: 64 wide, 32 high; a cat over pixels x 3..10, y 5..20 and a dog over the right half.
# b.png: 64x32, no objects.  c.png: 16x16, a dog over pixels x 4..7, y 8..15.
SIZES = {"a.png": (32, 64), "b.png": (32, 64), "c.png": (16, 16)}
TRUTH = [([[3, 5, 11, 21], [32, 0, 64, 32]], [0, 1]), ([], []), ([[4, 8, 8, 16]], [1])]

COCO_SCENE = {
    "images": [{"id": 10, "file_name": "a.png", "width": 64, "height": 32},
               {"id": 11, "file_name": "b.png", "width": 64, "height": 32},
               {"id": 12, "file_name": "c.png", "width": 16, "height": 16}],
    "categories": [{"id": 9, "name": "dog"}, {"id": 7, "name": "cat"}],  # sorted ids: cat (7) -> 0, dog (9) -> 1
    "annotations": [{"id": 1, "image_id": 10, "category_id": 7, "bbox": [3, 5, 8, 16], "area": 128, "iscrowd": 0},
                    {"id": 2, "image_id": 10, "category_id": 9, "bbox": [32, 0, 32, 32], "area": 1024, "iscrowd": 0},
                    {"id": 3, "image_id": 12, "category_id": 9, "bbox": [4, 8, 4, 8], "area": 32, "iscrowd": 0}]}

VOC_XML = {  # VOC counts pixels from 1, both ends inclusive
    "a": "<annotation><filename>a.png</filename><size><width>64</width><height>32</height><depth>3</depth></size>"
         "<object><name>cat</name><difficult>0</difficult><bndbox><xmin>4</xmin><ymin>6</ymin><xmax>11</xmax>"
         "<ymax>21</ymax></bndbox></object>"
         "<object><name>dog</name><bndbox><xmin>33</xmin><ymin>1</ymin><xmax>64</xmax><ymax>32</ymax></bndbox>"
         "</object></annotation>",
    "b": "<annotation><filename>b.png</filename></annotation>",
    "c": "<annotation><filename>c.png</filename><object><name>dog</name><bndbox><xmin>5</xmin><ymin>9</ymin>"
         "<xmax>8</xmax><ymax>16</ymax></bndbox></object></annotation>",
}

YOLO_TXT = {"a": "0 0.109375 0.40625 0.125 0.5\n1 0.75 0.5 0.5 1.0\n", "b": "", "c": "1 0.375 0.75 0.25 0.5\n"}


def pixels(name: str) -> np.ndarray:
    h, w = SIZES[name]
    return np.random.default_rng(ord(name[0])).integers(0, 256, (h, w, 3), dtype=np.uint8)


def write_images(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in SIZES:
        Image.fromarray(pixels(name)).save(folder / name)


def write_coco(root: Path, scene: dict = COCO_SCENE) -> Path:
    write_images(root / "images")  # file_names are relative to images/ beside the JSON
    (root / "train.json").write_text(json.dumps(scene))
    return root / "train.json"


def write_voc(root: Path, xml: dict = VOC_XML) -> Path:
    write_images(root / "JPEGImages")
    (root / "Annotations").mkdir(parents=True)
    for stem, text in xml.items():
        (root / "Annotations" / f"{stem}.xml").write_text(text)
    return root


def write_yolo(root: Path, txt: dict = YOLO_TXT) -> Path:
    write_images(root / "images")
    (root / "labels").mkdir(parents=True)
    for stem, text in txt.items():
        (root / "labels" / f"{stem}.txt").write_text(text)
    (root / "classes.txt").write_text("cat\ndog\n")
    return root


def assert_truth(ds: DetectionDataset, truth=TRUTH) -> None:
    assert ds.classes == ["cat", "dog"] and len(ds) == len(truth)
    for i, (name, (boxes, labels)) in enumerate(zip(SIZES, truth)):
        image, target = ds[i]
        assert torch.equal(image, torch.from_numpy(pixels(name)).permute(2, 0, 1))
        assert target["boxes"].dtype == torch.float32 and target["labels"].dtype == torch.int64
        assert torch.equal(target["boxes"], torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
        assert torch.equal(target["labels"], torch.tensor(labels, dtype=torch.long))
        assert torch.equal(target["iscrowd"], torch.zeros(len(labels), dtype=torch.bool))


def test_three_formats_give_the_same_targets(tmp_path):
    sets = [load_detection(write_coco(tmp_path / "coco")), load_detection(write_voc(tmp_path / "voc")),
            load_detection(write_yolo(tmp_path / "yolo"))]
    for ds in sets:
        assert_truth(ds)
        assert ds.image_shape is None and ds.channels == 3 and ds.skipped == []
        assert [p.name for p in ds.image_files] == list(SIZES)
    with pytest.raises(DataFormatError, match="differ in size"):
        sets[0].images_tensor()


def test_coco_export_is_read_back_by_pycocotools(tmp_path):
    ds = read_coco(write_coco(tmp_path / "coco"))
    out = ds.to_coco(tmp_path / "out" / "export.json", write_images=True)
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(out))
    assert coco.getCatIds() == [1, 2] and [c["name"] for c in coco.loadCats([1, 2])] == ["cat", "dog"]
    assert sorted(coco.getImgIds()) == [1, 2, 3] and coco.getAnnIds(imgIds=[2]) == []  # the empty image is kept
    anns = coco.loadAnns(coco.getAnnIds())
    assert [a["id"] for a in anns] == [1, 2, 3]
    assert [(a["image_id"], a["category_id"], a["bbox"], a["area"], a["iscrowd"]) for a in anns] == [
        (1, 1, [3.0, 5.0, 8.0, 16.0], 128.0, 0), (1, 2, [32.0, 0.0, 32.0, 32.0], 1024.0, 0),
        (3, 2, [4.0, 8.0, 4.0, 8.0], 32.0, 0)]
    assert [(coco.imgs[i]["height"], coco.imgs[i]["width"]) for i in (1, 2, 3)] == list(SIZES.values())


def test_round_trip_coco_dataset_coco(tmp_path):
    ds = load_detection(write_coco(tmp_path / "coco"))
    assert_truth(load_detection(ds.to_coco(tmp_path / "copy" / "annotations.json", write_images=True)))
    # without writing images, file_names point at the original files, relative to the new JSON's folder
    again = load_detection(ds.to_coco(tmp_path / "elsewhere" / "deep" / "x.json"))
    assert_truth(again)
    assert json.loads((tmp_path / "elsewhere" / "deep" / "x.json").read_text())["images"][0]["file_name"] == \
        "../../coco/images/a.png"
    assert load_detection(tmp_path / "copy").source.endswith("annotations.json")  # the folder holding one JSON


def test_coco_annotations_without_ids_are_read(tmp_path):
    scene = json.loads(json.dumps(COCO_SCENE))
    for ann in scene["annotations"]:
        del ann["id"], ann["area"], ann["iscrowd"]  # optional for convkit; pycocotools' index needs ids
    assert_truth(read_coco(write_coco(tmp_path, scene)))


@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # pycocotools under NumPy 2
def test_coco_crowd_fractional_boxes_and_masks(tmp_path):
    scene = json.loads(json.dumps(COCO_SCENE))
    polygon = [3, 5, 11, 5, 11, 21, 3, 21]
    scene["annotations"][0].update(segmentation=[polygon], iscrowd=1)
    scene["annotations"][0]["bbox"] = [3.25, 5.5, 7.5, 15.25]
    rle = mask_utils.encode(np.asfortranarray((np.arange(64)[None, :] >= 32).repeat(32, 0).astype(np.uint8)))
    scene["annotations"][1]["segmentation"] = {"size": [32, 64], "counts": rle["counts"].decode()}
    counts = [8 * 16 + 4, 4, 12, 4, 12, 4, 12, 4]  # uncompressed RLE (column-major runs): a 4x4 block
    scene["annotations"][2]["segmentation"] = {"size": [16, 16], "counts": counts + [16 * 16 - sum(counts)]}
    ds = read_coco(write_coco(tmp_path / "coco", scene), masks=True)
    target = ds.targets[0]
    assert target["iscrowd"].tolist() == [True, False]
    assert target["boxes"][0].tolist() == [3.25, 5.5, 10.75, 20.75]
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools called directly is the truth
        coco = COCO(str(tmp_path / "coco" / "train.json"))
    for i, image_id in enumerate((10, 11, 12)):
        want = [coco.annToMask(a) for a in coco.imgToAnns[image_id]]
        assert ds.targets[i]["masks"].dtype == torch.uint8
        assert ds.targets[i]["masks"].shape == (len(want), *SIZES[list(SIZES)[i]])
        for mask, expected in zip(ds.targets[i]["masks"], want):
            assert torch.equal(mask, torch.from_numpy(expected))
    back = read_coco(ds.to_coco(tmp_path / "out.json", write_images=True), masks=True)
    for t, u in zip(ds.targets, back.targets):
        assert torch.equal(t["masks"], u["masks"]) and torch.equal(t["iscrowd"], u["iscrowd"])
    with pytest.raises(DataFormatError, match="VOC annotations hold no instance masks"):
        load_detection(write_voc(tmp_path / "voc"), masks=True)


def test_box_outside_the_image_is_clipped_with_a_warning(tmp_path):
    scene = json.loads(json.dumps(COCO_SCENE))
    scene["annotations"][2]["bbox"] = [-2, 8, 6, 20]  # reaches past the left and bottom of the 16x16 c.png
    path = write_coco(tmp_path / "coco", scene)
    with pytest.warns(UserWarning, match=r"boxes reaching outside their image; clipped") as caught:
        ds = read_coco(path)
    assert str(path) in str(caught[0].message) and "c.png" in str(caught[0].message)
    assert ds.targets[2]["boxes"].tolist() == [[0.0, 8.0, 4.0, 16.0]]
    yolo = write_yolo(tmp_path / "yolo", {**YOLO_TXT, "c": "1 0.0 0.75 0.5 0.5\n"})
    with pytest.warns(UserWarning, match=r"c\.txt: 1 box\(es\) clipped to the 16x16 image"):
        assert read_yolo(yolo).targets[2]["boxes"].tolist() == [[0.0, 8.0, 4.0, 16.0]]


def test_degenerate_boxes_are_dropped_and_counted(tmp_path):
    scene = json.loads(json.dumps(COCO_SCENE))
    scene["annotations"] += [{"id": 4, "image_id": 12, "category_id": 7, "bbox": [5, 5, 0, 3]},  # zero width
                             {"id": 5, "image_id": 12, "category_id": 7, "bbox": [20, 5, 4, 3]}]  # wholly outside
    with pytest.warns(UserWarning, match=r"degenerate boxes .*dropped:\n  .*train\.json: 2 box\(es\)"):
        ds = read_coco(write_coco(tmp_path / "coco", scene))
    assert_truth(ds)
    xml = dict(VOC_XML, b="<annotation><filename>b.png</filename><object><name>cat</name><bndbox><xmin>5</xmin>"
                          "<ymin>9</ymin><xmax>4</xmax><ymax>16</ymax></bndbox></object></annotation>")
    with pytest.warns(UserWarning, match=r"b\.xml: 1 box\(es\) of zero width or height"):
        assert_truth(read_voc(write_voc(tmp_path / "voc", xml)))
    with pytest.warns(UserWarning, match=r"b\.txt: 1 box\(es\) of zero width"):
        assert_truth(read_yolo(write_yolo(tmp_path / "yolo", {**YOLO_TXT, "b": "0 0.5 0.5 0 0.2\n"})))


@pytest.mark.parametrize("change, message", [
    (lambda s: s["annotations"][1].update(category_id=8), r"annotations\[1\]\.category_id: unknown class: 8 is not"),
    (lambda s: s["annotations"][2].update(bbox=[1, 2, 3]), r"annotations\[2\]\.bbox: expected \[x, y, width, height\]"),
    (lambda s: s["annotations"][0].update(bbox=[1, 2, -3, 4]), r"annotations\[0\]\.bbox: .*width and height >= 0"),
    (lambda s: s["annotations"][0].pop("image_id"), r"annotations\[0\]\.image_id: missing"),
    (lambda s: s["annotations"][0].update(image_id=99), r"annotations\[0\]\.image_id: 99 is not the id of any image"),
    (lambda s: s["images"][1].update(id=10), r"images\[1\]\.id: 10 is also the id of images\[0\]"),
    (lambda s: s["categories"][0].pop("name"), r"categories\[0\]\.name: missing"),
    (lambda s: s.pop("images"), r"images: expected a list, missing"),
])
def test_malformed_coco_names_the_json_path(tmp_path, change, message):
    scene = json.loads(json.dumps(COCO_SCENE))
    change(scene)
    path = write_coco(tmp_path, scene)
    with pytest.raises(DataFormatError, match=message) as caught:
        load_detection(path)
    assert str(caught.value).startswith(f"{path}: ") and "\n" not in str(caught.value)


def test_coco_syntax_error_names_the_line_and_unknown_class_against_given_classes(tmp_path):
    path = write_coco(tmp_path)
    path.write_text(json.dumps(COCO_SCENE, indent=1).replace('"iscrowd": 0\n  }', '"iscrowd": 0,\n  }', 1))
    with pytest.raises(DataFormatError, match=rf"{path}:\d+:\d+: not valid JSON"):
        read_coco(path)
    path.write_text(json.dumps(COCO_SCENE).replace('"bbox": [3, 5, 8, 16]', '"bbox": [3, 5, NaN, 16]'))
    with pytest.raises(DataFormatError, match="NaN is not a number"):
        read_coco(path)
    path.write_text(json.dumps(COCO_SCENE))
    with pytest.raises(DataFormatError, match=r"annotations\[0\]\.category_id: unknown class: category 7 \('cat'\) "
                                              r"is not one of the classes \['dog', 'bird'\]"):
        read_coco(path, classes=["dog", "bird"])
    flipped = read_coco(path, classes="dog,cat")  # the training set's order wins
    assert flipped.classes == ["dog", "cat"] and flipped.targets[0]["labels"].tolist() == [1, 0]


@pytest.mark.parametrize("stem, text, message", [
    ("c", "1 0.375 0.75 0.25 0.5\n\n3 0.5 0.5 0.1 0.1\n", r"c\.txt:3: unknown class: class 3 is not in the names"),
    ("a", "0 0.1 0.4 0.125 0.5\n1 0.75 abc 0.5 1.0\n", r"a\.txt:2: expected 'class cx cy w h'"),
    ("a", "0 0.1 0.4 0.125\n", r"a\.txt:1: expected 'class cx cy w h'"),
    ("a", "cat 0.1 0.4 0.125 0.5\n", r"a\.txt:1: expected 'class cx cy w h'"),
    ("a", "0 0.1 0.4 inf 0.5\n", r"a\.txt:1: expected 'class cx cy w h'"),
    ("a", "0 0.1 0.4 -0.1 0.5\n", r"a\.txt:1: negative width or height"),
])
def test_malformed_yolo_names_the_file_and_line(tmp_path, stem, text, message):
    root = write_yolo(tmp_path, {**YOLO_TXT, stem: text})
    with pytest.raises(DataFormatError, match=message):
        load_detection(root)


@pytest.mark.parametrize("text, message", [
    (VOC_XML["a"].replace("<xmin>33</xmin>", "<xmin>3x3</xmin>"), r"a\.xml: object\[2\]/bndbox/xmin: expected a number, found '3x3'"),
    (VOC_XML["a"].replace("<ymax>21</ymax>", ""), r"a\.xml: object\[1\]/bndbox/ymax: missing"),
    (VOC_XML["a"].replace("<name>dog</name>", ""), r"a\.xml: object\[2\]/name: missing"),
    (VOC_XML["a"].replace("<difficult>0</difficult>", "<difficult>yes</difficult>"), r"object\[1\]/difficult: expected 0 or 1"),
    (VOC_XML["a"].replace("</object><object>", "<object>", 1), r"a\.xml:1:\d+: not well-formed XML"),
    (VOC_XML["a"].replace("<xmin>33</xmin>", "<xmin>70</xmin>"), r"object\[2\]/bndbox: xmax 64 < xmin 70 - 1"),
    ('<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x "xxxxxxxx"><!ENTITY y "&x;&x;&x;">]><annotation>&y;</annotation>',
     r"a\.xml: holds a <!DOCTYPE or <!ENTITY declaration"),
    ('<?xml version="1.0" encoding="UTF-16"?><!DOCTYPE a><annotation/>'.encode("utf-16"),
     r"a\.xml: holds a <!DOCTYPE"),
    ("<svg/>", r"a\.xml: the root element is <svg>; expected <annotation>"),
])
def test_malformed_voc_names_the_file_and_element(tmp_path, text, message):
    root = write_voc(tmp_path, {**VOC_XML, "a": ""})
    path = root / "Annotations" / "a.xml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(DataFormatError, match=message):
        load_detection(root)


def test_voc_unknown_class_difficult_and_split(tmp_path):
    root = write_voc(tmp_path, {**VOC_XML, "c": VOC_XML["c"].replace("<name>dog</name>",
                                                                     "<name>dog</name><difficult>1</difficult>")})
    with pytest.raises(DataFormatError, match=r"a\.xml: object\[2\]/name: unknown class 'dog'; expected one of "
                                              r"\['cat', 'bird'\]"):
        read_voc(root, classes=["cat", "bird"])
    assert read_voc(root).targets[2]["iscrowd"].tolist() == [True]  # difficult: kept, flagged
    (root / "ImageSets" / "Main").mkdir(parents=True)
    (root / "ImageSets" / "Main" / "val.txt").write_text("c\na\n")
    ds = load_detection(root, split="val")
    assert [p.name for p in ds.image_files] == ["c.png", "a.png"]
    (root / "ImageSets" / "Main" / "val.txt").write_text("c\nzz\n")
    with pytest.raises(DataFormatError, match=r"val\.txt:2: 'zz' has no Annotations/zz\.xml"):
        read_voc(root, split="val")
    with pytest.raises(DataFormatError, match=r"no split 'test'.*found: \['val'\]"):
        read_voc(root, split="test")


def test_yolo_data_yaml_splits_missing_labels_and_class_mapping(tmp_path):
    root = tmp_path / "yolo"
    for split in ("train", "val"):
        write_images(root / "images" / split)
        (root / "labels" / split).mkdir(parents=True)
    for stem, text in YOLO_TXT.items():
        (root / "labels" / "train" / f"{stem}.txt").write_text(text)
    (root / "labels" / "val" / "a.txt").write_text(YOLO_TXT["a"])  # b and c have no label file: no objects
    (root / "data.yaml").write_text("path: .\ntrain: images/train\nval: images/val\nnames:\n  0: cat\n  1: dog\n")
    assert_truth(load_detection(root))  # no split: train
    val = load_detection(root / "data.yaml", split="val", classes=["dog", "cat"])
    assert val.classes == ["dog", "cat"] and val.targets[0]["labels"].tolist() == [1, 0]
    assert [len(t["boxes"]) for t in val.targets] == [2, 0, 0]
    with pytest.raises(DataFormatError, match=r"a\.txt:1: unknown class: class 0 \('cat'\) is not one of the classes"):
        read_yolo(root, split="val", classes=["dog"])
    (root / "data.yaml").write_text("names: 3\n")
    with pytest.raises(DataFormatError, match=r"data\.yaml: names: expected a list of class names"):
        read_yolo(root)
    (root / "data.yaml").unlink()
    with pytest.raises(DataFormatError, match="no names file"):
        read_yolo(root)


def test_images_that_do_not_decode_are_skipped_and_named(tmp_path):
    path = write_coco(tmp_path)
    (tmp_path / "images" / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    scene = json.loads(json.dumps(COCO_SCENE))
    scene["images"].append({"id": 13, "file_name": "missing.png"})
    path.write_text(json.dumps(scene))
    with pytest.warns(UserWarning, match=r"skipped 2 image\(s\) that could not be read") as caught:
        ds = read_coco(path)
    text = str(caught[0].message)
    assert "b.png" in text and "missing.png" in text
    assert [p.name for p in ds.image_files] == ["a.png", "c.png"] and len(ds.skipped) == 2
    assert ds.targets[1]["boxes"].tolist() == [[4.0, 8.0, 8.0, 16.0]]
    for name in ("a.png", "c.png"):
        (tmp_path / "images" / name).write_bytes(b"")
    with pytest.raises(DataFormatError, match="none of the 4 image files could be read"):
        read_coco(path)


def test_annotation_file_that_is_not_a_regular_file(tmp_path):
    root = write_yolo(tmp_path, {k: v for k, v in YOLO_TXT.items() if k != "c"})
    os.mkfifo(root / "labels" / "c.txt")  # reading it would wait for a writer forever
    with pytest.raises(DataFormatError, match=r"c\.txt: a FIFO \(named pipe\), not an annotation file"):
        read_yolo(root)


def test_grayscale_stays_one_channel_and_uniform_sizes_make_one_tensor(tmp_path):
    root = tmp_path / "yolo"
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    for i in range(3):
        Image.fromarray(np.full((12, 20), 40 * i, np.uint8)).save(root / "images" / f"{i}.png")
    (root / "labels" / "1.txt").write_text("0 0.5 0.5 0.5 0.5\n")
    (root / "names.txt").write_text("spot\n")
    ds = load_detection(root)
    assert ds.image_shape == (1, 12, 20) and ds.images_tensor().shape == (3, 1, 12, 20)
    assert ds.images_tensor()[2].unique().tolist() == [80]
    assert ds.targets[1]["boxes"].tolist() == [[5.0, 3.0, 15.0, 9.0]]


def test_resized_moves_boxes_and_masks_with_the_images(tmp_path):
    scene = json.loads(json.dumps(COCO_SCENE))
    for ann in scene["annotations"]:
        x, y, w, h = ann["bbox"]
        ann["segmentation"] = [[x, y, x + w, y, x + w, y + h, x, y + h]]
    ds = read_coco(write_coco(tmp_path, scene), masks=True)
    small = ds.resized(16, 32)  # a.png and b.png halved; c.png (16x16) stretched to twice its width
    assert small.image_shape == (3, 16, 32) and small.images_tensor().shape == (3, 3, 16, 32)
    assert small.targets[0]["boxes"].tolist() == [[1.5, 2.5, 5.5, 10.5], [16.0, 0.0, 32.0, 16.0]]
    assert small.targets[2]["boxes"].tolist() == [[8.0, 8.0, 16.0, 16.0]]
    assert small.targets[2]["masks"].shape == (1, 16, 32) and small.targets[0]["masks"].shape == (2, 16, 32)
    pil = Image.fromarray(pixels("a.png")).resize((32, 16), Image.Resampling.BILINEAR)  # PIL's antialiased bilinear
    assert (small[0][0].float() - torch.from_numpy(np.array(pil)).permute(2, 0, 1).float()).abs().max() <= 1
    assert small.targets[0]["masks"][1].sum() == 16 * 16  # the right half, still


def test_split_is_seeded_disjoint_and_complete():
    n = 20
    ds = DetectionDataset(torch.arange(n, dtype=torch.uint8).reshape(n, 1, 1, 1).expand(n, 1, 2, 2).clone(),
                          [{"boxes": [[0, 0, 1, 1]], "labels": [i % 2]} for i in range(n)], ["a", "b"])
    rest, held = ds.split(0.25, seed=3)
    ids = lambda d: d.images_tensor()[:, 0, 0, 0].tolist()  # noqa: E731
    assert len(held) == 5 and len(rest) == 15
    assert sorted(ids(rest) + ids(held)) == list(range(n)) and ids(held) == sorted(ids(held))
    assert ids(ds.split(0.25, seed=3)[1]) == ids(held)
    assert any(ids(ds.split(0.25, seed=s)[1]) != ids(held) for s in range(4, 8))
    assert [t["labels"].item() for t in held.targets] == [i % 2 for i in ids(held)]  # targets follow their images
    with pytest.raises(DataFormatError, match="too few"):
        ds.subset([0]).split(0.5)


def test_bad_targets_given_in_python_name_the_index():
    images = torch.zeros(2, 3, 4, 4, dtype=torch.uint8)
    with pytest.raises(DataFormatError, match=r"targets\[1\]\['labels'\]: class index 2 outside 0\.\.1"):
        DetectionDataset(images, [{"boxes": [], "labels": []}, {"boxes": [[0, 0, 1, 1]], "labels": [2]}], ["a", "b"])
    with pytest.raises(DataFormatError, match=r"targets\[0\]\['boxes'\]: expected finite \(M, 4\)"):
        DetectionDataset(images, [{"boxes": [[0, 0, 1]], "labels": [0]}] * 2, ["a"])


def test_not_detection_data(tmp_path):
    with pytest.raises(DatasetNotFoundError):
        load_detection(tmp_path / "nothing")
    (tmp_path / "x").mkdir()
    with pytest.raises(DataFormatError, match="not detection data; expected a COCO JSON file"):
        load_detection(tmp_path / "x")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a clean dataset reads without a warning
        assert_truth(load_detection(write_yolo(tmp_path / "y")))
