"""The ``convkit train``, ``finetune``, ``evaluate``, ``predict`` and ``lr-find`` verbs (registered by ``cli.main``).

The options of ``train`` and ``lr-find`` are generated from the fields of `convkit.train.TrainConfig` (their help,
group, choices and flags are declared with `convkit.train.config.opt`); options left out keep the config file's
value (``--config``) or the default, so ``convkit train`` alone trains fastcnn on the shipped data.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import types
import typing
from dataclasses import MISSING, fields
from pathlib import Path

from convkit.cli.common import (
    FORMATTER,
    CLIError,
    MergeKeyValues,
    add_json,
    int_at_least,
    key_values,
    nonnegative_int,
    positive_float,
    positive_int,
    print_json,
    warn,
)

EXAMPLES = {
    "train": """examples:
  convkit train                                  fastcnn on the shipped Fashion-MNIST subset (under a minute)
  convkit train resnet20 --data cifar10 --epochs 30 --augment horizontal_flip=1,crop_padding=4
  convkit train --data fashion-mnist --data-dir ~/data --epochs 10 --ema 0.999 --quiet
  convkit train my_model.yaml --data photos/ --optimizer adamw --lr 3e-3 --schedule cosine --warmup-epochs 1
  convkit train --task detect                    a YOLO-style detector on the built-in scenes (a few minutes)
  convkit train --task detect --model fasterrcnn --backbone resnet18 --data coco.json --val-data val.json
  convkit train --task segment                   a U-Net on the built-in scenes' masks (a few minutes)
  convkit train --task segment --model fcn8s --backbone fastcnn --data folder_with_images_and_masks/
  convkit train --resume runs/fastcnn-20250101-120000      continue after Ctrl-C, SIGTERM or kill -9
  convkit train --config runs/fastcnn-20250101-120000/config.yaml --name again    repeat a run
  torchrun --nproc_per_node=2 -m convkit train resnet20 --data cifar10   several GPUs or processes""",
    "finetune": """examples:
  convkit train --data fashion-mnist --data-dir ../shared/data --epochs 3 --name fmnist    a source to reuse
  convkit finetune runs/fmnist --data digits --strategy features      a classifier on its cached features
  convkit finetune runs/fmnist --data digits --strategy finetune --head-epochs 2 --epochs 6 --lr-decay 0.5
  convkit finetune runs/fmnist --data digits --strategy gradual --epochs 6 --bn train
  convkit finetune resnet18.pth --data photos/ --strategy head        torchvision weights (weights_only)
  convkit finetune --weights resnet18.IMAGENET1K_V1 --data photos/    downloaded once, checksum checked
  convkit finetune lenet5 --data digits --strategy head               untrained: the from-scratch baseline
  convkit finetune --resume runs/fmnist-ft                             continue, in any phase""",
    "evaluate": """examples:
  convkit evaluate runs/fastcnn-20250101-120000             on the run's own test set (what it reported)
  convkit evaluate runs/fastcnn-20250101-120000/last.safetensors --data fashion-mnist --json
  convkit evaluate model.safetensors --data photos/test --worst 32 --out report/
  convkit evaluate runs/yolo-20250101-120000 --json          a detector: COCO's 12 numbers, VOC AP, eval_pr.png
  convkit evaluate runs/yolo-20250101-120000 --data scenes/annotations/instances_val.json
  convkit evaluate runs/unet-20250101-120000                 a segmenter: mIoU, per-class IoU, eval_iou.png""",
    "predict": """examples:
  convkit predict runs/fastcnn-20250101-120000 shoe.png
  convkit predict runs/fastcnn-20250101-120000 photos/ --top 3 --json
  convkit predict runs/yolo-20250101-120000 scenes/val --out drawn/ --format coco > detections.json
  convkit predict runs/unet-20250101-120000 scenes/val --out masks/ --json     mask PNGs, overlays, areas
  convkit predict runs/fastcnn-20250101-120000/model.onnx shoe.png    an exported model, through onnxruntime""",
    "lr-find": """examples:
  convkit lr-find                                  fastcnn on the shipped subset
  convkit lr-find resnet20 --data cifar10 --batch-size 128 --out lr.png""",
}

_S = argparse.SUPPRESS  # options not given stay out of the namespace: they do not override the config


def add_train_arguments(p: argparse.ArgumentParser, config_class: type | None = None) -> None:
    """Adds ``--config`` and one option per field of `TrainConfig` (or of ``config_class``, a subclass).

    Each option comes from its field's metadata (see `convkit.train.config.opt`): help text, ``--help`` section,
    choices, metavar and flags; how it parses its value follows the field's type (see `value_options`). An
    option not given stays out of the namespace, so it does not override ``--config``'s value; its dest is the
    field's name (`config_overrides` collects them).

    Example:
        >>> parser = argparse.ArgumentParser()
        >>> add_train_arguments(parser)
        >>> args = parser.parse_args(["resnet20", "--epochs", "3", "--no-augment", "-q"])
        >>> config_overrides(args)
        {'model': 'resnet20', 'epochs': 3, 'augment': {}, 'quiet': True}
    """
    from convkit.train.config import GROUPS, TrainConfig

    config_class = config_class or TrainConfig
    hints = typing.get_type_hints(config_class)
    p.add_argument("--config", metavar="YAML", help="start from this config (e.g. a run's config.yaml)")
    groups = {name: p.add_argument_group(name) for name in GROUPS}
    for f in fields(config_class):
        meta = f.metadata
        if "help" not in meta:
            raise TypeError(f"{config_class.__name__}.{f.name} has no command-line option: declare it with "
                            "convkit.train.config.opt(default, help=..., group=...)")
        group = groups[meta["group"]]
        options = {"default": _S, "help": _help(f), **value_options(hints[f.name], meta)}
        if meta["positional"]:
            options.pop("metavar", None)  # a positional's name is its metavar
            group.add_argument(f.name, nargs="?", **options)
            # also as a flag (`--model fasterrcnn`), which argparse would otherwise take for --model-arg
            group.add_argument("--" + f.name.replace("_", "-"), dest=f.name, default=_S, metavar=f.name.upper(),
                               help=f"the same as the positional {f.name}")
            continue
        flags = meta["flags"] or ("--" + f.name.replace("_", "-"),)
        group.add_argument(*flags, dest=f.name, **options)
        if meta["off"]:
            group.add_argument("--no-" + flags[0].lstrip("-"), dest=f.name, action="store_const", const={},
                               default=_S, help=meta["off"])


def value_options(hint, meta: typing.Mapping | None = None) -> dict:
    """The argparse keywords that parse a value of the field type ``hint`` (``X | None`` as X).

    ``bool``: ``--x/--no-x``; ``bool | str``: a flag with an optional value (``--compile`` or ``--compile
    aot_eager``); ``dict``: ``K=V,...`` (`convkit.cli.common.key_values`), repeatable (`MergeKeyValues`); ``tuple[float, float]``: two values;
    ``int``, ``float``, ``str``: one value of that type. The field's ``choices`` and ``metavar`` are added.

    Example:
        >>> value_options(int | None)
        {'type': <class 'int'>}
        >>> value_options(bool)["action"].__name__
        'BooleanOptionalAction'
    """
    meta = meta or {}
    kinds = set(typing.get_args(hint)) if typing.get_origin(hint) in (typing.Union, types.UnionType) else {hint}
    kinds.discard(type(None))
    (kind,) = kinds if len(kinds) == 1 else (None,)
    origin = typing.get_origin(kind) or kind
    if kinds == {bool}:
        options = {"action": argparse.BooleanOptionalAction}
    elif kinds == {bool, str}:
        options = {"nargs": "?", "const": True}
    elif origin is dict:
        options = {"type": key_values, "action": MergeKeyValues, "metavar": "K=V,..."}
    elif origin is tuple and len(set(typing.get_args(kind))) == 1:
        options = {"nargs": len(typing.get_args(kind)), "type": typing.get_args(kind)[0]}
    elif kind in (int, float, str):
        options = {"type": kind}
    else:
        raise TypeError(f"no command-line parser for a field of type {hint}; add one to value_options")
    options.update({k: meta[k] for k in ("choices", "metavar") if meta.get(k) is not None})
    return options


def _help(f) -> str:
    """The field's help, with its default appended unless the text speaks of one ('%' escaped for argparse)."""
    text = f.metadata["help"]
    default = f.default_factory() if f.default_factory is not MISSING else f.default
    if "default" not in text and default not in (None, {}):
        if isinstance(default, bool):
            shown = "on" if default else "off"
        elif isinstance(default, dict):
            shown = ",".join(f"{k}={json.dumps(v)}" for k, v in default.items())
        elif isinstance(default, tuple):
            shown = " ".join(map(str, default))
        else:
            shown = str(default)
        text += f" (default: {shown})"
    return text.replace("%", "%%")


