"""benchmarks/bench_detect.py, run in-process on tiny settings: the JSON it prints and writes has its layout."""

import json
import math

import pytest
from helpers import fraction, load_benchmark


@pytest.mark.slow  # 15-30 s on 2 shared cores: six tiny Faster R-CNN and YOLO steps, imports, evaluations
def test_bench_detect_smoke(tmp_path, capsys):
    out = tmp_path / "r" / "detect.json"
    result = load_benchmark("bench_detect").main(["--minutes", "0.001", "--detectors", "yolo", "--probe-steps", "1",
                                                  "--speed-steps", "1", "--limit", "16", "--test-limit", "8", "--batch", "8", "--out", str(out)])
    assert json.loads(capsys.readouterr().out) == json.loads(out.read_text()) == json.loads(json.dumps(result))
    for key in ("args", "threads", "torch", "torchvision", "cpu", "machine", "data", "detectors", "fasterrcnn_speed",
                "wall_seconds"):
        assert key in result, key
    assert len(result["machine"]["load_before"]) == len(result["machine"]["load_after"]) == 3
    assert result["data"]["train"] == 16 and result["data"]["val"] == 8
    yolo = result["detectors"]["yolo"]
    assert yolo["epochs"] == 1 and yolo["probe"]["steps"] == 1 and yolo["epochs_done"] == yolo["epochs"] == len(yolo["history"])
    assert yolo["probe"]["images_per_s"] > 0 and yolo["train_images"] == 16 and yolo["val_images"] == 8
    for part in ("final", "best"):
        assert fraction(yolo[part]["map50"]) and fraction(yolo[part]["map"]), yolo[part]
    assert fraction(yolo["max_map50"])
    for row in yolo["history"]:
        assert set(row) >= {"epoch", "elapsed_s", "train_s", "wall_s", "test_map50", "test_map"}
        assert fraction(row["test_map50"]) and fraction(row["test_map"])
        assert 0 < row["train_s"] <= row["wall_s"]
    assert yolo["seconds"]["wall"] >= yolo["seconds"]["fit_wall"] > 0
    coco = yolo["evaluate_detector"]["coco"]
    assert len([k for k in coco if k.startswith(("AP", "AR"))]) == 12 and yolo["evaluate_detector"]["images"] == 8
    assert math.isclose(coco["AP"], yolo["best"]["map"], abs_tol=1e-3)  # the best checkpoint, scored again
    speed = result["fasterrcnn_speed"]
    assert speed["plain_torch"]["steps"] == speed["convkit"]["steps"] == 1
    assert speed["plain_torch"]["images_per_s"] > 0 and speed["convkit"]["images_per_s"] > 0
    assert speed["ratio_convkit_over_plain"] > 0
