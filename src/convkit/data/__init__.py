"""convkit.data: datasets in memory on the training device, batched on-device augmentation, downloads.

>>> from convkit.data import load_dataset, Augmenter, AugmentConfig
>>> train = load_dataset("default")                          # 6,000 Fashion-MNIST images shipped with convkit
>>> train
ImageTensorDataset(6000 images of (1, 28, 28), 10 classes, device cpu,
                   source 'fashion-mnist-small (built in, train)')
>>> test = load_dataset("cifar10", "test", download=True)    # official source, checksummed  # doctest: +SKIP
>>> photos = image_folder("photos")                          # photos/daisy/*.png, photos/rose/*.png
>>> pets = load_dataset("photos", image_size=(64, 64))       # one subfolder per class
>>> pets.images.shape, pets.classes
(torch.Size([6, 3, 64, 64]), ['daisy', 'rose'])
>>> test, what = load_eval_data("photos", classes=["daisy", "rose"])   # what a model is evaluated on
>>> what
'photos/ (whole folder)'
>>> augment = Augmenter(AugmentConfig(horizontal_flip=True, crop_padding=2))
>>> for images, labels in train.batches(128, seed=0, epoch=0):   # train.to("cuda"): batches on the GPU
...     x, labels_a, labels_b, lam = augment(images, labels)
>>> x.shape, x.dtype                                         # the last batch: 6000 = 46 * 128 + 112
(torch.Size([112, 1, 28, 28]), torch.float32)
"""

from __future__ import annotations

import difflib
import os
import warnings
from pathlib import Path

import torch

from convkit.data.augment import (
    AugmentConfig,
    Augmenter,
    affine_matrix,
    channel_shift,
    cutmix,
    mixed_cross_entropy,
    mixup,
    random_affine,
    random_crop,
    random_erasing,
    random_flip,
    warp,
)
from convkit.data.cifar import find_layout, load_cifar, safe_unpickle
from convkit.data.default import DEFAULT_NAME, DIGITS_NAME, load_default, load_digits
from convkit.data.download import download, extract_tar, file_digest
from convkit.data.errors import DataFormatError, DatasetNotFoundError, DownloadError, LabelError
from convkit.data.folder import (
    MAX_IMAGE_PIXELS,
    MAX_LABEL_NUMBER,
    MEMORY_BUDGET,
    ImageFileDataset,
    ImageSurvey,
    StreamBatches,
    check_image_file,
    decode_image,
    decode_image_bytes,
    load_files,
    open_image,
    parse_classes,
    read_class_list,
    read_csv,
    read_header,
    report_skipped,
    scan_folder,
    survey_images,
)
from convkit.data.idx import find_idx_pair, load_idx_pair, read_idx, write_idx
from convkit.data.named import ALIASES, REGISTRY, NamedDataset, load_named, resolve_name
from convkit.data.tensor import EpochBatches, ImageTensorDataset, check_labels

_TEST_FOLDERS = ("test", "val", "validation")


def list_datasets() -> list[str]:
    """The names `load_dataset` knows: the built-in subset and the downloadable datasets.

    Example:
        >>> list_datasets()
        ['default', 'digits', 'mnist', 'fashion-mnist', 'cifar10', 'cifar100']
    """
    return ["default", DIGITS_NAME, *REGISTRY]


def _whole_collection(path: Path, split: str) -> None:
    # A CSV or a folder without train/test subfolders is one collection: returning it as the test split too
    # would silently evaluate on the training data.
    if split != "train":
        raise DatasetNotFoundError(f"{path}: holds one collection, no separate {split!r} split; load it as "
                                   "split='train' and hold out part of it (ImageTensorDataset.split), or give a "
                                   "folder with train/ and test/ subfolders")


def _load_idx_file(path: Path, split: str) -> ImageTensorDataset:
    _whole_collection(path, split)
    labels_path = path.with_name(path.name.replace("images", "labels").replace("idx3", "idx1"))
    if labels_path == path or not labels_path.is_file():
        raise DatasetNotFoundError(f"{path}: no labels file beside it (expected {labels_path.name})")
    images, labels = load_idx_pair(path, labels_path)
    return _idx_dataset(images, labels, labels_path, path.parent)


