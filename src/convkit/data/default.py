"""The built-in dataset: 7,000 real Fashion-MNIST images shipped inside the package, so training needs nothing.

6,000 training (600 per class) and 1,000 test images (100 per class), chosen by
scripts/make_default_subset.py; provenance and licence (MIT, Zalando SE) in assets/fashion-mnist-small/.
"""

from __future__ import annotations

import json
from importlib.resources import as_file, files

from convkit.data.idx import find_idx_pair, load_idx_pair
from convkit.data.tensor import ImageTensorDataset, check_labels

DEFAULT_NAME = "fashion-mnist-small"


def load_default(split: str = "train") -> ImageTensorDataset:
    """The shipped Fashion-MNIST subset, no download or path needed.

    Args:
        split: "train" (6,000 images, 600 per class) or "test" (1,000, 100 per class).

    Returns:
        An `ImageTensorDataset` of uint8 images (N, 1, 28, 28) with Fashion-MNIST's ten class names.

    Raises:
        ValueError: an unknown split.

    Example:
        >>> train, test = load_default("train"), load_default("test")
        >>> len(train), len(test), train.classes[:3]
        (6000, 1000, ['T-shirt/top', 'Trouser', 'Pullover'])
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    with as_file(files("convkit") / "assets" / DEFAULT_NAME) as folder:
        meta = json.loads((folder / "dataset.json").read_text())
        images_path, labels_path = find_idx_pair(folder, split)
        images, labels = load_idx_pair(images_path, labels_path)
    check_labels(labels, len(meta["classes"]), str(labels_path))
    return ImageTensorDataset(images, labels, meta["classes"], f"{DEFAULT_NAME} (built in, {split})")
