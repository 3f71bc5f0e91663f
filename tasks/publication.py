"""One publication per result on a shared lineage: claim before publishing, else adopt the owner's.

Two runs that meet the same content at once both compute it (each checked lineage before the other
had published), and reach publish with the same result key. Before a batch is published the driver
claims its keys (`storage.publication_claims`): each key has one owner. This run publishes the keys
it owns. For a key another run owns it waits, in the driver, until that run's files are in the store
and adopts them (a 'cached' publish attempt naming the publisher), or until that run has stopped
(finished, crashed, or its lease lapsed) without publishing, and then takes the claim over and
publishes itself. A lineage file has one writer at a time, so there everything is this run's.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from storage import Lineage, Stage
from storage.publication_claims import claim_publications, owners_and_liveness, release_publications
from tasks.cache_keys import published_marker
from tasks.config import PipelineSettings
from tasks.executors import Batch
from tasks.handles import Handles
from tasks.items import WorkItem
from tasks.records import LineageRecords
from tasks.reuse import adopt_publications

log = logging.getLogger(__name__)

Publish = Callable[[list[WorkItem]], list[WorkItem]]


def _due(items: list[WorkItem]) -> list[WorkItem]:
    return [i for i in items if i.is_pending and i.next_stage == Stage.PUBLISH]


class PublicationClaims:
    """The driver's side of publication claims for one run."""

    def __init__(self, lin: Lineage, handles: Handles, settings: PipelineSettings, run_id: str, *,
                 poll_s: float = 0.5) -> None:
        self.lin, self.handles, self.settings, self.run_id, self.poll_s = lin, handles, settings, run_id, poll_s

    def split(self, items: list[WorkItem]) -> tuple[list[WorkItem], dict[str, tuple[WorkItem, str]]]:
        """Claim the batch's results: the items this run publishes (with every item not due for publishing),
        and the others by result key, with the run that owns each."""
        if not self.lin.shared_backend:
            return items, {}
        due = _due(items)
        owners = claim_publications(self.lin, self.run_id, [i.result_key for i in due])
        theirs = {i.result_key: (i, owners[i.result_key]) for i in due if owners[i.result_key] != self.run_id}
        return [i for i in items if i.result_key not in theirs or not i.is_pending], theirs

    def release_unpublished(self, items: list[WorkItem]) -> None:
        """Items whose publication failed give their claims up, so another run may try them."""
        if self.lin.shared_backend:
            failed = [i.result_key for i in items if i.failed_at == Stage.PUBLISH and i.result_key]
            release_publications(self.lin, self.run_id, failed)

    def settle_theirs(
        self, theirs: dict[str, tuple[WorkItem, str]], publish: Publish
    ) -> tuple[list[WorkItem], LineageRecords]:
        """Wait for the other runs' publications and adopt them; publish what a stopped owner left.

        Returns the settled items and the rows of the adoptions (the takeovers record through `publish`).
        """
        records = LineageRecords(self.run_id)
        settled: list[WorkItem] = []
        waiting = dict(theirs)
        reported = time.monotonic()
        while waiting:
            settled += self._adopt(waiting, records)
            if not waiting:
                break
            holders = owners_and_liveness(self.lin, list(waiting))
            stopped = {k: owner for k, (owner, live) in holders.items() if not live}
            free = [k for k in waiting if k not in holders or k in stopped]
            if free:
                owners = claim_publications(self.lin, self.run_id, free, take_over=stopped)
                # The owner may have published between the look at the store and the claim.
                settled += self._adopt(waiting, records, only={k for k in free if owners.get(k) == self.run_id})
                ours = [waiting.pop(k)[0] for k in free if k in waiting and owners.get(k) == self.run_id]
                if ours:
                    log.info("run %s publishes %d result(s) that stopped runs had claimed", self.run_id, len(ours))
                    published = publish(ours)
                    self.release_unpublished(published)
                    settled += published
                for key in waiting:
                    if key in owners:
                        waiting[key] = (waiting[key][0], owners[key])
            if waiting:
                if time.monotonic() - reported > 60:
                    reported = time.monotonic()
                    log.info("run %s waits for %d result(s) other runs are publishing", self.run_id, len(waiting))
                time.sleep(self.poll_s)
        return settled, records

    def _adopt(self, waiting: dict[str, tuple[WorkItem, str]], records: LineageRecords,
               only: set[str] | None = None) -> list[WorkItem]:
        """Adopt the waiting items whose files are all in the store; removes them from `waiting`."""
        keys = [k for k in waiting if only is None or k in only]
        if not keys:
            return []
        items = [waiting[k][0] for k in keys]
        cached = self.lin.cache_get_many([published_marker(k) for k in keys])
        owners = {k: waiting[k][1] for k in keys}
        result = adopt_publications(self.handles, Batch(self.run_id, items, self.settings, cached), owners)
        records.extend(result.records)
        adopted = [i for i in result.items if not i.is_pending]
        for item in adopted:
            waiting.pop(item.result_key)
        return adopted
