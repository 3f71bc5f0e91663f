"""The `thinksound` command: run, reprocess, status, lineage and demo.

Prefect is imported only after the environment is set up, so its state lands in the work directory
(or the user's PREFECT_HOME) and a flow never reaches for a server the user did not configure.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from flows.cli_errors import console_logs_without_tracebacks, fatal_errors, record_workdir
from flows.cli_lineage import LineageData, LineageOption, lineage, lineage_import, s3_from_environment, status
from flows.embedded_api import embedded_prefect_api
from flows.shutdown import Interrupted, stop_on_signals
from flows.weights_cli import app as weights_app
from flows.weights_cli import exit_missing, preflight_or_exit

# Locals stay out of tracebacks: they would print S3 credentials.
app = typer.Typer(
    help="ThinkSound dubbing pipeline: give silent videos a soundtrack, at dataset scale.",
    pretty_exceptions_show_locals=False,
)
app.add_typer(weights_app, name="weights")
console = Console(stderr=True)

Workdir = Annotated[Path, typer.Option("--workdir", "-w", help="Lineage, local artifacts and Prefect state.")]


def _api_log(workdir: Path) -> Path:
    """Where the embedded Prefect API of a command on this work directory writes its output."""
    return workdir / "logs" / "prefect-api.log"


def _prepare_environment(workdir: Path) -> None:
    record_workdir(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    # A work directory that cannot be written fails here, in one line, not deep inside Prefect.
    with tempfile.TemporaryFile(dir=workdir):
        pass
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    if "PREFECT_HOME" not in os.environ and "PREFECT_API_URL" not in os.environ:
        home = workdir / "prefect"
        # Prefect's database holds every flow's parameters and logs: readable by this account only.
        home.mkdir(mode=0o700, exist_ok=True)
        home.chmod(0o700)
        os.environ["PREFECT_HOME"] = str(home)


def _settings(workdir: Path, overrides: dict):
    from tasks.config import PipelineSettings, merge_settings

    base = PipelineSettings(workdir=str(workdir), s3=s3_from_environment())
    lease = os.environ.get("THINKSOUND_LINEAGE_LEASE_S")
    return merge_settings(base, {**({"lineage_lease_s": lease} if lease else {}), **overrides})


def _given(cot: dict | None = None, quality: dict | None = None, **options) -> dict:
    """The settings named on the command line, as partial settings (None means not given).

    Local paths are made absolute, so that a later `reprocess` from another directory finds them.
    """
    for name in ("store", "weights"):
        value = options.get(name)
        if value and "://" not in value and Path(value).expanduser().exists():
            options[name] = str(Path(value).expanduser().resolve())
    if options.get("lineage_data") and "://" not in options["lineage_data"]:
        options["lineage_data"] = str(Path(options["lineage_data"]).expanduser().resolve())
    given = {k: v for k, v in options.items() if v is not None}
    for section, values in (("cot", cot or {}), ("quality", quality or {})):
        named = {k: v for k, v in values.items() if v is not None}
        if named:
            given[section] = named
    return given


@contextlib.contextmanager
def _invalid_settings():
    """Settings are checked before Prefect or the models load: a bad option costs no start-up time."""
    from tasks.score_filter import ScoreFilterError

    try:
        yield
    except (ValidationError, ScoreFilterError) as exc:
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from None


@contextlib.contextmanager
def _run_errors():
    """Errors that stop a whole run before it can do anything: one clear line, exit status 2."""
    from tasks.cot_server import CotError
    from tasks.run_lineage import LineageLocked, LineageUnavailable
    from tasks.sources import ManifestError

    console_logs_without_tracebacks()

    try:
        yield
    except (ManifestError, LineageLocked, LineageUnavailable, ValidationError, CotError) as exc:
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from None


def _progress_bar():
    from flows.report import progress_listeners

    progress = Progress(
        TextColumn("[bold]dubbing"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console
    )
    task_id = progress.add_task("items", total=None)

    def listener(done: int, total: int) -> None:
        progress.update(task_id, completed=done, total=total)

    progress_listeners.append(listener)
    return progress


def _print_outcome(result: dict) -> None:
    from flows.dub import counts_message

    if result.get("run_id") is None:
        console.print("nothing to reprocess: no failed or rejected item matches")
        return
    runs = ", ".join(result.get("run_ids") or [result["run_id"]])
    cached = f" ({result['cached']} cached from earlier runs)" if result.get("cached") else ""
    # Not wrapped at the terminal's width: these lines are read by scripts and copied whole.
    console.print(f"run [bold]{runs}[/]: {counts_message(result.get('counts', {}))}{cached}", soft_wrap=True)
    for item in result.get("items", []):
        if item["status"] != "succeeded":
            segment = f" [{item['segment']}]" if item.get("segment") else ""
            shown = escape((item.get("source_display") or item["source"]) + segment)
            console.print(
                f"  [red]{item['status']}[/] at {item['stage']}: {shown}: {escape(item['error'] or '')}",
                soft_wrap=True,
            )


def _finish(state, workdir: Path) -> None:
    """Print the run's outcome; exit 1 when the flow run ended Failed, 2 when its models are missing."""
    from flows.dub import RunFailed
    from tasks.preflight import WeightsMissing

    result = state.result(raise_on_failure=False)
    if isinstance(result, WeightsMissing):
        exit_missing(result, workdir)
    if isinstance(result, BaseException) and not isinstance(result, RunFailed):
        raise result  # the run itself failed (store down, disk full...): see `fatal_errors`
    failed = isinstance(result, RunFailed)
    _print_outcome(result.result if failed else result)
    if failed:
        raise typer.Exit(1)