def config_overrides(args: argparse.Namespace, config_class: type | None = None) -> dict:
    """The config fields given on the command line, by name (the options left out are not in ``args``).

    Example:
        >>> parser = argparse.ArgumentParser()
        >>> add_train_arguments(parser)
        >>> _ = parser.add_argument("--json", action="store_true")  # not a config field: left out
        >>> config_overrides(parser.parse_args(["--lr", "0.1", "--json"]))
        {'lr': 0.1}
    """
    from convkit.train.config import TrainConfig

    return {f.name: getattr(args, f.name) for f in fields(config_class or TrainConfig) if hasattr(args, f.name)}


def _config(args: argparse.Namespace, config_class: type | None = None):
    from convkit.train import TrainConfig

    config_class = config_class or TrainConfig
    if args.config and not Path(args.config).is_file():
        raise CLIError(f"--config {args.config}: no such file (give a YAML file such as a run's config.yaml)")
    if getattr(args, "task", None) == "segment" and getattr(args, "model", None) == "maskrcnn":
        args.task = "instance"  # Mask R-CNN segments instances: the instance segmentation task
    base = config_class.from_yaml(args.config) if args.config else config_class.for_task(getattr(args, "task", None))
    return base.replace(**config_overrides(args, config_class))


def cmd_train(args: argparse.Namespace) -> int:
    from convkit.train import train
    from convkit.train.trainer import RESUMABLE_OVERRIDES

    if args.resume:
        given = set(config_overrides(args)) - set(RESUMABLE_OVERRIDES)
        if given or args.config:
            drop = ", ".join(sorted(given)) or "--config"
            raise CLIError(f"--resume continues a run with its own config; drop {drop}")
        result = train(resume=args.resume, **{k: getattr(args, k) for k in RESUMABLE_OVERRIDES if k in args})
    else:
        result = train(_config(args), find_lr=args.find_lr)  # a NaN loss: NonFiniteLossError, exit code 1
    if result.run_dir is None:  # a torchrun rank other than 0
        return 0
    if result.stopped == "interrupted":
        return 128 + int(result.signal or signal.SIGINT)
    _print_summary(result)
    return 0


