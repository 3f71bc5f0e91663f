"""The pinned weights (``tasks/weights.lock.json``): which files each preset needs, where they are, and
whether they are the pinned bytes.

A file is looked for in a Hugging Face hub cache (``models--owner--name/snapshots/<commit>/``, at the
pinned revision), then in a plain folder per repo (``DIR/owner/name/FILE``, what ModelScope and copied
folders look like), then directly in the folder.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace
from pathlib import Path

DEFAULT_LOCK = Path(__file__).with_name("weights.lock.json")
LOCK_FORMAT = 1
_CHUNK = 8 << 20


@dataclass(frozen=True)
class LockedFile:
    name: str
    size: int | None = None
    sha256: str | None = None


@dataclass(frozen=True)
class LockedModel:
    """One hub repository at one revision and the files of it a preset needs."""

    key: str
    repo: str
    revision: str
    files: tuple[LockedFile, ...]
    modelscope: str | None = None


@dataclass(frozen=True)
class WeightsLock:
    models: dict[str, LockedModel]
    presets: dict[str, tuple[str, ...]]
    about: str = ""
    path: Path = field(default=DEFAULT_LOCK, compare=False)

    @classmethod
    def read(cls, path: str | Path = DEFAULT_LOCK) -> WeightsLock:
        path = Path(path)
        data = json.loads(path.read_text())
        if data.get("format") != LOCK_FORMAT:
            raise ValueError(f"{path}: unknown lock format {data.get('format')!r} (expected {LOCK_FORMAT})")
        models = {
            key: LockedModel(
                key=key,
                repo=m["repo"],
                revision=m.get("revision") or "main",
                modelscope=m.get("modelscope"),
                files=tuple(LockedFile(f["name"], f.get("size"), f.get("sha256")) for f in m["files"]),
            )
            for key, m in data["models"].items()
        }
        presets = {name: tuple(keys) for name, keys in data["presets"].items()}
        for name, keys in presets.items():
            unknown = sorted(set(keys) - set(models))
            if unknown:
                raise ValueError(f"{path}: preset {name!r} names unknown models {unknown}")
        return cls(models=models, presets=presets, about=data.get("about", ""), path=path)

    def write(self, path: str | Path | None = None) -> None:
        data = {
            "format": LOCK_FORMAT,
            "about": self.about,
            "presets": {name: list(keys) for name, keys in self.presets.items()},
            "models": {
                key: {
                    "repo": m.repo,
                    "revision": m.revision,
                    **({"modelscope": m.modelscope} if m.modelscope else {}),
                    "files": [{"name": f.name, "size": f.size, "sha256": f.sha256} for f in m.files],
                }
                for key, m in self.models.items()
            },
        }
        target = Path(path or self.path)
        tmp = target.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2) + "\n")
        tmp.replace(target)

    def for_preset(self, preset: str) -> list[LockedModel]:
        if preset not in self.presets:
            raise ValueError(f"no preset {preset!r} in {self.path} (known: {', '.join(sorted(self.presets))})")
        return [self.models[key] for key in self.presets[preset]]

    def with_model(self, model: LockedModel) -> WeightsLock:
        return replace(self, models={**self.models, model.key: model})


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def find_file(model: LockedModel, name: str, root: Path | None) -> Path | None:
    """The file in the hub cache ``root`` (default: the user's) at the pinned revision, or in a plain
    folder under ``root``; None when it is nowhere."""
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(model.repo, name, cache_dir=root, revision=model.revision)
    if isinstance(cached, str) and Path(cached).is_file():
        return Path(cached)
    if root is not None:
        for candidate in (root / model.repo / name, root / name):
            if candidate.is_file():
                return candidate
    return None


def snapshot_dir(model: LockedModel, root: Path | None) -> Path | None:
    """The folder that holds every file of ``model`` (what transformers' from_pretrained takes), or None."""
    paths = [find_file(model, f.name, root) for f in model.files]
    if not paths or any(p is None for p in paths) or len({p.parent for p in paths}) != 1:
        return None
    return paths[0].parent


@dataclass(frozen=True)
class FileCheck:
    model: str
    repo: str
    name: str
    path: Path | None
    status: str  # ok | unpinned | missing | size mismatch | sha256 mismatch
    size: int | None = None
    sha256: str | None = None

    @property
    def failed(self) -> bool:
        return self.status not in {"ok", "unpinned"}


def check_file(model: LockedModel, locked: LockedFile, root: Path | None, *, hash_files: bool = True) -> FileCheck:
    """Where one locked file is and whether its size and sha256 are the pinned ones."""
    path = find_file(model, locked.name, root)
    base = {"model": model.key, "repo": model.repo, "name": locked.name, "path": path}
    if path is None:
        return FileCheck(**base, status="missing")
    size = path.stat().st_size
    if locked.size is not None and size != locked.size:
        return FileCheck(**base, status="size mismatch", size=size)
    digest = sha256_of(path) if hash_files else None
    if locked.sha256 is not None and digest is not None and digest != locked.sha256:
        return FileCheck(**base, status="sha256 mismatch", size=size, sha256=digest)
    pinned = locked.sha256 is not None and locked.size is not None
    return FileCheck(**base, status="ok" if pinned else "unpinned", size=size, sha256=digest)


def check_preset(lock: WeightsLock, preset: str, root: Path | None, *, hash_files: bool = True) -> list[FileCheck]:
    return [check_file(m, f, root, hash_files=hash_files) for m in lock.for_preset(preset) for f in m.files]
