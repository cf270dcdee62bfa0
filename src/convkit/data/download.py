"""Downloads that either leave a verified file or nothing: a temp file beside the target, checked, then renamed."""

from __future__ import annotations

import hashlib
import http.client
import os
import tarfile
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from tqdm.auto import tqdm

from convkit.data.errors import DownloadError

_CHUNK = 1 << 16


def file_digest(path: str | os.PathLike, algorithm: str = "sha256") -> str:
    """Hex digest of a file, read in chunks.

    Example:
        >>> from pathlib import Path
        >>> _ = Path("hello.txt").write_bytes(b"hello")
        >>> file_digest("hello.txt", "md5")
        '5d41402abc4b2a76b9719d911017c592'
    """
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def download(url: str, dest: str | os.PathLike, *, md5: str | None = None, sha256: str | None = None,
             progress: bool = True, timeout: float = 30.0) -> Path:
    """Downloads `url` to `dest`, verifying its checksum before the file appears under its name.

    The bytes go to a temp file in `dest`'s folder (so the final rename is atomic on the same file system);
    a failed or mismatching download removes it, and never leaves a partial file at `dest`.

    Args:
        url: http(s) or file URL.
        dest: the file to create (its folder is created).
        md5, sha256: the published checksum(s) of the file; at least one should be given.
        progress: show a tqdm progress bar on stderr.
        timeout: seconds to wait for the server.

    Returns:
        `dest` as a Path.

    Raises:
        DownloadError: the server is unreachable or answers with an error, or the checksum differs (the
            message gives the expected and the actual digest).

    Example:
        >>> from pathlib import Path
        >>> _ = Path("hello.txt").write_bytes(b"hello")
        >>> url = Path("hello.txt").resolve().as_uri()   # file://...; http(s) URLs work the same way
        >>> download(url, "data/hello.txt", md5="5d41402abc4b2a76b9719d911017c592", progress=False)
        PosixPath('data/hello.txt')
        >>> download(url, "data/other.txt", md5="0" * 32, progress=False)
        Traceback (most recent call last):
            ...
        convkit.data.errors.DownloadError: file:///.../hello.txt: md5 checksum mismatch:
        expected 00000000000000000000000000000000, got 5d41402abc4b2a76b9719d911017c592; the file was discarded ...
        >>> Path("data/other.txt").exists()                     # nothing left behind
        False
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    hashes = {name: hashlib.new(name) for name, want in (("md5", md5), ("sha256", sha256)) if want}
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=dest.name, disable=not progress) as bar:
                for chunk in iter(lambda: response.read(_CHUNK), b""):
                    out.write(chunk)
                    for h in hashes.values():
                        h.update(chunk)
                    bar.update(len(chunk))
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes files private; data files are for everyone to read
        for name, want in (("md5", md5), ("sha256", sha256)):
            if want and hashes[name].hexdigest() != want.lower():
                raise DownloadError(f"{url}: {name} checksum mismatch: expected {want}, got "
                                    f"{hashes[name].hexdigest()}; the file was discarded (a corrupted download "
                                    "or a changed file on the server)")
        os.replace(tmp, dest)
    except (urllib.error.URLError, TimeoutError, ConnectionError, http.client.HTTPException) as err:
        Path(tmp).unlink(missing_ok=True)
        raise DownloadError(f"{url}: cannot download ({getattr(err, 'reason', err)})") from err
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return dest


def extract_tar(archive: str | os.PathLike, into: str | os.PathLike) -> Path:
    """Extracts a tar archive safely: members that would land outside `into`, links and devices are refused.

    Args:
        archive: a .tar, .tar.gz, .tgz file.
        into: the folder to extract into (created).

    Returns:
        `into` as a Path.

    Raises:
        tarfile.TarError: a damaged archive or an unsafe member.

    Example:
        >>> import tarfile
        >>> from pathlib import Path
        >>> _ = Path("hello.txt").write_text("hello")
        >>> with tarfile.open("archive.tar.gz", "w:gz") as tar:
        ...     tar.add("hello.txt", arcname="docs/hello.txt")
        >>> extract_tar("archive.tar.gz", "data")
        PosixPath('data')
        >>> Path("data/docs/hello.txt").read_text()
        'hello'
    """
    into = Path(into)
    into.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive) as tar:
        tar.extractall(into, filter="data")  # the "data" filter (PEP 706) blocks path traversal and specials
    return into