def cmd_finetune(args: argparse.Namespace) -> int:
    from convkit.train import finetune
    from convkit.train.config import FinetuneConfig
    from convkit.train.trainer import RESUMABLE_OVERRIDES

    if args.resume:
        given = set(config_overrides(args, FinetuneConfig)) - set(RESUMABLE_OVERRIDES)
        if given or args.config:
            drop = ", ".join(sorted(given)) or "--config"
            raise CLIError(f"--resume continues a run with its own config; drop {drop}")
        result = finetune(resume=args.resume, **{k: getattr(args, k) for k in RESUMABLE_OVERRIDES if k in args})
    else:
        config = _config(args, FinetuneConfig)
        if config.model is None and not config.weights:
            raise CLIError("give SOURCE (a run folder, checkpoint, weights file or zoo name) or --weights NAME; "
                           "see convkit finetune --help")
        result = finetune(config=config)
    if result.run_dir is None:
        return 0
    if result.stopped == "interrupted":
        return 128 + int(result.signal or signal.SIGINT)
    _print_summary(result)
    return 0


def _print_summary(result) -> None:
    import numpy as np

    last, best, run = result.history[-1], result.best, result.run_dir
    if "test_miou" in last:  # a segmenter
        print(f"\nvalidation mIoU {100 * last['test_miou']:.2f}%, pixel accuracy {100 * last['test_pixel_accuracy']:.2f}%; "
              f"best mIoU {100 * best['test_miou']:.2f}% at epoch {best['epoch']}; {last['elapsed_s']:.1f} s of training")
        print(f"run folder: {run}  (best.safetensors, last.safetensors, config.yaml, metrics.csv, curves.png, "
              "iou.png, val_predictions.png)")
        print(f"next: convkit evaluate {run}    convkit predict {run} IMAGE_OR_FOLDER --out masks/")
        return
    if "test_mask_map" in last:  # instance segmentation
        print(f"\nvalidation mask AP@[.5:.95] {100 * last['test_mask_map']:.2f}% (AP50 "
              f"{100 * last['test_mask_map50']:.2f}%); best {100 * best['test_mask_map']:.2f}% at epoch {best['epoch']}")
    if "test_map" in last:  # a detector
        print(f"\nvalidation mAP@[.5:.95] {100 * last['test_map']:.2f}%, mAP@0.5 {100 * last['test_map50']:.2f}%; "
              f"best mAP@[.5:.95] {100 * best['test_map']:.2f}% (mAP@0.5 {100 * best['test_map50']:.2f}%) at epoch "
              f"{best['epoch']}; {last['elapsed_s']:.1f} s of training")
        print(f"run folder: {run}  (best.safetensors, last.safetensors, config.yaml, metrics.csv, curves.png, "
              "val_predictions.png)")
        print(f"next: convkit evaluate {run}    convkit predict {run} IMAGE_OR_FOLDER --out drawn/")
        return
    print(f"\ntest accuracy {100 * last['test_acc']:.2f}% (top-5 {100 * last['test_top5']:.2f}%); best "
          f"{100 * best['test_acc']:.2f}% at epoch {best['epoch']}; {last['elapsed_s']:.1f} s of training")
    if result.confusion is not None:
        confusion = np.asarray(result.confusion)
        recall = np.diag(confusion) / np.maximum(confusion.sum(1), 1)
        worst = np.argsort(recall)[:3]
        print("hardest classes (recall): " + ", ".join(f"{result.classes[i]} {100 * recall[i]:.1f}%" for i in worst))
    extra = ", finetune.json" if (run / "finetune.json").is_file() else ""
    print(f"run folder: {run}  (best.safetensors, last.safetensors, config.yaml, metrics.csv, curves.png, "
          f"confusion.png{extra})")
    print(f"next: convkit evaluate {run}    convkit predict {run} IMAGE_OR_FOLDER")


