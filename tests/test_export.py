"""convkit.export (issue 15): every zoo classifier and a trained run of each task through onnxruntime against eager
PyTorch on the same inputs; TorchScript and ExportedProgram read back; the metadata; `convkit export` and
`convkit predict FILE.onnx` through the CLI; bad files refused on one line."""

import io
import json
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from PIL import Image

from convkit.cli.main import main
from convkit.export import ExportError, export_model, load_inference, load_onnx
from convkit.models import create_model, list_models, model_info
from convkit.models.reference import ModelCfg
from convkit.tasks.detection.scenes import write_scenes
from convkit.train import train

pytestmark = pytest.mark.slow  # real exports and small training runs: about a minute in all, on 2 cores


def _classifier_cfg(model, name, shape):
    model.model_cfg = ModelCfg(name, input_shape=shape, num_classes=10, classes=[f"c{k}" for k in range(10)],
                               mean=(0.5,) * shape[0], std=(0.25,) * shape[0], meta={"task": "classification"})
    return model.eval()


def _small_input(name: str) -> tuple[int, int, int]:
    """The zoo model's own input when small, else the least of 32, 64, 96 it takes."""
    c, h, w = model_info(name).input_size
    return (c, h, w) if h <= 32 else (c, 96, 96) if name in ("alexnet_lrn", "nin", "zfnet") else (c, 64, 64)


# The suite takes the zoo's small models (and VGG-11-BN for the VGG family): a VGG's 100 M-parameter head costs
# 12 s per export and load here. CONVKIT_FULL_ZOO=1 takes all 32 (README: all pass, measured by this test).
HEAVY = {n for n in list_models() if n.startswith("vgg") and n != "vgg11_bn"} | {"resnet101", "resnet152",
                                                                                  "wide_resnet50_2"}
ZOO = [n for n in list_models() if n not in HEAVY or os.environ.get("CONVKIT_FULL_ZOO") == "1"]


@pytest.mark.parametrize("name", ZOO)
def test_every_zoo_classifier_through_onnxruntime_equals_pytorch(name, tmp_path):
    """Logits within 1e-4 of the logits' scale (random deep ResNets reach 1e4: float32 keeps ~7 digits), on a
    batch of 3 while the export saw 2 (the batch axis is dynamic)."""
    torch.manual_seed(0)
    shape = _small_input(name)
    model = _classifier_cfg(create_model(name, num_classes=10), name, shape)
    result = export_model(model, "onnx", tmp_path / f"{name}.onnx")
    x = torch.randn(3, *shape)
    with torch.no_grad():
        expected = model(x)
    got = load_onnx(result.path).model(x)
    assert got.shape == expected.shape == (3, 10)
    scale = max(1.0, float(expected.abs().max()))
    assert float((got - expected).abs().max()) <= 1e-4 * scale, result.exporter


# --- trained runs of each task ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    root = tmp_path_factory.mktemp("scenes")
    return write_scenes(root, train=8, val=6, canvas=64, objects=(1, 3), seed=5)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, scenes):
    """Tiny runs, one per task (and both kinds of detector graph): seconds each."""
    root = tmp_path_factory.mktemp("runs")
    common = {"epochs": 1, "quiet": True, "threads": 1, "runs_dir": str(root), "batch_size": 8}
    coco = {"data": str(Path(scenes["train_annotations"]).parent.parent)}  # COCO's layout: annotations/, train/, val/
    out = {"classification": train(model="fastcnn", limit=64, test_limit=16, name="cls", tta=True, **common).run_dir,
           "yolo": train(task="detect", model="yolo", name="yolo", **coco, **common).run_dir,
           "fasterrcnn": train(task="detect", model="fasterrcnn", name="frcnn", **coco, **common).run_dir,
           "maskrcnn": train(task="instance", name="mrcnn", **coco, **common).run_dir,
           "fcn8s": train(task="segment", model="fcn8s", name="fcn", **coco, **common).run_dir}
    return out


def _images(scenes, n=6):
    files = sorted(Path(scenes["val_annotations"]).parent.parent.rglob("val/*.png"))[:n] or sorted(
        Path(scenes["val_annotations"]).parent.parent.rglob("*.png"))[:n]
    from convkit.data.folder import decode_image

    return files, [decode_image(f, channels=1) for f in files]


def _exported(run, tmp_path, **kw):
    return load_inference(export_model(run, "onnx", tmp_path / "model.onnx", **kw).path)


