"""Retry policy: only transient failures (storage, network) are worth another attempt."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

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


T = TypeVar("T")

logger = logging.getLogger(__name__)

# A batch's stages (one task run per batch) retry transient errors themselves, as stage tasks do.
STAGE_RETRIES = 2
RETRY_DELAY_S = 2.0


def with_transient_retries(
    call: Callable[[], T], *, retries: int = STAGE_RETRIES, delay_s: float = RETRY_DELAY_S
) -> T:
    """`call()`, called again after `delay_s` when it raises a transient error, `retries` times at most."""
    for retries_left in range(retries, 0, -1):
        try:
            return call()
        except TRANSIENT_ERRORS as exc:
            logger.warning("transient error, retrying in %.0f s (%d left): %s", delay_s, retries_left, exc)
            time.sleep(delay_s)
    return call()


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
    """The decorator of a chunk's stage task (ingest, CoT): a named run per chunk, retried only on
    transient errors.

    Caching is off: results are content-addressed in the store and lineage, not in Prefect.
    """
    return task(
        name=name,
        task_run_name=f"{name}-{{batch_id}}",
        retries=STAGE_RETRIES,
        retry_delay_seconds=RETRY_DELAY_S,
        retry_condition_fn=retry_on_transient,
        cache_policy=NONE,
    )
