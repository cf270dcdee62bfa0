"""Evaluate and predict: metrics against hand-computed values, every image mode, bad files, unsafe checkpoints."""

import io
import json
import pickle
import subprocess

import numpy as np
import pytest
import torch
from PIL import Image
from test_train_resume import CLI

from convkit.train import CheckpointError, classification_metrics, load_checkpoint, predict, train
from convkit.train.checkpoint import flatten_state, unflatten_state
from convkit.train.evaluate import fit_images, worst_examples


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    runs = tmp_path_factory.mktemp("runs")
    result = train(epochs=2, limit=1000, test_limit=200, batch_size=50, threads=1, quiet=True, runs_dir=str(runs),
                   name="small", model_kwargs={"widths": [8, 16, 16]})
    return result.run_dir


# --- metrics -------------------------------------------------------------------------------------------------

LOGITS = torch.tensor([[5., 1, 0, 0, 0, 0],    # true 0 -> 0
                       [5., 4, 3, 2, 1, 0],    # true 1 -> 0, true class 2nd: in the top 5
                       [0., 1, 5, 2, 3, 4],    # true 2 -> 2
                       [0., 1, 2, 5, 3, 4],    # true 0 -> 3, true class last: not in the top 5
                       [0., 1, 2, 5, 3, 4],    # true 3 -> 3
                       [0., 5, 1, 2, 3, 4]])   # true 1 -> 1
LABELS = torch.tensor([0, 1, 2, 0, 3, 1])


def test_metrics_match_hand_computed_values():
    m = classification_metrics(LOGITS, LABELS)
    assert m["top1"] == pytest.approx(4 / 6) and m["top5"] == pytest.approx(5 / 6)
    assert m["confusion"].tolist() == [[1, 0, 0, 1, 0, 0],
                                       [1, 1, 0, 0, 0, 0],
                                       [0, 0, 1, 0, 0, 0],
                                       [0, 0, 0, 1, 0, 0],
                                       [0, 0, 0, 0, 0, 0],
                                       [0, 0, 0, 0, 0, 0]]
    assert m["precision"] == pytest.approx([1 / 2, 1, 1, 1 / 2, 0, 0])  # class 0 predicted twice, right once
    assert m["recall"] == pytest.approx([1 / 2, 1 / 2, 1, 1, 0, 0])
    assert m["support"] == [2, 2, 1, 1, 0, 0]
    z = LOGITS.double().numpy()
    log_probs = z - np.log(np.exp(z).sum(1, keepdims=True))
    assert m["loss"] == pytest.approx(-log_probs[np.arange(6), LABELS.numpy()].mean(), rel=1e-6)
    assert worst_examples(LOGITS, LABELS, 5) == [3, 1]  # misclassified, lowest true-class probability first


def test_fit_images_converts_channels_and_size():
    rgb = torch.zeros(2, 3, 10, 10, dtype=torch.uint8)
    rgb[:, 0] = 100
    gray = fit_images(rgb, (1, 5, 5))
    assert gray.shape == (2, 1, 5, 5) and gray.dtype == torch.uint8 and int(gray[0, 0, 0, 0]) == 30  # 0.299*100
    assert fit_images(gray, (3, 5, 5)).shape == (2, 3, 5, 5)


# --- predict -------------------------------------------------------------------------------------------------

def save(image: Image.Image, path, **kw):
    image.save(path, **kw)
    return path


def test_predict_reads_every_image_mode_as_the_model_expects(run_dir, tmp_path):
    pixels = np.asarray(np.random.default_rng(0).integers(0, 256, (28, 28)), dtype=np.uint8)
    gray = Image.fromarray(pixels, "L")
    palette = Image.fromarray(pixels, "P")
    palette.putpalette([v for i in range(256) for v in (i, i, i)])
    rotated = Image.fromarray(np.rot90(pixels, 1).copy(), "L")  # stored turned a quarter left...
    exif = Image.Exif()
    exif[0x0112] = 6  # ...with EXIF orientation 6: "turn 90 degrees right to display"
    files = {
        "gray": save(gray, tmp_path / "gray.png"),
        "rgb": save(gray.convert("RGB"), tmp_path / "rgb.png"),
        "rgba": save(gray.convert("RGBA"), tmp_path / "rgba.png"),
        "palette": save(palette, tmp_path / "palette.png"),
        "16bit": save(Image.fromarray(pixels.astype(np.uint16) * 257), tmp_path / "16bit.png"),
        "exif": save(rotated, tmp_path / "exif.png", exif=exif.tobytes()),
    }
    assert Image.open(files["16bit"]).mode.startswith("I")
    results = predict(run_dir, [files[k] for k in files], top=3)
    by_name = dict(zip(files, results))
    reference = by_name["gray"].top
    assert len(reference) == 3 and all(a[1] >= b[1] for a, b in zip(reference, reference[1:]))
    for name, r in by_name.items():
        assert r.error is None, r.error
        assert [c for c, _ in r.top] == [c for c, _ in reference], name
        assert [p for _, p in r.top] == pytest.approx([p for _, p in reference], abs=1e-6), name
    # and a big colour photo is resized and converted, not refused
    big = save(Image.new("RGB", (300, 200), (200, 30, 30)), tmp_path / "big.jpg")
    assert len(predict(run_dir, [big], top=5)[0].top) == 5


