"""convkit.explain.animate and `convkit animate`: sizes against the formula and torch, the drawn numbers, frames."""

import argparse
import itertools
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from convkit.cli.common import USER_ERRORS
from convkit.cli.kernel_cmds import register
from convkit.explain.animate import (
    CURRENT_COLOR,
    DONE_COLOR,
    EMPTY_COLOR,
    FORMULA,
    INPUT,
    INPUT_COLOR,
    INSERTED,
    PADDING,
    PADDING_COLOR,
    TRANSPOSED_FORMULA,
    Animation,
    ConvGeometry,
    UnknownLayerError,
    animation_data,
    geometry_from_layer,
    save_animation,
)
from convkit.layers import Conv2d, ShapeError
from convkit.models import Sequential

GUIDE_INPUT = [[3, 3, 2, 1, 0], [0, 0, 1, 3, 1], [3, 1, 2, 2, 3], [2, 0, 0, 2, 2], [2, 0, 0, 0, 1]]
GUIDE_KERNEL = [[0, 1, 2], [2, 2, 0], [0, 1, 2]]


# -- sizes ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs, expected", [
    (dict(input_size=5, kernel_size=3), 3),                                   # (5 - 3)/1 + 1
    (dict(input_size=5, kernel_size=3, stride=2, padding=1), 3),              # floor((5 + 2 - 3)/2) + 1
    (dict(input_size=7, kernel_size=3, dilation=2), 3),                       # 7 - 2*(3-1) - 1 + 1
    (dict(input_size=3, kernel_size=3, stride=2, padding=1, transposed=True), 5),  # (3-1)*2 - 2 + 2 + 1
    (dict(input_size=224, kernel_size=7, stride=2, padding=3), 112),          # floor((224 + 6 - 7)/2) + 1
])
def test_the_lectures_output_sizes(kwargs, expected):
    assert ConvGeometry(**kwargs).output_size == (expected, expected)


def _torch_size(op, size: int, kernel: int, **kwargs) -> tuple[int, int]:
    """torch's own output shape (its meta kernels: shapes only), (0, 0) where it finds no output."""
    x, w = torch.empty(1, 1, size, size, device="meta"), torch.empty(1, 1, kernel, kernel, device="meta")
    try:
        return tuple(op(x, w, **kwargs).shape[-2:])
    except RuntimeError:  # "Output size is too small"
        return (0, 0)


def test_output_sizes_agree_with_torch_over_a_sweep():
    for i, k, s, p, d in itertools.product([1, 5, 8], [1, 2, 4], [1, 2, 3], [0, 1, 2], [1, 2]):
        expected = _torch_size(F.conv2d, i, k, stride=s, padding=p, dilation=d)
        if min(expected) < 1:
            with pytest.raises(ShapeError, match="larger than the padded input"):
                ConvGeometry(i, k, s, p, d)
        else:
            assert ConvGeometry(i, k, s, p, d).output_size == expected, (i, k, s, p, d)
        for op in range(max(s, d)):
            expected = _torch_size(F.conv_transpose2d, i, k, stride=s, padding=p, output_padding=op, dilation=d)
            if min(expected) < 1:
                with pytest.raises(ShapeError, match="leaves no output"):
                    ConvGeometry(i, k, s, p, d, transposed=True, output_padding=op)
            else:
                geometry = ConvGeometry(i, k, s, p, d, transposed=True, output_padding=op)
                assert geometry.output_size == expected, (i, k, s, p, d, op)


def test_rectangular_and_asymmetric_geometry():
    g = ConvGeometry((9, 6), (3, 2), (2, 1), ((1, 1), (0, 1)))
    assert g.output_size == (5, 6)
    conv = Conv2d(1, (3, 2), (2, 1), (0, 1, 1, 1), in_channels=1)  # convkit's (left, right, top, bottom)
    assert conv(torch.zeros(1, 1, 9, 6)).shape[-2:] == g.output_size


