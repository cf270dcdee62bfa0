"""What `convkit serve` refuses before any pixel is decoded: bodies over the size limit, and bytes that are not an
image by their magic numbers (never by a file name or a content type).

* `Limits`: the server's limits and their defaults (the ``convkit serve`` options);
* `sniff`: the image format from the first bytes, or None;
* `read_body`: a request's body, refused (413) on its Content-Length before reading and while streaming a chunked
  one, so a client cannot make the server hold more than the limit;
* `HTTPError`: an answer other than 200, with its status, one-line detail and headers.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

__all__ = ["FORMATS", "HTTPError", "Limits", "read_body", "sniff"]

# magic numbers of the formats served (PIL reads more, but these are the ones a client sends)
FORMATS = ("PNG", "JPEG", "GIF", "BMP", "WebP", "TIFF")


class HTTPError(Exception):
    """An answer other than 200: `status`, a one-line `detail` (sent as ``{"detail": ...}``) and `headers`."""

    def __init__(self, status: int, detail: str, headers: dict[str, str] | None = None):
        super().__init__(detail)
        self.status, self.detail, self.headers = status, detail, headers or {}


@dataclass(frozen=True)
class Limits:
    """The server's limits (the options of ``convkit serve``).

    Attributes:
        max_batch: the most images in one forward pass.
        max_wait_ms: how long the batcher waits for more requests after the first of a batch.
        queue: the most requests waiting for the model (admitted, not yet in a forward pass); more: 503.
        timeout_s: a request's deadline from its arrival (decode, queue and forward pass); later: 504.
        max_body_bytes: the largest request body; larger: 413.
        max_pixels: the most pixels of one image, read from its header; more: 422.
        token: when set, every route but / and /health needs ``Authorization: Bearer <token>``.

    Example:
        >>> Limits(max_batch=8).public()["max_batch"], Limits().max_body_bytes
        (8, 10485760)
    """

    max_batch: int = 32
    max_wait_ms: float = 5.0
    queue: int = 256
    timeout_s: float = 10.0
    max_body_bytes: int = 10 * 2**20
    max_pixels: int = 40_000_000
    token: str | None = None

    def __post_init__(self):
        for name in ("max_batch", "queue", "max_body_bytes", "max_pixels"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        for name in ("max_wait_ms", "timeout_s"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not math.isfinite(value) or value < 0 or (
                    name == "timeout_s" and value == 0):
                raise ValueError(f"{name} must be a {'positive' if name == 'timeout_s' else 'non-negative'} "
                                 f"number, got {value!r}")

    def public(self) -> dict:
        """The limits a client may know (all but the token), as /model lists them."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k != "token"}

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


def sniff(data: bytes) -> str | None:
    """The image format of `data` from its magic number (one of `FORMATS`), or None.

    Example:
        >>> sniff(b"\\x89PNG\\r\\n\\x1a\\n..."), sniff(b"RIFF\\x00\\x00\\x00\\x00WEBPVP8 "), sniff(b"<html>")
        ('PNG', 'WebP', None)
    """
    head = bytes(data[:16])
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "GIF"
    if head.startswith(b"BM") and len(head) >= 14:
        return "BMP"
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return "WebP"
    if head.startswith((b"II*\x00", b"MM\x00*")):
        return "TIFF"
    return None


def content_length(headers) -> int | None:
    """The Content-Length header as an int; None when absent; HTTPError 400 when not a number."""
    value = headers.get("content-length")
    if value is None:
        return None
    value = value.strip()
    if not value.isdigit() or len(value) > 30:
        raise HTTPError(400, f"Content-Length is not a number: {value[:40]!r}")
    return int(value)


async def read_body(request, max_bytes: int) -> bytes:
    """The body of a Starlette `request`, at most `max_bytes` long.

    Raises:
        HTTPError: 413 when the Content-Length says more (nothing is read) or when a chunked body grows past the
            limit (reading stops there).
    """
    limit_mb = max_bytes / 2**20
    declared = content_length(request.headers)
    if declared is not None and declared > max_bytes:
        raise HTTPError(413, f"the body is {declared} bytes; this server takes at most {max_bytes} "
                        f"({limit_mb:g} MB, --max-body-mb)")
    parts, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise HTTPError(413, f"the body is over {max_bytes} bytes ({limit_mb:g} MB, --max-body-mb)")
        parts.append(chunk)
    body = b"".join(parts)
    request._body = body  # Starlette's request.form() then parses these bytes instead of the spent stream
    return body
