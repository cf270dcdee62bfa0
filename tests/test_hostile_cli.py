"""Careless and hostile command lines (issue 10): options out of range, devices and backends this machine lacks,
read-only and full disks, run folders left behind by killed runs, and the permissions of the files a run writes.

Every case runs the real `convkit` command (in-process through `main`, or in a subprocess where the process
itself must be limited) and checks: the right result, or one line `convkit: error: ...` naming the option,
field or path, exit code 2, and nothing lost.
"""

import errno
import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

import convkit
from convkit.cli.main import main
from convkit.data.augment import AugmentConfig, AugmentError
from convkit.models.weights import load_state
from convkit.train import TrainConfig

# Subprocesses import the convkit under test, wherever they run (PYTHONPATH may be relative, or unset).
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(convkit.__file__).parents[1]),
                                                    os.environ.get("PYTHONPATH", "")])}
QUICK = ["--epochs", "1", "--limit", "128", "--test-limit", "64", "--threads", "1", "--quiet"]


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def one_error_line(err: str) -> str:
    """The single line a user error prints; fails on a traceback or several lines."""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("convkit: error: "), err
    return lines[0]


def usage_error(capsys, *argv) -> str:
    """argparse's refusal of a value: exit code 2 and `error: argument --x: ...` as the last line."""
    with pytest.raises(SystemExit) as exit_info:
        main([str(a) for a in argv])
    assert exit_info.value.code == 2
    return capsys.readouterr().err.strip().splitlines()[-1]


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def leftovers(root: Path) -> list[Path]:
    """Temporary files of atomic writes left anywhere under root."""
    return [p for p in root.rglob(".*.tmp")]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A run folder trained one epoch on 128 images, and a PNG to classify."""
    root = tmp_path_factory.mktemp("hostile")
    assert main(["train", *QUICK, "--runs-dir", str(root / "runs"), "--name", "tiny"]) == 0
    image = root / "shoe.png"
    Image.new("L", (28, 28), 200).save(image)
    return root / "runs" / "tiny", image


# --- arguments ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("augment, field", [
    ("crop_padding=-3", "crop_padding"), ("crop_padding=2.5", "crop_padding"), ("erasing=2", "erasing"),
    ("zoom=1", "zoom"), ("zoom=[1.2,0.8]", "zoom"), ("shear=90", "shear"), ("rotation=.nan", "rotation"),
    ("mixup=-1", "mixup"), ("fill_mode=mirror", "fill_mode"), ("fill_value=300", "fill_value"),
    ("horizontal_flip=maybe", "horizontal_flip"), ("channel_shift=[1]", "channel_shift"),
])
def test_augment_values_out_of_range_are_one_line_before_any_run_folder(augment, field, capsys, tmp_path):
    code, _, err = run(capsys, "train", *QUICK, "--augment", augment, "--runs-dir", tmp_path / "runs")
    assert code == 2
    assert f"--augment {field} must be" in one_error_line(err)
    assert not (tmp_path / "runs").exists()  # refused before the run folder is made: no dead-end folder


def test_a_crop_padding_as_large_as_the_images_is_refused_with_their_size(capsys, tmp_path):
    code, _, err = run(capsys, "train", *QUICK, "--augment", "crop_padding=28", "--runs-dir", tmp_path / "runs")
    assert code == 2 and "crop_padding=28 is not smaller than the images (28x28)" in one_error_line(err)
    assert not (tmp_path / "runs").exists()


def test_every_augment_field_has_a_rule():
    # each field refuses a string (type) and, if numeric, a negative value (range), naming the field
    for name, value in vars(AugmentConfig()).items():
        bad = [-1] if isinstance(value, int | float) and not isinstance(value, bool) else []
        for wrong in ["abc", *bad]:
            with pytest.raises(AugmentError, match=f"--augment {name} must be"):
                AugmentConfig(**{name: wrong})
    assert AugmentConfig(zoom=[0.8, 1.2], horizontal_flip=1).zoom == (0.8, 1.2)  # YAML's list, 0/1 flags pass


@pytest.mark.parametrize("device, expected", [
    ("nosuch", "device must be auto, cpu, cuda, cuda:N, mps or xpu, got 'nosuch'"),
    ("meta", "device must be auto, cpu, cuda, cuda:N, mps or xpu, got 'meta'"),
    ("cuda", "device cuda: this machine has no cuda device"),
    ("cuda:7", "device cuda:7: this machine has"),
])
def test_a_device_this_machine_lacks_is_one_line(device, expected, capsys, tmp_path):
    if device == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    if device == "cuda:7" and torch.cuda.device_count() > 7:
        pytest.skip("this machine has 8 GPUs")
    code, _, err = run(capsys, "train", *QUICK, "--device", device, "--runs-dir", tmp_path / "runs")
    assert code == 2 and expected in one_error_line(err)
    assert not (tmp_path / "runs").exists()


def test_evaluate_and_predict_check_their_device(tiny_run, capsys):
    run_dir, image = tiny_run
    for argv in (["evaluate", run_dir], ["predict", run_dir, image]):
        code, _, err = run(capsys, *argv, "--device", "cuda:7" if torch.cuda.device_count() <= 7 else "nosuch")
        assert code == 2 and "--device " in one_error_line(err)
    code, out, _ = run(capsys, "predict", run_dir, image, "--device", "auto", "--json")  # the device it picks
    assert code == 0 and len(json.loads(out)[0]["predictions"]) == 5


def test_an_unknown_compile_backend_is_one_line_and_a_known_one_passes(capsys, tmp_path):
    code, _, err = run(capsys, "train", *QUICK, "--compile", "aot_eagr", "--runs-dir", tmp_path / "runs")
    line = one_error_line(err)
    assert code == 2 and "compile: unknown backend 'aot_eagr'; did you mean 'aot_eager'?" in line
    assert not (tmp_path / "runs").exists()
    assert TrainConfig(compile="aot_eager").compile == "aot_eager" and TrainConfig(compile=True).compile is True


@pytest.mark.parametrize("argv, option", [
    (["predict", "RUN", "x.png", "--top", "-3"], "--top"),
    (["predict", "RUN", "x.png", "--top", "0"], "--top"),
    (["predict", "RUN", "x.png", "--batch-size", "0"], "--batch-size"),
    (["evaluate", "RUN", "--batch-size", "0"], "--batch-size"),
    (["evaluate", "RUN", "--worst", "-1"], "--worst"),
    (["summary", "fastcnn", "--batch", "0"], "--batch"),
    (["lr-find", "--steps", "1"], "--steps"),
    (["lr-find", "--start", "0"], "--start"),
    (["lr-find", "--end", "-1"], "--end"),
    (["explain", "filters", "RUN", "--max-filters", "0"], "--max-filters"),
    (["explain", "filters", "RUN", "--max-channels", "-1"], "--max-channels"),
    (["explain", "filters", "fastcnn", "--num-classes", "0"], "--num-classes"),
    (["explain", "filters", "fastcnn", "--in-channels", "-2"], "--in-channels"),
    (["explain", "features", "RUN", "x.png", "--max-channels", "0"], "--max-channels"),
    (["explain", "attribution", "RUN", "x.png", "--method", "occlusion", "--window", "0"], "--window"),
    (["explain", "attribution", "RUN", "x.png", "--method", "occlusion", "--stride", "0"], "--stride"),
    (["explain", "maximize", "RUN", "--channel", "-1"], "--channel"),
    (["explain", "maximize", "RUN", "--channel", "0", "--steps", "0"], "--steps"),
    (["explain", "maximize", "RUN", "--channel", "0", "--lr", "nan"], "--lr"),
    (["explain", "maximize", "RUN", "--channel", "0", "--jitter", "-1"], "--jitter"),
    (["explain", "maximize", "RUN", "--channel", "0", "--blur-every", "-1"], "--blur-every"),
    (["explain", "maximize", "RUN", "--channel", "0", "--blur-sigma", "0"], "--blur-sigma"),
    (["animate", "--fps", "0"], "--fps"),
    (["animate", "--max-outputs", "0"], "--max-outputs"),
    (["animate", "--model", "fastcnn", "--num-classes", "0"], "--num-classes"),
    (["report", "RUN", "--gradcams", "-1"], "--gradcams"),
])
def test_numeric_options_out_of_range_are_usage_errors(argv, option, capsys):
    line = usage_error(capsys, *argv)
    assert f"error: argument {option}: expected a" in line, line


def test_top_larger_than_the_classes_gives_all_of_them(tiny_run, capsys):
    run_dir, image = tiny_run
    code, out, _ = run(capsys, "predict", run_dir, image, "--top", "50", "--json")
    predictions = json.loads(out)[0]["predictions"]
    assert code == 0 and len(predictions) == 10  # the shipped Fashion-MNIST subset has 10 classes
    assert sum(p["probability"] for p in predictions) == pytest.approx(1, abs=1e-4)


# --- disks ----------------------------------------------------------------------------------------------------

def test_a_file_where_a_folder_should_be_is_one_line_naming_it(tiny_run, capsys, tmp_path):
    run_dir, image = tiny_run
    blocker = tmp_path / "afile"
    blocker.write_text("not a folder")
    cases = [
        ["train", *QUICK, "--runs-dir", blocker / "runs"],
        ["evaluate", run_dir, "--out", blocker / "eval"],
        ["report", run_dir, "--out", blocker / "report.html", "--gradcams", "0"],
        ["summary", "fastcnn", "--csv", blocker / "x.csv"],
        ["explain", "filters", run_dir, "--out", blocker / "sub" / "f.png"],
    ]
    for argv in cases:
        code, _, err = run(capsys, *argv)
        assert code == 2, argv
        assert one_error_line(err) == f"convkit: error: {blocker}: not a directory (a file stands where a folder " \
                                      "is needed)", argv
    assert blocker.read_text() == "not a folder" and not leftovers(tmp_path)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders; see the NotADirectory case")
def test_a_read_only_runs_folder_is_one_line(capsys, tmp_path):
    runs = tmp_path / "runs"
    runs.mkdir(mode=0o500)
    try:
        code, _, err = run(capsys, "train", *QUICK, "--runs-dir", runs)
        assert code == 2 and "permission denied" in one_error_line(err).lower() and str(runs) in err
    finally:
        runs.chmod(0o700)


FULL_DISK_DRIVER = textwrap.dedent("""
    import contextlib, io, json, resource, signal, sys
    from convkit.cli.main import main
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG instead of killing us
    results = []
    for limit, argv in json.loads(sys.argv[1]):
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = main(argv)
        results.append([code, err.getvalue()])
    print(json.dumps(results))
