"""plot_summary draws the layer stack as boxes and writes a real image."""

import numpy as np
import pytest
from PIL import Image

from convkit.inspect import plot_summary, summary


@pytest.mark.parametrize("name", ["lenet5", "vgg16"])
def test_plot_writes_a_png_with_boxes(tmp_path, name):
    result = summary(name)
    path = plot_summary(result, tmp_path / f"{name}.png", dpi=80)
    assert path.exists() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = np.asarray(Image.open(path).convert("RGB"))
    height, width, _ = image.shape
    assert 150 < height < 2000 and height < width < 4000  # a row of boxes: wider than tall
    colours = {tuple(c) for c in image.reshape(-1, 3)[::7]}
    assert len(colours) > 20  # faces, edges, labels, antialiasing
    # the front faces' fill colours: conv blue, pool orange, dense green
    for rgb in ((0x4C, 0x78, 0xA8), (0xF5, 0x85, 0x18), (0x54, 0xA2, 0x4B)):
        assert (np.abs(image.astype(int) - rgb).sum(axis=2) == 0).sum() > 50, rgb
    assert (image == 255).all(axis=2).mean() > 0.3  # mostly white background


def test_deep_model_is_thinned(tmp_path):
    small = plot_summary(summary("resnet50"), tmp_path / "a.png", max_layers=12, dpi=60)
    wide = plot_summary(summary("resnet50"), tmp_path / "b.png", max_layers=40, dpi=60)
    assert Image.open(small).width < Image.open(wide).width
    with pytest.raises(ValueError, match="max_layers"):
        plot_summary(summary("lenet5"), tmp_path / "c.png", max_layers=1)
