"""The train, evaluate, predict and lr-find verbs: help with examples, the built-in default run, lr-find."""

import json
import re
import subprocess

import pytest
from PIL import Image
from test_train_resume import CLI

from convkit.train import TrainConfig

# Every verb's --help and its examples: tests/test_cli.py::test_every_help_shows_an_example.


def test_the_default_recipe_is_fastcnn_on_the_shipped_subset():
    cfg = TrainConfig()
    assert (cfg.model, cfg.data, cfg.test_data, cfg.limit) == ("fastcnn", "default", None, None)


def test_default_training_run_reports_accuracy_and_its_folder(tmp_path):
    # `convkit train` with a shorter schedule on part of the shipped data, one thread (CI machines are shared)
    result = subprocess.run([*CLI, "train", "--epochs", "3", "--limit", "2000", "--test-limit", "500", "--threads",
                             "1", "--quiet"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    accuracy = float(re.search(r"test accuracy ([\d.]+)%", result.stdout).group(1))
    assert accuracy > 70
    folder = re.search(r"run folder: (\S+)", result.stdout).group(1)
    assert (tmp_path / folder / "best.safetensors").is_file() and (tmp_path / folder / "curves.png").is_file()
    assert len(re.findall(r"^epoch \d/3 ", result.stdout, re.M)) == 3  # quiet: one line per epoch
    # predicting with it: a bright trouser-shaped image comes back with ten classes
    image = tmp_path / "x.png"
    Image.new("L", (28, 28), 0).save(image)
    out = subprocess.run([*CLI, "predict", str(tmp_path / folder), str(image), "--top", "10", "--json"],
                         capture_output=True, text=True, timeout=120)
    rows = json.loads(out.stdout)
    assert out.returncode == 0 and len(rows[0]["predictions"]) == 10
    assert sum(p["probability"] for p in rows[0]["predictions"]) == pytest.approx(1, abs=1e-4)


def test_lr_find_suggests_a_rate_in_the_swept_range(tmp_path):
    result = subprocess.run([*CLI, "lr-find", "--limit", "1000", "--threads", "1", "--steps", "30", "--start",
                             "1e-5", "--end", "1", "--out", str(tmp_path / "lr.png"), "--json"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert 1e-5 <= report["suggestion"] <= 1 and len(report["lrs"]) == len(report["losses"]) <= 30
    assert (tmp_path / "lr.png").stat().st_size > 1000


def test_bad_options_are_usage_errors(tmp_path):
    result = subprocess.run([*CLI, "train", "--augment", "flip=1", "--runs-dir", str(tmp_path)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "unknown augmentation 'flip'" in result.stderr
    result = subprocess.run([*CLI, "train", "--resume", str(tmp_path / "nothing")], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 2 and "no resume.safetensors" in result.stderr
