"""Scratch space that each process owns, so that a run can tell a killed run's leftovers from live files.

A process works in `scratch/proc-<pid>-<random>/` and holds an exclusive `flock` on the lock file
beside it for as long as it lives. The kernel drops the lock when the process dies, however it dies,
so a lock that can be taken means its owner is gone and its folder is stale. The first claim in a
process removes stale folders, and the `tmp*` folders that versions without owners left directly in
`scratch/`; partial downloads under `scratch/inputs/` go too when no other live process owns scratch.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import logging
import os
import shutil
import threading
import uuid
from pathlib import Path

log = logging.getLogger(__name__)

OWNER_PREFIX = "proc-"
LOCK_SUFFIX = ".lock"
# Temporary names: `tempfile` folders of earlier versions, and `atomic_write`'s partial files.
_LEGACY_PREFIX = "tmp"
_PARTIAL_PREFIX = ".tmp-"

_lock = threading.Lock()
_claims: dict[Path, tuple[Path, int]] = {}


def _try_lock(path: Path) -> int | None:
    """An fd holding the lock on `path`, or None when a live process holds it."""
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def remove_stale(root: Path) -> list[Path]:
    """Remove what no live process owns under `root`; returns the paths removed."""
    removed: list[Path] = []
    others_alive = False
    for lock_path in sorted(root.glob(f"{OWNER_PREFIX}*{LOCK_SUFFIX}")):
        if any(lock_path == root / (own.name + LOCK_SUFFIX) for own, _ in _claims.values()):
            continue
        fd = _try_lock(lock_path)
        if fd is None:
            others_alive = others_alive or lock_path.exists()
            continue
        try:
            folder = lock_path.with_name(lock_path.name.removesuffix(LOCK_SUFFIX))
            shutil.rmtree(folder, ignore_errors=True)
            lock_path.unlink(missing_ok=True)
            removed.append(folder)
        finally:
            os.close(fd)
    for entry in root.iterdir():
        owned_dir = entry.name.startswith(OWNER_PREFIX) and not entry.name.endswith(LOCK_SUFFIX)
        if owned_dir and not (root / (entry.name + LOCK_SUFFIX)).exists():
            # Its owner died before it could be removed with its lock: nothing can own it any more.
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
        elif entry.name.startswith(_LEGACY_PREFIX):
            _remove(entry)
            removed.append(entry)
    if not others_alive and (root / "inputs").is_dir():
        for partial in (root / "inputs").rglob(f"{_PARTIAL_PREFIX}*"):
            _remove(partial)
            removed.append(partial)
    if removed:
        log.info("removed %d stale scratch entries left by runs that are gone", len(removed))
    return removed


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _claim(root: Path) -> tuple[Path, int]:
    while True:
        own = root / f"{OWNER_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:8]}"
        lock_path = own.with_name(own.name + LOCK_SUFFIX)
        fd = os.open(lock_path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        # Another process's cleanup may have taken the fresh lock file before this one did, and
        # unlinked it: then the lock guards nothing, and the claim starts again under a new name.
        with contextlib.suppress(FileNotFoundError):
            if os.stat(lock_path).st_ino == os.fstat(fd).st_ino:
                own.mkdir()
                return own, fd
        os.close(fd)


def _release(root: Path) -> None:
    with _lock:
        claim = _claims.pop(root, None)
    if claim is None:
        return
    own, fd = claim
    shutil.rmtree(own, ignore_errors=True)
    own.with_name(own.name + LOCK_SUFFIX).unlink(missing_ok=True)
    os.close(fd)


def own_scratch(root: Path) -> Path:
    """This process's scratch folder under `root` (claimed, after removing stale ones, on first use)."""
    root = root.resolve()
    with _lock:
        if root not in _claims:
            root.mkdir(parents=True, exist_ok=True)
            remove_stale(root)
            _claims[root] = _claim(root)
            atexit.register(_release, root)
        return _claims[root][0]
