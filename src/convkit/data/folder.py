"""Image files: a folder with one subfolder per class, or a CSV of `path,label` rows.

Decoding is PIL's (it reads every mode and the EXIF orientation). Every reader of image files (folders,
CSVs, and readers to come: boxes, masks, uploads) follows the same rules, each kept by one helper:

* `open_image` opens a file: regular files only (a FIFO, folder or device named `x.png` is refused without
  a read, so it cannot hang), and at most `MAX_IMAGE_PIXELS` pixels, checked on the header before any pixel
  is decoded. Its errors are `DataFormatError`s that name the file.
* `survey_images` reads the headers of a list of files (cheap: no pixels) and decides the channels (the
  majority's) and the size (the one all share) of the set; never the first file alone.
* A file that cannot be read (corrupt, truncated, too large, not a regular file) is skipped and reported by
  path, once (`report_skipped`), in memory and streamed alike.
* `scan_folder` follows each real folder once and counts each real file once (see its docstring for links).
"""

from __future__ import annotations

import contextlib
import copy
import csv
import io
import os
import re
import signal
import stat
import warnings
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from convkit.data.errors import DataFormatError, LabelError
from convkit.data.tensor import EpochBatches, ImageTensorDataset, check_labels
from convkit.utils import shorten

MEMORY_BUDGET = 2 << 30  # bytes of uint8 images held in memory before a folder or CSV is streamed instead
MAX_IMAGE_PIXELS = 89_478_485  # PIL's limit (Image.MAX_IMAGE_PIXELS): larger images are skipped, never decoded
MAX_LABEL_NUMBER = 10_000  # the largest label number of a CSV without a class list (each number is a class)
IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".webp"}
_GRAY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"}
_PATH_WORDS = ("path", "file", "filename", "filepath", "file_name", "image", "image_path", "img")
_LABEL_WORDS = ("label", "class", "class_name", "target", "category")
_LABEL_NUMBER = re.compile(r"[+-]?[0-9]{1,18}")  # longer digit strings are names (int() of them is slow)
_NOT_REGULAR = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"),
                (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))


def _hidden(name: str) -> bool:
    # Dot-names are hidden on Unix (.git, .ipynb_checkpoints); __MACOSX is the resource-fork junk of macOS zips.
    return name.startswith(".") or name == "__MACOSX"


def _is_image_name(name: str) -> bool:
    return Path(name).suffix.lower() in IMAGE_EXTENSIONS


def _to_8bit(img: Image.Image) -> Image.Image:
    # PIL converts 16-bit and 32-bit modes to L by clipping at 255, which turns most 16-bit images white;
    # scale the full 16-bit range instead (65535 -> 255).
    a = np.asarray(img)
    if img.mode == "F":
        a = np.clip(a, 0, 255)
    else:
        a = a.astype(np.float64) / 257
    return Image.fromarray(np.rint(a).clip(0, 255).astype(np.uint8), "L")


def image_channels(mode: str) -> int:
    """Channels a PIL mode becomes by default: 1 for grayscale modes (8-, 16-bit, float, with alpha), else 3.

    Example:
        >>> image_channels("I;16"), image_channels("P")
        (1, 3)
    """
    return 1 if mode in _GRAY_MODES else 3


def _not_regular(mode: int) -> str | None:
    """None for a regular file's st_mode, else what the file is ("a FIFO (named pipe)", "a folder", ...)."""
    if stat.S_ISREG(mode):
        return None
    return next((what for test, what in _NOT_REGULAR if test(mode)), "not a regular file")


def check_image_file(path: str | os.PathLike) -> Path:
    """Refuses a path that is not a regular file, without opening it (opening a FIFO waits for a writer).

    Readers call this (or `open_image`, which checks the opened file itself) before reading a listed path.

    Args:
        path: the file (symbolic links are followed).

    Returns:
        The path, as a `Path`.

    Raises:
        DataFormatError: the path is missing, or is a folder, FIFO, socket or device; names the path.

    Example:
        >>> _ = Path("x.png").write_bytes(b"")
        >>> check_image_file("x.png")
        PosixPath('x.png')
        >>> os.mkfifo("pipe.png")
        >>> check_image_file("pipe.png")
        Traceback (most recent call last):
            ...
        convkit.data.errors.DataFormatError: pipe.png: a FIFO (named pipe), not an image file; skipped
    """
    try:
        what = _not_regular(os.stat(path).st_mode)
    except (OSError, ValueError) as err:  # ValueError: a NUL byte in the path (a CSV can hold one)
        raise DataFormatError(f"{shorten(str(path))}: cannot read ({getattr(err, 'strerror', None) or err})") from None
    if what:
        raise DataFormatError(f"{path}: {what}, not an image file; skipped")
    return Path(path)


def _check_pixels(img: Image.Image, path, limit: int | None = None) -> None:
    width, height = img.size
    if width * height > (limit or MAX_IMAGE_PIXELS):
        raise DataFormatError(f"{path}: {width}x{height} pixels ({width * height:,}), more than the "
                              f"{limit or MAX_IMAGE_PIXELS:,} an image may have (convkit.data.folder.MAX_IMAGE_PIXELS); "
                              "not decoded")


