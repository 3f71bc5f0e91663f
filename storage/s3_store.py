"""Artifact store on MinIO or any S3-compatible server, through the `minio` SDK.

Atomicity comes from S3 itself: a single PUT or a completed multipart upload makes the object
appear whole; an interrupted upload leaves nothing a reader can see.
"""

from __future__ import annotations

import contextlib
import datetime
import io
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import certifi
import urllib3
from minio import Minio
from minio.error import InvalidResponseError, MinioException, S3Error, ServerError

from storage.artifacts import OCTET_STREAM, ArtifactStore
from storage.errors import ArtifactNotFound, StorageError, TransientStorageError
from storage.keys import validate_key
from storage.local_store import atomic_write

log = logging.getLogger(__name__)

_NOT_FOUND = frozenset({"NoSuchKey", "NoSuchObject", "NoSuchBucket", "NotFound", "ResourceNotFound"})
_TRANSIENT_CODES = frozenset(
    {"InternalError", "ServiceUnavailable", "SlowDown", "RequestTimeout", "ServerBusy", "Throttling"}
)
_MIN_PART = 5 * 1024 * 1024
_CHUNK = 1 << 20


@dataclass(frozen=True, kw_only=True)
class S3Config:
    """Where and how to reach the S3 server. Credentials are excluded from `repr` so they never log."""

    endpoint: str
    access_key: str | None = field(default=None, repr=False)
    secret_key: str | None = field(default=None, repr=False)
    secure: bool = False
    region: str | None = None
    connect_timeout_s: float = 10.0
    read_timeout_s: float = 120.0
    # urllib3-level retries for refused connections and 5xx answers, before we give up and raise
    # TransientStorageError (after which Prefect's task retries take over).
    retries: int = 3
    backoff_s: float = 0.25
    part_size: int = 16 * 1024 * 1024
    max_connections: int = 16

    def __post_init__(self) -> None:
        if "://" in self.endpoint or "/" in self.endpoint:
            raise ValueError(f"endpoint must be host[:port] without scheme or path, got {self.endpoint!r}")
        if self.part_size < _MIN_PART:
            raise ValueError(f"part_size must be at least {_MIN_PART} bytes (S3 minimum)")


def is_s3_uri(location: str) -> bool:
    return str(location).startswith("s3://")


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """Split `s3://bucket/some/prefix` into ("bucket", "some/prefix")."""
    if not uri.startswith("s3://"):
        raise ValueError(f"not an s3:// URI: {uri!r}")
    bucket, _, rest = uri[len("s3://") :].partition("/")
    if not bucket:
        raise ValueError(f"s3 URI has no bucket: {uri!r}")
    return bucket, rest.strip("/")


def make_client(config: S3Config) -> Minio:
    """A `Minio` client with bounded timeouts and retries (the SDK default waits 5 minutes)."""
    http = urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=config.connect_timeout_s, read=config.read_timeout_s),
        maxsize=config.max_connections,
        cert_reqs="CERT_REQUIRED" if config.secure else "CERT_NONE",
        ca_certs=certifi.where(),
        retries=urllib3.Retry(
            total=config.retries,
            backoff_factor=config.backoff_s,
            status_forcelist=[500, 502, 503, 504],
        ),
    )
    return Minio(
        config.endpoint,
        access_key=config.access_key,
        secret_key=config.secret_key,
        secure=config.secure,
        region=config.region,
        http_client=http,
    )


def _is_transient_s3(exc: S3Error) -> bool:
    status = getattr(exc.response, "status", None)
    return exc.code in _TRANSIENT_CODES or (isinstance(status, int) and status >= 500)


@contextlib.contextmanager
def translate_errors(what: str) -> Iterator[None]:
    """Map SDK and network exceptions to the storage error types. `what` names the operation."""
    try:
        yield
    except S3Error as exc:
        if exc.code in _NOT_FOUND:
            raise ArtifactNotFound(f"{what}: not found ({exc.code})") from exc
        if _is_transient_s3(exc):
            raise TransientStorageError(f"{what}: server error {exc.code}") from exc
        raise StorageError(f"{what}: {exc.code}: {exc.message}") from exc
    except ServerError as exc:
        raise TransientStorageError(f"{what}: server error HTTP {exc.status_code}") from exc
    except InvalidResponseError as exc:
        raise TransientStorageError(f"{what}: invalid response from server: {exc}") from exc
    except MinioException as exc:
        raise StorageError(f"{what}: {exc}") from exc
    except (urllib3.exceptions.HTTPError, ConnectionError, TimeoutError) as exc:
        raise TransientStorageError(f"{what}: network error: {type(exc).__name__}: {exc}") from exc


