"""`thinksound weights fetch|verify|lock`: get the pinned weights, check them, pin them."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from tasks.weights_lock import DEFAULT_LOCK, FileCheck, WeightsLock, check_preset

app = typer.Typer(help="The pinned model weights: fetch, verify, lock.", no_args_is_help=True)
console = Console(stderr=True)

LockOption = Annotated[Path, typer.Option("--lock", help="The lock file.", hidden=True)]
Preset = Annotated[str, typer.Option(help="The preset whose weights to handle.")]


def hub_offline() -> bool:
    """What huggingface_hub reads from HF_HUB_OFFLINE: no request to the hub is made."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def _read_lock(path: Path) -> WeightsLock:
    try:
        return WeightsLock.read(path)
    except (OSError, ValueError, KeyError) as exc:
        console.print(f"[red]error:[/] cannot read the lock file {path}: {exc}")
        raise typer.Exit(2) from None


def print_checks(checks: list[FileCheck]) -> None:
    table = Table(title="weights")
    for column in ("model", "file", "size", "sha256", "status", "path"):
        table.add_column(column)
    for c in checks:
        colour = "red" if c.failed else ("yellow" if c.status == "unpinned" else "green")
        table.add_row(
            c.repo, c.name, "" if c.size is None else str(c.size), (c.sha256 or "")[:16],
            f"[{colour}]{c.status}[/]", "" if c.path is None else str(c.path),
        )
    Console(width=200).print(table)


@app.command()
def fetch(
    preset: Preset = "thinksound",
    to: Annotated[Path | None, typer.Option("--to", help="A hub cache folder (default: the user's).")] = None,
    source: Annotated[str, typer.Option(help="'hf' (Hugging Face hub) or 'modelscope'.")] = "hf",
    lock: LockOption = DEFAULT_LOCK,
) -> None:
    """Download every file the preset needs, at the pinned revisions, and check it."""
    from tasks.weights_fetch import fetch as fetch_files

    if source not in {"hf", "modelscope"}:
        console.print(f"[red]error:[/] --source must be 'hf' or 'modelscope', not {source!r}")
        raise typer.Exit(2)
    offline = hub_offline()
    if offline:
        console.print("HF_HUB_OFFLINE is set: nothing is downloaded, files already present are checked")
    try:
        checks = fetch_files(
            _read_lock(lock), preset, to=to, source=source, offline=offline, report=console.print  # type: ignore[arg-type]
        )
    except (OSError, ValueError, RuntimeError) as exc:
        console.print(f"[red]error:[/] {type(exc).__name__}: {exc}")
        raise typer.Exit(1) from None
    print_checks(checks)
    if any(c.failed for c in checks):
        raise typer.Exit(1)
    if to is not None and source == "hf":
        console.print(f"use them with: HF_HUB_CACHE={to} thinksound run ... --preset {preset}")


@app.command()
def verify(
    directory: Annotated[Path | None, typer.Argument(help="A hub cache or weights folder (default: the hub cache).")] = None,
    preset: Preset = "thinksound",
    lock: LockOption = DEFAULT_LOCK,
) -> None:
    """Check sizes and sha256 of the preset's files against the lock; exit 1 on a mismatch or a missing file."""
    checks = check_preset(_read_lock(lock), preset, directory)
    print_checks(checks)
    failed = [c for c in checks if c.failed]
    if failed:
        console.print(f"[red]{len(failed)} of {len(checks)} files are missing or differ from the lock[/]")
        raise typer.Exit(1)


@app.command("lock")
def lock_command(lock: LockOption = DEFAULT_LOCK) -> None:
    """Pin every model to its current commit, with sizes and sha256 from the hub (needs hub access)."""
    from tasks.weights_fetch import lock_from_hub

    if hub_offline():
        console.print("[red]error:[/] HF_HUB_OFFLINE is set: locking needs the hub")
        raise typer.Exit(2)
    locked = lock_from_hub(_read_lock(lock), report=console.print)
    locked.write(lock)
    console.print(f"wrote {lock}")


def preflight_or_exit(settings, workdir: Path):
    """The settings with every model of the preset found, before any item is touched; otherwise one
    line per missing part and the fetch command on the terminal, the detail in WORKDIR/logs/, exit 2."""
    from tasks.preflight import WeightsMissing, require

    try:
        return require(settings, offline=hub_offline())
    except WeightsMissing as exc:
        exit_missing(exc, workdir)


def exit_missing(exc, workdir: Path):
    """Say what a preflight (the CLI's or a flow run's) found missing, keep the detail, exit 2."""
    log = workdir / "logs" / "preflight.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("\n".join([*exc.lines, "", *exc.detail]) + "\n")
    for line in exc.lines:
        console.print(line, markup=False, highlight=False, soft_wrap=True)
    console.print(f"details: {log}", markup=False, highlight=False, soft_wrap=True)
    raise typer.Exit(2) from None
