"""Publication claims: of the runs that computed one result, exactly one publishes it.

Results are content-addressed, so two runs that meet the same content at the same time compute the
same result key; without a claim both would write its files and rows. A run claims the keys of a
batch just before publishing it. Claims are written in a serialised transaction (on a DuckLake every
such transaction updates one lock row, so of two concurrent claimers one commits and the other
retries and then reads the first one's claim), so each key has one owner. A run that finds another
owner adopts that run's publication, or takes the claim over once the owner has stopped
(finished, crashed or abandoned) without publishing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import duckdb

from storage.lineage_records import to_utc

if TYPE_CHECKING:
    from storage.lineage import Lineage


def claim_publications(
    lineage: Lineage, run_id: str, keys: Sequence[str], *, take_over: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Claim each result key for `run_id` unless another run holds it; returns each key's owner.

    `take_over` maps keys to the (stopped) owner this run may replace: the claim moves only if that
    run still holds it.
    """
    if not keys:
        return {}
    take_over = dict(take_over or {})

    def claim(con: duckdb.DuckDBPyConnection) -> dict[str, str]:
        owners = dict(con.execute(
            "SELECT result_key, run_id FROM publication_claims WHERE list_contains(?::VARCHAR[], result_key)",
            [list(keys)],
        ).fetchall())
        now = to_utc(None)
        new = [key for key in dict.fromkeys(keys) if key not in owners]
        if new:
            con.executemany(
                "INSERT INTO publication_claims (result_key, run_id, claimed_at) VALUES (?, ?, ?)",
                [(key, run_id, now) for key in new],
            )
        moved = [key for key, dead in take_over.items() if owners.get(key) == dead and dead != run_id]
        if moved:
            con.execute(
                "UPDATE publication_claims SET run_id = ?, claimed_at = ? WHERE list_contains(?::VARCHAR[], result_key)",
                [run_id, now, moved],
            )
        return {**owners, **{key: run_id for key in (*new, *moved)}}

    return lineage.serialized(claim)


def release_publications(lineage: Lineage, run_id: str, keys: Sequence[str]) -> None:
    """Give up this run's claims on keys it did not publish (their publication failed)."""
    if keys:
        lineage.serialized(lambda con: con.execute(
            "DELETE FROM publication_claims WHERE run_id = ? AND list_contains(?::VARCHAR[], result_key)",
            [run_id, list(keys)],
        ))


def owners_and_liveness(lineage: Lineage, keys: Sequence[str]) -> dict[str, tuple[str, bool]]:
    """Each claimed key's owner, and whether that run is still running (its lease is current)."""
    if not keys:
        return {}
    rows = lineage.execute(
        "SELECT c.result_key, c.run_id, coalesce(r.status = 'running', false) AS live FROM publication_claims c "
        "LEFT JOIN run_effective r ON r.run_id = c.run_id WHERE list_contains(?::VARCHAR[], c.result_key)",
        [list(keys)],
    )
    return {r["result_key"]: (r["run_id"], r["live"]) for r in rows}
