"""The Open Inference Protocol v2 (KServe, Triton, Seldon) over the same model, batcher and limits as /predict.

Routes: ``GET /v2``, ``GET /v2/health/live``, ``GET /v2/health/ready``, ``GET /v2/models/{name}``,
``GET /v2/models/{name}/ready``, ``POST /v2/models/{name}/infer`` (``name``: the model's name in /model; another
is 404).

An infer request holds ONE input tensor (any name), either

* ``"datatype": "UINT8"``, shape ``[N, C, H, W]`` (or ``[C, H, W]``): pixels 0..255, row-major, flat or nested; C
  is the model's channels; a classifier's images are resized to its input size as `Inference.run` does; or
* ``"datatype": "BYTES"``, shape ``[N]`` (or ``[N, 1]``): each element an encoded image file (PNG, JPEG, GIF, BMP,
  WebP, TIFF) in base64, decoded as /predict decodes an upload.

N is at most --max-batch. Request ``"parameters"``: ``top`` (classifier, default 5) and ``score_threshold``
(detector, default 0.4). ``"outputs": [{"name": ...}]`` picks outputs. The outputs, by task:

* classifier: ``probabilities`` FP32 [N, k], ``indices`` INT64 [N, k], ``classes`` BYTES [N, k] (best first,
  k = min(top, classes));
* detector: one row per detection of all images: ``boxes`` FP32 [D, 4] (xmin, ymin, xmax, ymax in the image's
  pixels), ``scores`` FP32 [D], ``indices`` INT64 [D], ``labels`` BYTES [D], ``image`` INT64 [D] (which input);
  an instance segmenter adds ``masks`` BYTES [D] (each a COCO RLE as JSON);
* segmenter: ``mask_png`` BYTES [N] (base64 palette PNG, pixel value = class index), ``areas`` BYTES [N] (JSON
  {class: pixels}).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import math

import numpy as np
import torch
from fastapi import FastAPI, Request

from convkit.serve.limits import HTTPError, read_body

__all__ = ["add_routes", "outputs_of"]

INFER_BODY = {
    "required": True,
    "content": {"application/json": {"schema": {
        "type": "object", "required": ["inputs"],
        "properties": {
            "id": {"type": "string"},
            "parameters": {"type": "object", "properties": {"top": {"type": "integer"},
                                                            "score_threshold": {"type": "number"}}},
            "inputs": {"type": "array", "minItems": 1, "maxItems": 1, "items": {
                "type": "object", "required": ["name", "shape", "datatype", "data"],
                "properties": {"name": {"type": "string"}, "shape": {"type": "array", "items": {"type": "integer"}},
                               "datatype": {"type": "string", "enum": ["UINT8", "BYTES"]},
                               "data": {"type": "array"}}}},
            "outputs": {"type": "array", "items": {"type": "object", "properties": {"name": {"type": "string"}}}},
        }}}},
}


def _bad(message: str) -> HTTPError:
    return HTTPError(422, message)


def _number(parameters: dict, key: str, default, kind, low, high):
    value = parameters.get(key, default)
    if isinstance(value, dict):  # some clients wrap parameters: {"int64_param": 3}
        value = next(iter(value.values()), default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _bad(f"parameters.{key} must be a number, got {str(value)[:40]!r}")
    if kind is int and value != int(value):
        raise _bad(f"parameters.{key} must be an integer, got {value}")
    if not low <= value <= high:
        raise _bad(f"parameters.{key} must lie in {low}..{high}, got {value}")
    return kind(value)


def _images(state, tensor: dict) -> tuple[list, list[tuple[int, int]]]:
    """The input tensor -> uint8 (C, H, W) images and their (height, width). Runs in a decode thread."""
    if not isinstance(tensor, dict):
        raise _bad("inputs[0] must be an object with name, shape, datatype and data")
    shape, datatype, data = tensor.get("shape"), tensor.get("datatype"), tensor.get("data")
    if not isinstance(shape, list) or not shape or not all(isinstance(s, int) and not isinstance(s, bool)
                                                           and s >= 0 for s in shape):
        raise _bad(f"inputs[0].shape must be a list of non-negative integers, got {str(shape)[:60]}")
    if not isinstance(data, list):
        raise _bad("inputs[0].data must be a list")
    limits, inference = state.limits, state.inference
    if datatype == "BYTES":
        if len(shape) > 2 or (len(shape) == 2 and shape[1] != 1):
            raise _bad(f"a BYTES input has shape [N] or [N, 1] (one encoded image each), got {shape}")
        flat = _flatten(data)
        if len(flat) != shape[0]:
            raise _bad(f"inputs[0] has shape {shape} but {len(flat)} elements")
        _check_count(len(flat), limits.max_batch)
        images, sizes = [], []
        for k, item in enumerate(flat):
            if not isinstance(item, str):
                raise _bad(f"BYTES element {k} must be a base64 string")
            try:
                raw = base64.b64decode(item, validate=True)
            except (binascii.Error, ValueError):
                raise _bad(f"BYTES element {k} is not base64") from None
            image, size = state.decode(raw, f"inputs[0][{k}]")
            images.append(image)
            sizes.append(size)
        return images, sizes
    if datatype != "UINT8":
        raise _bad(f"inputs[0].datatype must be UINT8 (pixels) or BYTES (base64 image files), got "
                   f"{str(datatype)[:20]!r}")
    if len(shape) == 3:
        shape = [1, *shape]
    if len(shape) != 4:
        raise _bad(f"a UINT8 input has shape [N, C, H, W] or [C, H, W], got {shape}")
    n, c, h, w = shape
    channels = inference.input_shape[0]
    if c != channels:
        raise _bad(f"the model takes {channels} channel(s); the input has shape {shape}")
    if min(n, h, w) < 1:
        raise _bad(f"an empty input: shape {shape}")
    _check_count(n, limits.max_batch)
    if h * w > limits.max_pixels:
        raise _bad(f"an image of {h}x{w} = {h * w} pixels; this server takes at most {limits.max_pixels} "
                   "(--max-pixels)")
    try:
        array = np.asarray(data)
    except ValueError as err:  # ragged nesting
        raise _bad(f"inputs[0].data is not a regular array ({str(err)[:80]})") from None
    if array.size != n * c * h * w:
        raise _bad(f"inputs[0] has shape {shape} ({n * c * h * w} values) but {array.size} values")
    if array.dtype.kind not in "iu" or (array.size and (array.min() < 0 or array.max() > 255)):
        raise _bad("UINT8 data must be integers 0..255")
    pixels = torch.from_numpy(array.astype(np.uint8).reshape(n, c, h, w))
    return list(pixels), [(h, w)] * n


def _flatten(data) -> list:
    out = []
    stack = [iter(data)]
    while stack:  # iterative: a deeply nested list cannot exhaust the recursion limit
        for item in stack[-1]:
            if isinstance(item, list):
                stack.append(iter(item))
                break
            out.append(item)
        else:
            stack.pop()
    return out


def _check_count(n: int, max_batch: int) -> None:
    if n > max_batch:
        raise _bad(f"{n} images in one request; this server takes at most {max_batch} (--max-batch)")
    if n < 1:
        raise _bad("no image in inputs[0]")


def _tensor(name: str, datatype: str, shape: list[int], data: list) -> dict:
    return {"name": name, "datatype": datatype, "shape": shape, "data": data}


def outputs_of(task: str, answers: list[dict]) -> list[dict]:
    """`Inference.run`'s answers as OIP output tensors (see the module's docstring)."""
    n = len(answers)
    if task == "classification":
        k = len(answers[0]["predictions"]) if answers else 0
        preds = [a["predictions"] for a in answers]
        return [_tensor("probabilities", "FP32", [n, k], [p["probability"] for ps in preds for p in ps]),
                _tensor("indices", "INT64", [n, k], [p["index"] for ps in preds for p in ps]),
                _tensor("classes", "BYTES", [n, k], [p["class"] for ps in preds for p in ps])]
    if task in ("detect", "instance"):
        rows = [(i, d) for i, a in enumerate(answers) for d in a["detections"]]
        out = [_tensor("boxes", "FP32", [len(rows), 4], [d["box"][k] for _, d in rows
                                                         for k in ("xmin", "ymin", "xmax", "ymax")]),
               _tensor("scores", "FP32", [len(rows)], [d["score"] for _, d in rows]),
               _tensor("indices", "INT64", [len(rows)], [d["index"] for _, d in rows]),
               _tensor("labels", "BYTES", [len(rows)], [d["label"] for _, d in rows]),
               _tensor("image", "INT64", [len(rows)], [i for i, _ in rows])]
        if task == "instance":
            out.append(_tensor("masks", "BYTES", [len(rows)], [json.dumps(d.get("mask")) for _, d in rows]))
        return out
    return [_tensor("mask_png", "BYTES", [n], [a["mask_png"] for a in answers]),
            _tensor("areas", "BYTES", [n], [json.dumps(a["areas"]) for a in answers])]


OUTPUT_NAMES = {"classification": ("probabilities", "indices", "classes"),
                "detect": ("boxes", "scores", "indices", "labels", "image"),
                "instance": ("boxes", "scores", "indices", "labels", "image", "masks"),
                "segment": ("mask_png", "areas")}


def add_routes(app: FastAPI, state) -> None:
    """Adds the OIP v2 routes to `app` (a `convkit.serve.app.create_app` app; `state` its `ServeState`)."""
    from convkit import __version__
    from convkit.serve.app import _deadline

    inference = state.inference

    def known(name: str) -> None:
        if name != inference.name:
            raise HTTPError(404, f"no model {name[:80]!r} here; this server has {inference.name!r}")

    @app.get("/v2", summary="OIP: server metadata")
    async def server_metadata():
        return {"name": "convkit", "version": __version__, "extensions": []}

    @app.get("/v2/health/live", summary="OIP: liveness")
    async def live():
        return {"live": True}

    @app.get("/v2/health/ready", summary="OIP: readiness")
    async def ready():
        return {"ready": True}

    @app.get("/v2/models/{name}", summary="OIP: model metadata")
    async def model_metadata(name: str):
        known(name)
        c, h, w = inference.input_shape
        fixed = inference.task == "classification"
        return {"name": inference.name, "versions": ["1"],
                "platform": "onnxruntime_onnx" if inference.backend == "onnxruntime" else "pytorch",
                "inputs": [{"name": "image", "datatype": "UINT8", "shape": [-1, c, h if fixed else -1,
                                                                            w if fixed else -1]}],
                "outputs": [{"name": o, "datatype": "FP32" if o in ("probabilities", "boxes", "scores") else
                             "INT64" if o in ("indices", "image") else "BYTES", "shape": [-1, -1]}
                            for o in OUTPUT_NAMES[inference.task]],
                "parameters": {"task": inference.task, "classes": inference.classes,
                               "inputs_also": "BYTES [N]: base64 image files"}}

    @app.get("/v2/models/{name}/ready", summary="OIP: model readiness")
    async def model_ready(name: str):
        known(name)
        return {"name": inference.name, "ready": True}

    @app.post("/v2/models/{name}/infer", openapi_extra={"requestBody": INFER_BODY},
              summary="OIP: inference on a UINT8 [N, C, H, W] tensor or a BYTES [N] tensor of base64 images")
    async def infer(name: str, request: Request):
        known(name)
        state.admit()
        state.active += 1
        try:
            async with _deadline(state.limits.timeout_s):
                body = await read_body(request, state.limits.max_body_bytes)
                try:
                    payload = json.loads(body)
                except (ValueError, RecursionError):
                    raise _bad("the body is not JSON (an OIP inference request)") from None
                del body
                if not isinstance(payload, dict):
                    raise _bad("the body must be a JSON object with 'inputs'")
                inputs = payload.get("inputs")
                if not isinstance(inputs, list) or len(inputs) != 1:
                    raise _bad("'inputs' must hold exactly one tensor (UINT8 [N, C, H, W] or BYTES [N])")
                parameters = payload.get("parameters") or {}
                if not isinstance(parameters, dict):
                    raise _bad("'parameters' must be an object")
                top = _number(parameters, "top", 5, int, 1, 1000)
                threshold = _number(parameters, "score_threshold", 0.4, float, 0.0, 1.0)
                wanted = payload.get("outputs")
                names = OUTPUT_NAMES[inference.task]
                if wanted is not None:
                    if not isinstance(wanted, list) or not all(isinstance(o, dict) for o in wanted):
                        raise _bad("'outputs' must be a list of {\"name\": ...}")
                    wanted = [o.get("name") for o in wanted]
                    unknown = [str(o)[:40] for o in wanted if o not in names]
                    if unknown:
                        raise _bad(f"unknown output(s) {', '.join(unknown)}; this model has {', '.join(names)}")
                loop = asyncio.get_running_loop()
                images, _ = await loop.run_in_executor(state.decode_threads, _images, state, inputs[0])
                answers = await state.answers(images, state.params(top, threshold))
                outputs = outputs_of(inference.task, answers)
                if wanted:
                    outputs = [o for o in outputs if o["name"] in wanted]
                out = {"model_name": inference.name, "model_version": "1", "outputs": outputs}
                if isinstance(payload.get("id"), str):
                    out["id"] = payload["id"][:200]
                return out
        finally:
            state.active -= 1
