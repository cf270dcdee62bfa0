"""Careless and hostile checkpoints: damaged files, bogus metadata, and the data `convkit evaluate RUN` scores.

Every bad file goes through the real command (`convkit.cli.main.main`, in-process): exit code 2, one line
`convkit: error: <file>: ...` saying what is wrong, no traceback, and the damaged files left as they were.
"""

import json
import os
import shutil
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from PIL import Image

from convkit.cli.main import main
from convkit.data import load_dataset
from convkit.models import weights
from convkit.models.weights import CheckpointError, load_tensors, read_header, save_tensors
from convkit.train import train
from convkit.train.runfolder import read_metrics

CHECKPOINTS = ("best.safetensors", "last.safetensors", "resume.safetensors")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    runs = tmp_path_factory.mktemp("runs")
    result = train(epochs=1, limit=256, test_limit=100, batch_size=64, threads=1, quiet=True, runs_dir=str(runs),
                   name="small", model_kwargs={"widths": [8, 16, 16]})
    return result.run_dir


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    path = tmp_path_factory.mktemp("images") / "shoe.png"
    Image.new("L", (28, 28), 128).save(path)
    return path


def cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_refused(code, err, path, *fragments):
    """Exit code 2 and one line `convkit: error: <path>: ...` with each fragment, no traceback."""
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"convkit: error: {path}"), err
    assert "Traceback" not in err and len(lines[0]) < 1000, err
    for fragment in fragments:
        assert fragment in lines[0], err


# --- damaged files -------------------------------------------------------------------------------------------

def _parts(data: bytes) -> tuple[dict, bytes]:
    n = struct.unpack("<Q", data[:8])[0]
    return json.loads(data[8:8 + n]), data[8 + n:]


def _join(header: dict, body: bytes) -> bytes:
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + body


def _truncated(data: bytes) -> bytes:
    return data[:-100]


def _header_not_json(data: bytes) -> bytes:
    return data[:8] + b"{" + b"\xff" * 10 + data[19:]  # the header's length kept, its text garbled


def _absurd_header_length(data: bytes) -> bytes:
    return struct.pack("<Q", 10**15) + data[8:]


def _offset_out_of_range(data: bytes) -> bytes:
    header, body = _parts(data)
    name = max((k for k in header if k != "__metadata__"), key=lambda k: header[k]["data_offsets"][1])
    header[name]["data_offsets"][1] += 10**9
    return _join(header, body)


def _overlapping_offsets(data: bytes) -> bytes:
    header, body = _parts(data)
    named = sorted((k for k in header if k != "__metadata__"), key=lambda k: header[k]["data_offsets"][0])
    first, second = named[0], next(k for k in named[1:] if header[k]["shape"] == header[named[0]]["shape"])
    header[second]["data_offsets"] = list(header[first]["data_offsets"])  # two tensors on the same bytes
    return _join(header, body)


DAMAGE = {
    "truncated": (_truncated, ["truncated: expected", "found"]),
    "header not JSON": (_header_not_json, ["header is not valid JSON"]),
    "absurd header length": (_absurd_header_length, ["header length of 1,000,000,000,000,000 bytes",
                                                     "expected at most"]),
    "offset out of range": (_offset_out_of_range, ["data_offsets", "out of range"]),
    "overlapping offsets": (_overlapping_offsets, ["data_offsets", "overlap tensor"]),
}
VERBS = {
    "predict": lambda run, image: ["predict", run, image],
    "evaluate": lambda run, image: ["evaluate", run, "--no-plots"],
    "report": lambda run, image: ["report", run, "--out", run / "page.html"],
    "train --resume": lambda run, image: ["train", "--resume", run],
}