@contextlib.contextmanager
def open_image(path: str | os.PathLike) -> Iterator[Image.Image]:
    """Opens an image file as PIL does (the header only: no pixel is decoded until `.load()`), safely.

    The file is opened without blocking and checked to be a regular file, so a FIFO, folder or device named
    like an image is refused at once; an image of more than `MAX_IMAGE_PIXELS` pixels is refused on its
    header (a 420 KB PNG can hold 12000x12000 pixels: 432 MB decoded, far more once resized in a batch).
    Every reader of image files opens them through this.

    Args:
        path: the image file.

    Yields:
        The open `PIL.Image.Image` (closed, with its file, on leaving the block).

    Raises:
        DataFormatError: the path cannot be opened, is not a regular file, is not an image PIL reads, or has
            too many pixels; names the file.

    Example:
        >>> Image.new("RGB", (32, 24)).save("photo.png")
        >>> with open_image("photo.png") as img:
        ...     img.size, img.mode
        ((32, 24), 'RGB')
    """
    try:  # O_NONBLOCK: opening a FIFO returns at once (it does not change reads of a regular file)
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except (OSError, ValueError) as err:  # ValueError: a NUL byte in the path (a CSV can hold one)
        raise DataFormatError(f"{shorten(str(path))}: cannot open ({getattr(err, 'strerror', None) or err})") from None
    what = _not_regular(os.fstat(fd).st_mode)  # of the file opened: no race with a rename
    if what:
        os.close(fd)
        raise DataFormatError(f"{path}: {what}, not an image file; skipped")
    with os.fdopen(fd, "rb") as f:
        try:
            img = Image.open(f)
        except Image.UnidentifiedImageError:
            raise DataFormatError(f"{path}: cannot decode image (not an image format PIL reads)") from None
        except Exception as err:  # PIL raises OSError, SyntaxError, ValueError, DecompressionBombError...
            raise DataFormatError(f"{path}: cannot decode image ({type(err).__name__}: {err})") from err
        with img:
            _check_pixels(img, path)
            yield img


def decode_image(path: str | os.PathLike, channels: int | None = 3,
                 image_size: tuple[int, int] | None = None) -> torch.Tensor:
    """Decodes an image file of any mode into a uint8 tensor (C, H, W), upright per its EXIF orientation.

    Grayscale, RGBA, palette (with transparency), 16-bit and float images are converted to the channels
    asked for: alpha is dropped, 16-bit values are scaled to 0..255. The file is opened by `open_image`.

    Args:
        path: a PNG, JPEG, BMP, WebP (or any other format PIL reads).
        channels: 1 (grayscale), 3 (RGB) or 4 (RGBA); None keeps 1 for grayscale files and 3 for the others.
        image_size: (height, width) to resize to (bilinear, antialiased), or None to keep the size.

    Returns:
        uint8 tensor of shape (channels, H, W).

    Raises:
        DataFormatError: the file cannot be decoded (corrupt, truncated, not an image, not a regular file,
            more than `MAX_IMAGE_PIXELS` pixels); names the file.

    Example:
        >>> from PIL import Image
        >>> Image.new("L", (32, 24), 128).save("grey.png")            # 32 wide, 24 high
        >>> image = decode_image("grey.png", channels=3, image_size=(64, 64))
        >>> image.shape, image.dtype, image[:, 0, 0]
        (torch.Size([3, 64, 64]), torch.uint8, tensor([128, 128, 128], dtype=torch.uint8))
    """
    with open_image(path) as img:
        return _decoded(img, path, channels, image_size)


def decode_image_bytes(data: bytes, channels: int | None = 3, image_size: tuple[int, int] | None = None,
                       name: str = "image", max_pixels: int | None = None) -> torch.Tensor:
    """`decode_image` for an image held in memory (an upload): the same modes, orientation and resizing.

    The pixel count is checked on the header, before any pixel is decoded (a decompression bomb is refused).

    Args:
        data: the encoded image (PNG, JPEG, BMP, WebP, ...).
        channels, image_size: as for `decode_image`.
        name: what messages call the image (a file name, "upload").
        max_pixels: the most pixels allowed (default `MAX_IMAGE_PIXELS`).

    Returns:
        uint8 tensor of shape (channels, H, W).

    Raises:
        DataFormatError: not an image PIL reads, damaged or truncated pixel data, or too many pixels; names
            `name`.

    Example:
        >>> import io
        >>> buffer = io.BytesIO(); Image.new("RGB", (4, 2), (255, 0, 0)).save(buffer, "PNG")
        >>> decode_image_bytes(buffer.getvalue(), channels=1).shape
        torch.Size([1, 2, 4])
        >>> decode_image_bytes(b"GIF89a not really")
        Traceback (most recent call last):
            ...
        convkit.data.errors.DataFormatError: image: cannot decode image (not an image format PIL reads)
    """
    try:
        img = Image.open(io.BytesIO(data))
    except Image.UnidentifiedImageError:
        raise DataFormatError(f"{name}: cannot decode image (not an image format PIL reads)") from None
    except Exception as err:  # PIL raises OSError, SyntaxError, ValueError, DecompressionBombError...
        raise DataFormatError(f"{name}: cannot decode image ({type(err).__name__}: {err})") from err
    with img:
        _check_pixels(img, name, max_pixels)
        return _decoded(img, name, channels, image_size)


def _decoded(img: Image.Image, path, channels: int | None, image_size: tuple[int, int] | None) -> torch.Tensor:
    """An opened (header-checked) image -> uint8 (channels, H, W): decoded, upright, converted, resized."""
    try:
        img.load()
        img = ImageOps.exif_transpose(img)
    except Exception as err:  # damaged or truncated pixel data
        raise DataFormatError(f"{path}: cannot decode image ({type(err).__name__}: {err})") from err
    channels = channels or image_channels(img.mode)
    if img.mode in {"I", "I;16", "I;16B", "I;16L", "I;16N", "F"}:
        img = _to_8bit(img)
    if img.mode in {"P", "PA"}:
        img = img.convert("RGBA")  # resolves the palette's transparency before alpha is dropped
    img = img.convert({1: "L", 3: "RGB", 4: "RGBA"}[channels])
    if image_size is not None and img.size != (image_size[1], image_size[0]):
        img = img.resize((image_size[1], image_size[0]), Image.Resampling.BILINEAR)
    a = np.asarray(img, dtype=np.uint8)
    return torch.from_numpy(a.copy()).reshape(a.shape[0], a.shape[1], channels).permute(2, 0, 1).contiguous()


