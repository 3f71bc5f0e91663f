"""`thinksound demo` attacked through its raw HTTP API, as a user starts it: a real subprocess with its own
embedded Prefect API. It serves only what a response needs, and S3 credentials in its environment reach
no file of the work directory."""

from __future__ import annotations

import os
import queue
import signal
import stat
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import httpx
import pytest
from demo_helpers import free_port, wait_for_http
from gradio_client import Client, handle_file
from media import make_video
from secret_scan import files_containing

STARTUP_TIMEOUT_S = 180


class DemoProcess:
    """The demo command, its output collected line by line as it arrives."""

    def __init__(self, workdir: Path, port: int, env: dict[str, str], cwd: Path) -> None:
        command = [str(Path(sys.executable).with_name("thinksound")), "demo", "--preset", "tiny",
                   "--port", str(port), "--workdir", str(workdir)]
        self.lines: list[str] = []
        self._new_lines: queue.Queue[str | None] = queue.Queue()
        self.process = subprocess.Popen(
            command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            start_new_session=True, umask=0o022,
        )
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        for line in self.process.stdout:
            self.lines.append(line)
            self._new_lines.put(line)
        self._new_lines.put(None)

    def wait_for_line(self, text: str, timeout_s: float) -> str:
        while True:
            line = self._new_lines.get(timeout=timeout_s)
            if line is None:
                raise AssertionError(f"the demo exited before printing {text!r}: {''.join(self.lines)[-3000:]}")
            if text in line:
                return line

    def stop(self) -> str:
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
        return "".join(self.lines)


def test_the_demo_serves_no_file_of_its_work_directory_and_keeps_no_secret(tmp_path):
    marker = f"marker-secret-{uuid.uuid4().hex}"
    video = make_video(tmp_path / "clip.mp4", duration=1.5)
    workdir = tmp_path / "work"
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "GRADIO_"))}
    env.update(AWS_ACCESS_KEY_ID="marker-access", AWS_SECRET_ACCESS_KEY=marker, HF_HUB_OFFLINE="1")
    demo = DemoProcess(workdir, port, env, cwd=tmp_path)
    try:
        url = f"http://127.0.0.1:{port}"
        running = demo.wait_for_line("Running on", timeout_s=STARTUP_TIMEOUT_S)
        assert running.strip() == f"Running on {url}"
        wait_for_http(f"{url}/", timeout_s=60, alive=lambda: demo.process.poll() is None)

        client = Client(f"{url}/", download_files=str(tmp_path / "downloads"), verbose=False)
        status, dubbed, *_ = client.predict(
            handle_file(str(video)), "waves on pebbles", "", 0, 2, 5.0, "fp32", api_name="/generate"
        )
        assert "Done" in status and Path(dubbed).stat().st_size > 0

        upload = next((workdir / "uploads").iterdir())
        published = next((workdir / "artifacts").rglob("*.wav"))
        private = [
            workdir / "lineage.duckdb",
            workdir / "prefect" / "prefect.db",
            upload,
            published,
        ]
        for path in private:
            assert path.is_file(), path
            for spelling in (str(path), str(path).replace(str(workdir), f"{workdir}/./")):
                answer = httpx.get(f"{url}/gradio_api/file={spelling}")
                assert answer.status_code in (403, 404), (path, answer.status_code)
    finally:
        output = demo.stop()

    assert marker not in output
    assert files_containing(workdir, marker) == []
    assert stat.S_IMODE((workdir / "prefect").stat().st_mode) == 0o700
    for path in (workdir / "artifacts" / "outputs").rglob("*"):
        assert stat.S_IMODE(path.stat().st_mode) == (0o755 if path.is_dir() else 0o644), path


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o027, 0o640)])
def test_stored_files_follow_the_umask(tmp_path, umask, mode):
    from storage import LocalStore

    old = os.umask(umask)
    try:
        store = LocalStore(root=tmp_path / "store")
        store.put_bytes("outputs/ab/metrics.json", b"{}")
        source = tmp_path / "audio.wav"
        source.write_bytes(b"RIFF")
        store.put_file("outputs/ab/audio.wav", source)
    finally:
        os.umask(old)
    for name in ("metrics.json", "audio.wav"):
        assert stat.S_IMODE((tmp_path / "store" / "outputs" / "ab" / name).stat().st_mode) == mode
