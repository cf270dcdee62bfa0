"""CIFAR-10 and CIFAR-100 "python version" batches (https://www.cs.toronto.edu/~kriz/cifar.html).

The batches are pickles, and unpickling can run any code the file names, so they are read with an unpickler
that resolves only the few numpy and codec globals those files need and refuses everything else.
"""

from __future__ import annotations

import importlib
import os
import pickle
from pathlib import Path

import numpy as np
import torch

from convkit.data.errors import DataFormatError
from convkit.data.tensor import check_labels

# The globals found in CIFAR's batches (Python 2 pickles of numpy arrays) and in the same data pickled by
# Python 3 with numpy 1.x or 2.x: array reconstruction, dtypes, and `_codecs.encode` for bytes in protocol 2.
_NUMPY_GLOBALS = {
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
}
_ALLOWED = _NUMPY_GLOBALS | {("_codecs", "encode")}

# The layouts of the two datasets: folder name, batch files per split, the labels key, the meta file and key.
LAYOUTS = {
    "cifar10": {"folder": "cifar-10-batches-py", "train": [f"data_batch_{i}" for i in range(1, 6)],
                "test": ["test_batch"], "labels": "labels", "meta": "batches.meta", "names": "label_names"},
    "cifar100": {"folder": "cifar-100-python", "train": ["train"], "test": ["test"], "labels": "fine_labels",
                 "meta": "meta", "names": "fine_label_names"},
}


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, path: Path):
        super().__init__(file, encoding="latin1")  # latin1: Python 2's str holds bytes, as numpy recommends
        self.path = path

    def find_class(self, module: str, name: str):
        if (module, name) not in _ALLOWED:
            raise DataFormatError(
                f"{self.path}: refused to unpickle global {module}.{name}: a CIFAR batch needs only numpy arrays "
                f"(allowed: {', '.join(sorted(f'{m}.{n}' for m, n in _ALLOWED))}); the file is not a CIFAR "
                "batch and may be malicious")
        if module.startswith("numpy"):
            # numpy 2 moved numpy.core to numpy._core; resolve either spelling to what this numpy has.
            for candidate in (module.replace("numpy.core", "numpy._core"), module.replace("numpy._core", "numpy.core")):
                try:
                    return getattr(importlib.import_module(candidate), name)
                except (ImportError, AttributeError):
                    continue
        return super().find_class(module, name)


def safe_unpickle(path: str | os.PathLike) -> object:
    """Unpickles a CIFAR batch, allowing only the numpy and codec globals such files contain.

    Args:
        path: the pickle file.

    Returns:
        The unpickled object (a dict for CIFAR's batches).

    Raises:
        DataFormatError: the file names any other global (e.g. `os.system`), or is not a valid pickle; nothing
            from the file is executed.

    Example:
        >>> import os, pickle
        >>> from pathlib import Path
        >>> batch = {"data": np.zeros((2, 3072), np.uint8), "labels": [3, 5]}
        >>> _ = Path("batch").write_bytes(pickle.dumps(batch))
        >>> safe_unpickle("batch")["labels"]
        [3, 5]
        >>> _ = Path("evil").write_bytes(pickle.dumps(os.system))     # a pickle that would call a function
        >>> safe_unpickle("evil")
        Traceback (most recent call last):
            ...
        convkit.data.errors.DataFormatError: evil: refused to unpickle global ...system: ...
    """
    path = Path(path)
    with open(path, "rb") as f:
        try:
            return _RestrictedUnpickler(f, path).load()
        except DataFormatError:
            raise
        except Exception as err:  # a truncated or garbled pickle raises anything from EOFError to KeyError
            raise DataFormatError(f"{path}: not a readable CIFAR pickle ({type(err).__name__}: {err})") from err


def _text_keys(obj: object, path: Path) -> dict:
    if not isinstance(obj, dict):
        raise DataFormatError(f"{path}: expected a pickled dict, found {type(obj).__name__}")
    # Python 3 pickles (and encoding="bytes") give bytes keys; Python 2's give str under latin1.
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}


