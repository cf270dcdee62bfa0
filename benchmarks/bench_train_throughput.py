"""Training images/s of LeNet-5 and ResNet-18 at 32x32: convkit's training loop against a plain DataLoader loop.

Same model, batch (128), optimizer (SGD, momentum 0.9), thread count and synthetic data (uint8 images, random
labels) for both; no augmentation; each is timed over its second epoch (the first warms up oneDNN's kernels).

    plain     the tutorial loop: a Dataset that turns each uint8 image into a normalised float tensor, a
              DataLoader (shuffle, batch 128), forward, cross-entropy, backward, step.
    convkit   `Trainer`: the images as one uint8 tensor, batches from a seeded permutation, normalisation
              on the whole batch, channels_last (the default); also reported without channels_last.

Usage:
    python benchmarks/bench_train_throughput.py [--images 2048] [--threads 2] [--out r.json]

Prints one JSON object with the machine's load average before and after (timings on a shared machine are noisy).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

MODELS = {"lenet5": {"in_channels": 1}, "resnet18": {"in_channels": 3}}


class PlainImages(torch.utils.data.Dataset):
    """uint8 images -> normalised float tensors one at a time, as a torchvision transform would."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor):
        self.images, self.labels = images, labels
        self.mean = images.float().mean() / 255
        self.std = images.float().std() / 255

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        return (self.images[i].float() / 255 - self.mean) / self.std, int(self.labels[i])


def synthetic(n: int, channels: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return (torch.randint(0, 256, (n, channels, 32, 32), dtype=torch.uint8, generator=g),
            torch.randint(0, 10, (n,), generator=g))


def plain_loop(name: str, images: torch.Tensor, labels: torch.Tensor, batch_size: int) -> float:
    from convkit.models import create_model

    torch.manual_seed(0)
    model = create_model(name, num_classes=10, in_channels=images.shape[1])
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loader = torch.utils.data.DataLoader(PlainImages(images, labels), batch_size=batch_size, shuffle=True)
    rate = 0.0
    for _ in range(2):
        start, seen = time.perf_counter(), 0
        model.train()
        for x, y in loader:
            optimizer.zero_grad()
            F.cross_entropy(model(x), y).backward()
            optimizer.step()
            seen += len(x)
        rate = seen / (time.perf_counter() - start)
    return rate


def convkit_loop(name: str, images: torch.Tensor, labels: torch.Tensor, batch_size: int, runs: str,
                 channels_last: bool) -> float:
    from convkit.data import ImageTensorDataset
    from convkit.train import Trainer

    classes = [str(i) for i in range(10)]
    train = ImageTensorDataset(images, labels, classes, "synthetic")
    test = ImageTensorDataset(images[:10], labels[:10], classes, "synthetic")
    trainer = Trainer(model=name, train_data=train, test_data=test, epochs=2, batch_size=batch_size,
                      optimizer="sgd", lr=0.01, schedule="constant", weight_decay=0.0, label_smoothing=0.0,
                      ema=0.0, augment={}, tta=False, channels_last=channels_last, runs_dir=runs, quiet=True,
                      threads=torch.get_num_threads())
    result = trainer.fit()
    return result.history[-1]["images_per_s"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=2048, help="synthetic images per epoch")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    report = {"benchmark": "training images/s at 32x32", "machine": {
        "cpu_count": os.cpu_count(), "threads": torch.get_num_threads(), "torch": torch.__version__,
        "python": platform.python_version(), "loadavg_before": [round(x, 2) for x in os.getloadavg()]},
        "images": args.images, "batch_size": args.batch_size, "results": {}}
    with tempfile.TemporaryDirectory() as runs:
        for name in args.models:
            images, labels = synthetic(args.images, MODELS[name]["in_channels"])
            row = {"input": f"{images.shape[1]}x32x32"}
            row["plain_dataloader_img_s"] = round(plain_loop(name, images, labels, args.batch_size), 1)
            row["convkit_img_s"] = round(convkit_loop(name, images, labels, args.batch_size, runs, True), 1)
            row["convkit_nchw_img_s"] = round(convkit_loop(name, images, labels, args.batch_size, runs, False), 1)
            row["speedup"] = round(row["convkit_img_s"] / row["plain_dataloader_img_s"], 2)
            report["results"][name] = row
            print(f"{name}: {row}", file=sys.stderr)
    report["machine"]["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
