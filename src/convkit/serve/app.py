"""The HTTP application of `convkit serve`: `create_app(source, **limits)` -> a FastAPI app.

Routes: ``GET /`` (the page), ``GET /health``, ``GET /model``, ``GET /stats``, ``POST /predict`` and the Open
Inference Protocol v2 (`convkit.serve.oip`). Every image goes through the same steps: the body is read up to the
size limit (413), sniffed by its magic bytes (415), decoded in a thread with the pixel limit checked on its header
(422), queued for the `Batcher` (503 when full) and answered by one forward pass shared with concurrent requests,
all within the request's deadline (504). Errors are ``{"detail": "one line"}``; no client input gives a 500.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hmac
import io
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from convkit.serve.batcher import Batcher
from convkit.serve.limits import FORMATS, HTTPError, Limits, read_body, sniff

__all__ = ["SETTINGS_ENV", "ServeState", "app_from_env", "create_app"]

SETTINGS_ENV = "CONVKIT_SERVE_SETTINGS"  # the settings of the workers of `convkit serve --workers N`, as JSON
PAGE = Path(__file__).parent / "page" / "index.html"
PLACEHOLDER = ("<!doctype html><meta charset=utf-8><title>convkit serve</title>"
               "<p>convkit serve: POST an image to /predict (see /openapi.json).</p>")
# the page is self-contained: the browser may load nothing from elsewhere
PAGE_POLICY = ("default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data: blob:; "
               "connect-src 'self'; form-action 'none'; base-uri 'none'; frame-ancestors 'none'")
OPEN_PATHS = frozenset({"/", "/health"})  # answered without the token


class ServeState:
    """What the routes share: the `Inference`, the `Limits`, the `Batcher`, the model's thread and the decoders'."""

    def __init__(self, inference, limits: Limits):
        self.inference, self.limits = inference, limits
        self.model_thread = ThreadPoolExecutor(1, thread_name_prefix="convkit-model")
        self.decode_threads = ThreadPoolExecutor(max(1, min(4, os.cpu_count() or 1)),
                                                 thread_name_prefix="convkit-decode")
        self.active = 0  # requests being handled (reading, decoding, waiting): bounded by the queue too
        self.batcher = Batcher(inference.run, self.model_thread, limits.max_batch, limits.max_wait_ms, limits.queue,
                               in_flight=lambda: self.active)

    # -- the steps of a request --------------------------------------------------------------------------------

    def admit(self) -> None:
        if self.active >= self.limits.queue:
            self.batcher.stats.rejected += 1
            raise HTTPError(503, f"the server is busy: {self.active} requests in progress (--queue "
                            f"{self.limits.queue}); retry later", {"Retry-After": "1"})

    def decode(self, data: bytes, name: str = "upload"):
        """Encoded bytes -> (uint8 image (C, H, W), (height, width) of the upload); HTTPError 415/422."""
        from convkit.data.errors import DataFormatError

        if not data:
            raise HTTPError(422, "no image: the body (or the field 'file') is empty")
        if sniff(data) is None:
            raise HTTPError(415, f"{name}: not an image ({', '.join(FORMATS)} are read; the format is found from "
                            "the file's first bytes)")
        try:
            image = self.inference.decode(data, name=name, max_pixels=self.limits.max_pixels)
            size = _upright_size(data) or tuple(image.shape[1:])
        except DataFormatError as err:
            raise HTTPError(422, str(err)) from None
        return image, size

    async def decode_async(self, data: bytes, name: str = "upload"):
        return await asyncio.get_running_loop().run_in_executor(self.decode_threads, self.decode, data, name)

    def params(self, top: int, score_threshold: float) -> dict:
        """The parameters that matter for the model's task (so that requests differing in others share a batch)."""
        task = self.inference.task
        if task == "classification":
            return {"top": top}
        if task in ("detect", "instance"):
            return {"score_threshold": score_threshold}
        return {}

    async def answers(self, images: list, params: dict) -> list[dict]:
        """One answer per image from the batcher; the caller's deadline (asyncio.timeout) cancels the wait."""
        futures = self.batcher.submit(images, params)
        try:
            return list(await asyncio.gather(*futures))
        finally:
            for future in futures:
                future.cancel()  # a deadline or a dropped connection: the batcher skips what is left

    async def gradcam_png(self, image, index: int) -> str | None:
        return await asyncio.get_running_loop().run_in_executor(self.model_thread, self._gradcam_png, image, index)

    def _gradcam_png(self, image, index: int) -> str | None:
        from PIL import Image

        from convkit.explain.attribution import overlay
        from convkit.tasks.detection.inference import _fit

        heat = self.inference.gradcam(image, index)
        if heat is None:
            return None
        c, h, w = self.inference.input_shape
        if tuple(image.shape[1:]) != (h, w):
            image = _fit(image, image.shape[0], h, w).round().clamp(0, 255).byte()
        buffer = io.BytesIO()
        Image.fromarray(overlay(image, heat, alpha=0.5)).save(buffer, "PNG")
        return base64.b64encode(buffer.getvalue()).decode("ascii")

    def close(self) -> None:
        self.model_thread.shutdown(wait=False, cancel_futures=True)
        self.decode_threads.shutdown(wait=False, cancel_futures=True)


