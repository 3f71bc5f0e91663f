"""SIGTERM / SIGINT to `thinksound run` and `thinksound demo`: finished work is kept, every process the
command started is stopped, and the exit status says which signal it was."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import psutil
import pytest
from media import make_video

THINKSOUND = str(Path(sys.executable).with_name("thinksound"))
STOP_WITHIN_S = 20.0


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_SERVER_ANALYTICS_ENABLED="false", DO_NOT_TRACK="1", HF_HUB_OFFLINE="1")
    return env


def _wait_for(condition, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.2)


def _stop_and_check(process: subprocess.Popen, signum: int, log: Path) -> None:
    """Send `signum`; within the limit the command exits 128 + signum and leaves no process behind."""
    children = psutil.Process(process.pid).children(recursive=True)
    assert children, "the command should have started the embedded Prefect API"
    process.send_signal(signum)
    started = time.monotonic()
    try:
        code = process.wait(timeout=STOP_WITHIN_S)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    _, alive = psutil.wait_procs(children, timeout=max(0.1, STOP_WITHIN_S - (time.monotonic() - started)))
    leftover = [(p.pid, p.name()) for p in alive]
    for child in alive:
        child.kill()
    assert not leftover, f"left running after {signal.Signals(signum).name}: {leftover}"
    assert code == 128 + signum, (code, log.read_text()[-3000:])


def test_sigterm_to_run_stops_every_child_and_keeps_finished_work(tmp_path):
    folder = tmp_path / "many"
    folder.mkdir()
    for n in range(6):
        make_video(folder / f"clip{n}.mp4", duration=1.0 + 0.25 * n, size="32x32")
    workdir = tmp_path / "w"
    log = tmp_path / "stderr.log"
    process = subprocess.Popen(
        [THINKSOUND, "run", str(folder), "--preset", "tiny", "--workdir", str(workdir), "--steps", "2",
         "--batch-size", "1"],
        env=_env(), stdout=subprocess.DEVNULL, stderr=log.open("w"), start_new_session=True,
    )
    outputs = workdir / "artifacts" / "outputs"
    _wait_for(lambda: list(outputs.glob("*/*/metrics.json")) or process.poll() is not None, 300, "a first output")
    assert process.poll() is None, log.read_text()[-3000:]
    _stop_and_check(process, signal.SIGTERM, log)

    published = len(list(outputs.glob("*/*/metrics.json")))
    with duckdb.connect(str(workdir / "lineage.duckdb"), read_only=True) as con:
        (run_status,) = con.execute("SELECT status FROM runs").fetchone()
        succeeded = con.execute("SELECT count(*) FROM item_status WHERE status = 'succeeded'").fetchone()[0]
        stopped = [r[0] for r in con.execute("SELECT error FROM item_status WHERE status <> 'succeeded'").fetchall()]
    assert run_status == "crashed"
    assert 1 <= succeeded == published < 6
    assert stopped and all("stopped by SIGTERM" in reason for reason in stopped), stopped


def test_sigint_to_demo_stops_every_child(tmp_path):
    port = _free_port()
    log = tmp_path / "stderr.log"
    process = subprocess.Popen(
        [THINKSOUND, "demo", "--preset", "tiny", "--port", str(port), "--workdir", str(tmp_path / "w")],
        env=_env(), stdout=subprocess.PIPE, stderr=log.open("w"), text=True, start_new_session=True,
    )
    first_line = process.stdout.readline()
    assert first_line.startswith("Running on http://127.0.0.1:"), (first_line, log.read_text()[-3000:])
    _stop_and_check(process, signal.SIGINT, log)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
