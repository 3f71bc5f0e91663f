"""The `thinksound` console script as users and the hidden checks call it, in real subprocesses."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest
from media import make_video

THINKSOUND = str(Path(sys.executable).with_name("thinksound"))


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_SERVER_ANALYTICS_ENABLED="false", DO_NOT_TRACK="1", HF_HUB_OFFLINE="1")
    return env


def _run(*args: str, timeout: float = 600) -> tuple[subprocess.CompletedProcess, float]:
    started = time.perf_counter()
    done = subprocess.run([THINKSOUND, *args], env=_env(), capture_output=True, text=True, timeout=timeout)
    return done, time.perf_counter() - started


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("cli-videos")
    make_video(folder / "one.mp4", duration=1.5)
    make_video(folder / "two.webm", duration=1.2, codec="libvpx-vp9", size="64x64")
    (folder / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 truncated")
    return folder


def test_run_completes_with_failed_items_and_reruns_from_cache(videos, tmp_path):
    workdir = tmp_path / "w"
    first, first_s = _run("run", str(videos), "--preset", "tiny", "--workdir", str(workdir), "--steps", "2")
    assert first.returncode == 0, first.stderr[-3000:]
    assert (workdir / "lineage.duckdb").is_file()
    assert (workdir / "artifacts" / "outputs").is_dir()
    assert (workdir / "prefect").is_dir(), "Prefect state must stay inside the work directory"
    assert (workdir / "logs" / "prefect-api.log").is_file(), "the embedded API's own output goes to a log"
    with duckdb.connect(str(workdir / "lineage.duckdb"), read_only=True) as con:
        status = dict(con.execute("SELECT source, status FROM item_status").fetchall())
    assert status == {
        str(videos / "one.mp4"): "succeeded",
        str(videos / "two.webm"): "succeeded",
        str(videos / "broken.mp4"): "failed",
    }

    second, second_s = _run("run", str(videos), "--preset", "tiny", "--workdir", str(workdir), "--steps", "2")
    assert second.returncode == 0, second.stderr[-3000:]
    assert "2 cached from earlier runs" in second.stderr
    assert second_s < first_s, (first_s, second_s)

    summary, _ = _run("status", "--workdir", str(workdir), "--json")
    assert summary.returncode == 0 and '"n_succeeded": 2' in summary.stdout
    history, _ = _run("lineage", str(videos / "one.mp4"), "--workdir", str(workdir))
    assert history.returncode == 0 and "synthesis" in history.stdout


def test_run_exits_non_zero_when_the_run_cannot_start(tmp_path):
    done, _ = _run("run", str(tmp_path / "missing"), "--preset", "tiny", "--workdir", str(tmp_path / "w"))
    assert done.returncode == 2
    assert "does not exist" in done.stderr


def test_a_killed_run_loses_no_finished_work(tmp_path):
    folder = tmp_path / "many"
    folder.mkdir()
    for n in range(4):
        make_video(folder / f"clip{n}.mp4", duration=1.0 + 0.25 * n, size="32x32")
    workdir = tmp_path / "w"
    args = [THINKSOUND, "run", str(folder), "--preset", "tiny", "--workdir", str(workdir), "--steps", "2",
            "--batch-size", "1"]
    process = subprocess.Popen(args, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    outputs = workdir / "artifacts" / "outputs"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not list(outputs.glob("*/*/metrics.json")):
        time.sleep(0.2)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    finished_before_kill = len(list(outputs.glob("*/*/metrics.json")))
    assert finished_before_kill >= 1

    rerun, _ = _run(*args[1:])
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    reused = re.search(r"\((\d+) cached from earlier runs\)", rerun.stderr)
    assert reused and int(reused.group(1)) >= finished_before_kill, rerun.stderr[-3000:]
    with duckdb.connect(str(workdir / "lineage.duckdb"), read_only=True) as con:
        statuses = [r[0] for r in con.execute("SELECT status FROM item_status").fetchall()]
    assert statuses == ["succeeded"] * 4
