"""IDX files, the format of MNIST and Fashion-MNIST (http://yann.lecun.com/exdb/mnist/), gzipped or not.

An IDX file is a 4-byte magic number (two zero bytes, a type code, the number of dimensions), one big-endian
int32 per dimension, then the values in C order, big-endian.
"""

from __future__ import annotations

import gzip
import math
import os
import tempfile
import zlib
from pathlib import Path

import numpy as np
import torch

from convkit.data.errors import DataFormatError

# Type code -> big-endian numpy dtype, from the format's description on LeCun's MNIST page.
IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_GZIP_MAGIC = b"\x1f\x8b"


def _read_bytes(path: Path) -> bytes:
    """Whole file, decompressed when it starts with gzip's magic bytes (the name's suffix may lie)."""
    raw = path.read_bytes()
    if not raw.startswith(_GZIP_MAGIC):
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as err:
        raise DataFormatError(f"{path}: corrupt or truncated gzip data ({err})") from err


def read_idx(path: str | os.PathLike) -> torch.Tensor:
    """Reads an IDX file (gzipped or not) into a tensor, checking its header against its length.

    Args:
        path: the file, e.g. `train-images-idx3-ubyte.gz`.

    Returns:
        A tensor of the file's shape and type (uint8 for MNIST's images and labels).

    Raises:
        FileNotFoundError: the file does not exist.
        DataFormatError: wrong magic number, unknown type code, or a length that does not match the header
            (truncated or trailing bytes); the message names the file.

    Example:
        >>> _ = write_idx("t10k-images-idx3-ubyte.gz", torch.zeros(5, 28, 28, dtype=torch.uint8))
        >>> images = read_idx("t10k-images-idx3-ubyte.gz")
        >>> images.dtype, images.shape
        (torch.uint8, torch.Size([5, 28, 28]))
    """
    path = Path(path)
    data = _read_bytes(path)
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in IDX_TYPES:
        raise DataFormatError(
            f"{path}: not an IDX file: magic number {data[:4].hex() or 'missing'}, expected 0x0000TTDD "
            f"with type TT in {{08, 09, 0b, 0c, 0d, 0e}} and DD dimensions (e.g. 0x00000803 for images)")
    dtype, ndim = np.dtype(IDX_TYPES[data[2]]), data[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(data) < header:
        raise DataFormatError(f"{path}: truncated IDX header: {ndim} dimensions need {header} bytes, found {len(data)}")
    shape = tuple(int(d) for d in np.frombuffer(data, ">u4", count=ndim, offset=4))
    expected = math.prod(shape) * dtype.itemsize
    found = len(data) - header
    if found != expected:
        what = "truncated" if found < expected else "has trailing bytes"
        raise DataFormatError(f"{path}: IDX file {what}: shape {shape} of {dtype.name} needs {expected} bytes "
                              f"of data after the header, found {found}")
    array = np.frombuffer(data, dtype, offset=header).reshape(shape)
    return torch.from_numpy(array.astype(dtype.newbyteorder("="), copy=True))


def write_idx(path: str | os.PathLike, tensor: torch.Tensor) -> Path:
    """Writes a tensor as an IDX file, gzipped when the name ends in `.gz`; atomic (temp file, then rename).

    Args:
        path: where to write, e.g. `train-images-idx3-ubyte.gz`.
        tensor: uint8, int8, int16, int32, float32 or float64 values, at least one dimension.

    Returns:
        The path written.

    Raises:
        ValueError: a dtype the IDX format cannot hold, or a 0-dimensional tensor.

    Example:
        >>> write_idx("labels-idx1-ubyte.gz", torch.tensor([3, 1, 4], dtype=torch.uint8))
        PosixPath('labels-idx1-ubyte.gz')
        >>> read_idx("labels-idx1-ubyte.gz")
        tensor([3, 1, 4], dtype=torch.uint8)
    """
    path = Path(path)
    array = tensor.detach().cpu().numpy()
    codes = {np.dtype(v).newbyteorder("=").name: k for k, v in IDX_TYPES.items()}
    if array.dtype.name not in codes or array.ndim == 0:
        raise ValueError(f"cannot write a {array.dtype.name} tensor of {array.ndim} dimensions as IDX; "
                         f"expected one of {sorted(codes)} with at least one dimension")
    code = codes[array.dtype.name]
    payload = (bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
               + array.astype(IDX_TYPES[code]).tobytes())
    if path.suffix == ".gz":
        payload = gzip.compress(payload, compresslevel=9, mtime=0)  # mtime 0: same bytes on every run
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
        os.chmod(tmp, 0o644)  # mkstemp makes files private; data files are for everyone to read
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def find_idx_pair(directory: str | os.PathLike, split: str) -> tuple[Path, Path] | None:
    """Finds the images and labels IDX files of a split in a folder, in MNIST's naming.

    Both `train-images-idx3-ubyte` and `train-images.idx3-ubyte` are accepted, gzipped or not; the test split
    is called `t10k` (MNIST's name) or `test`.

    Args:
        directory: the folder to look in.
        split: "train" or "test".

    Returns:
        (images path, labels path), or None when either is missing.

    Example:
        >>> Path("data").mkdir()
        >>> _ = write_idx("data/t10k-images-idx3-ubyte.gz", torch.zeros(2, 28, 28, dtype=torch.uint8))
        >>> _ = write_idx("data/t10k-labels-idx1-ubyte.gz", torch.tensor([7, 2], dtype=torch.uint8))
        >>> find_idx_pair("data", "test")
        (PosixPath('data/t10k-images-idx3-ubyte.gz'), PosixPath('data/t10k-labels-idx1-ubyte.gz'))
        >>> find_idx_pair("data", "train") is None
        True
    """
    directory = Path(directory)
    prefixes = ["train"] if split == "train" else ["t10k", "test"]
    found = []
    for kind, dims in (("images", 3), ("labels", 1)):
        names = [f"{p}-{kind}{sep}idx{dims}-ubyte{gz}" for p in prefixes for sep in "-." for gz in ("", ".gz")]
        hits = [directory / n for n in names if (directory / n).is_file()]
        if not hits:
            return None
        found.append(hits[0])
    return found[0], found[1]


def load_idx_pair(images_path: str | os.PathLike, labels_path: str | os.PathLike) -> tuple[torch.Tensor, torch.Tensor]:
    """Reads an images file and its labels file, checking that they belong together.

    Args:
        images_path: IDX file of uint8 images, shape (N, H, W).
        labels_path: IDX file of integer labels, shape (N,).

    Returns:
        (images uint8 of shape (N, 1, H, W), labels int64 of shape (N,)).

    Raises:
        DataFormatError: wrong shapes or types, or different counts; the message names the file.

    Example:
        >>> _ = write_idx("t10k-images-idx3-ubyte.gz", torch.zeros(2, 28, 28, dtype=torch.uint8))
        >>> _ = write_idx("t10k-labels-idx1-ubyte.gz", torch.tensor([7, 2], dtype=torch.uint8))
        >>> x, y = load_idx_pair("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
        >>> x.shape, y
        (torch.Size([2, 1, 28, 28]), tensor([7, 2]))
    """
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.dtype != torch.uint8 or images.dim() != 3:
        raise DataFormatError(f"{images_path}: expected uint8 images of shape (N, H, W), "
                              f"found {images.dtype} of shape {tuple(images.shape)}")
    if labels.dim() != 1 or labels.is_floating_point():
        raise DataFormatError(f"{labels_path}: expected integer labels of shape (N,), "
                              f"found {labels.dtype} of shape {tuple(labels.shape)}")
    if len(labels) != len(images):
        raise DataFormatError(f"{labels_path}: {len(labels)} labels for {len(images)} images in {images_path}")
    return images.unsqueeze(1), labels.long()
