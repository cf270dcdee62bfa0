"""Exact resume: a real `convkit train` process is killed (SIGKILL, SIGINT) and resumed; the final weights
must equal, byte for byte, those of a run that was never interrupted (CPU, one thread)."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

CLI = [sys.executable, "-m", "convkit"]  # the other test_train_* files run the command through this
# 2,048 images x 3 epochs of batch 64: long enough (a few seconds) to be killed mid-run, short enough for CI.
ARGS = ["train", "--limit", "2048", "--test-limit", "200", "--epochs", "3", "--batch-size", "64", "--threads", "1",
        "--checkpoint-every", "7", "--quiet", "--model-arg", "widths=[8,16,32]", "--augment",
        "horizontal_flip=1,crop_padding=2", "--ema", "0.9"]


def run_cli(*argv, cwd):
    return subprocess.run([*CLI, *argv], cwd=cwd, capture_output=True, text=True, timeout=300)


def weights(path: Path) -> dict[str, bytes]:
    return {k: v.numpy().tobytes() for k, v in load_file(str(path)).items()}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")
    result = run_cli(*ARGS, "--runs-dir", "runs", "--name", "reference", cwd=root)
    assert result.returncode == 0, result.stderr
    return root, root / "runs" / "reference"


def start_and_wait_for_checkpoint(root: Path, name: str) -> subprocess.Popen:
    proc = subprocess.Popen([*CLI, *ARGS, "--runs-dir", "runs", "--name", name], cwd=root,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    state = root / "runs" / name / "resume.safetensors"
    deadline = time.monotonic() + 120
    while not state.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.02)
    return proc


def test_sigkill_then_resume_gives_bit_identical_weights(reference):
    root, ref = reference
    proc = start_and_wait_for_checkpoint(root, "killed")
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    run = root / "runs" / "killed"
    assert not (run / "metrics.csv").exists() or len((run / "metrics.csv").read_text().splitlines()) < 4, \
        "the run finished before it was killed; the test proves nothing"
    result = run_cli("train", "--resume", str(run), "--quiet", cwd=root)
    assert result.returncode == 0, result.stderr
    assert weights(run / "last.safetensors") == weights(ref / "last.safetensors")
    assert weights(run / "best.safetensors") == weights(ref / "best.safetensors")
    assert (run / "metrics.csv").read_text().splitlines()[0] == (ref / "metrics.csv").read_text().splitlines()[0]
    assert len((run / "metrics.csv").read_text().splitlines()) == 1 + 3
    assert (run / "curves.png").exists() and (run / "confusion.png").exists()


def test_sigint_saves_says_how_to_resume_and_resumes_bit_identical(reference):
    root, ref = reference
    proc = start_and_wait_for_checkpoint(root, "interrupted")
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    run = root / "runs" / "interrupted"
    assert proc.returncode == 128 + signal.SIGINT, err
    assert f"--resume {Path('runs') / 'interrupted'}" in out + err
    result = run_cli("train", "--resume", str(run), "--quiet", cwd=root)
    assert result.returncode == 0, result.stderr
    assert weights(run / "last.safetensors") == weights(ref / "last.safetensors")
    ref_rows = [r.split(",")[:6] for r in (ref / "metrics.csv").read_text().splitlines()]
    assert [r.split(",")[:6] for r in (run / "metrics.csv").read_text().splitlines()] == ref_rows  # same losses


def test_resume_refuses_to_change_the_recipe(reference):
    root, ref = reference
    result = run_cli("train", "--resume", str(ref), "--lr", "0.5", cwd=root)
    assert result.returncode == 2 and "--resume" in result.stderr and "lr" in result.stderr


def test_a_run_folder_is_never_overwritten(reference):
    root, _ = reference
    result = run_cli(*ARGS, "--runs-dir", "runs", "--name", "reference", cwd=root)
    assert result.returncode == 2 and "already holds a run" in result.stderr and "--resume" in result.stderr
    assert os.path.exists(root / "runs" / "reference" / "best.safetensors")
