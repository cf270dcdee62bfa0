"""What the ``convkit`` verbs share: the CLI's error, argument parsers, the model arguments, JSON and warnings.

The layering of the ``cli`` package: ``cli.main`` imports the verb modules (``train_cmds``, ``explain_cmds``,
``kernel_cmds``, ``report_cmds``), and they import only this module, which imports no other ``cli`` module.

Errors: a verb raises (or lets through) a `convkit.errors.ConvkitError`, whose message says what was wrong and
what was expected; ``cli.main.main`` catches it once and prints ``convkit: error: <message>`` (exit code 2;
``convkit --debug VERB ...`` shows the traceback instead).
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import math
import os
import sys
import warnings
from collections.abc import Callable, Iterator

from convkit.errors import ConvkitError
from convkit.utils import YAMLInputError, load_yaml, shorten

__all__ = [
    "FORMATTER", "USER_ERRORS", "CLIError", "add_json", "add_model_arguments", "build_model", "int_at_least",
    "key_values", "nonnegative_int", "os_error_message", "parse_shape", "positive_float", "positive_int",
    "print_json", "reported_warnings", "warn",
]

FORMATTER = argparse.RawDescriptionHelpFormatter  # keeps the examples' line breaks in every --help

# What `convkit` prints as one line (`convkit: error: ...`) instead of a traceback. ConvkitError is the contract:
# a user error is a ConvkitError. OSError and ValueError are caught too, because user input still reaches the
# verbs' code as plain ones (a file that cannot be read or written, a value out of range) that printed a clean
# message before ConvkitError existed; raise a ConvkitError subclass in new code.
USER_ERRORS: tuple[type[BaseException], ...] = (ConvkitError, OSError, ValueError)


class CLIError(ConvkitError):
    """A user error found by the command line itself (options that do not go together, nothing found).

    Example:
        >>> err = CLIError("--layer needs --model (a zoo name or a model file)")
        >>> isinstance(err, ConvkitError), err.exit_code
        (True, 2)
    """


def parse_shape(text: str) -> tuple[int, ...]:
    """``'3x224x224'`` -> ``(3, 224, 224)``; argparse reports a ValueError as a usage error.

    Example:
        >>> parse_shape("3x32x32"), parse_shape("1,28,28")
        ((3, 32, 32), (1, 28, 28))
    """
    try:
        shape = tuple(int(p) for p in text.lower().replace("×", "x").replace(",", "x").split("x"))
    except ValueError:
        shape = ()
    if len(shape) != 3 or min(shape) < 1:
        raise argparse.ArgumentTypeError(f"expected CxHxW such as 3x224x224, got {shorten(text)}")
    return shape


def key_values(text: str) -> dict:
    """``'a=1,b=true,c=[1,2]'`` -> ``{'a': 1, 'b': True, 'c': [1, 2]}``: values read as YAML, dashes in keys
    read as underscores (the parser of ``--augment`` and ``--model-arg``). Values are read by the one YAML
    reader (`convkit.utils.load_yaml`: plain types, bounded aliases); a bad one is a usage error naming its item.

    Example:
        >>> key_values("crop_padding=4,horizontal-flip=true,widths=[16,32]")
        {'crop_padding': 4, 'horizontal_flip': True, 'widths': [16, 32]}
    """
    out, depth, item = {}, 0, ""
    for ch in text + ",":
        depth += ch in "[{" or -(ch in "]}")
        if ch == "," and depth == 0:
            if item.strip():
                key, sep, value = item.partition("=")
                if not sep:
                    raise argparse.ArgumentTypeError(f"expected key=value, got {shorten(item)}")
                try:
                    out[key.strip().replace("-", "_")] = load_yaml(value, key.strip()) if value.strip() else None
                except YAMLInputError as err:
                    raise argparse.ArgumentTypeError(f"{shorten(item.strip())}: {err.problem}") from None
            item = ""
        else:
            item += ch
    if depth != 0 or item:  # an unclosed [ or {, or a ] too many: never drop what was given
        raise argparse.ArgumentTypeError(f"unbalanced brackets in {shorten(text)}")
    return out


class MergeKeyValues(argparse.Action):
    """An option of ``K=V,...`` items (`key_values`) that may be repeated: each use adds its items to the earlier
    ones (a key given again takes the later value), so ``--model-arg depth=3 --model-arg width=8`` keeps both.

    Example:
        >>> p = argparse.ArgumentParser()
        >>> _ = p.add_argument("--model-arg", type=key_values, action=MergeKeyValues, default={})
        >>> p.parse_args(["--model-arg", "depth=3", "--model-arg", "width=8,depth=2"]).model_arg
        {'depth': 2, 'width': 8}
    """

    def __call__(self, parser, namespace, values, option_string=None):
        earlier = getattr(namespace, self.dest, None)
        setattr(namespace, self.dest, {**earlier, **values} if isinstance(earlier, dict) else dict(values))


def add_json(p: argparse.ArgumentParser | argparse._ArgumentGroup, help: str = "print JSON") -> None:
    """Adds ``--json`` (a flag, ``args.json``): the verb prints its result as JSON (see `print_json`).

    Example:
        >>> parser = argparse.ArgumentParser()
        >>> add_json(parser, "print the rows as JSON")
        >>> parser.parse_args(["--json"]).json
        True
    """
    p.add_argument("--json", action="store_true", help=help)


def print_json(data) -> None:
    """Prints ``data`` as indented JSON on stdout (what ``--json`` asks for).

    Example:
        >>> print_json({"path": "out.png", "size": [2, 3]})
        {
          "path": "out.png",
          "size": [
            2,
            3
          ]
        }
    """
    print(json.dumps(data, indent=2))


def warn(message) -> None:
    """Prints ``convkit: warning: <message>`` on stderr.

    Example:
        >>> warn("shoe.png: cannot decode image; skipped")
    """
    print(f"convkit: warning: {message}", file=sys.stderr)


@contextlib.contextmanager
def reported_warnings(category: type[Warning] = Warning) -> Iterator[list]:
    """Collects the warnings raised inside (every time, not once per place) and, if the block ends without an
    error, prints those of ``category`` with `warn`. Yields the list of all caught warnings.

    Example:
        >>> with reported_warnings(RuntimeWarning):
        ...     warnings.warn("no test images: the Grad-CAM section is left out", RuntimeWarning)
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield caught
    for w in caught:
        if issubclass(w.category, category):
            warn(w.message)