Preset = Annotated[str, typer.Option(help="'tiny' (random weights, noise) or 'thinksound'.")]
Weights = Annotated[str | None, typer.Option(help="Checkpoint dir or hub repo (thinksound preset).")]
Store = Annotated[str | None, typer.Option(help="Artifact store: a directory or s3://bucket/prefix.")]
MaxDuration = Annotated[
    float | None, typer.Option(help="Longest video accepted, in seconds (default 600); see --truncate.")
]
Truncate = Annotated[
    bool | None, typer.Option("--truncate/--no-truncate", help="Dub the first --max-duration s of longer videos.")
]
Join = Annotated[
    str | None,
    typer.Option(help="How windows of videos over 9 s join: 'multidiffusion' (default, latent space) or 'crossfade'."),
]
WindowOverlap = Annotated[float | None, typer.Option(help="Overlap of neighbouring windows, in seconds (default 1).")]
LoudnessTarget = Annotated[float | None, typer.Option(help="LUFS target.")]
MaxRegenerations = Annotated[int | None, typer.Option(help="Retries with new seeds on QC failure.")]
CotUrl = Annotated[str | None, typer.Option(help="vLLM OpenAI-compatible URL, e.g. http://host:8000/v1.")]
CotModel = Annotated[str | None, typer.Option(help="Model name served by vLLM.")]
CotPrompt = Annotated[str | None, typer.Option(help="Prompt template version.")]
BestOf = Annotated[int | None, typer.Option(help="Candidates per item, drawn in one batch; QC keeps the best.")]
FailOnErrors = Annotated[
    bool, typer.Option(help="End the flow run Failed (exit 1) when any item failed or was rejected.")
]


@app.command()
def run(
    input: Annotated[str, typer.Argument(help="A directory of videos or a CSV/Parquet manifest.")],
    workdir: Workdir = Path("thinksound-work"),
    preset: Preset = "tiny",
    weights: Weights = None,
    store: Store = None,
    device: str = "cpu",
    precision: str = "fp32",
    batch_size: int = 8,
    steps: int = 24,
    cfg_scale: float = 5.0,
    seed: int = 0,
    max_duration: MaxDuration = None,
    truncate: Truncate = None,
    join: Join = None,
    window_overlap: WindowOverlap = None,
    loudness_target: LoudnessTarget = None,
    max_regenerations: MaxRegenerations = None,
    best_of: BestOf = None,
    cot_url: CotUrl = None,
    cot_model: CotModel = None,
    cot_prompt: CotPrompt = None,
    start_cot_server: Annotated[bool, typer.Option(help="Start a local vLLM server for this run.")] = False,
    fail_on_errors: FailOnErrors = False,
    artifact_base_url: Annotated[
        str | None, typer.Option(help="Where `thinksound serve` serves the local store: report links go there.")
    ] = None,
    link_expiry: Annotated[int | None, typer.Option(help="Seconds the report's S3 links stay valid.")] = None,
    executor: Annotated[
        str | None, typer.Option(help="'local' (default: this process) or 'ray' (stages on a Ray cluster).")
    ] = None,
    ray_address: Annotated[
        str | None, typer.Option(help="Ray cluster to join (HOST:PORT); without it, --executor ray starts a local Ray.")
    ] = None,
    ray_workers: Annotated[int | None, typer.Option(help="Ray model workers (each keeps its models warm).")] = None,
    ray_gpus: Annotated[float | None, typer.Option(help="GPUs per Ray model worker (fractions share a GPU).")] = None,
    input_root: Annotated[
        list[str] | None,
        typer.Option(help="A folder (or s3:// prefix) inputs may be read from; repeatable. "
                          "Default: INPUT's own folder, or the manifest's, and any s3:// URI."),
    ] = None,
    ray_cpus: Annotated[float | None, typer.Option(help="CPUs per Ray model worker and per CPU-stage task.")] = None,
    lineage: LineageOption = None,
    lineage_data: LineageData = None,
) -> None:
    """Dub every video of INPUT. Exits 0 when the run completed with at least one item dubbed, 1 when
    none was (or any failed, with --fail-on-errors)."""
    _prepare_environment(workdir)
    with _invalid_settings():
        settings = _settings(
            workdir,
            _given(
                preset=preset, weights=weights, store=store, device=device, precision=precision,
                batch_size=batch_size, steps=steps, cfg_scale=cfg_scale, seed=seed, max_duration_sec=max_duration,
            truncate=truncate, join=join, window_overlap_sec=window_overlap,
                artifact_base_url=artifact_base_url, link_expiry_s=link_expiry,
                executor=executor, ray_address=ray_address, ray_workers=ray_workers, ray_gpus=ray_gpus,
                input_roots=tuple(input_root) if input_root else None,
                ray_cpus=ray_cpus,
                lineage=lineage, lineage_data=lineage_data,
                cot={"url": cot_url, "model": cot_model, "prompt_version": cot_prompt,
                     "start_server": start_cot_server},
                quality={"loudness_target_lufs": loudness_target, "max_regenerations": max_regenerations,
                         "best_of": best_of},
            ),
        )
    settings = preflight_or_exit(settings, workdir)
    with embedded_prefect_api(_api_log(workdir)) as api, _run_errors():
        from flows.dub import dub_dataset, new_run_id
        from tasks.sources import list_sources

        list_sources(input)  # a missing or empty input stops here, before a flow run starts
        if api:
            api.wait_ready()
        with _progress_bar():
            state = dub_dataset(
                input=input, settings=settings, run_id=new_run_id(), fail_on_errors=fail_on_errors,
                return_state=True,
            )
    _finish(state, workdir)