def _upright_size(data: bytes) -> tuple[int, int] | None:
    """(height, width) of an encoded image as displayed (EXIF rotation applied), from its header."""
    from PIL import Image

    from convkit.data.folder import _upright_size as upright

    try:
        with Image.open(io.BytesIO(data)) as img:
            return tuple(upright(img))
    except Exception:  # already decoded once: a header PIL reads; in doubt the decoded size is used
        return None


async def upload(request: Request, max_bytes: int) -> tuple[bytes, str]:
    """The image of a /predict request: the multipart field ``file``, or the raw body; and its name.

    Raises:
        HTTPError: 413 (too large), 422 (a multipart body without a ``file`` field, or malformed).
    """
    body = await read_body(request, max_bytes)
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "multipart/form-data":
        return body, "upload"
    from starlette.datastructures import UploadFile

    try:
        form = await request.form(max_files=1, max_fields=16, max_part_size=max_bytes)
    except Exception as err:  # python-multipart's MultiPartException, Starlette's HTTPException(400), ...
        detail = getattr(err, "detail", None) or getattr(err, "message", None) or str(err) or type(err).__name__
        raise HTTPError(422, f"malformed multipart body: {str(detail)[:200]}") from None
    try:
        item = form.get("file")
        if not isinstance(item, UploadFile):
            fields = ", ".join(repr(k)[:40] for k in list(form.keys())[:5]) or "none"
            raise HTTPError(422, f"a multipart request needs the image as a file in the field 'file' (fields "
                            f"given: {fields})")
        data = await item.read()
        name = (item.filename or "upload")[:200]
    finally:
        await form.close()
    return data, name


def _detail_of(errors) -> str:
    """FastAPI's validation errors as one line: ``top: Input should be ...; ...``."""
    parts = []
    for e in errors[:3]:
        where = ".".join(str(p) for p in e.get("loc", ()) if p not in ("query", "body", "path"))
        parts.append(f"{where}: {e.get('msg', 'invalid')}" if where else str(e.get("msg", "invalid")))
    return "; ".join(parts) or "invalid request"


class TokenGuard:
    """ASGI middleware: every route but / and /health needs ``Authorization: Bearer <token>`` (else 401)."""

    def __init__(self, app, token: str):
        self.app, self.expected = app, b"Bearer " + token.encode("utf-8")

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope.get("path") not in OPEN_PATHS:
            given = b""
            for key, value in scope.get("headers", ()):
                if key == b"authorization":
                    given = value
                    break
            if not hmac.compare_digest(given, self.expected):
                body = json.dumps({"detail": "this server needs a token: Authorization: Bearer <token>"}).encode()
                await send({"type": "http.response.start", "status": 401,
                            "headers": [(b"content-type", b"application/json"), (b"www-authenticate", b"Bearer"),
                                        (b"content-length", str(len(body)).encode())]})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


PREDICT_BODY = {
    "required": True,
    "content": {
        "multipart/form-data": {"schema": {"type": "object", "required": ["file"],
                                           "properties": {"file": {"type": "string", "format": "binary"}}}},
        "application/octet-stream": {"schema": {"type": "string", "format": "binary"},
                                     "description": "the encoded image itself (PNG, JPEG, GIF, BMP, WebP, TIFF)"},
    },
}