def _idx_dataset(images, labels, labels_path: Path, folder: Path) -> ImageTensorDataset:
    spec = resolve_name(folder.name)  # a folder named like a known dataset gets its class names
    classes = list(spec.classes) if spec and spec.kind == "idx" else [str(i) for i in range(int(labels.max()) + 1)]
    check_labels(labels, len(classes), str(labels_path))
    return ImageTensorDataset(images, labels, classes, str(folder))


def _split_folder(path: Path, split: str) -> Path | None:
    """The subfolder for `split` (train/; test/, val/ or validation/), or None if the folder has none of them.

    Raises:
        DatasetNotFoundError: the folder has split subfolders, but not the one asked for.
    """
    splits = {s: path / s for s in ("train", *_TEST_FOLDERS) if (path / s).is_dir()}
    if not splits:
        return None
    names = ("train",) if split == "train" else _TEST_FOLDERS
    folder = next((splits[s] for s in names if s in splits), None)
    if folder is None:
        raise DatasetNotFoundError(f"{path}: no {'/ or '.join(names)}/ subfolder for the {split!r} split")
    return folder


def _load_folder(path: Path, split: str, **options) -> ImageTensorDataset | ImageFileDataset:
    folder = _split_folder(path, split)
    if folder is None:
        _whole_collection(path, split)
        folder = path
    samples, classes, empty = scan_folder(folder)
    if empty:
        warnings.warn(f"{folder}: class folder(s) without images: {', '.join(empty)} (their label numbers are "
                      "kept; the model will never see an example of them)", stacklevel=3)
    return load_files(samples, classes, str(folder), **options)


