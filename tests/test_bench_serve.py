"""benchmarks/bench_serve.py --quick: both servers answer, and the JSON it prints and writes has its layout."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow  # 30-50 s on 2 shared cores: a one-epoch fastcnn, two server processes, 2 x 16 requests each
def test_bench_serve_quick(tmp_path):
    out = tmp_path / "serve.json"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_serve.py"), "--quick", "--out", str(out)],
                          capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout)
    assert result == json.loads(out.read_text())
    for name in ("convkit", "naive"):
        rows = result["servers"][name]
        assert [r["clients"] for r in rows] == [1, 8]
        assert all(r["errors"] == 0 and r["requests"] > 0 and r["p99_ms"] >= r["p50_ms"] > 0 for r in rows)
    assert result["convkit_stats"]["requests"] >= result["convkit_stats"]["batches"] > 0
    assert result["ratio_at_8_clients"] > 0
    for batch in ("batch1", "batch32"):
        assert result["forward"][batch]["max_logit_diff"] < 1e-3 and result["forward"][batch]["eager_ms"] > 0
