"""Generated malformed inputs fed through convkit's readers: images, CSVs, model files, checkpoints.

Run by tests/test_fuzz_inputs.py in a subprocess under a memory cap; also runnable by hand to reproduce a case:

    python tests/fuzz_inputs.py images --seed 0 --count 100 --dir /tmp/fuzz

Each input is written to a file under --dir (so a failing case can be opened again) and fed to the reader a user
would reach it through. The outcome is one of:
    ok       the reader returned (possibly after warnings naming skipped files);
    refused  it raised a ConvkitError (exit code 2 in the CLI) with a one-line message of bounded length;
    FAILED   anything else: another exception (a traceback for the user), a multi-line or huge message,
             or more than --seconds on one input (a hang).
The last line printed is JSON: {"kind", "count", "ok", "refused", "failures": [{"input", "error"}]}.
"""

# ruff: noqa: B023  (each lambda is called at once by check(), inside its loop iteration)

from __future__ import annotations

import argparse
import io
import json
import os
import random
import signal
import struct
import sys
import warnings
import zlib
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from convkit.errors import ConvkitError

MAX_MESSAGE = 2000  # characters: a message past this has printed a user value in full


class Hang(Exception):
    pass


def _alarm(signum, frame):
    raise Hang("took longer than the per-input limit")


# --- images --------------------------------------------------------------------------------------------------

