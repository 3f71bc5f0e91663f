"""`thinksound status` and `thinksound lineage`: read lineage, for people (a compact table) or scripts
(`--json`, errors included); `thinksound lineage-import`: copy a lineage file into a shared lineage."""

from __future__ import annotations

import json
import os
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

LineageOption = Annotated[str | None, typer.Option(
    "--lineage", envvar="THINKSOUND_LINEAGE",
    help="Shared lineage 'ducklake:postgres:<libpq conninfo>' (no password: PGPASSWORD or ~/.pgpass); "
         "default: WORKDIR/lineage.duckdb.",
)]
LineageData = Annotated[str | None, typer.Option(
    "--lineage-data", envvar="THINKSOUND_LINEAGE_DATA",
    help="Where the shared lineage keeps its data files: a directory or s3://bucket/prefix/.",
)]

LOCKED_MESSAGE = "a run is writing this lineage; try again or use the shared lineage backend"


def s3_from_environment():
    """Where S3 is, never the credentials: settings are flow parameters, which Prefect stores."""
    from tasks.config import S3Settings

    return S3Settings(
        endpoint=os.environ.get("THINKSOUND_S3_ENDPOINT"),
        secure=os.environ.get("THINKSOUND_S3_SECURE", "").lower() in {"1", "true", "yes"},
        credentials_block=os.environ.get("THINKSOUND_S3_CREDENTIALS_BLOCK"),
    )


def lineage_settings(workdir: Path, lineage: str | None, lineage_data: str | None, as_json: bool = False):
    """Settings that say only where lineage is (invalid ones are one clear error)."""
    from pydantic import ValidationError

    from tasks.config import PipelineSettings

    if lineage_data and "://" not in lineage_data:
        lineage_data = str(Path(lineage_data).expanduser().resolve())
    try:
        return PipelineSettings(
            workdir=str(workdir), lineage=lineage, lineage_data=lineage_data, s3=s3_from_environment()
        )
    except ValidationError as exc:
        raise _fail(str(exc), as_json) from None


def _fail(message: str, as_json: bool) -> typer.Exit:
    if as_json:
        sys.stdout.write(json.dumps({"error": message}) + "\n")
    else:
        console.print(f"[red]error:[/] {escape(message)}", soft_wrap=True)
    return typer.Exit(1)


def _read(workdir: Path, as_json: bool, query, lineage: str | None = None, lineage_data: str | None = None):
    """Run `query(lineage)` on a read-only handle; a missing or busy database is one clear error, at once.

    A shared (DuckLake) lineage is read from a snapshot: the runs writing it are never blocked.
    """
    from tasks.run_lineage import LineageLocked, LineageUnavailable, new_lineage, read_lineage_file

    settings = lineage_settings(workdir, lineage, lineage_data, as_json)
    if settings.lineage is not None:
        try:
            with new_lineage(settings, read_only=True) as lin:
                return query(lin)
        except LineageUnavailable as exc:
            raise _fail(str(exc), as_json) from None
    path = workdir / "lineage.duckdb"
    if not path.exists():
        raise _fail(f"no lineage database at {path}", as_json)
    try:
        with read_lineage_file(path) as lin:
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
    lineage: LineageOption = None,
    lineage_data: LineageData = None,
) -> None:
    """The runs recorded in lineage: when, how long, and how many items succeeded, failed, were rejected
    or were cached from earlier runs (--json: every column of the run_summary view)."""
    rows = _read(workdir, as_json, lambda lin: lin.run_summary(run_id), lineage, lineage_data)
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
    lineage: LineageOption = None,
    lineage_data: LineageData = None,
) -> None:
    """The full history of one item: every stage attempt, state and artifact, across runs."""
    history = _read(workdir, as_json, lambda lin: lin.item_history(item), lineage, lineage_data)
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


def lineage_import(
    old: Annotated[Path, typer.Argument(help="A lineage file to copy in, e.g. OLD_WORKDIR/lineage.duckdb.")],
    lineage: LineageOption = None,
    lineage_data: LineageData = None,
) -> None:
    """Copy a lineage file into the shared lineage (--lineage). Importing it again changes nothing."""
    from tasks.run_lineage import LineageLocked, LineageUnavailable, migrate_lineage_file, new_lineage

    if lineage is None:
        raise _fail("name the shared lineage to import into: --lineage 'ducklake:postgres:...'", False)
    old = old.expanduser().resolve()
    if not old.is_file():
        raise _fail(f"no lineage database at {old}", False)
    settings = lineage_settings(old.parent, lineage, lineage_data)
    try:
        migrate_lineage_file(old)
        with new_lineage(settings) as lin:
            counts = lin.merge_from(old)
    except (LineageLocked, LineageUnavailable) as exc:
        raise _fail(str(exc), False) from None
    imported = ", ".join(f"{n} {table}" for table, n in counts.items() if n) or "nothing"
    console.print(f"imported {escape(str(old))}: {imported}", soft_wrap=True)


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
