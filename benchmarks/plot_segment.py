"""docs/segment_benchmark.png: mIoU over wall-clock time of convkit's segmenters and the peer (bench_segment.py's
JSON), all on the same 300 held-out scenes, scored by the same confusion matrix; the convolutionized classifier
(no segmentation training) as a level line.

Usage:
    python benchmarks/plot_segment.py [--results benchmarks/results/segment_epyc.json] [--out docs/segment_benchmark.png]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _options(run: dict) -> str:
    options = run.get("options") or {}
    return f" ({', '.join(f'{k} {v}' for k, v in options.items())})" if options else ""


def main(argv=None) -> Path:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--results", default=str(ROOT / "benchmarks/results/segment_epyc.json"))
    p.add_argument("--out", default=str(ROOT / "docs/segment_benchmark.png"))
    args = p.parse_args(argv)
    from matplotlib.figure import Figure

    results = json.loads(Path(args.results).read_text())
    fig = Figure(figsize=(10, 4))
    axes = fig.subplots(1, 2)
    for ax, key, label in ((axes[0], "miou", "mIoU"), (axes[1], "pixel_accuracy", "pixel accuracy")):
        for run in results["models"]:
            h = run["history"]
            ax.plot([0] + [r["wall_s"] for r in h], [0] + [100 * r[key] for r in h], "-o", ms=3,
                    label=f"convkit {run['model']}{_options(run)} ({run['parameters']:,} params)")
        if "peer" in results:
            h = results["peer"]["history"]
            ax.plot([0] + [r["wall_s"] for r in h], [0] + [100 * r[key] for r in h], "k-*", ms=8,
                    label=f"peer: smp {results['peer']['model'].split()[1].rstrip(',')}) "
                          f"({results['peer']['parameters']:,} params)")
        conv = results.get("convolutionized")
        if conv and conv.get(key) is not None:
            ax.axhline(100 * conv[key], color="tab:red", ls="--", lw=1,
                       label="convolutionized fastcnn, no segmentation training")
        ax.axvline(60 * results["budget_minutes"], color="grey", ls=":", lw=1)
        ax.set(xlabel="wall-clock seconds (2 CPU cores)", ylabel=f"{label} (%)", title=f"validation {label}",
               ylim=(0, 100))
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7, loc="upper left")
    fig.suptitle("segmenters on the built-in scenes (2,000 training, 300 held-out; 96x96, 11 classes)")
    fig.tight_layout()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    return out


if __name__ == "__main__":
    print(main())