""")


def test_a_full_disk_is_one_line_naming_the_file_and_leaves_nothing_half_written(tiny_run, tmp_path):
    run_dir, _ = tiny_run
    before = {p.name: sha(p) for p in run_dir.iterdir() if p.is_file()}
    out = tmp_path / "out"
    kib = 1024
    cases = [  # (file-size limit, argv, the file named)
        (kib, ["train", *QUICK, "--runs-dir", str(out / "runs"), "--name", "a"], out / "runs" / "a" / "config.yaml"),
        (20 * kib, ["train", *QUICK, "--runs-dir", str(out / "runs"), "--name", "b"],
         out / "runs" / "b" / "best.safetensors"),
        (kib, ["evaluate", str(run_dir), "--out", str(out / "eval")], out / "eval" / "eval_confusion.png"),
        (kib, ["report", str(run_dir), "--out", str(out / "r.html"), "--gradcams", "0"], out / "r.html"),
        (kib, ["summary", "resnet18", "--csv", str(out / "x.csv")], out / "x.csv"),
        (kib, ["explain", "filters", str(run_dir), "--out", str(out / "f.png")], out / "f.png"),
    ]
    proc = subprocess.run([sys.executable, "-c", FULL_DISK_DRIVER, json.dumps([[c[0], c[1]] for c in cases])],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path, env=ENV)
    assert proc.returncode == 0, proc.stderr
    for (code, err), (_, argv, named) in zip(json.loads(proc.stdout), cases):
        assert code == 2, (argv, err)
        assert one_error_line(err) == (f"convkit: error: {named}: file too large (the disk is full or a file-size "
                                       "limit was reached)"), argv
        assert not named.exists(), named  # the file is whole or absent, never cut short
    assert not leftovers(tmp_path) and not leftovers(run_dir)
    assert {p.name: sha(p) for p in run_dir.iterdir() if p.is_file()} == before  # reading verbs changed nothing


def test_a_disk_that_fills_mid_run_keeps_the_previous_resume_file(capsys, tmp_path, monkeypatch):
    import convkit.models.weights as weights

    real_save, calls, kept = weights.save_file, [], {}
    run_dir = tmp_path / "runs" / "full"

    def save_file(tensors, path, metadata=None):  # the disk fills while the second resume file is written
        if Path(path).name.startswith(".resume.safetensors."):
            calls.append(path)
            if len(calls) == 2:
                kept["sha"] = sha(run_dir / "resume.safetensors")
                real_save(tensors, path, metadata=metadata)
                with open(path, "r+b") as f:
                    f.truncate(os.path.getsize(path) // 2)
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # as write() reports it: no file name
        return real_save(tensors, path, metadata=metadata)

    monkeypatch.setattr(weights, "save_file", save_file)
    argv = ["train", *QUICK, "--epochs", "2", "--runs-dir", tmp_path / "runs", "--name", "full"]
    code, _, err = run(capsys, *argv)
    assert code == 2
    assert one_error_line(err) == (f"convkit: error: {run_dir / 'resume.safetensors'}: no space left on device "
                                   "(free some space, or write elsewhere)")
    assert sha(run_dir / "resume.safetensors") == kept["sha"] and not leftovers(run_dir)
    _, meta = load_state(run_dir / "resume.safetensors")  # whole: it loads
    monkeypatch.undo()  # space freed: the run continues from its first epoch and finishes
    code, out, _ = run(capsys, "train", "--resume", run_dir)
    assert code == 0 and "test accuracy" in out
    assert (run_dir / "metrics.csv").read_text().count("\n") == 3  # header and both epochs


def test_debug_shows_the_traceback_and_programming_errors_are_not_swallowed(capsys, tmp_path, monkeypatch):
    blocker = tmp_path / "afile"
    blocker.write_text("")
    with pytest.raises(NotADirectoryError):
        main(["--debug", "summary", "fastcnn", "--csv", str(blocker / "x.csv")])

    def broken(path, text):
        raise TypeError("a bug, not a user error")

    monkeypatch.setattr("convkit.utils.atomic_write_text", broken)
    with pytest.raises(TypeError, match="a bug"):
        main(["summary", "fastcnn", "--csv", str(tmp_path / "x.csv")])


# --- run folders that dead-end --------------------------------------------------------------------------------

def kill_before_first_checkpoint(root: Path, name: str) -> Path:
    """Starts a real run and kills it (SIGKILL) as soon as its config.yaml appears, long before its epoch ends."""
    run_dir = root / "runs" / name
    proc = subprocess.Popen([sys.executable, "-m", "convkit", "train", "--epochs", "1", "--limit", "1500",
                             "--test-limit", "64", "--threads", "1", "--quiet", "--runs-dir", "runs", "--name", name],
                            cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV)
    deadline = time.monotonic() + 120
    while not (run_dir / "config.yaml").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert not (run_dir / "resume.safetensors").exists(), "killed too late: 1,500 images take seconds an epoch"
    (run_dir / ".resume.safetensors.k1ll3d.tmp").write_bytes(b"half a checkpoint")  # as a kill mid-save leaves
    assert sorted(p.name for p in run_dir.iterdir()) == [".resume.safetensors.k1ll3d.tmp", "config.yaml"]
    return run_dir


def test_a_run_killed_before_its_first_checkpoint_resumes_from_the_start(capsys, tmp_path):
    run_dir = kill_before_first_checkpoint(tmp_path, "early")
    code, out, _ = run(capsys, "train", "--resume", run_dir)
    assert code == 0
    assert f"note: {run_dir}: the run stopped before its first checkpoint; starting it from the beginning" in out
    assert f"note: {run_dir}: removed 1 orphan temporary file" in out
    assert not leftovers(run_dir) and (run_dir / "resume.safetensors").is_file()
    rows = (run_dir / "metrics.csv").read_text().splitlines()
    assert len(rows) == 2  # one epoch, trained once
    # nothing lost: the same weights as a run of that config that was never killed (CPU, one thread, seeded)
    config = TrainConfig.from_yaml(run_dir / "config.yaml")
    assert main(["train", "--config", str(run_dir / "config.yaml"), "--name", "again", "--runs-dir",
                 str(tmp_path / "runs")]) == 0 and config.limit == 1500
    fresh, restarted = load_file(str(tmp_path / "runs" / "again" / "last.safetensors")), load_file(
        str(run_dir / "last.safetensors"))
    assert fresh.keys() == restarted.keys() and all(torch.equal(fresh[k], restarted[k]) for k in fresh)


def test_the_name_of_a_run_that_never_saved_can_be_reused(capsys, tmp_path):
    run_dir = tmp_path / "runs" / "reuse"
    run_dir.mkdir(parents=True)
    TrainConfig(name="reuse").to_yaml(run_dir / "config.yaml")  # what the trainer writes before its first epoch
    for orphan in (".resume.safetensors.a1.tmp", ".last.safetensors.b2.tmp"):
        (run_dir / orphan).write_bytes(b"\0" * 100)
    code, out, _ = run(capsys, "train", *QUICK, "--runs-dir", tmp_path / "runs", "--name", "reuse")
    assert code == 0
    assert (f"note: {run_dir}: held only the config of a run stopped before its first checkpoint; starting the new "
            "run there (2 orphan temporary files removed)") in out
    assert TrainConfig.from_yaml(run_dir / "config.yaml").limit == 128  # the new run's config
    assert not leftovers(run_dir) and (run_dir / "best.safetensors").is_file()
    # a folder that holds a run that saved is still refused
    code, _, err = run(capsys, "train", *QUICK, "--runs-dir", tmp_path / "runs", "--name", "reuse")
    assert code == 2 and f"{run_dir} already holds a run" in one_error_line(err)


def test_resume_of_a_folder_with_weights_but_no_state_says_how_to_go_on(tiny_run, capsys, tmp_path):
    run_dir = tmp_path / "runs" / "halfway"
    run_dir.mkdir(parents=True)
    for name in ("config.yaml", "best.safetensors", "last.safetensors"):  # the disk filled at resume.safetensors
        (run_dir / name).write_bytes((tiny_run[0] / name).read_bytes())
    code, _, err = run(capsys, "train", "--resume", run_dir)
    line = one_error_line(err)
    assert code == 2 and "no resume.safetensors here (only best.safetensors, last.safetensors)" in line
    assert f"convkit train --config {run_dir / 'config.yaml'} --name NEW_NAME" in line
    assert (run_dir / "best.safetensors").read_bytes() == (tiny_run[0] / "best.safetensors").read_bytes()


def test_orphans_are_removed_when_a_run_resumes(tiny_run, capsys, tmp_path):
    run_dir = tmp_path / "tiny"
    run_dir.mkdir()
    for path in tiny_run[0].iterdir():
        if path.is_file():
            (run_dir / path.name).write_bytes(path.read_bytes())
    for orphan in (".resume.safetensors.x1.tmp", ".metrics.csv.y2.tmp", ".curves.png.z3.tmp"):
        (run_dir / orphan).write_bytes(b"partial")
    code, out, _ = run(capsys, "train", "--resume", run_dir)  # finished: nothing to train, but the run starts
    assert code == 0 and f"note: {run_dir}: removed 3 orphan temporary files of writes cut short" in out
    assert not leftovers(run_dir)


# --- permissions ----------------------------------------------------------------------------------------------

UMASK_DRIVER = textwrap.dedent("""
    import os, sys
    os.umask(int(sys.argv[1], 8))
    from convkit.cli.main import main
    from convkit.train.runfolder import write_metrics
    assert main(["summary", "fastcnn", "--csv", "x.csv"]) == 0
    write_metrics("metrics.csv", [{"epoch": 1, "train_loss": 0.5}])