def test_a_trained_classifier_onnx_answers_as_pytorch_with_its_metadata(runs, tmp_path):
    eager = load_inference(runs["classification"])
    exported = _exported(runs["classification"], tmp_path)
    proto = onnx.load(str(tmp_path / "model.onnx"))
    props = {p.key: p.value for p in proto.metadata_props}
    meta = json.loads(props["convkit"])
    assert props["task"] == meta["task"] == "classification"
    assert json.loads(props["classes"]) == eager.classes and meta["tta"] is True
    assert json.loads(props["mean"]) == pytest.approx([float(v) for v in eager.checkpoint.mean])
    assert json.loads(props["input_shape"]) == [1, 28, 28] and meta["batch"] == "dynamic"
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    images = [torch.randint(0, 256, (1, 28, 28), generator=torch.Generator().manual_seed(k), dtype=torch.uint8)
              for k in range(5)]
    a, b = eager.run(images, top=10), exported.run(images, top=10)
    for x, y in zip(a, b):
        p = {d["class"]: d["probability"] for d in x["predictions"]}
        q = {d["class"]: d["probability"] for d in y["predictions"]}
        assert p.keys() == q.keys() and max(abs(p[k] - q[k]) for k in p) <= 1e-4


def _match(a: dict, b: dict, pairs: list | None = None) -> tuple[int, int]:
    """Detections of one image from both backends, paired: each with an unused one of the other with the same label,
    a score within 1e-4 and a box within 1e-3. Returns (detections, unpaired): a nearly untrained R-CNN gives many
    boxes nearly the same score, and which of them NMS and the 100-cut keep depends on how each backend orders
    near-ties."""
    da, db = a["detections"], list(b["detections"])
    assert len(da) == len(db)
    unpaired = 0
    for x in da:
        same = [y for y in db if y["label"] == x["label"] and abs(y["score"] - x["score"]) <= 1e-4
                and max(abs(x["box"][k] - y["box"][k]) for k in x["box"]) <= 1e-3]
        if not same:
            unpaired += 1
            continue
        if pairs is not None:
            pairs.append((x, same[0]))
        db.remove(same[0])
    return len(da), unpaired


@pytest.mark.parametrize("kind", ["yolo", "fasterrcnn"])
def test_trained_detectors_onnx_detections_equal_pytorch_after_matching(runs, scenes, kind, tmp_path):
    """The YOLO graph holds its NMS for any batch; torchvision's holds its own for one image. At a low threshold
    there are many detections to compare."""
    eager = load_inference(runs[kind])
    exported = _exported(runs[kind], tmp_path)
    assert exported.checkpoint.meta["exporter"] == "legacy"
    assert exported.checkpoint.meta["batch"] == ("dynamic" if kind == "yolo" else 1)
    _, images = _images(scenes)
    resized = torch.nn.functional.interpolate(images[0][None].float(), size=(50, 70), mode="bilinear")[0]
    images.append(resized.round().to(torch.uint8))  # another size: resized in, boxes out
    total = unpaired = 0
    for threshold in (0.01, 0.3):
        for x, y in zip(eager.run(images, score_threshold=threshold), exported.run(images, score_threshold=threshold)):
            n, u = _match(x, y)
            total, unpaired = total + n, unpaired + u
    assert total > 100 and unpaired <= (0 if kind == "yolo" else 0.05) * total, (total, unpaired)  # measured: 0/620, 27/700


def test_mask_rcnn_onnx_masks_agree_on_999_per_mille_of_pixels(runs, scenes, tmp_path):
    from convkit.tasks.segmentation.instance import rle_mask

    eager = load_inference(runs["maskrcnn"])
    exported = _exported(runs["maskrcnn"], tmp_path)
    _, images = _images(scenes, 4)
    same = pixels = total = unpaired = 0
    pairs = []
    for x, y in zip(eager.run(images, score_threshold=0.05), exported.run(images, score_threshold=0.05)):
        n, u = _match(x, y, pairs)
        total, unpaired = total + n, unpaired + u
    assert total > 10 and unpaired <= 0.05 * total, (total, unpaired)
    if True:
        for dx, dy in pairs:
            mx, my = np.asarray(rle_mask(dx["mask"])), np.asarray(rle_mask(dy["mask"]))
            same, pixels = same + int((mx == my).sum()), pixels + mx.size
    assert pixels > 0 and same / pixels >= 0.999


def test_segmenter_onnx_class_maps_agree_and_dynamo_takes_it_too(runs, scenes, tmp_path):
    from convkit.tasks.segmentation.inference import segment_images
    from convkit.tasks.segmentation.task import predict_masks  # noqa: F401  (the path eager segment_images takes)

    _, images = _images(scenes)
    eager = load_inference(runs["fcn8s"])
    expected = segment_images(eager.checkpoint, images)
    for exporter in ("auto", "dynamo"):
        exported = _exported(runs["fcn8s"], tmp_path / exporter, exporter=exporter)
        assert exported.checkpoint.meta["exporter"] == ("legacy" if exporter == "auto" else "dynamo")
        got = segment_images(exported.checkpoint, images)
        agree = sum(int((a == b).sum()) for a, b in zip(expected, got)) / sum(a.numel() for a in expected)
        assert agree >= 0.999
    answer = exported.run(images[:1])[0]
    decoded = np.asarray(Image.open(io.BytesIO(__import__("base64").b64decode(answer["mask_png"]))))
    assert np.array_equal(decoded, expected[0].numpy())
    counts = np.bincount(decoded.ravel(), minlength=len(eager.classes))
    assert answer["areas"] == {eager.classes[k]: int(n) for k, n in enumerate(counts) if n}