def test_corrupt_and_truncated_files_are_reported_by_path_and_the_others_go_on(run_dir, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    good = save(Image.new("L", (28, 28), 128), folder / "a_good.png")
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (64, 64), dtype=np.uint8)).save(buf, "PNG")
    (folder / "b_truncated.png").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    (folder / "c_corrupt.jpg").write_bytes(b"\xff\xd8 this is not a jpeg")
    save(Image.new("L", (28, 28), 10), folder / "d_good.png")
    (folder / "notes.txt").write_text("not an image, not looked at")
    results = predict(run_dir, [folder])
    assert [r.path for r in results] == [str(folder / n) for n in
                                         ("a_good.png", "b_truncated.png", "c_corrupt.jpg", "d_good.png")]
    assert results[0].top and results[3].top
    assert str(folder / "b_truncated.png") in results[1].error and str(folder / "c_corrupt.jpg") in results[2].error

    out = subprocess.run([*CLI, "predict", str(run_dir), str(folder), str(good), "--json", "--top", "2"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 1  # some files failed; the rest were predicted
    rows = json.loads(out.stdout)
    assert len(rows) == 5 and len(rows[0]["predictions"]) == 2 and "error" in rows[1]
    assert "b_truncated.png" in out.stderr and "c_corrupt.jpg" in out.stderr


# --- unsafe checkpoints ------------------------------------------------------------------------------------

class _Payload:
    """Unpickling this creates a file: proof that code ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_pickle_checkpoint_is_refused_without_executing_it(tmp_path, run_dir):
    probe = tmp_path / "probe"
    pickle.loads(pickle.dumps(_Payload(probe)))
    assert probe.exists(), "the payload must be live for this test to mean anything"
    marker = tmp_path / "pwned"
    for name in ("evil.safetensors", "evil.pt"):
        path = tmp_path / name
        path.write_bytes(pickle.dumps(_Payload(marker)))
        with pytest.raises(CheckpointError, match="never unpickles"):
            load_checkpoint(path)
    torch.save({"weight": torch.zeros(2)}, tmp_path / "torch.pt")  # torch.save's zip format
    with pytest.raises(CheckpointError, match="pickle or zip"):
        load_checkpoint(tmp_path / "torch.pt")
    image = save(Image.new("L", (28, 28)), tmp_path / "x.png")
    for verb in (["predict", str(tmp_path / "evil.pt"), str(image)], ["evaluate", str(tmp_path / "evil.safetensors")]):
        out = subprocess.run([*CLI, *verb], capture_output=True, text=True, timeout=120)
        assert out.returncode == 2 and "never unpickles" in out.stderr, out.stderr
    assert not marker.exists()


def test_training_state_round_trips_through_safetensors_and_json():
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(model.parameters(), betas=(0.8, 0.9))
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    state = {"optimizer": opt.state_dict(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
             "nested": {"a": (1, 2.5, None, "x"), 3: [True]}}
    skeleton, tensors = flatten_state(state)
    json.dumps(skeleton)
    back = unflatten_state(json.loads(json.dumps(skeleton)), tensors)
    assert back["optimizer"]["param_groups"][0]["betas"] == (0.8, 0.9)
    assert set(back["optimizer"]["state"]) == {0, 1}
    assert torch.equal(back["optimizer"]["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])
    assert back["numpy"][0] == "MT19937" and np.array_equal(back["numpy"][1], state["numpy"][1])
    assert back["numpy"][1].dtype == np.uint32
    assert torch.equal(back["torch"], state["torch"]) and back["nested"] == {"a": (1, 2.5, None, "x"), 3: [True]}


# --- evaluate ------------------------------------------------------------------------------------------------

def test_evaluate_cli_reports_accuracy_per_class_and_draws_the_worst_examples(run_dir, tmp_path):
    out = subprocess.run([*CLI, "evaluate", str(run_dir), "--json", "--out", str(tmp_path), "--worst", "8"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    # the run's own test set: the shipped test split's first 200 (its test_limit), what the run reported on
    assert report["count"] == 200 and 0.2 < report["top1"] <= report["top5"] <= 1
    assert len(report["per_class"]) == 10 and sum(map(sum, report["confusion"])) == 200
    correct = sum(report["confusion"][i][i] for i in range(10))
    assert report["top1"] == pytest.approx(correct / 200)
    assert len(report["worst"]) == 8 and all(w["true"] != w["predicted"] for w in report["worst"])
    for name in ("eval_worst.png", "eval_confusion.png"):
        assert np.asarray(Image.open(tmp_path / name).convert("L")).std() > 10
    text = subprocess.run([*CLI, "evaluate", str(run_dir / "last.safetensors"), "--data", "default", "--no-plots"],
                          capture_output=True, text=True, timeout=120)
    assert text.returncode == 0 and "top-5" in text.stdout and "Trouser" in text.stdout
