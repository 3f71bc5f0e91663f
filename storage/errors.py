"""Exception types of the storage layer.

Callers retry only `TransientStorageError` (network trouble, timeouts, 5xx answers); everything else
is a bug or a bad item and must not be retried.
"""

from __future__ import annotations


class StorageError(Exception):
    """Base class of every error raised by `storage`."""


class TransientStorageError(StorageError):
    """A storage operation failed for a reason that may go away when retried."""


class ArtifactNotFound(StorageError, LookupError):
    """The requested key does not exist in the store."""


class InvalidKey(StorageError, ValueError):
    """An artifact key that could escape the store root or is otherwise malformed."""


def is_transient(exc: BaseException) -> bool:
    """True when `exc`, or an exception it was raised from, is a `TransientStorageError`."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, TransientStorageError):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False
