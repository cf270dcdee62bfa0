"""The peer detector for issue 13: Ultralytics' YOLOv8n, from its model yaml, trained offline on convkit's scenes.

One whole run on this machine's CPU, timed:

1. writes scenes (`convkit.tasks.detection.scenes.write_scenes`: PNGs + COCO JSON; by default 2,000 training and
   300 held-out validation scenes, 96x96 canvases, 1-4 Fashion-MNIST items each, generator seed 0), reads them
   back with `load_detection` and exports them in YOLO format (`DetectionDataset.to_yolo`: images/, labels/,
   data.yaml), the only format Ultralytics trains on;
2. trains ``YOLO("yolov8n.yaml")``: built from the yaml, random initialisation, no pretrained weights, on the CPU,
   for a wall-clock budget (Ultralytics' ``time=`` argument, in hours; it re-plans its epochs, and so its
   learning-rate schedule and its last no-mosaic epochs, to fit the budget), Ultralytics' default recipe
   otherwise (SGD/AdamW "auto", mosaic, HSV/flip/scale augmentation), ``imgsz`` the canvas rounded up to a
   multiple of 32;
3. validates on the held-out scenes with Ultralytics' own validator (its mAP50 and mAP50-95), and ALSO scores
   Ultralytics' predictions on the same images with convkit's `coco_metrics` (pycocotools), the code that scores
   convkit's detectors, so that both sides are measured by the same evaluator.

Offline: ``YOLO_OFFLINE=1`` (Ultralytics' own switch: no online checks), settings ``sync=False`` (no telemetry),
``plots=False`` (no font download for the plots), ``amp=False`` (no AMP check, which downloads weights), and a
socket guard refuses every network connection and records who asked, so a run that cannot go on offline stops
and says where (``"stopped_at"``) and why (``"error"``, ``"network_attempts"``).

Threads: Ultralytics sets ``torch.set_num_threads(cpu_count - 1)`` for CPU training (1 thread on 2 cores); the
run puts ``--threads`` back (2) when training and predicting start, so both detectors get the same cores.

Usage:
    python -m pip install -e ".[bench]"      # ultralytics
    python benchmarks/bench_detect_peer.py [--minutes 5] [--train 2000] [--val 300] [--threads 2] [--out r.json]

Prints one JSON object. Timings on a shared machine are noisy: the JSON records the load average before and after.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import socket
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

NETWORK_ATTEMPTS: list[str] = []


def guard_network() -> None:
    """Every connection or name lookup raises OSError (as with no network) and is recorded with its caller."""

    def caller() -> str:
        stack = traceback.extract_stack()[:-3]
        frames = [f for f in stack if "ultralytics" in f.filename] or stack[-1:]  # the deepest Ultralytics caller
        return " <- ".join(f"{Path(f.filename).parent.name}/{Path(f.filename).name}:{f.lineno} {f.name}"
                           for f in reversed(frames[-2:]))

    def refuse(what):
        def blocked(*args, **kwargs):
            NETWORK_ATTEMPTS.append(f"{what}{args[1:2] if what == 'connect' else args[:1]} from {caller()}")
            raise OSError(f"network access refused by bench_detect_peer ({what})")
        return blocked

    socket.socket.connect = refuse("connect")
    socket.socket.connect_ex = refuse("connect")
    socket.getaddrinfo = refuse("getaddrinfo")
    socket.create_connection = refuse("create_connection")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=5.0, help="training wall-clock budget")
    parser.add_argument("--train", type=int, default=2000, help="training scenes")
    parser.add_argument("--val", type=int, default=300, help="held-out validation scenes")
    parser.add_argument("--canvas", type=int, default=96, help="scene size in pixels")
    parser.add_argument("--seed", type=int, default=0, help="the scene generator's seed")
    parser.add_argument("--epochs", type=int, default=100,
                        help="Ultralytics' epochs (its default, 100): time= re-plans them, but optimizer='auto' picks "
                             "from epochs x batches: AdamW up to 10,000 iterations, MuSGD (slow on a CPU) above")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--workers", type=int, default=0, help="Ultralytics data loader workers")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--work", type=Path, default=None, help="working folder (default: a temporary one)")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args()

    os.environ["YOLO_OFFLINE"] = "1"
    out, sys.stdout = sys.stdout, sys.stderr  # Ultralytics logs to stdout: send it to stderr, keep stdout the JSON
    work = args.work or Path(tempfile.mkdtemp(prefix="bench_detect_peer_"))
    os.environ.setdefault("YOLO_CONFIG_DIR", str(work / "ultralytics_config"))  # leave the user's settings alone
    guard_network()
    imgsz = 32 * math.ceil(args.canvas / 32)
    result: dict = {
        "benchmark": "bench_detect_peer", "peer": "ultralytics YOLOv8n from yolov8n.yaml (random init)",
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                    "cpu_count": os.cpu_count(), "threads": args.threads, "python": platform.python_version(),
                    "load_before": os.getloadavg()},
        "data": {"scenes_train": args.train, "scenes_val": args.val, "canvas": args.canvas, "seed": args.seed,
                 "imgsz": imgsz},
        "budget_minutes": args.minutes, "ok": False}
    stage = "start"
    start = time.perf_counter()
    try:
        import torch

        torch.set_num_threads(args.threads)
        result["machine"]["torch"] = torch.__version__

        stage = "writing scenes"
        from convkit.tasks.detection.data import load_detection
        from convkit.tasks.detection.metrics import coco_metrics
        from convkit.tasks.detection.scenes import write_scenes

        t = time.perf_counter()
        paths = write_scenes(work / "scenes", train=args.train, val=args.val, seed=args.seed, canvas=args.canvas,
                             semantic=False)
        stage = "exporting YOLO format"
        train = load_detection(paths["train_annotations"])
        val = load_detection(paths["val_annotations"], classes=train.classes)
        train.to_yolo(work / "yolo", "train")
        data_yaml = val.to_yolo(work / "yolo", "val")
        result["data"].update(objects_train=sum(len(x["labels"]) for x in train.targets),
                              objects_val=sum(len(x["labels"]) for x in val.targets), classes=train.num_classes,
                              seconds=round(time.perf_counter() - t, 1))

        stage = "importing ultralytics"
        import ultralytics
        from ultralytics import YOLO
        from ultralytics.utils import NUM_THREADS, SETTINGS

        SETTINGS.update({"sync": False})
        result["ultralytics"] = ultralytics.__version__
        result["machine"]["ultralytics_default_threads"] = NUM_THREADS

        stage = "building YOLOv8n from yolov8n.yaml"
        model = YOLO("yolov8n.yaml")
        result["parameters"] = sum(p.numel() for p in model.model.parameters())

        clock: dict[str, float] = {}

        def on_train_start(_):
            torch.set_num_threads(args.threads)
            clock["start"] = time.perf_counter()

        def on_train_end(_):
            clock["end"] = time.perf_counter()

        def on_train_batch_end(trainer):
            clock["batches"] = clock.get("batches", 0) + 1
            clock["first_batch"] = clock.get("first_batch", time.perf_counter() - clock["start"])

        model.add_callback("on_train_start", on_train_start)
        model.add_callback("on_train_end", on_train_end)
        model.add_callback("on_train_batch_end", on_train_batch_end)
        stage = "training"
        t = time.perf_counter()
        model.train(data=str(data_yaml), epochs=args.epochs, time=args.minutes / 60, imgsz=imgsz, batch=args.batch,
                    device="cpu", workers=args.workers, pretrained=False, amp=False, plots=False, val=False,
                    project=str(work / "runs"), name="yolov8n", exist_ok=True, seed=args.seed, verbose=False)
        train_seconds = time.perf_counter() - t
        trainer = model.trainer
        epochs = trainer.epoch + 1
        # The epochs (Ultralytics' time= budget counts these; the run stops within an epoch when it is spent, then
        # validates once): images/s counts the batches taken, not whole epochs.
        loop = clock["end"] - clock["start"]
        batches = clock.get("batches", 0)
        seen = min(batches * trainer.batch_size, epochs * len(train))
        result["training"] = {"seconds_whole_call": round(train_seconds, 1), "seconds_epochs": round(loop, 1),
                              "seconds_to_first_batch": round(clock.get("first_batch", math.nan), 1),
                              "epochs_reached": epochs, "epochs_planned": trainer.epochs, "batches": batches,
                              "batch": trainer.batch_size, "images_seen": seen,
                              "images_per_second": round(seen / loop, 1)}

        stage = "validating (Ultralytics)"
        t = time.perf_counter()
        metrics = model.val(data=str(data_yaml), split="val", imgsz=imgsz, batch=args.batch, device="cpu",
                            workers=args.workers, plots=False, verbose=False, project=str(work / "runs"),
                            name="val", exist_ok=True)
        result["ultralytics_metrics"] = {"mAP50": round(float(metrics.box.map50), 4),
                                         "mAP50-95": round(float(metrics.box.map), 4),
                                         "seconds": round(time.perf_counter() - t, 1)}

        stage = "predicting the validation scenes"
        torch.set_num_threads(args.threads)
        files = sorted((work / "yolo" / "images" / "val").glob("*.png"))
        t = time.perf_counter()
        predictions = []
        for r in model.predict([str(f) for f in files], imgsz=imgsz, conf=0.001, iou=0.7, max_det=100,
                               device="cpu", verbose=False, stream=True):
            predictions.append({"boxes": r.boxes.xyxy.cpu(), "scores": r.boxes.conf.cpu(),
                                "labels": r.boxes.cls.cpu().long()})
        predict_seconds = time.perf_counter() - t

        stage = "scoring with convkit's coco_metrics"
        ours = coco_metrics(predictions, val.targets, val.num_classes)
        result["convkit_metrics"] = {"mAP50": round(ours["AP50"], 4), "mAP50-95": round(ours["AP"], 4),
                                     "AP75": round(ours["AP75"], 4), "AR100": round(ours["AR100"], 4),
                                     "predict_images_per_second": round(len(files) / predict_seconds, 1)}
        result["ok"] = True
    except BaseException as err:  # noqa: BLE001 - the report says where and why the peer stopped
        result["stopped_at"] = stage
        result["error"] = f"{type(err).__name__}: {err}"[:2000]
        result["traceback_tail"] = traceback.format_exc().splitlines()[-6:]
    result["network_attempts"] = NETWORK_ATTEMPTS
    result["runs_offline"] = result["ok"]
    result["wall_seconds"] = round(time.perf_counter() - start, 1)
    result["machine"]["load_after"] = os.getloadavg()
    result["work"] = str(work)
    text = json.dumps(result, indent=1)
    print(text, file=out)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
