"""Issue 13's convkit detectors: mAP over wall-clock time on the scenes; Faster R-CNN's engine vs a plain loop.

mAP over wall-clock time on the built-in scenes per detector, and Faster R-CNN's training speed on convkit's
engine against a plain PyTorch loop over the same torchvision model.

One run on this machine's CPU, timed:

1. the data: the built-in scenes (`convkit.tasks.detection.task.scenes_dataset`: 2,000 training and 300 held-out
   validation scenes, 96x96 canvases, 1-4 Fashion-MNIST items each, generator seed 0), made once and given to
   every run; they are exactly what ``convkit.train(task="detect", data="default")`` makes for itself (same
   function, same arguments), and their making is timed apart (``"data"``);
2. quality over wall-clock time, per detector (``--detectors``, on ``--backbone``): a speed probe first (one
   engine epoch of ``--probe-steps`` batches of 32, not counted) measures training images/s; then
   ``epochs = max(1, floor(budget_s * images_per_s * 0.9 / training images))`` (the budget is ``--minutes`` per
   detector; the per-epoch evaluation is not in the estimate, the 0.9 leaves room for it), and
   ``Trainer(task="detect", model=KIND, backbone=..., epochs=E)`` trains with the task's other defaults (AdamW
   lr 5e-3, batch 32, one-cycle schedule, horizontal flips, seed 0). Each epoch's row records the engine's
   ``elapsed_s`` (training plus evaluation, no set-up or checkpoint writing), the training-only time summed
   from each epoch's images/s (``train_s``), the wall time since the Trainer's construction began (``wall_s``:
   set-up, training, evaluation, checkpoints; measured by an ``on_epoch_end`` hook), mAP@0.5 and
   mAP@[.5:.95] (pycocotools, on the 300 validation scenes). At the end `evaluate_detector` scores the best
   checkpoint (best mAP@[.5:.95], the engine's monitor) again: COCO's 12 numbers;
3. Faster R-CNN training images/s: (a) the plain loop a user would write over torchvision's own model, built by
   ``faster_rcnn(backbone, 10, in_channels=1, image_mean=[0.0], image_std=[1.0], min_size=96, max_size=96)``
   (the torchvision ``FasterRCNN`` convkit's detector wraps, same backbone configuration): no DataLoader,
   shuffled batches of 32 of the scenes tensors, ``images = [x.float() / 255 ...]``, ``to_torchvision_targets``,
   ``sum(model(images, targets).values())``, AdamW step; 2 warm-up steps, then ``--speed-steps`` timed; (b)
   convkit's ``Trainer(task="detect", model="fasterrcnn", epochs=1, limit=speed_steps * 32)``: its epoch's
   ``images_per_s`` (training only: the engine's normalisation, flips, channels-last, deterministic mode and
   bookkeeping included; its evaluation excluded). The plain loop runs first, so its warm-up also warms the
   process for the engine, whose first step is inside its timing.

Usage:
    python benchmarks/bench_detect.py [--minutes 5] [--threads 2] [--detectors yolo,fasterrcnn,retinanet]
                                      [--backbone fastcnn] [--probe-steps 10] [--speed-steps 12] [--out r.json]

Prints one JSON object (the engine's progress lines go to stderr). Timings on a shared machine are noisy: the JSON
records the load average before and after. ``--limit``/``--test-limit``/``--batch`` (hidden; tests only) cut the data and the batches.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

BATCH = 32  # the detection task's default batch size (--batch, hidden, changes it for tests)
SPEED_CHECK_VAL = 32  # validation images the speed runs evaluate on (their evaluation is not timed)


def cpu_name() -> str:
    """The CPU's model name (/proc/cpuinfo), else platform.processor() or the machine type."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=5.0, help="wall-clock budget per detector")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--detectors", default="yolo,fasterrcnn,retinanet", help="comma-separated detectors")
    parser.add_argument("--backbone", default="fastcnn", help="the detectors' backbone (a zoo name)")
    parser.add_argument("--probe-steps", type=int, default=10, help="training steps of each detector's speed probe")
    parser.add_argument("--speed-steps", type=int, default=12,
                        help="timed Faster R-CNN steps of the engine-vs-plain-loop comparison (0: skip it)")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    parser.add_argument("--limit", type=int, default=None, help=argparse.SUPPRESS)  # tests: fewer training scenes
    parser.add_argument("--test-limit", type=int, default=None, help=argparse.SUPPRESS)  # and validation scenes
    parser.add_argument("--batch", type=int, default=BATCH, help=argparse.SUPPRESS)  # and smaller batches
    args = parser.parse_args(argv)
    args.detectors = [d.strip() for d in args.detectors.split(",") if d.strip()]
    return args


