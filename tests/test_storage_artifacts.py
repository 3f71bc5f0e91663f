"""One suite, two stores: every test runs against the local directory store and a real S3 server."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import threading
import tracemalloc
from pathlib import Path

import pytest
from s3_server import new_bucket_name, s3_server  # noqa: F401 - the fixture is used by name

from storage import (
    ArtifactNotFound,
    ArtifactStore,
    InvalidKey,
    LocalStore,
    S3Store,
    content_key,
    open_store,
    sha256_bytes,
    sha256_file,
)
from storage.keys import TEMP_PREFIX

MIB = 1024 * 1024


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path) -> ArtifactStore:
    if request.param == "local":
        return LocalStore(root=tmp_path / "store")
    server = request.getfixturevalue("s3_server")
    return S3Store(bucket=new_bucket_name(), prefix="runs/test", config=server.config())


def _visible_files(store: ArtifactStore) -> list[str]:
    """What a local store holds apart from temporary files (only meaningful for LocalStore)."""
    assert isinstance(store, LocalStore)
    return sorted(
        str(p.relative_to(store.root)) for p in store.root.rglob("*") if p.is_file() and not p.name.startswith(TEMP_PREFIX)
    )


class FailingStream(io.RawIOBase):
    """Yields `fail_after` bytes, then raises: a producer that dies mid-write."""

    def __init__(self, fail_after: int) -> None:
        self.remaining = fail_after

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        if self.remaining <= 0:
            raise OSError("producer died")
        n = min(len(buffer), self.remaining)
        buffer[:n] = b"\xab" * n
        self.remaining -= n
        return n


def test_bytes_round_trip_and_uri(store):
    key = "a/b/c.bin"
    uri = store.put_bytes(key, b"hello", content_type="text/plain")
    assert uri == store.uri(key)
    assert store.exists(key)
    assert store.get_bytes(key) == b"hello"
    if isinstance(store, LocalStore):
        assert uri.startswith("file:///") and uri.endswith("/store/a/b/c.bin")
        assert Path(uri[len("file://"):]).read_bytes() == b"hello"
    else:
        assert uri == f"s3://{store.bucket}/runs/test/a/b/c.bin"


def test_overwrite_replaces_whole_object(store):
    store.put_bytes("k", b"x" * 1000)
    store.put_bytes("k", b"short")
    assert store.get_bytes("k") == b"short"


def test_missing_key(store, tmp_path):
    assert not store.exists("nope/missing.bin")
    with pytest.raises(ArtifactNotFound):
        store.get_bytes("nope/missing.bin")
    with pytest.raises(ArtifactNotFound):
        store.get_file("nope/missing.bin", tmp_path / "out.bin")
    assert not (tmp_path / "out.bin").exists()
    store.delete("nope/missing.bin")


def test_delete(store):
    store.put_bytes("d/x", b"1")
    store.delete("d/x")
    assert not store.exists("d/x")
    with pytest.raises(ArtifactNotFound):
        store.get_bytes("d/x")


@pytest.mark.parametrize("key", ["", "/abs", "a/../b", "a//b", "./a", f"a/{TEMP_PREFIX}x", "a\\b"])
def test_invalid_keys_rejected(store, key):
    with pytest.raises(InvalidKey):
        store.put_bytes(key, b"x")


def test_big_file_streams_in_parts(store, tmp_path):
    """11 MiB crosses the 5 MiB part size, so S3 takes the multipart path; bytes survive intact."""
    source = tmp_path / "big.bin"
    with open(source, "wb") as handle:
        for i in range(11):
            handle.write(os.urandom(MIB - i) + bytes([i]) * i)
    key = content_key("videos", sha256_file(source), ".bin")
    tracemalloc.start()
    try:
        store.put_file(key, source)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    if isinstance(store, LocalStore):
        assert peak < 4 * MIB, f"local put_file held {peak / MIB:.1f} MiB: it must stream"
    dest = store.get_file(key, tmp_path / "nested" / "copy.bin")
    assert dest == tmp_path / "nested" / "copy.bin"
    assert sha256_file(dest) == sha256_file(source)
    assert not [p for p in dest.parent.iterdir() if p.name != "copy.bin"], "no temporary files left"


def test_content_addressing(store):
    data = b"same bytes"
    key = content_key("features/video", sha256_bytes(data), "safetensors")
    assert key == f"features/video/{sha256_bytes(data)[:2]}/{sha256_bytes(data)}.safetensors"
    assert content_key("features/video", sha256_bytes(data), ".safetensors") == key
    assert content_key("features/video", sha256_bytes(b"other"), ".safetensors") != key
    first = store.put_bytes(key, data)
    assert store.put_bytes(key, data) == first
    assert sha256_bytes(store.get_bytes(key)) == key.rsplit("/", 1)[1].split(".")[0]
    with pytest.raises(InvalidKey):
        content_key("features", "not-hex!", ".bin")


def test_failed_stream_keeps_previous_object(store):
    """A producer dying mid-write (after more than one S3 part) leaves the old object untouched."""
    store.put_bytes("atomic/obj", b"previous")
    with pytest.raises(OSError, match="producer died"):
        store.put_stream("atomic/obj", io.BufferedReader(FailingStream(7 * MIB)))
    assert store.get_bytes("atomic/obj") == b"previous"
    with pytest.raises(OSError, match="producer died"):
        store.put_stream("atomic/new", io.BufferedReader(FailingStream(7 * MIB)))
    assert not store.exists("atomic/new")
    if isinstance(store, LocalStore):
        assert _visible_files(store) == ["atomic/obj"]
        assert not [p for p in store.root.rglob(f"{TEMP_PREFIX}*")], "temporary file must be removed"


def test_short_stream_with_declared_length_is_not_stored(store):
    with pytest.raises((EOFError, ValueError, OSError)):
        store.put_stream("short/obj", io.BytesIO(b"12345"), length=10)
    assert not store.exists("short/obj")


_WRITER = """
import sys
from pathlib import Path
from storage import LocalStore, S3Config, S3Store
kind, target, endpoint, access, secret = sys.argv[1:6]
if kind == "local":
    store = LocalStore(root=Path(target))
