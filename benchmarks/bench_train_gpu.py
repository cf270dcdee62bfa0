"""GPU training benchmarks: time to 94% on Fashion-MNIST, and ResNet-50 images/s against a plain fp32 loop.

Two measurements, each side by side in this one process on the same GPU:

    fashion   `convkit.train` recipes on full Fashion-MNIST, each in a fresh process, timed as whole runs: from
              the process's start (before `import torch`) to each evaluation on the 10,000 test images, with
              CUDA's initialisation, reading the gzipped IDX files, the model build, the copy to the GPU, every
              evaluation and every checkpoint inside the time. `run_s` times the same from before the data is
              read (what the CPU benchmark reports).
    resnet50  training images/s of ResNet-50 at 224x224 on synthetic data: a plain PyTorch loop (torchvision's
              resnet50, fp32, NCHW, SGD, tensors already on the GPU) against `convkit.Trainer` (the same
              architecture from convkit's zoo, uint8 images on the GPU normalised in the step, bf16 autocast,
              channels_last), and optionally with torch.compile. The second of two epochs is timed.
    memory    `bench_summary.bench_memory`: predicted against measured peak memory of one training step.

Usage:
    python benchmarks/bench_train_gpu.py --data ../shared/data/fashion-mnist [--tasks fashion resnet50 memory]
    python benchmarks/bench_train_gpu.py --tasks fashion --recipes '[{"epochs": 12, "batch_size": 512}]'

Prints one JSON object.
"""

from __future__ import annotations

import time

PROCESS_START = time.perf_counter()

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "fashion-mnist"

# The recipe of the README's GPU figure: fastcnn twice as wide and deep, big batches, flips and crops.
FASHION_RECIPES = [
    {"model_kwargs": {"widths": [32, 64, 128], "depths": 2}, "epochs": 16, "batch_size": 512, "lr": 8e-3,
     "augment": {"horizontal_flip": True, "crop_padding": 2}},
]


def first_at(points: list[dict], accuracy: float) -> float | None:
    return next((p["seconds"] for p in points if p["test_acc"] >= accuracy), None)


def run_recipe(data: Path, runs_dir: str, recipe: dict) -> dict:
    """One whole run in this (fresh) process; times count from the process's start."""
    from convkit.models import count_parameters
    from convkit.train import Trainer

    start = time.perf_counter()
    points = []

    def record(trainer, row):
        now = time.perf_counter()
        points.append({"epoch": row["epoch"], "seconds": round(now - PROCESS_START, 2),
                       "run_s": round(now - start, 2), "test_acc": row["test_acc"],
                       "images_per_s": round(row["images_per_s"])})
        print(f"  epoch {row['epoch']}: {100 * row['test_acc']:.2f}% at {points[-1]['seconds']} s "
              f"({row['images_per_s']:,.0f} img/s)", file=sys.stderr)

    trainer = Trainer(data=str(data), runs_dir=runs_dir, quiet=True, **recipe)
    trainer.on_epoch_end.append(record)
    trainer.fit()
    return {"recipe": recipe, "parameters": count_parameters(trainer.model), "precision": trainer.precision,
            "time_to_93_s": first_at(points, 0.93), "time_to_94_s": first_at(points, 0.94),
            "process_to_import_done_s": round(start - PROCESS_START, 2), "setup_s": round(trainer.setup_s, 2),
            "total_s": round(time.perf_counter() - PROCESS_START, 2),
            "final_test_acc": points[-1]["test_acc"], "best_test_acc": max(p["test_acc"] for p in points),
            "epochs": points}


def bench_fashion(data: Path, recipes: list[dict]) -> list[dict]:
    """Each recipe in a fresh process, so that every run pays CUDA's start-up as a user's would."""
    results = []
    for recipe in recipes:
        print(f"fashion recipe {recipe}", file=sys.stderr)
        done = subprocess.run([sys.executable, __file__, "--data", str(data), "--one-recipe", json.dumps(recipe)],
                              stdout=subprocess.PIPE, text=True, check=True)
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))  # the last line: the training log precedes it
    return results


def _timed_epoch(step, batches: int) -> float:
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(batches):
        step()
    torch.cuda.synchronize()
    return time.perf_counter() - start


