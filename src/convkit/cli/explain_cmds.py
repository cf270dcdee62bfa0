"""The ``convkit explain`` verb: filters, features, attribution and maximize (registered by ``cli.main``).

Each sub-verb takes a run folder or .safetensors checkpoint (trained weights, class names, normalisation)
or a zoo name / model file (untrained weights, mean 0.5 and std 0.5), writes one PNG and prints its path
(with --json, what it computed). Without --out the PNG goes to ``<run>/explain/<verb>-<detail>.png`` for a
run, else to ``./<model>-<verb>-<detail>.png``.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from convkit.cli.common import (
    FORMATTER,
    CLIError,
    add_json,
    nonnegative_int,
    parse_shape,
    positive_float,
    positive_int,
    print_json,
)

EXAMPLES = {
    "explain": """examples:
  convkit explain filters runs/fastcnn-20250101-120000                 the first layer's kernels
  convkit explain features runs/fastcnn-20250101-120000 shoe.png --layer features.stage1 features.stage3
  convkit explain attribution runs/fastcnn-20250101-120000 shoe.png --method gradcam
  convkit explain maximize runs/fastcnn-20250101-120000 --layer features.stage2 --channel 5""",
    "filters": """examples:
  convkit explain filters runs/fastcnn-20250101-120000
  convkit explain filters resnet18 --layer layer1.0.conv1 --max-filters 16 --max-channels 8
  convkit explain filters lenet5 --normalize global --out lenet-c1.png --json""",
    "features": """examples:
  convkit explain features runs/fastcnn-20250101-120000 shoe.png
  convkit explain features runs/fastcnn-20250101-120000 shoe.png --layer features.stage1 features.stage3
  convkit explain features resnet18 cat.jpg --input 3x128x128 --layer conv1 layer2 layer4 --json""",
    "attribution": """examples:
  convkit explain attribution runs/fastcnn-20250101-120000 shoe.png             Grad-CAM, predicted class
  convkit explain attribution runs/fastcnn-20250101-120000 shoe.png --method occlusion --window 6 --stride 2
  convkit explain attribution runs/fastcnn-20250101-120000 shoe.png --method saliency --class Sandal --json
  convkit explain attribution resnet18 cat.jpg --input 3x64x64 --method guided-backprop""",
    "maximize": """examples:
  convkit explain maximize runs/fastcnn-20250101-120000 --layer features.stage2 --channel 5
  convkit explain maximize runs/fastcnn-20250101-120000 --class Trouser --steps 400
  convkit explain maximize lenet5 --layer features.c3 --channel 0 --jitter 2 --blur-every 8 --json""",
}


def _add_source(p: argparse.ArgumentParser, image: bool) -> None:
    p.add_argument("model", metavar="RUN_OR_MODEL", help="a run folder, a .safetensors checkpoint, a zoo name "
                   "(untrained, see `convkit models`) or a model file (.yaml)")
    if image:
        p.add_argument("image", help="an image file (any mode; converted to the model's channels and size)")
    p.add_argument("--num-classes", type=positive_int, help="classes of a zoo model or model file (default: the model's)")
    p.add_argument("--in-channels", type=positive_int, help="input channels of a zoo model or model file")
    p.add_argument("--input", type=parse_shape, metavar="CxHxW",
                   help="input shape (default: the run's training size or the zoo model's default)")


def _add_output(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", metavar="FILE.png", help="where to write (default: RUN/explain/... or ./MODEL-...)")
    add_json(p, "print what was computed as JSON")


def _load(args: argparse.Namespace):
    from convkit.explain.source import load_explainable

    return load_explainable(args.model, num_classes=args.num_classes, in_channels=args.in_channels,
                            input_shape=args.input)


def output_path(explainable, out: str | None, verb: str, detail: str) -> Path:
    """--out if given; else RUN/explain/<verb>-<detail>.png for a run, ./<model>-<verb>-<detail>.png otherwise."""
    if out:
        return Path(out)
    detail = re.sub(r"[^A-Za-z0-9._-]+", "_", detail).strip("_") or "out"
    if explainable.run_dir is not None:
        return explainable.run_dir / "explain" / f"{verb}-{detail}.png"
    return Path(f"{explainable.name}-{verb}-{detail}.png")


def _report(args: argparse.Namespace, path: Path, summary: str, data: dict) -> int:
    if args.json:
        print_json({"path": str(path), **data})
    else:
        print(summary, file=sys.stderr)
        print(path)
    return 0


def cmd_filters(args: argparse.Namespace) -> int:
    from convkit.explain.filters import filter_layout, save_filters

    ex = _load(args)
    info = filter_layout(ex, args.layer, max_filters=args.max_filters, max_channels=args.max_channels)
    path = output_path(ex, args.out, "filters", info["layer"])
    save_filters(ex, path, info["layer"], normalize=args.normalize, max_filters=args.max_filters,
                 max_channels=args.max_channels)
    out_ch, in_ch, kh, kw = info["weight_shape"]
    summary = f"{info['layer']}: {info['filters']} of {out_ch} filters, {kh}x{kw}, {info['mode']}"
    return _report(args, path, summary, {"model": ex.name, **info, "normalize": args.normalize})


def cmd_features(args: argparse.Namespace) -> int:
    from convkit.explain.features import default_feature_layers, feature_maps, save_feature_maps
    from convkit.explain.source import load_image

    ex = _load(args)
    image = load_image(args.image, ex.input_shape)
    layers = args.layer or default_feature_layers(ex)
    maps = feature_maps(ex, ex.normalize(image[None]), layers)
    path = output_path(ex, args.out, "features", Path(args.image).stem)
    save_feature_maps(ex, image, layers, path, max_channels=args.max_channels)
    data = {}
    for name, out in maps.items():
        sample = out[0].flatten(1) if out.dim() == 4 else out[0].reshape(out.shape[1], -1)
        strength = sample.float().mean(1)
        data[name] = {"shape": list(out.shape[1:]), "min": float(out.min()), "max": float(out.max()),
                      "mean": float(out.float().mean()), "strongest_channel": int(strength.argmax())}
    summary = "; ".join(f"{n}: {'x'.join(map(str, d['shape']))}" for n, d in data.items())
    return _report(args, path, summary, {"model": ex.name, "image": str(args.image), "layers": data})


def cmd_attribution(args: argparse.Namespace) -> int:
    from convkit.explain.attribution import explain_image, plot_attribution
    from convkit.explain.source import load_image

    options = {k: getattr(args, k) for k in ("window", "stride") if getattr(args, k) is not None}
    if options and args.method != "occlusion":
        raise CLIError(f"--{' --'.join(options)}: occlusion options; --method is {args.method}")
    ex = _load(args)
    image = load_image(args.image, ex.input_shape)
    result = explain_image(ex, image, args.method, args.target, args.layer, **options)
    detail = f"{args.method}-{Path(args.image).stem}" + (f"-class{result.target}" if args.target else "")
    path = output_path(ex, args.out, "attribution", detail)
    plot_attribution(result, image, path)
    summary = (f"{args.method} for '{result.target_name}' ({100 * result.probability:.1f}%): peak at row "
               f"{result.peak[0]}, column {result.peak[1]}" + (f" (layer {result.layer})" if result.layer else ""))
    return _report(args, path, summary, {"model": ex.name, "image": str(args.image), **result.to_dict()})


def cmd_maximize(args: argparse.Namespace) -> int:
    from convkit.explain.maximize import maximize, objective_value, plot_maximized
    from convkit.explain.source import resolve_layer

    ex = _load(args)
    target = None if args.target is None else ex.class_index(args.target)
    if target is not None and args.layer:
        raise CLIError("--layer goes with --channel; a class is maximised at the model's output")
    layer = None if target is not None else resolve_layer(ex.model, args.layer, default="last")[0]
    goal = {"layer": layer, "channel": args.channel, "target_class": target}
    progress = not args.json and sys.stderr.isatty()
    image = maximize(ex, **goal, steps=args.steps, lr=args.lr, jitter=args.jitter, blur_every=args.blur_every,
                     blur_sigma=args.blur_sigma, seed=args.seed, progress=progress)
    start = float(objective_value(ex, _gray(ex.input_shape), **goal)[0])
    end = float(objective_value(ex, image, **goal)[0])
    what = (f"'{ex.class_name(target)}' (logit)" if target is not None
            else f"{layer}, channel {args.channel} (mean activation)")
    detail = f"class{target}" if target is not None else f"{layer}-c{args.channel}"
    path = output_path(ex, args.out, "maximize", detail)
    plot_maximized(image, path, f"maximising {what}: {start:.3g} on gray -> {end:.3g} ({args.steps} steps)")
    summary = f"maximising {what}: {start:.3g} on a gray image -> {end:.3g}"
    return _report(args, path, summary, {
        "model": ex.name, "layer": layer, "channel": args.channel, "class": target,
        "class_name": ex.class_name(target) if target is not None else None, "objective_gray": start,
        "objective": end, "steps": args.steps, "seed": args.seed, "size": list(image.shape)})


def _gray(shape):
    """A mid-gray image on 0..1: the reference the maximised objective is compared with."""
    import torch

    return torch.full(tuple(shape), 0.5)


def register(verbs, formatter_class=FORMATTER) -> None:
    """Adds the ``explain`` verb and its sub-verbs filters, features, attribution, maximize to ``verbs``."""
    from convkit.explain.attribution import METHODS
    from convkit.explain.filters import NORMALIZATIONS

    fmt = formatter_class
    explain = verbs.add_parser("explain", help="look inside a model: filters, feature maps, attribution maps, "
                               "activation maximisation", description="Look inside a CNN; each sub-verb writes a PNG "
                               "and prints its path.", epilog=EXAMPLES["explain"], formatter_class=fmt)
    explain.set_defaults(run=lambda args: explain.print_help() or 0)
    sub = explain.add_subparsers(dest="explain_verb", metavar="<what>")

    p = sub.add_parser("filters", help="a conv layer's kernels as an image grid",
                       description="Draw a conv layer's learned kernels: the first layer of an RGB model in colour, "
                       "deeper layers one gray tile per input channel (a row per filter).",
                       epilog=EXAMPLES["filters"], formatter_class=fmt)
    _add_source(p, image=False)
    p.add_argument("--layer", help="a conv layer's name (default: the first conv layer)")
    p.add_argument("--max-filters", type=positive_int, default=64, help="filters drawn, the first ones (default: 64)")
    p.add_argument("--max-channels", type=positive_int, default=16, help="input channels per filter for deeper layers "
                   "(default: 16)")
    p.add_argument("--normalize", choices=NORMALIZATIONS, default="filter",
                   help="min-max scale per filter (default: every filter at full contrast) or over the layer")
    _add_output(p)
    p.set_defaults(run=cmd_filters)

    p = sub.add_parser("features", help="the feature maps an image produces at chosen layers",
                       description="Run an image through the model and draw the maps that chosen layers output, "
                       "a grid of channels per layer (one shared scale per layer).",
                       epilog=EXAMPLES["features"], formatter_class=fmt)
    _add_source(p, image=True)
    p.add_argument("--layer", nargs="+", metavar="NAME", help="layer names (default: the first and last conv layer)")
    p.add_argument("--max-channels", type=positive_int, default=32, help="channels drawn per layer (default: 32)")
    _add_output(p)
    p.set_defaults(run=cmd_features)

    p = sub.add_parser("attribution", help="which pixels a prediction rests on, overlaid on the image",
                       description="Attribution map of one image (Captum): image | map | overlay, with the class "
                       "explained and its probability. Maps are non-negative and scaled to 0..1.",
                       epilog=EXAMPLES["attribution"], formatter_class=fmt)
    _add_source(p, image=True)
    p.add_argument("--method", choices=METHODS, default="gradcam", help="(default: gradcam)")
    p.add_argument("--class", dest="target", metavar="K", help="class index or name (default: the predicted one)")
    p.add_argument("--layer", help="Grad-CAM's layer (default: the last feature map if the head "
                   "averages it globally, else the last conv layer larger than 1x1)")
    p.add_argument("--window", type=positive_int, help="occlusion: window size in pixels (default: min(H, W) / 7)")
    p.add_argument("--stride", type=positive_int, help="occlusion: window step (default: window / 2)")
    _add_output(p)
    p.set_defaults(run=cmd_attribution)

    p = sub.add_parser("maximize", help="the input that most excites a filter or a class",
                       description="Activation maximisation: gradient ascent on the input, from gray, with random "
                       "jitter and periodic Gaussian blur. Maximises a channel's mean activation or a class's logit.",
                       epilog=EXAMPLES["maximize"], formatter_class=fmt)
    _add_source(p, image=False)
    p.add_argument("--layer", help="the channel's layer (default: the last conv layer)")
    goal = p.add_mutually_exclusive_group(required=True)
    goal.add_argument("--channel", type=nonnegative_int, metavar="C", help="maximise this channel's mean activation")
    goal.add_argument("--class", dest="target", metavar="K", help="maximise this class's logit (index or name)")
    p.add_argument("--steps", type=positive_int, default=200, help="(default: 200)")
    p.add_argument("--lr", type=positive_float, default=0.05, help="Adam step size in normalised units (default: 0.05)")
    p.add_argument("--jitter", type=nonnegative_int, default=4, help="random shift per step, pixels (default: 4)")
    p.add_argument("--blur-every", type=nonnegative_int, default=4, help="blur every N steps, 0 never (default: 4)")
    p.add_argument("--blur-sigma", type=positive_float, default=0.5, help="blur sigma in pixels (default: 0.5)")
    p.add_argument("--seed", type=int, default=0)
    _add_output(p)
    p.set_defaults(run=cmd_maximize)