def cmd_evaluate(args: argparse.Namespace) -> int:
    from convkit.train import evaluate, load_checkpoint
    from convkit.train.config import check_device

    args.device = check_device(args.device, "--device")  # "auto" becomes the device it picks
    ckpt = load_checkpoint(args.checkpoint, args.device)
    from convkit.tasks.detection.inference import DETECTOR_TASKS

    if ckpt.meta.get("task") in DETECTOR_TASKS:
        return _evaluate_by_task(ckpt, args, "convkit.tasks.detection.inference", "evaluate_detector")
    if ckpt.meta.get("task") == "segment":
        return _evaluate_by_task(ckpt, args, "convkit.tasks.segmentation.inference", "evaluate_segmenter")
    split = args.split or "test"
    dataset, what = _evaluation_data(ckpt, args.data, split, args.data_dir)
    out = None if args.no_plots else Path(args.out) if args.out else ckpt.path.parent
    result = evaluate(ckpt, dataset, args.batch_size, args.device, args.worst, out)
    return _show_evaluation(ckpt, args, f"{ckpt.path} on {what}", result, {"split": split, "evaluated_on": what})


def _show_evaluation(ckpt, args, title: str, result, fields: dict) -> int:
    """Prints an evaluation (`--json`: one object) and names the pictures written, on stderr."""
    if args.json:
        print_json({"checkpoint": str(ckpt.path), "data": str(args.data) if args.data else None, **fields,
                    **result.to_dict()})
    else:
        print(f"{title}:\n{result}")
        for name, path in result.files.items():
            print(f"wrote {path} ({name.replace('_', ' ')})", file=sys.stderr)
    return 0


def _evaluate_by_task(ckpt, args, module: str, evaluate: str) -> int:
    """`convkit evaluate` of a detector (COCO's 12 numbers, VOC AP, eval_pr.png) or a segmenter (mIoU, per-class
    IoU, eval_iou.png): `module`'s ``evaluation_data`` and its `evaluate` function, on the run's own validation set
    or --data."""
    import importlib

    inference = importlib.import_module(module)
    dataset, what = inference.evaluation_data(ckpt, args.data)
    out = None if args.no_plots else Path(args.out) if args.out else ckpt.path.parent
    result = getattr(inference, evaluate)(ckpt, dataset, batch_size=min(args.batch_size, 64), device=args.device,
                                          out=out)
    return _show_evaluation(ckpt, args, f"{ckpt.path} on {what} ({result.images:,} images)", result,
                            {"evaluated_on": what})


