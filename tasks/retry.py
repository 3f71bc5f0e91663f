"""Retry policy: only transient failures (storage, network) are worth another attempt."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NONE
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


def stage_task(name: str):
    """The decorator of a batch stage task: named runs per batch, retried only on transient errors.

    Caching is off: results are content-addressed in the store and lineage, not in Prefect.
    """
    return task(
        name=name,
        task_run_name=f"{name}-{{batch_id}}",
        retries=2,
        retry_delay_seconds=2,
        retry_condition_fn=retry_on_transient,
        cache_policy=NONE,
    )
