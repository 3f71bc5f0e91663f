"""`thinksound status` and `thinksound lineage`: read lineage, for people (a compact table) or scripts
(`--json`, errors included)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

console = Console(stderr=True)

Workdir = Annotated[Path, typer.Option("--workdir", "-w", help="Lineage, local artifacts and Prefect state.")]
AsJson = Annotated[bool, typer.Option("--json", help="Machine-readable output (errors too).")]

LOCKED_MESSAGE = "a run is writing this lineage; try again or use the shared lineage backend"


def _fail(message: str, as_json: bool) -> typer.Exit:
    if as_json:
        sys.stdout.write(json.dumps({"error": message}) + "\n")
    else:
        console.print(f"[red]error:[/] {escape(message)}", soft_wrap=True)
    return typer.Exit(1)


def _read(workdir: Path, as_json: bool, query):
    """Run `query(lineage)` on a read-only handle; a missing or busy database is one clear error, at once."""
    from storage import Lineage, LineageLocked

    path = workdir / "lineage.duckdb"
    if not path.exists():
        raise _fail(f"no lineage database at {path}", as_json)
    try:
        # No waiting: a run holds DuckDB's lock for its whole duration.
        with Lineage.open(path, read_only=True, timeout_s=0) as lin:
            return query(lin)
    except LineageLocked:
        raise _fail(f"{LOCKED_MESSAGE} ({path})", as_json) from None


def _wall(row: dict[str, Any]) -> str:
    return "" if row.get("wall_s") is None else f"{row['wall_s']:.1f}"


def _started(row: dict[str, Any]) -> str:
    started = row.get("started_at")
    return started.strftime("%m-%d %H:%M") if started is not None else ""


def runs_table(rows: list[dict[str, Any]]) -> Table:
    """One line per run that fits 80 columns: the run id in full, when (UTC), how long, and the counts."""
    table = Table(box=None, padding=(0, 1, 0, 0), pad_edge=False, header_style="bold")
    table.add_column("run id", no_wrap=True)
    table.add_column("started", no_wrap=True)
    table.add_column("wall s", justify="right", no_wrap=True)
    table.add_column("status", no_wrap=True)
    for name in ("ok", "failed", "rej", "cached"):
        table.add_column(name, justify="right", no_wrap=True)
    for row in rows:
        table.add_row(
            row["run_id"], _started(row), _wall(row), row["status"], str(row["n_succeeded"]),
            str(row["n_failed"]), str(row["n_rejected"]), str(row["n_items_fully_cached"]),
        )
    return table


def status(
    workdir: Workdir = Path("thinksound-work"),
    run_id: Annotated[str | None, typer.Option(help="One run; default: every run.")] = None,
    as_json: AsJson = False,
) -> None:
    """The runs recorded in lineage: when, how long, and how many items succeeded, failed, were rejected
    or were cached from earlier runs (--json: every column of the run_summary view)."""
    rows = _read(workdir, as_json, lambda lin: lin.run_summary(run_id))
    if as_json:
        sys.stdout.write(json.dumps(rows, default=str, indent=2) + "\n")
    elif not rows:
        console.print("no runs recorded")
    else:
        Console(width=max(Console().width, 80)).print(runs_table(rows))


def lineage(
    item: Annotated[str, typer.Argument(help="An item id or a source path/URI.")],
    workdir: Workdir = Path("thinksound-work"),
    as_json: AsJson = False,
) -> None:
    """The full history of one item: every stage attempt, state and artifact, across runs."""
    history = _read(workdir, as_json, lambda lin: lin.item_history(item))
    if as_json:
        sys.stdout.write(json.dumps(history, default=str, indent=2) + "\n")
        return
    if not history:
        raise _fail(f"nothing recorded for {item}", as_json)
    table = Table(title=f"history of {escape(item)}")
    rows = [_history_row(event) for event in history]
    for column in rows[0]:
        table.add_column(column)
    for row in rows:
        table.add_row(*("" if v is None else escape(str(v)) for v in row.values()))
    Console().print(table)


def _history_row(event: dict) -> dict:
    """One line per lineage event, whatever its table, for the terminal."""
    detail = event.get("error") or event.get("uri") or event.get("caption_cot") or event.get("value")
    return {
        "time": event.get("time"),
        "event": event["event"],
        "run": event.get("run_id"),
        "stage/kind": event.get("stage") or event.get("kind") or event.get("name") or event.get("backend"),
        "status": event.get("status"),
        "source": event.get("source"),
        "detail": detail,
    }
