"""Named datasets (mnist, fashion-mnist, cifar10, cifar100): where they are looked for and how they are fetched.

Search order: an explicit `data_dir`, `$CONVKIT_DATA`, `~/.cache/convkit/data`, then the system folder
`/usr/share/datasets` (Debian's `dataset-fashion-mnist` package installs there), each as `<root>/<name>`;
torchvision's layouts (`<root>/FashionMNIST/raw`, `<root>/cifar-10-batches-py`) are recognised too.
Files found on disk are validated by their format, not by checksum: repackaged copies (Debian's) are
gzipped differently from the official downloads. Downloads are verified against the published checksums.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from convkit.data.cifar import LAYOUTS, find_layout, load_cifar
from convkit.data.download import download, extract_tar
from convkit.data.errors import DatasetNotFoundError, DownloadError
from convkit.data.idx import find_idx_pair, load_idx_pair
from convkit.data.tensor import ImageTensorDataset, check_labels

SYSTEM_ROOTS = (Path("/usr/share/datasets"),)


@dataclass(frozen=True)
class NamedDataset:
    """Where a named dataset comes from.

    Args:
        name: the registry name, also the folder name under each search root.
        kind: "idx", "cifar10" or "cifar100" (the file layout).
        classes: class names in label order.
        mirrors: base URLs tried in turn; each file's URL is mirror + file name.
        files: per split, (file name, md5) of the files to download (for CIFAR, the archive, under both splits).
        homepage: where the dataset is described, for the how-to-get-it message.
        torchvision_folder: the folder torchvision keeps it in under a root (e.g. "FashionMNIST/raw").

    Example:
        >>> toy = NamedDataset("toy", "idx", ("a", "b"), ("http://127.0.0.1:8000/",),
        ...                    {"train": (("x.gz", "9dd4e461268c8034f5c8564e155c67a6"),)})
        >>> toy.name, toy.classes
        ('toy', ('a', 'b'))
    """

    name: str
    kind: str
    classes: tuple[str, ...]
    mirrors: tuple[str, ...]
    files: dict = field(default_factory=dict)
    homepage: str = ""
    torchvision_folder: str = ""


def _idx_files(prefix: str, md5s: tuple[str, str]) -> tuple[tuple[str, str], ...]:
    return ((f"{prefix}-images-idx3-ubyte.gz", md5s[0]), (f"{prefix}-labels-idx1-ubyte.gz", md5s[1]))


_FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                    "Ankle boot")
_CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")

# URLs and md5 checksums of the official files, as published in torchvision 0.29's
# torchvision/datasets/mnist.py (MNIST.mirrors/resources, FashionMNIST.mirrors/resources) and
# torchvision/datasets/cifar.py (CIFAR10/CIFAR100 url and tgz_md5).
REGISTRY: dict[str, NamedDataset] = {
    "mnist": NamedDataset(
        "mnist", "idx", tuple(str(i) for i in range(10)),
        ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"),
        {"train": _idx_files("train", ("f68b3c2dcbeaaa9fbdd348bbdeb94873", "d53e105ee54ea40749a09fcbcd1e9432")),
         "test": _idx_files("t10k", ("9fb629c4189551a2d022fa330f9573f3", "ec29112dd5afa0611ce80d1b7f02629c"))},
        "http://yann.lecun.com/exdb/mnist/", "MNIST/raw"),
    "fashion-mnist": NamedDataset(
        "fashion-mnist", "idx", _FASHION_CLASSES,
        ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        {"train": _idx_files("train", ("8d4fb7e6c68d591d4c3dfef9ec88bf0d", "25c81989df183df01b3e8a0aad5dffbe")),
         "test": _idx_files("t10k", ("bef4ecab320f06d8554ea6380940ec79", "bb300cfdad3c16e7a12a480ee83cd310"))},
        "https://github.com/zalandoresearch/fashion-mnist", "FashionMNIST/raw"),
    "cifar10": NamedDataset(
        "cifar10", "cifar10", _CIFAR10_CLASSES, ("https://www.cs.toronto.edu/~kriz/",),
        {s: (("cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a"),) for s in ("train", "test")},
        "https://www.cs.toronto.edu/~kriz/cifar.html", LAYOUTS["cifar10"]["folder"]),
    "cifar100": NamedDataset(
        "cifar100", "cifar100", (), ("https://www.cs.toronto.edu/~kriz/",),  # 100 names, read from `meta`
        {s: (("cifar-100-python.tar.gz", "eb9058c3a382ffc7106e4002c42a8d85"),) for s in ("train", "test")},
        "https://www.cs.toronto.edu/~kriz/cifar.html", LAYOUTS["cifar100"]["folder"]),
}
ALIASES = {"fashion_mnist": "fashion-mnist", "fashionmnist": "fashion-mnist", "cifar-10": "cifar10",
           "cifar-100": "cifar100", "cifar_10": "cifar10", "cifar_100": "cifar100"}


def resolve_name(name: str) -> NamedDataset | None:
    """The registry entry for a name (case-insensitive, common spellings accepted), or None.

    Example:
        >>> resolve_name("Fashion_MNIST").name
        'fashion-mnist'
        >>> resolve_name("imagenet") is None
        True
    """
    key = name.lower()
    return REGISTRY.get(ALIASES.get(key, key))


def search_roots(data_dir: str | os.PathLike | None = None) -> list[Path]:
    """The folders searched for `<root>/<name>`, in order: data_dir, $CONVKIT_DATA, ~/.cache/convkit/data, /usr/share/datasets.

    Example:
        >>> search_roots("data")
        [PosixPath('data'), ...PosixPath('/.../.cache/convkit/data'), PosixPath('/usr/share/datasets')]
    """
    roots = [Path(data_dir).expanduser()] if data_dir else []
    if os.environ.get("CONVKIT_DATA"):
        roots.append(Path(os.environ["CONVKIT_DATA"]).expanduser())
    roots.append(Path.home() / ".cache" / "convkit" / "data")
    return roots + list(SYSTEM_ROOTS)


def _candidates(spec: NamedDataset, roots: list[Path]) -> list[Path]:
    dirs = []
    for root in roots:
        dirs.append(root / spec.name)
        if spec.torchvision_folder:
            dirs.append(root / spec.torchvision_folder)
    return dirs


def _present(spec: NamedDataset, folder: Path, split: str) -> bool:
    if spec.kind == "idx":
        return find_idx_pair(folder, split) is not None
    found = find_layout(folder)
    return found is not None and found[0] == spec.kind


def _how_to_get(spec: NamedDataset, split: str, looked: list[Path], target: Path, reason: str = "") -> str:
    urls = "\n".join(f"  {spec.mirrors[0]}{f}  (md5 {md5})" for f, md5 in spec.files[split])
    put = (f"and extract it into {target} (giving {target / LAYOUTS[spec.kind]['folder']})" if spec.kind != "idx"
           else f"and put the files (gzipped or not) into {target}")
    return (f"dataset {spec.name!r} ({split} split) not found{': ' + reason if reason else ''}.\n"
            f"Looked in:\n" + "\n".join(f"  {d}" for d in looked) + "\n"
            f"To get it, load it with download=True, or download\n{urls}\n{put}.\n"
            f"About the dataset: {spec.homepage}")


def fetch(spec: NamedDataset, split: str, target: Path, progress: bool = True) -> Path:
    """Downloads a named dataset's files for a split into `target`, verifying each file's md5.

    Args:
        spec: the registry entry.
        split: "train" or "test".
        target: the dataset's folder, e.g. `~/.cache/convkit/data/fashion-mnist`.
        progress: show progress bars.

    Returns:
        `target`.

    Raises:
        DownloadError: every mirror failed for some file (the errors are listed).

    Example:
        >>> fetch(REGISTRY["mnist"], "test", Path("data/mnist"))   # from the internet  # doctest: +SKIP
        PosixPath('data/mnist')
        >>> from convkit.data.download import file_digest               # the same from a local mirror:
        >>> Path("mirror").mkdir()
        >>> _ = Path("mirror/x.gz").write_bytes(b"x")
        >>> local = NamedDataset("toy", "idx", ("a", "b"), (Path("mirror").resolve().as_uri() + "/",),
        ...                      {"test": (("x.gz", file_digest("mirror/x.gz", "md5")),)})
        >>> fetch(local, "test", Path("data/toy"), progress=False)
        PosixPath('data/toy')
        >>> sorted(p.name for p in Path("data/toy").iterdir())
        ['x.gz']
    """
    for filename, md5 in spec.files[split]:
        errors = []
        for mirror in spec.mirrors:
            try:
                path = download(mirror + filename, target / filename, md5=md5, progress=progress)
                break
            except DownloadError as err:
                errors.append(str(err))
        else:
            raise DownloadError("; ".join(errors))
        if spec.kind != "idx":
            extract_tar(path, target)
            path.unlink()  # the extracted batches are what is read; the archive would double the disk used
    return target


def load_named(name: str | NamedDataset, split: str = "train", data_dir: str | os.PathLike | None = None,
               download: bool = False, progress: bool = True) -> ImageTensorDataset:
    """Loads a named dataset from disk, downloading it first if asked and absent.

    Args:
        name: "mnist", "fashion-mnist", "cifar10", "cifar100" (or a `NamedDataset`).
        split: "train" or "test".
        data_dir: a folder searched first (as `<data_dir>/<name>`) and downloaded into.
        download: fetch the files from the official source when they are not found.
        progress: show download progress.

    Returns:
        An `ImageTensorDataset` on the CPU.

    Raises:
        DatasetNotFoundError: not found (and not downloaded, or the download failed); the message lists
            where it looked, the URLs and checksums, and where to put the files.
        DataFormatError, LabelError: a damaged file, named.

    Example:
        >>> test = load_named("fashion-mnist", "test", data_dir="data", download=True)   # doctest: +SKIP
        >>> test.images.shape                                                           # doctest: +SKIP
        torch.Size([10000, 1, 28, 28])
    """
    spec = name if isinstance(name, NamedDataset) else resolve_name(name)
    if spec is None:
        raise KeyError(f"unknown dataset {name!r}; known: {', '.join(REGISTRY)}")
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    roots = search_roots(data_dir)
    looked = _candidates(spec, roots)
    folder = next((d for d in looked if _present(spec, d, split)), None)
    if folder is None:
        target = roots[0] / spec.name  # data_dir, else $CONVKIT_DATA, else the user's cache
        if not download:
            raise DatasetNotFoundError(_how_to_get(spec, split, looked, target))
        try:
            folder = fetch(spec, split, target, progress)
        except DownloadError as err:
            raise DatasetNotFoundError(_how_to_get(spec, split, looked, target, f"download failed: {err}")) from err
    if spec.kind == "idx":
        images_path, labels_path = find_idx_pair(folder, split)
        images, labels = load_idx_pair(images_path, labels_path)
        check_labels(labels, len(spec.classes), str(labels_path))
        return ImageTensorDataset(images, labels, spec.classes, str(images_path.parent))
    images, labels, classes, files = load_cifar(folder, split, spec.kind)
    return ImageTensorDataset(images, labels, classes, str(files[0].parent))
