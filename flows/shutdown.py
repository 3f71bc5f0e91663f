"""SIGTERM and SIGINT for long-running commands: unwind cleanly, then exit 143 or 130.

The signal becomes an exception in the main thread, so the run unwinds as after any crash: the batch
being published is finished and committed, lineage marks the run crashed, and every context manager
that started a process (the embedded Prefect API, a vLLM server, the demo's web server) stops it.
The exception derives from BaseException, so no `except Exception` on the way swallows it.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator

# A process ended by signal N exits 128 + N by convention: 143 for SIGTERM, 130 for SIGINT.
_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Interrupted(BaseException):
    """The command was asked to stop by a signal."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def _raise_interrupted(signum: int, _frame: object) -> None:
    # Later signals are ignored while the first one unwinds: cleanup is bounded by its own timeouts,
    # and a second Ctrl-C must not leave a child behind half-stopped.
    for other in _SIGNALS:
        signal.signal(other, signal.SIG_IGN)
    raise Interrupted(signum)


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """Turn SIGTERM and SIGINT into `Interrupted` while the block runs (main thread only)."""
    previous = {signum: signal.signal(signum, _raise_interrupted) for signum in _SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
