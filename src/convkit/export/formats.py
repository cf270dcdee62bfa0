"""`export_model`: a trained model -> an ONNX, TorchScript or ExportedProgram file that carries its metadata.

Metadata (what inference needs, `export_metadata`): task, class names, normalisation (mean, std on the 0..1
scale: the graph reads ``(x / 255 - mean) / std``), input size, the model's spec, the graph's outputs and batch.
ONNX keeps it in ``metadata_props`` (key ``convkit``: the whole JSON; and ``task``, ``classes``, ``mean``,
``std``, ``input_shape`` one by one, for other tools); TorchScript and ExportedProgram in an extra file
``convkit.json`` inside the archive.

Which ONNX exporter (``exporter="auto"``): torch's legacy TorchScript-based exporter first (seconds, where the
dynamo exporter takes 4x longer); for classifiers and segmenters, the dynamo exporter where the legacy one fails
(adaptive pooling to a size that does not divide the input, as VGG's and AlexNet's heads at small inputs); for
detectors the legacy exporter only: the dynamo exporter fails on torchvision's detection models and on YOLO's
data-dependent NMS. The file's metadata says which exporter wrote it.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from convkit import __version__
from convkit.errors import ConvkitError
from convkit.export.graphs import GRAPH_SCORE_THRESHOLD, ExportGraph, binned_pools, export_graph, model_name
from convkit.utils import atomic_write

__all__ = ["EXPORTERS", "FORMATS", "ExportError", "ExportResult", "check_export", "export_metadata", "export_model"]

FORMATS = {"onnx": ".onnx", "torchscript": ".pt", "exported-program": ".pt2"}
EXPORTERS = ("auto", "dynamo", "legacy")
OPSET = 18
DETECTION_TASKS = ("detect", "instance")


class ExportError(ConvkitError):
    """A model that cannot be exported to the format asked for (the message says why and what else works)."""


@dataclass
class ExportResult:
    """What `export_model` wrote: path, format, exporter ("dynamo", "legacy", "trace", "torch.export"), bytes,
    seconds, and the metadata written into the file."""

    path: Path
    format: str
    exporter: str
    bytes: int
    seconds: float
    metadata: dict

    def to_dict(self) -> dict:
        return {"path": str(self.path), "format": self.format, "exporter": self.exporter, "bytes": self.bytes,
                "seconds": round(self.seconds, 3), "metadata": self.metadata}


def _trained(source):
    """(model in eval mode, checkpoint metadata) of a run folder, checkpoint, `Checkpoint` or trained module."""
    from convkit.models.reference import Checkpoint, resolve_model

    model = source.model if isinstance(source, Checkpoint) else resolve_model(source)
    cfg = model.model_cfg
    if not cfg.classes or cfg.input_shape is None:
        raise ExportError(f"{cfg.name}: not a trained model (no class names or input size); export a run folder or "
                          "a .safetensors checkpoint written by `convkit train`")
    meta = dict(cfg.meta) or {"task": cfg.task}
    return model.eval(), meta


def export_metadata(model, meta: dict, graph: ExportGraph, fmt: str, exporter: str) -> dict:
    """The JSON an exported file carries (see the module docstring)."""
    cfg = model.model_cfg
    task = meta.get("task") or cfg.task or "classification"
    spec = meta.get("model")
    if isinstance(spec, str):
        spec = json.loads(spec)
    mean, std = cfg.mean_std()
    out = {"convkit_export": 1, "task": task, "name": model_name(cfg), "classes": list(cfg.classes),
           "mean": [float(v) for v in mean], "std": [float(v) for v in std], "input_shape": list(cfg.input_shape),
           "model": spec, "tta": bool(meta.get("tta")), "input": "input: float32 (N, C, H, W) = (x / 255 - mean) / std",
           "outputs": graph.outputs, "batch": graph.batch, "dynamic_size": graph.dynamic_size,
           "format": fmt, "exporter": exporter, "torch": torch.__version__, "convkit_version": __version__}
    if task in DETECTION_TASKS:
        out["detector"] = getattr(model, "kind", None)
        out["graph_score_threshold"] = GRAPH_SCORE_THRESHOLD if out["detector"] == "yolo" else None
    if meta.get("metrics"):
        metrics = meta["metrics"]
        out["metrics"] = json.loads(metrics) if isinstance(metrics, str) else metrics
    return out


def export_model(source, format: str = "onnx", out: str | os.PathLike | None = None, *, exporter: str = "auto",
                 opset: int = OPSET) -> ExportResult:
    """Exports a trained model with its metadata; the file is written atomically.

    Args:
        source: a run folder, a .safetensors checkpoint, a `Checkpoint`, or a trained module carrying class names.
        format: "onnx", "torchscript" or "exported-program".
        out: the file (default: ``<run folder or checkpoint folder>/model.onnx`` / ``.pt`` / ``.pt2``).
        exporter: for ONNX: "auto" (see the module docstring), "dynamo" or "legacy".
        opset: the ONNX opset.

    Returns:
        An `ExportResult`.

    Raises:
        ExportError: an unknown format or exporter, an untrained model, or a model the format cannot hold (the
            message names the format that works).
        FileNotFoundError, CheckpointError: as `convkit.models.resolve_model`.

    >>> result = export_model(tiny_run, "onnx", "tiny.onnx")      # a run folder trained one epoch
    >>> result.path.name, result.exporter, result.metadata["task"], result.metadata["batch"]
    ('tiny.onnx', 'legacy', 'classification', 'dynamic')
    """
    if format not in FORMATS:
        raise ExportError(f"format: {format!r} is not one of {', '.join(FORMATS)}")
    if exporter not in EXPORTERS:
        raise ExportError(f"exporter: {exporter!r} is not one of {', '.join(EXPORTERS)}")
    model, meta = _trained(source)
    cfg = model.model_cfg
    task = meta.get("task") or "classification"
    graph = export_graph(model, task, tuple(cfg.input_shape))
    if out is None:
        base = cfg.run_dir or (cfg.checkpoint.parent if cfg.checkpoint else Path("."))
        out = Path(base) / f"model{FORMATS[format]}"
    out = Path(out)
    start = time.perf_counter()
    if format == "onnx":
        metadata = _onnx(graph, model, meta, out, exporter, task, opset)
    elif format == "torchscript":
        metadata = _torchscript(graph, model, meta, out)
    else:
        metadata = _exported_program(graph, model, meta, out, task)
    seconds = time.perf_counter() - start
    return ExportResult(out, format, metadata["exporter"], out.stat().st_size, seconds, metadata)


def _why(err: BaseException) -> str:
    """An exporter's error as a short phrase: its type and first line, without terminal colours."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(err)).strip()
    return f"{type(err).__name__}: {text.splitlines()[0][:300]}" if text else type(err).__name__