def _upright_size(img: Image.Image) -> tuple[int, int]:
    """(height, width) as displayed, from the header: EXIF orientations 5 to 8 turn the image a quarter."""
    orientation = 1
    try:
        if "exif" in img.info:  # JPEG, WebP; a PNG's getexif() would decode the pixels to find it
            exif = Image.Exif()
            exif.load(img.info["exif"])
            orientation = exif.get(0x0112, 1)
        elif hasattr(img, "tag_v2"):  # TIFF
            orientation = img.tag_v2.get(0x0112, 1)
    except Exception:  # a damaged EXIF block: decoding reports the file if it matters
        pass
    return (img.width, img.height) if orientation in (5, 6, 7, 8) else (img.height, img.width)


def read_header(path: str | os.PathLike) -> tuple[int, tuple[int, int]]:
    """The channels (1 grayscale, else 3) and (height, width) of an image file, from its header only.

    Args:
        path: the image file.

    Returns:
        (channels, (height, width)), the size as displayed (per EXIF orientation).

    Raises:
        DataFormatError: as `open_image`.

    Example:
        >>> Image.new("L", (32, 24)).save("grey.png")
        >>> read_header("grey.png")
        (1, (24, 32))
    """
    with open_image(path) as img:
        return image_channels(img.mode), _upright_size(img)


def report_skipped(messages: Sequence[str], source: str, what: str = "file(s) that could not be read") -> None:
    """Warns once about files left out, each named by its message (the first 10, then a count).

    Args:
        messages: one message per file, each naming it.
        source: the folder or CSV (the warning's first words).
        what: what the files are, after "skipped N".

    Example:
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     report_skipped(["cat/x.png: cannot decode image"], "pets")
        >>> print(caught[0].message)
        pets: skipped 1 file(s) that could not be read:
          cat/x.png: cannot decode image
    """
    if messages:
        shown = "\n  ".join(messages[:10]) + (f"\n  ... and {len(messages) - 10} more" if len(messages) > 10 else "")
        warnings.warn(f"{source}: skipped {len(messages)} {what}:\n  {shown}", stacklevel=3)


def _error_text(path, err: Exception) -> str:
    return str(err) if str(path) in str(err) else f"{path}: {err}"


def _header_or_reason(path: Path) -> tuple[int, tuple[int, int]] | str:
    try:
        return read_header(path)
    except (DataFormatError, OSError) as err:
        return _error_text(path, err)


def _most(counts: Counter):
    return max(counts, key=lambda key: (counts[key], key))  # ties: the larger (RGB over grayscale)


@dataclass
class ImageSurvey:
    """What the headers of a list of image files say (made by `survey_images`).

    Attributes:
        paths: the files surveyed.
        readable: the indices of the files whose header was read, in order.
        skipped: one message per file that was not, naming it.
        channels: the channels of each readable file (1 grayscale, 3 otherwise), in the order of `readable`.
        sizes: the (height, width) of each readable file.
    """

    paths: list[Path]
    readable: list[int] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    channels: list[int] = field(default_factory=list)
    sizes: list[tuple[int, int]] = field(default_factory=list)

    def choose(self, channels: int | None = None, image_size: tuple[int, int] | None = None,
               source: str = "images") -> tuple[int, tuple[int, int]]:
        """The channels and size of the set: the ones given, else the majority's channels (a warning names a
        file of the minority, which is converted) and the size all readable files share.

        Args:
            channels: 1, 3 or 4, or None for the majority's.
            image_size: (height, width) every image is resized to, or None.
            source: the folder or CSV, for messages.

        Returns:
            (channels, (height, width)).

        Raises:
            DataFormatError: no file is readable; or the sizes differ and no image_size was given (the message
                names the majority's size and a file of another size).

        Example:
            >>> Image.new("RGB", (32, 24)).save("a.png"); Image.new("RGB", (32, 24)).save("b.png")
            >>> Image.new("L", (32, 24)).save("c.png")
            >>> survey_images(["a.png", "b.png", "c.png"]).choose(source="photos")   # c.png: a warning
            (3, (24, 32))
        """
        if not self.readable:
            first = f" (first: {self.skipped[0]})" if self.skipped else ""
            raise DataFormatError(f"{source}: none of the {len(self.paths)} image files could be read{first}")
        counts = Counter(self.channels)
        chosen = channels or _most(counts)
        if channels is None and len(counts) > 1:
            other = next(self.paths[i] for i, c in zip(self.readable, self.channels) if c != chosen)
            names = {1: "grayscale", 3: "colour"}
            warnings.warn(f"{source}: {counts[chosen]} of {len(self.channels)} images are {names[chosen]}, "
                          f"{len(self.channels) - counts[chosen]} {names[4 - chosen]} (e.g. {other}): all are "
                          f"read with {chosen} channel(s), the majority's", stacklevel=3)
        if image_size is not None:
            return chosen, (int(image_size[0]), int(image_size[1]))
        sizes = Counter(self.sizes)
        size = _most(sizes)
        if len(sizes) > 1:
            i, other = next((i, s) for i, s in zip(self.readable, self.sizes) if s != size)
            raise DataFormatError(f"{source}: images differ in size ({sizes[size]} of {len(self.sizes)} are "
                                  f"{size[0]}x{size[1]}, {self.paths[i]} is {other[0]}x{other[1]}); pass "
                                  "image_size=(height, width) to resize them all")
        return chosen, size


