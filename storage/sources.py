"""One identity per input: how a source path is spelled in lineage, and which inputs a run may read.

A local source is recorded as an absolute path whose folders are resolved (symlinks, `..`, `./`) but
whose last component is kept: two directory entries stay two sources even when one is a symlink to
the other, and every spelling of one entry (relative from any folder, absolute, with `./` or `..`)
maps to the same text. URIs (s3://) are their own identity.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import unquote, urlparse

from storage.s3_store import is_s3_uri


def _is_remote(text: str) -> bool:
    return "://" in text and not text.startswith("file://")


def _local_text(text: str) -> str:
    if text.startswith("file://"):
        return unquote(urlparse(text).path)
    return os.path.expanduser(text)


def canonical_source(text: str, base: str | Path | None = None) -> str:
    """The lineage spelling of `text`; a relative path is taken relative to `base` (default: the cwd)."""
    if _is_remote(text):
        return text
    joined = os.path.join(os.path.abspath(base) if base is not None else os.getcwd(), _local_text(text))
    head, tail = os.path.split(joined)
    if tail in ("", ".", ".."):
        return os.path.realpath(joined)
    return os.path.join(os.path.realpath(head), tail)


def source_spellings(text: str) -> list[str]:
    """Every recorded spelling `text` may refer to: as given, its canonical form, and its target if a link."""
    spellings = [text]
    if not _is_remote(text):
        spellings += [canonical_source(text), os.path.realpath(_local_text(text))]
    return list(dict.fromkeys(spellings))


def resolved_root(root: str) -> str:
    """A root as it is compared: S3 prefixes as given, local folders fully resolved."""
    return root if is_s3_uri(root) else os.path.realpath(_local_text(root))


def outside_roots(location: str, roots: Iterable[str]) -> bool:
    """Whether `location` lies outside every root. Local paths are compared after resolving symlinks,
    so a link inside a root that points elsewhere is outside; `s3://` alone admits every S3 URI."""
    roots = list(roots)
    if is_s3_uri(location):
        prefixes = [r if r.endswith("/") else r + "/" for r in roots if is_s3_uri(r)]
        return not any(location.startswith(p) or location + "/" == p for p in prefixes)
    real = os.path.realpath(_local_text(location))
    for root in roots:
        if is_s3_uri(root):
            continue
        resolved = resolved_root(root)
        if real == resolved or real.startswith(resolved.rstrip(os.sep) + os.sep):
            return False
    return True