def _axes(graph: ExportGraph) -> dict:
    axes = {}
    if graph.batch == "dynamic":
        axes[0] = "batch"
    if graph.dynamic_size:
        axes.update({2: "height", 3: "width"})
    return axes


def _onnx(graph: ExportGraph, model, meta: dict, out: Path, exporter: str, task: str, opset: int) -> dict:
    """Writes the ONNX file; the metadata written into it (naming the exporter that took the model)."""
    fallback = exporter == "auto" and task not in DETECTION_TASKS
    if exporter == "auto":
        exporter = "legacy"
    try:
        data = _onnx_bytes(graph, exporter, opset)
    except Exception as err:  # the exporters raise many kinds; one message names the model and the way out
        if not fallback:
            raise ExportError(f"{model_name(model.model_cfg)}: the {exporter} ONNX exporter failed ({_why(err)}"
                              f"); try --exporter "
                              f"{'dynamo' if exporter == 'legacy' else 'legacy'} or --format torchscript") from err
        exporter = "dynamo"
        try:
            data = _onnx_bytes(graph, exporter, opset)
        except Exception as again:
            raise ExportError(f"{model_name(model.model_cfg)}: neither ONNX exporter takes this model (legacy: "
                              f"{_why(err)}; dynamo: "
                              f"{_why(again)}); "
                              "try --format torchscript") from again
    import onnx

    proto = onnx.load_model_from_string(data)
    metadata = export_metadata(model, meta, graph, "onnx", exporter)
    props = {"convkit": json.dumps(metadata), "task": metadata["task"], "classes": json.dumps(metadata["classes"]),
             "mean": json.dumps(metadata["mean"]), "std": json.dumps(metadata["std"]),
             "input_shape": json.dumps(metadata["input_shape"])}
    del proto.metadata_props[:]
    for key, value in props.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.doc_string = f"convkit {metadata['name']} ({metadata['task']}), exported with torch's {exporter} exporter"
    atomic_write(out, lambda tmp: onnx.save_model(proto, tmp))
    return metadata