def survey_images(paths: Sequence[str | os.PathLike]) -> ImageSurvey:
    """Reads the header of every file (no pixels: about a tenth of a millisecond each), in threads.

    Args:
        paths: the image files.

    Returns:
        An `ImageSurvey`: which files are readable, their channels and sizes, and why the others are not.

    Example:
        >>> Image.new("RGB", (32, 24)).save("a.png"); Image.new("L", (32, 24)).save("b.png")
        >>> _ = Path("c.png").write_bytes(b"not a picture")
        >>> survey = survey_images(["a.png", "b.png", "c.png"])
        >>> survey.readable, survey.channels, survey.sizes
        ([0, 1], [3, 1], [(24, 32), (24, 32)])
        >>> survey.skipped
        ['c.png: cannot decode image (not an image format PIL reads)']
    """
    survey = ImageSurvey([Path(p) for p in paths])
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        headers = list(pool.map(_header_or_reason, survey.paths))
    for i, header in enumerate(headers):
        if isinstance(header, str):
            survey.skipped.append(header)
        else:
            survey.readable.append(i)
            survey.channels.append(header[0])
            survey.sizes.append(header[1])
    return survey


def _inside(path: str, folder: str) -> bool:
    """Whether the real path `path` is `folder` or lies under it."""
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def _follow(link: Path, real_parent: str, label: int, owners: dict, notes: list[str]) -> str | None:
    """The real folder a link to a folder leads to, if it is to be walked; else None, with a note saying why."""
    real = os.path.realpath(link)
    if _inside(real_parent, real):
        notes.append(f"{link}: a link back to {real}, which holds it (a loop); not followed")
        return None
    holder = next((owners[p] for p in (real, *map(str, Path(real).parents)) if p in owners), None)
    if holder is None:  # a folder outside the data: walked once, as part of this class
        owners[real] = (link, label)
        return real
    first, other = holder
    if other is not None and other != label:
        raise LabelError(f"{link}: links to {first}, a folder of another class, so its images would be in two "
                         "classes; an image belongs to one class")
    notes.append(f"{link}: a link to {first}, whose images are counted there; not followed")
    return None


def scan_folder(root: str | os.PathLike) -> tuple[list[tuple[Path, int]], list[str], list[str]]:
    """Lists the images of a folder with one subfolder per class (searched recursively, hidden names skipped).

    Links are followed with care, so that no image is counted twice or in a class it is not in: a link to a
    folder outside `root` is walked, once; a link back to a folder holding it (a loop: `ln -s .. cat/loop`)
    or to a folder already counted is not followed. A file reached by two paths in one class counts once.
    Paths that are not regular files (a FIFO, socket or device named `x.png`, a broken link) are left out.
    What was not followed or left out is named in one warning.

    Args:
        root: the folder, e.g. `flowers/` holding `daisy/`, `rose/`, ...

    Returns:
        (samples as (path, label) sorted by path, class names sorted, names of the classes without images).
        Empty classes keep their label numbers so that the numbering follows the folder names.

    Raises:
        DataFormatError: the folder has no class subfolders.
        LabelError: an image (or a folder) is reachable from two classes; the message names both paths.

    Example:
        >>> root = image_folder("flowers", per_class=2)     # flowers/daisy/*.png, flowers/rose/*.png
        >>> (root / "tulip").mkdir()
        >>> samples, classes, empty = scan_folder("flowers")
        >>> [(path.as_posix(), label) for path, label in samples], classes, empty
        ([('flowers/daisy/000.png', 0), ('flowers/daisy/001.png', 0), ('flowers/rose/000.png', 1),
          ('flowers/rose/001.png', 1)], ['daisy', 'rose', 'tulip'], ['tulip'])
    """
    root = Path(root)
    folders = sorted((d for d in root.iterdir() if d.is_dir() and not _hidden(d.name)), key=lambda d: d.name)
    if not folders:
        raise DataFormatError(f"{root}: expected one subfolder of images per class, found no subfolders")
    owners: dict[str, tuple[Path, int | None]] = {os.path.realpath(root): (root, None)}  # real folder -> (path, class)
    for label, folder in enumerate(folders):
        real = os.path.realpath(folder)
        if real in owners:
            raise LabelError(f"{folder}: the same folder as {owners[real][0]} ({real}); a class is one folder")
        owners[real] = (folder, label)
    files: dict[str, tuple[Path, int]] = {}  # real file -> (the first path it was found by, its class)
    samples, empty, notes = [], [], []
    for label, top in enumerate(folders):
        found, stack = [], [(top, os.path.realpath(top))]
        while stack:
            folder, real_folder = stack.pop()
            try:
                entries = sorted(os.scandir(folder), key=lambda e: e.name)
            except OSError as err:
                notes.append(f"{folder}: cannot list it ({err.strerror or err})")
                continue
            for entry in entries:
                path = folder / entry.name
                if _hidden(entry.name):
                    continue
                if entry.is_dir():  # follows links
                    real = (_follow(path, real_folder, label, owners, notes) if entry.is_symlink()
                            else os.path.join(real_folder, entry.name))
                    if real is not None:
                        stack.append((path, real))
                    continue
                if not _is_image_name(entry.name):
                    continue
                try:
                    check_image_file(path)
                except DataFormatError as err:
                    notes.append(str(err))
                    continue
                real = os.path.realpath(path) if entry.is_symlink() else os.path.join(real_folder, entry.name)
                if real in files:
                    first, other = files[real]
                    if other != label:
                        raise LabelError(f"{path}: the same file as {first} ({real}), in class {folders[other].name} "
                                         f"and in class {top.name}; an image belongs to one class")
                    notes.append(f"{path}: the same file as {first}; counted once")
                    continue
                files[real] = (path, label)
                found.append(path)
        samples += [(p, label) for p in sorted(found)]
        if not found:
            empty.append(top.name)
    report_skipped(notes, str(root), "path(s)")
    return samples, [d.name for d in folders], empty


