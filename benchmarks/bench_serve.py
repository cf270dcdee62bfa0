"""Issue 15's server: `convkit serve` (dynamic batching) against a naive endpoint, and onnxruntime against eager.

One run on this machine's CPU, loopback only, bounded in requests AND time:

1. the model: resnet20 (CIFAR-style ResNet, 0.27 M parameters, ~40 MMACs per 28x28 image) trained one epoch on 64
   built-in Fashion-MNIST images (``convkit.train(model="resnet20")``; accuracy is irrelevant here). Chosen because
   its forward pass is a real cost on a CPU (about 1-3 ms per image) while the HTTP work per request is small,
   which is the case batching is for; fastcnn at 28x28 costs less than the HTTP round trip;
2. (a) ``python -m convkit serve RUN --port 0`` (defaults: --max-batch 32 --max-wait-ms 5), (a') the same on the
   model exported by ``convkit.export.export_model`` (``convkit serve model.onnx``: onnxruntime) and (b) a naive
   endpoint written here: FastAPI + uvicorn, ``POST /predict`` with the raw image, the same
   `Inference.decode` and ONE `Inference.run` per request in Starlette's thread pool (what a FastAPI tutorial
   gives). Both are separate processes; torch's thread count is each process's default;
3. clients: asyncio streams (a bare HTTP/1.1 client, one kept-alive connection each), 1, 8 and 32 concurrent clients each posting the same 28x28 PNG
   (``--requests`` per level, at most ``--seconds`` per level) after a warm-up; requests/s, p50 and p99 latency;
   the ratio of requests/s at 32 clients;
4. forward speed of the same model: eager PyTorch against onnxruntime (the file `convkit.export.export_model`
   wrote, dynamic batch) at batch 1 and 32: median ms of ``--forward-reps`` calls after warm-up, and the largest
   difference of their logits.

Usage:
    python benchmarks/bench_serve.py [--requests 400] [--seconds 30] [--out benchmarks/results/serve_epyc.json]
    python benchmarks/bench_serve.py --quick        # a smoke test: fastcnn, 1 and 8 clients, a few requests

Prints one JSON object (progress on stderr). Timings on a shared machine are noisy: the JSON records the load
average before and after.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from fastapi import Request  # at module level: FastAPI resolves the endpoint's (string) annotations here

ROOT = Path(__file__).resolve().parents[1]


def log(*args):
    print(*args, file=sys.stderr, flush=True)


def naive_app(run: str):
    """The endpoint a user would write first: one forward pass per request."""
    from fastapi import FastAPI
    from starlette.concurrency import run_in_threadpool

    from convkit.export.runtime import load_inference

    inference = load_inference(run)
    app = FastAPI()

    @app.post("/predict")
    async def predict(request: Request):
        data = await request.body()
        return await run_in_threadpool(lambda: inference.run([inference.decode(data)])[0])

    return app


def serve_naive(run: str) -> None:
    import uvicorn

    sys.path.insert(0, str(ROOT / "src"))
    from convkit.cli.serve_cmds import bind

    sock = bind("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(naive_app(run), log_level="warning"))

    async def go():
        task = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started and not task.done():
            await asyncio.sleep(0.02)
        print(f"naive on http://127.0.0.1:{sock.getsockname()[1]}", flush=True)
        await task

    asyncio.run(go())


def start(cmd: list[str]) -> tuple[subprocess.Popen, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.append(proc.stdout.readline()), daemon=True)
    reader.start()
    reader.join(300)
    if not lines or " on http" not in lines[0]:
        proc.kill()
        raise SystemExit(f"server did not start: {cmd}")
    return proc, lines[0].strip().rsplit(" on ", 1)[1]


async def _post(reader, writer, host: str, body: bytes) -> int:
    """One POST /predict on a kept-alive connection; the status. A bare HTTP/1.1 client: httpx's pool costs more
    CPU than the servers measured once 32 clients share one process on 2 cores."""
    writer.write(f"POST /predict HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/octet-stream\r\n"
                 f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    await reader.readexactly(length)
    return status


async def load(url: str, body: bytes, clients: int, requests: int, seconds: float) -> dict:
    host, port = url.split("//", 1)[1].rsplit(":", 1)
    latencies: list[float] = []
    errors = 0
    issued = 0
    connections = [await asyncio.open_connection(host, int(port)) for _ in range(clients)]
    try:
        for _ in range(2):  # warm-up: every client's connection used before the clock starts
            await asyncio.gather(*(_post(r, w, host, body) for r, w in connections))
        deadline = time.perf_counter() + seconds

        async def worker(reader, writer):
            nonlocal issued, errors
            while issued < requests and time.perf_counter() < deadline:
                issued += 1
                t = time.perf_counter()
                status = await _post(reader, writer, host, body)
                latencies.append(time.perf_counter() - t)
                errors += status != 200

        t0 = time.perf_counter()
        await asyncio.gather(*(worker(r, w) for r, w in connections))
        wall = time.perf_counter() - t0
    finally:
        for _, writer in connections:
            writer.close()
    latencies.sort()
    q = statistics.quantiles(latencies, n=100, method="inclusive") if len(latencies) > 1 else latencies * 99
    return {"clients": clients, "requests": len(latencies), "errors": errors, "seconds": round(wall, 3),
            "requests_per_s": round(len(latencies) / wall, 2), "p50_ms": round(q[49] * 1000, 2),
            "p99_ms": round(q[98] * 1000, 2)}


def forward_speed(run: str, onnx_file: str, reps: int) -> dict:
    import numpy as np
    import torch

    from convkit.export import load_onnx
    from convkit.export.runtime import load_inference

    inference = load_inference(run)
    model = inference.model
    c, h, w = inference.input_shape
    out = {"torch_threads": torch.get_num_threads()}
    session = load_onnx(onnx_file).model.session  # `convkit export`'s file: the same graph `convkit serve` runs
    if True:
        for n in (1, 32):
            x = torch.randn(n, c, h, w)

            def timed(fn):
                for _ in range(3):
                    fn()
                times = []
                for _ in range(reps):
                    t = time.perf_counter()
                    fn()
                    times.append(time.perf_counter() - t)
                return statistics.median(times) * 1000

            with torch.no_grad():
                eager = timed(lambda x=x: model(x))
                ref = model(x).numpy()
            onnx = timed(lambda x=x: session.run(None, {"input": x.numpy()}))
            diff = float(np.abs(session.run(None, {"input": x.numpy()})[0] - ref).max())
            out[f"batch{n}"] = {"eager_ms": round(eager, 3), "onnxruntime_ms": round(onnx, 3),
                                "onnxruntime_speedup": round(eager / onnx, 2), "max_logit_diff": diff}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=800, help="requests per server and client level")
    parser.add_argument("--seconds", type=float, default=30, help="most seconds per server and client level")
    parser.add_argument("--forward-reps", type=int, default=30)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch/OpenMP threads of every "
                        "process, through OMP_NUM_THREADS (default: the cores, torch's own default; on a shared "
                        "machine 1 is steadier: 2 intra-op threads stall whenever another process holds a core)")
    parser.add_argument("--run", help="a trained run folder (default: train one)")
    parser.add_argument("--model", default="resnet20", help="the zoo model trained when no --run is given "
                        "(default: resnet20)")
    parser.add_argument("--quick", action="store_true", help="smoke test: fastcnn, 1 and 8 clients, few requests")
    parser.add_argument("--out", help="also write the JSON here (default: benchmarks/results/serve_epyc.json, "
                        "none with --quick)")
    parser.add_argument("--naive", help=argparse.SUPPRESS)  # internal: serve RUN with the naive endpoint
    args = parser.parse_args()
    os.environ["OMP_NUM_THREADS"] = str(args.threads)  # before torch is imported here and in the servers
    if args.naive:
        serve_naive(args.naive)
        return
    sys.path.insert(0, str(ROOT / "src"))
    import numpy as np
    from PIL import Image

    import convkit
    import convkit.export

    levels = (1, 8) if args.quick else (1, 8, 32)
    requests = min(args.requests, 16) if args.quick else args.requests
    seconds = min(args.seconds, 5) if args.quick else args.seconds
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as folder:
        run = args.run
        model = "fastcnn" if args.quick else args.model
        if run is None:
            log(f"training {model} (one epoch, 64 images)")
            with contextlib.redirect_stdout(sys.stderr):  # stdout stays one JSON document
                run = convkit.train(model=model, epochs=1, limit=64, test_limit=32, batch_size=32, quiet=True,
                                    seed=0, runs_dir=folder, name=model).run_dir
        image = convkit.data.load_default("test").images[0, 0].numpy()
        buffer = io.BytesIO()
        Image.fromarray(np.asarray(image)).save(buffer, "PNG")
        body = buffer.getvalue()
        result = {"model": model, "run": Path(run).name, "machine": platform.processor() or platform.machine(),
                  "cpus": os.cpu_count(), "load_before": [round(v, 2) for v in load_before],
                  "threads": args.threads, "requests_per_level": requests, "seconds_per_level": seconds, "servers": {}}
        onnx_file = str(convkit.export.export_model(run, "onnx", Path(folder) / "model.onnx").path)
        servers = [("convkit", [sys.executable, "-m", "convkit", "serve", str(run), "--port", "0"]),
                   ("convkit_onnx", [sys.executable, "-m", "convkit", "serve", onnx_file, "--port", "0"]),
                   ("naive", [sys.executable, __file__, "--naive", str(run)])]
        for name, cmd in servers[::2] if args.quick else servers:
            proc, url = start(cmd)
            try:
                rows = []
                for clients in levels:
                    row = asyncio.run(load(url, body, clients, requests, seconds))
                    log(name, row)
                    rows.append(row)
                if name.startswith("convkit"):
                    import httpx

                    result[f"{name}_stats"] = httpx.get(url + "/stats").json()
                result["servers"][name] = rows
            finally:
                proc.terminate()
                proc.wait(30)
        top = levels[-1]
        a = next(r for r in result["servers"]["convkit"] if r["clients"] == top)
        b = next(r for r in result["servers"]["naive"] if r["clients"] == top)
        result[f"ratio_at_{top}_clients"] = round(a["requests_per_s"] / b["requests_per_s"], 2)
        result[f"convkit_p99_over_p50_at_{top}"] = round(a["p99_ms"] / a["p50_ms"], 2)
        if "convkit_onnx" in result["servers"]:
            o = next(r for r in result["servers"]["convkit_onnx"] if r["clients"] == top)
            result[f"onnx_ratio_at_{top}_clients"] = round(o["requests_per_s"] / b["requests_per_s"], 2)
            result[f"convkit_onnx_p99_over_p50_at_{top}"] = round(o["p99_ms"] / o["p50_ms"], 2)
        log("forward speed: eager vs onnxruntime")
        result["forward"] = forward_speed(run, onnx_file, 5 if args.quick else args.forward_reps)
    result["load_after"] = [round(v, 2) for v in os.getloadavg()]
    text = json.dumps(result, indent=2)
    print(text)
    out = args.out or (None if args.quick else str(ROOT / "benchmarks" / "results" / "serve_epyc.json"))
    if out:
        Path(out).write_text(text + "\n")


if __name__ == "__main__":
    main()