def _onnx_bytes(graph: ExportGraph, exporter: str, opset: int) -> bytes:
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer warnings about Python values: the parity tests are the check
        if exporter == "dynamo":
            from torch.export import Dim

            axes = _axes(graph)
            shapes = ({k: Dim(v, min=1) if v == "batch" else Dim(v, min=8) for k, v in axes.items()},)
            program = torch.onnx.export(graph.module, (graph.example,), dynamo=True, input_names=["input"],
                                        output_names=graph.outputs, dynamic_shapes=shapes, opset_version=opset,
                                        verbose=False)
            program.save(buffer)
        else:
            axes = {name: {0: "batch"} for name in ["input", *graph.outputs]} if graph.batch == "dynamic" else {}
            if graph.dynamic_size:
                axes["input"] = _axes(graph)
                axes["logits"] = _axes(graph)
            pools = binned_pools(graph.module) if not graph.dynamic_size else contextlib.nullcontext(graph.module)
            with pools as module:
                torch.onnx.export(module, (graph.example,), buffer, dynamo=False, input_names=["input"],
                                  output_names=graph.outputs, dynamic_axes=axes or None,
                                  opset_version=min(opset, 17), do_constant_folding=True)
    return buffer.getvalue()


def _torchscript(graph: ExportGraph, model, meta: dict, out: Path) -> dict:
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        try:
            traced = torch.jit.trace(graph.module, graph.example, check_trace=False, strict=False)
        except Exception as err:
            raise ExportError(f"{model_name(model.model_cfg)}: torch.jit.trace failed ({_why(err)}"
                              f"); try --format onnx") from err
    metadata = export_metadata(model, meta, graph, "torchscript", "trace")
    extra = {"convkit.json": json.dumps(metadata)}
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.save: TorchScript is deprecated (still read widely)
        torch.jit.save(traced, buffer, _extra_files=extra)
    atomic_write(out, lambda tmp: Path(tmp).write_bytes(buffer.getvalue()))
    return metadata


def _exported_program(graph: ExportGraph, model, meta: dict, out: Path, task: str) -> dict:
    from torch.export import Dim

    axes = _axes(graph)
    shapes = ({k: Dim(v, min=1) if v == "batch" else Dim(v, min=8) for k, v in axes.items()},)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            program = torch.export.export(graph.module, (graph.example,), dynamic_shapes=shapes)
    except Exception as err:
        raise ExportError(f"{model_name(model.model_cfg)}: torch.export cannot capture this {task} model "
                          f"({_why(err)}); "
                          "try --format onnx") from err
    metadata = export_metadata(model, meta, graph, "exported-program", "torch.export")
    extra = {"convkit.json": json.dumps(metadata)}
    buffer = io.BytesIO()
    torch.export.save(program, buffer, extra_files=extra)
    atomic_write(out, lambda tmp: Path(tmp).write_bytes(buffer.getvalue()))
    return metadata


def check_export(result: ExportResult, source, images: int = 3) -> dict:
    """Runs the exported file and the PyTorch graph on the same noise and compares every output.

    The batch is `images` (not the export's example batch, so a dynamic batch axis is exercised); the fixed-batch
    graphs (torchvision's detectors) get one image. `source` is what `export_model` took; pass the loaded module
    to both so that the checkpoint is read once.

    Returns:
        ``{"runtime": "onnxruntime" | "torch.jit" | "torch.export", "images", "max_abs_diff", "max_abs_output",
        "same_shapes"}``.
    """
    model, meta = _trained(source)
    graph = export_graph(model, meta.get("task") or "classification", tuple(model.model_cfg.input_shape))
    c, h, w = model.model_cfg.input_shape
    n = images if graph.batch == "dynamic" else int(graph.batch)
    x = torch.randn(n, c, h, w, generator=torch.Generator().manual_seed(1))
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = graph.module(x)
        if result.format == "onnx":
            from convkit.export.onnx import load_onnx

            got, runtime = load_onnx(result.path).model.outputs(x), "onnxruntime"
        elif result.format == "torchscript":
            got, runtime = torch.jit.load(str(result.path), map_location="cpu")(x), "torch.jit"
        else:
            got, runtime = torch.export.load(str(result.path)).module()(x), "torch.export"
    expected = list(expected) if isinstance(expected, list | tuple) else [expected]
    got = [torch.as_tensor(g) for g in (got if isinstance(got, list | tuple) else [got])]
    same = len(got) == len(expected) and all(tuple(a.shape) == tuple(b.shape) for a, b in zip(got, expected))
    diff = max((float((a.float() - b.float()).abs().max()) for a, b in zip(got, expected) if a.numel()),
               default=0.0) if same else float("nan")
    scale = max((float(b.float().abs().max()) for b in expected if b.numel()), default=0.0)
    return {"runtime": runtime, "images": n, "max_abs_diff": diff, "max_abs_output": scale, "same_shapes": same}