def read_class_list(path: str | os.PathLike) -> list[str]:
    """Class names in label order from a text file, one a line (blank lines and surrounding spaces ignored).

    Args:
        path: the file, e.g. `classes.txt`.

    Returns:
        The names.

    Raises:
        DataFormatError: the file cannot be read, holds no name, or names a class twice (file and line named).

    Example:
        >>> _ = Path("classes.txt").write_text("cat\\ndog\\n")
        >>> read_class_list("classes.txt")
        ['cat', 'dog']
    """
    try:
        text = check_image_file(path).read_text(encoding="utf-8-sig")  # a FIFO named classes.txt: refused
    except UnicodeDecodeError as err:
        raise DataFormatError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    names, lines = [], {}
    for n, line in enumerate(text.splitlines(), start=1):
        name = line.strip()
        if not name:
            continue
        if name in lines:
            raise DataFormatError(f"{path}:{n}: class {shorten(name)} is listed twice (first on line {lines[name]})")
        lines[name] = n
        names.append(name)
    if not names:
        raise DataFormatError(f"{path}: no class names; expected one name a line")
    return names


def parse_classes(value: str | Sequence[str] | None) -> list[str] | None:
    """A class list as the command line gives it: names separated by commas, or a file of one name a line.

    Args:
        value: "cat,dog", "classes.txt" (a file: see `read_class_list`), a list of names, or None.

    Returns:
        The names in label order, or None for None.

    Raises:
        DataFormatError: an empty or repeated name, or a class file that cannot be read.

    Example:
        >>> parse_classes("cat, dog")
        ['cat', 'dog']
    """
    if value is None:
        return None
    if isinstance(value, str):
        if "," not in value and (Path(value).suffix.lower() == ".txt" or Path(value).is_file()):
            return read_class_list(value)
        value = [name.strip() for name in value.split(",")]
    names = list(value)
    bad = next((name for name in names if not isinstance(name, str) or not name), None)
    if bad is not None or not names:
        raise DataFormatError(f"classes: expected class names separated by commas, or a file of one name a line; "
                              f"found an empty name in {shorten(value)}")
    twice = next((name for i, name in enumerate(names) if name in names[:i]), None)
    if twice is not None:
        raise DataFormatError(f"classes: class {shorten(twice)} is listed twice in {shorten(value)}")
    return names


def _label_number(text: str) -> int | None:
    return int(text) if _LABEL_NUMBER.fullmatch(text) else None


def _read_rows(path: Path) -> list[tuple[int, list[str]]]:
    """The non-blank rows of a CSV with their line numbers; malformed text is an error naming the line."""
    check_image_file(path)
    with open(path, newline="", encoding="utf-8-sig") as f:  # -sig: spreadsheets often write a BOM
        reader = csv.reader(f)
        try:
            return [(reader.line_num, r) for r in reader if r and any(c.strip() for c in r)]
        except csv.Error as err:  # a field over csv's size limit, a NUL byte...
            raise DataFormatError(f"{path}:{reader.line_num}: not a readable CSV row ({err})") from None
        except UnicodeDecodeError as err:
            raise DataFormatError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None


def _columns(path: Path, rows: list[tuple[int, list[str]]]) -> tuple[int, int, bool]:
    """(path column, label column, whether the first row is a header). A header is a first row that holds a
    column word ("path", "label", "class"...) in any column and no image file name; its words then pick the
    columns. Without one, the path is the first column and the label the second."""
    n, first = rows[0]
    words = [cell.strip().lower() for cell in first]
    if not any(w in _PATH_WORDS or w in _LABEL_WORDS for w in words) or any(_is_image_name(w) for w in words):
        return 0, 1, False
    path_col = next((i for i, w in enumerate(words) if w in _PATH_WORDS), None)
    label_col = next((i for i, w in enumerate(words) if w in _LABEL_WORDS), None)
    if path_col is None or label_col is None:
        missing, known = ("path", _PATH_WORDS) if path_col is None else ("label", _LABEL_WORDS)
        raise DataFormatError(f"{path}:{n}: the header {shorten(','.join(first))} names no {missing} column "
                              f"(one of: {', '.join(known)})")
    if "split" in words:
        warnings.warn(f"{path}:{n}: the `split` column is ignored: a CSV is one collection (all its rows are "
                      "read); give the test rows as a CSV of their own (--test-data)", stacklevel=4)
    return path_col, label_col, True


