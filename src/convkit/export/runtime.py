"""A trained model ready to answer requests, whatever runs it: `load_inference(source)` -> `Inference`.

The source is a run folder or a .safetensors checkpoint (PyTorch, eager) or an exported ``.onnx`` file
(onnxruntime; `convkit.export.load_onnx`). Every task answers through the same three calls, which
`convkit serve` and `convkit predict` use:

* `Inference.decode(data)`: the encoded image (bytes of an upload) -> uint8 (C, H, W), as `convkit predict` reads a
  file (a classifier's image resized to its training size; detectors and segmenters keep the image's size);
* `Inference.run(images)`: one JSON-ready answer per image (see `Inference.run`);
* `Inference.gradcam(image)`: a classifier's Grad-CAM heat map (PyTorch only: an ONNX graph has no gradients).
"""

from __future__ import annotations

import base64
import io
import os
from pathlib import Path

import numpy as np
import torch

from convkit.errors import ConvkitError

__all__ = ["TASK_NOUNS", "Inference", "load_inference"]

# the checkpoints' task names -> what the answers hold
TASK_NOUNS = {"classification": "classifier", "detect": "detector", "instance": "instance segmenter",
              "segment": "segmenter"}


class Inference:
    """A trained model with what inference needs (class names, normalisation, input size), on either backend.

    Attributes:
        checkpoint: the `convkit.models.Checkpoint` (for an ONNX file, its model runs through onnxruntime).
        backend: "pytorch" or "onnxruntime".
        source: the run folder, checkpoint or .onnx file it came from.
    """

    def __init__(self, checkpoint, backend: str, source: str | os.PathLike):
        self.checkpoint, self.backend, self.source = checkpoint, backend, str(source)
        self.task = checkpoint.meta.get("task") or "classification"
        if self.task not in TASK_NOUNS:
            raise ConvkitError(f"{source}: a model of task {self.task!r}; convkit serves "
                               f"{', '.join(TASK_NOUNS)}")
        self.model = checkpoint.model.eval()
        self.cam_layer: str | None = None

    @property
    def name(self) -> str:
        """The model's name: a segmenter's or detector's kind ("fcn8s", "yolo"), else its zoo or file name."""
        from convkit.export.graphs import model_name

        return model_name(self.checkpoint.cfg)

    @property
    def classes(self) -> list[str]:
        return list(self.checkpoint.classes)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.checkpoint.input_shape)

    def metadata(self) -> dict:
        """JSON-ready: name, task, classes, input_shape [C, H, W], mean, std, backend, source."""
        return {"name": self.name, "task": self.task, "kind": TASK_NOUNS[self.task], "classes": self.classes,
                "input_shape": list(self.input_shape), "mean": [round(float(v), 6) for v in self.checkpoint.mean],
                "std": [round(float(v), 6) for v in self.checkpoint.std], "backend": self.backend,
                "source": Path(self.source).name, "gradcam": self.backend == "pytorch" and self.task == "classification"}

    def decode(self, data: bytes, name: str = "upload", max_pixels: int | None = None) -> torch.Tensor:
        """Encoded image bytes -> uint8 (C, H, W) with the model's channels; a classifier's at its input size.

        Raises:
            DataFormatError: not an image, damaged, or over `max_pixels` (checked before decoding).
        """
        from convkit.data.folder import decode_image_bytes

        c, h, w = self.input_shape
        size = (h, w) if self.task == "classification" else None
        return decode_image_bytes(data, channels=c, image_size=size, name=name, max_pixels=max_pixels)

    @torch.no_grad()
    def run(self, images: list[torch.Tensor], *, top: int = 5, score_threshold: float = 0.4) -> list[dict]:
        """Answers for uint8 (C, H, W) images (from `decode`), one forward pass per batch.

        Returns:
            One dict per image:

            * classifier: ``{"predictions": [{"class", "index", "probability"}, ...]}``, the `top` best first;
            * detector: ``{"detections": [{"label", "index", "score", "box": {"xmin", "ymin", "xmax", "ymax"}}]}``
              in the image's pixels, scores above `score_threshold`; an instance segmenter adds ``"mask"`` (COCO
              RLE) and ``"area"`` (pixels) to each;
            * segmenter: ``{"width", "height", "mask_png": base64 PNG (palette; pixel value = class index),
              "areas": {class: pixels}}``, classes present only.
        """
        if not images:
            return []
        if self.task == "classification":
            return self._classify(images, top)
        if self.task in ("detect", "instance"):
            return self._detect(images, score_threshold)
        return self._segment(images)

    def _classify(self, images, top):
        from convkit.tasks.classification.predict import top_classes
        from convkit.tasks.detection.inference import _fit

        c, h, w = self.input_shape
        values, indices = top_classes(self.model, torch.stack([_fit(im, c, h, w) for im in images]), top)
        classes = self.classes
        return [{"predictions": [{"class": classes[j], "index": j, "probability": round(p, 6)}
                                 for p, j in zip(v.tolist(), i.tolist())]} for v, i in zip(values, indices)]

    def _detect(self, images, score_threshold):
        from convkit.tasks.detection.inference import _detect

        found = _detect(self.checkpoint, images, len(images), "cpu", score_threshold)
        classes, out = self.classes, []
        for d in found:
            items = []
            for k, (box, label, score) in enumerate(zip(d["boxes"].tolist(), d["labels"].tolist(),
                                                        d["scores"].tolist())):
                item = {"label": classes[label], "index": label, "score": round(score, 5),
                        "box": dict(zip(("xmin", "ymin", "xmax", "ymax"), (round(v, 2) for v in box)))}
                if "masks" in d:
                    from convkit.tasks.segmentation.instance import mask_rle

                    item["mask"], item["area"] = mask_rle(d["masks"][k]), int(d["masks"][k].sum())
                items.append(item)
            out.append({"detections": items})
        return out

    def _segment(self, images):
        from convkit.tasks.segmentation.inference import segment_images

        maps = segment_images(self.checkpoint, images, batch_size=len(images))
        classes = self.classes
        return [{"width": int(m.shape[1]), "height": int(m.shape[0]), "mask_png": mask_png(m, len(classes)),
                 "areas": {classes[k]: int(n) for k, n in enumerate(torch.bincount(m.flatten().long(),
                                                                                   minlength=len(classes)).tolist())
                           if n and k < len(classes)}} for m in maps]

    def gradcam(self, image: torch.Tensor, index: int | None = None) -> np.ndarray | None:
        """A classifier's Grad-CAM for class `index` (default: its best class), float32 (H, W) in 0..1 at the
        input size; None for other tasks and for onnxruntime (no gradients)."""
        if self.task != "classification" or self.backend != "pytorch":
            return None
        from convkit.explain.attribution import attribute
        from convkit.tasks.detection.inference import _fit

        c, h, w = self.input_shape
        x = self.model.model_cfg.normalize(_fit(image, c, h, w)[None])
        with torch.enable_grad():
            heat = attribute(self.model, x, "gradcam", target=index)[0]
        return heat.numpy().astype(np.float32)


def mask_png(class_map: torch.Tensor, num_classes: int) -> str:
    """A class map uint8 (H, W) as a base64 palette PNG (pixel value = class index, colours of the overlays)."""
    from convkit.tasks.segmentation.data import mask_image

    buffer = io.BytesIO()
    mask_image(class_map, num_classes=num_classes).save(buffer, "PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def load_inference(source: str | os.PathLike, device: str = "cpu") -> Inference:
    """A run folder, .safetensors checkpoint or exported .onnx file -> an `Inference`.

    Raises:
        FileNotFoundError: no such file or folder.
        CheckpointError: not a convkit checkpoint or export (nothing is unpickled).

    >>> inference = load_inference(tiny_run)        # a run folder trained one epoch
    >>> inference.task, inference.backend
    ('classification', 'pytorch')
    """
    path = Path(source)
    if path.suffix.lower() == ".onnx":
        from convkit.export.onnx import load_onnx

        return Inference(load_onnx(path), "onnxruntime", path)
    from convkit.models.reference import load_checkpoint

    return Inference(load_checkpoint(path, device), "pytorch", path)
