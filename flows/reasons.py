"""Why a run stopped, in one line: for the terminal and for the items the stop left unfinished."""

from __future__ import annotations

import errno
import signal
from collections.abc import Iterator

from prefect.exceptions import TerminationSignal

from flows.shutdown import Interrupted

_S3_REFUSED = ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "InvalidToken")
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
_NOT_WRITABLE = (errno.EROFS, errno.EACCES, errno.EPERM)


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def describe(exc: BaseException) -> str:
    """The cause of a fatal error in one line: what failed, then the system's own words."""
    from tasks.artifact_store import StorageError, TransientStorageError

    for cause in _chain(exc):
        if isinstance(cause, OSError) and cause.errno in _NO_SPACE:
            where = f" writing {cause.filename}" if cause.filename else ""
            return f"disk full{where}: {cause.strerror}"
        if isinstance(cause, OSError) and cause.errno in _NOT_WRITABLE:
            where = f" {cause.filename}" if cause.filename else ""
            return f"cannot write{where}: {cause.strerror} (is the work directory read-only?)"
        message = _first_line(cause)
        if "No space left on device" in message:
            return f"disk full: {message}"
        if "Read-only file system" in message or "Permission denied" in message:
            return f"cannot write: {message} (is the work directory read-only?)"
        if isinstance(cause, StorageError):
            if any(code in message for code in _S3_REFUSED):
                return f"S3 refused the credentials (check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY): {message}"
            if isinstance(cause, TransientStorageError):
                return f"the artifact store is unreachable: {message}"
            return f"artifact store error: {message}"
    return f"{type(exc).__name__}: {_first_line(exc)}"


def stop_reason(exc: BaseException, stage: str | None) -> str:
    """What an item that a run-stopping error left unfinished records as its error."""
    last_stage = f" (last stage: {stage or 'none'})"
    if isinstance(exc, Interrupted):
        return f"run {exc} before the item finished{last_stage}"
    if isinstance(exc, TerminationSignal):  # Prefect's own SIGTERM handler, while a flow runs
        return f"run stopped by {signal.Signals(exc.signal).name} before the item finished{last_stage}"
    if isinstance(exc, KeyboardInterrupt):
        return f"run interrupted before the item finished{last_stage}"
    return f"run stopped before the item finished{last_stage}: {describe(exc)}"
