"""Small helpers every part of convkit shares: atomic file writes, byte counts as text, fitting images, bounded
reprs for messages and the one YAML reader.

This is the bottom layer: it imports nothing from convkit but `convkit.errors` (itself the bottom: it imports
nothing), only the standard library, torch and PyYAML, so ``convkit.layers``, ``data``, ``inspect``, ``explain``,
``train``, ``models`` and ``report`` can all use it.
"""

from __future__ import annotations

import errno
import os
import re
import reprlib
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
import yaml

from convkit.errors import ConvkitError

__all__ = ["YAMLInputError", "atomic_write", "atomic_write_text", "compose_yaml", "fit_images", "format_bytes",
           "load_yaml", "make_folder", "shorten", "yaml_value"]


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Calls ``write(tmp_path)`` and moves the result onto ``path`` atomically.

    A reader sees the old file or the whole new one, never a half-written one, even if the process is
    killed; the temporary file (``.<name>.<random>.tmp`` beside ``path``) is removed when ``write`` raises.
    Missing parent folders are created. The file gets the permissions a new file gets (``0o666`` less the
    umask), as ``open`` would give it.

    Args:
        path: the destination.
        write: writes the whole file at the path it is given.

    Returns:
        ``path`` as a Path.

    Raises:
        OSError: the folder or the file cannot be written (read-only, full, not a folder, no permission); its
            ``filename`` is ``path`` (or the parent that is not a folder), the destination left as it was.
        Whatever else ``write`` raises (the destination is then left as it was).

    Example:
        >>> import tempfile
        >>> out = atomic_write(Path(tempfile.mkdtemp()) / "x.txt", lambda tmp: Path(tmp).write_text("hi"))
        >>> out.read_text()
        'hi'
    """
    path = Path(path)
    make_folder(path.parent)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as err:
        raise _os_error(err, path.parent) from err
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it 0600; follow the umask as open() does
        with open(tmp, "rb+") as f:  # the data reaches the disk before the rename makes it visible
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        failure = _os_error(err, path)
        if failure is None:
            raise
        raise failure from err
    return path


def _os_error(err: BaseException, path: str | os.PathLike) -> OSError | None:
    """An I/O failure while writing ``path`` as an OSError that names ``path``; None if ``err`` is not one.

    Writers that do their own I/O (safetensors' Rust code) report the system error only in their message,
    as ``... (os error 28)``; the errno is taken from there.
    """
    if isinstance(err, OSError) and err.errno is not None:
        code = err.errno
    else:
        found = re.search(r"\(os error (\d+)\)", str(err)) if isinstance(err, Exception) else None
        if found is None:
            return None
        code = int(found.group(1))
    return OSError(code, os.strerror(code), os.fspath(path))  # OSError(errno, ...) picks the subclass


def _umask() -> int:
    """The process's umask, read without changing it where the system allows (Linux: /proc/self/status),
    else by setting and restoring it; read once."""
    global _UMASK
    if _UMASK is None:
        try:
            with open("/proc/self/status", encoding="ascii") as f:
                _UMASK = next(int(line.split()[1], 8) for line in f if line.startswith("Umask:"))
        except (OSError, StopIteration, ValueError, IndexError):
            _UMASK = os.umask(0o022)
            os.umask(_UMASK)
    return _UMASK


_UMASK: int | None = None


def make_folder(path: str | os.PathLike) -> Path:
    """Creates the folder ``path`` and its missing parents (nothing if it exists).

    Args:
        path: the folder.

    Returns:
        ``path`` as a Path.

    Raises:
        NotADirectoryError: a file stands where the folder or one of its parents should be; its ``filename`` is
            that file (``mkdir`` would say "file exists", naming the folder asked for).
        OSError: the folder cannot be made (read-only, no permission), naming it.

    Example:
        >>> import tempfile
        >>> root = Path(tempfile.mkdtemp())
        >>> make_folder(root / "a" / "b").is_dir()
        True
        >>> _ = (root / "file").write_text("")
        >>> make_folder(root / "file" / "c")
        Traceback (most recent call last):
        ...
        NotADirectoryError: [Errno 20] Not a directory: '.../file'
    """
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        blocker = next((p for p in (path, *path.parents) if p.exists() and not p.is_dir()), path)
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(blocker)) from None
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Writes ``text`` (UTF-8) to ``path`` atomically; see :func:`atomic_write`.

    Args:
        path: the destination.
        text: the whole content.

    Returns:
        ``path`` as a Path.

    Example:
        >>> import tempfile
        >>> atomic_write_text(Path(tempfile.mkdtemp()) / "a" / "b.txt", "text").read_text(encoding="utf-8")
        'text'
    """
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def shorten(value, limit: int = 200) -> str:
    """A value's repr for an error message, cut to about ``limit`` characters.

    Messages quote what the user gave; a value from a hostile file may be huge (a YAML alias bomb expands to
    gigabytes), so every message that prints a user value prints it through this. Long containers are cut
    before their repr is built in full.

    Args:
        value: anything; strings are quoted as ``repr`` quotes them.
        limit: the most characters kept (a marker saying how many were cut is added).

    Returns:
        The repr (containers beyond 20 items or 4 levels elided with ``...``), or its first ``limit``
        characters followed by ``... (N chars)`` (strings) or ``... (N items)`` (containers).

    Example:
        >>> shorten("abc")
        "'abc'"
        >>> shorten(list(range(1000)), limit=30)
        '[0, 1, 2, 3, 4, 5, 6, 7, 8, 9,... (1000 items)'
    """
    text = _REPR.repr(value)  # bounded depth and items: a shared nested structure is never expanded in full
    if len(text) <= limit:
        return text
    size = f"{len(value)} {'chars' if isinstance(value, (str, bytes)) else 'items'}" if hasattr(value, "__len__") else "cut"
    return f"{text[:limit]}... ({size})"


_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxstring, _REPR.maxother = 4, 400, 400
_REPR.maxlist = _REPR.maxtuple = _REPR.maxdict = _REPR.maxset = _REPR.maxfrozenset = 20


def format_bytes(n: float) -> str:
    """A byte count in binary units (as memory is allocated): whole bytes, else one decimal.

    Args:
        n: bytes.

    Returns:
        The text, from ``B`` up to ``TiB``.

    Example:
        >>> format_bytes(1536), format_bytes(512), format_bytes(3 * 2**30)
        ('1.5 KiB', '512 B', '3.0 GiB')
    """
    n = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover


def fit_images(images: torch.Tensor, shape: tuple[int, int, int]) -> torch.Tensor:
    """uint8 images ``(N, C, H, W)`` -> the ``(C, H, W)`` a model expects: channels converted, resized.

    Colour becomes gray by luma (ITU-R 601: 0.299 R + 0.587 G + 0.114 B, alpha dropped); gray is
    repeated into more channels; extra channels are dropped. The size changes by antialiased bilinear
    resampling. Images that already fit come back unchanged.

    Args:
        images: ``(N, C, H, W)``, uint8 (or float in 0-255).
        shape: the target ``(C, H, W)``.

    Returns:
        uint8 ``(N, *shape)``.

    Example:
        >>> rgb = torch.tensor([255, 0, 0], dtype=torch.uint8).view(1, 3, 1, 1).expand(1, 3, 4, 4)
        >>> gray = fit_images(rgb, (1, 2, 2))
        >>> gray.shape, gray[0, 0, 0, 0].item()            # red's luma: 0.299 * 255 = 76.2
        (torch.Size([1, 1, 2, 2]), 76)
    """
    c, h, w = shape
    if images.shape[1] != c:
        if c == 1:
            weights = torch.tensor([0.299, 0.587, 0.114], device=images.device)[: images.shape[1]]
            images = (images[:, :3].float() * weights.view(1, -1, 1, 1) / weights.sum()).sum(1, keepdim=True)
        else:
            images = images[:, :1].expand(-1, c, -1, -1) if images.shape[1] == 1 else images[:, :c]
    if tuple(images.shape[2:]) != (h, w):
        images = F.interpolate(images.float(), size=(h, w), mode="bilinear", antialias=True, align_corners=False)
    return images.round().clamp(0, 255).to(torch.uint8) if images.is_floating_point() else images


# --- YAML: every YAML text convkit reads goes through `load_yaml` (or `compose_yaml` for line numbers) ---------

try:  # libyaml's parser when PyYAML has it (faster); the events and nodes are the same
    _YAMLLoader: type = yaml.CSafeLoader
except AttributeError:  # pragma: no cover - PyYAML without libyaml
    _YAMLLoader = yaml.SafeLoader

YAML_DEPTH_LIMIT = 64  # nested sequences/mappings; libyaml's composer recurses in C and crashes on ~100,000
YAML_ALIAS_LIMIT = 100_000  # nodes and scalar characters that aliases may add when expanded (an alias bomb adds 10^9)
_STANDARD_TAG = "tag:yaml.org,2002:"
_ALLOWED_TAGS = {tag for tag in yaml.SafeLoader.yaml_constructors if tag} | {
    _STANDARD_TAG + "merge", _STANDARD_TAG + "value"}


class YAMLInputError(ValueError, ConvkitError):
    """YAML text convkit refuses to read: not valid YAML, a tag other than YAML's plain types, nesting or
    aliases beyond the bounds; ``path``, ``line`` (1-based, or None) and ``problem`` say where and what.

    Example:
        >>> err = YAMLInputError("not valid YAML: found unexpected end of stream", "net.yaml", 3)
        >>> str(err), err.exit_code
        ('net.yaml:3: not valid YAML: found unexpected end of stream', 2)
    """

    def __init__(self, problem: str, path: str = "<string>", line: int | None = None):
        self.path, self.line, self.problem = str(path), line, problem
        super().__init__(f"{path}:{line}: {problem}" if line else f"{path}: {problem}")


def _line(mark) -> int | None:
    return mark.line + 1 if mark is not None else None


def _tag_text(tag: str) -> str:
    return "!!" + tag[len(_STANDARD_TAG):] if tag.startswith(_STANDARD_TAG) else tag


def compose_yaml(text: str, path: str = "<string>") -> yaml.Node | None:
    """One YAML document as a node graph (each node knows its line), checked so that reading it stays cheap.

    The document is composed from the parser's events here, not by PyYAML's composer, so that before any
    node is made: nesting deeper than `YAML_DEPTH_LIMIT` is refused (libyaml's recursive composer crashes the
    interpreter on deep nesting); aliases may add at most `YAML_ALIAS_LIMIT` nodes and scalar characters when
    expanded (a 1 KB alias bomb expands to gigabytes; a recursive alias never ends); a tag other than YAML's
    plain types (``!!python/object:...``, ``!custom``) is refused, not silently dropped.

    Args:
        text: the YAML text.
        path: the file's name, for messages.

    Returns:
        The root node (``yaml.MappingNode``, ``SequenceNode`` or ``ScalarNode``), or None for an empty document.

    Raises:
        YAMLInputError: invalid YAML, more than one document, a tag, nesting or aliases beyond the bounds;
            the message names ``path`` and the line.

    Example:
        >>> compose_yaml("layers: [conv3-8, FC-10]").value[0][1].value[0].value
        'conv3-8'
        >>> compose_yaml("layers: [!!python/object:os.system ls]", "net.yaml")
        Traceback (most recent call last):
        ...
        convkit.utils.YAMLInputError: net.yaml:1: the tag '!!python/object:os.system' is not allowed: convkit reads plain YAML values (strings, numbers, booleans, null, lists, mappings)
    """
    loader = _YAMLLoader(text)
    try:
        return _compose(loader, str(path))
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
        problem = getattr(err, "problem", None) or str(err)
        raise YAMLInputError(f"not valid YAML: {problem}", str(path), _line(mark)) from None
    finally:
        loader.dispose()


def _compose(loader, path: str) -> yaml.Node | None:
    """PyYAML's composer, without recursion, with the checks of `compose_yaml`."""
    E = yaml.events
    loader.get_event()  # StreamStart
    if loader.check_event(E.StreamEndEvent):
        return None
    loader.get_event()  # DocumentStart
    anchors: dict[str, yaml.Node] = {}
    sizes: dict[int, int] = {}  # id(node) -> its size with aliases expanded (closed nodes only)
    stack: list[tuple[yaml.Node, list, int]] = []  # open collections: node, children, `count` at its start
    count = added = 0  # nodes and scalar characters so far; what aliases added
    root = None
    while True:
        event = loader.get_event()
        if isinstance(event, E.DocumentEndEvent):
            break
        if isinstance(event, (E.SequenceEndEvent, E.MappingEndEvent)):
            node, children, start = stack.pop()
            node.value = children if isinstance(node, yaml.SequenceNode) else list(zip(children[::2], children[1::2]))
            node.end_mark = event.end_mark
            sizes[id(node)] = count - start
            continue
        if isinstance(event, E.AliasEvent):
            node = anchors.get(event.anchor)
            name = shorten(event.anchor)[1:-1]
            if node is None:
                raise YAMLInputError(f"found undefined alias *{name}", path, _line(event.start_mark))
            if id(node) not in sizes:
                raise YAMLInputError(f"the alias *{name} refers to a collection that contains it (a recursive "
                                     "structure)", path, _line(event.start_mark))
            count += sizes[id(node)]
            added += sizes[id(node)]
            if added > YAML_ALIAS_LIMIT:
                raise YAMLInputError(f"aliases expand this document past {YAML_ALIAS_LIMIT:,} nodes and characters "
                                     f"(at *{name}: an alias bomb?); write the values out instead", path,
                                     _line(event.start_mark))
        else:
            node = _new_node(loader, event, path)
            if event.anchor is not None:
                anchors[event.anchor] = node
            if isinstance(node, yaml.ScalarNode):
                count += 1 + len(node.value)
                sizes[id(node)] = 1 + len(node.value)
        if stack:
            stack[-1][1].append(node)
        else:
            root = node
        if isinstance(event, E.CollectionStartEvent):
            if len(stack) >= YAML_DEPTH_LIMIT:
                raise YAMLInputError(f"nested deeper than {YAML_DEPTH_LIMIT} levels", path, _line(event.start_mark))
            stack.append((node, [], count))
            count += 1
    if not loader.check_event(E.StreamEndEvent):
        event = loader.get_event()
        raise YAMLInputError("expected one YAML document, found another (a line '---')", path,
                             _line(event.start_mark))
    return root


def _new_node(loader, event, path: str) -> yaml.Node:
    """The node an event starts, its tag resolved as PyYAML resolves it, and refused unless a plain type."""
    E = yaml.events
    tag = event.tag
    if isinstance(event, E.ScalarEvent):
        kind, value = yaml.ScalarNode, event.value
        if tag is None or tag == "!":
            tag = loader.resolve(yaml.ScalarNode, event.value, event.implicit)
    else:
        kind, value = (yaml.SequenceNode if isinstance(event, E.SequenceStartEvent) else yaml.MappingNode), None
        if tag is None or tag == "!":
            tag = loader.resolve(kind, None, event.implicit)
    if tag not in _ALLOWED_TAGS:
        raise YAMLInputError(f"the tag {shorten(_tag_text(tag))} is not allowed: convkit reads plain YAML values "
                             "(strings, numbers, booleans, null, lists, mappings)", path, _line(event.start_mark))
    if kind is yaml.ScalarNode:
        return yaml.ScalarNode(tag, value, event.start_mark, event.end_mark, style=event.style)
    return kind(tag, [], event.start_mark, None, flow_style=event.flow_style)


class _Constructor(yaml.constructor.SafeConstructor):
    """PyYAML's safe constructor that remembers the node it builds, so an error names that node's line."""

    current: yaml.Node | None = None

    def construct_object(self, node, deep=False):
        self.current = node
        return super().construct_object(node, deep)


def yaml_value(node: yaml.Node | None, path: str = "<string>"):
    """The Python value of a node from `compose_yaml` (safe construction: plain types only).

    Args:
        node: a node of a checked graph (aliases become shared objects, never copies).
        path: the file's name, for messages.

    Returns:
        str, int, float, bool, None, list, dict (dates, bytes and sets where the YAML asks for them).

    Raises:
        YAMLInputError: a value YAML cannot build (``!!int abc``, a list as a mapping key), with its line.

    Example:
        >>> yaml_value(compose_yaml("input: [1, 28, 28]").value[0][1])
        [1, 28, 28]
    """
    if node is None:
        return None
    constructor = _Constructor()
    try:
        return constructor.construct_document(node)
    except (yaml.YAMLError, ValueError, TypeError) as err:
        mark = getattr(err, "problem_mark", None) or (constructor.current or node).start_mark
        problem = getattr(err, "problem", None) or str(err)
        raise YAMLInputError(f"not a value YAML can build: {shorten(problem, 120)[1:-1]}", path, _line(mark)) from None


def load_yaml(text: str, path: str = "<string>"):
    """YAML text -> Python values: the one YAML reader of convkit (safe, bounded; see `compose_yaml`).

    Args:
        text: the YAML text.
        path: the file's name, for messages.

    Returns:
        The document's value (None for an empty document).

    Raises:
        YAMLInputError: invalid YAML, a tag other than the plain types, nesting or aliases beyond the bounds;
            the message names ``path`` and the line.

    Example:
        >>> load_yaml("epochs: 3\\nbase: &b {lr: 0.1}\\nagain: *b")
        {'epochs': 3, 'base': {'lr': 0.1}, 'again': {'lr': 0.1}}
        >>> load_yaml("lr: 0.1\\nloop: &a [*a]", "recipe.yaml")
        Traceback (most recent call last):
        ...
        convkit.utils.YAMLInputError: recipe.yaml:2: the alias *a refers to a collection that contains it (a recursive structure)
    """
    return yaml_value(compose_yaml(text, path), path)
