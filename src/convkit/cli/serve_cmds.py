"""The ``convkit serve`` verb (registered by ``cli.main``): a trained model behind HTTP, with a page at /."""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import socket
import sys
import threading
import time

from convkit.cli.common import FORMATTER, CLIError, positive_float, positive_int

TOKEN_ENV = "CONVKIT_SERVE_TOKEN"

EXAMPLES = {
    "serve": """examples:
  convkit serve runs/fastcnn-20250101-120000              http://127.0.0.1:8000: a page at /, POST /predict
  curl -F file=@shoe.png http://127.0.0.1:8000/predict    the top 5 classes, as JSON
  curl --data-binary @shoe.png 'http://127.0.0.1:8000/predict?top=3&gradcam=true'
  convkit serve model.onnx --port 0                       an exported model (onnxruntime), any free port
  convkit serve runs/yolo-... --max-batch 16 --max-wait-ms 10 --workers 2
  CONVKIT_SERVE_TOKEN=s3cret convkit serve runs/NAME --host 0.0.0.0 --allow-remote
                                                          other machines, with Authorization: Bearer s3cret
routes: / (page), /health, /model, /stats, /predict, /openapi.json, and the Open Inference Protocol v2:
  /v2, /v2/health/live, /v2/health/ready, /v2/models/NAME, /v2/models/NAME/ready, /v2/models/NAME/infer""",
}


def nonnegative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text}")
    return value


