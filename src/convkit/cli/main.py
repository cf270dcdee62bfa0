"""The ``convkit`` command: one subcommand per stage, each with an example in its ``--help``."""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from collections.abc import Sequence

from convkit import __version__

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
  convkit report runs/NAME             one HTML page: metrics, plots, layers, filters, Grad-CAMs""",
    "models": """examples:
  convkit models
  convkit models 'vgg*'
  convkit models --family resnet --json""",
    "summary": """examples:
  convkit summary alexnet
  convkit summary vgg16 --input 3x224x224 --batch 64 --optimizer adam
  convkit summary resnet18 --num-classes 10 --input 3x32x32 --json
  convkit summary examples/models/vgg_cifar.yaml --plot vgg_cifar.png""",
}


class CLIError(Exception):
    """A user error: printed as 'convkit: error: ...' with exit code 2."""


def _parser() -> argparse.ArgumentParser:
    fmt = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog="convkit",
        description="convkit: declare, inspect, train, explain and reuse convolutional neural networks.",
        epilog=EXAMPLES["main"],
        formatter_class=fmt,
    )
    parser.add_argument("--version", action="version", version=f"convkit {__version__}")
    verbs = parser.add_subparsers(dest="verb", metavar="<verb>")

    p = verbs.add_parser("models", help="list the model zoo", description="List the model zoo: name, "
                         "parameters, default input size and paper.", epilog=EXAMPLES["models"], formatter_class=fmt)
    p.add_argument("pattern", nargs="?", default="*", help="shell-style name pattern, e.g. 'resnet*' (default: all)")
    p.add_argument("--family", help="only this family (lenet, alexnet, vgg, resnet, ...)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(run=cmd_models)

    p = verbs.add_parser("summary", help="inspect a model without running it",
                         description="Per-layer output shapes, parameters, multiply-adds, activation memory "
                         "and receptive fields, and the memory of training for a batch size and optimizer, "
                         "computed without running the model.", epilog=EXAMPLES["summary"], formatter_class=fmt)
    add_model_arguments(p)
    p.add_argument("--input", type=parse_shape, help="per-sample input shape CxHxW (default: the model's own)")
    p.add_argument("--batch", type=int, default=1, help="batch size for the memory figures (default: 1)")
    p.add_argument("--optimizer", default="sgd", choices=["sgd", "momentum", "adam"],
                   help="optimizer whose state counts in training memory (default: sgd)")
    p.add_argument("--dtype", default="float32", help="parameter and activation dtype (default: float32)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--csv", metavar="FILE", help="also write the per-layer rows as CSV")
    p.add_argument("--plot", metavar="FILE.png", help="draw the layer stack as boxes sized by their feature maps")
    p.set_defaults(run=cmd_summary)

    from convkit.cli.train_cmds import register as register_training

    register_training(verbs, fmt)
    from convkit.cli.explain_cmds import register as register_explain
    from convkit.cli.kernel_cmds import register as register_kernels
    from convkit.cli.report_cmds import register as register_report

    register_explain(verbs, fmt)
    register_kernels(verbs, fmt)
    register_report(verbs, fmt)
    return parser


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    """The arguments every verb that builds a model shares: a zoo name or a model file, and its head."""
    p.add_argument("model", help="a zoo name (see `convkit models`), a model file (.yaml), a run folder or a "
                   ".safetensors checkpoint")
    p.add_argument("--num-classes", type=int, help="classes of the classifier (default: the model's)")
    p.add_argument("--in-channels", type=int, help="input channels, e.g. 1 for grayscale (default: the model's)")


def parse_shape(text: str) -> tuple[int, ...]:
    """``'3x224x224'`` -> ``(3, 224, 224)``; argparse reports a ValueError as a usage error."""
    try:
        shape = tuple(int(p) for p in text.lower().replace("×", "x").replace(",", "x").split("x"))
    except ValueError:
        shape = ()
    if len(shape) != 3 or min(shape) < 1:
        raise argparse.ArgumentTypeError(f"expected CxHxW such as 3x224x224, got {text!r}")
    return shape


def build_model(args: argparse.Namespace, input_shape: tuple[int, ...] | None = None, meta: bool = True):
    """The model that ``args.model`` names (zoo name, model file, run folder or checkpoint), through the one
    resolver (`convkit.models.resolve_model`); returns ``(model, input_shape)`` (the model's own by default)."""
    from convkit.layers.shapes import ShapeError
    from convkit.models import CheckpointError, ModelFileError, UnknownModelError, resolve_model

    try:
        model = resolve_model(args.model, num_classes=args.num_classes, in_channels=args.in_channels, meta=meta)
    except (UnknownModelError, ModelFileError, ShapeError, CheckpointError, FileNotFoundError, ValueError) as err:
        raise CLIError(str(err)) from None
    return model, tuple(input_shape or model.model_cfg.input_shape or (3, 224, 224))


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
        print(json.dumps(rows, indent=2))
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

    model, input_shape = build_model(args, args.input)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result = summary(model, input_size=input_shape, batch_size=args.batch, optimizer=args.optimizer,
                             dtype=args.dtype)
        except ValueError as err:  # ShapeError is a ValueError
            raise CLIError(str(err)) from None
    for w in caught:
        print(f"convkit: warning: {w.message}", file=sys.stderr)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        print(result)
    if args.csv:
        result.to_csv(args.csv)
    if args.plot:
        from convkit.inspect import plot_summary

        plot_summary(result, args.plot)
        print(f"wrote {args.plot}", file=sys.stderr)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``convkit`` command; returns the exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "run", None):
        parser.print_help()
        return 0
    try:
        return args.run(args)
    except CLIError as err:
        print(f"convkit: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("convkit: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
