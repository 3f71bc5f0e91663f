"""Error mapping of the S3 store against real servers, and fetching inputs from S3."""

from __future__ import annotations

import http.server
import socket
import threading
import time
from pathlib import Path

import pytest
from s3_server import SeaweedS3, new_bucket_name, s3_server  # noqa: F401 - the fixture is used by name

from storage import (
    S3Config,
    S3Store,
    StorageError,
    TransientStorageError,
    fetch_input,
    is_transient,
    sha256_file,
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _quick(endpoint: str, **overrides) -> S3Config:
    fields = dict(endpoint=endpoint, access_key="k", secret_key="s" * 12, retries=1, backoff_s=0.01,
                  connect_timeout_s=1.0, read_timeout_s=1.0)
    fields.update(overrides)
    return S3Config(**fields)


def test_stopped_server_is_transient(tmp_path):
    server = SeaweedS3(data_dir=tmp_path / "weed")
    server.start()
    try:
        store = S3Store(bucket=new_bucket_name(), config=server.config(connect_timeout_s=1.0, read_timeout_s=2.0))
        store.put_bytes("k", b"v")
        assert store.get_bytes("k") == b"v"
    finally:
        server.stop()
    for operation in (lambda: store.get_bytes("k"), lambda: store.put_bytes("k2", b"v"), lambda: store.exists("k")):
        with pytest.raises(TransientStorageError) as info:
            operation()
        assert is_transient(info.value)


def test_connection_refused_is_transient():
    store = S3Store(bucket="some-bucket", config=_quick(f"127.0.0.1:{_free_port()}"))
    with pytest.raises(TransientStorageError, match="network error"):
        store.get_bytes("k")


class _Answer503(http.server.BaseHTTPRequestHandler):
    body = (
        b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code>'
        b"<Message>Please reduce your request rate.</Message><Resource>/b/k</Resource>"
        b"<RequestId>1</RequestId></Error>"
    )

    def _answer(self) -> None:
        self.server.hits += 1  # type: ignore[attr-defined]
        self.send_response(503)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(self.body)

    do_GET = do_PUT = do_HEAD = _answer

    def log_message(self, *args) -> None:
        return


@pytest.fixture
def busy_server():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Answer503)
    server.hits = 0  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_5xx_is_transient_after_bounded_retries(busy_server):
    config = _quick(f"127.0.0.1:{busy_server.server_address[1]}", retries=2, region="us-east-1")
    store = S3Store(bucket="some-bucket", config=config)
    started = time.monotonic()
    with pytest.raises(TransientStorageError):
        store.get_bytes("k")
    assert time.monotonic() - started < 10
    assert busy_server.hits == 3, "one request plus two retries"


def test_read_timeout_is_transient():
    # Accepts connections but never answers.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    try:
        config = _quick(f"127.0.0.1:{listener.getsockname()[1]}", retries=0, read_timeout_s=0.3, region="us-east-1")
        with pytest.raises(TransientStorageError):
            S3Store(bucket="some-bucket", config=config).get_bytes("k")
    finally:
        listener.close()


def test_bad_credentials_are_not_transient(s3_server):  # noqa: F811 - pytest fixture argument
    config = s3_server.config(secret_key="wrong-secret-0000")
    store = S3Store(bucket=new_bucket_name(), config=config)
    with pytest.raises(StorageError) as info:
        store.put_bytes("k", b"v")
    assert not is_transient(info.value)
    assert "wrong-secret" not in str(info.value)
    assert "wrong-secret" not in repr(config) and s3_server.config().access_key not in repr(config)


def test_fetch_input_local(tmp_path):
    video = tmp_path / "in.mp4"
    video.write_bytes(b"not really a video")
    assert fetch_input(str(video), tmp_path / "dl") == video
    assert fetch_input(video.as_uri(), tmp_path / "dl") == video
    with pytest.raises(FileNotFoundError, match="input not found"):
        fetch_input(str(tmp_path / "missing.mp4"), tmp_path / "dl")


def test_fetch_input_from_s3(tmp_path, s3_server):  # noqa: F811 - pytest fixture argument
    bucket = new_bucket_name()
    source_store = S3Store(bucket=bucket, config=s3_server.config())
    original = tmp_path / "clip.mp4"
    original.write_bytes(b"\x00video-bytes" * 1000)
    source_store.put_file("dataset/clip one.mp4", original)
    uri = f"s3://{bucket}/dataset/clip one.mp4"
    creds = dict(s3_endpoint=s3_server.endpoint, access_key=s3_server.config().access_key,
                 secret_key=s3_server.config().secret_key)

    first = fetch_input(uri, tmp_path / "dl", **creds)
    assert first.name == "clip one.mp4" and sha256_file(first) == sha256_file(original)
    mtime = first.stat().st_mtime_ns
    again = fetch_input(uri, tmp_path / "dl", **creds)
    assert again == first and again.stat().st_mtime_ns == mtime, "unchanged object is not downloaded again"

    source_store.put_bytes("dataset/clip one.mp4", b"rewritten")
    changed = fetch_input(uri, tmp_path / "dl", s3=s3_server.config())
    assert changed != first and changed.read_bytes() == b"rewritten"

    with pytest.raises(FileNotFoundError, match="input not found"):
        fetch_input(f"s3://{bucket}/dataset/missing.mp4", tmp_path / "dl", **creds)
    with pytest.raises(ValueError, match="endpoint"):
        fetch_input(uri, tmp_path / "dl")
    assert not list(Path(tmp_path / "dl").rglob(".tmp-*"))
