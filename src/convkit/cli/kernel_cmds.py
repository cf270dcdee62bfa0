"""The ``convkit kernel`` and ``convkit animate`` verbs (registered by ``cli.main``).

``kernel`` filters a picture with a classic kernel (or the user's own) and saves before | kernel | after;
``animate`` draws a convolution's kernel sliding over its padded input as a GIF. The work is done by
:mod:`convkit.explain.kernels` and :mod:`convkit.explain.animate`, imported when a verb runs so that
``convkit --help`` stays quick.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from convkit.cli.common import (
    FORMATTER,
    CLIError,
    add_json,
    named_segmenter,
    positive_float,
    positive_int,
    print_json,
)

EXAMPLES = {
    "kernel": """examples:
  convkit kernel blur cat.jpg                         writes cat-blur.png: before | kernel | after
  convkit kernel edge cat.jpg --padding replicate     the Laplacian [[0,1,0],[1,-4,1],[0,1,0]]
  convkit kernel sobel-x shoe.png --out sobel.png --json
  convkit kernel my_kernel.txt cat.jpg                your own: rows of numbers (commas or spaces), or .npy

kernels: identity, blur, blur5, gaussian, edge (Laplacian), sharpen, sobel-x, sobel-y, emboss.
Kernels are applied as in CNNs: cross-correlation, the kernel not flipped.""",
    "animate": """examples:
  convkit animate                                     the lectures' 5x5 input, 3x3 kernel -> 3x3 (anim.gif)
  convkit animate --input 5 --kernel 3 --stride 2 --padding 1
  convkit animate --input 7 --kernel 3 --dilation 2 --out dilated.gif
  convkit animate --input 3 --kernel 3 --stride 2 --padding 1 --transposed      3x3 -> 5x5
  convkit animate --model resnet18 --layer conv1 --json                          7x7/2, 224 -> 112
  convkit animate --model lenet5 --layer features.c3 --fps 4
  convkit animate --model unet --layer up1 --input 1x96x96                     a U-Net's transposed conv""",
}


def parse_pair(text: str) -> tuple[int, int]:
    """``'5'`` -> ``(5, 5)``, ``'5x7'`` or ``'5,7'`` -> ``(5, 7)``; argparse reports errors as usage errors."""
    parts = text.lower().replace("\u00d7", "x").replace(",", "x").split("x")
    try:
        values = tuple(int(p) for p in parts)
    except ValueError:
        values = ()
    if len(values) == 1:
        values = values * 2
    if len(values) != 2 or min(values) < 0:
        raise argparse.ArgumentTypeError(f"expected N or HxW such as 5 or 5x7, got {text!r}")
    return values  # type: ignore[return-value]


def parse_input(text: str) -> tuple[int, ...]:
    """``'5'`` -> ``(5, 5)``, ``'28x28'`` -> ``(28, 28)``, ``'3x224x224'`` -> ``(3, 224, 224)`` (a model's input)."""
    parts = text.lower().replace("\u00d7", "x").replace(",", "x").split("x")
    try:
        values = tuple(int(p) for p in parts)
    except ValueError:
        values = ()
    if len(values) == 1:
        values = values * 2
    if len(values) not in (2, 3) or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected N, HxW or CxHxW such as 5, 5x7 or 3x224x224, got {text!r}")
    return values


def parse_padding(text: str) -> str | tuple[int, int]:
    """``'same'``, ``'valid'``, ``'1'`` or ``'1x2'`` (pixels each side, height x width)."""
    key = text.strip().lower()
    if key in ("same", "valid"):
        return key
    return parse_pair(text)


# -- kernel ---------------------------------------------------------------------------------------------------


