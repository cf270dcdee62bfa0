"""The built-in datasets: 7,000 real Fashion-MNIST images shipped inside the package, so training needs nothing;
and scikit-learn's 1,797 real handwritten digits (``digits``), a second real task for reuse.

Fashion-MNIST: 6,000 training (600 per class) and 1,000 test images (100 per class), chosen by
scripts/make_default_subset.py; provenance and licence (MIT, Zalando SE) in assets/fashion-mnist-small/.
"""

from __future__ import annotations

import json
from importlib.resources import as_file, files

from convkit.data.idx import find_idx_pair, load_idx_pair
from convkit.data.tensor import ImageTensorDataset, check_labels

DEFAULT_NAME = "fashion-mnist-small"
DIGITS_NAME = "digits"
DIGITS_TEST_PER_CLASS = 50  # the fixed test part: 50 scans of each digit, chosen with seed 0


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


def load_digits(split: str = "train") -> ImageTensorDataset:
    """scikit-learn's handwritten digits (``sklearn.datasets.load_digits``), upscaled to 28x28 like MNIST.

    1,797 real 8x8 scans (UCI's optical recognition of handwritten digits: 16 grey levels), shipped inside
    scikit-learn, so they need no download. Each scan is scaled from 0..16 to 0..255 and resized to 28x28 by
    bilinear interpolation (antialiased), so a network made for MNIST-sized images takes it. The test part is
    fixed: 50 scans of each digit chosen with seed 0 (500 images); the other 1,297 are the training split.

    Args:
        split: "train" (1,297 images) or "test" (500).

    Returns:
        An `ImageTensorDataset` of uint8 images (N, 1, 28, 28), classes "0".."9".

    Raises:
        ValueError: an unknown split.

    Example:
        >>> train, test = load_digits("train"), load_digits("test")
        >>> len(train), len(test), train.image_shape, train.classes[:3]
        (1297, 500, torch.Size([1, 28, 28]), ['0', '1', '2'])
    """
    import torch
    import torch.nn.functional as F
    from sklearn.datasets import load_digits as sklearn_digits

    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    bunch = sklearn_digits()
    scans = torch.as_tensor(bunch.images, dtype=torch.float32).unsqueeze(1) * (255 / 16)
    images = F.interpolate(scans, size=(28, 28), mode="bilinear", align_corners=False, antialias=True)
    images = images.round().clamp(0, 255).to(torch.uint8)
    labels = torch.as_tensor(bunch.target, dtype=torch.long)
    generator = torch.Generator().manual_seed(0)
    test = torch.zeros(len(labels), dtype=torch.bool)
    for digit in range(10):
        members = (labels == digit).nonzero().flatten()
        test[members[torch.randperm(len(members), generator=generator)[:DIGITS_TEST_PER_CLASS]]] = True
    keep = test if split == "test" else ~test
    return ImageTensorDataset(images[keep], labels[keep], [str(d) for d in range(10)],
                              f"{DIGITS_NAME} (scikit-learn, {split})")
