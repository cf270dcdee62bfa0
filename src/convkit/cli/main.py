"""The ``convkit`` command: one subcommand per stage, each with an example in its ``--help``.

This module imports the verb modules (``train_cmds``, ``explain_cmds``, ``kernel_cmds``, ``report_cmds``,
``features_cmds``, ``segment_cmds``, ``serve_cmds``); they import only ``cli.common``. `main` is the one place that turns a user error into
``convkit: error: ...``.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from convkit import __version__
from convkit.cli import (
    explain_cmds,
    export_cmds,
    features_cmds,
    kernel_cmds,
    report_cmds,
    segment_cmds,
    serve_cmds,
    train_cmds,
)
from convkit.cli.common import (  # noqa: F401  (CLIError, build_model: also imported from here by older code)
    FORMATTER,
    USER_ERRORS,
    CLIError,
    add_json,
    add_model_arguments,
    build_model,
    named_segmenter,
    os_error_message,
    parse_shape,
    positive_int,
    print_json,
    reported_warnings,
)

EXAMPLES = {
    "main": """examples:
  convkit train                        train fastcnn on the built-in Fashion-MNIST subset (under a minute)
  convkit models                       list the zoo
  convkit models 'resnet*' --json      the ResNets, as JSON
  convkit summary vgg16 --input 3x224x224 --batch 64 --optimizer adam
  convkit summary my_model.yaml        a model file in the papers' notation
  convkit explain attribution runs/NAME shoe.png --method gradcam
  convkit kernel edge photo.jpg        the Laplacian, before and after
  convkit animate --input 5 --kernel 3 --stride 2 --padding 1
  convkit report runs/NAME             one HTML page: metrics, plots, layers, filters, Grad-CAMs
  convkit features runs/NAME --data D -o f.safetensors   a trained CNN's features of D, and their map
  convkit export runs/NAME --format onnx     the model as ONNX, with its classes and normalisation
  convkit --debug summary my.yaml      on an error, the traceback instead of one line""",
    "models": """examples:
  convkit models
  convkit models 'vgg*'
  convkit models --family resnet --json""",
    "summary": """examples:
  convkit summary alexnet
  convkit summary vgg16 --input 3x224x224 --batch 64 --optimizer adam
  convkit summary resnet18 --num-classes 10 --input 3x32x32 --json
  convkit summary examples/models/vgg_cifar.yaml --plot vgg_cifar.png
  convkit summary resnet18 --detector fasterrcnn --num-classes 10     Faster R-CNN on resnet18: per-part table
  convkit summary fastcnn --detector yolo --in-channels 1 --input 1x128x128
  convkit summary unet --input 1x96x96 --num-classes 11     a segmenter (unet, fcn8s, hourglass, ...)
  convkit summary fcn8s --backbone resnet18 --input 3x128x128""",
}


def _parser() -> argparse.ArgumentParser:
    fmt = FORMATTER
    parser = argparse.ArgumentParser(
        prog="convkit",
        description="convkit: declare, inspect, train, explain and reuse convolutional neural networks.",
        epilog=EXAMPLES["main"],
        formatter_class=fmt,
    )
    parser.add_argument("--version", action="version", version=f"convkit {__version__}")
    parser.add_argument("--debug", action="store_true", help="on an error, raise it: show the traceback")
    verbs = parser.add_subparsers(dest="verb", metavar="<verb>")

    p = verbs.add_parser("models", help="list the model zoo", description="List the model zoo: name, "
                         "parameters, default input size and paper.", epilog=EXAMPLES["models"], formatter_class=fmt)
    p.add_argument("pattern", nargs="?", default="*", help="shell-style name pattern, e.g. 'resnet*' (default: all)")
    p.add_argument("--family", help="only this family (lenet, alexnet, vgg, resnet, ...)")
    add_json(p, "print JSON instead of a table")
    p.set_defaults(run=cmd_models)

    p = verbs.add_parser("summary", help="inspect a model without running it",
                         description="Per-layer output shapes, parameters, multiply-adds, activation memory "
                         "and receptive fields, and the memory of training for a batch size and optimizer, "
                         "computed without running the model.", epilog=EXAMPLES["summary"], formatter_class=fmt)
    add_model_arguments(p)
    p.add_argument("--input", type=parse_shape, help="per-sample input shape CxHxW (default: the model's own)")
    p.add_argument("--batch", type=positive_int, default=1, help="batch size for the memory figures (default: 1)")
    from convkit.inspect.memory import OPTIMIZER_STATE

    p.add_argument("--optimizer", default="sgd", choices=list(OPTIMIZER_STATE),
                   help="optimizer whose state counts in training memory (default: sgd)")
    p.add_argument("--dtype", default="float32", help="parameter and activation dtype (default: float32)")
    add_json(p, "print JSON instead of a table")
    p.add_argument("--csv", metavar="FILE", help="also write the per-layer rows as CSV")
    p.add_argument("--plot", metavar="FILE.png", help="draw the layer stack as boxes sized by their feature maps")
    p.add_argument("--phase", metavar="NAME", help="for a finetune run folder: freeze as this phase did (default: "
                   "its last phase; the table then counts trainable and frozen parameters per layer)")
    from convkit.inspect.detection import DETECTORS

    p.add_argument("--detector", choices=DETECTORS, help="summarise this detector on MODEL as its backbone "
                   "(random weights; --num-classes: object classes, default 3; default input Cx96x96); adds a "
                   "per-part table (backbone, FPN, RPN, heads)")
    p.add_argument("--backbone", help="for an FCN or the convolutionized classifier named as MODEL: its backbone "
                   "(a zoo name, model file or run; default fastcnn)")
    p.set_defaults(run=cmd_summary)

    for module in (train_cmds, explain_cmds, kernel_cmds, report_cmds, features_cmds, segment_cmds, export_cmds,
                   serve_cmds):
        module.register(verbs, fmt)
    return parser


def cmd_models(args: argparse.Namespace) -> int:
    from convkit.models import count_parameters, create_meta_model, list_models, model_info

    names = list_models(args.pattern, family=args.family)
    if not names:
        raise CLIError(f"no model matches {args.pattern!r}" + (f" in family {args.family!r}" if args.family else ""))
    rows = []
    for name in names:
        info = model_info(name)
        rows.append({
            "name": name, "family": info.family, "parameters": count_parameters(create_meta_model(name)),
            "input_size": "x".join(map(str, info.input_size)), "num_classes": info.num_classes,
            "paper": info.paper, "torchvision": info.torchvision, "description": info.description,
        })
    if args.json:
        print_json(rows)
        return 0
    widths = {"name": max(len(r["name"]) for r in rows), "family": max(len(r["family"]) for r in rows)}
    print(f"{'model':<{widths['name']}}  {'family':<{widths['family']}}  {'params':>12}  {'input':>10}  paper")
    for r in rows:
        print(f"{r['name']:<{widths['name']}}  {r['family']:<{widths['family']}}  {r['parameters']:>12,}  "
              f"{r['input_size']:>10}  {r['paper']}")
    print(f"\n{len(rows)} models. Build one with convkit.create_model(name, num_classes=..., in_channels=...).")
    return 0


def cmd_summary(args: argparse.Namespace) -> int:
    from convkit.inspect import summary
    from convkit.inspect.summary import apply_run_freeze

    segmenter = named_segmenter(args.model, args.num_classes, args.in_channels, args.input, args.backbone)
    if args.backbone and segmenter is None:
        raise CLIError(f"--backbone is for a segmenter named as MODEL (fcn8s, fcn16s, fcn32s, convolutionized); "
                       f"{args.model} is not one (a detector takes MODEL as its backbone)")
    if args.detector:
        from convkit.inspect.detection import build_detector

        model, input_shape = build_detector(args.detector, args.model, args.num_classes, args.in_channels)
        input_shape = args.input or input_shape
    elif segmenter is not None:
        model, input_shape = segmenter
    else:
        model, input_shape = build_model(args, args.input)
    frozen_as = apply_run_freeze(model, args.model, args.phase)  # a finetune run: frozen as its phase was
    with reported_warnings():
        result = summary(model, input_size=input_shape, batch_size=args.batch, optimizer=args.optimizer,
                         dtype=args.dtype)
    if args.json:
        data = result.to_dict()
        if frozen_as:
            print(frozen_as, file=sys.stderr)  # stdout stays one JSON document
            data["frozen_as"] = frozen_as
        print_json(data)
    else:
        if frozen_as:
            print(frozen_as)
        print(result)
    if args.csv:
        from convkit.utils import atomic_write_text

        atomic_write_text(args.csv, result.to_csv())  # a full disk leaves no half-written file
    if args.plot:
        from convkit.inspect import plot_summary

        plot_summary(result, args.plot)
        print(f"wrote {args.plot}", file=sys.stderr)
    return 0


def _silence_stdout() -> None:
    # Python flushes stdout again at exit, which would raise on the closed pipe a second time
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # not a real file (captured in tests)
        pass


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``convkit`` command; returns the exit code.

    A user error (`convkit.errors.ConvkitError`; see `convkit.cli.common.USER_ERRORS` for the plain errors
    also taken as one) is printed as ``convkit: error: <message>`` on stderr and ends the command with the
    error's ``exit_code`` (2, a NaN loss 1); ``convkit --debug ...`` raises it instead, with its traceback.
    A failed file operation (a read-only or full disk) is printed as its path and the system's reason
    (`convkit.cli.common.os_error_message`); running out of memory (MemoryError, torch's "out of memory" or
    "can't allocate memory") as one line saying what to make smaller. Any other exception is a bug: it is
    raised, with its traceback.

    Example:
        >>> main(["summary", "resnet19"])
        2
    """
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "run", None):
        parser.print_help()
        return 0
    try:
        return args.run(args)
    except BrokenPipeError:
        # the reader went away (`convkit summary resnet152 | head`): stop quietly, as Unix tools do
        _silence_stdout()
        return 141  # what a shell reports for a tool ended by SIGPIPE
    except USER_ERRORS as err:
        if args.debug:
            raise
        message = os_error_message(err) if isinstance(err, OSError) else str(err)
        print(f"convkit: error: {message}", file=sys.stderr)
        return getattr(err, "exit_code", 2)
    except (MemoryError, RuntimeError) as err:  # torch.OutOfMemoryError is a RuntimeError
        text = str(err)
        if args.debug or not (isinstance(err, MemoryError) or "out of memory" in text.lower()
                              or "can't allocate memory" in text):
            raise
        first = text.strip().splitlines()[0][:300] if text.strip() else type(err).__name__
        print(f"convkit: error: out of memory ({first}); use a smaller --batch-size or --eval-batch-size, or a "
              "smaller model or input (`convkit summary MODEL --input CxHxW --batch N` estimates the memory)",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("convkit: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
