"""Looking for a marker secret in every byte a run left behind."""

from __future__ import annotations

import os
from pathlib import Path


def files_containing(root: Path, marker: str) -> list[str]:
    """Every file under `root` whose bytes contain `marker` (databases and their -wal files included)."""
    needle = marker.encode()
    found = []
    for folder, _, names in os.walk(root):
        for name in names:
            path = Path(folder) / name
            if path.is_file() and needle in path.read_bytes():
                found.append(str(path.relative_to(root)))
    return found
