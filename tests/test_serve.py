"""`convkit serve`: real server processes (one per model kind, shared by the module) answered over HTTP (httpx).

Truth: `convkit predict` (convkit.tasks.classification.predict) on the same files, `Inference.run` in-process for
the detector and the segmenter, numpy's bincount of the decoded mask PNG, the PNG spec for a forged header."""

import asyncio
import base64
import io
import os
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import zlib
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from PIL import Image

import convkit
from convkit.cli.main import main
from convkit.export.runtime import Inference, load_inference

SRC = str(Path(convkit.__file__).parents[1])
TOKEN = "s3cret-token"


class Server:
    """`python -m convkit serve SOURCE --port 0 ARGS` until the ready line; `url`, `pid`, `stop()`."""

    def __init__(self, source, *args, env=None, wait=120):
        self.log = tempfile.TemporaryFile()
        self.proc = subprocess.Popen([sys.executable, "-m", "convkit", "serve", str(source), "--port", "0", *args],
                                     stdout=subprocess.PIPE, stderr=self.log, text=True,
                                     env={**os.environ, "PYTHONPATH": SRC, **(env or {})})
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.append(self.proc.stdout.readline()), daemon=True)
        reader.start()
        reader.join(wait)
        if not lines or not lines[0].startswith("convkit serve: "):
            self.stop()
            self.log.seek(0)
            pytest.fail(f"no ready line: {lines!r}; stderr: {self.log.read().decode()[-2000:]}")
        self.line = lines[0].strip()
        self.url = self.line.rsplit(" on ", 1)[1].replace("0.0.0.0", "127.0.0.1")
        self.port = int(self.url.rsplit(":", 1)[1])
        self.pid = self.proc.pid

    def client(self, **kwargs) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=60, **kwargs)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class ThreadServer:
    """`create_app(source, **limits)` served by uvicorn on a free loopback port in a thread of this process (real
    HTTP; no second import of torch): for the servers that differ only in their model or limits."""

    def __init__(self, source, **limits):
        import time

        import uvicorn

        from convkit.cli.serve_cmds import bind
        from convkit.serve.app import create_app

        sock = bind("127.0.0.1", 0)
        self.port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(create_app(source, **limits), log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True)
        self.thread.start()
        while not self.server.started:
            assert self.thread.is_alive(), "the server did not start"
            time.sleep(0.01)

    def client(self, **kwargs) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=60, **kwargs)

    def stop(self):
        self.server.should_exit = True
        self.thread.join(30)


def png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "PNG")
    return buffer.getvalue()