def test_formula_text_with_the_numbers_substituted():
    assert FORMULA == "⌊(i + 2p − d(k−1) − 1)/s⌋ + 1"
    assert TRANSPOSED_FORMULA == "(i−1)s − 2p + d(k−1) + output_padding + 1"
    assert ConvGeometry(5, 3, stride=2, padding=1).worked_formula() == ["height = width = ⌊(5 + 2·1 − 1·(3−1) − 1)/2⌋ + 1 = 3"]
    g = ConvGeometry(3, 3, stride=2, padding=1, transposed=True)
    assert g.formula() == TRANSPOSED_FORMULA and g.worked_formula() == ["height = width = (3−1)·2 − 2·1 + 1·(3−1) + 0 + 1 = 5"]
    assert ConvGeometry((7, 5), 3, dilation=2).worked_formula() == ["height = ⌊(7 + 2·0 − 2·(3−1) − 1)/1⌋ + 1 = 3",
                                                                     "width = ⌊(5 + 2·0 − 2·(3−1) − 1)/1⌋ + 1 = 1"]


def test_invalid_geometries_are_refused_with_the_formula():
    with pytest.raises(ShapeError, match=r"kernel 7 is larger than the padded input 5 .*out = "):
        ConvGeometry(5, 7)
    with pytest.raises(ValueError, match="output_padding must be smaller"):
        ConvGeometry(3, 3, stride=2, transposed=True, output_padding=2)
    with pytest.raises(ValueError, match="zero padding only"):
        ConvGeometry(3, 3, transposed=True, padding_mode="reflect")
    with pytest.raises(ValueError, match="stride must be at least 1"):
        ConvGeometry(5, 3, stride=0)


# -- what is drawn --------------------------------------------------------------------------------------------


def test_the_5x5_example_draws_torchs_outputs():
    data = animation_data(ConvGeometry(5, 3))
    assert data.input_values.tolist() == GUIDE_INPUT and data.kernel_values.tolist() == GUIDE_KERNEL
    expected = F.conv2d(torch.tensor(GUIDE_INPUT, dtype=torch.float64)[None, None],
                        torch.tensor(GUIDE_KERNEL, dtype=torch.float64)[None, None])[0, 0]
    assert torch.equal(data.output, expected)
    assert data.output.tolist() == [[12, 12, 17], [10, 17, 19], [9, 6, 14]]  # the guide's figure 2.1
    assert (data.grid_kinds == INPUT).all() and data.positions == [(r, c) for r in range(3) for c in range(3)]
    # each output is the sum over its taps of what the frame shows
    for r, c in data.positions:
        total = sum(data.grid_values[gr, gc] * data.applied_kernel[i, j] for gr, gc, i, j in data.taps(r, c))
        assert total == data.output[r, c]


def test_transposed_convolution_is_drawn_as_its_equivalent_direct_convolution():
    g = ConvGeometry(3, 3, stride=2, padding=1, transposed=True)
    data = animation_data(g)
    # dilated input 5 (zeros between pixels), padded by d(k-1) - p = 1: a 7x7 grid, input on odd cells
    assert data.grid_kinds.shape == (7, 7)
    inputs = np.argwhere(data.grid_kinds == INPUT).tolist()
    assert inputs == [[r, c] for r in (1, 3, 5) for c in (1, 3, 5)]
    assert (data.grid_kinds[0] == PADDING).all() and data.grid_kinds[1, 2] == INSERTED and data.grid_kinds[2, 2] == INSERTED
    assert torch.equal(data.grid_values[1::2, 1::2], data.input_values)
    assert torch.equal(data.applied_kernel, data.kernel_values.flip(0, 1))
    expected = F.conv_transpose2d(data.input_values[None, None], data.kernel_values[None, None], stride=2, padding=1)
    assert torch.equal(data.output, expected[0, 0]) and data.output.shape == (5, 5)


def test_drawn_grids_reproduce_torch_for_many_geometries():
    gen = torch.Generator().manual_seed(1)
    cases = [ConvGeometry(6, 3, 2, 1, 1, padding_mode=m) for m in ("reflect", "replicate", "symmetric", "circular")]
    cases += [ConvGeometry(i, k, s, p, d, transposed=True, output_padding=op)
              for i, k, s, p, d, op in [(4, 3, 2, 0, 1, 1), (3, 2, 3, 0, 1, 2), (4, 3, 1, 3, 2, 0), (2, 4, 2, 2, 1, 0)]]
    for g in cases:
        x = torch.randint(-3, 4, g.input_size, generator=gen).double()
        k = torch.randint(-2, 3, g.kernel_size, generator=gen).double()
        data = animation_data(g, x, k)
        if g.transposed:
            expected = F.conv_transpose2d(x[None, None], k[None, None], stride=g.stride,
                                          padding=(g.padding[0][0], g.padding[1][0]),
                                          output_padding=g.output_padding, dilation=g.dilation)[0, 0]
        else:  # numpy's padding, then torch's unpadded convolution
            mode = {"reflect": "reflect", "replicate": "edge", "symmetric": "symmetric", "circular": "wrap"}
            padded = torch.from_numpy(np.pad(x.numpy(), g.padding, mode[g.padding_mode]))
            assert torch.equal(data.grid_values, padded)
            expected = F.conv2d(padded[None, None], k[None, None], stride=g.stride)[0, 0]
        assert torch.equal(data.output, expected), g
        assert data.output.shape == g.output_size


