"""The ``convkit export`` verb (registered by ``cli.main``): a trained model to ONNX, TorchScript or ExportedProgram,
with its metadata, checked against PyTorch on the same input."""

from __future__ import annotations

import argparse
import math

from convkit.cli.common import FORMATTER, CLIError, add_json, print_json

EXAMPLES = {
    "export": """examples:
  convkit export runs/fastcnn-20250101-120000                      model.onnx in the run folder
  convkit export runs/fastcnn-20250101-120000 -o shoe.onnx         then: convkit predict shoe.onnx shoe.png
  convkit export runs/yolo-20250101-120000 --format torchscript -o yolo.pt
  convkit export runs/fcn8s-20250101-120000 --format exported-program --json""",
}


def cmd_export(args: argparse.Namespace) -> int:
    from convkit.export.formats import check_export, export_model
    from convkit.models.reference import resolve_model

    model = resolve_model(args.source)  # read once: the export and its check use the same module
    result = export_model(model, args.format, args.output, exporter=args.exporter)
    check = None if args.no_check else check_export(result, model)
    if args.json:
        print_json({**result.to_dict(), "check": check})
    else:
        meta = result.metadata
        batch = "dynamic batch" if meta["batch"] == "dynamic" else f"batch fixed at {meta['batch']}"
        print(f"{result.path}: {meta['name']} ({meta['task']}, {len(meta['classes'])} classes, input "
              f"{'x'.join(map(str, meta['input_shape']))}, {batch}), {result.format} by the {result.exporter} "
              f"exporter, {result.bytes / 1e6:.2f} MB in {result.seconds:.1f} s")
        print(f"  outputs: {', '.join(meta['outputs'])}; metadata: task, classes, mean {_round(meta['mean'])}, std "
              f"{_round(meta['std'])}, input size")
        if check is not None:
            if not check["same_shapes"]:
                print(f"  check: {check['runtime']} and PyTorch give outputs of different shapes on "
                      f"{check['images']} noise images (detections near a threshold can differ)")
            else:
                print(f"  check: {check['runtime']} against PyTorch on {check['images']} noise images: max |difference| "
                      f"{check['max_abs_diff']:.2g} (outputs up to {check['max_abs_output']:.3g})")
    if check is not None and check["same_shapes"] and not math.isfinite(check["max_abs_diff"]):
        raise CLIError(f"{result.path}: the exported model gives non-finite outputs")
    return 0


def _round(values) -> str:
    return "[" + ", ".join(f"{v:.4f}" for v in values) + "]"


def register(verbs, fmt=FORMATTER) -> None:
    from convkit.export.formats import EXPORTERS, FORMATS

    p = verbs.add_parser("export", help="a trained model as ONNX, TorchScript or ExportedProgram",
                         description="Export a trained model (run folder or .safetensors checkpoint) with a dynamic "
                         "batch axis (torchvision's detectors: batch 1) and its metadata: task, class names, "
                         "normalisation, input size. The file is then run against PyTorch on the same input.",
                         epilog=EXAMPLES["export"], formatter_class=fmt)
    p.add_argument("source", metavar="RUN", help="a run folder or a .safetensors checkpoint written by `convkit train`")
    p.add_argument("--format", choices=list(FORMATS), default="onnx", help="default: onnx")
    p.add_argument("-o", "--output", help="the file (default: model.onnx / model.pt / model.pt2 in the run folder)")
    p.add_argument("--exporter", choices=list(EXPORTERS), default="auto",
                   help="ONNX: auto (legacy, dynamo where legacy fails; detectors legacy), dynamo or legacy")
    p.add_argument("--no-check", action="store_true", help="skip running the file against PyTorch")
    add_json(p, "print the result as JSON")
    p.set_defaults(run=cmd_export)
