"""Build an artifact store from a target string, and fetch input videos from wherever they live."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from urllib.parse import unquote, urlparse

from storage.artifacts import ArtifactStore
from storage.errors import ArtifactNotFound
from storage.local_store import LocalStore, atomic_write
from storage.s3_store import S3Config, S3Store, make_client, parse_s3_uri, translate_errors

log = logging.getLogger(__name__)


def open_store(
    target: str | Path,
    *,
    s3_endpoint: str | None = None,
    access_key: str | None = None,
    secret_key: str | None = None,
    secure: bool = False,
    s3: S3Config | None = None,
) -> ArtifactStore:
    """A local store for a directory path (or file:// URI), an S3 store for `s3://bucket/prefix`.

    S3 settings come either as a full `S3Config` (`s3=`) or as the individual keyword arguments;
    nothing is read from the environment here.
    """
    text = str(target)
    if text.startswith("s3://"):
        bucket, prefix = parse_s3_uri(text)
        config = s3 or _config_from_args(s3_endpoint, access_key, secret_key, secure)
        return S3Store(bucket=bucket, prefix=prefix, config=config)
    if "://" in text and not text.startswith("file://"):
        raise ValueError(f"unsupported store target {text!r}: use a directory, file:// or s3://")
    return LocalStore(root=_local_path(text))


def _config_from_args(endpoint: str | None, access_key: str | None, secret_key: str | None, secure: bool) -> S3Config:
    if not endpoint:
        raise ValueError("an s3:// store needs an S3 endpoint (host:port), e.g. from THINKSOUND_S3_ENDPOINT")
    return S3Config(endpoint=endpoint, access_key=access_key, secret_key=secret_key, secure=secure)


def _local_path(text: str) -> Path:
    if text.startswith("file://"):
        return Path(unquote(urlparse(text).path))
    return Path(text)


def fetch_input(
    source: str | Path,
    dest_dir: Path,
    *,
    s3_endpoint: str | None = None,
    access_key: str | None = None,
    secret_key: str | None = None,
    secure: bool = False,
    s3: S3Config | None = None,
) -> Path:
    """Return a local path for an input video; raise `FileNotFoundError` when it does not exist.

    Local paths (and file:// URIs) are returned as they are. An `s3://bucket/key` object is
    downloaded into `dest_dir` under a name derived from its URI and ETag, so a rerun on unchanged
    inputs reuses the download and a rewritten object is fetched again. Network trouble raises
    `TransientStorageError`.
    """
    text = str(source)
    if not text.startswith("s3://"):
        path = _local_path(text)
        if not path.is_file():
            raise FileNotFoundError(f"input not found: {text}")
        return path
    bucket, key = parse_s3_uri(text)
    if not key:
        raise ValueError(f"s3 input {text!r} names a bucket, not an object")
    client = make_client(s3 or _config_from_args(s3_endpoint, access_key, secret_key, secure))
    try:
        with translate_errors(f"stat {text}"):
            etag = client.stat_object(bucket, key).etag or ""
        tag = hashlib.sha256(f"{text}\n{etag}".encode()).hexdigest()[:16]
        dest = Path(dest_dir) / tag / (key.rsplit("/", 1)[-1] or "input")
        if dest.is_file():
            log.debug("reusing downloaded input %s", dest)
            return dest
        log.info("downloading input %s", text)
        with translate_errors(f"get {text}"):
            response = client.get_object(bucket, key)
            try:
                with atomic_write(dest) as handle:
                    for chunk in response.stream(1 << 20):
                        handle.write(chunk)
            finally:
                response.close()
                response.release_conn()
    except ArtifactNotFound as exc:
        raise FileNotFoundError(f"input not found: {text}") from exc
    return dest


read_source = fetch_input