def test_frames_highlight_the_current_output_cell_as_it_moves():
    anim = Animation(ConvGeometry(5, 3, padding=1))
    images = anim.frames()
    positions = anim.data.positions
    assert anim.numbers and len(positions) == 25 and len(images) == 26
    assert {im.size for im in images} == {anim.size}

    def corner(image, box):  # a cell's top-left inside the outline: away from the centred number
        return image.getpixel((box[0] + 3, box[1] + 3))

    for n, image in enumerate(images):
        for k, (r, c) in enumerate(positions):
            expected = CURRENT_COLOR if k == n else DONE_COLOR if k < n else EMPTY_COLOR
            assert corner(image, anim.output_cell_box(r, c)) == expected, (n, r, c)
    final = images[-1]
    assert corner(final, anim.input_cell_box(0, 0)) == PADDING_COLOR  # padding shaded
    assert corner(final, anim.input_cell_box(1, 1)) == INPUT_COLOR
    # the kernel's footprint moves with the output: frame 0 covers grid (0..2, 0..2), frame 1 (0..2, 1..3)
    assert corner(images[0], anim.input_cell_box(2, 0)) not in (PADDING_COLOR, INPUT_COLOR)
    assert corner(images[1], anim.input_cell_box(2, 0)) == PADDING_COLOR
    assert corner(images[1], anim.input_cell_box(2, 3)) not in (PADDING_COLOR, INPUT_COLOR)


def test_dilated_taps_are_highlighted_and_the_cells_between_are_not():
    anim = Animation(ConvGeometry(7, 3, dilation=2))
    first = anim.frames()[0]
    pixel = lambda r, c: first.getpixel(tuple(v + 3 for v in anim.input_cell_box(r, c)[:2]))  # noqa: E731
    assert all(pixel(r, c) != INPUT_COLOR for r in (0, 2, 4) for c in (0, 2, 4))
    assert all(pixel(r, c) == INPUT_COLOR for r, c in [(0, 1), (1, 1), (3, 4), (0, 5)])


def test_large_inputs_are_cropped_and_drawn_without_numbers(tmp_path):
    anim = Animation(ConvGeometry(224, 7, stride=2, padding=3), max_outputs=3)
    data = anim.data
    assert not anim.numbers and data.cropped and data.shown_output == (3, 3)
    assert data.shown_grid == (2 * 2 + 7, 2 * 2 + 7)  # the cells those 3x3 outputs read
    assert data.output.shape == (112, 112) and any("top-left 3x3 of the 112x112" in line for line in anim.header)
    assert len(anim.frames()) == 10


def test_gif_read_back_has_every_frame(tmp_path):
    path = save_animation(ConvGeometry(5, 3, stride=2, padding=1), tmp_path / "a" / "conv.gif", fps=4)
    frames = Animation(ConvGeometry(5, 3, stride=2, padding=1)).frames()
    with Image.open(path) as gif:
        assert gif.format == "GIF" and gif.n_frames == 10 and gif.size == frames[0].size
        assert gif.info["duration"] == 250 and gif.info.get("loop") == 0
        gif.seek(4)
        drawn = np.asarray(gif.convert("RGB")).astype(int)
    assert np.abs(drawn - np.asarray(frames[4]).astype(int)).mean() < 2  # one shared palette, close colours


# -- a layer of a model ---------------------------------------------------------------------------------------


