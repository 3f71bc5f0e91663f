"""What the command line says when a run cannot go on: one line naming the cause, the traceback in a
log file, exit status 1.

A store that is down, credentials it refuses, a full disk or a work directory that cannot be written
stop a whole run; their tracebacks say little to an operator and scroll the cause away.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import sys
import tempfile
import traceback
from collections.abc import Iterator
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from flows.reasons import describe

console = Console(stderr=True)

def _write_traceback(workdir: Path, exc: BaseException) -> Path | None:
    """The traceback in WORKDIR/logs/, or in the temporary directory when the work directory cannot
    take it (read-only, full); None when nowhere can."""
    name = f"thinksound-error-{dt.datetime.now(dt.UTC):%Y%m%d-%H%M%S}.log"
    text = "".join(traceback.format_exception(exc))
    for folder in (workdir / "logs", Path(tempfile.gettempdir()) / "thinksound-logs"):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            (folder / name).write_text(text)
        except OSError:
            continue
        return folder / name
    return None


class _WithoutTraceback(logging.Formatter):
    """Formats like `inner`, minus the traceback: the record keeps it for the other handlers."""

    def __init__(self, inner: logging.Formatter) -> None:
        super().__init__()
        self.inner = inner

    def format(self, record: logging.LogRecord) -> str:
        saved = record.exc_info, record.exc_text, record.stack_info
        record.exc_info = record.exc_text = record.stack_info = None
        try:
            return self.inner.format(record)
        finally:
            record.exc_info, record.exc_text, record.stack_info = saved


def console_logs_without_tracebacks() -> None:
    """Prefect's terminal log lines stay one line each; the tracebacks still reach the Prefect API (the
    UI shows them) and, for an error that stops the command, the log file of `fatal_errors`."""
    from prefect.logging.configuration import ensure_logging_setup
    from prefect.logging.handlers import PrefectConsoleHandler

    ensure_logging_setup()  # Prefect adds its console handler lazily: set it up now, or there is none to wrap
    for handler in logging.getLogger().handlers:
        if isinstance(handler, PrefectConsoleHandler) and not isinstance(handler.formatter, _WithoutTraceback):
            handler.setFormatter(_WithoutTraceback(handler.formatter or logging.Formatter()))


_workdir: list[Path] = []


def record_workdir(workdir: Path) -> None:
    """The command's work directory, where `fatal_errors` writes the traceback."""
    _workdir[:] = [workdir]


@contextlib.contextmanager
def fatal_errors() -> Iterator[None]:
    """Turn an unexpected error that stops the command into one line, a log file and exit status 1."""
    try:
        yield
    except Exception as exc:
        log = _write_traceback(_workdir[0] if _workdir else Path(tempfile.gettempdir()), exc)
        where = f" (traceback in {log})" if log else ""
        console.print(f"[red]error:[/] {escape(describe(exc))}{escape(where)}", soft_wrap=True)
        sys.exit(1)