def _evaluation_data(ckpt, data, split: str, data_dir):
    """--data whole (a folder or CSV; a named dataset's or split folder's `split`), else the run's own test set
    (or training set), rebuilt from the config in the checkpoint as training built it (`run_data`)."""
    from convkit.data import load_eval_data
    from convkit.models.weights import CheckpointError
    from convkit.train import TrainConfig
    from convkit.train.trainer import run_data
    from convkit.utils import shorten

    if data:  # labels matched to the model's classes by name
        return load_eval_data(data, split, data_dir, classes=ckpt.classes)
    if not ckpt.meta.get("config"):
        raise CLIError(f"{ckpt.path}: its metadata does not say what it was trained on; pass --data")
    try:
        config = TrainConfig.from_dict(ckpt.meta["config"])
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{ckpt.path}: metadata field config: {shorten(str(err), 300)}") from None
    dataset, what = run_data(config, split, **({"data_dir": data_dir} if data_dir else {}))
    return dataset, f"the run's {'test' if split == 'test' else 'training'} set, {what}"


def cmd_predict(args: argparse.Namespace) -> int:
    from convkit.train import predict
    from convkit.train.config import check_device

    args.device = check_device(args.device, "--device")  # "auto" becomes the device it picks
    from convkit.tasks.detection.inference import DETECTOR_TASKS

    if str(args.checkpoint).lower().endswith(".onnx"):  # an exported model, run by onnxruntime, answers alike
        from convkit.export import load_onnx

        args.checkpoint = load_onnx(args.checkpoint)
        if args.device != "cpu":
            warn(f"{args.checkpoint.path}: an ONNX file runs on the CPU (onnxruntime); --device {args.device} ignored")
    task = _task_of(args.checkpoint)
    if task in DETECTOR_TASKS:
        return _predict_detector(args)
    if args.format == "coco":
        raise CLIError(f"--format coco writes detections; this checkpoint is a {_TASK_NOUNS.get(task, task)}")
    if task == "segment":
        return _predict_segmenter(args)
    results = predict(args.checkpoint, args.images, top=args.top, batch_size=args.batch_size, device=args.device)
    failed = [r for r in results if r.error]
    for r in failed:
        warn(r.error)
    if args.json:
        print_json([r.to_dict() for r in results])
    else:
        for r in results:
            if not r.error:
                print(f"{r.path}: " + ", ".join(f"{c} {100 * p:.1f}%" for c, p in r.top))
    if not results:
        raise CLIError("no images found in " + ", ".join(args.images))
    return 1 if failed else 0


_TASK_NOUNS = {"classification": "classifier", "segment": "segmenter"}


def _task_of(checkpoint) -> str:
    """The task a run or checkpoint was trained for ("classification" when unreadable: predict then says why)."""
    from convkit.models.reference import Checkpoint
    from convkit.models.weights import find_checkpoint, read_meta

    if isinstance(checkpoint, Checkpoint):
        return str(checkpoint.meta.get("task") or "classification")
    try:
        return str(read_meta(find_checkpoint(Path(checkpoint), "best")).get("task") or "classification")
    except Exception:  # not there or not readable: predict itself says what is wrong
        return "classification"


def _predict_segmenter(args) -> int:
    """`convkit predict` with a segmenter: a mask PNG and an overlay per image, per-class pixel areas."""
    from convkit.tasks.segmentation.inference import predict_segmentation

    out = Path(args.out) if args.out else _run_folder(args.checkpoint) / "predictions"
    results = predict_segmentation(args.checkpoint, args.images, batch_size=min(args.batch_size, 64),
                                   device=args.device, out=out)
    if not results:
        raise CLIError("no images found in " + ", ".join(args.images))
    failed = [r for r in results if r.error]
    for r in failed:
        warn(r.error)
    if args.json:
        print_json([r.to_dict() for r in results])
    else:
        for r in results:
            if not r.error:
                total = max(1, r.size[0] * r.size[1])
                shown = sorted(r.areas.items(), key=lambda kv: -kv[1])
                print(f"{r.path}: " + ", ".join(f"{c} {100 * n / total:.1f}%" for c, n in shown))
    print(f"wrote {sum(1 for r in results if r.mask)} mask PNG(s) and overlay(s) to {out}/", file=sys.stderr)
    return 1 if failed else 0


