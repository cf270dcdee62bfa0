"""Issue 14's segmenters: mIoU over wall-clock time on the scenes, against a peer; the engine against a plain loop.

One run on this machine's CPU, timed:

1. the data: the built-in scenes' semantic masks (`convkit.tasks.segmentation.data.scenes_segmentation`: 2,000
   training and 300 held-out validation scenes, 96x96, 1-4 Fashion-MNIST items each, generator seed 0; 11
   classes, background and the 10 Fashion-MNIST classes), made once and given to every run; exactly what
   ``convkit train --task segment`` makes for itself;
2. mIoU over wall-clock time per convkit segmenter (``--models``, e.g. unet, fcn8s on fastcnn): a speed probe
   (two engine epochs of ``--probe-steps`` batches, not counted; the second, warm epoch's speed) measures
   training images/s; then
   ``epochs = max(1, floor(budget_s * images_per_s * 0.9 / training images))`` and
   ``Trainer(task="segment", model=KIND, epochs=E)`` trains with the task's other defaults. Each epoch's row
   records the wall time since the Trainer's construction began (set-up, training, evaluation, checkpoints),
   the engine's ``elapsed_s``, mIoU and pixel accuracy on the 300 validation scenes (one confusion matrix over
   them, `convkit.tasks.segmentation.metrics`);
3. the convolutionized classifier, untrained for segmentation: ``convkit.train("fastcnn",
   data="fashion-mnist", epochs=--classifier-epochs)`` on the full Fashion-MNIST (28x28 items, no scenes), then
   `convkit.convolutionize` slides it over each validation scene: its coarse class map (stride 4) is resized
   bilinearly to the scene; a pixel is background where the scene is black (the scenes' background is exactly
   0, so this part is given, not learned) and else the class of the map. Its mIoU is the classifier's, not a
   segmenter's;
4. the peer a user would otherwise pick: segmentation_models_pytorch's ``Unet(--peer-encoder,
   encoder_weights=None, in_channels=1, classes=11)`` in the plain loop its examples show (AdamW lr 1e-3, batch
   32, horizontal flips, cross-entropy with 255 ignored, the same normalisation), for the same wall-clock budget,
   evaluated each epoch and at the end with the same confusion-matrix metric;
5. training images/s of one model (``--speed-model``) on convkit's engine against a plain PyTorch loop over the
   same model (same batches of 32, AdamW, flips), ``--speed-steps`` timed steps each after 2 warm-up steps.

Usage:
    python benchmarks/bench_segment.py [--minutes 5] [--threads 2] [--models unet,fcn8s] [--peer-encoder resnet18]
                                       [--classifier-epochs 3] [--data-dir ../shared/data] [--out r.json]

Prints one JSON object (progress goes to stderr). Timings on a shared machine are noisy: the JSON records the load
average before and after. ``--limit``/``--test-limit``/``--batch`` (hidden; tests only) cut the data and batches.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_detect import cpu_name  # noqa: E402  (the same machine description as the detection benchmark)

BATCH = 32


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=5.0, help="wall-clock budget per trained model")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--models", default="fcn8s,unet", help="comma-separated convkit segmenters to train")
    parser.add_argument("--unet-args", type=str, default="depth=4,width=8",
                        help="the U-Net's options (K=V,...; its default width 32 trains at about 5 img/s here)")
    parser.add_argument("--peer-encoder", default="resnet18", help="smp U-Net's encoder ('' : no peer)")
    parser.add_argument("--classifier-epochs", type=int, default=3,
                        help="epochs of the fastcnn classifier on Fashion-MNIST (0: no convolutionized row)")
    parser.add_argument("--classifier-data", default="fashion-mnist",
                        help="the classifier's data (default: the full Fashion-MNIST; 'default': the shipped subset)")
    parser.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"),
                        help="where fashion-mnist/ lies (the classifier's data)")
    parser.add_argument("--probe-steps", type=int, default=6, help="training steps of each speed probe")
    parser.add_argument("--speed-model", default="fcn8s", help="the model of the engine-vs-plain-loop comparison")
    parser.add_argument("--speed-steps", type=int, default=12, help="timed steps of that comparison (0: skip)")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    parser.add_argument("--demo", type=Path, default=None,
                        help="also draw the convolutionized classifier's class map of 2 validation scenes here (PNG)")
    parser.add_argument("--limit", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--test-limit", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, default=BATCH, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    from convkit.cli.common import key_values

    args.unet_args = key_values(args.unet_args)
    return args


def model_kwargs(args, kind: str) -> dict:
    return dict(args.unet_args) if kind == "unet" else {}


def _r(x, digits: int = 4):
    return None if x is None or not math.isfinite(float(x)) else round(float(x), digits)


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def trainer(args, runs_dir: str, kind: str, **options):
    from convkit.train import Trainer

    return Trainer(task="segment", model=kind, model_kwargs=model_kwargs(args, kind), batch_size=args.batch,
                   quiet=True, runs_dir=runs_dir, threads=args.threads, **options)


def quality(kind: str, args, train, val, runs_dir: str) -> dict:
    """Probe, plan the epochs for the budget, train; mIoU per epoch against wall-clock time."""
    budget_s = args.minutes * 60
    n_train = len(train)
    t = time.perf_counter()
    probing = trainer(args, runs_dir, kind, epochs=2, limit=min(n_train, args.probe_steps * args.batch),
                      test_limit=min(32, len(val)), train_data=train, test_data=val)
    img_s = float(probing.fit().history[-1]["images_per_s"])  # the second epoch's: warm (the first runs slow)
    probe_s = time.perf_counter() - t
    epochs = max(1, math.floor(budget_s * img_s * 0.9 / n_train))
    log(f"{kind}: {img_s:.1f} img/s in the probe -> {epochs} epochs")
    walls: list[float] = []
    start = time.perf_counter()
    engine = trainer(args, runs_dir, kind, epochs=epochs, train_data=train, test_data=val)
    engine.on_epoch_end.append(lambda _t, _row: walls.append(time.perf_counter() - start))
    result = engine.fit()
    rows = [{"epoch": r["epoch"], "wall_s": _r(w, 1), "elapsed_s": _r(r["elapsed_s"], 1),
             "images_per_s": _r(r["images_per_s"], 1), "miou": _r(r["test_miou"]),
             "pixel_accuracy": _r(r["test_pixel_accuracy"])} for r, w in zip(result.history, walls)]
    best = result.best
    log(f"{kind}: best mIoU {best['test_miou']:.3f} at epoch {best['epoch']}")
    return {"model": kind, "options": model_kwargs(args, kind), "parameters": sum(p.numel() for p in result.model.parameters()),
            "probe": {"images_per_s": _r(img_s, 1), "seconds": _r(probe_s, 1)}, "budget_s": budget_s,
            "epochs": epochs, "train_images": n_train, "val_images": len(val),
            "best": {"epoch": best["epoch"], "miou": _r(best["test_miou"]),
                     "pixel_accuracy": _r(best["test_pixel_accuracy"])},
            "final": {"miou": rows[-1]["miou"], "wall_s": rows[-1]["wall_s"]}, "history": rows}


def convolutionized(args, val, runs_dir: str) -> dict:
    """A fastcnn trained on Fashion-MNIST items, convolutionized and slid over the validation scenes."""
    import torch
    import torch.nn.functional as F

    import convkit
    from convkit.tasks.segmentation.metrics import confusion_matrix, segmentation_metrics

    start = time.perf_counter()
    result = convkit.train(model="fastcnn", data=args.classifier_data, data_dir=args.data_dir, epochs=args.classifier_epochs,
                           quiet=True, runs_dir=runs_dir, threads=args.threads)
    train_s = time.perf_counter() - start
    net = convkit.convolutionize(result.run_dir)
    mean, std = net.model_cfg.mean_std()
    t = time.perf_counter()
    found = []
    with torch.no_grad():
        for i in range(0, len(val), 64):
            images = val.images[i:i + 64]
            x = (images.float() / 255 - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)
            scores = F.interpolate(net.eval()(x), size=images.shape[-2:], mode="bilinear", align_corners=False)
            classes = scores.argmax(1) + 1  # the scenes' class ids: the Fashion-MNIST class + 1
            found.append(torch.where(images.amax(1) > 0, classes, torch.zeros_like(classes)).to(torch.uint8))
    found = torch.cat(found)
    if args.demo:
        from convkit.tasks.segmentation.convolutionize import class_map, save_class_map

        ids, _ = class_map(net, torch.cat([val.images[0], val.images[1]], -1))  # two scenes side by side
        save_class_map(torch.cat([val.images[0], val.images[1]], -1), ids, net.classes, args.demo,
                       title="fastcnn trained on 28x28 Fashion-MNIST items, convolutionized, slid over two scenes",
                       stride=net.stride, receptive_field=net.receptive_field)
    m = segmentation_metrics(confusion_matrix(found, val.masks, len(val.classes)), val.classes)
    known = val.masks != 255
    right = ((found > 0) == (val.masks > 0)) & known  # foreground given by the pixels: a check it is exact
    log(f"convolutionized: mIoU {m['miou']:.3f} (classifier test accuracy {result.best['test_acc']:.3f})")
    return {"model": "convolutionized fastcnn (trained on Fashion-MNIST items only)",
            "classifier": {"data": args.classifier_data, "epochs": args.classifier_epochs, "test_acc": _r(result.best["test_acc"]),
                           "train_wall_s": _r(train_s, 1)},
            "stride": int(net.stride), "receptive_field": list(net.receptive_field) if isinstance(
                net.receptive_field, tuple | list) else net.receptive_field,
            "miou": _r(m["miou"]), "pixel_accuracy": _r(m["pixel_accuracy"]),
            "iou": [_r(v) if v is not None else None for v in m["iou"]],
            "foreground_pixel_agreement": _r(float(right.sum() / known.sum())), "slide_s": _r(time.perf_counter() - t, 2)}


def _augment_flip(x, y, g):
    import torch

    flip = torch.rand(len(x), generator=g) < 0.5
    return torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x), torch.where(flip.view(-1, 1, 1), y.flip(-1), y)


def _evaluate_plain(model, val, mean, std) -> dict:
    import torch

    from convkit.tasks.segmentation.metrics import confusion_matrix, segmentation_metrics

    model.eval()
    found = []
    with torch.no_grad():
        for i in range(0, len(val), 64):
            x = (val.images[i:i + 64].float() / 255 - mean) / std
            found.append(model(x).argmax(1).to(torch.uint8))
    model.train()
    m = segmentation_metrics(confusion_matrix(torch.cat(found), val.masks, len(val.classes)), val.classes)
    return {"miou": _r(m["miou"]), "pixel_accuracy": _r(m["pixel_accuracy"])}


def peer(args, train, val) -> dict:
    """smp's U-Net in a plain loop for the same wall-clock budget."""
    import segmentation_models_pytorch as smp
    import torch
    import torch.nn.functional as F

    torch.manual_seed(0)
    start = time.perf_counter()
    model = smp.Unet(args.peer_encoder, encoder_weights=None, in_channels=train.channels,
                     classes=len(train.classes))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    mean, std = train.mean.view(1, -1, 1, 1), train.std.view(1, -1, 1, 1)
    g = torch.Generator().manual_seed(0)
    budget_s, rows, steps, seen, epoch = args.minutes * 60, [], 0, 0, 0
    model.train()
    while not rows or time.perf_counter() - start < budget_s:  # at least one step and one evaluation
        order = torch.randperm(len(train), generator=g)
        for i in range(0, len(train), args.batch):
            index = order[i:i + args.batch]
            x, y = _augment_flip(train.images[index].float(), train.masks[index], g)
            loss = F.cross_entropy(model((x / 255 - mean) / std), y.long(), ignore_index=255)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            steps, seen = steps + 1, seen + len(index)
            if time.perf_counter() - start >= budget_s:
                break
        epoch += 1
        rows.append({"epoch": epoch, "images_seen": seen, "wall_s": _r(time.perf_counter() - start, 1),
                     **_evaluate_plain(model, val, mean, std)})
        log(f"peer smp U-Net({args.peer_encoder}): epoch {epoch}, mIoU {rows[-1]['miou']}")
    wall = time.perf_counter() - start
    return {"model": f"segmentation_models_pytorch Unet({args.peer_encoder}, encoder_weights=None)",
            "version": smp.__version__, "parameters": sum(p.numel() for p in model.parameters()),
            "steps": steps, "images_seen": seen, "images_per_s": _r(seen / wall, 1), "wall_s": _r(wall, 1),
            "final": rows[-1], "history": rows}


