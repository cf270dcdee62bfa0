"""A few hundred generated malformed inputs through convkit's readers: no traceback, no hang, bounded memory.

The generator and the readers it feeds live in tests/fuzz_inputs.py (runnable by hand to reproduce a case).
Each kind runs in its own process under an address-space cap (torch alone maps about 3.3 GiB of it) and a
wall-clock limit, so an input that makes a reader allocate gigabytes or loop for ever fails the test instead of
the machine. Every input must either be read or refused with a ConvkitError of one bounded line.
"""

import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest

DRIVER = Path(__file__).with_name("fuzz_inputs.py")
ADDRESS_SPACE = int(4.5 * 2**30)  # bytes: torch's mappings plus about 1 GiB for the readers
COUNTS = {"configs": 120, "images": 120, "csvs": 120, "model-files": 120, "checkpoints": 120}


def _cap_memory():
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))


@pytest.mark.parametrize("kind", sorted(COUNTS))
def test_malformed_inputs_are_read_or_refused_in_one_line(kind, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    result = subprocess.run([sys.executable, str(DRIVER), kind, "--seed", "0", "--count", str(COUNTS[kind]),
                             "--dir", str(tmp_path), "--seconds", "20"],
                            capture_output=True, text=True, timeout=300, preexec_fn=_cap_memory, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["count"] >= COUNTS[kind]
    assert report["refused"] > 0 and report["ok"] > 0  # the generator reaches both outcomes: it tests something
    assert report["failures"] == [], json.dumps(report["failures"], indent=1)[:6000]