def read_csv(path: str | os.PathLike,
             classes: Sequence[str] | str | None = None) -> tuple[list[tuple[Path, int]], list[str], list[str]]:
    """Reads a CSV of `path,label` rows (paths are relative to the CSV's folder).

    A header row is optional; it is recognised by its words in any column (path/file/filename/image and
    label/class/target/category), and names the path and label columns (`label,path`, `path,label,split,notes`
    are read by name; other columns are ignored, a `split` column with a warning). Without a header the path
    is the first column and the label the second.

    Labels are class names or class numbers. The class list is `classes`, else a `classes.txt` beside the
    CSV (one name a line), else derived: names numbered in sorted order, or numbers 0..max (at most
    `MAX_LABEL_NUMBER`: larger numbers need a class list).

    Args:
        path: the CSV file.
        classes: the class names in label order (a list, "cat,dog" or a file of one name a line), or None.

    Returns:
        (samples as (image path, label), class names, where each row came from as "file.csv:line (image)").

    Raises:
        DataFormatError: a row without a path and a label, swapped columns (a label column of image file
            names), no rows, or text that is not a CSV; names the file and line.
        LabelError: with a class list, a label that is not in it or a number outside its range; without one,
            a label number over `MAX_LABEL_NUMBER`; names the file, line and label.

    Example:
        >>> from pathlib import Path
        >>> _ = Path("labels.csv").write_text("path,label\\nimages/001.png,dog\\nimages/002.png,cat\\n")
        >>> samples, classes, rows = read_csv("labels.csv")
        >>> [(path.as_posix(), label) for path, label in samples], classes, rows
        ([('images/001.png', 1), ('images/002.png', 0)], ['cat', 'dog'],
         ['labels.csv:2 (images/001.png)', 'labels.csv:3 (images/002.png)'])
    """
    path = Path(path)
    rows = _read_rows(path)
    if not rows:
        raise DataFormatError(f"{path}: no rows; expected `path,label` rows")
    path_col, label_col, header = _columns(path, rows)
    rows = rows[1:] if header else rows
    if not rows:
        raise DataFormatError(f"{path}: a header and no rows; expected `path,label` rows")
    files, texts, where = [], [], []
    for n, row in rows:
        if len(row) <= max(path_col, label_col):
            raise DataFormatError(f"{path}:{n}: expected `path,label`, found {shorten(','.join(row))}")
        file, text = row[path_col].strip(), row[label_col].strip()
        if _is_image_name(text) and not _is_image_name(file):
            raise DataFormatError(f"{path}:{n}: the label {shorten(text)} is an image file name and the path "
                                  f"{shorten(file)} is not: the first column should be the image path, the "
                                  "second its label (or give a header naming them, e.g. `label,path`)")
        files.append(file)
        texts.append(text)
        where.append(f"{path}:{n} ({file if len(file) <= 200 else shorten(file)})")
    beside = path.with_name("classes.txt")
    classes = parse_classes(classes) if classes is not None else read_class_list(beside) if beside.is_file() else None
    numbers = [_label_number(t) for t in texts]
    if classes is None and all(x is not None for x in numbers):
        i = max(range(len(numbers)), key=numbers.__getitem__)
        if numbers[i] > MAX_LABEL_NUMBER:
            raise LabelError(f"{where[i]}: label {numbers[i]} would make {numbers[i] + 1:,} classes; without a "
                             f"class list label numbers go up to {MAX_LABEL_NUMBER:,} (list the classes in "
                             f"{beside.name} beside the CSV, one a line, or pass --classes)")
        classes = [str(k) for k in range(numbers[i] + 1)]
    elif classes is None:
        classes = sorted(set(texts))
    index = {name: k for k, name in enumerate(classes)}
    labels = []
    for text, number, w in zip(texts, numbers, where):
        if text not in index and number is None:
            raise LabelError(f"{w}: label {shorten(text)} is not one of the {len(classes)} classes "
                             f"({shorten(classes)})")
        labels.append(index[text] if text in index else number)
    check_labels(torch.tensor(labels), len(classes), where)
    return [(path.parent / file, y) for file, y in zip(files, labels)], list(classes), where


def _decode_or_reason(path: Path, channels: int, image_size) -> torch.Tensor | str:
    try:
        return decode_image(path, channels, image_size)
    except (DataFormatError, OSError) as err:
        return _error_text(path, err)


def _surveyed(samples: Sequence[tuple[Path, int]], sample_sources: Sequence[str] | None, channels, image_size,
              source: str) -> tuple[list, list | None, int, tuple[int, int], list[str]]:
    """The samples whose headers are readable (and their sources), the set's channels and size, and the
    messages of the files left out (see `survey_images`, `ImageSurvey.choose`)."""
    survey = survey_images([p for p, _ in samples])
    channels, size = survey.choose(channels, image_size, source)
    samples = [samples[i] for i in survey.readable]
    if sample_sources is not None:
        sample_sources = [sample_sources[i] for i in survey.readable]
    return samples, sample_sources, channels, size, survey.skipped


def _in_memory(samples, channels: int, size: tuple[int, int], source: str, sample_sources, classes,
               skipped: list[str]) -> ImageTensorDataset:
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:  # PIL decodes without the GIL
        decoded = list(pool.map(lambda s: _decode_or_reason(s[0], channels, size), samples))
    keep = [i for i, d in enumerate(decoded) if isinstance(d, torch.Tensor)]
    report_skipped([*skipped, *(d for d in decoded if isinstance(d, str))], source)
    if not keep:
        raise DataFormatError(f"{source}: none of the {len(samples) + len(skipped)} image files could be read")
    sources = [str(samples[i][0]) if sample_sources is None else sample_sources[i] for i in keep]
    images = torch.stack([decoded[i] for i in keep])
    labels = torch.tensor([samples[i][1] for i in keep], dtype=torch.long)
    return ImageTensorDataset(images, labels, classes, source, sources)


def decode_all(samples: Sequence[tuple[Path, int]], channels: int | None, image_size: tuple[int, int] | None,
               source: str, sample_sources: Sequence[str] | None = None,
               classes: Sequence[str] = ()) -> ImageTensorDataset:
    """Decodes a list of image files into one in-memory dataset, skipping (and reporting) unreadable ones.

    Args:
        samples: (path, label) pairs.
        channels: 1, 3 or 4, or None for the majority's (read from the headers, see `survey_images`).
        image_size: (height, width) to resize every image to, or None: all must then have the same size.
        source: the folder or CSV (for messages).
        sample_sources: where each sample was listed (e.g. "labels.csv:12"); the image paths when None.
        classes: the class names.

    Returns:
        An `ImageTensorDataset`.

    Raises:
        DataFormatError: no image could be read, or images differ in size and no image_size was given.

    Example:
        >>> samples, classes, _ = scan_folder(image_folder("flowers"))
        >>> ds = decode_all(samples, 3, (64, 64), "flowers", classes=classes)
        >>> ds
        ImageTensorDataset(6 images of (3, 64, 64), 2 classes, device cpu, source 'flowers')
    """
    skipped = []
    if channels is None or image_size is None:
        samples, sample_sources, channels, image_size, skipped = _surveyed(samples, sample_sources, channels,
                                                                           image_size, source)
    return _in_memory(samples, channels, image_size, source, sample_sources, classes, skipped)


def default_workers() -> int:
    """DataLoader workers for streamed images: one per core, at most 8 (decoding small images scales no further)."""
    return min(8, os.cpu_count() or 1)