def int_at_least(low: int) -> Callable[[str], int]:
    """An argparse type: a whole number of at least ``low`` (argparse reports anything else as a usage error,
    exit code 2, naming the option).

    Example:
        >>> int_at_least(0)("0")
        0
        >>> int_at_least(0)("-3")
        Traceback (most recent call last):
        ...
        argparse.ArgumentTypeError: expected a whole number of at least 0, got '-3'
    """
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < low:
            raise argparse.ArgumentTypeError(f"expected a whole number of at least {low}, got {shorten(text)}")
        return value

    parse.__name__ = "positive_int" if low == 1 else f"int_at_least_{low}"
    return parse


positive_int = int_at_least(1)
positive_int.__doc__ = """An argparse type: a whole number of at least 1 (a count, a batch size, a step).

    Example:
        >>> positive_int("10")
        10
        >>> positive_int("0")
        Traceback (most recent call last):
        ...
        argparse.ArgumentTypeError: expected a whole number of at least 1, got '0'
    """
nonnegative_int = int_at_least(0)
nonnegative_int.__doc__ = """An argparse type: a whole number of at least 0 (an index, or a count where 0 means none).

    Example:
        >>> nonnegative_int("0")
        0
    """


def positive_float(text: str) -> float:
    """An argparse type: a finite number above 0 (a learning rate, a sigma).

    Example:
        >>> positive_float("3e-4")
        0.0003
        >>> positive_float("nan")
        Traceback (most recent call last):
        ...
        argparse.ArgumentTypeError: expected a number above 0, got 'nan'
    """
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a number above 0, got {shorten(text)}")
    return value