def cmd_kernel(args: argparse.Namespace) -> int:
    from convkit.data.errors import DataFormatError
    from convkit.data.folder import decode_image
    from convkit.explain.kernels import (
        apply_kernel,
        auto_display,
        kernel_label,
        load_kernel,
        output_stats,
        save_kernel_comparison,
    )
    from convkit.layers.padding import normalize_padding_mode

    kernel = load_kernel(args.kernel)
    name = kernel_label(args.kernel)
    if not Path(args.image).is_file():
        raise DataFormatError(f"{args.image}: no such image file")
    image = decode_image(args.image, channels=1 if args.gray else None)
    padding = normalize_padding_mode(args.padding)
    out = Path(args.out) if args.out else Path(f"{Path(args.image).stem}-{name}.png")
    written = save_kernel_comparison(image, kernel, out, padding=padding, name=name, display=args.display)
    stats = output_stats(apply_kernel(image, kernel, padding))
    display = auto_display(kernel) if args.display == "auto" else args.display
    if args.json:
        print_json({"image": str(args.image), "kernel": name, "kernel_values": kernel.tolist(), "padding": padding,
                    "display": display, "input_shape": list(image.shape), "output": stats, "out": str(written)})
        print(f"wrote {written}", file=sys.stderr)
    else:
        print(f"{name} {kernel.shape[0]}x{kernel.shape[1]} on {args.image} ({image.shape[0]}x{image.shape[1]}x"
              f"{image.shape[2]}, padding {padding}): output min {stats['min']:.4g}, max {stats['max']:.4g}, "
              f"mean {stats['mean']:.4g}; shown {display}")
        print(f"wrote {written}")
    return 0


# -- animate --------------------------------------------------------------------------------------------------

_GEOMETRY_OPTIONS = ("kernel", "stride", "padding", "dilation", "output_padding", "padding_mode")


def _geometry(args: argparse.Namespace):
    from convkit.explain.animate import ConvGeometry, geometry_from_layer
    from convkit.layers.shapes import same_padding

    if args.layer:
        given = [f"--{o.replace('_', '-')}" for o in _GEOMETRY_OPTIONS if getattr(args, o) is not None]
        given += ["--transposed"] if args.transposed else []
        if not args.model:
            raise CLIError("--layer needs --model (a zoo name or a model file)")
        if given:
            raise CLIError(f"--layer takes the geometry from the layer; drop {', '.join(given)}")
        kwargs = {k: v for k, v in (("num_classes", args.num_classes), ("in_channels", args.in_channels)) if v}
        segmenter = named_segmenter(args.model, args.num_classes, args.in_channels,
                                    args.input if args.input is not None and len(args.input) == 3 else None)
        if segmenter is not None:  # `--model unet`: a segmenter by name, at 96x96 unless --input says otherwise
            return geometry_from_layer(segmenter[0], args.layer, args.input or segmenter[1])
        return geometry_from_layer(args.model, args.layer, args.input, **kwargs)
    if args.model:
        raise CLIError("--model needs --layer NAME (see `convkit summary MODEL` for the layer names)")
    if args.input is not None and len(args.input) == 3:
        raise CLIError(f"--input takes N or HxW without --model, got {'x'.join(map(str, args.input))}")
    size = args.input or (5, 5)
    kernel, stride = args.kernel or (3, 3), args.stride or (1, 1)
    dilation = args.dilation or (1, 1)
    padding = args.padding if args.padding is not None else (0, 0)
    if padding == "valid":
        padding = (0, 0)
    elif padding == "same":
        if args.transposed:
            raise CLIError("--padding same applies to a convolution, not a transposed one")
        padding = tuple(same_padding(n, k, s, d) for n, k, s, d in zip(size, kernel, stride, dilation))
    return ConvGeometry(size, kernel, stride, padding, dilation, transposed=args.transposed,
                        output_padding=args.output_padding or (0, 0), padding_mode=args.padding_mode or "zeros")


def cmd_animate(args: argparse.Namespace) -> int:
    from convkit.explain.animate import Animation

    if args.max_outputs < 1 or not args.fps > 0:
        raise CLIError("--max-outputs and --fps must be positive")
    geometry = _geometry(args)  # an unknown model or layer, or a ShapeError: ConvkitErrors, reported by cli.main
    animation = Animation(geometry, numbers=args.numbers, max_outputs=args.max_outputs)
    written = animation.save(args.out, fps=args.fps)
    data = animation.data
    if args.json:
        print_json({**geometry.to_dict(), "frames": len(data.positions) + 1,
                    "shown_output": list(data.shown_output), "numbers": animation.numbers, "out": str(written)})
        print(f"wrote {written}", file=sys.stderr)
    else:
        print(geometry.describe())
        for line in geometry.worked_formula():
            print(f"  {line}")
        cropped = f" (top-left {data.shown_output[0]}x{data.shown_output[1]} outputs drawn)" if data.cropped else ""
        print(f"wrote {written}: {len(data.positions) + 1} frames{cropped}")
    return 0