def create_app(source, **limits) -> FastAPI:
    """The server of a model: `source` is a run folder, a .safetensors checkpoint, an exported .onnx file or an
    `convkit.export.runtime.Inference`; `limits` are the fields of `convkit.serve.limits.Limits`.

    Example:
        >>> from fastapi.testclient import TestClient
        >>> with TestClient(create_app(tiny_run, max_wait_ms=0)) as client:   # a run folder trained one epoch
        ...     client.get("/health").json(), client.get("/model").json()["task"]
        ({'status': 'ok'}, 'classification')
    """
    from convkit.export.runtime import Inference, load_inference

    inference = source if isinstance(source, Inference) else load_inference(source)
    settings = Limits(**limits)
    state = ServeState(inference, settings)
    page = PAGE.read_text(encoding="utf-8") if PAGE.is_file() else PLACEHOLDER

    @contextlib.asynccontextmanager
    async def lifespan(app):
        state.batcher.start()
        try:
            yield
        finally:
            await state.batcher.stop()
            state.close()

    app = FastAPI(title="convkit serve", version=_version(), lifespan=lifespan, docs_url=None, redoc_url=None,
                  description=f"{inference.name}: a {inference.task} model ({inference.backend}). /docs is off (it "
                  "would load its scripts from a CDN); the schema is at /openapi.json.")
    app.state.serve = state

    @app.exception_handler(HTTPError)
    async def _http_error(request, err: HTTPError):
        if err.status == 504:
            state.batcher.stats.timeouts += 1
        return JSONResponse({"detail": err.detail}, err.status, headers=err.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request, err: RequestValidationError):
        return JSONResponse({"detail": _detail_of(err.errors())}, 422)

    @app.exception_handler(StarletteHTTPException)
    async def _starlette(request, err: StarletteHTTPException):
        status = 422 if err.status_code == 400 else err.status_code
        return JSONResponse({"detail": str(err.detail)}, status, headers=getattr(err, "headers", None))

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index():
        return HTMLResponse(page, headers={"Content-Security-Policy": PAGE_POLICY, "Cache-Control": "no-cache"})

    @app.get("/health", summary="liveness: {\"status\": \"ok\"}")
    async def health():
        return {"status": "ok"}

    @app.get("/model", summary="the model (name, task, classes, input shape, backend) and the server's limits")
    async def model():
        return {**inference.metadata(), **settings.public()}

    @app.get("/stats", summary="images answered, forward passes, largest batch, refused (503) and late (504)")
    async def stats():
        return {**state.batcher.stats.to_dict(), "waiting": state.batcher.waiting, "active": state.active,
                "pid": os.getpid()}

    @app.post("/predict", openapi_extra={"requestBody": PREDICT_BODY},
              summary="one image (multipart field 'file', or the raw body) -> the model's answer")
    async def predict(request: Request,
                      top: int = Query(5, ge=1, le=1000, description="classifier: how many classes"),
                      score_threshold: float = Query(0.4, ge=0, le=1, allow_inf_nan=False,
                                                     description="detector: the lowest score reported"),
                      gradcam: bool = Query(False, description="classifier on pytorch: add the Grad-CAM overlay")):
        state.admit()
        state.active += 1
        try:
            async with _deadline(settings.timeout_s):
                data, name = await upload(request, settings.max_body_bytes)
                image, (height, width) = await state.decode_async(data, name)
                del data
                (answer,) = await state.answers([image], state.params(top, score_threshold))
                out = {"model": inference.name, "task": inference.task, "width": width, "height": height, **answer}
                if gradcam and inference.metadata()["gradcam"] and answer.get("predictions"):
                    best = answer["predictions"][0]
                    png = await state.gradcam_png(image, best["index"])
                    if png is not None:
                        out["gradcam_png"], out["gradcam_class"] = png, best["class"]
                return out
        finally:
            state.active -= 1

    from convkit.serve.oip import add_routes

    add_routes(app, state)
    if settings.token:
        app.add_middleware(TokenGuard, token=settings.token)
    return app


@contextlib.asynccontextmanager
async def _deadline(seconds: float):
    """asyncio.timeout that ends in HTTPError 504 (one line naming the limit)."""
    start = time.monotonic()
    try:
        async with asyncio.timeout(seconds):
            yield
    except TimeoutError:
        raise HTTPError(504, f"no answer within {seconds:g} s (--timeout); took {time.monotonic() - start:.3g} s "
                        "so far") from None


def _version() -> str:
    from convkit import __version__

    return __version__


def app_from_env() -> FastAPI:
    """The app of one worker of ``convkit serve --workers N``: settings read from $CONVKIT_SERVE_SETTINGS (JSON
    ``{"source": ..., "limits": {...}}``); each worker loads the model once."""
    settings = json.loads(os.environ[SETTINGS_ENV])
    return create_app(settings["source"], **settings["limits"])

