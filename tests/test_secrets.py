"""S3 credentials stay out of Prefect, lineage, logs and artifacts; they come from the environment or a
Secret block, resolved where the store is opened. A real SeaweedFS S3 checks that they are really used."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import duckdb
import pytest
from media import make_video
from s3_server import SeaweedS3, new_bucket_name
from secret_scan import files_containing

THINKSOUND = str(Path(sys.executable).with_name("thinksound"))
MARKER_ACCESS_KEY = "marker-access"


@pytest.fixture(scope="module")
def marker_secret() -> str:
    return f"marker-secret-{uuid.uuid4().hex}"


@pytest.fixture(scope="module")
def marker_s3(tmp_path_factory, marker_secret):
    """A SeaweedFS server that accepts only the marker credentials."""
    data_dir = tmp_path_factory.mktemp("weed-marker")
    server = SeaweedS3(data_dir=data_dir, access_key=MARKER_ACCESS_KEY, secret_key=marker_secret)
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


def test_a_run_on_s3_leaves_no_trace_of_the_secret(tmp_path, marker_s3, marker_secret):
    videos = tmp_path / "videos"
    videos.mkdir()
    make_video(videos / "clip.mp4", duration=1.2, size="32x32")
    workdir = tmp_path / "w"
    bucket = new_bucket_name()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(
        PREFECT_SERVER_ANALYTICS_ENABLED="false", DO_NOT_TRACK="1", HF_HUB_OFFLINE="1",
        THINKSOUND_S3_ENDPOINT=marker_s3.endpoint,
        AWS_ACCESS_KEY_ID=MARKER_ACCESS_KEY, AWS_SECRET_ACCESS_KEY=marker_secret,
    )
    done = subprocess.run(
        [THINKSOUND, "run", str(videos), "--preset", "tiny", "--workdir", str(workdir), "--steps", "2",
         "--store", f"s3://{bucket}/dubbing"],
        env=env, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]

    with duckdb.connect(str(workdir / "lineage.duckdb"), read_only=True) as con:
        status, audio_uri = con.execute("SELECT status, audio_uri FROM item_status").fetchone()
    assert status == "succeeded" and audio_uri.startswith(f"s3://{bucket}/dubbing/")
    marker_s3.client().stat_object(bucket, audio_uri.removeprefix(f"s3://{bucket}/"))

    assert (workdir / "prefect").is_dir() and any((workdir / "prefect").rglob("*.db"))
    assert files_containing(workdir, marker_secret) == []
    assert marker_secret not in done.stdout and marker_secret not in done.stderr


def test_a_named_secret_block_supplies_the_credentials(prefect_harness, marker_s3, marker_secret, monkeypatch):
    from prefect.blocks.system import Secret

    from storage import open_store
    from tasks.config import S3Settings
    from tasks.s3_access import s3_config

    block = f"s3-marker-{uuid.uuid4().hex[:8]}"
    Secret(value={"access_key": MARKER_ACCESS_KEY, "secret_key": marker_secret}).save(block)
    # The block wins over whatever the environment holds.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "wrong-access")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong-secret")
    settings = S3Settings(endpoint=marker_s3.endpoint, credentials_block=block)

    store = open_store(f"s3://{new_bucket_name()}/p", s3=s3_config(settings))
    store.put_bytes("a/b.txt", b"hello")
    assert store.get_bytes("a/b.txt") == b"hello"

    from storage import StorageError

    env_only = open_store(f"s3://{new_bucket_name()}/p", s3=s3_config(S3Settings(endpoint=marker_s3.endpoint)))
    with pytest.raises(StorageError):
        env_only.put_bytes("a/b.txt", b"refused with the wrong keys")


def test_an_unusable_secret_block_is_a_clear_error(prefect_harness, marker_s3):
    from prefect.blocks.system import Secret

    from tasks.config import S3Settings
    from tasks.s3_access import S3CredentialsError, s3_config

    with pytest.raises(S3CredentialsError, match="no Prefect Secret block named 'absent-block'"):
        s3_config(S3Settings(endpoint=marker_s3.endpoint, credentials_block="absent-block"))
    name = f"s3-bad-{uuid.uuid4().hex[:8]}"
    Secret(value="just-a-string-secret").save(name)
    with pytest.raises(S3CredentialsError, match="access_key and secret_key") as caught:
        s3_config(S3Settings(endpoint=marker_s3.endpoint, credentials_block=name))
    assert "just-a-string-secret" not in str(caught.value)


def test_settings_refuse_credentials_without_echoing_them():
    from pydantic import ValidationError

    from tasks.config import PipelineSettings

    with pytest.raises(ValidationError, match="do not belong in settings") as caught:
        PipelineSettings(workdir="w", s3={"endpoint": "127.0.0.1:9000", "secret_key": "echo-me-not"})
    assert "echo-me-not" not in str(caught.value)