def _predict_detector(args) -> int:
    """`convkit predict` with a detector: labelled boxes drawn on each image, detections as JSON or COCO."""
    from convkit.tasks.detection.inference import predict_detections

    out = Path(args.out) if args.out else _run_folder(args.checkpoint) / "predictions"
    results, coco = predict_detections(args.checkpoint, args.images, score_threshold=args.conf,
                                       batch_size=min(args.batch_size, 64), device=args.device, draw=out)
    if not results:
        raise CLIError("no images found in " + ", ".join(args.images))
    failed = [r for r in results if r.error]
    for r in failed:
        warn(r.error)
    if args.format == "coco":
        print_json(coco)
    elif args.json:
        print_json([r.to_dict() for r in results])
    else:
        for r in results:
            if not r.error:
                found = ", ".join(f"{c} {100 * s:.0f}% at [{', '.join(f'{v:.0f}' for v in b)}]"
                                  for c, s, b in zip(r.classes, r.scores, r.boxes))
                print(f"{r.path}: {found or 'nothing above the threshold'}")
    print(f"wrote {sum(1 for r in results if r.drawn)} image(s) with their boxes drawn to {out}/", file=sys.stderr)
    return 1 if failed else 0


def _run_folder(checkpoint) -> Path:
    """The folder of a run (or of a checkpoint or exported file)."""
    from convkit.models.reference import Checkpoint

    path = Path(checkpoint.path if isinstance(checkpoint, Checkpoint) else checkpoint)
    return path if path.is_dir() else path.parent


def cmd_lr_find(args: argparse.Namespace) -> int:
    from convkit.train import Trainer

    trainer = Trainer(_config(args))
    result = trainer.find_lr(args.start, args.end, args.steps, plot=args.out)
    if args.json:
        print_json(result.to_dict())
    else:
        s = result.suggestion
        print(f"suggested learning rate: {s:.3g}" if s else "no clear descent in the sweep; try a wider range")
        print(f"loss curve: {args.out}" + (f"\nuse it: convkit train ... --lr {s:.3g}" if s else ""))
    return 0


