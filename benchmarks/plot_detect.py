"""docs/detect_benchmark.png: mAP over wall-clock time of convkit's detectors (bench_detect.py's JSON) beside the
peer's final figures (bench_detect_peer.py's JSON), both on the same 300 held-out scenes, scored by pycocotools.

Usage:
    python benchmarks/plot_detect.py [--convkit benchmarks/results/detect_convkit_epyc.json]
                                     [--peer benchmarks/results/detect_peer_yolov8n_epyc.json]
                                     [--out docs/detect_benchmark.png]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> Path:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--convkit", default=str(ROOT / "benchmarks/results/detect_convkit_epyc.json"))
    p.add_argument("--peer", default=str(ROOT / "benchmarks/results/detect_peer_yolov8n_epyc.json"))
    p.add_argument("--out", default=str(ROOT / "docs/detect_benchmark.png"))
    args = p.parse_args(argv)
    from matplotlib.figure import Figure

    ours = json.loads(Path(args.convkit).read_text())
    peer = json.loads(Path(args.peer).read_text())
    fig = Figure(figsize=(10, 4))
    axes = fig.subplots(1, 2)
    for ax, key, peer_key, label in ((axes[0], "test_map50", "mAP50", "mAP@0.5"),
                                     (axes[1], "test_map", "mAP50-95", "mAP@[.5:.95]")):
        for kind, run in ours["detectors"].items():
            history = run["history"]
            ax.plot([0] + [h["wall_s"] for h in history], [0] + [100 * h[key] for h in history], "-o", ms=3,
                    label=f"convkit {kind} ({run['parameters']:,} params)")
        ax.plot([peer["training"]["seconds_whole_call"]], [100 * peer["convkit_metrics"][peer_key]], "k*", ms=12,
                label="Ultralytics YOLOv8n, 5 min (pycocotools)")
        ax.axvline(300, color="grey", ls=":", lw=1)
        ax.set(xlabel="wall-clock seconds (2 CPU cores)", ylabel=f"{label} (%)", title=f"validation {label}",
               ylim=(0, 100))
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7, loc="upper left")
    fig.suptitle("detectors on the built-in scenes (2,000 training, 300 held-out; 96x96), 5-minute budget")
    fig.tight_layout()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    return out


if __name__ == "__main__":
    print(main())
