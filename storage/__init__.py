"""Storage for the dubbing pipeline: artifact stores (local directory or S3) and DuckDB lineage."""

from storage.artifacts import ArtifactStore
from storage.errors import ArtifactNotFound, InvalidKey, StorageError, TransientStorageError, is_transient
from storage.factory import fetch_input, open_store, read_source
from storage.keys import content_key, sha256_bytes, sha256_file, validate_key
from storage.lineage import Lineage, LineageLocked, LineageUnavailable
from storage.lineage_records import Attempt, CotRecord, SourceRow, Stage, StateUpdate
from storage.local_store import LocalStore
from storage.s3_store import S3Config, S3Store, is_s3_uri

__all__ = [
    "ArtifactNotFound",
    "ArtifactStore",
    "Attempt",
    "CotRecord",
    "InvalidKey",
    "Lineage",
    "LineageLocked",
    "LineageUnavailable",
    "LocalStore",
    "S3Config",
    "S3Store",
    "SourceRow",
    "Stage",
    "StateUpdate",
    "StorageError",
    "TransientStorageError",
    "content_key",
    "fetch_input",
    "is_s3_uri",
    "is_transient",
    "open_store",
    "read_source",
    "sha256_bytes",
    "sha256_file",
    "validate_key",
]
