"""Getting the pinned weights: download them (Hugging Face hub or ModelScope) and pin a lock file to
the hub's own metadata."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Literal

from tasks.weights_lock import FileCheck, LockedFile, LockedModel, WeightsLock, check_file, sha256_of

Source = Literal["hf", "modelscope"]
Report = Callable[[str], None]


def fetch(
    lock: WeightsLock,
    preset: str,
    *,
    to: Path | None,
    source: Source = "hf",
    offline: bool = False,
    report: Report = lambda _line: None,
) -> list[FileCheck]:
    """Download every file of ``preset`` that is not already present with the pinned bytes, then check
    it. Files go into the hub cache ``to`` (default: the user's), or with ModelScope into ``to/owner/name/``.
    Returns one check per file; offline, a file that is not present stays ``missing``."""
    checks = []
    for model in lock.for_preset(preset):
        for locked in model.files:
            present = check_file(model, locked, to)
            if present.status in {"ok", "unpinned"}:
                report(f"present  {model.repo}/{locked.name}")
                checks.append(present)
                continue
            if offline:
                report(f"missing  {model.repo}/{locked.name} (offline: HF_HUB_OFFLINE is set, nothing downloaded)")
                checks.append(present)
                continue
            report(f"fetching {model.repo}/{locked.name} @ {model.revision} from {source}")
            _download(model, locked, to=to, source=source)
            checks.append(check_file(model, locked, to))
    return checks


def _download(model: LockedModel, locked: LockedFile, *, to: Path | None, source: Source) -> None:
    if source == "modelscope" and model.modelscope:
        if to is None:
            raise ValueError("--source modelscope needs --to DIR (ModelScope has its own cache layout)")
        try:
            from modelscope import snapshot_download
        except ImportError as exc:
            raise RuntimeError("--source modelscope needs the modelscope package: pip install modelscope") from exc
        snapshot_download(model.modelscope, allow_patterns=[locked.name], local_dir=str(to / model.repo))
        return
    from huggingface_hub import hf_hub_download

    hf_hub_download(model.repo, locked.name, revision=model.revision, cache_dir=to)


def lock_from_hub(lock: WeightsLock, *, report: Report = lambda _line: None) -> WeightsLock:
    """Pin each model to the commit its revision names now, with every file's size and sha256 from the
    hub's LFS metadata; small files kept in git (no LFS entry) are downloaded and hashed."""
    from huggingface_hub import HfApi, hf_hub_download

    api = HfApi()
    for model in list(lock.models.values()):
        commit = api.model_info(model.repo, revision=model.revision).sha
        infos = {info.path: info for info in api.get_paths_info(model.repo, [f.name for f in model.files], revision=commit)}
        files = []
        for locked in model.files:
            info = infos.get(locked.name)
            if info is None:
                raise ValueError(f"{model.repo}@{commit} has no file {locked.name}")
            if info.lfs is not None:
                sha256 = info.lfs.sha256
            else:
                sha256 = sha256_of(Path(hf_hub_download(model.repo, locked.name, revision=commit)))
            files.append(LockedFile(locked.name, info.size, sha256))
            report(f"{model.repo}@{commit[:12]} {locked.name} {info.size} {sha256[:16]}")
        lock = lock.with_model(replace(model, revision=commit, files=tuple(files)))
    return lock