@pytest.mark.parametrize("damage", DAMAGE)
@pytest.mark.parametrize("verb", VERBS)
def test_a_damaged_checkpoint_is_a_one_line_error_naming_it(run_dir, image, tmp_path, capsys, damage, verb):
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    mutate, fragments = DAMAGE[damage]
    for name in CHECKPOINTS:
        (run / name).write_bytes(mutate((run_dir / name).read_bytes()))
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    code, out, err = cli(capsys, *VERBS[verb](run, image))
    used = "resume.safetensors" if verb == "train --resume" else "best.safetensors"
    assert_refused(code, err, run / used, *fragments)
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before  # nothing written, nothing lost


def test_the_header_is_checked_before_safetensors_reads_the_file(tmp_path, monkeypatch):
    path = save_tensors(tmp_path / "w.safetensors", {"w": torch.arange(4.0)}, {"epoch": 1})
    path.write_bytes(_truncated(path.read_bytes() + b"\0" * 90))  # 10 bytes short
    monkeypatch.setattr(weights, "load_file", lambda *a: pytest.fail("safetensors was handed a damaged file"))
    with pytest.raises(CheckpointError, match=r"truncated: expected \d+ bytes .*found"):
        load_tensors(path)
    # a file that is not safetensors at all keeps its advice (it may be a torch.save file)
    (tmp_path / "notes.safetensors").write_text("hello, this is text")
    with pytest.raises(CheckpointError, match="not a safetensors file"):
        read_header(tmp_path / "notes.safetensors")
    (tmp_path / "tiny.safetensors").write_bytes(b"\1\0")
    with pytest.raises(CheckpointError, match="expected at least 8 bytes.*found 2"):
        read_header(tmp_path / "tiny.safetensors")


def test_a_good_file_whose_header_length_starts_like_a_pickle_loads(tmp_path):
    # header length 0x0280 = 640: its first bytes \x80\x02 are also how a protocol-2 pickle starts
    for pad in range(700):
        path = save_tensors(tmp_path / "w.safetensors", {"w": torch.arange(3.0)}, {"note": "x" * pad})
        if path.read_bytes()[:2] == b"\x80\x02":
            break
    else:
        pytest.fail("no padding gives a 640-byte header")
    tensors, meta = load_tensors(path)
    assert tensors["w"].tolist() == [0.0, 1.0, 2.0] and len(meta["note"]) == pad


