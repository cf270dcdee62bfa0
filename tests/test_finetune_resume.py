"""Exact resume of a fine-tuning run (issue 12): a real `convkit finetune` process is killed (SIGKILL) in its head
phase, at the boundary between phases and in its fine-tuning phase, then resumed; its final weights must equal,
byte for byte, those of a run that was never interrupted (CPU, one thread)."""

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from test_train_resume import CLI, run_cli, weights  # the same process runner and byte comparison

import convkit
from convkit.models.weights import read_meta

pytestmark = pytest.mark.slow  # real processes, under a minute

# 768 digits in batches of 64: 12 steps an epoch; one head epoch, then one of fine-tuning; a checkpoint every
# 4 steps besides the epoch ends; augmentation and an EMA so every piece of state matters.
STEPS = 12
ARGS = ["--data", "digits", "--strategy", "finetune", "--limit", "768", "--test-limit", "100", "--epochs", "2",
        "--head-epochs", "1", "--batch-size", "64", "--threads", "1", "--checkpoint-every", "4", "--quiet",
        "--augment", "crop_padding=2", "--ema", "0.9", "--lr-decay", "0.5"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    root = tmp_path_factory.mktemp("ft_resume")
    convkit.train(limit=512, test_limit=100, epochs=1, quiet=True, model_kwargs={"widths": [8, 16, 32]},
                  runs_dir=root / "runs", name="src")  # the source, trained here (its bytes do not matter)
    result = run_cli("finetune", "runs/src", *ARGS, "--runs-dir", "runs", "--name", "reference", cwd=root)
    assert result.returncode == 0, result.stderr
    return root, root / "runs" / "reference"


def kill_when(root: Path, argv: list[str], run: Path, wanted) -> dict:
    """Runs ``convkit argv`` and SIGKILLs it as soon as its resume.safetensors says ``wanted(epoch, step)``."""
    proc = subprocess.Popen([*CLI, *argv], cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    state = run / "resume.safetensors"
    deadline = time.monotonic() + 120
    try:
        while True:
            assert proc.poll() is None, f"the run ended before the kill point: {proc.communicate()[1][-2000:]}"
            assert time.monotonic() < deadline, "the kill point never came"
            if state.exists():
                meta = read_meta(state)  # written atomically: a whole file or the previous one
                if wanted(meta["epoch"], meta["step"]):
                    os.kill(proc.pid, signal.SIGKILL)
                    proc.communicate()
                    return meta
            time.sleep(0.003)
    finally:
        if proc.poll() is None:
            proc.kill()


def test_killed_in_each_phase_and_between_them_resumes_bit_identical(reference):
    """One run killed three times: in its head phase, at the boundary, in its fine-tuning phase; resumed each
    time (by `convkit finetune --resume`, then by `convkit train --resume`, which knows a fine-tuning run)."""
    root, ref = reference
    run = root / "runs" / "killed"
    points = [("head", lambda epoch, step: epoch == 0 and 0 < step < STEPS, "head"),
              ("boundary", lambda epoch, step: epoch == 1 and step == STEPS, "head"),
              ("finetune", lambda epoch, step: epoch == 1 and STEPS < step < 2 * STEPS, "finetune")]
    argv = ["finetune", "runs/src", *ARGS, "--runs-dir", "runs", "--name", "killed"]
    for i, (where, wanted, phase) in enumerate(points):
        meta = kill_when(root, argv, run, wanted)
        saved = read_meta(run / "resume.safetensors")  # the state the resume starts from: the kill point's
        assert wanted(saved["epoch"], saved["step"]), f"the run moved past the {where} point before it was killed"
        assert meta["finetune"]["phase"] == phase
        argv = ["finetune" if i % 2 == 0 else "train", "--resume", str(run), "--quiet"]
    result = run_cli(*argv, cwd=root)
    assert result.returncode == 0, result.stderr
    assert weights(run / "last.safetensors") == weights(ref / "last.safetensors")
    assert weights(run / "best.safetensors") == weights(ref / "best.safetensors")
    assert (run / "metrics.csv").read_text().splitlines()[0] == (ref / "metrics.csv").read_text().splitlines()[0]
    ours, theirs = (json.loads((r / "finetune.json").read_text()) for r in (run, ref))
    assert ours["phases"] == theirs["phases"]
    assert [r["lrs"] for r in ours["lr_per_epoch"]] == [r["lrs"] for r in theirs["lr_per_epoch"]]
    assert [r["epoch"] for r in ours["lr_per_epoch"]] == [1, 2]
