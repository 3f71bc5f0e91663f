"""S3 credentials: the one place they are resolved, in the process that talks to S3.

They never travel in settings (a flow parameter, stored by Prefect and shown in its UI). A deployment's
worker resolves them itself, like the CLI does: from a Prefect `Secret` block when the settings name one
(`s3.credentials_block`, the Prefect convention for deployments), else from the AWS variables of its own
environment. Without either, requests go unsigned (public buckets only).
"""

from __future__ import annotations

import os

from storage import S3Config, is_s3_uri
from tasks.config import S3Settings

__all__ = ["S3CredentialsError", "is_s3_uri", "s3_config"]

ACCESS_KEY_VARIABLE = "AWS_ACCESS_KEY_ID"
SECRET_KEY_VARIABLE = "AWS_SECRET_ACCESS_KEY"
BLOCK_FIELDS = ("access_key", "secret_key")


class S3CredentialsError(ValueError):
    """The named credentials cannot be used; the message never contains a secret."""


def s3_config(s3: S3Settings) -> S3Config:
    """Connection settings with credentials for an s3:// store or input."""
    if not s3.endpoint:
        raise ValueError("an s3:// location needs an S3 endpoint (host:port), e.g. from THINKSOUND_S3_ENDPOINT")
    if s3.credentials_block:
        access_key, secret_key = _from_secret_block(s3.credentials_block)
    else:
        # The standard AWS variables, as every S3 client reads them; here, in the worker's process.
        access_key = os.environ.get(ACCESS_KEY_VARIABLE) or None
        secret_key = os.environ.get(SECRET_KEY_VARIABLE) or None
    return S3Config(endpoint=s3.endpoint, access_key=access_key, secret_key=secret_key, secure=s3.secure)


def _from_secret_block(name: str) -> tuple[str, str]:
    from prefect.blocks.system import Secret

    try:
        value = Secret.load(name, _sync=True).get()
    except ValueError as exc:  # Prefect's "Unable to find block document named ..."
        raise S3CredentialsError(f"no Prefect Secret block named {name!r} (s3.credentials_block)") from exc
    if not isinstance(value, dict) or not all(isinstance(value.get(k), str) and value[k] for k in BLOCK_FIELDS):
        raise S3CredentialsError(
            f"the Prefect Secret block {name!r} must hold a JSON object with string fields "
            f"{' and '.join(BLOCK_FIELDS)}"
        )
    return value["access_key"], value["secret_key"]