def find_layout(directory: str | os.PathLike) -> tuple[str, Path] | None:
    """Which CIFAR a folder holds: the folder itself or its `cifar-10-batches-py`/`cifar-100-python` subfolder.

    Args:
        directory: a folder.

    Returns:
        ("cifar10" or "cifar100", the folder holding the batches), or None.

    Example:
        >>> import pickle
        >>> from pathlib import Path
        >>> batches = Path("cifar10/cifar-10-batches-py")
        >>> batches.mkdir(parents=True)
        >>> find_layout("cifar10") is None
        True
        >>> for name in ("batches.meta", "test_batch"):
        ...     _ = (batches / name).write_bytes(pickle.dumps({}))
        >>> find_layout("cifar10")
        ('cifar10', PosixPath('cifar10/cifar-10-batches-py'))
    """
    directory = Path(directory).expanduser()
    for name, layout in LAYOUTS.items():
        for folder in (directory, directory / layout["folder"]):
            if (folder / layout["meta"]).is_file() and (folder / layout["test"][0]).is_file():
                return name, folder
    return None


def load_cifar(directory: str | os.PathLike, split: str = "train",
               kind: str | None = None) -> tuple[torch.Tensor, torch.Tensor, list[str], list[Path]]:
    """Reads CIFAR-10 or CIFAR-100 python batches into a uint8 tensor.

    Args:
        directory: the extracted `cifar-10-batches-py` or `cifar-100-python` folder (or its parent).
        split: "train" or "test".
        kind: "cifar10" or "cifar100"; recognised from the files when None.

    Returns:
        (images uint8 (N, 3, 32, 32), labels int64 (N,), class names, the batch files read).

    Raises:
        FileNotFoundError: a batch or the meta file is missing (the message lists them).
        DataFormatError: a batch of the wrong shape, type or label count, or a refused pickle.
        LabelError: a label outside the class range, naming the batch.

    Example:
        >>> import pickle
        >>> from pathlib import Path
        >>> batches = Path("cifar10/cifar-10-batches-py")               # a CIFAR-10 of 4 test images
        >>> batches.mkdir(parents=True)
        >>> names = "airplane automobile bird cat deer dog frog horse ship truck".split()
        >>> _ = (batches / "batches.meta").write_bytes(pickle.dumps({"label_names": names}))
        >>> test = {"data": np.zeros((4, 3072), np.uint8), "labels": [3, 8, 8, 0]}
        >>> _ = (batches / "test_batch").write_bytes(pickle.dumps(test))
        >>> images, labels, classes, files = load_cifar("cifar10", "test")
        >>> images.shape, labels, classes[3], [f.name for f in files]
        (torch.Size([4, 3, 32, 32]), tensor([3, 8, 8, 0]), 'cat', ['test_batch'])
    """
    directory = Path(directory).expanduser()
    found = find_layout(directory)
    if kind is None and found is None:
        raise FileNotFoundError(f"{directory}: no CIFAR batches: expected batches.meta, data_batch_1..5 and "
                                "test_batch (CIFAR-10) or meta, train and test (CIFAR-100)")
    kind, folder = found if found else (kind, directory)
    layout = LAYOUTS[kind]
    files = [folder / name for name in layout[split]]
    missing = [f.name for f in files + [folder / layout["meta"]] if not f.is_file()]
    if missing:
        raise FileNotFoundError(f"{folder}: missing CIFAR file(s) {', '.join(missing)}")
    meta = _text_keys(safe_unpickle(folder / layout["meta"]), folder / layout["meta"])
    classes = [n.decode() if isinstance(n, bytes) else str(n) for n in meta.get(layout["names"], [])]
    if not classes:
        raise DataFormatError(f"{folder / layout['meta']}: no {layout['names']!r} list of class names")
    images, labels = [], []
    for path in files:
        batch = _text_keys(safe_unpickle(path), path)
        data, y = batch.get("data"), batch.get(layout["labels"])
        if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
            raise DataFormatError(f"{path}: expected 'data' as a uint8 array of shape (N, 3072), found "
                                  f"{getattr(data, 'dtype', type(data).__name__)} {getattr(data, 'shape', '')}")
        if y is None or len(y) != len(data):
            raise DataFormatError(f"{path}: expected {len(data)} {layout['labels']!r}, found "
                                  f"{'none' if y is None else len(y)}")
        y = torch.as_tensor(np.asarray(y, dtype=np.int64))
        check_labels(y, len(classes), str(path))
        images.append(torch.from_numpy(data.reshape(-1, 3, 32, 32).copy()))  # rows are R, G, B planes of 32x32
        labels.append(y)
    return torch.cat(images), torch.cat(labels), classes, files
