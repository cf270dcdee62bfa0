"""Writes the Fashion-MNIST subset that ships inside convkit (src/convkit/assets/fashion-mnist-small/).

A stratified, seeded choice: the same number of images of every class from each split of the real
Fashion-MNIST, kept in their original order, written as gzipped IDX files with a JSON of provenance.

    python scripts/make_default_subset.py                      # from ../shared/data/fashion-mnist
    python scripts/make_default_subset.py --source /usr/share/datasets/fashion-mnist --train 600 --test 100

Fashion-MNIST: Han Xiao, Kashif Rasul, Roland Vollgraf, "Fashion-MNIST: a Novel Image Dataset for
Benchmarking Machine Learning Algorithms", arXiv:1708.07747, 2017. MIT licence, (c) 2017 Zalando SE.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
from pathlib import Path

import torch

from convkit.data.idx import find_idx_pair, load_idx_pair, write_idx

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "src" / "convkit" / "assets" / "fashion-mnist-small"
SOURCES = [ROOT.parent / "shared" / "data" / "fashion-mnist", Path("/work/shared/data/fashion-mnist"),
           Path("/usr/share/datasets/fashion-mnist")]
CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
         "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}
LICENCE = """\
The files in this folder are a subset of Fashion-MNIST (https://github.com/zalandoresearch/fashion-mnist):
Han Xiao, Kashif Rasul, Roland Vollgraf, "Fashion-MNIST: a Novel Image Dataset for Benchmarking Machine
Learning Algorithms", arXiv:1708.07747, 2017. They were chosen by scripts/make_default_subset.py
(see dataset.json) and are distributed under Fashion-MNIST's licence:

The MIT License (MIT)

Copyright (c) 2017 Zalando SE, https://tech.zalando.com

Permission is hereby granted, free of charge, to any person obtaining a copy of this software and associated
documentation files (the "Software"), to deal in the Software without restriction, including without limitation
the rights to use, copy, modify, merge, publish, distribute, sublicense, and/or sell copies of the Software, and
to permit persons to whom the Software is furnished to do so, subject to the following conditions:

The above copyright notice and this permission notice shall be included in all copies or substantial portions
of the Software.

THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR IMPLIED, INCLUDING BUT NOT LIMITED TO
THE WARRANTIES OF MERCHANTABILITY, FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER LIABILITY, WHETHER IN AN ACTION OF
CONTRACT, TORT OR OTHERWISE, ARISING FROM, OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS
IN THE SOFTWARE.
"""


def stratified(labels: torch.Tensor, per_class: int, seed: int) -> torch.Tensor:
    """Indices of `per_class` random samples of every class, sorted so the subset keeps the source's order."""
    g = torch.Generator().manual_seed(seed)
    chosen = []
    for c in range(int(labels.max()) + 1):
        members = (labels == c).nonzero().flatten()
        if len(members) < per_class:
            raise SystemExit(f"class {c} has only {len(members)} samples, fewer than {per_class}")
        chosen.append(members[torch.randperm(len(members), generator=g)[:per_class]])
    return torch.cat(chosen).sort().values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", type=Path, help="folder with Fashion-MNIST's four IDX files")
    parser.add_argument("--train", type=int, default=600, help="training images per class (default 600)")
    parser.add_argument("--test", type=int, default=100, help="test images per class (default 100)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    source = args.source or next((s for s in SOURCES if find_idx_pair(s, "train")), None)
    if source is None:
        raise SystemExit(f"Fashion-MNIST not found in {', '.join(map(str, SOURCES))}; pass --source")
    args.out.mkdir(parents=True, exist_ok=True)
    meta = {"name": "fashion-mnist-small", "classes": CLASSES,
            "source": {"dataset": "Fashion-MNIST", "url": "https://github.com/zalandoresearch/fashion-mnist",
                       "citation": "Xiao, Rasul, Vollgraf, arXiv:1708.07747, 2017", "licence": "MIT",
                       "copyright": "(c) 2017 Zalando SE"},
            "selection": {"method": "stratified random choice per class, kept in source order",
                          "seed": args.seed, "generator": "torch.Generator + torch.randperm, classes in order",
                          "script": "scripts/make_default_subset.py"},
            "splits": {}}
    for split, per_class in (("train", args.train), ("test", args.test)):
        images, labels = load_idx_pair(*find_idx_pair(source, split))
        index = stratified(labels, per_class, args.seed)
        files = {}
        for name, tensor in zip(FILES[split], (images[index, 0], labels[index].to(torch.uint8))):
            path = write_idx(args.out / name, tensor)
            files[name] = {"sha256_decompressed": hashlib.sha256(gzip.decompress(path.read_bytes())).hexdigest(),
                           "bytes": path.stat().st_size}
        counts = torch.bincount(labels[index], minlength=len(CLASSES)).tolist()
        meta["splits"][split] = {"count": len(index), "per_class": dict(zip(CLASSES, counts)),
                                 "source_count": len(labels), "files": files}
        print(f"{split}: {len(index)} of {len(labels)} images ({per_class} per class)")
    (args.out / "dataset.json").write_text(json.dumps(meta, indent=2) + "\n")
    (args.out / "LICENSE.txt").write_text(LICENCE)
    total = sum(p.stat().st_size for p in args.out.iterdir())
    print(f"wrote {args.out} ({total / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
