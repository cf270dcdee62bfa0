"""benchmarks/bench_segment.py, run in-process on tiny settings: the JSON it prints and writes has its layout."""

import json

import pytest
from helpers import fraction, load_benchmark


@pytest.mark.slow  # 20-40 s on 2 shared cores: tiny FCN and smp steps, a one-epoch classifier, evaluations
def test_bench_segment_smoke(tmp_path, capsys):
    out, demo = tmp_path / "r" / "segment.json", tmp_path / "demo.png"
    result = load_benchmark("bench_segment").main(["--minutes", "0.001", "--models", "fcn8s", "--probe-steps", "1", "--speed-steps", "1",
                            "--classifier-epochs", "1", "--classifier-data", "default", "--limit", "16",
                            "--test-limit", "8", "--batch", "8", "--out", str(out), "--demo", str(demo)])
    assert json.loads(capsys.readouterr().out) == json.loads(out.read_text()) == json.loads(json.dumps(result))
    assert result["data"]["train"] == 16 and result["data"]["val"] == 8 and result["data"]["classes"] == 11
    fcn = result["models"][0]
    assert fcn["model"] == "fcn8s" and fcn["epochs"] == len(fcn["history"]) == 1
    assert fraction(fcn["best"]["miou"]) and fcn["probe"]["images_per_s"] > 0
    conv = result["convolutionized"]
    assert conv["stride"] == 4 and fraction(conv["miou"]) and demo.is_file()
    assert conv["foreground_pixel_agreement"] == 1.0  # the scenes' background is exactly black
    peer = result["peer"]
    assert peer["steps"] >= 1 and fraction(peer["final"]["miou"])
    assert result["speed"]["plain_loop_images_per_s"] > 0 and result["speed"]["engine_images_per_s"] > 0