@app.command()
def reprocess(
    workdir: Workdir = Path("thinksound-work"),
    from_run: Annotated[str | None, typer.Option(help="Only sources of this run.")] = None,
    stage: Annotated[str | None, typer.Option(help="Only items that failed at this stage.")] = None,
    error: Annotated[str | None, typer.Option(help="Only items whose error contains this text.")] = None,
    where: Annotated[
        str | None,
        typer.Option(help='Regenerate items whose latest scores match, e.g. "desync_sec > 0.4" (with --stage qc).'),
    ] = None,
    include_rejected: bool = True,
    preset: Annotated[str | None, typer.Option(help="Override the failed run's preset.")] = None,
    weights: Weights = None,
    store: Store = None,
    device: str | None = None,
    precision: str | None = None,
    batch_size: int | None = None,
    steps: int | None = None,
    cfg_scale: float | None = None,
    seed: int | None = None,
    max_duration: MaxDuration = None,
    truncate: Truncate = None,
    join: Join = None,
    window_overlap: WindowOverlap = None,
    loudness_target: LoudnessTarget = None,
    max_regenerations: MaxRegenerations = None,
    best_of: BestOf = None,
    cot_url: CotUrl = None,
    cot_model: CotModel = None,
    cot_prompt: CotPrompt = None,
    fail_on_errors: FailOnErrors = False,
    lineage: LineageOption = None,
    lineage_data: LineageData = None,
) -> None:
    """Rerun failed (and rejected) items chosen from lineage, from the stage that failed, with the
    settings of the run that failed each one; options given here override them (and are recorded)."""
    _prepare_environment(workdir)
    with _invalid_settings():
        overrides = _given(
            preset=preset, weights=weights, store=store, device=device, precision=precision,
            batch_size=batch_size, steps=steps, cfg_scale=cfg_scale, seed=seed, max_duration_sec=max_duration,
            truncate=truncate, join=join, window_overlap_sec=window_overlap,
            cot={"url": cot_url, "model": cot_model, "prompt_version": cot_prompt},
            quality={"loudness_target_lufs": loudness_target, "max_regenerations": max_regenerations,
                         "best_of": best_of},
        )
        from tasks.config import merge_settings

        home = _settings(workdir, _given(lineage=lineage, lineage_data=lineage_data))
        merge_settings(home, overrides)  # invalid values are refused before anything starts
        if home.s3.endpoint:
            overrides["s3"] = home.s3.model_dump()
        if where is not None:
            from tasks.score_filter import check_where

            check_where(where, stage)
    # Each group of items is checked for its models where it runs, with its failed run's settings.
    with embedded_prefect_api(_api_log(workdir)) as api, _run_errors():
        from flows.dub import new_run_id
        from flows.reprocess import reprocess_failed

        if api:
            api.wait_ready()
        with _progress_bar():
            state = reprocess_failed(
                workdir=str(workdir.resolve()), overrides=overrides, from_run=from_run, stage=stage,
                error_contains=error, include_rejected=include_rejected, run_id=new_run_id(),
                fail_on_errors=fail_on_errors, where=where, lineage=home.lineage, lineage_data=home.lineage_data,
                return_state=True,
            )
    _finish(state, workdir)


