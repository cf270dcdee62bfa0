"""The ``convkit features`` verb (registered by ``cli.main``): a trained CNN's features of a dataset, and their map."""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

from convkit.cli.common import FORMATTER, CLIError, positive_int, reported_warnings

EXAMPLES = {
    "features": """examples:
  convkit features runs/fastcnn-20250101-120000 -o feats.safetensors --split test   the run's own test images
  convkit features runs/fastcnn-20250101-120000 --data digits/ -o digits.safetensors --map tsne
  convkit features fastcnn --data default --limit 500 -o untrained.safetensors --map-png untrained.png
  convkit features best.safetensors --data fashion-mnist --data-dir ~/data --cache-dir ~/.cache/f""",
}


def _load_data(args: argparse.Namespace, cfg):
    """The images, loaded as `convkit train` loads them: --data (its --split), else the run's own (its split)."""
    from convkit.train.trainer import load_split, run_data

    if args.data is not None:
        data, what = load_split(args.data, args.split, args.data_dir), f"{args.data} ({args.split} split)"
    elif isinstance(cfg.meta.get("config"), dict):
        changes = {"data_dir": args.data_dir} if args.data_dir else {}
        data, what = run_data(cfg.meta["config"], args.split, **changes)
    else:
        raise CLIError(f"{args.source}: not a trained run, so it names no data; give the images with --data "
                       "(a dataset name, a folder of one subfolder per class, or a CSV)")
    if len(data) == 0:
        raise CLIError(f"--data {args.data or what}: no images")
    if args.limit and args.limit < len(data):
        import torch

        pick = torch.randperm(len(data), generator=torch.Generator().manual_seed(args.seed))[:args.limit]
        data = data.subset(pick.sort().values)
        what += f", {len(data):,} drawn at random (seed {args.seed})"
    return data, what


def cmd_features(args: argparse.Namespace) -> int:
    from convkit.models.reference import resolve_model
    from convkit.reuse.features import (
        cached_features,
        extract_features,
        feature_layer,
        feature_map,
        model_source_sha256,
        plot_feature_map,
        save_features,
    )

    out = Path(args.out)
    if out.suffix.lower() != ".safetensors":
        raise CLIError(f"-o {args.out}: expected a .safetensors file name")
    if args.map == "none" and args.map_png:
        raise CLIError("--map-png needs a map: --map pca or --map tsne")
    model = resolve_model(args.source)
    cfg = model.model_cfg
    sha = model_source_sha256(model)
    data, what = _load_data(args, cfg)
    adaptations = []
    if cfg.input_shape and data.image_shape[0] != cfg.input_shape[0]:  # 1-channel data, a 3-channel net...
        from convkit.reuse.adapt import adapt_input_channels

        adaptations.append(str(adapt_input_channels(model, int(data.image_shape[0]))))
        print(f"adapted: {adaptations[-1]}", file=sys.stderr)
    with reported_warnings():
        if args.cache_dir:
            key_sha = hashlib.sha256(json.dumps([sha, *adaptations]).encode()).hexdigest() if adaptations else sha
            features, labels = cached_features(model, key_sha, data, args.cache_dir, batch_size=args.batch_size)
        else:
            features, labels = extract_features(model, data, batch_size=args.batch_size)
    classes = list(getattr(data, "classes", None) or []) or None
    coords = feature_map(features, args.map, seed=args.seed) if args.map != "none" else None
    meta = {"classes": classes, "source": str(args.source), "source_sha256": sha, "model_name": cfg.name,
            "layer": feature_layer(model), "data": what, "map": args.map, "adaptations": adaptations}
    save_features(out, features, labels, meta, coords)
    print(f"wrote {out}: {len(features):,} x {features.shape[1]:,} features ({feature_layer(model)} of {cfg.name}) "
          f"of {what}")
    if coords is not None:
        png = Path(args.map_png) if args.map_png else out.with_suffix(".png")
        title = f"{cfg.name}: {args.map.upper() if args.map == 'pca' else 't-SNE'} of {what}"
        plot_feature_map(coords, labels, classes, png, title=title)
        print(f"wrote {png}", file=sys.stderr)
    return 0


def register(verbs, formatter_class=FORMATTER) -> None:
    """Adds the ``features`` subparser to ``verbs`` (from add_subparsers).

    Example:
        >>> parser = argparse.ArgumentParser()
        >>> register(parser.add_subparsers(dest="verb"))
        >>> args = parser.parse_args(["features", "runs/x", "--data", "digits", "-o", "f.safetensors"])
        >>> args.source, args.data, args.out, args.map, args.run.__name__
        ('runs/x', 'digits', 'f.safetensors', 'pca', 'cmd_features')
    """
    p = verbs.add_parser("features", help="a trained CNN's features of a dataset, and a 2-D map of them",
                         description="Compute the pooled pre-logit features (the input of the last classifier "
                         "layer) of every image, with the model's own normalisation, and write them with their "
                         "labels and class names as a .safetensors file; draw them in 2-D (PCA or t-SNE), one "
                         "colour per class, as a PNG beside it. A linear classifier trained on them is the "
                         "lectures' first recipe for reusing a network. Data with other channels than the model's "
                         "is read by adapting its first convolution (summed or replicated weights; printed).",
                         epilog=EXAMPLES["features"], formatter_class=formatter_class)
    p.add_argument("source", metavar="SOURCE", help="a run folder, a .safetensors checkpoint, a torchvision/timm state dict "
                   "(.safetensors, .pth) or a zoo name")
    p.add_argument("--data", help="a dataset name, folder or CSV, as `convkit train --data` takes (default: the "
                   "run's own data)")
    p.add_argument("--data-dir", help="where named datasets are looked for")
    p.add_argument("--split", choices=("train", "test"), default="train",
                   help="which split: of --data (a folder without train/ and test/ is one collection: train), or "
                   "of the run's data (test: the images it was tested on) (default: train)")
    p.add_argument("-o", "--out", required=True, metavar="F.safetensors", help="the features file to write")
    p.add_argument("--map", choices=("pca", "tsne", "none"), default="pca",
                   help="the 2-D map: pca (fast), tsne (clusters show better, slower) or none (default: pca)")
    p.add_argument("--map-png", metavar="F.png", help="where to draw the map (default: the features file as .png)")
    p.add_argument("--limit", type=positive_int, metavar="N", help="use N images drawn at random (see --seed)")
    p.add_argument("--seed", type=int, default=0, help="for --limit and t-SNE (default: 0)")
    p.add_argument("--batch-size", type=positive_int, default=256, help="images per forward pass (default: 256)")
    p.add_argument("--cache-dir", metavar="DIR", help="reuse features computed before for the same weights, data "
                   "and layer (stored in DIR)")
    p.set_defaults(run=cmd_features)