""")


@pytest.mark.parametrize("umask, mode", [("022", 0o644), ("077", 0o600)])
def test_written_files_follow_the_umask(umask, mode, tmp_path):
    proc = subprocess.run([sys.executable, "-c", UMASK_DRIVER, umask], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120, env=ENV)
    assert proc.returncode == 0, proc.stderr
    for name in ("x.csv", "metrics.csv"):
        assert (tmp_path / name).stat().st_mode & 0o777 == mode, name


# --- a model that cannot take the data, or does not fit in memory ----------------------------------------------

def test_a_model_that_cannot_take_the_images_is_refused_before_any_work(tmp_path, capsys, monkeypatch):
    # LeNet-5 was made for 32x32; Fashion-MNIST (the default data) is 28x28: its last 5x5 conv meets a 4x4 map
    monkeypatch.chdir(tmp_path)
    code = main(["train", "lenet5", "--limit", "100", "--epochs", "1", "--name", "l5", "-q"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert err.startswith("convkit: error: lenet5 cannot take the data's 1x28x28 images; it was made for 1x32x32 "
                          "inputs: layer features.c5 (input shape 16x4x4): kernel 5 is larger than the padded input 4")
    assert not (tmp_path / "runs" / "l5").exists()


def test_running_out_of_memory_while_training_is_one_line(tmp_path):
    # 108M weights fit the cap; Adam's gradients and two moments (three more copies) do not
    data = tmp_path / "data"
    for c in ("cat", "dog"):
        (data / c).mkdir(parents=True)
        for i in range(6):
            Image.new("RGB", (16, 16), (40 * i, 100, 0 if c == "cat" else 200)).save(data / c / f"{i}.png")
    (tmp_path / "wide.yaml").write_text("input: [3, 16, 16]\nlayers: [FC-10000, FC-10000, FC-2]\n")

    def cap():
        import resource
        limit = 3_600_000_000 + 1_500_000_000  # what importing torch and convkit maps, plus about 1.5 GB
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    result = subprocess.run([sys.executable, "-m", "convkit", "train", "wide.yaml", "--data", "data", "--epochs", "1",
                             "--optimizer", "adam", "--name", "wide", "-q"], cwd=tmp_path, env=ENV,
                            capture_output=True, text=True, timeout=300, preexec_fn=cap)
    assert result.returncode == 2, result.stderr[-2000:]
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("convkit: error: out of memory (") and "smaller --batch-size" in line
    assert "Traceback" not in result.stderr


def test_a_closed_pipe_ends_quietly():
    """`convkit summary resnet152 | head -1`: the reader goes away; no "Broken pipe" error, no traceback."""
    proc = subprocess.Popen([sys.executable, "-m", "convkit", "summary", "resnet152"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    proc.stdout.close()  # the reader is gone before the first write
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141
    assert "Broken pipe" not in err and "Traceback" not in err and "error" not in err, err
