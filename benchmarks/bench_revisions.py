"""Runs one benchmark against two revisions of convkit in the same run, alternating, and compares every figure.

For refactors that must not change speed or results: the benchmark script of the working tree is run with
`PYTHONPATH` pointing at the base revision's `src/` (exported with `git archive`, nothing checked out) and at
the working tree's `src/`, in alternating order (base, new, new, base, ...), so that both see the same machine
load. Every number in the benchmark's JSON is collected per side; the report gives each figure's median per side
and the ratio new / base. Run-dependent fields (load averages, timestamps) are left out.

Usage:
    python benchmarks/bench_revisions.py --base 18cd7b0 --rounds 2 -- bench_train_throughput.py --threads 2
    python benchmarks/bench_revisions.py --base 18cd7b0 -- bench_train_fashion.py --skip-baseline --long-epochs 0

Prints one JSON object: {"base", "new", "rounds", "figures": {"path.to.figure": {"base", "new", "ratio",
"base_runs", "new_runs"}}}: medians, their ratio, and every run's value in the order run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SKIP = ("loadavg", "machine", "seconds_since", "cpu_count")


def export_src(rev: str, into: Path) -> Path:
    """The `src/` folder of revision `rev`, unpacked under `into` (via `git archive`; the checkout is untouched)."""
    archive = into / "src.tar"
    with open(archive, "wb") as f:
        subprocess.run(["git", "-C", str(ROOT), "archive", rev, "src"], stdout=f, check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(into, filter="data")
    return into / "src"


def numbers(obj, prefix: str = "") -> dict[str, float]:
    """Every int/float leaf of a JSON value, keyed by its dotted path (lists by index)."""
    out: dict[str, float] = {}
    if isinstance(obj, dict):
        for k, v in obj.items():
            if not any(s in str(k) for s in SKIP):
                out.update(numbers(v, f"{prefix}{k}."))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out.update(numbers(v, f"{prefix}{i}."))
    elif isinstance(obj, int | float) and not isinstance(obj, bool):
        out[prefix.rstrip(".")] = float(obj)
    return out


def run_once(src: Path, bench: list[str]) -> dict:
    env = {**os.environ, "PYTHONPATH": str(src)}
    script = ROOT / "benchmarks" / bench[0]
    result = subprocess.run([sys.executable, str(script), *bench[1:]], env=env, capture_output=True, text=True,
                            cwd=ROOT)
    if result.returncode != 0:
        raise SystemExit(f"{bench[0]} failed with {src}:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout[result.stdout.index("{"):])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", required=True, help="the git revision to compare with (e.g. main, a commit)")
    parser.add_argument("--rounds", type=int, default=2, help="runs of each side (alternating)")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    parser.add_argument("bench", nargs=argparse.REMAINDER, help="-- SCRIPT [ARGS...] from benchmarks/")
    args = parser.parse_args()
    bench = args.bench[1:] if args.bench[:1] == ["--"] else args.bench
    if not bench:
        parser.error("name the benchmark script after --")
    with tempfile.TemporaryDirectory() as tmp:
        sides = {"base": export_src(args.base, Path(tmp)), "new": ROOT / "src"}
        runs: dict[str, list[dict]] = {"base": [], "new": []}
        for r in range(args.rounds):
            order = ("base", "new") if r % 2 == 0 else ("new", "base")
            for side in order:
                print(f"round {r + 1}/{args.rounds}: {side}", file=sys.stderr, flush=True)
                runs[side].append(numbers(run_once(sides[side], bench)))
    keys = sorted(set(runs["base"][0]) & set(runs["new"][0]))
    figures = {}
    for key in keys:
        base_runs = [run[key] for run in runs["base"] if key in run]
        new_runs = [run[key] for run in runs["new"] if key in run]
        base, new = statistics.median(base_runs), statistics.median(new_runs)
        figures[key] = {"base": base, "new": new, "ratio": round(new / base, 4) if base else None,
                        "base_runs": base_runs, "new_runs": new_runs}
    report = {"benchmark": bench, "base": args.base, "new": "working tree", "rounds": args.rounds,
              "loadavg_after": [round(x, 2) for x in os.getloadavg()], "figures": figures}
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