def _r(x: float, digits: int = 4) -> float | None:
    return None if x is None or not math.isfinite(x) else round(float(x), digits)


def trainer(args, runs_dir: str, kind: str, **options):
    """convkit's engine on the detection task, the task's defaults otherwise (quiet, in the temporary runs_dir)."""
    from convkit.train import Trainer

    return Trainer(task="detect", model=kind, backbone=args.backbone, batch_size=args.batch, quiet=True,
                   runs_dir=runs_dir, threads=args.threads, **options)


def probe(kind: str, args, train, val, runs_dir: str) -> float:
    """Training images/s of one engine epoch of `--probe-steps` batches (its evaluation on a few images)."""
    n = min(len(train), args.probe_steps * args.batch)
    probing = trainer(args, runs_dir, kind, epochs=1, limit=n, test_limit=min(SPEED_CHECK_VAL, len(val)),
                      train_data=train, test_data=val)
    return float(probing.fit().history[-1]["images_per_s"])


def quality(kind: str, args, train, val, runs_dir: str) -> dict:
    """Probe, plan the epochs for the budget, train, score the best checkpoint."""
    from convkit.tasks.detection.inference import evaluate_detector

    budget_s = args.minutes * 60
    t = time.perf_counter()
    img_s = probe(kind, args, train, val, runs_dir)
    probe_s = time.perf_counter() - t
    n_train = min(len(train), args.limit) if args.limit else len(train)
    epochs = max(1, math.floor(budget_s * img_s * 0.9 / n_train))

    walls: list[float] = []
    start = time.perf_counter()
    engine = trainer(args, runs_dir, kind, epochs=epochs, limit=args.limit, test_limit=args.test_limit,
                     train_data=train, test_data=val)
    setup_s = time.perf_counter() - start
    engine.on_epoch_end.append(lambda _t, _row: walls.append(time.perf_counter() - start))
    result = engine.fit()
    fit_wall = time.perf_counter() - start

    rows, train_s = [], 0.0
    for row, wall in zip(result.history, walls):
        train_s += n_train / row["images_per_s"]
        rows.append({"epoch": row["epoch"], "elapsed_s": _r(row["elapsed_s"], 2), "train_s": _r(train_s, 2),
                     "wall_s": _r(wall, 2), "images_per_s": _r(row["images_per_s"], 1),
                     "test_map50": _r(row["test_map50"]), "test_map": _r(row["test_map"])})

    t = time.perf_counter()
    evaluation = evaluate_detector(result.run_dir, engine.test_data)  # the run's validation set, as it evaluated
    eval_s = time.perf_counter() - t
    coco = {k: _r(v) for k, v in evaluation.coco.items() if isinstance(v, float | int)}
    last, best = result.history[-1], result.best
    return {"detector": kind, "backbone": args.backbone, "parameters": sum(p.numel() for p in result.model.parameters()),
            "probe": {"steps": math.ceil(min(len(train), args.probe_steps * args.batch) / args.batch), "images_per_s": _r(img_s, 1),
                      "seconds": _r(probe_s, 1)},
            "budget_s": budget_s, "batch": args.batch, "epochs": epochs, "epochs_done": len(result.history), "stopped": result.stopped,
            "train_images": n_train, "val_images": len(engine.test_data),
            "final": {"epoch": last["epoch"], "map50": _r(last["test_map50"]), "map": _r(last["test_map"])},
            "best": {"epoch": best["epoch"], "map50": _r(best["test_map50"]), "map": _r(best["test_map"])},
            "max_map50": _r(max(r["test_map50"] for r in result.history)),
            "seconds": {"setup": _r(setup_s, 1), "train": _r(train_s, 1),
                        "engine_elapsed": _r(last["elapsed_s"], 1), "fit_wall": _r(fit_wall, 1),
                        "evaluate_detector": _r(eval_s, 1), "wall": _r(fit_wall + eval_s, 1)},
            "history": rows,
            "evaluate_detector": {"checkpoint": "best", "images": evaluation.images, "coco": coco}}