def speed(args, train, val, runs_dir: str) -> dict:
    """Training images/s of the same segmenter: a plain loop, then convkit's engine."""
    import torch
    import torch.nn.functional as F

    from convkit.tasks.segmentation.models import build_segmenter

    torch.manual_seed(0)
    model = build_segmenter(args.speed_model, None, len(train.classes), train.channels, tuple(train.image_shape[1:]),
                            **model_kwargs(args, args.speed_model))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    mean, std = train.mean.view(1, -1, 1, 1), train.std.view(1, -1, 1, 1)
    g = torch.Generator().manual_seed(0)
    order = torch.randperm(len(train), generator=g)

    def step(i: int) -> None:
        index = order[torch.arange(i * args.batch, (i + 1) * args.batch) % len(train)]
        x, y = _augment_flip(train.images[index].float(), train.masks[index], g)
        out = model((x / 255 - mean) / std)
        out = out[-1] if isinstance(out, list | tuple) else out
        loss = F.cross_entropy(out, y.long(), ignore_index=255)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    model.train()
    for i in range(2):
        step(i)
    t = time.perf_counter()
    for i in range(args.speed_steps):
        step(2 + i)
    plain_s = time.perf_counter() - t
    engine = trainer(args, runs_dir, args.speed_model, epochs=1, limit=args.speed_steps * args.batch,
                     test_limit=min(32, len(val)), train_data=train, test_data=val)
    row = engine.fit().history[-1]
    plain = args.speed_steps * args.batch / plain_s
    return {"model": args.speed_model, "steps": args.speed_steps, "batch": args.batch,
            "plain_loop_images_per_s": _r(plain, 1), "engine_images_per_s": _r(row["images_per_s"], 1),
            "ratio": _r(row["images_per_s"] / plain, 3)}


