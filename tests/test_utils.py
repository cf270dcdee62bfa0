"""convkit.utils, the bottom layer: atomic writes, byte counts as text, fitting images to a model's input."""

from __future__ import annotations

import ast
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import convkit.utils
from convkit.utils import atomic_write, atomic_write_text, fit_images, format_bytes


def test_utils_imports_nothing_from_convkit():
    tree = ast.parse(Path(convkit.utils.__file__).read_text())
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    imported.discard("convkit.errors")  # the other bottom module: it imports nothing
    assert {name.split(".")[0] for name in imported} <= {"__future__", "errno", "os", "re", "reprlib", "tempfile",
                                                         "collections", "pathlib", "torch", "numpy", "PIL", "yaml"}


def test_old_homes_still_give_the_same_helpers():
    from convkit.inspect import format_bytes as inspect_format_bytes
    from convkit.inspect.memory import format_bytes as memory_format_bytes
    from convkit.train.evaluate import fit_images as evaluate_fit_images
    from convkit.train.runfolder import atomic_write as runfolder_atomic_write
    from convkit.train.runfolder import atomic_write_text as runfolder_atomic_write_text

    assert inspect_format_bytes is memory_format_bytes is format_bytes
    assert evaluate_fit_images is fit_images
    assert runfolder_atomic_write is atomic_write and runfolder_atomic_write_text is atomic_write_text


def test_atomic_write_replaces_the_whole_file_and_creates_folders(tmp_path):
    path = tmp_path / "a" / "b" / "metrics.csv"
    assert atomic_write_text(path, "epoch\n1\n") == path
    assert atomic_write(str(path), lambda tmp: Path(tmp).write_bytes(b"epoch\n2\n")) == path
    assert path.read_bytes() == b"epoch\n2\n"
    assert os.listdir(path.parent) == ["metrics.csv"]  # no temporary file left behind


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "best.safetensors"
    path.write_text("old")

    def half_then_fail(tmp: str) -> None:
        Path(tmp).write_text("half of the new")
        raise KeyboardInterrupt  # even Ctrl-C: BaseException

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, half_then_fail)
    assert path.read_text() == "old"
    assert os.listdir(tmp_path) == ["best.safetensors"]


def test_format_bytes_by_hand():
    assert format_bytes(0) == "0 B"
    assert format_bytes(1023) == "1023 B"
    assert format_bytes(1024) == "1.0 KiB"
    assert format_bytes(1536) == "1.5 KiB"
    assert format_bytes(138_357_544 * 4) == "527.8 MiB"  # VGG-16's float32 weights: 553,430,176 / 2**20
    assert format_bytes(5 * 2**40) == "5.0 TiB"
    assert format_bytes(3 * 2**50) == "3072.0 TiB"  # no unit above TiB


def test_fit_images_converts_channels_by_luma_and_repeats_gray():
    rgb = torch.tensor([[10, 200, 30], [255, 255, 255]], dtype=torch.uint8).view(2, 3, 1, 1).expand(2, 3, 2, 2)
    gray = fit_images(rgb, (1, 2, 2))
    assert gray.dtype == torch.uint8 and gray.shape == (2, 1, 2, 2)
    assert gray[0].unique().tolist() == [round(0.299 * 10 + 0.587 * 200 + 0.114 * 30)]  # 123.8 -> 124
    assert gray[1].unique().tolist() == [255]
    rgba = torch.cat([rgb, torch.zeros(2, 1, 2, 2, dtype=torch.uint8)], 1)
    assert torch.equal(fit_images(rgba, (1, 2, 2)), gray)  # alpha is dropped, not averaged in
    assert torch.equal(fit_images(rgba, (3, 2, 2)), rgb)  # extra channels are dropped
    three = fit_images(gray, (3, 2, 2))
    assert three.shape == (2, 3, 2, 2) and all(torch.equal(three[:, c:c + 1], gray) for c in range(3))
    assert fit_images(rgb, (3, 2, 2)) is rgb  # already fits: unchanged


def test_fit_images_resizes_like_pil_bilinear():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (12, 16), dtype=np.uint8)
    ours = fit_images(torch.from_numpy(image)[None, None], (1, 6, 8))[0, 0].numpy().astype(int)
    pil = np.asarray(Image.fromarray(image).resize((8, 6), Image.BILINEAR)).astype(int)
    assert np.abs(ours - pil).max() <= 1  # both antialiased bilinear; rounding may differ by one level
    up = fit_images(torch.full((1, 1, 2, 2), 7, dtype=torch.uint8), (1, 5, 5))
    assert up.shape == (1, 1, 5, 5) and up.unique().tolist() == [7]
