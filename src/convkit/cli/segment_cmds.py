"""The ``convkit segment`` verbs (registered by ``cli.main``): ``convolutionize``, a classifier slid over scenes."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from convkit.cli.common import FORMATTER, CLIError, add_json, positive_int, print_json

EXAMPLES = {
    "segment": """examples:
  convkit segment convolutionize lenet5                      the conversion, its stride, margin and checks
  convkit segment convolutionize runs/fastcnn-20250101-120000 --scenes 4 --out maps/   coarse class maps
  convkit segment convolutionize runs/fastcnn-20250101-120000 photo.png --save fcn.safetensors""",
}


def cmd_convolutionize(args: argparse.Namespace) -> int:
    from convkit.models.reference import resolve_model
    from convkit.tasks.segmentation.convolutionize import class_map, convolutionize, save_class_map

    classifier = resolve_model(args.model).eval()
    net = convolutionize(classifier).eval()  # shares the classifier's weights
    c, h, w = net.input_shape
    check = _check_at_training_size(classifier, net)
    layers = [f"{name}: {type(m).__name__}({_geometry(m)})" for name, m in net.head.named_children()]
    images = _images(args, c)
    out = Path(args.out) if args.out else Path("convolutionized")
    written = []
    for name, image in images:
        if image.shape[1] < h or image.shape[2] < w:
            raise CLIError(f"{name}: {image.shape[1]}x{image.shape[2]} pixels, smaller than the classifier's "
                           f"training size {h}x{w}")
        ids, probs = class_map(net, image)
        path = save_class_map(image, ids, net.classes, out / f"{Path(name).stem}_classmap.png",
                              title=f"{Path(str(args.model)).name} convolutionized, {name}", stride=net.stride,
                              receptive_field=net.receptive_field)
        written.append({"image": name, "size": list(image.shape[1:]), "map": list(ids.shape),
                        "classes": sorted({(net.classes or [str(k) for k in range(net.num_classes)])[k]
                                           for k in ids.flatten().tolist()}), "picture": str(path)})
    saved = str(_save(net, args.save)) if args.save else None
    record = {"model": str(args.model), "input_shape": [c, h, w], "stride": net.stride,
              "receptive_field": list(net.receptive_field), "margin": net.margin, "head": layers,
              "max_abs_difference_at_training_size": check, "maps": written, "saved": saved}
    if args.json:
        print_json(record)
        return 0
    print(f"{args.model} convolutionized: input {c}x{h}x{w}, total stride {net.stride}, receptive field "
          f"{h}x{w}, padding margin {net.margin} px")
    print("head, as convolutions:\n  " + "\n  ".join(layers))
    print(f"check: on a {h}x{w} input its output equals the classifier's logits (largest difference {check:.2e})")
    print(f"on a larger H x W input: a map of ((H - {h}) // {net.stride} + 1) x ((W - {w}) // {net.stride} + 1) "
          "class scores" + ("" if not net.margin else f"; positions within {net.margin} px of the border see "
                            "the image's zero padding"))
    for r in written:
        print(f"{r['image']}: {r['size'][0]}x{r['size'][1]} -> a {r['map'][0]}x{r['map'][1]} class map "
              f"({', '.join(r['classes'])})")
        print(f"wrote {r['picture']}", file=sys.stderr)
    if saved:
        print(f"saved {saved} (convkit predict {saved} IMAGE gives its map at the image's size)", file=sys.stderr)
    return 0


def _save(net, path) -> Path:
    """The convolutionized network as a checkpoint that `convkit predict` and `resolve_model` read."""
    from convkit import __version__
    from convkit.models.weights import save_tensors

    mean, std = net.model_cfg.mean_std()
    classes = net.classes or [str(k) for k in range(net.num_classes)]
    meta = {"task": "segment", "model": net.model_cfg.spec, "classes": classes, "mean": mean.tolist(),
            "std": std.tolist(), "input_shape": list(net.input_shape), "convkit_version": __version__}
    return save_tensors(path, {k: v.contiguous() for k, v in net.state_dict().items()}, meta)


def _geometry(m) -> str:
    parts = []
    for key in ("in_channels", "out_channels", "kernel_size", "stride", "dilation"):
        if hasattr(m, key) and not (key in ("stride", "dilation") and getattr(m, key) in (1, (1, 1))):
            parts.append(f"{key}={getattr(m, key)}")
    return ", ".join(parts)


def _check_at_training_size(classifier, net) -> float:
    """The largest |difference| between the classifier's logits and the convolutionized net's on random inputs."""
    import torch

    x = torch.randn(4, *net.input_shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return float((classifier(x).float() - net(x).flatten(1).float()).abs().max())


def _images(args, channels: int) -> list:
    """(name, uint8 (C, H, W)) of the IMAGES given, else --scenes built-in validation scenes."""
    import torch

    from convkit.data.folder import decode_image
    from convkit.tasks.classification.predict import expand_inputs

    if args.images:
        return [(str(p), decode_image(p, channels)) for p in expand_inputs(args.images)]
    if not args.scenes:
        return []
    from convkit.tasks.detection.scenes import make_scenes

    images, _, _ = make_scenes(args.scenes, seed=0, split="test", masks=False, channels=channels)
    return [(f"scene{i}", torch.as_tensor(images[i])) for i in range(args.scenes)]


def register(verbs, formatter_class=FORMATTER) -> None:
    """Adds the ``segment`` verb and its subverbs to ``verbs`` (from add_subparsers).

    Example:
        >>> parser = argparse.ArgumentParser()
        >>> register(parser.add_subparsers(dest="verb"))
        >>> args = parser.parse_args(["segment", "convolutionize", "lenet5", "--scenes", "2"])
        >>> args.model, args.scenes, args.run.__name__
        ('lenet5', 2, 'cmd_convolutionize')
    """
    p = verbs.add_parser("segment", help="segmentation tools: convolutionize a classifier",
                         description="Segmentation tools. Train a segmenter with `convkit train --task segment`; "
                         "evaluate and predict with `convkit evaluate` / `convkit predict`.",
                         epilog=EXAMPLES["segment"], formatter_class=formatter_class)
    sub = p.add_subparsers(dest="segment_verb", metavar="<subverb>", required=True)
    q = sub.add_parser("convolutionize", help="turn a classifier's fully connected head into convolutions",
                       description="Turn a classifier's fully connected head into convolutions (the first Linear a "
                       "k x k convolution over the last map, the others 1 x 1), check that on the training size it "
                       "gives the classifier's logits, and slide it over larger images: a coarse class map per "
                       "image, drawn beside the image (<out>/<name>_classmap.png). No training.",
                       epilog=EXAMPLES["segment"], formatter_class=formatter_class)
    q.add_argument("model", help="a zoo name, model file, run folder or checkpoint of a classifier")
    q.add_argument("images", nargs="*", help="images to slide it over (files or folders; default: --scenes)")
    q.add_argument("--scenes", type=positive_int, default=None, metavar="N",
                   help="slide it over N built-in validation scenes (96x96, Fashion-MNIST items; default when no "
                   "IMAGES: none, only the conversion and its check)")
    q.add_argument("--out", metavar="DIR", help="where the class-map pictures go (default: ./convolutionized)")
    q.add_argument("--save", metavar="FILE.safetensors", help="also save the convolutionized network (its map is "
                   "resized to each image by `convkit predict`)")
    add_json(q)
    q.set_defaults(run=cmd_convolutionize)