def forged_png(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height (valid CRC), with 1x1 pixel data: a decompression bomb's header."""
    data = bytearray(png(np.zeros((1, 1), np.uint8)))
    ihdr = struct.pack(">II", width, height) + bytes(data[24:29])
    data[16:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return bytes(data)


def statuses(url: str, requests: list[dict], headers=None) -> list[httpx.Response]:
    """The requests (httpx.request keyword arguments) sent all at once."""
    async def go():
        async with httpx.AsyncClient(base_url=url, timeout=60, headers=headers,
                                     limits=httpx.Limits(max_connections=64)) as client:
            return await asyncio.gather(*(client.request(**r) for r in requests))
    return asyncio.run(go())


@pytest.fixture(scope="module")
def clf_run(tmp_path_factory):
    result = convkit.train(epochs=1, limit=64, test_limit=32, batch_size=32, quiet=True, seed=0, threads=1,
                           runs_dir=str(tmp_path_factory.mktemp("runs")), name="fastcnn-serve")
    return Path(result.run_dir)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """16 test images of Fashion-MNIST as PNG files (28x28 gray) and one colour 40x30 JPEG."""
    folder = tmp_path_factory.mktemp("images")
    test = convkit.data.load_default("test").images
    paths = []
    for k in range(16):
        path = folder / f"{k:02d}.png"
        Image.fromarray(test[k, 0].numpy()).save(path)
        paths.append(path)
    colour = folder / "colour.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (30, 40, 3), dtype=np.uint8)).save(colour, quality=90)
    return paths + [colour]


@pytest.fixture(scope="module")
def clf(clf_run):
    server = Server(clf_run, "--max-wait-ms", "100", "--max-batch", "16", "--max-body-mb", "1")
    yield server
    server.stop()


@pytest.mark.slow
def test_predict_multipart_and_raw_body_equal_convkit_predict(clf, clf_run, images):
    from convkit.tasks.classification.predict import predict

    truth = predict(clf_run, images, top=10)
    with clf.client() as client:
        for path, expected in zip(images[::4] + [images[-1]], truth[::4] + [truth[-1]]):
            data = path.read_bytes()
            a = client.post("/predict", params={"top": 10}, files={"file": (path.name, data, "image/png")})
            b = client.post("/predict?top=10", content=data, headers={"content-type": "application/octet-stream"})
            assert a.status_code == b.status_code == 200, (a.text, b.text)
            assert a.json() == b.json()
            answer = a.json()
            assert (answer["model"], answer["task"]) == ("fastcnn", "classification")
            with Image.open(path) as img:
                assert (answer["width"], answer["height"]) == img.size
            assert [p["class"] for p in answer["predictions"]] == [c for c, _ in expected.top]
            assert [p["probability"] for p in answer["predictions"]] == pytest.approx(
                [p for _, p in expected.top], abs=1e-6)
        three = client.post("/predict?top=3", content=images[0].read_bytes()).json()["predictions"]
        assert [p["class"] for p in three] == [c for c, _ in truth[0].top[:3]]


@pytest.mark.slow
def test_an_exported_onnx_model_is_served_alike(clf_run, images, tmp_path):
    """`convkit serve model.onnx`: onnxruntime behind the same routes; answers equal `convkit predict` on the run
    within 1e-4; no Grad-CAM (an ONNX graph has no gradients)."""
    from convkit.export import export_model
    from convkit.tasks.classification.predict import predict

    onnx_file = export_model(clf_run, "onnx", tmp_path / "clf.onnx").path
    truth = predict(clf_run, images[:4], top=3)
    server = ThreadServer(onnx_file)
    try:
        with server.client() as client:
            meta = client.get("/model").json()
            assert (meta["backend"], meta["gradcam"], meta["task"]) == ("onnxruntime", False, "classification")
            for path, expected in zip(images[:4], truth):
                answer = client.post("/predict?top=3&gradcam=true", content=path.read_bytes()).json()
                assert [p["class"] for p in answer["predictions"]] == [c for c, _ in expected.top]
                assert [p["probability"] for p in answer["predictions"]] == pytest.approx(
                    [p for _, p in expected.top], abs=1e-4)
                assert "gradcam_png" not in answer
    finally:
        server.stop()


@pytest.mark.slow
def test_health_model_stats_openapi_and_the_page(clf):
    with clf.client() as client:
        assert client.get("/health").json() == {"status": "ok"}
        model = client.get("/model").json()
        assert model["task"] == "classification" and model["input_shape"] == [1, 28, 28] and len(model["classes"]) == 10
        assert {k: model[k] for k in ("max_batch", "max_wait_ms", "queue", "timeout_s", "max_body_bytes",
                                      "max_pixels")} == {"max_batch": 16, "max_wait_ms": 100.0, "queue": 256,
                                                         "timeout_s": 10.0, "max_body_bytes": 2**20,
                                                         "max_pixels": 40_000_000}
        assert "token" not in model
        assert set(client.get("/stats").json()) >= {"requests", "batches", "largest_batch"}
        paths = set(client.get("/openapi.json").json()["paths"])
        assert paths >= {"/health", "/model", "/stats", "/predict", "/v2", "/v2/health/live", "/v2/health/ready",
                         "/v2/models/{name}", "/v2/models/{name}/ready", "/v2/models/{name}/infer"}
        page = client.get("/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert "default-src 'none'" in page.headers["content-security-policy"]
        assert client.get("/docs").status_code == 404  # swagger would come from a CDN


@pytest.mark.slow
def test_concurrent_requests_share_forward_passes_and_equal_unbatched_answers(clf, images):
    files = images[:16]
    with clf.client() as client:
        alone = [client.post("/predict?top=10", content=p.read_bytes()).json() for p in files]
        before = client.get("/stats").json()
    together = statuses(clf.url, [{"method": "POST", "url": "/predict?top=10", "content": p.read_bytes()}
                                  for p in files])
    with clf.client() as client:
        after = client.get("/stats").json()
    assert [r.status_code for r in together] == [200] * 16
    # the same answers, batched or not: same classes in the same order; probabilities equal up to one unit of
    # their 6-decimal rounding (a batched CPU convolution sums in another order: the softmax differs by < 1e-7)
    for batched, single in zip((r.json() for r in together), alone):
        assert [p["class"] for p in batched["predictions"]] == [p["class"] for p in single["predictions"]]
        assert [p["probability"] for p in batched["predictions"]] == pytest.approx(
            [p["probability"] for p in single["predictions"]], abs=1.01e-6, rel=0)
        assert {k: v for k, v in batched.items() if k != "predictions"} == {
            k: v for k, v in single.items() if k != "predictions"}
    passes = after["batches"] - before["batches"]
    assert after["requests"] - before["requests"] == 16
    assert passes < 16 and after["largest_batch"] > 1, (before, after)


@pytest.mark.slow
def test_gradcam_overlay_equals_the_in_process_one(clf, clf_run, images):
    from convkit.explain.attribution import overlay

    data = images[3].read_bytes()
    with clf.client() as client:
        answer = client.post("/predict?gradcam=true", files={"file": ("x.png", data)}).json()
        plain = client.post("/predict", content=data).json()
    assert "gradcam_png" not in plain
    assert answer["gradcam_class"] == answer["predictions"][0]["class"]
    served = np.asarray(Image.open(io.BytesIO(base64.b64decode(answer["gradcam_png"]))))
    inference = load_inference(clf_run)
    image = inference.decode(data)
    expected = overlay(image, inference.gradcam(image, answer["predictions"][0]["index"]), alpha=0.5)
    assert served.shape == (28, 28, 3)
    assert np.abs(served.astype(int) - expected.astype(int)).max() <= 1


@pytest.mark.slow
def test_open_inference_protocol_uint8_and_base64_bytes_equal_predict(clf, clf_run, images):
    inference = load_inference(clf_run)
    picked = images[:3]
    with clf.client() as client:
        expected = [client.post("/predict?top=4", content=p.read_bytes()).json()["predictions"] for p in picked]
        pixels = torch.stack([inference.decode(p.read_bytes()) for p in picked]).numpy()
        uint8 = client.post("/v2/models/fastcnn/infer", json={
            "id": "r1", "parameters": {"top": 4},
            "inputs": [{"name": "image", "shape": list(pixels.shape), "datatype": "UINT8",
                        "data": pixels.flatten().tolist()}]})
        b64 = client.post("/v2/models/fastcnn/infer", json={
            "parameters": {"top": 4}, "outputs": [{"name": "probabilities"}, {"name": "classes"}],
            "inputs": [{"name": "image", "shape": [3], "datatype": "BYTES",
                        "data": [base64.b64encode(p.read_bytes()).decode() for p in picked]}]})
        assert uint8.status_code == b64.status_code == 200, (uint8.text, b64.text)
        out = {o["name"]: o for o in uint8.json()["outputs"]}
        assert uint8.json()["id"] == "r1" and uint8.json()["model_name"] == "fastcnn"
        assert out["probabilities"]["shape"] == [3, 4] and out["probabilities"]["datatype"] == "FP32"
        assert out["probabilities"]["data"] == [p["probability"] for e in expected for p in e]
        assert out["indices"]["data"] == [p["index"] for e in expected for p in e]
        assert out["classes"]["data"] == [p["class"] for e in expected for p in e]
        assert [o["name"] for o in b64.json()["outputs"]] == ["probabilities", "classes"]
        assert b64.json()["outputs"][0] == out["probabilities"]
        assert client.get("/v2").json()["name"] == "convkit"
        assert client.get("/v2/health/live").json() == {"live": True}
        assert client.get("/v2/health/ready").json() == {"ready": True}
        meta = client.get("/v2/models/fastcnn").json()
        assert meta["inputs"][0] == {"name": "image", "datatype": "UINT8", "shape": [-1, 1, 28, 28]}
        assert client.get("/v2/models/fastcnn/ready").json()["ready"] is True
        for path in ("/v2/models/resnet50", "/v2/models/resnet50/ready"):
            assert client.get(path).status_code == 404
        assert client.post("/v2/models/nope/infer", json={}).status_code == 404


def raw_request(port: int, head: bytes, body: bytes = b"") -> int:
    """Sends bytes over a socket; the status of the answer (0: the connection was closed without one)."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(head + body)
        answer = b""
        try:
            while b"\r\n" not in answer:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                answer += chunk
        except ConnectionResetError:
            return 0
    return int(answer.split()[1]) if answer.startswith(b"HTTP/1.1 ") else 0


@pytest.mark.slow
def test_each_bad_input_gets_its_status_and_the_server_stays_healthy(clf, images):
    good = images[0].read_bytes()
    with clf.client() as client:
        cases = {
            "not an image": (client.post("/predict", content=b"<html>hello</html>"), 415),
            "PDF named .png": (client.post("/predict", files={"file": ("x.png", b"%PDF-1.4 ...", "image/png")}),
                               415),
            "empty body": (client.post("/predict", content=b""), 422),
            "truncated PNG": (client.post("/predict", content=good[:len(good) // 2]), 422),
            "truncated JPEG": (client.post("/predict", content=images[-1].read_bytes()[:300]), 422),
            "bomb header": (client.post("/predict", content=forged_png(20000, 20000)), 422),
            "top=0": (client.post("/predict?top=0", content=good), 422),
            "top=abc": (client.post("/predict?top=abc", content=good), 422),
            "threshold=nan": (client.post("/predict?score_threshold=nan", content=good), 422),
            "wrong field": (client.post("/predict", files={"image": ("x.png", good)}), 422),
            "bad boundary": (client.post("/predict", content=b"--zz\r\ngarbage",
                                         headers={"content-type": "multipart/form-data; boundary=yy"}), 422),
            "chunked over 1 MB": (client.post("/predict", content=iter([good + b"\0" * 2**16] * 20)), 413),
            "GET /predict": (client.get("/predict"), 405),
            "OIP not JSON": (client.post("/v2/models/fastcnn/infer", content=b"{"), 422),
            "OIP FP32": (client.post("/v2/models/fastcnn/infer", json={"inputs": [
                {"name": "x", "shape": [1], "datatype": "FP32", "data": [1.0]}]}), 422),
            "OIP wrong size": (client.post("/v2/models/fastcnn/infer", json={"inputs": [
                {"name": "x", "shape": [1, 1, 28, 28], "datatype": "UINT8", "data": [0] * 10}]}), 422),
            "OIP 300": (client.post("/v2/models/fastcnn/infer", json={"inputs": [
                {"name": "x", "shape": [1, 1, 1, 2], "datatype": "UINT8", "data": [0, 300]}]}), 422),
            "OIP not base64": (client.post("/v2/models/fastcnn/infer", json={"inputs": [
                {"name": "x", "shape": [1], "datatype": "BYTES", "data": ["***"]}]}), 422),
            "OIP 17 images": (client.post("/v2/models/fastcnn/infer", json={"inputs": [
                {"name": "x", "shape": [17], "datatype": "BYTES", "data": ["AA=="] * 17}]}), 422),
        }
        for name, (response, status) in cases.items():
            assert response.status_code == status, (name, response.text)
            assert isinstance(response.json()["detail"], str) and response.json()["detail"], name
        # Content-Length over the limit: refused before the body is read (none is sent)
        assert raw_request(clf.port, b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 999999999\r\n\r\n") == 413
        assert client.get("/health").json() == {"status": "ok"}
        assert client.post("/predict", content=good).status_code == 200


@pytest.mark.slow
class SlowInference(Inference):
    """A model whose forward pass takes 300 ms."""

    def run(self, images, **params):
        import time

        time.sleep(0.3)
        return super().run(images, **params)


def test_a_full_queue_is_503_with_retry_after_and_a_late_request_504(clf_run, images):
    # the forward pass takes 300 ms; the deadline is 100 ms; one request may wait
    slow = load_inference(clf_run)
    slow.__class__ = SlowInference
    server = ThreadServer(slow, queue=1, max_wait_ms=5, timeout_s=0.1)
    try:
        data = images[0].read_bytes()
        with server.client() as client:
            late = client.post("/predict", content=data)
            assert late.status_code == 504 and "--timeout" in late.json()["detail"]
        answers = statuses(server.url, [{"method": "POST", "url": "/predict", "content": data}] * 8)
        codes = [r.status_code for r in answers]
        assert set(codes) <= {503, 504} and codes.count(503) >= 1, codes
        assert all(r.headers["retry-after"] == "1" for r in answers if r.status_code == 503)
        with server.client() as client:
            assert client.get("/health").status_code == 200
            stats = client.get("/stats").json()
        assert stats["rejected"] == codes.count(503)
    finally:
        server.stop()


@pytest.fixture(scope="module")
def det_run(tmp_path_factory):
    result = convkit.train(task="detect", epochs=1, runs_dir=str(tmp_path_factory.mktemp("det")), name="yolo",
                           limit=16, test_limit=4, batch_size=8, quiet=True, threads=1)
    return Path(result.run_dir)


@pytest.fixture(scope="module")
def seg_run(tmp_path_factory):
    result = convkit.train(task="segment", epochs=1, runs_dir=str(tmp_path_factory.mktemp("seg")), name="unet",
                           limit=8, test_limit=2, batch_size=8, quiet=True, threads=1, model="unet",
                           model_kwargs={"depth": 2, "width": 8})
    return Path(result.run_dir)


def scene_pngs(count: int) -> list[bytes]:
    from convkit.tasks.detection.scenes import make_scenes

    scenes = make_scenes(count, seed=5, split="test", masks=False)
    return [png(scenes.images[k][0].numpy()) for k in range(count)]


@pytest.mark.slow
def test_a_detector_answers_as_inference_run_in_process(det_run):
    inference = load_inference(det_run)
    server = ThreadServer(inference)
    try:
        with server.client() as client:
            for data in scene_pngs(3):
                answer = client.post("/predict?score_threshold=0.05", files={"file": ("s.png", data)}).json()
                (expected,) = inference.run([inference.decode(data)], score_threshold=0.05)
                assert answer["task"] == "detect" and (answer["width"], answer["height"]) == (96, 96)
                got, want = answer["detections"], expected["detections"]
                assert [d["label"] for d in got] == [d["label"] for d in want]
                for g, w in zip(got, want):
                    assert [g["box"][k] for k in "xmin ymin xmax ymax".split()] == pytest.approx(
                        [w["box"][k] for k in "xmin ymin xmax ymax".split()], abs=1e-3)
                    assert g["score"] == pytest.approx(w["score"], abs=1e-3)
            oip = client.post(f"/v2/models/{inference.name}/infer", json={
                "parameters": {"score_threshold": 0.05},
                "inputs": [{"name": "image", "shape": [1], "datatype": "BYTES",
                            "data": [base64.b64encode(data).decode()]}]}).json()
            boxes = {o["name"]: o for o in oip["outputs"]}["boxes"]
            assert boxes["shape"] == [len(got), 4]
            assert boxes["data"] == [d["box"][k] for d in got for k in ("xmin", "ymin", "xmax", "ymax")]
    finally:
        server.stop()


@pytest.mark.slow
def test_a_segmenter_mask_png_is_the_class_map_and_areas_are_its_bincount(seg_run):
    inference = load_inference(seg_run)
    server = ThreadServer(inference)
    try:
        with server.client() as client:
            for data in scene_pngs(2):
                answer = client.post("/predict", content=data).json()
                (expected,) = inference.run([inference.decode(data)])
                served = np.asarray(Image.open(io.BytesIO(base64.b64decode(answer["mask_png"]))))
                truth = np.asarray(Image.open(io.BytesIO(base64.b64decode(expected["mask_png"]))))
                assert served.shape == (96, 96) and (served == truth).all()
                counts = np.bincount(served.flatten(), minlength=len(inference.classes))
                assert answer["areas"] == {inference.classes[k]: int(n) for k, n in enumerate(counts) if n}
                assert (answer["width"], answer["height"]) == (96, 96)
    finally:
        server.stop()


def test_other_machines_need_allow_remote_and_a_token(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("CONVKIT_SERVE_TOKEN", raising=False)
    for args, words in ((["--host", "0.0.0.0"], "--allow-remote"), (["--host", "::", "--allow-remote"], "needs a token"),
                        (["--host", "example.org", "--allow-remote", "--token", ""], "needs a token")):
        assert main(["serve", str(tmp_path), *args]) == 2  # refused before the model is read
        captured = capsys.readouterr()
        lines = captured.err.strip().splitlines()
        assert captured.out == "" and len(lines) == 1 and lines[0].startswith("convkit: error: ")
        assert words in lines[0], lines


@pytest.mark.slow
def test_a_token_is_needed_on_every_route_but_the_page_and_health_with_two_workers(clf_run, images):
    server = Server(clf_run, "--host", "0.0.0.0", "--allow-remote", "--workers", "2",
                    env={"CONVKIT_SERVE_TOKEN": TOKEN})
    try:
        data = images[0].read_bytes()
        with server.client() as client:
            assert client.get("/health").status_code == 200 and client.get("/").status_code == 200
            for path in ("/model", "/stats", "/openapi.json", "/v2", "/v2/models/fastcnn"):
                refused = client.get(path)
                assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer", path
            assert client.post("/predict", content=data).status_code == 401
            assert client.post("/predict", content=data, headers={"Authorization": "Bearer wrong"}).status_code == 401
        with server.client(headers={"Authorization": f"Bearer {TOKEN}"}) as client:
            answers = [client.post("/predict", content=data) for _ in range(4)]
            assert [r.status_code for r in answers] == [200] * 4
            assert all(r.json() == answers[0].json() for r in answers)
            assert client.get("/model").json()["task"] == "classification"
    finally:
        server.stop()


def test_the_serve_verb_has_an_example_in_its_help(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["serve", "--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    assert "convkit serve runs/" in text and "curl -F file=@" in text and "--allow-remote" in text


def test_bad_limits_are_one_line_errors(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["serve", "runs/none", "--max-wait-ms", "-1"])
    assert exit_.value.code == 2 and "expected a number >= 0" in capsys.readouterr().err
    assert main(["serve", str(Path(tempfile.gettempdir()) / "no-such-run-xyz")]) == 2
    assert "no-such-run-xyz" in capsys.readouterr().err
