"""The artifact store of a run (a local folder or S3): opened from the settings, and the errors it
raises, of which only a transient one is worth a retry."""

from __future__ import annotations

from storage import ArtifactStore, StorageError, TransientStorageError, open_store
from tasks.config import PipelineSettings
from tasks.s3_access import is_s3_uri, s3_config

__all__ = ["ArtifactStore", "StorageError", "TransientStorageError", "open_artifact_store"]


def open_artifact_store(settings: PipelineSettings) -> ArtifactStore:
    """A new handle on the settings' store; S3 credentials are resolved here, in the process that uses them."""
    target = settings.store_target
    return open_store(target, s3=s3_config(settings.s3) if is_s3_uri(target) else None)
