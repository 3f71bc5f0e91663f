"""Artifact store on a local directory (the embedded default)."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from storage.artifacts import OCTET_STREAM, ArtifactStore
from storage.errors import ArtifactNotFound
from storage.keys import TEMP_PREFIX, validate_key

log = logging.getLogger(__name__)
_CHUNK = 1 << 20


def _fsync_dir(directory: Path) -> None:
    # Makes the rename itself durable; some filesystems do not allow opening directories.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def new_file_mode() -> int:
    """The mode `open()` gives a new file: 0666 less the process umask (0644 under the usual 022).

    `mkstemp` always makes 0600 files, which other accounts of a team cannot read. Linux reports the
    umask in /proc; elsewhere it can only be read by setting it, briefly.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return 0o666 & ~int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


@contextlib.contextmanager
def atomic_write(target: Path) -> Iterator[BinaryIO]:
    """Yield a file opened in `target`'s directory; on success it is fsynced and renamed to `target`.

    The temporary name starts with `TEMP_PREFIX`, which no valid key component may use, so a file
    left behind by a crash is never mistaken for an artifact. The file gets the mode of any new file
    (see `new_file_mode`), and new folders the umask's usual 0755.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f"{TEMP_PREFIX}{uuid.uuid4().hex[:8]}-", dir=target.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), new_file_mode())
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(target.parent)


def copy_stream(source: BinaryIO, sink: BinaryIO, length: int = -1) -> int:
    """Copy `length` bytes (all when -1) in 1 MiB chunks; raise `EOFError` if the source ends early."""
    copied = 0
    while length < 0 or copied < length:
        want = _CHUNK if length < 0 else min(_CHUNK, length - copied)
        chunk = source.read(want)
        if not chunk:
            if length >= 0:
                raise EOFError(f"stream ended after {copied} of {length} bytes")
            break
        sink.write(chunk)
        copied += len(chunk)
    return copied


class LocalStore(ArtifactStore):
    """Objects are plain files under `root`; the key is the relative path."""

    def __init__(self, *, root: Path) -> None:
        self.root = Path(root).expanduser().resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def __repr__(self) -> str:
        return f"LocalStore(root={str(self.root)!r})"

    def _path(self, key: str) -> Path:
        return self.root / validate_key(key)

    def put_bytes(self, key: str, data: bytes, *, content_type: str = OCTET_STREAM) -> str:
        with atomic_write(self._path(key)) as handle:
            handle.write(data)
        return self.uri(key)

    def put_file(self, key: str, path: Path, *, content_type: str = OCTET_STREAM) -> str:
        with open(path, "rb") as source, atomic_write(self._path(key)) as handle:
            shutil.copyfileobj(source, handle, _CHUNK)
        return self.uri(key)

    def put_stream(
        self, key: str, stream: BinaryIO, *, length: int = -1, content_type: str = OCTET_STREAM
    ) -> str:
        with atomic_write(self._path(key)) as handle:
            copy_stream(stream, handle, length)
        return self.uri(key)

    def get_bytes(self, key: str) -> bytes:
        path = self._path(key)
        try:
            return path.read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as exc:
            raise ArtifactNotFound(f"no artifact at {self.uri(key)}") from exc

    def get_file(self, key: str, dest: Path) -> Path:
        path = self._path(key)
        dest = Path(dest)
        try:
            source = open(path, "rb")
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as exc:
            raise ArtifactNotFound(f"no artifact at {self.uri(key)}") from exc
        with source, atomic_write(dest) as handle:
            shutil.copyfileobj(source, handle, _CHUNK)
        return dest

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def uri(self, key: str) -> str:
        return self._path(key).as_uri()

    def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            path.unlink()
        except FileNotFoundError:
            return
        log.debug("deleted %s", path)