def register(verbs, formatter_class=FORMATTER) -> None:
    """Adds the ``kernel`` and ``animate`` subparsers to ``verbs`` (from ``add_subparsers``)."""
    from convkit.explain.kernels import DISPLAY_MODES

    fmt = formatter_class
    p = verbs.add_parser("kernel", help="filter an image with a classic kernel and save before | after",
                         description="Filter an image (any mode: grayscale, RGB, RGBA, palette, 16-bit) with one "
                         "of the lectures' kernels or your own, each channel alone, keeping the size, and save "
                         "before | kernel | after side by side. Outputs with negative values (edge, Sobel) are "
                         "shown with a diverging map; the title says how.", epilog=EXAMPLES["kernel"],
                         formatter_class=fmt)
    p.add_argument("kernel", help="a kernel name (blur, edge, sharpen, sobel-x, sobel-y, emboss, ...) or a file of "
                   "numbers (.txt/.csv rows, or .npy)")
    p.add_argument("image", help="the image file")
    p.add_argument("--padding", default="zeros", metavar="MODE",
                   help="border mode: zeros, replicate, reflect, symmetric, circular (default: zeros)")
    p.add_argument("--out", help="the PNG to write (default: <image-stem>-<kernel>.png)")
    p.add_argument("--display", default="auto", choices=DISPLAY_MODES,
                   help="how the output is shown (default: auto: diverging for kernels summing to 0, clipped "
                   "to the image's range for kernels summing to 1, min..max otherwise)")
    p.add_argument("--gray", action="store_true", help="convert the image to grayscale first")
    add_json(p, "print the output's statistics as JSON")
    p.set_defaults(run=cmd_kernel)

    p = verbs.add_parser("animate", help="animate a convolution sliding over its padded input (GIF)",
                         description="Draw a convolution as a GIF: the kernel sliding over the padded input while "
                         "the output fills in, one frame per output position and a final one, with the "
                         "output-size formula on each frame and the numbers in the cells for small sizes. "
                         "A transposed convolution is drawn as its equivalent direct convolution. With "
                         "--model and --layer, the geometry of that layer at its input size.",
                         epilog=EXAMPLES["animate"], formatter_class=fmt)
    g = p.add_argument_group("geometry")
    g.add_argument("--input", type=parse_input, metavar="N|HxW",
                   help="input size (default: 5); with --model, the model's input HxW or CxHxW")
    g.add_argument("--kernel", type=parse_pair, metavar="K|KHxKW", help="kernel size (default: 3)")
    g.add_argument("--stride", type=parse_pair, metavar="S", help="(default: 1)")
    g.add_argument("--padding", type=parse_padding, metavar="P|same|valid",
                   help="pixels added on each side, or same/valid (default: 0)")
    g.add_argument("--dilation", type=parse_pair, metavar="D", help="(default: 1)")
    g.add_argument("--transposed", action="store_true", help="a transposed convolution (upsampling)")
    g.add_argument("--output-padding", type=parse_pair, metavar="OP",
                   help="of a transposed convolution: added after (default: 0)")
    g.add_argument("--padding-mode", metavar="MODE",
                   help="zeros, replicate, reflect, symmetric or circular: the values shown in the padding")
    g = p.add_argument_group("a layer of a model")
    g.add_argument("--model", help="a zoo name (see `convkit models`), a segmenter (unet, fcn8s, ...), a model file "
                   "(.yaml), a run folder or a checkpoint")
    g.add_argument("--layer", metavar="NAME", help="the convolution's name as `convkit summary MODEL` lists it")
    g.add_argument("--num-classes", type=positive_int, help="classes of the classifier (default: the model's)")
    g.add_argument("--in-channels", type=positive_int, help="input channels (default: the model's)")
    g = p.add_argument_group("output")
    g.add_argument("--out", default="anim.gif", help="the GIF to write (default: anim.gif)")
    g.add_argument("--fps", type=positive_float, default=2.0, help="frames per second (default: 2)")
    g.add_argument("--numbers", action=argparse.BooleanOptionalAction, default=None,
                   help="draw the values in the cells (default: when the grid is at most 12 cells a side)")
    g.add_argument("--max-outputs", type=positive_int, default=8, metavar="N",
                   help="outputs drawn per axis; larger outputs are cropped to their top-left corner (default: 8)")
    add_json(g, "print the geometry and output size as JSON")
    p.set_defaults(run=cmd_animate)