def port_number(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port 0..65535 (0: any free port), got {value}")
    return value


def is_loopback(host: str) -> bool:
    """Whether `host` is reachable from this machine only (127.0.0.0/8, ::1, localhost).

    Example:
        >>> is_loopback("127.0.0.1"), is_loopback("localhost"), is_loopback("0.0.0.0"), is_loopback("::")
        (True, True, False, False)
    """
    if host.lower() in ("localhost", "localhost.localdomain", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def check_exposure(host: str, allow_remote: bool, token: str | None) -> None:
    """A non-loopback `host` needs `allow_remote` and a `token`; raises CLIError (exit 2) otherwise."""
    if is_loopback(host):
        return
    if not allow_remote:
        raise CLIError(f"--host {host} would let other machines reach the model; add --allow-remote and a token "
                       f"(--token T or ${TOKEN_ENV}), or serve on 127.0.0.1")
    if not token:
        raise CLIError(f"--host {host} --allow-remote needs a token: --token T or the environment variable "
                       f"{TOKEN_ENV} (clients then send Authorization: Bearer T)")


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on host:port (port 0: a free one), inheritable by worker processes."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM,
                                                              flags=socket.AI_PASSIVE)[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError as err:
        raise CLIError(f"cannot listen on {host}:{port}: {err.strerror or err}") from None
    sock.set_inheritable(True)
    return sock


def _url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _announce_when_up(line: str, host: str, port: int, stop: threading.Event) -> None:
    """For --workers N: prints `line` once a worker answers /health."""
    import http.client

    probe = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
    while not stop.is_set():
        try:
            conn = http.client.HTTPConnection(probe, port, timeout=2)
            conn.request("GET", "/health")
            if conn.getresponse().status == 200:
                print(line, flush=True)
                return
        except OSError:
            pass
        time.sleep(0.1)


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        import fastapi  # noqa: F401
        import uvicorn
    except ImportError as err:
        raise CLIError(f"convkit serve needs the serve extra ({err.name} is missing): pip install "
                       "'convkit[serve]'") from None
    from convkit.export.runtime import load_inference
    from convkit.serve.app import SETTINGS_ENV, create_app
    from convkit.serve.limits import Limits

    token = args.token or os.environ.get(TOKEN_ENV) or None
    check_exposure(args.host, args.allow_remote, token)
    try:
        limits = Limits(max_batch=args.max_batch, max_wait_ms=args.max_wait_ms, queue=args.queue,
                        timeout_s=args.timeout, max_body_bytes=max(1, int(args.max_body_mb * 2**20)),
                        max_pixels=args.max_pixels, token=token)
    except ValueError as err:
        raise CLIError(str(err)) from None
    inference = load_inference(args.source)
    sock = bind(args.host, args.port)
    port = sock.getsockname()[1]
    line = (f"convkit serve: {inference.name} ({inference.task}, {inference.backend}) on "
            f"{_url(args.host, port)}")
    common = {"host": args.host, "port": port, "log_level": args.log_level, "access_log": args.access_log,
              "timeout_graceful_shutdown": 5, "server_header": False}
    if args.workers > 1:
        from uvicorn.supervisors import Multiprocess

        source = str(os.path.abspath(args.source))
        del inference  # each worker loads its own
        os.environ[SETTINGS_ENV] = json.dumps({"source": source, "limits": limits.to_json()})
        config = uvicorn.Config("convkit.serve.app:app_from_env", factory=True, workers=args.workers, **common)
        stop = threading.Event()
        threading.Thread(target=_announce_when_up, args=(line, args.host, port, stop), daemon=True).start()
        try:
            Multiprocess(config, sockets=[sock]).run()
        finally:
            stop.set()
        return 0

    import asyncio

    config = uvicorn.Config(create_app(inference, **limits.to_json()), **common)
    server = uvicorn.Server(config)

    async def serve():
        task = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started and not task.done():
            await asyncio.sleep(0.02)
        if server.started:
            print(line, flush=True)
        await task

    asyncio.run(serve())
    if not server.started:
        print("convkit: error: the server did not start (see the messages above)", file=sys.stderr)
        return 1
    return 0


def register(verbs, formatter_class=FORMATTER) -> None:
    """Adds the ``serve`` subparser to ``verbs`` (from add_subparsers).

    Example:
        >>> parser = argparse.ArgumentParser()
        >>> register(parser.add_subparsers(dest="verb"))
        >>> args = parser.parse_args(["serve", "runs/x", "--port", "0", "--max-batch", "8"])
        >>> args.source, args.port, args.max_batch, args.host, args.run.__name__
        ('runs/x', 0, 8, '127.0.0.1', 'cmd_serve')
    """
    p = verbs.add_parser("serve", help="serve a trained model over HTTP (a page, /predict, Open Inference v2)",
                         description="Serve a trained model over HTTP: a page at / to try it, POST /predict "
                         "(multipart field 'file' or the raw image) and the Open Inference Protocol v2 (KServe, "
                         "Triton). Concurrent requests share forward passes (dynamic batching). Prints one line "
                         "'convkit serve: NAME (TASK, BACKEND) on http://HOST:PORT' when ready.",
                         epilog=EXAMPLES["serve"], formatter_class=formatter_class)
    p.add_argument("source", metavar="SOURCE", help="a run folder, a .safetensors checkpoint or an exported .onnx")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, this machine "
                   "only; another needs --allow-remote and a token)")
    p.add_argument("--port", type=port_number, default=8000, help="port (default: 8000; 0: any free port)")
    p.add_argument("--workers", type=positive_int, default=1, help="processes, each with its own copy of the model "
                   "(default: 1)")
    p.add_argument("--max-batch", type=positive_int, default=32, help="most images per forward pass (default: 32)")
    p.add_argument("--max-wait-ms", type=nonnegative_float, default=5.0, metavar="MS",
                   help="how long a forward pass waits for more requests after the first (default: 5)")
    p.add_argument("--queue", type=positive_int, default=256, help="most requests waiting; more are answered 503 "
                   "with Retry-After (default: 256)")
    p.add_argument("--timeout", type=positive_float, default=10.0, metavar="S",
                   help="seconds a request may take in all; later: 504 (default: 10)")
    p.add_argument("--max-body-mb", type=positive_float, default=10.0, metavar="MB",
                   help="largest request body in MB; larger: 413 (default: 10)")
    p.add_argument("--max-pixels", type=positive_int, default=40_000_000,
                   help="most pixels of one image, read from its header before decoding; more: 422 "
                   "(default: 40000000)")
    p.add_argument("--token", help=f"require Authorization: Bearer TOKEN on every route but / and /health (default: "
                   f"${TOKEN_ENV}; the variable keeps it out of the process list)")
    p.add_argument("--allow-remote", action="store_true", help="allow a --host other machines can reach (needs a "
                   "token)")
    p.add_argument("--log-level", default="warning", choices=["critical", "error", "warning", "info", "debug"],
                   help="uvicorn's log level (default: warning)")
    p.add_argument("--access-log", action="store_true", help="log every request (uvicorn's access log)")
    p.set_defaults(run=cmd_serve)
