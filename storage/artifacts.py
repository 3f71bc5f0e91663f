"""The artifact store interface shared by the local-directory and the S3 stores.

Every write is atomic: a reader sees either the previous object or the complete new one, never a
partial one. Keys are relative '/'-separated paths (see `storage.keys.validate_key`); content-
addressed keys come from `storage.keys.content_key`.
"""

from __future__ import annotations

import abc
from pathlib import Path
from typing import BinaryIO

OCTET_STREAM = "application/octet-stream"


class ArtifactStore(abc.ABC):
    """Put and get whole objects by key. Implementations are safe to share between threads."""

    @abc.abstractmethod
    def put_bytes(self, key: str, data: bytes, *, content_type: str = OCTET_STREAM) -> str:
        """Store `data` under `key` atomically and return the object's URI."""

    @abc.abstractmethod
    def put_file(self, key: str, path: Path, *, content_type: str = OCTET_STREAM) -> str:
        """Store the file at `path` under `key` atomically, streaming it, and return the URI."""

    @abc.abstractmethod
    def put_stream(
        self, key: str, stream: BinaryIO, *, length: int = -1, content_type: str = OCTET_STREAM
    ) -> str:
        """Store everything read from `stream` (until EOF, or `length` bytes) atomically.

        If reading the stream fails, nothing is stored and the previous object, if any, is kept.
        """

    @abc.abstractmethod
    def get_bytes(self, key: str) -> bytes:
        """Return the whole object; raise `ArtifactNotFound` when it does not exist."""

    @abc.abstractmethod
    def get_file(self, key: str, dest: Path) -> Path:
        """Download the object to `dest` (atomically replaced) and return `dest`."""

    @abc.abstractmethod
    def exists(self, key: str) -> bool:
        """True when a complete object is stored under `key`."""

    @abc.abstractmethod
    def uri(self, key: str) -> str:
        """The object's URI: `file:///abs/path` or `s3://bucket/prefix/key`."""

    def share_url(self, key: str, *, expires_s: int) -> str | None:
        """An HTTP URL that lets anyone holding it read the object for `expires_s` seconds, or None
        when the store has no such thing (a local folder: serve it with `thinksound serve`)."""
        return None

    @abc.abstractmethod
    def delete(self, key: str) -> None:
        """Remove the object; deleting a missing key is not an error."""