def os_error_message(err: OSError) -> str:
    """The one line ``convkit`` prints for a failed file operation: the path, then the system's reason.

    ``[Errno 30] Read-only file system: 'runs/x'`` becomes ``runs/x: read-only file system``; a full disk (or
    a file-size limit, EFBIG) says so. An OSError without a path (convkit's own messages) is printed as it is.

    Args:
        err: the error.

    Returns:
        The message, without the ``convkit: error:`` prefix.

    Example:
        >>> import errno, os
        >>> os_error_message(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "runs/x/resume.safetensors"))
        'runs/x/resume.safetensors: no space left on device (free some space, or write elsewhere)'
        >>> os_error_message(FileNotFoundError("shoe.png: no such image"))
        'shoe.png: no such image'
    """
    if err.filename is None or not err.strerror:
        return str(err)
    where = os.fsdecode(err.filename)
    if err.filename2 is not None:
        where += f" -> {os.fsdecode(err.filename2)}"
    reason = err.strerror[:1].lower() + err.strerror[1:]
    return f"{where if len(where) <= 300 else shorten(where, 300)}: {reason}{_HINTS.get(err.errno, '')}"


_HINTS = {  # what to do about the errors a disk gives
    errno.ENOSPC: " (free some space, or write elsewhere)",
    errno.EFBIG: " (the disk is full or a file-size limit was reached)",
    errno.EDQUOT: " (the disk quota is used up)",
    errno.ENOTDIR: " (a file stands where a folder is needed)",
}


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    """The arguments every verb that builds a model shares: a model reference, and its head."""
    p.add_argument("model", help="a zoo name (see `convkit models`), a model file (.yaml), a run folder or a "
                   ".safetensors checkpoint")
    p.add_argument("--num-classes", type=positive_int, help="classes of the classifier (default: the model's)")
    p.add_argument("--in-channels", type=positive_int,
                   help="input channels, e.g. 1 for grayscale (default: the model's)")


def named_segmenter(name: str, num_classes: int | None = None, in_channels: int | None = None,
                    input_shape: tuple[int, ...] | None = None, backbone: str | None = None):
    """(the segmenter, its input shape) when `name` is one of `SEGMENTERS` (and no such file exists), else None:
    random weights, `num_classes` (default 11, the scenes'), `in_channels` (default the input's, else 1),
    `input_shape` (default Cx96x96, the scenes'); `backbone` for the FCNs and the convolutionized classifier.

    Example:
        >>> model, shape = named_segmenter("unet", input_shape=(1, 64, 64))
        >>> model.model_cfg.name, shape
        ('unet', (1, 64, 64))
        >>> named_segmenter("resnet18") is None
        True
    """
    import os

    from convkit.tasks.segmentation.models import SEGMENTERS, build_segmenter

    if name not in SEGMENTERS or os.path.exists(name):
        return None
    channels = in_channels or (input_shape[0] if input_shape else 1)
    shape = tuple(input_shape) if input_shape else (channels, 96, 96)
    return build_segmenter(name, backbone, num_classes or 11, channels, tuple(shape[1:])), shape


def build_model(args: argparse.Namespace, input_shape: tuple[int, ...] | None = None, meta: bool = True):
    """The model that ``args.model`` names (zoo name, model file, run folder or checkpoint), through the one
    resolver (`convkit.models.resolve_model`); returns ``(model, input_shape)``: the shape given, else the model's
    own, else None when nothing says.

    Errors (unknown names, bad files, damaged checkpoints) are ConvkitErrors, reported by ``main``.
    """
    from convkit.models import resolve_model

    model = resolve_model(args.model, num_classes=args.num_classes, in_channels=args.in_channels, meta=meta)
    shape = input_shape or model.model_cfg.input_shape
    return model, tuple(shape) if shape else None  # None: `convkit.summary` picks the default