class _Decoded(torch.utils.data.Dataset):
    """A dataset's items, or the message of an undecodable file instead of raising it: the batch goes on
    without the file (a worker's exception would stop the run, as a traceback dump)."""

    def __init__(self, dataset: ImageFileDataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int] | str:
        try:
            return self.dataset[i]
        except DataFormatError as err:
            return str(err)


def _collate(items: list) -> tuple[tuple[torch.Tensor, torch.Tensor] | None, list[str]]:
    """(the batch of the decoded items, or None if none was; the messages of the files that were not)."""
    good = [item for item in items if not isinstance(item, str)]
    return (torch.utils.data.default_collate(good) if good else None), [i for i in items if isinstance(i, str)]


def _ignore_interrupts(worker_id: int) -> None:
    # Ctrl-C reaches the whole process group. A forked worker inherits the trainer's handler, but a spawned
    # one (macOS, Windows) dies of it, and the next batch fails ("worker exited unexpectedly") instead of the
    # trainer finishing its step and saving. The training process shuts its workers down itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class StreamBatches(EpochBatches):
    """One epoch of an `ImageFileDataset`: the batches of `EpochBatches` (same order, same `position` and
    resume rules), decoded by `dataset.workers` DataLoader workers and delivered to `dataset.device`.

    A file that cannot be decoded is left out of its batch (which is one smaller) and reported by path, once
    per dataset; `position` still counts it, so a resumed epoch serves the same batches.
    """

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        ds = self.dataset
        index_lists = [index.tolist() for index in self._slices(self._order)]
        if not index_lists:
            return
        cuda = ds.device.type == "cuda"
        # A private generator: the loader's worker seed must not come from (and move) the global RNG, which
        # dropout draws from; streamed runs then match in-memory ones and resume exactly.
        loader = torch.utils.data.DataLoader(_Decoded(ds), batch_sampler=index_lists, num_workers=ds.workers,
                                             collate_fn=_collate, pin_memory=cuda, generator=torch.Generator(),
                                             worker_init_fn=_ignore_interrupts if ds.workers else None)
        for index, (batch, errors) in zip(index_lists, loader):
            self.position += len(index)
            ds._report(errors)
            if batch is None:
                continue
            images, labels = batch
            yield images.to(ds.device, non_blocking=cuda), labels.to(ds.device, non_blocking=cuda)


