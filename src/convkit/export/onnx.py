"""Exported ONNX files read back through onnxruntime as convkit models: `load_onnx(path)` -> a `Checkpoint`.

The returned checkpoint's model is an ``nn.Module`` whose forward runs the ONNX graph, carrying a `ModelCfg` built
from the file's metadata, so `convkit predict`, `convkit serve` and the task's own code (normalisation, resizing,
test-time mirror averaging, thresholds, masks) treat it as they treat the PyTorch model. Detectors answer through
``detect(images, score_threshold)`` with `convkit.tasks.detection.detector.finish_detections`, as `Detector` does.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from convkit.models.reference import Checkpoint, ModelCfg
from convkit.models.weights import CheckpointError

__all__ = ["OnnxDetector", "OnnxModel", "load_onnx", "read_onnx_metadata"]


def _session(path: Path, threads: int | None = None):
    try:
        import onnxruntime as ort
    except ImportError as err:  # an optional extra
        raise CheckpointError(f"{path}: reading .onnx files needs onnxruntime: pip install 'convkit[export]'") from err
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    options.log_severity_level = 3
    # idle threads sleep instead of spinning: a server's HTTP work and decoding share the cores with the model
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime's own errors (InvalidProtobuf, Fail, ...)
        raise CheckpointError(f"{path}: not an ONNX model onnxruntime can load ({type(err).__name__}: "
                              f"{str(err).splitlines()[0][:200] if str(err) else ''})") from None


def read_onnx_metadata(session, path) -> dict:
    """The ``convkit`` metadata of an ONNX session (`export_model`'s JSON).

    Raises:
        CheckpointError: the file has no convkit metadata (not written by `convkit export`).
    """
    props = session.get_modelmeta().custom_metadata_map
    if "convkit" not in props:
        raise CheckpointError(f"{path}: no convkit metadata (metadata_props 'convkit'); export the model with "
                              "`convkit export RUN --format onnx`")
    try:
        meta = json.loads(props["convkit"])
        for key in ("task", "classes", "mean", "std", "input_shape", "outputs"):
            meta[key]  # noqa: B018  (present)
    except (ValueError, KeyError, TypeError) as err:
        raise CheckpointError(f"{path}: malformed convkit metadata ({type(err).__name__}: {err})") from None
    return meta


class OnnxModel(nn.Module):
    """An ONNX graph as a module: ``forward(x)`` -> its first output (logits) as a float tensor, batch by batch."""

    def __init__(self, session, meta: dict):
        super().__init__()
        self.session, self.meta = session, meta
        self.input_name = session.get_inputs()[0].name

    def outputs(self, x: torch.Tensor) -> list[np.ndarray]:
        """All the graph's outputs for a float32 batch."""
        return self.session.run(None, {self.input_name: x.detach().float().cpu().contiguous().numpy()})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.outputs(x)[0])


class OnnxDetector(OnnxModel):
    """An exported detector: ``detect(images, score_threshold)`` as `convkit.tasks.detection.Detector.detect`."""

    def __init__(self, session, meta: dict):
        super().__init__(session, meta)
        self.kind = meta.get("detector") or "yolo"
        self.image_size = tuple(meta["input_shape"][1:])
        self.score_threshold = meta.get("graph_score_threshold") or 0.01

    @torch.no_grad()
    def detect(self, images: torch.Tensor, score_threshold: float | None = None) -> list[dict[str, torch.Tensor]]:
        from convkit.export.graphs import YOLO_MAX_DETECTIONS
        from convkit.tasks.detection.detector import finish_detections
        from convkit.tasks.detection.models import from_torchvision_detections

        threshold = self.score_threshold if score_threshold is None else float(score_threshold)
        size = tuple(images.shape[-2:])
        if self.kind == "yolo":
            rows = torch.from_numpy(self.outputs(images)[0])
            out = []
            for n in range(len(images)):
                mine = rows[rows[:, 0] == n][:YOLO_MAX_DETECTIONS]
                out.append({"boxes": mine[:, 1:5], "scores": mine[:, 5], "labels": mine[:, 6].long()})
        elif self.kind == "localizer":
            boxes, scores, labels = (torch.from_numpy(a) for a in self.outputs(images))
            out = [{"boxes": boxes[n:n + 1], "scores": scores[n:n + 1], "labels": labels[n:n + 1]}
                   for n in range(len(images))]
        else:  # torchvision's: one image per run
            names = self.meta["outputs"]
            raw = [dict(zip(names, (torch.from_numpy(a) for a in self.outputs(x[None])))) for x in images]
            out = from_torchvision_detections(raw)
        return finish_detections(out, self.kind, size, threshold)


def load_onnx(path: str | os.PathLike, threads: int | None = None) -> Checkpoint:
    """An ONNX file written by `convkit export` -> a `Checkpoint` whose model runs in onnxruntime.

    Args:
        path: the .onnx file.
        threads: onnxruntime's intra-op threads (default: its own choice, the cores).

    Returns:
        A `Checkpoint` (classes, normalisation, input shape from the file's metadata).

    Raises:
        FileNotFoundError: no such file.
        CheckpointError: not an ONNX model, or one without convkit's metadata.

    >>> ckpt = load_onnx(convkit.export.export_model(tiny_run, "onnx", "tiny.onnx").path)
    >>> ckpt.meta["task"], ckpt.input_shape, len(ckpt.classes)
    ('classification', (1, 28, 28), 10)
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such ONNX file")
    session = _session(path, threads)
    meta = read_onnx_metadata(session, path)
    task = meta["task"]
    model = (OnnxDetector if task in ("detect", "instance") else OnnxModel)(session, meta)
    spec = meta.get("model") or {}
    model.model_cfg = ModelCfg(str(meta.get("name") or path.stem), task=task,
                               input_shape=tuple(int(v) for v in meta["input_shape"]),
                               num_classes=len(meta["classes"]), classes=list(meta["classes"]),
                               mean=tuple(meta["mean"]), std=tuple(meta["std"]), spec=None, source="onnx",
                               trained=True, checkpoint=path, run_dir=None,
                               meta={**meta, "model": spec})
    return Checkpoint(model, model.model_cfg.meta, path)
