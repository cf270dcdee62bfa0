"""convkit.explain.kernels and `convkit kernel`: filtering checked against scipy/numpy, the picture's panels."""

import argparse
import json

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.signal import correlate2d

from convkit.cli.common import USER_ERRORS
from convkit.cli.kernel_cmds import register
from convkit.explain.kernels import (
    KERNELS,
    KernelError,
    apply_kernel,
    comparison_layout,
    display_output,
    load_kernel,
    save_kernel_comparison,
)

RNG = np.random.default_rng(0)
IMAGE = RNG.normal(size=(3, 9, 11))  # odd, non-square: a transposed axis would show
ASYMMETRIC = RNG.normal(size=(3, 3))  # flipping it would change the answer
SCIPY_BOUNDARY = {"zeros": "fill", "symmetric": "symm", "circular": "wrap"}
NUMPY_PAD = {"replicate": "edge", "reflect": "reflect", "symmetric": "symmetric", "circular": "wrap",
             "zeros": "constant"}


def reference(image: np.ndarray, kernel: np.ndarray, mode: str) -> np.ndarray:
    """numpy.pad (odd pixel after for even kernels), then scipy's valid cross-correlation, per channel."""
    kh, kw = kernel.shape
    pads = (((kh - 1) // 2, kh // 2), ((kw - 1) // 2, kw // 2))
    return np.stack([correlate2d(np.pad(c, pads, NUMPY_PAD[mode]), kernel, mode="valid") for c in image])


@pytest.mark.parametrize("mode", ["zeros", "symmetric", "circular"])
@pytest.mark.parametrize("kernel", [ASYMMETRIC, RNG.normal(size=(5, 5)), RNG.normal(size=(3, 5)), KERNELS["sobel-x"]])
def test_apply_kernel_is_scipys_same_size_correlation(mode, kernel):
    kernel = np.asarray(kernel)
    expected = np.stack([correlate2d(c, kernel, mode="same", boundary=SCIPY_BOUNDARY[mode]) for c in IMAGE])
    out = apply_kernel(torch.from_numpy(IMAGE), torch.from_numpy(kernel), padding=mode)
    assert out.shape == IMAGE.shape and out.dtype == torch.float64
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("mode", ["replicate", "reflect"])
@pytest.mark.parametrize("kernel", [ASYMMETRIC, RNG.normal(size=(5, 3))])
def test_apply_kernel_replicate_and_reflect_match_numpy_pad(mode, kernel):
    out = apply_kernel(torch.from_numpy(IMAGE), torch.from_numpy(kernel), padding=mode)
    np.testing.assert_allclose(out.numpy(), reference(IMAGE, kernel, mode), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("shape", [(2, 2), (4, 3), (1, 4)])
def test_even_kernels_keep_the_size_with_the_odd_pixel_after(shape):
    kernel = RNG.normal(size=shape)
    out = apply_kernel(torch.from_numpy(IMAGE), torch.from_numpy(kernel), padding="reflect")
    assert out.shape == IMAGE.shape
    np.testing.assert_allclose(out.numpy(), reference(IMAGE, kernel, "reflect"), rtol=1e-10, atol=1e-10)


def test_uint8_images_are_filtered_in_their_0_255_units():
    image = torch.from_numpy(RNG.integers(0, 256, size=(3, 6, 7)).astype(np.uint8))
    out = apply_kernel(image, "sharpen", "replicate")
    assert out.dtype == torch.float32
    np.testing.assert_allclose(out.numpy(), reference(image.numpy().astype(float), KERNELS["sharpen"].numpy(),
                                                      "replicate"), atol=1e-3)
    assert apply_kernel(image[0], "identity").shape == (6, 7)  # (H, W) in, (H, W) out


@pytest.mark.parametrize("mode", ["replicate", "reflect", "symmetric", "circular"])
def test_blur_of_a_constant_image_is_constant(mode):
    out = apply_kernel(torch.full((2, 8, 8), 7.0, dtype=torch.float64), "blur", mode)
    np.testing.assert_allclose(out.numpy(), 7.0, rtol=1e-12)
    zeros = apply_kernel(torch.full((1, 8, 8), 9.0, dtype=torch.float64), "blur", "zeros")[0]
    assert torch.allclose(zeros[1:-1, 1:-1], torch.tensor(9.0, dtype=torch.float64))
    assert zeros[0, 0] == pytest.approx(4.0) and zeros[0, 3] == pytest.approx(6.0)  # 4 and 6 of 9 taps inside


@pytest.mark.parametrize("mode", ["zeros", "replicate", "reflect"])
def test_laplacian_of_a_linear_ramp_is_zero_inside(mode):
    y, x = np.mgrid[0:10, 0:12]
    ramp = torch.from_numpy((3.0 * x - 2.0 * y + 5.0)[None])
    out = apply_kernel(ramp, "edge", mode)[0]
    np.testing.assert_allclose(out[1:-1, 1:-1].numpy(), 0.0, atol=1e-9)
    assert out.abs().max() > 1 or mode != "zeros"  # zero padding breaks the ramp at the border


def test_sobel_x_peaks_on_a_vertical_edge_and_sobel_y_sees_nothing():
    image = torch.zeros(1, 10, 12, dtype=torch.float64)
    image[:, :, 6:] = 1.0  # dark left, bright right: the edge between columns 5 and 6
    gx = apply_kernel(image, "sobel-x", "replicate")[0]
    assert set(gx.argmax(dim=1).tolist()) <= {5, 6}
    assert torch.allclose(gx[:, 5], torch.tensor(4.0, dtype=torch.float64)) and torch.all(gx[:, :4] == 0)
    assert torch.all(apply_kernel(image, "sobel-y", "replicate") == 0)
    assert apply_kernel(1 - image, "sobel-x", "replicate")[0, :, 5].max() == -4  # the other way: negative


def test_the_lectures_kernels_and_the_registry():
    assert KERNELS["edge"].tolist() == [[0, 1, 0], [1, -4, 1], [0, 1, 0]]
    assert KERNELS["sharpen"].tolist() == [[0, -1, 0], [-1, 5, -1], [0, -1, 0]]
    assert torch.allclose(KERNELS["blur"], torch.full((3, 3), 1 / 9, dtype=torch.float64))
    for name in ["blur", "blur5", "gaussian", "sharpen", "emboss", "identity"]:
        assert float(KERNELS[name].sum()) == pytest.approx(1.0), name
    for name in ["edge", "sobel-x", "sobel-y"]:
        assert float(KERNELS[name].sum()) == pytest.approx(0.0), name
    assert torch.equal(KERNELS["sobel-y"], KERNELS["sobel-x"].T)
    kernel = load_kernel("Laplacian")
    kernel[0, 0] = 99  # a copy: the registry is unchanged
    assert KERNELS["edge"][0, 0] == 0 and torch.equal(load_kernel("box"), KERNELS["blur"])


def test_kernel_files_text_csv_fractions_and_npy(tmp_path):
    (tmp_path / "k.txt").write_text("# a 2x4 kernel\n1 2 3 4\n\n5\t6 7 8  # trailing comment\n")
    assert load_kernel(tmp_path / "k.txt").tolist() == [[1, 2, 3, 4], [5, 6, 7, 8]]
    (tmp_path / "k.csv").write_text("1/9,1/9,1/9\n1/9, 1/9, 1/9\n1/9;1/9;1/9\n")
    assert torch.allclose(load_kernel(str(tmp_path / "k.csv")), KERNELS["blur"])
    np.save(tmp_path / "k.npy", np.arange(6.0).reshape(3, 2))
    assert load_kernel(tmp_path / "k.npy").shape == (3, 2)


@pytest.mark.parametrize("content, words", [
    ("1 2 3\n4 5\n", ["line 2 has 2 numbers", "line 1 has 3", "rectangle"]),
    ("1 2\n3 x\n", ["line 2", "'x' is not a number"]),
    ("# nothing\n\n", ["no numbers"]),
    ("1 nan\n", ["NaN or infinite"]),
])
def test_bad_kernel_files_name_the_file_and_what_is_expected(tmp_path, content, words):
    path = tmp_path / "bad.txt"
    path.write_text(content)
    with pytest.raises(KernelError) as err:
        load_kernel(path)
    assert str(path) in str(err.value)
    for word in words:
        assert word in str(err.value)
    np.save(tmp_path / "cube.npy", np.zeros((2, 2, 2)))
    with pytest.raises(KernelError, match="cube.npy: expected a 2-D numeric array"):
        load_kernel(tmp_path / "cube.npy")


def test_unknown_kernel_names_suggest_close_ones():
    with pytest.raises(KernelError, match="unknown kernel 'sobelx2'; did you mean 'sobel-x'") as err:
        load_kernel("sobelx2")
    assert "sharpen" in str(err.value) and "sobel-x' or 'sobel-x" not in str(err.value)


def test_display_modes_map_values_as_their_titles_say():
    values = torch.tensor([[[-2.0, 0.0, 1.0, 2.0]]])
    rgb, how = display_output(values, "diverging")
    assert rgb[0, 1].tolist() == [255, 255, 255] and rgb[0, 0][2] > rgb[0, 0][0] and rgb[0, 3][0] > rgb[0, 3][2]
    assert "\u22122" in how and "+2" in how
    rgb, _ = display_output(values, "abs")
    assert rgb[0, :, 0].tolist() == [255, 0, 128, 255]
    rgb, how = display_output(values * 100, "clip", (0, 255))
    assert rgb[0, :, 0].tolist() == [0, 0, 100, 200] and "0..255" in how
    rgb, _ = display_output(values, "normalize")
    assert rgb[0, :, 0].tolist() == [0, 128, 191, 255]
    with pytest.raises(ValueError, match="display mode"):
        display_output(values, "rainbow")


def _panel(picture: Image.Image, box) -> np.ndarray:
    return np.asarray(picture.crop(box)).astype(int)


def test_comparison_picture_has_before_kernel_and_after_panels(tmp_path):
    image = torch.zeros(1, 32, 40, dtype=torch.uint8)
    image[:, :, 20:] = 200  # a vertical edge between columns 19 and 20
    path = save_kernel_comparison(image, "sobel-x", tmp_path / "sub" / "edge.png", padding="replicate")
    picture = Image.open(path).convert("RGB")
    boxes = comparison_layout((32, 40), (3, 3))
    assert picture.size == boxes["canvas"][2:]
    scale = 6  # 256 // 40: small images grow by a whole factor
    assert boxes["before"][2] - boxes["before"][0] == 40 * scale and boxes["after"][3] - boxes["after"][1] == 32 * scale
    before = _panel(picture, boxes["before"])
    assert (before[:, : 19 * scale] == 0).all() and (before[:, 20 * scale:] == 200).all()
    after = _panel(picture, boxes["after"])
    white = (after == 255).all(axis=-1)
    edge = slice(19 * scale, 21 * scale)  # the two columns beside the edge: positive, so red
    assert white[:, : 18 * scale].all() and white[:, 22 * scale:].all()
    assert (after[:, edge, 0] > 150).all() and (after[:, edge, 2] < 100).all()
    kernel = _panel(picture, boxes["kernel"])
    cell = kernel.shape[1] // 3
    middle = kernel[cell // 4, cell + cell // 4]  # a corner of each cell: away from the number
    left, right = kernel[cell + 2, 2], kernel[cell + 2, 2 * cell + 2]
    assert middle.tolist() == [255, 255, 255] and left[2] > left[0] and right[0] > right[2]


def test_comparison_of_a_blurred_constant_image_and_an_rgb_file(tmp_path):
    gray = torch.full((1, 20, 20), 90, dtype=torch.uint8)
    path = save_kernel_comparison(gray, "blur", tmp_path / "flat.png", padding="replicate")
    picture = Image.open(path).convert("RGB")
    assert (_panel(picture, comparison_layout((20, 20), (3, 3))["after"]) == 90).all()
    rgb = RNG.integers(0, 256, size=(300, 600, 3)).astype(np.uint8)  # large: shrinks to 512 wide
    Image.fromarray(rgb).save(tmp_path / "photo.png")
    path = save_kernel_comparison(tmp_path / "photo.png", "blur5", tmp_path / "photo-blur5.png")
    boxes = comparison_layout((300, 600), (5, 5))
    assert Image.open(path).size == boxes["canvas"][2:] and boxes["after"][2] - boxes["after"][0] == 512


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


def test_kernel_command_writes_the_default_name_and_prints_stats(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Image.fromarray(np.tile(np.arange(0, 250, 10, dtype=np.uint8), (12, 1)), "L").save("ramp.png")
    code, out, _ = run(capsys, "kernel", "edge", "ramp.png", "--padding", "replicate", "--json")
    assert code == 0
    stats = json.loads(out)
    assert stats["out"] == "ramp-edge.png" and (tmp_path / "ramp-edge.png").is_file()
    assert stats["input_shape"] == [1, 12, 25] and stats["output"]["shape"] == [1, 12, 25]
    assert stats["kernel_values"] == KERNELS["edge"].tolist() and stats["display"] == "diverging"
    assert stats["output"]["min"] == -10 and stats["output"]["max"] == 10  # a ramp: 0 inside, +-step at the ends
    code, out, _ = run(capsys, "kernel", "sobel-y", "ramp.png", "--out", "sub/y.png")
    assert code == 0 and "wrote sub/y.png" in out and (tmp_path / "sub" / "y.png").is_file()


def test_kernel_command_reports_bad_kernels_and_images(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Image.new("RGB", (8, 8)).save("x.png")
    code, _, _ = run(capsys, "kernel", "sharpn", "x.png")
    assert "unknown kernel 'sharpn'; did you mean 'sharpen'" in code
    (tmp_path / "k.txt").write_text("1 2\n3\n")
    code, _, _ = run(capsys, "kernel", "k.txt", "x.png")
    assert code.startswith("error: k.txt: line 2")
    code, _, _ = run(capsys, "kernel", "blur", "missing.png")
    assert "missing.png" in code
    code, _, _ = run(capsys, "kernel", "blur", "x.png", "--padding", "mirrorr")
    assert "padding_mode must be one of" in code


@pytest.mark.parametrize("verb", ["kernel", "animate"])
def test_help_has_examples(verb):
    parser = argparse.ArgumentParser(prog="convkit")
    verbs = parser.add_subparsers(dest="verb")
    register(verbs, argparse.RawDescriptionHelpFormatter)
    text = verbs.choices[verb].format_help()
    assert "examples:" in text and f"convkit {verb} " in text.split("examples:")[1]