def load_dataset(name_or_path: str | os.PathLike, split: str = "train", data_dir: str | os.PathLike | None = None,
                 download: bool = False, *, channels: int | None = None, image_size: tuple[int, int] | None = None,
                 classes: list[str] | str | None = None, memory_budget: int = MEMORY_BUDGET,
                 progress: bool = True) -> ImageTensorDataset | ImageFileDataset:
    """Loads a dataset by name or path: in memory as uint8 (N, C, H, W), or streaming if too large.

    Accepted: "default" (the built-in Fashion-MNIST subset); "digits" (scikit-learn's real scans, 28x28); "mnist", "fashion-mnist", "cifar10", "cifar100"
    (searched in data_dir, $CONVKIT_DATA, ~/.cache/convkit/data, /usr/share/datasets; downloaded with
    `download=True`); a folder of IDX files; a CIFAR batches folder; an IDX images file (labels beside it);
    a folder with one subfolder of images per class (optionally under train/ and test/); a CSV of path,label.

    Args:
        name_or_path: a dataset name or a path.
        split: "train" or "test".
        data_dir: where named datasets are looked for first and downloaded to.
        download: download a named dataset that is not found.
        channels: for image files: 1, 3 or 4 (None: the majority's, from the files' headers).
        image_size: for image files: (height, width) to resize to (None: all must share one size).
        classes: class names in label order (a list, "cat,dog", or a file of one name a line): a CSV's labels
            must be among them (without them, a `classes.txt` beside the CSV is read if there is one); other
            data is matched to them by class name (see `match_classes`). None: the data's own classes.
        memory_budget: image files whose uint8 tensor would exceed this many bytes (default 2 GiB) are streamed
            instead (0: always stream folders and CSVs).
        progress: show download progress.

    Returns:
        An `ImageTensorDataset` (images, labels, classes, source), or an `ImageFileDataset` beyond the budget.

    Raises:
        DatasetNotFoundError: no such dataset or path, or no such split; for named datasets the message
            says where to get the files and where to put them.
        DataFormatError: a damaged or unexpected file, named.
        LabelError: a label outside the class range, or not among `classes`, naming the file.

    Example:
        >>> train = load_dataset("fashion-mnist", "train", data_dir="data", download=True)  # doctest: +SKIP
        >>> train.images.shape, train.classes[0]                                           # doctest: +SKIP
        (torch.Size([60000, 1, 28, 28]), 'T-shirt/top')
        >>> flowers = load_dataset(image_folder("flowers"), channels=1)   # one subfolder of PNGs per class
        >>> flowers.images.shape, flowers.classes
        (torch.Size([6, 1, 24, 32]), ['daisy', 'rose'])
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    classes = parse_classes(classes)
    dataset = _load(name_or_path, split, data_dir, download, progress, classes,
                    {"channels": channels, "image_size": image_size, "memory_budget": memory_budget})
    return dataset if classes is None else match_classes(dataset, classes)


def _load(name_or_path, split, data_dir, download, progress, classes, options):
    if isinstance(name_or_path, str) and name_or_path.lower() in ("default", DEFAULT_NAME):
        return load_default(split)
    if isinstance(name_or_path, str) and name_or_path.lower() == DIGITS_NAME:
        return load_digits(split)
    spec = resolve_name(name_or_path) if isinstance(name_or_path, str) else None
    if spec is not None:
        return load_named(spec, split, data_dir, download, progress)
    path = Path(name_or_path).expanduser()
    if not path.exists():
        close = difflib.get_close_matches(str(name_or_path).lower(), [*list_datasets(), *ALIASES], n=1)
        hint = f" Did you mean: {close[0]}?" if close else ""
        raise DatasetNotFoundError(f"{path}: no such file or folder, and not a dataset name "
                                   f"(known: {', '.join(list_datasets())}).{hint}")
    if path.is_file() and path.suffix.lower() == ".csv":
        _whole_collection(path, split)
        samples, names, rows = read_csv(path, classes)
        return load_files(samples, names, str(path), sample_sources=rows, **options)
    if path.is_file():
        return _load_idx_file(path, split)
    pair = find_idx_pair(path, split)
    if pair:
        images, labels = load_idx_pair(*pair)
        return _idx_dataset(images, labels, pair[1], path)
    if find_layout(path):
        images, labels, names, files = load_cifar(path, split)
        return ImageTensorDataset(images, labels, names, str(files[0].parent))
    return _load_folder(path, split, **options)


def match_classes(dataset: ImageTensorDataset | ImageFileDataset,
                  classes: list[str]) -> ImageTensorDataset | ImageFileDataset:
    """Renumbers a dataset's labels to a model's classes by name (the data may hold any subset, in any order).

    Labels are matched by class name, not by position: a folder holding only `Bag/` and `Sneaker/` gets the
    model's numbers for those two. Data whose classes are plain label numbers ("0", "1", ...: a CSV of
    numbers, IDX files of an unnamed dataset) keep their numbers when those are not the model's class names.

    Args:
        dataset: an `ImageTensorDataset` or `ImageFileDataset`.
        classes: the model's class names, in its label order.

    Returns:
        The dataset itself if its classes already are `classes`, else a copy (sharing the images or files)
        with labels in the model's numbering and `classes` as its class names.

    Raises:
        LabelError: a class of the data (one with samples) is not among `classes`, named; or a label number
            outside the model's range, naming the file.

    Example:
        >>> data = ImageTensorDataset(torch.zeros(2, 1, 4, 4, dtype=torch.uint8), torch.tensor([0, 1]),
        ...                           ["dog", "cat"], "toy")
        >>> match_classes(data, ["cat", "bird", "dog"]).labels.tolist()
        [2, 0]
    """
    classes = list(classes)
    if list(dataset.classes) == classes:
        dataset.check_labels(len(classes))
        return dataset
    dataset.check_labels()  # in its own range first
    index = {name: i for i, name in enumerate(classes)}
    used = sorted(set(dataset.labels.tolist()))
    unknown = [dataset.classes[i] for i in used if dataset.classes[i] not in index]
    if not unknown:
        mapping = torch.tensor([index.get(name, -1) for name in dataset.classes], dtype=torch.long)
        labels = mapping[dataset.labels.long().cpu()]
    elif list(dataset.classes) == [str(i) for i in range(len(dataset.classes))]:
        labels = dataset.labels.long().cpu()  # label numbers, not names: the model's numbering
        check_labels(labels, len(classes), dataset.sample_sources or dataset.source)
    else:
        raise LabelError(f"{dataset.source}: class {unknown[0]!r} is not one of the model's {len(classes)} "
                         f"classes ({', '.join(classes)}); classes are matched by name (folder names or CSV "
                         "labels)"
                         + (f"; {len(unknown) - 1} more unknown" if len(unknown) > 1 else ""))
    if isinstance(dataset, ImageFileDataset):
        samples = [(path, int(y)) for (path, _), y in zip(dataset.samples, labels.tolist())]
        return dataset._view(samples=samples, labels=labels, classes=classes)
    return ImageTensorDataset(dataset.images, labels.to(dataset.images.device), classes, dataset.source,
                              dataset.sample_sources)


def load_eval_data(name_or_path: str | os.PathLike, split: str = "test",
                   data_dir: str | os.PathLike | None = None, *, classes: list[str] | None = None,
                   download: bool = False, progress: bool = False,
                   **options) -> tuple[ImageTensorDataset | ImageFileDataset, str]:
    """The data a model is evaluated on: a named dataset's split, a folder's test/ subfolder, else all of it.

    A folder (one subfolder per class) or a CSV given for evaluation is evaluated whole; a folder with
    train/ and test/ (or val/) subfolders is evaluated on test/ (`split="train"`: on train/). Named datasets
    ("fashion-mnist", "cifar10", "default"...), IDX and CIFAR folders use their `split`. Unlike
    `load_dataset`, which refuses the test split of a single collection (training would test on its own
    data), this reads such a collection as the evaluation set it was given as.

    Args:
        name_or_path: a dataset name or a path, as `load_dataset` takes.
        split: "test" (default) or "train"; ignored for a folder without split subfolders or a file.
        data_dir: where named datasets are looked for.
        classes: the model's class names: labels are renumbered to them by name (see `match_classes`), so a
            folder may hold any subset of the classes; None keeps the data's own numbering.
        download: download a named dataset that is not found.
        progress: show download progress.
        **options: channels, image_size, memory_budget, as `load_dataset` takes.

    Returns:
        (the dataset, a description of what was loaded: "photos/ (whole folder)", "photos/test",
        "labels.csv (whole file)", "fashion-mnist (test split)").

    Raises:
        DatasetNotFoundError: no such dataset or path, or a folder with split subfolders lacks the one
            asked for.
        DataFormatError: a damaged or unexpected file, named.
        LabelError: a class not among `classes`, or a label out of range, naming the file.

    Example:
        >>> test, what = load_eval_data("default")
        >>> what, len(test)
        ('default (test split)', 1000)
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    path = Path(name_or_path).expanduser()
    named = isinstance(name_or_path, str) and (name_or_path.lower() in ("default", DEFAULT_NAME, DIGITS_NAME)
                                               or resolve_name(name_or_path) is not None)
    if named or not path.exists():  # a name, or a missing path: load_dataset says which
        dataset = load_dataset(name_or_path, split, data_dir, download, progress=progress, **options)
        what = f"{name_or_path} ({split} split)"
    elif path.is_file():  # a CSV or an IDX images file: one collection, all of it
        dataset, what = load_dataset(path, "train", **options), f"{path} (whole file)"
    elif find_idx_pair(path, "train") or find_idx_pair(path, "test") or find_layout(path):
        dataset, what = load_dataset(path, split, **options), f"{path} ({split} split)"
    else:
        folder = _split_folder(path, split)
        dataset = load_dataset(folder or path, "train", **options)
        what = str(folder) if folder is not None else f"{path}/ (whole folder)"
    return (dataset if classes is None else match_classes(dataset, classes)), what


__all__ = [
    "AugmentConfig", "Augmenter", "DataFormatError", "DatasetNotFoundError", "DownloadError", "EpochBatches",
    "ImageFileDataset", "ImageSurvey", "ImageTensorDataset", "LabelError", "MAX_IMAGE_PIXELS", "MAX_LABEL_NUMBER",
    "MEMORY_BUDGET", "NamedDataset", "REGISTRY", "StreamBatches", "affine_matrix",
    "channel_shift", "check_image_file", "check_labels", "cutmix", "decode_image", "decode_image_bytes", "download", "extract_tar", "file_digest",
    "find_idx_pair", "find_layout", "list_datasets", "load_cifar", "load_dataset", "load_default", "load_digits", "load_files",
    "load_eval_data", "load_idx_pair", "load_named", "match_classes", "mixed_cross_entropy", "mixup",
    "open_image", "parse_classes", "random_affine", "random_crop", "random_erasing", "random_flip",
    "read_class_list", "read_csv", "read_header", "read_idx", "report_skipped", "resolve_name",
    "safe_unpickle", "scan_folder", "survey_images", "warp", "write_idx",
]
