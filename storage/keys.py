"""Content addressing: hashing helpers and the key layout shared by every store."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from storage.errors import InvalidKey

_CHUNK = 1 << 20
_HEX = re.compile(r"^[0-9a-f]{8,128}$")
# Temporary files of the local store start with this prefix; keys may not, so a half-written
# temporary file can never be mistaken for an artifact.
TEMP_PREFIX = ".tmp-"


def sha256_bytes(data: bytes) -> str:
    """Hex SHA-256 of `data`."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks so big videos never sit in memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def validate_key(key: str) -> str:
    """Return `key` if it is a safe relative object key, else raise `InvalidKey`."""
    if not isinstance(key, str) or not key:
        raise InvalidKey(f"artifact key must be a non-empty string, got {key!r}")
    if key.startswith("/") or "\\" in key or "\x00" in key:
        raise InvalidKey(f"artifact key must be relative and use '/' separators: {key!r}")
    for part in key.split("/"):
        if part in ("", ".", ".."):
            raise InvalidKey(f"artifact key has an empty, '.' or '..' component: {key!r}")
        if part.startswith(TEMP_PREFIX):
            raise InvalidKey(f"artifact key component may not start with {TEMP_PREFIX!r}: {key!r}")
    return key


def content_key(namespace: str, digest: str, suffix: str = "") -> str:
    """Key of a content-addressed artifact: `namespace/ab/abcdef...suffix`.

    The two-character fan-out keeps directories small on a local disk and spreads S3 prefixes.
    `suffix` is an extension such as ".safetensors" (the dot is added when missing).
    """
    if not _HEX.match(digest):
        raise InvalidKey(f"digest must be 8-128 lowercase hex characters, got {digest!r}")
    if suffix and not suffix.startswith("."):
        suffix = "." + suffix
    if "/" in suffix:
        raise InvalidKey(f"suffix may not contain '/': {suffix!r}")
    return validate_key(f"{namespace.strip('/')}/{digest[:2]}/{digest}{suffix}")
