"""Shared pieces of the web demo tests: an in-process app on a free port, and waiting for a URL."""

from __future__ import annotations

import os
import socket
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

# Gradio reads these when it is imported: no telemetry, uploads in a private folder.
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
os.environ.setdefault("GRADIO_TEMP_DIR", tempfile.mkdtemp(prefix="thinksound-gradio-"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_http(url: str, *, timeout_s: float, alive=lambda: True) -> float:
    """Seconds until `url` answers 200; fails after `timeout_s` or as soon as `alive()` turns false."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if not alive():
            raise AssertionError(f"the server died before {url} answered")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return time.monotonic() - started
        except httpx.TransportError:
            pass
        time.sleep(0.25)
    raise AssertionError(f"{url} did not answer within {timeout_s} s")


@dataclass
class RunningDemo:
    app: object
    backend: object
    url: str
    workdir: Path


def start_demo(workdir: Path, *, max_duration_sec: float = 3.0, max_upload_mb: float = 0.2, **settings):
    """The demo app of `flows.demo`, served from this process on 127.0.0.1 with the tiny preset."""
    from flows.demo import serve
    from flows.demo_backend import DemoBackend
    from flows.demo_input import UploadLimits
    from tasks.config import PipelineSettings

    backend = DemoBackend(
        settings=PipelineSettings(workdir=str(workdir), preset="tiny", **settings),
        limits=UploadLimits(max_duration_sec=max_duration_sec, max_upload_mb=max_upload_mb),
    )
    port = free_port()
    app = serve(backend, port=port, block=False)
    url = f"http://127.0.0.1:{port}/"
    wait_for_http(url, timeout_s=60)
    return RunningDemo(app=app, backend=backend, url=url, workdir=workdir)


def item_status(workdir: Path, source: Path) -> dict | None:
    """The `item_status` row of one source, read while the app (which releases the file) runs."""
    import duckdb

    with duckdb.connect(str(workdir / "lineage.duckdb"), read_only=True) as con:
        cursor = con.execute("SELECT * FROM item_status WHERE source = ?", [str(source)])
        columns = [d[0] for d in cursor.description]
        row = cursor.fetchone()
    return dict(zip(columns, row, strict=True)) if row else None