def test_a_huge_header_length_is_refused_without_reading_it(tmp_path):
    # the header length field says 100 MiB + 1 and the file really is that long: the bound, not the size, refuses it
    path = tmp_path / "big.safetensors"
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", (100 << 20) + 1) + b"{")
        f.truncate(8 + (100 << 20) + 1)
    with pytest.raises(CheckpointError, match=r"header length of 104,857,601 bytes, expected at most 104,857,600"):
        read_header(path)


# --- bogus metadata -----------------------------------------------------------------------------------------

def _with_meta(run_dir: Path, out: Path, change) -> Path:
    tensors, meta = load_tensors(run_dir / "best.safetensors")
    change(meta)
    return save_tensors(out / "bad.safetensors", tensors, meta)


def _set(key, value):
    def change(meta):
        target = meta
        *parents, last = key.split(".")
        for part in parents:
            target = target[part]
        target[last] = value
    return change


BOGUS = {
    "classes too short": (_set("classes", ["a", "b"]), ["classes", "expected 10 names"]),
    "classes not strings": (_set("classes", list(range(10))), ["classes", "class names (strings)"]),
    "a million classes": (_set("classes", [f"class{i}" for i in range(10**6)]), ["classes", "a list of 1 to 100,000 class names"]),
    "std of zero": (_set("std", [0.0]), ["std", "expected numbers > 0"]),
    "mean not finite": (_set("mean", [float("nan")]), ["mean", "finite numbers"]),
    "mean per channel": (_set("mean", [0.5, 0.5, 0.5]), ["mean", "1 numbers, one per input channel"]),
    "std a string": (_set("std", "0.3"), ["std", "found '0.3'"]),
    "input shape of 2": (_set("input_shape", [1, 28]), ["input_shape", "3 positive ints"]),
    "input shape negative": (_set("input_shape", [1, -28, 28]), ["input_shape", "3 positive ints"]),
    "spec not a mapping": (_set("model", "fastcnn"), ["model", "a mapping"]),
    "spec unknown key": (_set("model.evil", 1), ["model.evil", "no such key"]),
    "spec unknown kind": (_set("model.kind", "pickle"), ["model.kind", "zoo or file or python"]),
    "bogus model kwarg": (_set("model.kwargs", {"widths": [8, 16, 16], "bogus": 1}), ["cannot be built", "bogus"]),
    "huge model kwarg": (_set("model.kwargs", {"widths": list(range(10**6))}), ["model.kwargs", "at most 1,000 values"]),
    "unknown zoo model": (_set("model.name", "resnet19"), ["cannot be built", "resnet19"]),
    "metrics nested": (_set("metrics", {"acc": [[[[[[1]]]]]]}), ["metrics", "mapping of metric names to numbers"]),
    "config a list": (_set("config", [1, 2]), ["config", "a mapping"]),
    "epoch a string": (_set("epoch", "one"), ["epoch", "a count"]),
}


@pytest.mark.parametrize("case", BOGUS)
def test_bogus_metadata_is_a_one_line_error_naming_the_checkpoint_and_field(run_dir, image, tmp_path, capsys, case):
    change, fragments = BOGUS[case]
    path = _with_meta(run_dir, tmp_path, change)
    code, out, err = cli(capsys, "predict", path, image)
    assert_refused(code, err, path, *fragments)
    assert out == ""


def test_a_resume_file_without_its_config_is_a_one_line_error(run_dir, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    tensors, meta = load_tensors(run / "resume.safetensors")
    del meta["config"]
    save_tensors(run / "resume.safetensors", tensors, meta)
    code, out, err = cli(capsys, "train", "--resume", run)
    assert_refused(code, err, run / "resume.safetensors", "training state lacks config")


def test_a_deeply_nested_metadata_value_is_refused(run_dir, tmp_path, capsys, image):
    tensors, _ = load_tensors(run_dir / "best.safetensors")
    path = tmp_path / "deep.safetensors"
    from safetensors.torch import save_file

    save_file(tensors, str(path), metadata={"convkit": "[" * 100_000 + "]" * 100_000})
    code, out, err = cli(capsys, "evaluate", path, "--data", "default")
    assert_refused(code, err, path, "not valid JSON", "nested too deeply")


def test_a_good_checkpoint_still_loads_and_predicts(run_dir, image, tmp_path, capsys):
    path = _with_meta(run_dir, tmp_path, lambda meta: None)  # rewritten through the same code: still accepted
    code, out, err = cli(capsys, "predict", path, image, "--top", "2")
    assert code == 0, err
    assert out.startswith(f"{image}: ") and out.count("%") == 2


def test_huge_model_sizes_are_refused_before_any_memory_is_taken(run_dir, tmp_path):
    # widths of 10^5: building the model for real takes ~360 GB; checked on the meta device it takes nothing
    path = _with_meta(run_dir, tmp_path, _set("model.kwargs", {"widths": [100_000, 100_000, 100_000]}))
    script = textwrap.dedent(f"""
        import resource, sys
        from convkit.cli.main import main
        # 3 GiB beyond what the interpreter, torch and its thread pools already map
        size = int(open("/proc/self/statm").read().split()[0]) * resource.getpagesize()
        resource.setrlimit(resource.RLIMIT_AS, (size + (3 << 30), size + (3 << 30)))
        sys.exit(main(["evaluate", {str(path)!r}, "--data", "default", "--no-plots"]))
    """)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith(f"convkit: error: {path}: the weights do not fit the model its metadata describes")
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


# --- what evaluate scores ------------------------------------------------------------------------------------

def _best(run: Path) -> dict:
    rows = read_metrics(run / "metrics.csv")
    return max(rows, key=lambda r: r["test_acc"])


def test_evaluate_run_scores_the_runs_own_test_set(run_dir, capsys):
    code, out, err = cli(capsys, "evaluate", run_dir, "--json", "--no-plots")
    assert code == 0, err
    report = json.loads(out)
    assert report["count"] == 100  # test_limit: what the run reported on, not the whole test split
    assert report["evaluated_on"] == "the run's test set, default (test split), first 100"
    assert report["top1"] == pytest.approx(_best(run_dir)["test_acc"], abs=1e-5)
    assert report["top5"] == pytest.approx(_best(run_dir)["test_top5"], abs=1e-5)


@pytest.fixture(scope="module")
def folder_run(tmp_path_factory):
    """A run on a folder of class folders (no test split: training holds out 10% of each class)."""
    root = tmp_path_factory.mktemp("folder")
    shipped = load_dataset("default", "train")
    for c, name in enumerate(shipped.classes):
        folder = root / "photos" / name.replace("/", "-")
        folder.mkdir(parents=True)
        for k, i in enumerate((shipped.labels == c).nonzero().flatten()[:20].tolist()):
            Image.fromarray(shipped.images[i, 0].numpy(), "L").save(folder / f"{k:02d}.png")
    result = train(data=str(root / "photos"), epochs=2, batch_size=32, threads=1, quiet=True,
                   runs_dir=str(root / "runs"), name="photos", model_kwargs={"widths": [8, 16, 16]})
    return result.run_dir, root / "photos"


def test_evaluate_run_on_folder_data_scores_its_held_out_part_not_the_whole_folder(folder_run, capsys):
    run, photos = folder_run
    code, out, err = cli(capsys, "evaluate", run, "--json", "--no-plots")
    assert code == 0, err
    report = json.loads(out)
    assert report["count"] == 20 and report["per_class"] and all(
        row["support"] == 2 for row in report["per_class"])  # 10% of 20 images in each of 10 classes
    assert report["evaluated_on"] == f"the run's test set, {photos} (held-out 10%)"
    assert report["top1"] == pytest.approx(_best(run)["test_acc"], abs=1e-5)
    # the text form says which data it used
    code, out, err = cli(capsys, "evaluate", run, "--no-plots")
    assert code == 0 and out.startswith(f"{run / 'best.safetensors'} on the run's test set, {photos} (held-out 10%)")


def test_evaluate_run_with_data_scores_that_folder_whole(folder_run, capsys):
    run, photos = folder_run
    code, out, err = cli(capsys, "evaluate", run, "--data", photos, "--json", "--no-plots")
    assert code == 0, err
    report = json.loads(out)
    assert report["count"] == 200 and report["evaluated_on"] == f"{photos}/ (whole folder)"


def test_report_and_evaluate_share_the_runs_test_set(folder_run):
    from convkit.report.page import _load_run, _test_set
    from convkit.train.trainer import run_data

    run, photos = folder_run
    dataset, what = _test_set(_load_run(run), None, None)
    again, _ = run_data(json.loads(json.dumps(load_tensors(run / "best.safetensors")[1]["config"])))
    assert what == f"{photos} (held-out 10%)" and torch.equal(dataset.images, again.images)


# --- the disk-full rule -------------------------------------------------------------------------------------

def test_a_failed_checkpoint_write_leaves_the_previous_file_intact(run_dir, tmp_path, monkeypatch):
    path = tmp_path / "resume.safetensors"
    shutil.copy(run_dir / "resume.safetensors", path)
    before = path.read_bytes()

    def disk_full(tensors, tmp, metadata=None):
        Path(tmp).write_bytes(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(weights, "save_file", disk_full)
    with pytest.raises(OSError, match="No space left"):
        weights.save_state(path, {"model": {"w": torch.zeros(3)}}, {"epoch": 2})
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["resume.safetensors"]
