"""Helpers several test files share (imported as ``from helpers import ...``; pytest puts tests/ on the path)."""

import importlib.util
import subprocess
import sys
from pathlib import Path

from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[1]


def load_benchmark(name: str):
    """benchmarks/<name>.py as a module, to run its ``main`` in-process."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def fraction(x) -> bool:
    return isinstance(x, float) and 0.0 <= x <= 1.0


def one_and_two_processes(cwd: Path, args: list[str]) -> dict:
    """`convkit *args` under torchrun with 2 processes (``--name two``), then as 1 process (``--name one``), in
    `cwd` with ``--runs-dir runs`` among `args`; each must exit 0.

    Returns:
        ``{"stdout": the 2-process run's stdout, "one"/"two": the last.safetensors weights of each,
        "rows_one"/"rows_two": the lines of each run's metrics.csv}``.
    """
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m",
                          "convkit", *args, "--name", "two"], cwd=cwd, capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stderr[-3000:]
    one = subprocess.run([sys.executable, "-m", "convkit", *args, "--name", "one"], cwd=cwd, capture_output=True,
                         text=True, timeout=300)
    assert one.returncode == 0, one.stderr[-3000:]
    runs = Path(cwd) / "runs"
    return {"stdout": two.stdout, "one": load_file(str(runs / "one" / "last.safetensors")),
            "two": load_file(str(runs / "two" / "last.safetensors")),
            "rows_one": (runs / "one" / "metrics.csv").read_text().splitlines(),
            "rows_two": (runs / "two" / "metrics.csv").read_text().splitlines()}