app.command()(status)
app.command()(lineage)
app.command("lineage-import")(lineage_import)


@app.command()
def demo(
    workdir: Workdir = Path("thinksound-work"),
    preset: Annotated[str, typer.Option(help="'tiny' (random weights, noise) or 'thinksound'.")] = "tiny",
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1.")] = 7860,
    share: Annotated[bool, typer.Option(help="Also open a public Gradio share link.")] = False,
    weights: Annotated[str | None, typer.Option(help="Checkpoint dir or hub repo (thinksound preset).")] = None,
    device: str = "cpu",
    precision: Annotated[str, typer.Option(help="Default precision shown in the app.")] = "fp32",
    cot_url: Annotated[str | None, typer.Option(help="vLLM OpenAI-compatible URL that writes empty CoTs.")] = None,
    cot_model: Annotated[str | None, typer.Option(help="Model name served by vLLM.")] = None,
    max_duration_sec: Annotated[float, typer.Option(help="Longest video accepted, in seconds.", min=1.0)] = 120.0,
    max_upload_mb: Annotated[float, typer.Option(help="Largest upload accepted, in MB.", min=0.01)] = 200.0,
    best_of: Annotated[int, typer.Option(help="Candidates per video; the page shows each one's scores.")] = 1,
    lineage: LineageOption = None,
    lineage_data: LineageData = None,
) -> None:
    """Start the web demo on 127.0.0.1:PORT: one video in, a dubbed video out. Public only with --share."""
    _prepare_environment(workdir)
    # Gradio reads these when it is imported: no telemetry, and its upload cache inside the work directory.
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    os.environ.setdefault("GRADIO_TEMP_DIR", str(workdir.resolve() / "gradio"))
    with _invalid_settings():
        settings = _settings(
            workdir,
            _given(preset=preset, weights=weights, device=device, precision=precision,
                   lineage=lineage, lineage_data=lineage_data,
                   cot={"url": cot_url, "model": cot_model}, quality={"best_of": best_of}),
        )
    settings = preflight_or_exit(settings, workdir)
    with embedded_prefect_api(_api_log(workdir)) as api:
        from flows.demo import HOST, serve
        from flows.demo_backend import DemoBackend
        from flows.demo_input import UploadLimits

        limits = UploadLimits(max_duration_sec=max_duration_sec, max_upload_mb=max_upload_mb)
        if api:
            api.wait_ready()
        try:
            app = serve(DemoBackend(settings=settings, limits=limits), port=port, share=share, block=False)
        except OSError as exc:  # the port is taken
            console.print(f"[red]error:[/] {exc}")
            raise typer.Exit(2) from None
        # Gradio's own banner is off (with its tips and links); the address is what a user needs.
        typer.echo(f"Running on http://{HOST}:{port}")
        if app.share_url:
            typer.echo(f"Public share link: {app.share_url}")
        try:
            app.block_thread()
        finally:
            app.close()


@app.command()
def serve(
    workdir: Workdir = Path("thinksound-work"),
    store: Annotated[str | None, typer.Option(help="A local store folder; default WORKDIR/artifacts.")] = None,
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1.")] = 8765,
) -> None:
    """Serve the local artifact folder read-only on 127.0.0.1:PORT, for clickable report links."""
    from flows.serve import HOST, artifact_server

    root = Path(store) if store else workdir / "artifacts"
    if not root.is_dir():
        console.print(f"[red]error:[/] no artifact folder at {root}")
        raise typer.Exit(2)
    try:
        server = artifact_server(root, port)
    except OSError as exc:  # the port is taken
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from None
    url = f"http://{HOST}:{server.server_address[1]}/"
    typer.echo(f"Serving {root.resolve()} read-only on {url}")
    typer.echo(f"Runs with --artifact-base-url {url} link their outputs here.")
    try:
        server.serve_forever()
    finally:
        server.server_close()


def main() -> None:
    try:
        with stop_on_signals(), fatal_errors():
            app()
    except Interrupted as stop:
        console.print(f"[yellow]{stop}[/]: finished work is committed; rerun to continue.")
        # Every child is stopped and the work committed; daemon threads (the demo's model warm-up) may
        # still be inside native code, where interpreter teardown would abort: leave now.
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(stop.exit_code)
    finally:
        # The process is about to end: sparing the interpreter's final garbage collections the models'
        # and libraries' objects saves ~0.6 s per command, a good part of a fully cached rerun.
        gc.freeze()
