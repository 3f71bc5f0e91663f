"""Prefect's embedded (temporary) API for runs without a Prefect server.

It is the same app Prefect starts on its own in that case (uvicorn serving
`prefect.server.api.server:create_app`, UI off, state in PREFECT_HOME), but started here, before the
pipeline's code is imported, so that the server boots while the models' libraries import, and
this process never imports the server side of Prefect. It lives exactly as long as the command.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

STARTUP_TIMEOUT_S = 120.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class EmbeddedPrefectApi:
    """One temporary Prefect API on 127.0.0.1, owned by this process."""

    def __init__(self, log_path: Path) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}/api"
        package_dir = Path(importlib.util.find_spec("prefect").origin).parent
        command = [
            sys.executable, "-m", "uvicorn", "--app-dir", str(package_dir.parent), "--factory",
            "prefect.server.api.server:create_app", "--host", "127.0.0.1", "--port", str(self.port),
            "--log-level", "error", "--lifespan", "on",
        ]
        env = {**os.environ, "PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1"}
        # The server's own output (its shutdown noise included: a command that ends as the server is still
        # starting up can make SQLAlchemy print a traceback) goes to a log, not to the user's terminal.
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log_path = log_path
        with log_path.open("ab") as log:
            self.process = subprocess.Popen(
                command, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )

    def wait_ready(self, timeout_s: float = STARTUP_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"the embedded Prefect API exited with status {self.process.returncode}; see {self.log_path}"
                )
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.1)
        raise TimeoutError(
            f"the embedded Prefect API did not answer within {timeout_s:.0f} s; see {self.log_path}"
        )

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@contextlib.contextmanager
def embedded_prefect_api(log_path: Path) -> Iterator[EmbeddedPrefectApi | None]:
    """Start the embedded API unless PREFECT_API_URL names a server; point this process at it.
    The server's output goes to `log_path`.

    Call before anything imports Prefect, since Prefect reads PREFECT_API_URL when it loads its
    settings. Yields None when a server is configured.
    """
    if os.environ.get("PREFECT_API_URL"):
        yield None
        return
    api = EmbeddedPrefectApi(log_path)
    os.environ["PREFECT_API_URL"] = api.url
    try:
        with _without_flow_heartbeats():
            yield api
    finally:
        _drain_prefect_services()
        api.stop()
        del os.environ["PREFECT_API_URL"]


@contextlib.contextmanager
def _without_flow_heartbeats() -> Iterator[None]:
    """Heartbeats let a server spot crashed flow runs; this API dies with the command, so here they
    only cost time: the engine waits up to a second for the heartbeat thread at every flow run's end."""
    from prefect.settings import temporary_settings

    with temporary_settings(updates={"flows.heartbeat_frequency": None}):
        yield


def _drain_prefect_services(timeout_s: float = 15.0) -> None:
    """Send the logs and events Prefect still holds before their API goes away."""
    if "prefect" not in sys.modules:
        return
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    for service in (APILogWorker, EventsWorker):
        service.drain_all(timeout=timeout_s)