def main(argv=None) -> dict:
    args = parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    from convkit.tasks.segmentation.data import scenes_segmentation

    load_before = os.getloadavg()
    t = time.perf_counter()
    train, val = scenes_segmentation("train"), scenes_segmentation("val")
    if args.limit:
        train = train.subset(range(min(args.limit, len(train))))
    if args.test_limit:
        val = val.subset(range(min(args.test_limit, len(val))))
    val = val.with_stats(train.mean, train.std)
    data_s = time.perf_counter() - t
    out = {"benchmark": "segment", "machine": {"cpu": cpu_name(), "threads": args.threads,
                                               "torch": torch.__version__},
           "data": {"train": len(train), "val": len(val), "classes": len(train.classes), "seconds": _r(data_s, 1)},
           "budget_minutes": args.minutes, "models": []}
    # the engine's progress lines go to stderr: stdout is the JSON alone
    with tempfile.TemporaryDirectory() as runs_dir, contextlib.redirect_stdout(sys.stderr):
        for kind in args.models:
            out["models"].append(quality(kind, args, train, val, runs_dir))
        if args.classifier_epochs:
            out["convolutionized"] = convolutionized(args, val, runs_dir)
        if args.peer_encoder:
            out["peer"] = peer(args, train, val)
        if args.speed_steps:
            out["speed"] = speed(args, train, val, runs_dir)
    out["load_average"] = {"before": [round(v, 2) for v in load_before],
                           "after": [round(v, 2) for v in os.getloadavg()]}
    text = json.dumps(out, indent=1)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    return out


if __name__ == "__main__":
    main()