def test_geometry_of_zoo_layers():
    g = geometry_from_layer("resnet18", "conv1")
    assert (g.input_size, g.kernel_size, g.stride, g.padding, g.output_size) == (
        (224, 224), (7, 7), (2, 2), ((3, 3), (3, 3)), (112, 112))
    assert g.layer == "resnet18 conv1"
    c1, c3 = geometry_from_layer("lenet5", "features.c1"), geometry_from_layer("lenet5", "features.c3")
    assert (c1.input_size, c1.kernel_size, c1.output_size) == ((32, 32), (5, 5), (28, 28))
    assert (c3.input_size, c3.output_size) == ((14, 14), (10, 10))  # after the 2x2 subsampling
    small = geometry_from_layer("resnet18", "layer2.0.conv1", (64, 64))
    assert (small.input_size, small.stride, small.output_size) == ((16, 16), (2, 2), (8, 8))


def test_layer_errors_name_close_layers():
    with pytest.raises(UnknownLayerError, match=r"has no layer 'features\.c2'; did you mean .*features\.c"):
        geometry_from_layer("lenet5", "features.c2")
    with pytest.raises(ValueError, match=r"'features\.s2' \(AvgPool2d\) is not a 2-D convolution"):
        geometry_from_layer("lenet5", "features.s2")


def test_geometry_of_same_padding_and_transposed_layers_matches_running_them():
    model = Sequential([Conv2d(4, 3, stride=2, padding="same"),
                        nn.ConvTranspose2d(4, 2, 3, stride=2, padding=1, output_padding=1)], input_shape=(1, 9, 10))
    same = geometry_from_layer(model, "conv1")  # convkit.Sequential names its layers
    assert same.padding == ((1, 1), (0, 1))  # TensorFlow's "same": the odd pixel after
    up = geometry_from_layer(model, "deconv1")
    assert up.transposed and up.output_padding == (1, 1)
    with torch.no_grad():
        middle = model.get_submodule("conv1")(torch.zeros(1, 1, 9, 10))
        assert middle.shape[-2:] == same.output_size == up.input_size
        assert model.get_submodule("deconv1")(middle).shape[-2:] == up.output_size


# -- the command ----------------------------------------------------------------------------------------------


def run(capsys, *argv):
    parser = argparse.ArgumentParser(prog="convkit")
    register(parser.add_subparsers(dest="verb"), argparse.RawDescriptionHelpFormatter)
    args = parser.parse_args(list(argv))
    try:
        code = args.run(args)
    except USER_ERRORS as err:  # what `convkit` prints as one error line
        code = f"error: {err}"
    out, err = capsys.readouterr()
    return code, out, err


def test_animate_command_writes_the_gif_and_prints_the_geometry(tmp_path, capsys):
    out = tmp_path / "t.gif"
    code, text, err = run(capsys, "animate", "--input", "3", "--kernel", "3", "--stride", "2", "--padding", "1",
                          "--transposed", "--out", str(out), "--json")
    assert code == 0 and f"wrote {out}" in err
    result = json.loads(text)
    assert result["output_size"] == [5, 5] and result["transposed"] and result["frames"] == 26
    with Image.open(out) as gif:
        assert gif.n_frames == 26
    code, text, _ = run(capsys, "animate", "--out", str(tmp_path / "d.gif"))
    assert code == 0 and "output 3x3" in text and "= 3" in text and "10 frames" in text


def test_animate_command_with_a_layer_and_its_errors(tmp_path, capsys):
    out = str(tmp_path / "l.gif")
    code, text, _ = run(capsys, "animate", "--model", "lenet5", "--layer", "features.c3", "--out", out,
                        "--max-outputs", "2", "--json")
    result = json.loads(text)
    assert code == 0 and result["input_size"] == [14, 14] and result["output_size"] == [10, 10]
    assert result["frames"] == 5 and result["layer"] == "lenet5 features.c3"
    code, _, _ = run(capsys, "animate", "--model", "lenet5", "--layer", "features.c3", "--kernel", "3", "--out", out)
    assert "drop --kernel" in code
    code, _, _ = run(capsys, "animate", "--layer", "conv1", "--out", out)
    assert "--layer needs --model" in code
    code, _, _ = run(capsys, "animate", "--input", "4", "--kernel", "5", "--out", out)
    assert "larger than the padded input" in code
    code, _, _ = run(capsys, "animate", "--model", "resnet19", "--layer", "conv1", "--out", out)
    assert "resnet18" in code