def register(verbs, formatter_class=FORMATTER) -> None:
    """Adds the train, evaluate, predict and lr-find subparsers to ``verbs`` (from add_subparsers)."""
    fmt = formatter_class
    p = verbs.add_parser("train", help="train a model (default: fastcnn on the shipped Fashion-MNIST subset)",
                         description="Train a classifier (or, with --task detect, a detector; --task segment, a segmenter; "
                         "--task instance, Mask R-CNN). Writes runs/<name>/: config.yaml, metrics.csv, "
                         "curves.png, confusion.png, best/last.safetensors and resume.safetensors. Ctrl-C or "
                         "SIGTERM saves and stops; --resume continues (bit-identical on CPU).",
                         epilog=EXAMPLES["train"], formatter_class=fmt)
    add_train_arguments(p)
    p.add_argument("--resume", metavar="RUN", help="continue the run in this folder")
    p.add_argument("--find-lr", action="store_true", help="run the learning-rate finder first and use its suggestion")
    p.set_defaults(run=cmd_train)

    from convkit.train.config import FinetuneConfig

    p = verbs.add_parser("finetune", help="reuse a trained network on new data: features, head, finetune, gradual",
                         description="Reuse a trained network (a run, a checkpoint, torchvision/timm weights) on "
                         "new data, on the training engine: its input channels, input size and classes are "
                         "adapted (each change printed), then --strategy features (a classifier on cached "
                         "features), head (a new head on the frozen body), finetune (the head, then unfrozen "
                         "stages at a smaller rate) or gradual (stages unfrozen one by one). The run folder "
                         "also holds finetune.json: the source's SHA-256, the adaptations, which parameters "
                         "were frozen in each phase and each group's learning rate per epoch. --resume "
                         "continues (bit-identical on CPU), in any phase.",
                         epilog=EXAMPLES["finetune"], formatter_class=fmt)
    add_train_arguments(p, FinetuneConfig)
    p.add_argument("--resume", metavar="RUN", help="continue the fine-tuning run in this folder")
    p.set_defaults(run=cmd_finetune)

    p = verbs.add_parser("evaluate", help="accuracy, per-class precision/recall, confusion matrix, worst examples",
                         description="Evaluate a checkpoint: top-1/top-5 accuracy, per-class precision and recall, "
                         "the confusion matrix and the worst-classified examples (eval_confusion.png, "
                         "eval_worst.png). A detector: COCO's 12 numbers, VOC AP, eval_pr.png. A segmenter: mIoU, "
                         "pixel accuracy, per-class IoU (eval_iou.png, eval_predictions.png).", epilog=EXAMPLES["evaluate"], formatter_class=fmt)
    p.add_argument("checkpoint", help="a run folder or a .safetensors checkpoint")
    p.add_argument("--data", help="a dataset name, or a folder or CSV evaluated whole (default: the run's own test "
                   "set, as training chose it: its test data, test split or held-out 10%%, and its test limit)")
    p.add_argument("--data-dir", help="where named datasets are looked for")
    p.add_argument("--split", choices=["train", "test"], help="test (default) or train: the split of a named "
                   "--data or of a folder with train/ and test/; without --data, the run's test or training set")
    p.add_argument("--batch-size", type=positive_int, default=1000, help="images per forward pass (default: 1000)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, mps, or auto (default: cpu)")
    p.add_argument("--worst", type=nonnegative_int, default=16,
                   help="how many worst-classified examples to show (default: 16; 0: none)")
    p.add_argument("--out", help="folder for the images (default: the checkpoint's folder)")
    p.add_argument("--no-plots", action="store_true", help="write no images")
    add_json(p)
    p.set_defaults(run=cmd_evaluate)

    p = verbs.add_parser("predict", help="classify, detect or segment images with a trained model",
                         description="Classify image files (any mode: grayscale, RGBA, palette, 16-bit, EXIF-"
                         "rotated) with a trained model; unreadable files are reported and skipped. A detector "
                         "draws its boxes; a segmenter writes a mask PNG and an overlay per image, and --json "
                         "gives each class's pixel area.",
                         epilog=EXAMPLES["predict"], formatter_class=fmt)
    p.add_argument("checkpoint", help="a run folder, a .safetensors checkpoint, or a .onnx file written by "
                   "`convkit export` (run by onnxruntime)")
    p.add_argument("images", nargs="+", help="image files and/or folders")
    p.add_argument("--top", type=positive_int, default=5,
                   help="classes per image (default: 5; more than the model has: all of them)")
    p.add_argument("--batch-size", type=positive_int, default=64, help="images per forward pass (default: 64)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, mps, or auto (default: cpu)")
    p.add_argument("--conf", type=positive_float, default=0.4,
                   help="detectors: the least score of a detection shown (default: 0.4)")
    p.add_argument("--out", help="detectors: the folder where each image is drawn with its labelled boxes and "
                   "scores, a PNG per image; segmenters: where <stem>_mask.png (palette PNG, value = class index) "
                   "and <stem>_overlay.png go (default: predictions/ in the run folder)")
    p.add_argument("--format", choices=["json", "coco"], help="detectors: coco prints a COCO results file "
                   "(image ids 1, 2, ... in file order; category id = class index + 1), json as --json")
    add_json(p)
    p.set_defaults(run=cmd_predict)

    p = verbs.add_parser("lr-find", help="sweep the learning rate and suggest one",
                         description="The learning-rate finder: trains one batch at each of --steps rates from "
                         "--start to --end (log-spaced), plots the smoothed loss and suggests the rate of "
                         "steepest descent. The model is not kept.", epilog=EXAMPLES["lr-find"], formatter_class=fmt)
    add_train_arguments(p)
    p.add_argument("--start", type=positive_float, default=1e-6, help="the first learning rate (default: 1e-6)")
    p.add_argument("--end", type=positive_float, default=10.0, help="the last learning rate (default: 10)")
    p.add_argument("--steps", type=int_at_least(2), default=100, help="rates tried (default: 100)")
    p.add_argument("--out", default="lr_find.png", help="the plot (default: lr_find.png)")
    add_json(p)
    p.set_defaults(run=cmd_lr_find)

