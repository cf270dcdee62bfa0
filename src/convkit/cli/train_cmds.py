"""The ``convkit train``, ``evaluate``, ``predict`` and ``lr-find`` verbs (registered by ``cli.main``).

Each option of ``train`` is a field of `convkit.train.TrainConfig`; options left out keep the config file's
value (``--config``) or the default, so ``convkit train`` alone trains fastcnn on the shipped data.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys

import yaml

EXAMPLES = {
    "train": """examples:
  convkit train                                  fastcnn on the shipped Fashion-MNIST subset (under a minute)
  convkit train resnet20 --data cifar10 --epochs 30 --augment horizontal_flip=1,crop_padding=4
  convkit train --data fashion-mnist --data-dir ~/data --epochs 10 --ema 0.999 --quiet
  convkit train my_model.yaml --data photos/ --optimizer adamw --lr 3e-3 --schedule cosine --warmup-epochs 1
  convkit train --resume runs/fastcnn-20250101-120000      continue after Ctrl-C, SIGTERM or kill -9
  convkit train --config runs/fastcnn-20250101-120000/config.yaml --name again    repeat a run
  torchrun --nproc_per_node=2 -m convkit train resnet20 --data cifar10   several GPUs or processes""",
    "evaluate": """examples:
  convkit evaluate runs/fastcnn-20250101-120000             on the test split of the training data
  convkit evaluate runs/fastcnn-20250101-120000/last.safetensors --data fashion-mnist --json
  convkit evaluate model.safetensors --data photos/test --worst 32 --out report/""",
    "predict": """examples:
  convkit predict runs/fastcnn-20250101-120000 shoe.png
  convkit predict runs/fastcnn-20250101-120000 photos/ --top 3 --json""",
    "lr-find": """examples:
  convkit lr-find                                  fastcnn on the shipped subset
  convkit lr-find resnet20 --data cifar10 --batch-size 128 --out lr.png""",
}

_S = argparse.SUPPRESS  # options not given stay out of the namespace: they do not override the config


def _error(message: str) -> Exception:
    from convkit.cli.main import CLIError  # imported late: cli.main imports this module

    return CLIError(message)


def _key_values(text: str) -> dict:
    """``'a=1,b=true,c=[1,2]'`` -> ``{'a': 1, 'b': True, 'c': [1, 2]}`` (values read as YAML)."""
    out, depth, item = {}, 0, ""
    for ch in text + ",":
        depth += ch in "[{" or -(ch in "]}")
        if ch == "," and depth == 0:
            if item.strip():
                key, sep, value = item.partition("=")
                if not sep:
                    raise argparse.ArgumentTypeError(f"expected key=value, got {item!r}")
                out[key.strip().replace("-", "_")] = yaml.safe_load(value) if value.strip() else None
            item = ""
        else:
            item += ch
    return out


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    """The training options shared by ``train`` and ``lr-find``: one per TrainConfig field."""
    p.add_argument("model", nargs="?", default=_S, help="zoo name or model file (.yaml) (default: fastcnn)")
    p.add_argument("--config", metavar="YAML", help="start from this config (e.g. a run's config.yaml)")
    g = p.add_argument_group("data")
    g.add_argument("--data", default=_S, help="dataset name or path (default: the shipped Fashion-MNIST subset)")
    g.add_argument("--data-dir", default=_S, help="where named datasets are looked for")
    g.add_argument("--test-data", default=_S, help="evaluation set (default: the test split of --data)")
    g.add_argument("--limit", type=int, default=_S, help="train on the first N images only")
    g.add_argument("--test-limit", type=int, default=_S, help="evaluate on the first N test images only")
    g.add_argument("--stream", action=argparse.BooleanOptionalAction, default=_S,
                   help="decode image folders/CSVs from disk in every batch instead of holding them in memory "
                   "(default: only sets over 2 GiB as uint8); --no-stream refuses to stream")
    g.add_argument("--workers", type=int, default=_S, help="DataLoader workers that decode streamed images "
                   "(default: min(8, cores); 0: in the training process)")
    g.add_argument("--augment", type=_key_values, default=_S, metavar="K=V,...",
                   help="augmentations, e.g. horizontal_flip=1,crop_padding=2,mixup=0.2 (see AugmentConfig)")
    g.add_argument("--no-augment", dest="augment", action="store_const", const={}, default=_S,
                   help="no augmentation")
    g = p.add_argument_group("model")
    g.add_argument("--model-arg", dest="model_kwargs", type=_key_values, default=_S, metavar="K=V,...",
                   help="zoo builder arguments, e.g. widths=[32,64,128],dropout=0.1")
    g = p.add_argument_group("optimisation")
    g.add_argument("--epochs", type=int, default=_S)
    g.add_argument("--batch-size", type=int, default=_S)
    g.add_argument("--eval-batch-size", type=int, default=_S)
    g.add_argument("--optimizer", choices=["sgd", "adam", "adamw"], default=_S)
    g.add_argument("--lr", type=float, default=_S, help="peak learning rate")
    g.add_argument("--momentum", type=float, default=_S)
    g.add_argument("--nesterov", action=argparse.BooleanOptionalAction, default=_S)
    g.add_argument("--weight-decay", type=float, default=_S)
    g.add_argument("--schedule", choices=["onecycle", "cosine", "step", "constant"], default=_S)
    g.add_argument("--warmup-epochs", type=float, default=_S)
    g.add_argument("--step-size", type=int, default=_S, help="epochs between steps of --schedule step")
    g.add_argument("--gamma", type=float, default=_S, help="factor of --schedule step")
    g.add_argument("--label-smoothing", type=float, default=_S)
    g.add_argument("--grad-clip", type=float, default=_S, help="clip the gradient norm (0: off)")
    g.add_argument("--ema", type=float, default=_S, help="EMA decay of the weights, e.g. 0.999 (0: off)")
    g.add_argument("--early-stopping", type=int, default=_S, metavar="PATIENCE")
    g.add_argument("--tta", action=argparse.BooleanOptionalAction, default=_S,
                   help="evaluate on images and their mirror images (default: when training flips them)")
    g = p.add_argument_group("execution")
    g.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16"], default=_S)
    g.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=_S)
    g.add_argument("--compile", nargs="?", const=True, default=_S, metavar="BACKEND",
                   help="torch.compile the model (optionally with this backend, e.g. aot_eager)")
    g.add_argument("--cudnn-benchmark", action=argparse.BooleanOptionalAction, default=_S,
                   help="cuDNN autotuning: seconds at the start, faster steps for long GPU runs")
    g.add_argument("--device", default=_S, help="auto, cpu, cuda, cuda:1...")
    g.add_argument("--threads", type=int, default=_S, help="CPU threads (default: all cores)")
    g.add_argument("--seed", type=int, default=_S)
    g.add_argument("--deterministic", action=argparse.BooleanOptionalAction, default=_S)
    g = p.add_argument_group("run folder")
    g.add_argument("--name", default=_S, help="run folder name under --runs-dir (default: model-date-time)")
    g.add_argument("--runs-dir", default=_S, help="where run folders go (default: runs)")
    g.add_argument("--checkpoint-every", type=int, default=_S, metavar="STEPS",
                   help="also save the resumable state every N steps (default: epoch ends only)")
    g.add_argument("--log-every", type=int, default=_S, metavar="STEPS")
    g.add_argument("--quiet", "-q", action="store_true", default=_S, help="one line per epoch, no progress bars")


_NOT_CONFIG = {"config", "resume", "find_lr", "run", "verb", "start", "end", "steps", "out", "json"}


def _config(args: argparse.Namespace):
    from convkit.train import TrainConfig

    overrides = {k: v for k, v in vars(args).items() if k not in _NOT_CONFIG}
    try:
        base = TrainConfig.from_yaml(args.config) if args.config else TrainConfig()
        return base.replace(**overrides)
    except (ValueError, OSError) as err:
        raise _error(str(err)) from None


def _user_errors():
    from convkit.data.errors import DataFormatError, DatasetNotFoundError, LabelError
    from convkit.models import ModelFileError, UnknownModelError
    from convkit.train import CheckpointError

    return (DataFormatError, DatasetNotFoundError, LabelError, ModelFileError, UnknownModelError, CheckpointError,
            FileNotFoundError, FileExistsError, ValueError)


def cmd_train(args: argparse.Namespace) -> int:
    from convkit.train import NonFiniteLossError, train
    from convkit.train.trainer import RESUMABLE_OVERRIDES

    try:
        if args.resume:
            given = {k for k in vars(args) if k not in _NOT_CONFIG} - set(RESUMABLE_OVERRIDES)
            if given or args.config:
                raise _error(f"--resume continues a run with its own config; drop {', '.join(sorted(given)) or '--config'}")
            result = train(resume=args.resume, **{k: getattr(args, k) for k in RESUMABLE_OVERRIDES if k in args})
        else:
            result = train(_config(args), find_lr=args.find_lr)
    except NonFiniteLossError as err:
        print(f"convkit: error: {err}", file=sys.stderr)
        return 1
    except _user_errors() as err:
        raise _error(str(err)) from None
    if result.run_dir is None:  # a torchrun rank other than 0
        return 0
    if result.stopped == "interrupted":
        return 128 + int(result.signal or signal.SIGINT)
    _print_summary(result)
    return 0


def _print_summary(result) -> None:
    import numpy as np

    last, best, run = result.history[-1], result.best, result.run_dir
    print(f"\ntest accuracy {100 * last['test_acc']:.2f}% (top-5 {100 * last['test_top5']:.2f}%); best "
          f"{100 * best['test_acc']:.2f}% at epoch {best['epoch']}; {last['elapsed_s']:.1f} s of training")
    if result.confusion is not None:
        confusion = np.asarray(result.confusion)
        recall = np.diag(confusion) / np.maximum(confusion.sum(1), 1)
        worst = np.argsort(recall)[:3]
        print("hardest classes (recall): " + ", ".join(f"{result.classes[i]} {100 * recall[i]:.1f}%" for i in worst))
    print(f"run folder: {run}  (best.safetensors, last.safetensors, config.yaml, metrics.csv, curves.png, "
          "confusion.png)")
    print(f"next: convkit evaluate {run}    convkit predict {run} IMAGE_OR_FOLDER")


def cmd_evaluate(args: argparse.Namespace) -> int:
    from pathlib import Path

    from convkit.data import load_eval_data
    from convkit.train import evaluate, load_checkpoint

    try:
        ckpt = load_checkpoint(args.checkpoint, args.device)
        data = args.data or ckpt.meta.get("config", {}).get("test_data") or ckpt.meta.get("config", {}).get("data")
        if not data:
            raise _error(f"{ckpt.path}: does not say what it was trained on; pass --data")
        data_dir = args.data_dir or ckpt.meta.get("config", {}).get("data_dir")
        # a folder or CSV whole, else its/the dataset's split; labels matched to the model's classes by name
        dataset, what = load_eval_data(data, args.split, data_dir, classes=ckpt.classes)
        out = None if args.no_plots else Path(args.out) if args.out else ckpt.path.parent
        result = evaluate(ckpt, dataset, args.batch_size, args.device, args.worst, out)
    except _user_errors() as err:
        raise _error(str(err)) from None
    if args.json:
        print(json.dumps({"checkpoint": str(ckpt.path), "data": str(data), "split": args.split, "evaluated_on": what,
                          **result.to_dict()}, indent=2))
    else:
        print(f"{ckpt.path} on {what}:\n{result}")
        for name, path in result.files.items():
            print(f"wrote {path} ({name})", file=sys.stderr)
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from convkit.train import predict

    try:
        results = predict(args.checkpoint, args.images, top=args.top, batch_size=args.batch_size, device=args.device)
    except _user_errors() as err:
        raise _error(str(err)) from None
    failed = [r for r in results if r.error]
    for r in failed:
        print(f"convkit: warning: {r.error}", file=sys.stderr)
    if args.json:
        print(json.dumps([r.to_dict() for r in results], indent=2))
    else:
        for r in results:
            if not r.error:
                print(f"{r.path}: " + ", ".join(f"{c} {100 * p:.1f}%" for c, p in r.top))
    if not results:
        raise _error("no images found in " + ", ".join(args.images))
    return 1 if failed else 0


def cmd_lr_find(args: argparse.Namespace) -> int:
    from convkit.train import Trainer

    try:
        trainer = Trainer(_config(args))
        result = trainer.find_lr(args.start, args.end, args.steps, plot=args.out)
    except _user_errors() as err:
        raise _error(str(err)) from None
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        s = result.suggestion
        print(f"suggested learning rate: {s:.3g}" if s else "no clear descent in the sweep; try a wider range")
        print(f"loss curve: {args.out}" + (f"\nuse it: convkit train ... --lr {s:.3g}" if s else ""))
    return 0


def register(verbs, formatter_class=argparse.RawDescriptionHelpFormatter) -> None:
    """Adds the train, evaluate, predict and lr-find subparsers to ``verbs`` (from add_subparsers)."""
    fmt = formatter_class
    p = verbs.add_parser("train", help="train a model (default: fastcnn on the shipped Fashion-MNIST subset)",
                         description="Train a classifier. Writes runs/<name>/: config.yaml, metrics.csv, "
                         "curves.png, confusion.png, best/last.safetensors and resume.safetensors. Ctrl-C or "
                         "SIGTERM saves and stops; --resume continues (bit-identical on CPU).",
                         epilog=EXAMPLES["train"], formatter_class=fmt)
    add_train_arguments(p)
    p.add_argument("--resume", metavar="RUN", help="continue the run in this folder")
    p.add_argument("--find-lr", action="store_true", help="run the learning-rate finder first and use its suggestion")
    p.set_defaults(run=cmd_train)

    p = verbs.add_parser("evaluate", help="accuracy, per-class precision/recall, confusion matrix, worst examples",
                         description="Evaluate a checkpoint: top-1/top-5 accuracy, per-class precision and recall, "
                         "the confusion matrix and the worst-classified examples (eval_confusion.png, "
                         "eval_worst.png).", epilog=EXAMPLES["evaluate"], formatter_class=fmt)
    p.add_argument("checkpoint", help="a run folder or a .safetensors checkpoint")
    p.add_argument("--data", help="dataset name or path (default: the one the model was trained on)")
    p.add_argument("--data-dir", help="where named datasets are looked for")
    p.add_argument("--split", default="test", choices=["train", "test"])
    p.add_argument("--batch-size", type=int, default=1000)
    p.add_argument("--device", default="cpu")
    p.add_argument("--worst", type=int, default=16, help="how many worst-classified examples to show (default: 16)")
    p.add_argument("--out", help="folder for the images (default: the checkpoint's folder)")
    p.add_argument("--no-plots", action="store_true", help="write no images")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(run=cmd_evaluate)

    p = verbs.add_parser("predict", help="classify images with a trained model",
                         description="Classify image files (any mode: grayscale, RGBA, palette, 16-bit, EXIF-"
                         "rotated) with a trained model; unreadable files are reported and skipped.",
                         epilog=EXAMPLES["predict"], formatter_class=fmt)
    p.add_argument("checkpoint", help="a run folder or a .safetensors checkpoint")
    p.add_argument("images", nargs="+", help="image files and/or folders")
    p.add_argument("--top", type=int, default=5, help="classes per image (default: 5)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(run=cmd_predict)

    p = verbs.add_parser("lr-find", help="sweep the learning rate and suggest one",
                         description="The learning-rate finder: trains one batch at each of --steps rates from "
                         "--start to --end (log-spaced), plots the smoothed loss and suggests the rate of "
                         "steepest descent. The model is not kept.", epilog=EXAMPLES["lr-find"], formatter_class=fmt)
    add_train_arguments(p)
    p.add_argument("--start", type=float, default=1e-6)
    p.add_argument("--end", type=float, default=10.0)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--out", default="lr_find.png", help="the plot (default: lr_find.png)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(run=cmd_lr_find)