def test_torchscript_and_exported_program_carry_metadata_and_equal_pytorch(runs, tmp_path):
    eager = load_inference(runs["classification"])
    x = torch.randn(4, 1, 28, 28)
    with torch.no_grad():
        expected = eager.model(x)
    extra = {"convkit.json": ""}
    scripted = torch.jit.load(str(export_model(runs["classification"], "torchscript", tmp_path / "m.pt").path),
                              _extra_files=extra)
    assert json.loads(extra["convkit.json"])["classes"] == eager.classes
    assert float((scripted(x) - expected).abs().max()) <= 1e-5
    program = torch.export.load(str(export_model(runs["classification"], "exported-program",
                                                 tmp_path / "m.pt2").path), extra_files={"convkit.json": ""})
    assert float((program.module()(x) - expected).abs().max()) <= 1e-5
    # YOLO's whole post-processing traces too; torch.export stops on its data-dependent number of boxes
    yolo = export_model(runs["yolo"], "torchscript", tmp_path / "y.pt")
    assert yolo.metadata["outputs"] == ["detections"]
    with pytest.raises(ExportError, match="yolo: torch.export cannot capture this detect model .*try --format onnx"):
        export_model(runs["yolo"], "exported-program", tmp_path / "y.pt2")
    assert not (tmp_path / "y.pt2").exists()


def test_cli_export_then_predict_onnx_prints_what_the_run_prints(runs, scenes, tmp_path, capsys):
    for key in ("classification", "yolo", "fcn8s"):
        target = tmp_path / f"{key}.onnx"
        assert main(["export", str(runs[key]), "-o", str(target)]) == 0
        out = capsys.readouterr().out
        assert f"{target}: " in out and "check: onnxruntime against PyTorch" in out
        files, _ = _images(scenes, 3)
        args = [*map(str, files), "--json"] + (["--out", str(tmp_path / key)] if key != "classification" else [])
        assert main(["predict", str(runs[key]), *args]) == 0
        from_run = json.loads(capsys.readouterr().out)
        assert main(["predict", str(target), *args]) == 0
        from_onnx = json.loads(capsys.readouterr().out)
        if key == "classification":
            for a, b in zip(from_run, from_onnx):
                assert [p["class"] for p in a["predictions"]] == [p["class"] for p in b["predictions"]]
                assert max(abs(p["probability"] - q["probability"]) for p, q in
                           zip(a["predictions"], b["predictions"])) <= 1e-4
        elif key == "yolo":
            for a, b in zip(from_run, from_onnx):
                assert [d["class"] for d in a["detections"]] == [d["class"] for d in b["detections"]]
        else:
            assert [r["areas"] for r in from_run] == [r["areas"] for r in from_onnx]


def test_bad_exports_and_files_are_refused_on_one_line(runs, tmp_path, capsys):
    not_convkit = tmp_path / "plain.onnx"
    torch.onnx.export(torch.nn.Linear(2, 2), (torch.zeros(1, 2),), str(not_convkit), dynamo=False)
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x00not a protobuf at all" * 10)
    image = tmp_path / "x.png"
    Image.new("L", (28, 28)).save(image)
    for path, expected in ((not_convkit, "no convkit metadata"), (garbage, "not an ONNX model"),
                           (tmp_path / "missing.onnx", "no such ONNX file")):
        assert main(["predict", str(path), str(image)]) == 2
        err = capsys.readouterr().err.strip()
        assert expected in err and str(path) in err and len(err.splitlines()) == 1, err
    assert main(["export", str(tmp_path / "nothing")]) == 2
    assert "no such" in capsys.readouterr().err
    assert main(["export", "resnet18"]) == 2  # a zoo name has no trained weights
    assert "train" in capsys.readouterr().err
    untrained = _classifier_cfg(create_model("lenet5", num_classes=10), "lenet5", (1, 32, 32))
    untrained.model_cfg = replace(untrained.model_cfg, classes=None)
    with pytest.raises(Exception, match="not a trained model"):
        export_model(untrained, "onnx", tmp_path / "u.onnx")
    assert not (tmp_path / "u.onnx").exists()