def plain_resnet50(batch: int, steps: int) -> float:
    """torchvision's resnet50 in fp32, NCHW, SGD: the loop a user would write without convkit."""
    import torchvision

    model = torchvision.models.resnet50(num_classes=1000).cuda()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-5)
    x = torch.randn(batch, 3, 224, 224, device="cuda")
    y = torch.randint(0, 1000, (batch,), device="cuda")

    def step():
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        optimizer.step()

    _timed_epoch(step, 3)  # warm-up: cuDNN's algorithm choice, allocator
    return batch * steps / _timed_epoch(step, steps)


def convkit_resnet50(batch: int, steps: int, compile: bool, runs_dir: str) -> dict:
    from convkit.data import ImageTensorDataset
    from convkit.train import Trainer

    n = batch * steps
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 3, 224, 224), dtype=torch.uint8, generator=generator)
    labels = torch.randint(0, 1000, (n,), generator=generator)
    classes = [str(i) for i in range(1000)]
    train = ImageTensorDataset(images, labels, classes, "synthetic")
    test = ImageTensorDataset(images[:batch], labels[:batch], classes, "synthetic")
    trainer = Trainer(model="resnet50", train_data=train, test_data=test, epochs=2, batch_size=batch,
                      optimizer="sgd", lr=0.1, schedule="constant", weight_decay=5e-5, ema=0.0,
                      augment={"horizontal_flip": True}, tta=False, compile=compile, cudnn_benchmark=True,
                      runs_dir=runs_dir, quiet=True, log_every=50)
    result = trainer.fit()
    row = {"images_per_s": round(result.history[-1]["images_per_s"], 1),
           "first_epoch_images_per_s": round(result.history[0]["images_per_s"], 1),
           "precision": trainer.precision, "channels_last": True, "compile": compile}
    del trainer, result
    torch.cuda.empty_cache()
    return row


def bench_resnet50(batch: int, steps: int, compile: bool) -> dict:
    torch.backends.cudnn.benchmark = True
    out = {"batch_size": batch, "timed_steps": steps,
           "plain_fp32_img_s": round(plain_resnet50(batch, steps), 1)}
    torch.cuda.empty_cache()
    print(f"resnet50 plain fp32: {out['plain_fp32_img_s']} img/s", file=sys.stderr)
    with tempfile.TemporaryDirectory() as runs:
        out["convkit"] = convkit_resnet50(batch, steps, False, runs)
        print(f"resnet50 convkit: {out['convkit']}", file=sys.stderr)
        out["speedup"] = round(out["convkit"]["images_per_s"] / out["plain_fp32_img_s"], 2)
        if compile:
            out["convkit_compiled"] = convkit_resnet50(batch, steps, True, runs)
            print(f"resnet50 convkit compiled: {out['convkit_compiled']}", file=sys.stderr)
            out["speedup_compiled"] = round(out["convkit_compiled"]["images_per_s"] / out["plain_fp32_img_s"], 2)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder with the Fashion-MNIST .gz files")
    parser.add_argument("--tasks", nargs="+", default=["fashion", "resnet50", "memory"],
                        choices=["fashion", "resnet50", "memory"])
    parser.add_argument("--recipes", type=json.loads, default=FASHION_RECIPES,
                        help="JSON list of TrainConfig overrides for the fashion task")
    parser.add_argument("--batch", type=int, default=256, help="ResNet-50 batch")
    parser.add_argument("--steps", type=int, default=30, help="timed ResNet-50 steps (one epoch)")
    parser.add_argument("--compile", action="store_true", help="also time ResNet-50 with torch.compile")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    parser.add_argument("--one-recipe", type=json.loads, help=argparse.SUPPRESS)  # the child of bench_fashion
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("bench_train_gpu: no CUDA device", file=sys.stderr)
        return 2
    if args.one_recipe is not None:
        with tempfile.TemporaryDirectory() as runs:
            print(json.dumps(run_recipe(args.data, runs, args.one_recipe)))
        return 0
    torch.zeros(1, device="cuda")  # CUDA's initialisation, outside every timed run
    report = {"benchmark": "GPU training", "device": torch.cuda.get_device_name(), "torch": torch.__version__,
              "python": platform.python_version(),
              "process_setup_s": round(time.perf_counter() - PROCESS_START, 2)}
    if "fashion" in args.tasks:
        report["fashion"] = bench_fashion(args.data, args.recipes)
    if "resnet50" in args.tasks:
        report["resnet50"] = bench_resnet50(args.batch, args.steps, args.compile)
    if "memory" in args.tasks:
        from bench_summary import bench_memory

        report["memory"] = bench_memory()
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
