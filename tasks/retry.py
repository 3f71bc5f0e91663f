"""Retry policy: only transient failures (storage, network) are worth another attempt."""

from __future__ import annotations

from prefect.states import State

from cot_prompts import CotError
from storage import TransientStorageError

# CotError: the vLLM server could not be reached at all (item-level problems never raise).
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    TransientStorageError,
    CotError,
    ConnectionError,
    TimeoutError,
)


def retry_on_transient(task, task_run, state: State) -> bool:
    """Prefect retry condition: retry when the failure was a transient I/O error, never otherwise."""
    try:
        state.result()
    except TRANSIENT_ERRORS:
        return True
    except BaseException:
        return False
    return False