class ImageFileDataset(torch.utils.data.Dataset):
    """Image files decoded as they are asked for, for sets too large to hold in memory.

    Items are (uint8 tensor (C, H, W), label). `batches` serves the same epochs as `ImageTensorDataset.batches`
    (same order, same pixels), decoded by DataLoader workers; `to`, `subset` and `split` return views that
    share the file list, so the files stay on disk.

    Args:
        samples: (path, label) pairs.
        classes: class names, index = label.
        source: the folder or CSV.
        channels: 1, 3 or 4 (None: the majority's, read from the headers of all files; see `survey_images`).
        image_size: (height, width) to resize to; None: the size all files share (else an error naming one
            of another size).
        sample_sources: where each sample was listed, for label errors.

    Unless both channels and image_size are given, the headers of all files are read first: files that
    cannot be read are left out then, and reported in one warning. A file that fails later, when decoded in a
    batch, is left out of that batch and reported once (see `StreamBatches`).
        workers: DataLoader worker processes of `batches` (None: `default_workers()`; 0: decode in this process).

    Example:
        >>> samples, classes, _ = scan_folder(image_folder("big"))
        >>> ds = ImageFileDataset(samples, classes, "big/", workers=0)   # .to("cuda"): batches on the GPU
        >>> ds
        ImageFileDataset(6 files as (3, 24, 32), 2 classes, device cpu, 0 workers, source 'big/')
        >>> for images, labels in ds.batches(4, seed=0, epoch=0):      # decoded as they are asked for
        ...     print(images.shape, images.dtype, labels)
        torch.Size([4, 3, 24, 32]) torch.uint8 tensor([0, 1, 1, 1])
        torch.Size([2, 3, 24, 32]) torch.uint8 tensor([0, 0])
    """

    def __init__(self, samples: Sequence[tuple[Path, int]], classes: Sequence[str], source: str,
                 channels: int | None = None, image_size: tuple[int, int] | None = None,
                 sample_sources: Sequence[str] | None = None, workers: int | None = None):
        self.samples, self.classes, self.source = list(samples), list(classes), str(source)
        sample_sources = list(sample_sources) if sample_sources else None
        if channels is None or image_size is None:
            self.samples, sample_sources, channels, image_size, skipped = _surveyed(
                self.samples, sample_sources, channels, image_size, self.source)
            report_skipped(skipped, self.source)
        self.channels, self.image_size = channels, tuple(image_size)
        self._reported: set[str] = set()  # files found undecodable while streaming; shared by views
        self.labels = torch.tensor([y for _, y in self.samples], dtype=torch.long)
        self.sample_sources = sample_sources or [str(p) for p, _ in self.samples]
        self._mean = self._std = None
        self.workers = default_workers() if workers is None else workers
        self.device = torch.device("cpu")

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        path, label = self.samples[i]
        return decode_image(path, self.channels, self.image_size), label

    def _report(self, messages: Sequence[str]) -> None:
        """Warns about files that failed to decode in a batch, each once."""
        new = [m for m in messages if m not in self._reported]
        self._reported.update(new)
        report_skipped(new, self.source, "file(s) that could not be decoded, left out of their batches")

    def __repr__(self) -> str:
        return (f"ImageFileDataset({len(self)} files as {tuple(self.image_shape)}, {self.num_classes} classes, "
                f"device {self.device}, {self.workers} workers, source {self.source!r})")

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_shape(self) -> torch.Size:
        return torch.Size((self.channels, *self.image_size))

    def _stats(self, limit: int = 1000) -> None:
        # A seeded sample of the files estimates the statistics without a pass over the whole set.
        index = torch.randperm(len(self), generator=torch.Generator().manual_seed(0))[:limit].tolist()
        sample = decode_all([self.samples[i] for i in index], self.channels,
                            self.image_size, self.source, classes=self.classes)
        self._mean, self._std = sample.mean, sample.std

    @property
    def mean(self) -> torch.Tensor:
        """Per-channel mean on the [0, 1] scale, estimated from up to 1,000 seeded files."""
        if self._mean is None:
            self._stats()
        return self._mean

    @property
    def std(self) -> torch.Tensor:
        """Per-channel standard deviation on the [0, 1] scale, estimated like `mean`."""
        if self._std is None:
            self._stats()
        return self._std

    # Label-only methods work unchanged on this dataset's labels, subset and len.
    normalize = ImageTensorDataset.normalize
    split = ImageTensorDataset.split
    class_counts = ImageTensorDataset.class_counts

    def check_labels(self, num_classes: int | None = None) -> None:
        """Refuses labels outside the class range, naming the offending file (see `check_labels`)."""
        check_labels(self.labels, num_classes or self.num_classes, self.sample_sources)

    def _view(self, **changes) -> ImageFileDataset:
        ds = copy.copy(self)  # shares statistics and names; no file is opened again
        ds.__dict__.update(changes)
        return ds

    def to(self, device: str | torch.device, workers: int | None = None) -> ImageFileDataset:
        """A view whose batches are delivered to `device` (pinned, asynchronous copies to a GPU).

        Args:
            device: where `batches` puts the images and labels.
            workers: DataLoader workers of the view (None: keep this dataset's).

        Example:
            >>> ds = ImageFileDataset(*scan_folder(image_folder("big"))[:2], "big/")
            >>> ds = ds.to("meta", workers=2)                    # "cuda" on a GPU machine
            >>> ds.device, ds.workers
            (device(type='meta'), 2)
        """
        return self._view(device=torch.device(device), workers=self.workers if workers is None else workers)

    def subset(self, index: torch.Tensor | Sequence[int]) -> ImageFileDataset:
        """The samples at `index`, in that order (statistics carried over, not recomputed).

        Example:
            >>> ds = ImageFileDataset(*scan_folder(image_folder("big"))[:2], "big/")
            >>> first_four = ds.subset(range(4))
            >>> len(ds), len(first_four), first_four.labels
            (6, 4, tensor([0, 0, 0, 1]))
        """
        index = torch.as_tensor(index, dtype=torch.long)
        rows = index.tolist()
        return self._view(samples=[self.samples[i] for i in rows], labels=self.labels[index],
                          sample_sources=[self.sample_sources[i] for i in rows])

    def batches(self, batch_size: int, *, shuffle: bool = True, seed: int = 0, epoch: int = 0, start: int = 0,
                drop_last: bool = False) -> StreamBatches:
        """One epoch of (uint8 images, int64 labels) batches on `device`, as `ImageTensorDataset.batches` serves.

        Args: as `ImageTensorDataset.batches`.

        Returns:
            A `StreamBatches` iterable whose `position` says how far the epoch has gone.

        A file that cannot be decoded is left out of its batch and reported once (see `StreamBatches`).

        Example:
            >>> ds = ImageFileDataset(*scan_folder(image_folder("big"))[:2], "big/", workers=0)
            >>> model = convkit.create_model("fastcnn", in_channels=3, num_classes=2)
            >>> for images, labels in ds.batches(4, seed=0, epoch=0):
            ...     logits = model(ds.normalize(images))
            >>> logits.shape                                      # the last batch: 6 = 4 + 2
            torch.Size([2, 2])
        """
        return StreamBatches(self, batch_size, shuffle, seed, epoch, start, drop_last)


def load_files(samples: Sequence[tuple[Path, int]], classes: Sequence[str], source: str, *,
               channels: int | None = None, image_size: tuple[int, int] | None = None,
               sample_sources: Sequence[str] | None = None,
               memory_budget: int = MEMORY_BUDGET) -> ImageTensorDataset | ImageFileDataset:
    """Image files in memory when their uint8 tensor fits `memory_budget` bytes, else a streaming dataset.

    Args:
        samples: (path, label) pairs.
        classes: class names.
        source: the folder or CSV.
        channels, image_size: as in `decode_image` (None: the majority's channels and the size all share,
            from the headers: see `survey_images`).
        sample_sources: where each sample was listed (for label errors).
        memory_budget: the most bytes the in-memory tensor may take (default 2 GiB).

    Returns:
        An `ImageTensorDataset`, or an `ImageFileDataset` beyond the budget. Files that cannot be read are
        left out, and named in one warning.

    Raises:
        DataFormatError: no file, none readable, or sizes that differ without image_size.

    Example:
        >>> samples, classes, _ = scan_folder(image_folder("flowers"))
        >>> load_files(samples, classes, "flowers", image_size=(64, 64))
        ImageTensorDataset(6 images of (3, 64, 64), 2 classes, device cpu, source 'flowers')
        >>> load_files(samples, classes, "flowers", image_size=(64, 64), memory_budget=0)
        ImageFileDataset(6 files as (3, 64, 64), 2 classes, device cpu, ... workers, source 'flowers')
    """
    if not samples:
        raise DataFormatError(f"{source}: no image files (looked for {', '.join(sorted(IMAGE_EXTENSIONS))})")
    samples, sample_sources, c, (h, w), skipped = _surveyed(samples, sample_sources, channels, image_size, source)
    if len(samples) * c * h * w > memory_budget:
        report_skipped(skipped, source)
        return ImageFileDataset(samples, classes, source, c, (h, w), sample_sources)
    return _in_memory(samples, c, (h, w), source, sample_sources, classes, skipped)
