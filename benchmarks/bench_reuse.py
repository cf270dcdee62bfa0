"""Does reuse help? From scratch against features, head and finetune, on a second real task (issue 12).

Pre-train: fastcnn on the full Fashion-MNIST (60,000 images, --source-epochs epochs, the default recipe).
Move to: scikit-learn's handwritten digits (1,797 real 8x8 scans upscaled to 28x28: the built-in "digits"
dataset, 1,297 for training, a fixed test part of 500, 50 per digit).

For each training-set size (30, 100, 500, all 1,297: a seeded, class-balanced draw per seed) and each of 3 seeds,
with the same epoch budget and batch for every method, the test accuracy of the LAST epoch (not the best, which
would pick on the test set):

    scratch         `convkit.train(model="fastcnn")`: random weights, every layer trained
    features        `convkit.finetune(source, strategy="features")`: a linear classifier on cached features
    head            `strategy="head"`: a new head on the frozen body, trained on images
    finetune        `strategy="finetune"`: a third of the epochs on the head, then everything at lr / 10
    random features the control: `strategy="features"` on an untrained fastcnn (are the features or the
                    linear probe doing the work?)
    scikit-learn probe  what a user would otherwise do with the same cached features: scikit-learn's
                    LogisticRegression (L-BFGS, C=1, to convergence), no epochs

Then the cost of an epoch on all 1,297 images: a features epoch (the classifier on cached features) against a
finetune epoch (forward and backward through the whole network), and the one-time feature extraction.

Usage:
    python benchmarks/bench_reuse.py [--data ../shared/data/fashion-mnist] [--epochs 15] [--out r.json]
        [--plot reuse.png]

Prints one JSON object (also written to --out) and draws accuracy against training-set size (--plot).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "fashion-mnist"
METHODS = ("scratch", "features", "head", "finetune", "random features", "scikit-learn probe")


def balanced_subset(dataset, size: int, seed: int):
    """`size` training images, as even over the classes as they allow, drawn with `seed`."""
    if size >= len(dataset):
        return dataset
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(dataset), generator=g)
    labels = dataset.labels[order]
    per_class = [order[labels == c] for c in range(dataset.num_classes)]
    picked, i = [], 0
    while len(picked) < size:
        for members in per_class:
            if i < len(members) and len(picked) < size:
                picked.append(int(members[i]))
        i += 1
    return dataset.subset(sorted(picked))


def pretrain(data: Path, epochs: int, runs: Path) -> tuple[Path, dict]:
    import convkit

    started = time.perf_counter()
    result = convkit.train(model="fastcnn", data="fashion-mnist", data_dir=str(data.parent), epochs=epochs,
                           quiet=True, runs_dir=str(runs), name="source")
    return result.run_dir, {"epochs": epochs, "test_acc": result.history[-1]["test_acc"],
                            "seconds": time.perf_counter() - started}


def run(method: str, source: Path, train, test, seed: int, epochs: int, batch: int, runs: Path, cache: Path):
    import convkit

    common = {"data": "digits", "epochs": epochs, "batch_size": batch, "seed": seed, "quiet": True, "runs_dir": str(runs),
              "train_data": train, "test_data": test, "augment": {}}
    started = time.perf_counter()
    if method == "scratch":
        result = convkit.train(model="fastcnn", **common)
    elif method == "random features":
        result = convkit.finetune("fastcnn", strategy="features", features_cache=str(cache), **common)
    elif method == "scikit-learn probe":
        result = sklearn_probe(source, train, test, cache)
    elif method == "finetune":
        result = convkit.finetune(source, strategy="finetune", head_epochs=max(1, epochs // 3), **common)
    else:
        result = convkit.finetune(source, strategy=method, features_cache=str(cache), **common)
    return result, time.perf_counter() - started


class _Probe:
    """The fields of a TrainResult the benchmark reads, for the scikit-learn probe."""

    def __init__(self, accuracy: float):
        self.history = [{"test_acc": accuracy, "epoch_s": 0.0}]
        self.best = {"test_acc": accuracy}


def sklearn_probe(source: Path, train, test, cache: Path) -> _Probe:
    import warnings

    from sklearn.linear_model import LogisticRegression

    import convkit
    from convkit.reuse import cached_features

    model = convkit.resolve_model(source)
    x, y = cached_features(model, None, train, cache, progress=False)
    xt, yt = cached_features(model, None, test, cache, progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf = LogisticRegression(C=1.0, max_iter=5000).fit(x.numpy(), y.numpy())
    return _Probe(float((clf.predict(xt.numpy()) == yt.numpy()).mean()))


def plot(summary: dict, sizes: list[int], path: Path, epochs: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for method in METHODS:
        means = [100 * summary[method][str(n)]["mean"] for n in sizes]
        stds = [100 * summary[method][str(n)]["std"] for n in sizes]
        ax.errorbar(sizes, means, yerr=stds, marker="o", capsize=3, label=method,
                    linestyle="--" if method == "random features" else "-")
    ax.set_xscale("log")
    ax.set_xticks(sizes, [str(n) for n in sizes])
    ax.set_xlabel("training images (digits)")
    ax.set_ylabel("test accuracy, last epoch (%)")
    ax.set_title(f"fastcnn pre-trained on Fashion-MNIST, reused on digits ({epochs} epochs, 3 seeds)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the full Fashion-MNIST (IDX gz)")
    parser.add_argument("--source-epochs", type=int, default=3)
    parser.add_argument("--source", type=Path, help="a run folder to reuse instead of pre-training one")
    parser.add_argument("--epochs", type=int, default=15, help="the budget of every method")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--sizes", type=int, nargs="+", default=[30, 100, 500, 1297])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--plot", type=Path)
    args = parser.parse_args()
    with contextlib.redirect_stdout(sys.stderr):  # the runs' lines go to stderr; stdout is the JSON alone
        out = measure(args)
    text = json.dumps(out, indent=1)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    if args.plot:
        plot(out["summary"], args.sizes, args.plot, args.epochs)


def measure(args) -> dict:
    if args.threads:
        torch.set_num_threads(args.threads)
    from convkit.data import load_dataset

    work = Path(tempfile.mkdtemp(prefix="bench_reuse_"))
    os.environ.setdefault("CONVKIT_CACHE", str(work / "cache"))
    if args.source:
        from convkit.train.runfolder import read_metrics

        rows = read_metrics(args.source / "metrics.csv")
        source, source_info = args.source, {"given": str(args.source), "epochs": len(rows),
                                            "test_acc": rows[-1]["test_acc"],
                                            "seconds": rows[-1]["elapsed_s"]}
    else:
        source, source_info = pretrain(args.data, args.source_epochs, work / "runs")
    print(f"source: {source} {source_info}", file=sys.stderr)
    train_all, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    rows = []
    for size in args.sizes:
        for seed in args.seeds:
            train = balanced_subset(train_all, size, seed)
            for method in METHODS:
                result, seconds = run(method, source, train, test, seed, args.epochs, args.batch_size,
                                      work / "runs", work / "cache")
                row = {"method": method, "size": len(train), "seed": seed, "test_acc": result.history[-1]["test_acc"],
                       "best_acc": result.best["test_acc"], "seconds": seconds,
                       "epoch_s": [r["epoch_s"] for r in result.history]}
                rows.append(row)
                print(json.dumps(row), file=sys.stderr, flush=True)
    summary: dict = {m: {} for m in METHODS}
    for method in METHODS:
        for size in args.sizes:
            accs = [r["test_acc"] for r in rows if r["method"] == method and r["size"] == min(size, len(train_all))]
            summary[method][str(size)] = {"mean": statistics.mean(accs),
                                          "std": statistics.pstdev(accs) if len(accs) > 1 else 0.0, "runs": accs}
    full = [r for r in rows if r["size"] == len(train_all)]

    def median_epoch(method: str, skip: int = 0) -> float:
        return statistics.median(s for r in full if r["method"] == method for s in r["epoch_s"][skip:])

    head_epochs = max(1, args.epochs // 3)
    timing = {"features_epoch_s": median_epoch("features"), "head_epoch_s": median_epoch("head"),
              "finetune_epoch_s (unfrozen phase)": median_epoch("finetune", skip=head_epochs),
              "scratch_epoch_s": median_epoch("scratch"),
              "feature_extraction_s (once, train + test)": None}
    timing["finetune_over_features"] = timing["finetune_epoch_s (unfrozen phase)"] / timing["features_epoch_s"]
    # The one-time extraction: a fresh cache, timed alone.
    import convkit
    from convkit.reuse import cached_features

    model = convkit.resolve_model(source)
    started = time.perf_counter()
    cached_features(model, None, train_all, work / "fresh-cache", progress=False)
    cached_features(model, None, test, work / "fresh-cache", progress=False)
    timing["feature_extraction_s (once, train + test)"] = time.perf_counter() - started
    out = {"machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                       "cpus": os.cpu_count(), "threads": torch.get_num_threads(), "torch": torch.__version__,
                       "load_avg": os.getloadavg()},
           "source": source_info, "epochs": args.epochs, "batch_size": args.batch_size, "sizes": args.sizes,
           "seeds": args.seeds, "summary": summary, "timing": timing, "runs": rows}
    return out


if __name__ == "__main__":
    main()