def plain_loop(args, train) -> dict:
    """torchvision's FasterRCNN (convkit's builder, identity normalisation) in the loop a user would write."""
    import torch

    from convkit.tasks.detection.models import faster_rcnn, to_torchvision_targets

    torch.manual_seed(0)
    model = faster_rcnn(args.backbone, train.num_classes, in_channels=train.channels, image_mean=[0.0],
                        image_std=[1.0], min_size=96, max_size=96)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-3, weight_decay=5e-4)
    images, targets = train.images_tensor(), train.targets
    n = len(train) if not args.limit else min(len(train), args.limit)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(0))
    warmup, steps = 2, args.speed_steps

    def step(i: int) -> float:
        index = order[torch.arange(i * args.batch, (i + 1) * args.batch) % n]
        batch = [x.float() / 255 for x in images[index]]
        loss = sum(model(batch, to_torchvision_targets([targets[j] for j in index.tolist()])).values())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.item()

    for i in range(warmup):
        step(i)
    t = time.perf_counter()
    losses = [step(warmup + i) for i in range(steps)]
    seconds = time.perf_counter() - t
    return {"steps": steps, "warmup_steps": warmup, "seconds": _r(seconds, 2),
            "images_per_s": _r(steps * args.batch / seconds, 1), "last_loss": _r(losses[-1])}


def engine_speed(args, train, val, runs_dir: str) -> dict:
    n = args.speed_steps * args.batch
    engine = trainer(args, runs_dir, "fasterrcnn", epochs=1, limit=n, test_limit=min(SPEED_CHECK_VAL, len(val)),
                     train_data=train, test_data=val)
    row = engine.fit().history[-1]
    images = len(engine.train_data)
    return {"steps": math.ceil(images / args.batch), "images": images, "seconds": _r(images / row["images_per_s"], 2),
            "images_per_s": _r(row["images_per_s"], 1), "last_loss": _r(row["train_loss"])}


def run(args) -> dict:
    import torch
    import torchvision

    torch.set_num_threads(args.threads)
    from convkit.tasks.detection.task import scenes_dataset

    result: dict = {
        "benchmark": "bench_detect", "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "threads": args.threads, "torch": torch.__version__, "torchvision": torchvision.__version__,
        "cpu": cpu_name(), "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(),
                                       "python": platform.python_version(), "load_before": os.getloadavg()}}
    start = time.perf_counter()
    t = time.perf_counter()
    train, val = scenes_dataset("train", count=args.limit), scenes_dataset("val", count=args.test_limit)
    result["data"] = {"source": "scenes (seed 0, 96x96, 1-4 Fashion-MNIST items)", "train": len(train),
                      "val": len(val), "seconds": _r(time.perf_counter() - t, 1)}
    with tempfile.TemporaryDirectory(prefix="bench_detect_") as runs_dir:
        result["detectors"] = {kind: quality(kind, args, train, val, runs_dir) for kind in args.detectors}
        if args.speed_steps > 0:
            plain = plain_loop(args, train)
            engine = engine_speed(args, train, val, runs_dir)
            result["fasterrcnn_speed"] = {"backbone": args.backbone, "batch": args.batch, "plain_torch": plain,
                                          "convkit": engine,
                                          "ratio_convkit_over_plain": _r(engine["images_per_s"] / plain["images_per_s"], 3)}
    result["wall_seconds"] = _r(time.perf_counter() - start, 1)
    result["machine"]["load_after"] = os.getloadavg()
    return result


def main(argv=None) -> dict:
    """Runs the benchmark; prints the JSON to stdout, writes it to --out; returns it."""
    args = parse_args(argv)
    out = sys.stdout
    with contextlib.redirect_stdout(sys.stderr):  # the engine's lines go to stderr; stdout keeps the JSON
        result = run(args)
    text = json.dumps(result, indent=1)
    print(text, file=out)
    if args.out:
        from convkit.utils import atomic_write_text

        atomic_write_text(args.out, text + "\n")
    return result


if __name__ == "__main__":
    main()