def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _png_claiming(width: int, height: int) -> bytes:
    """A small, valid-looking PNG whose header claims width x height 8-bit grayscale pixels (a decompression bomb
    when the claim is huge: the few compressed bytes expand to width*height)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    rows = zlib.compress(b"\0" * min(width + 1, 1 << 16) * min(height, 64), 9)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", rows) + _png_chunk(b"IEND", b"")


def _valid_image(rng: random.Random, fmt: str) -> bytes:
    mode = rng.choice(["L", "RGB", "RGBA", "P", "I;16", "1", "LA", "CMYK", "F", "I"])
    if fmt in {"JPEG"} and mode not in {"L", "RGB", "CMYK"}:
        mode = "RGB"
    if fmt == "BMP" and mode not in {"L", "RGB", "1", "P"}:
        mode = "RGB"
    if fmt == "WEBP" and mode not in {"RGB", "RGBA"}:
        mode = "RGB"
    if fmt == "PNG" and mode in {"CMYK", "F", "I"}:
        mode = "I;16"
    if fmt == "GIF" and mode not in {"L", "P", "1"}:
        mode = "P"
    size = (rng.randint(1, 40), rng.randint(1, 40))
    array = np.random.default_rng(rng.randint(0, 1 << 30)).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    image = Image.fromarray(array, "RGB").convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()


def make_image(rng: random.Random) -> tuple[str, bytes]:
    """(file name, bytes) of one image file, valid or damaged in one of many ways."""
    fmt = rng.choice(["PNG", "JPEG", "BMP", "WEBP", "GIF", "TIFF"])
    data = _valid_image(rng, fmt)
    name = rng.choice(["a.png", "b.jpg", "c.jpeg", "d.bmp", "e.webp"])
    how = rng.choice(["valid", "truncate", "flip", "flip", "bomb", "random", "empty", "prefix", "huge-claim"])
    if how == "truncate":
        data = data[:rng.randint(0, len(data))]
    elif how == "flip":
        data = bytearray(data)
        for _ in range(rng.randint(1, 20)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        data = bytes(data)
    elif how == "bomb":
        data = _png_claiming(rng.choice([12000, 20000, 65535]), rng.choice([10000, 12000, 65535]))
    elif how == "huge-claim":
        data = _png_claiming(rng.choice([1, 2**31 - 1, 0]), rng.choice([1, 2**31 - 1, 0]))
    elif how == "random":
        data = bytes(rng.randrange(256) for _ in range(rng.randint(1, 400)))
    elif how == "empty":
        data = b""
    elif how == "prefix":
        data = b"\x89PNG\r\n\x1a\n" + data
    return f"{how}-{name}", data


def run_images(rng: random.Random, count: int, folder: Path, check) -> None:
    from convkit.data import load_dataset
    from convkit.data.folder import decode_image

    root = folder / "images"
    for i in range(count):
        name, data = make_image(rng)
        path = root / rng.choice(["cat", "dog"]) / f"{i:04d}-{name}"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        check(path, lambda: decode_image(path, channels=rng.choice([None, 1, 3, 4])))
    # the whole folder of them, as `convkit train --data` reads it (a mix of good, damaged and hostile files)
    check(root, lambda: load_dataset(root, image_size=(16, 16)))
    check(root, lambda: load_dataset(root))


# --- CSVs ----------------------------------------------------------------------------------------------------

_CSV_PATHS = ["img/good0.png", "img/good1.png", "img/missing.png", "img", "/dev/null", "img/../img/good0.png",
              "", " ", "img/bad.png", "img/good0.png\x00", "../../etc/passwd", "img/good2.png"]
_CSV_LABELS = ["cat", "dog", "0", "1", "-1", "999999999", "99999999999999999999", "1e9", "", "nan", "label",
               "\u00e9t\u00e9", "x" * 5000, "2.5", "0x10", "cat,dog", "\"", " dog "]
_CSV_HEADERS = ["path,label", "label,path", "path,label,split,notes", "file,class", "image", "", "a,b,c"]


def make_csv(rng: random.Random) -> str:
    lines = [rng.choice(_CSV_HEADERS)] if rng.random() < 0.6 else []
    for _ in range(rng.randint(0, 12)):
        row = [rng.choice(_CSV_PATHS), rng.choice(_CSV_LABELS)]
        if rng.random() < 0.2:
            row.reverse()
        row += [rng.choice(["train", "test", "", "x"]) for _ in range(rng.choice([0, 0, 1, 2]))]
        if rng.random() < 0.1:
            row = row[:1]
        lines.append(",".join(row))
    text = "\n".join(lines)
    if rng.random() < 0.1:
        text = text.replace(",", ";")
    if rng.random() < 0.05:
        text = "\ufeff" + text
    return text


def run_csvs(rng: random.Random, count: int, folder: Path, check) -> None:
    from convkit.data import load_dataset

    images = folder / "img"
    images.mkdir(parents=True, exist_ok=True)
    for i in range(3):
        Image.new("RGB", (12, 10), (i * 80, 0, 0)).save(images / f"good{i}.png")
    (images / "bad.png").write_bytes(b"not a png")
    for i in range(count):
        path = folder / f"labels{i:04d}.csv"
        raw = make_csv(rng).encode("utf-8")
        if rng.random() < 0.05:
            raw = bytes(rng.randrange(256) for _ in range(rng.randint(1, 200)))  # not text at all
        path.write_bytes(raw)
        check(path, lambda: load_dataset(path, image_size=(10, 12)))


# --- model files ---------------------------------------------------------------------------------------------

_LAYER_TOKENS = ["conv3-64", "conv3-0", "conv3--4", "conv0-8", "conv3-100000000", "conv99999-1", "maxpool",
                 "maxpool3/2", "maxpool999/1", "avgpool", "gap", "FC-4096", "FC-0", "FC--1", "dropout", "bn",
                 "relu", "LRN", "soft-max", "residual-128/2", "bottleneck-64", "conv3-64/0", "conv3-64/-2",
                 "nosuch", "conv", "{conv: {filters: 8, kernel: 3}}", "{conv: {filters: -4}}",
                 "{residual: {filters: -4}}", "{conv: {filters: 8, kernel: 0}}", "{conv: {filters: [1, 2]}}",
                 "!!python/object/apply:os.system [ls]", "!!python/name:os.system", "{conv: {bogus: 1}}",
                 "{conv: {filters: 1e30}}", "{dropout: {p: 2}}", "'conv3-64'", "[conv3-64]", "null", "~",
                 "conv3-64 conv3-64", "conv3-\u0664"]
_INPUTS = ["[1, 28, 28]", "[3, 32, 32]", "[3, 100000, 100000]", "[0, 28, 28]", "[-1, 28, 28]", "[3, 32]",
           "28x28", "abc", "[3, 1e9, 1]", "{a: 1}", "[3, 2, 2]", "[1, 1, 1]"]
_BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n" for p, c in zip("abcdefgh", "bcdefghi"))


def make_model_file(rng: random.Random) -> str:
    how = rng.choice(["layers", "layers", "layers", "bomb", "deep", "flip", "tabs", "empty", "top"])
    if how == "bomb":
        return _BOMB + "input: [1, 28, 28]\nlayers: *i\n"
    if how == "deep":
        depth = rng.choice([50, 1000, 100000])
        return "input: [1, 28, 28]\nlayers: " + "[" * depth + "conv3-8" + "]" * depth + "\n"
    if how == "empty":
        return rng.choice(["", "\n", "---\n", "layers:\n", "input: [1, 28, 28]\n", "[]", "0", "!!binary AAAA"])
    if how == "top":
        return rng.choice(["- conv3-8\n", "layers: conv3-8\n", "input: [1, 8, 8]\nlayers: {conv: 8}\n",
                           "input: [1, 8, 8]\nlayers: [conv3-8]\nextra: 1\n", "input: !!python/tuple [1, 8, 8]\n"])
    layers = [rng.choice(_LAYER_TOKENS) for _ in range(rng.randint(0, 8))]
    text = f"input: {rng.choice(_INPUTS)}\nlayers:\n" + "".join(f"  - {t}\n" for t in layers)
    if how == "flip":
        chars = list(text)
        for _ in range(rng.randint(1, 6)):
            chars[rng.randrange(len(chars))] = rng.choice(["-", ":", "[", "{", "&", "*", "!", "\t", "'", "9", " "])
        text = "".join(chars)
    elif how == "tabs":
        text = text.replace("  ", "\t")
    return text


def run_model_files(rng: random.Random, count: int, folder: Path, check) -> None:
    from convkit.inspect import summary
    from convkit.models import resolve_model

    for i in range(count):
        path = folder / f"model{i:04d}.yaml"
        path.write_text(make_model_file(rng), encoding="utf-8")
        check(path, lambda: summary(resolve_model(path, meta=True)))
        check(path, lambda: resolve_model(path, num_classes=rng.choice([None, 3])))


# --- checkpoints ---------------------------------------------------------------------------------------------

def _meta_variants(rng: random.Random, meta: dict) -> dict:
    meta = json.loads(json.dumps(meta))
    key = rng.choice(["classes", "mean", "std", "input_shape", "model", "task", "model.kwargs", "model.name",
                      "model.num_classes", "model.kind"])
    value = rng.choice([None, 0, -1, 10**12, "x", [], [0.0], [0.0, 0.0, 0.0], ["a"], ["a"] * 100000,
                        {"a": 1}, [float("nan")], [1, 2, 3, 4], "nosuch", {"bogus": 1}, True, [[[]]]])
    if key.startswith("model."):
        meta["model"][key[6:]] = value
    else:
        meta[key] = value
    return meta


def run_checkpoints(rng: random.Random, count: int, folder: Path, check) -> None:
    from convkit.models import resolve_model
    from convkit.models.reference import load_checkpoint
    from convkit.models.weights import save_tensors

    model = resolve_model("fastcnn", num_classes=3, in_channels=1)
    state = model.state_dict()
    meta = {"task": "classification", "classes": ["a", "b", "c"], "mean": [0.5], "std": [0.25],
            "input_shape": [1, 16, 16], "model": {"kind": "zoo", "name": "fastcnn", "num_classes": 3,
                                                   "in_channels": 1, "kwargs": {}}}
    good = folder / "good.safetensors"
    save_tensors(good, state, meta)
    valid = good.read_bytes()
    header_len = struct.unpack("<Q", valid[:8])[0]

    def predict(path):
        checkpoint = load_checkpoint(path)
        with torch.no_grad():
            checkpoint.model(checkpoint.normalize(torch.zeros(1, *checkpoint.input_shape, dtype=torch.uint8)))

    for i in range(count):
        path = folder / f"ckpt{i:04d}.safetensors"
        how = rng.choice(["truncate", "flip-header", "flip-data", "length", "offsets", "meta", "meta", "json"])
        data = bytearray(valid)
        if how == "truncate":
            data = data[:rng.randint(0, len(data) - 1)]
        elif how == "flip-header":
            for _ in range(rng.randint(1, 8)):
                data[rng.randrange(8, 8 + header_len)] = rng.randrange(32, 127)
        elif how == "flip-data":
            for _ in range(rng.randint(1, 50)):
                data[rng.randrange(8 + header_len, len(data))] = rng.randrange(256)
        elif how == "length":
            data[:8] = struct.pack("<Q", rng.choice([0, 1, 2**63, 2**40, header_len + 1, header_len - 1, len(data)]))
        elif how == "offsets":
            header = json.loads(bytes(data[8:8 + header_len]))
            name = rng.choice([k for k in header if k != "__metadata__"])
            begin, end = header[name]["data_offsets"]
            header[name]["data_offsets"] = rng.choice([[begin, end + 4], [end, begin], [0, 2**40], [-1, end],
                                                        [begin, begin]])
            text = json.dumps(header).encode()
            data = bytearray(struct.pack("<Q", len(text)) + text + bytes(data[8 + header_len:]))
        elif how == "json":
            text = rng.choice([b"[]", b"{", b"null", b'{"__metadata__": 5}', b'{"__metadata__": {"convkit": "{"}}',
                               b'{"__metadata__": {"convkit": "[]"}}', b"\xff\xfe"])
            data = bytearray(struct.pack("<Q", len(text)) + text)
        else:
            save_tensors(path, state, _meta_variants(rng, meta))
            data = bytearray(path.read_bytes())
        path.write_bytes(bytes(data))
        check(path, lambda: predict(path))
        check(path, lambda: resolve_model(path, meta=True))


# --- training configs (`convkit train --config`, a run's config.yaml) ----------------------------------------

_CONFIG_VALUES = ["abc", "[1]", '"128"', "-5", "0", "1e400", ".nan", "-.inf", "null", "{a: 1}", "true", "1e-3",
                  "!!python/object/apply:os.system [ls]", "*nosuch", "[[[[[[1]]]]]]", "'x' ", "128", "sgd", "cuda",
                  "../x", "nosuch", "{horizontal_flip: 2}", "{crop_padding: -3}", "[0.9, 2]"]
_CONFIG_FIELDS = ["lr", "batch_size", "epochs", "optimizer", "betas", "augment", "limit", "device", "name",
                  "model", "model_kwargs", "weight_decay", "grad_clip", "threads", "precision", "compile",
                  "schedule", "nosuch_field", "ema", "seed", "task"]


def make_config(rng: random.Random) -> str:
    how = rng.choice(["fields", "fields", "fields", "bomb", "broken", "top"])
    if how == "bomb":
        return _BOMB + "model_kwargs: *i\n"
    if how == "broken":
        return rng.choice(["lr: [1\n", "lr: 0.1\n  epochs: 2\n", "\tlr: 1\n", "lr: 1\nlr: 2\n", ":\n", "{{{{\n"])
    if how == "top":
        return rng.choice(["", "- 1\n", "42\n", "null\n", "'text'\n"])
    return "".join(f"{rng.choice(_CONFIG_FIELDS)}: {rng.choice(_CONFIG_VALUES)}\n" for _ in range(rng.randint(1, 5)))


def run_configs(rng: random.Random, count: int, folder: Path, check) -> None:
    from convkit.train.config import TrainConfig

    for i in range(count):
        path = folder / f"config{i:04d}.yaml"
        path.write_text(make_config(rng), encoding="utf-8")
        check(path, lambda: TrainConfig.from_yaml(path).validate())


KINDS = {"configs": run_configs, "images": run_images, "csvs": run_csvs, "model-files": run_model_files, "checkpoints": run_checkpoints}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("kind", choices=sorted(KINDS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--dir", required=True)
    parser.add_argument("--seconds", type=int, default=20, help="the most one input may take")
    args = parser.parse_args(argv)
    folder = Path(args.dir)
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(args.seed)
    counts = {"ok": 0, "refused": 0}
    failures = []
    signal.signal(signal.SIGALRM, _alarm)
    torch.set_num_threads(1)

    def check(path: Path, call) -> None:
        signal.alarm(args.seconds)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                call()
            counts["ok"] += 1
        except ConvkitError as err:
            message = str(err)
            if "\n" in message.strip() or len(message) > MAX_MESSAGE:
                failures.append({"input": str(path), "error": f"message of {len(message)} chars, "
                                 f"{message.count(chr(10)) + 1} lines: {message[:300]!r}"})
            else:
                counts["refused"] += 1
        except (Exception, RecursionError, MemoryError, Hang) as err:  # noqa: BLE001 - every escape is a finding
            failures.append({"input": str(path), "error": f"{type(err).__name__}: {str(err)[:300]}"})
        finally:
            signal.alarm(0)

    KINDS[args.kind](rng, args.count, folder, check)
    print(json.dumps({"kind": args.kind, "count": counts["ok"] + counts["refused"] + len(failures), **counts,
                      "failures": failures}))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.exit(main())
