"""Time to 90% and 92% test accuracy on Fashion-MNIST: convkit's default recipe against the PyTorch MNIST example.

Both run in this one process, one after the other, on the same machine and data, timed as whole runs: from
before the data is loaded to each evaluation on the 10,000 test images.

    baseline  the PyTorch MNIST example (github.com/pytorch/examples, mnist/main.py) on Fashion-MNIST: its
              2-conv net, torchvision's dataset with ToTensor/Normalize through a DataLoader, Adadelta lr 1.0,
              StepLR gamma 0.7, batch 64, tested after every epoch; run until 92% or --baseline-epochs.
    ours      `convkit.train` with the default recipe (fastcnn, data as one uint8 tensor, batched on-device
              augmentation, one-cycle, EMA), planned for --epochs epochs (3: about a minute on 2 cores); then
              the same recipe planned for --long-epochs epochs, for the final accuracy.

Usage:
    python benchmarks/bench_train_fashion.py [--data ../shared/data/fashion-mnist] [--threads 2] [--out r.json]

Prints one JSON object. Timings on a shared machine are noisy: the JSON records the load average before and
after; run it when `uptime` shows a low load.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "fashion-mnist"


class ExampleNet(nn.Module):
    """The network of the PyTorch MNIST example, verbatim."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, 1)
        self.conv2 = nn.Conv2d(32, 64, 3, 1)
        self.dropout1 = nn.Dropout(0.25)
        self.dropout2 = nn.Dropout(0.5)
        self.fc1 = nn.Linear(9216, 128)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x):
        x = F.relu(self.conv1(x))
        x = F.relu(self.conv2(x))
        x = F.max_pool2d(x, 2)
        x = self.dropout1(x)
        x = torch.flatten(x, 1)
        x = F.relu(self.fc1(x))
        x = self.dropout2(x)
        return F.log_softmax(self.fc2(x), dim=1)


def first_at(points: list[dict], accuracy: float) -> float | None:
    """Seconds to the first evaluation at or above `accuracy`, or None."""
    return next((p["seconds"] for p in points if p["test_acc"] >= accuracy), None)


def torchvision_layout(data: Path) -> Path:
    """torchvision's FashionMNIST reads uncompressed files from <root>/FashionMNIST/raw/; make that (once)."""
    root = Path(tempfile.gettempdir()) / "convkit-bench-fashion"
    raw = root / "FashionMNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for stem in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                 "t10k-labels-idx1-ubyte"):
        if not (raw / stem).exists():
            source = data / f"{stem}.gz"
            with gzip.open(source) as f, open(raw / stem, "wb") as out:
                shutil.copyfileobj(f, out)
    return root


def run_baseline(data: Path, max_epochs: int, stop_at: float) -> dict:
    from torchvision import datasets, transforms

    root = torchvision_layout(data)
    torch.manual_seed(1)
    start = time.perf_counter()
    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.1307,), (0.3081,))])
    train_set = datasets.FashionMNIST(str(root), train=True, download=False, transform=transform)
    test_set = datasets.FashionMNIST(str(root), train=False, download=False, transform=transform)
    train_loader = torch.utils.data.DataLoader(train_set, batch_size=64, shuffle=True)
    test_loader = torch.utils.data.DataLoader(test_set, batch_size=1000)
    model = ExampleNet()
    optimizer = torch.optim.Adadelta(model.parameters(), lr=1.0)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.7)
    points = []
    for epoch in range(1, max_epochs + 1):
        model.train()
        for x, y in train_loader:
            optimizer.zero_grad()
            loss = F.nll_loss(model(x), y)
            loss.backward()
            optimizer.step()
        model.eval()
        correct = 0
        with torch.no_grad():
            for x, y in test_loader:
                correct += int((model(x).argmax(1) == y).sum())
        scheduler.step()
        points.append({"epoch": epoch, "seconds": round(time.perf_counter() - start, 2),
                       "test_acc": correct / len(test_set)})
        print(f"baseline epoch {epoch}: {100 * points[-1]['test_acc']:.2f}% at {points[-1]['seconds']} s",
              file=sys.stderr)
        if points[-1]["test_acc"] >= stop_at:
            break
    return summarise(points, {"model": "PyTorch MNIST example net", "batch_size": 64, "optimizer": "Adadelta 1.0",
                              "schedule": "StepLR gamma 0.7", "parameters": sum(p.numel() for p in model.parameters())})


def run_ours(data: Path, epochs: int, runs_dir: str, **overrides) -> dict:
    from convkit.models import count_parameters
    from convkit.train import Trainer

    start = time.perf_counter()
    points = []

    def record(trainer, row):
        points.append({"epoch": row["epoch"], "seconds": round(time.perf_counter() - start, 2),
                       "test_acc": row["test_acc"], "images_per_s": round(row["images_per_s"])})
        print(f"ours epoch {row['epoch']}: {100 * row['test_acc']:.2f}% at {points[-1]['seconds']} s",
              file=sys.stderr)

    trainer = Trainer(data=str(data), epochs=epochs, runs_dir=runs_dir, quiet=True, **overrides)
    trainer.on_epoch_end.append(record)
    trainer.fit()
    cfg = trainer.config
    return summarise(points, {"model": cfg.model, "model_kwargs": cfg.model_kwargs, "batch_size": cfg.batch_size,
                              "optimizer": f"{cfg.optimizer} {cfg.lr:g}", "schedule": cfg.schedule,
                              "augment": cfg.augment, "epochs": epochs, "threads": torch.get_num_threads(),
                              "parameters": count_parameters(trainer.model)})


def summarise(points: list[dict], recipe: dict) -> dict:
    return {"recipe": recipe, "time_to_90_s": first_at(points, 0.90), "time_to_92_s": first_at(points, 0.92),
            "final_test_acc": points[-1]["test_acc"] if points else None, "epochs": points}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder with the Fashion-MNIST .gz files")
    parser.add_argument("--epochs", type=int, default=3, help="epochs of our short run (3: planned for a minute)")
    parser.add_argument("--long-epochs", type=int, default=15, help="epochs of our longer run (0: skip)")
    parser.add_argument("--baseline-epochs", type=int, default=4, help="cap of the baseline's epochs")
    parser.add_argument("--threads", type=int, default=None, help="torch threads for both (default: all cores)")
    parser.add_argument("--skip-baseline", action="store_true")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    epochs = args.epochs
    report = {"benchmark": "fashion-mnist time to accuracy", "machine": {
        "cpu_count": os.cpu_count(), "threads": torch.get_num_threads(), "torch": torch.__version__,
        "python": platform.python_version(), "processor": platform.processor() or platform.machine(),
        "loadavg_before": [round(x, 2) for x in os.getloadavg()]}}
    with tempfile.TemporaryDirectory() as runs:
        report["ours"] = run_ours(args.data, epochs, runs)
        if not args.skip_baseline:
            report["baseline"] = run_baseline(args.data, args.baseline_epochs, 0.92)
        if args.long_epochs:
            report["ours_long"] = run_ours(args.data, args.long_epochs, runs)
    report["machine"]["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    base, ours = report.get("baseline", {}).get("time_to_90_s"), report["ours"]["time_to_90_s"]
    report["speedup_to_90"] = round(base / ours, 2) if base and ours else None
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