else:
    bucket, prefix = target.split("/", 1)
    config = S3Config(endpoint=endpoint, access_key=access, secret_key=secret, part_size=5 * 1024 * 1024)
    store = S3Store(bucket=bucket, prefix=prefix, config=config)
store.put_bytes("warmup", b"ok")
print("ready", flush=True)
store.put_stream("killed/obj", sys.stdin.buffer)
print("finished", flush=True)
"""


def test_killed_writer_leaves_nothing_trusted(store):
    """SIGKILL a writer process mid-upload: the key must not exist, and a rerun can write it."""
    if isinstance(store, LocalStore):
        args = ["local", str(store.root), "", "", ""]
    else:
        config = store.config
        args = ["s3", f"{store.bucket}/{store.prefix}", config.endpoint, config.access_key, config.secret_key]
    writer = subprocess.Popen(
        [sys.executable, "-c", _WRITER, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        cwd=Path(__file__).resolve().parents[1],
    )
    try:
        assert writer.stdout.readline().strip() == b"ready"
        chunk = os.urandom(MIB)
        # The pipe holds 64 KiB, so once these writes return the writer has consumed ~6 MiB: one
        # S3 part is uploaded or in flight, and the local temporary file holds data.
        for _ in range(6):
            writer.stdin.write(chunk)
        writer.stdin.flush()
        writer.send_signal(signal.SIGKILL)
        writer.wait(timeout=30)
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait(timeout=30)
    assert writer.returncode == -signal.SIGKILL
    assert not store.exists("killed/obj")
    with pytest.raises(ArtifactNotFound):
        store.get_bytes("killed/obj")
    if isinstance(store, LocalStore):
        assert _visible_files(store) == ["warmup"]
    store.put_bytes("killed/obj", b"rerun")
    assert store.get_bytes("killed/obj") == b"rerun"


def test_concurrent_writers_never_mix(store):
    """Eight threads write different 1 MiB payloads to one key; the result is exactly one of them."""
    payloads = [bytes([i]) * MIB for i in range(8)]
    errors: list[BaseException] = []

    def write(data: bytes) -> None:
        try:
            store.put_bytes("race/obj", data)
        except BaseException as exc:  # collected and re-raised in the test thread
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(p,)) for p in payloads]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert store.get_bytes("race/obj") in payloads


def test_open_store_targets(tmp_path, s3_server):  # noqa: F811 - pytest fixture argument
    local = open_store(str(tmp_path / "w"))
    assert isinstance(local, LocalStore) and local.root == (tmp_path / "w").resolve()
    assert isinstance(open_store((tmp_path / "w").as_uri()), LocalStore)
    bucket = new_bucket_name()
    remote = open_store(
        f"s3://{bucket}/pre/fix", s3_endpoint=s3_server.endpoint, access_key=s3_server.config().access_key,
        secret_key=s3_server.config().secret_key,
    )
    assert isinstance(remote, S3Store)
    assert remote.put_bytes("k", b"v") == f"s3://{bucket}/pre/fix/k"
    assert s3_server.client().bucket_exists(bucket), "the bucket is created on first write"
    with pytest.raises(ValueError, match="endpoint"):
        open_store("s3://bucket/x")
    with pytest.raises(ValueError, match="unsupported"):
        open_store("gs://bucket/x")
