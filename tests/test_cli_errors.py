"""Errors that stop a whole run, as an operator meets them: an S3 store that is down or refuses the keys,
a full disk, a read-only work directory. Each ends in one line naming the cause, exit status 1, and the
traceback in a log file; the items the error stopped say why in lineage."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest
from media import make_video
from s3_server import ACCESS_KEY, new_bucket_name, s3_server  # noqa: F401 - the fixture is used by name

THINKSOUND = str(Path(sys.executable).with_name("thinksound"))


def _run(videos: Path, workdir: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "AWS_", "THINKSOUND_"))}
    full_env.update(PREFECT_SERVER_ANALYTICS_ENABLED="false", DO_NOT_TRACK="1", HF_HUB_OFFLINE="1", **env)
    return subprocess.run(
        [THINKSOUND, "run", str(videos), "--preset", "tiny", "--workdir", str(workdir), "--steps", "2", *args],
        env=full_env, capture_output=True, text=True, timeout=600,
    )


def _assert_one_line_error(done: subprocess.CompletedProcess, cause: str) -> Path:
    """Exit 1, the cause on the last line, no traceback on the terminal; returns the log file."""
    assert done.returncode == 1, done.stderr[-3000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and cause in last, last
    log = Path(last.rsplit("(traceback in ", 1)[1].rstrip(")"))
    assert "Traceback" in log.read_text()
    return log


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("videos")
    make_video(folder / "clip.mp4", duration=1.2, size="32x32")
    return folder


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_s3_down(videos, tmp_path):
    done = _run(videos, tmp_path / "w", "--store", f"s3://{new_bucket_name()}/p",
                THINKSOUND_S3_ENDPOINT=f"127.0.0.1:{_free_port()}", AWS_ACCESS_KEY_ID="k", AWS_SECRET_ACCESS_KEY="s")
    log = _assert_one_line_error(done, "the artifact store is unreachable")
    assert log.parent == tmp_path / "w" / "logs"
    with duckdb.connect(str(tmp_path / "w" / "lineage.duckdb"), read_only=True) as con:
        (status, error) = con.execute("SELECT status, error FROM item_status").fetchone()
    assert status == "failed" and "the artifact store is unreachable" in error, error


def test_s3_refuses_the_keys(videos, tmp_path, s3_server):  # noqa: F811 - pytest fixture argument
    done = _run(videos, tmp_path / "w", "--store", f"s3://{new_bucket_name()}/p",
                THINKSOUND_S3_ENDPOINT=s3_server.endpoint, AWS_ACCESS_KEY_ID=ACCESS_KEY,
                AWS_SECRET_ACCESS_KEY="not-the-secret")
    _assert_one_line_error(done, "S3 refused the credentials")


@pytest.fixture
def small_mount(tmp_path):
    """A 512 KiB tmpfs (root only, as on the CI machines); skipped where mounting is not allowed."""
    point = tmp_path / "mnt"
    point.mkdir()
    if shutil.which("mount") is None or subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(point)], capture_output=True
    ).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    yield point
    subprocess.run(["umount", "-l", str(point)], check=False)


def test_disk_full(videos, tmp_path, small_mount):
    done = _run(videos, tmp_path / "w", "--store", str(small_mount))
    _assert_one_line_error(done, "disk full")


def test_read_only_work_directory(videos, tmp_path, small_mount):
    subprocess.run(["mount", "-o", "remount,ro", str(small_mount)], check=True)
    done = _run(videos, small_mount)
    log = _assert_one_line_error(done, "is the work directory read-only?")
    assert small_mount not in log.parents, "the log goes where it can be written"