class S3Store(ArtifactStore):
    """Objects live in `bucket` under `prefix`; the bucket is created on first write if missing."""

    def __init__(self, *, bucket: str, prefix: str = "", config: S3Config, client: Minio | None = None) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        if self.prefix:
            validate_key(self.prefix)
        self.config = config
        self._client = client or make_client(config)
        self._bucket_ready = False
        self._bucket_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"S3Store(uri={self.uri_prefix!r}, endpoint={self.config.endpoint!r})"

    @property
    def uri_prefix(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}".rstrip("/")

    def _name(self, key: str) -> str:
        validate_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _ensure_bucket(self) -> None:
        if self._bucket_ready:
            return
        with self._bucket_lock:
            if self._bucket_ready:
                return
            with translate_errors(f"create bucket s3://{self.bucket}"):
                if not self._client.bucket_exists(self.bucket):
                    try:
                        self._client.make_bucket(self.bucket, location=self.config.region)
                    except S3Error as exc:
                        # Another worker may have created it between the check and the call.
                        if exc.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                            raise
                        log.debug("bucket %s created concurrently", self.bucket)
            self._bucket_ready = True

    def put_bytes(self, key: str, data: bytes, *, content_type: str = OCTET_STREAM) -> str:
        return self.put_stream(key, io.BytesIO(data), length=len(data), content_type=content_type)

    def put_file(self, key: str, path: Path, *, content_type: str = OCTET_STREAM) -> str:
        name = self._name(key)
        self._ensure_bucket()
        with translate_errors(f"put {self.uri(key)}"):
            self._client.fput_object(
                self.bucket, name, str(path), content_type=content_type, part_size=self.config.part_size
            )
        log.debug("stored %s", self.uri(key))
        return self.uri(key)

    def put_stream(
        self, key: str, stream: BinaryIO, *, length: int = -1, content_type: str = OCTET_STREAM
    ) -> str:
        name = self._name(key)
        self._ensure_bucket()
        with translate_errors(f"put {self.uri(key)}"):
            self._client.put_object(
                self.bucket, name, stream, length, content_type=content_type, part_size=self.config.part_size
            )
        log.debug("stored %s", self.uri(key))
        return self.uri(key)

    def get_bytes(self, key: str) -> bytes:
        name = self._name(key)
        with translate_errors(f"get {self.uri(key)}"):
            response = self._client.get_object(self.bucket, name)
            try:
                return response.read()
            finally:
                response.close()
                response.release_conn()

    def get_file(self, key: str, dest: Path) -> Path:
        name = self._name(key)
        dest = Path(dest)
        with translate_errors(f"get {self.uri(key)}"):
            response = self._client.get_object(self.bucket, name)
            try:
                with atomic_write(dest) as handle:
                    for chunk in response.stream(_CHUNK):
                        handle.write(chunk)
            finally:
                response.close()
                response.release_conn()
        return dest

    def exists(self, key: str) -> bool:
        name = self._name(key)
        try:
            with translate_errors(f"stat {self.uri(key)}"):
                self._client.stat_object(self.bucket, name)
        except ArtifactNotFound:
            return False
        return True

    def size(self, key: str) -> int:
        """Size in bytes of the stored object."""
        name = self._name(key)
        with translate_errors(f"stat {self.uri(key)}"):
            return int(self._client.stat_object(self.bucket, name).size or 0)

    def etag(self, key: str) -> str:
        """The server's entity tag: changes whenever the object is rewritten with other content."""
        name = self._name(key)
        with translate_errors(f"stat {self.uri(key)}"):
            return str(self._client.stat_object(self.bucket, name).etag or "")

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._name(key)}"

    def share_url(self, key: str, *, expires_s: int) -> str:
        """A presigned GET URL (S3 allows at most 7 days)."""
        with translate_errors(f"presign {self.uri(key)}"):
            return self._client.presigned_get_object(
                self.bucket, self._name(key), expires=datetime.timedelta(seconds=expires_s)
            )

    def delete(self, key: str) -> None:
        name = self._name(key)
        try:
            with translate_errors(f"delete {self.uri(key)}"):
                self._client.remove_object(self.bucket, name)
        except ArtifactNotFound:
            return
