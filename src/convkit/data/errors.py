"""The data package's errors: each names the file (or URL) at fault and what was expected there."""

from convkit.errors import ConvkitError


class DataFormatError(ValueError, ConvkitError):
    """A file is not in the format it claims to be (wrong magic number, truncated, corrupt image, bad pickle)."""


class LabelError(ValueError, ConvkitError):
    """A label lies outside the class range or the class list, or an image belongs to two classes; the message
    names the file (and line) that holds it."""


class DatasetNotFoundError(FileNotFoundError, ConvkitError):
    """A dataset is not on disk (and could not be downloaded); the message says where to get it and where to put it."""


class DownloadError(OSError, ConvkitError):
    """A download failed: the server was unreachable, or the file's checksum did not match the published one."""
