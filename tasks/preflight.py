"""Before a run touches any item: is every model its preset needs here (a local folder, the hub cache)
or at least on a reachable hub?

A run that would fail inside its first batch for want of weights fails here instead, with one line per
missing part and the command that fetches it. What is found is pinned into the settings as local
paths (the hub cache's snapshot folders at the locked revisions), so the run loads exactly those files
and never asks the hub again.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tasks.config import PipelineSettings
from tasks.weights_lock import LockedFile, LockedModel, WeightsLock, find_file, snapshot_dir
from thinksound.features.weights import SYNCHFORMER_FILENAME, hub_file
from thinksound.loading import MAIN_CHECKPOINT, VAE_CHECKPOINT

FETCH_COMMAND = "thinksound weights fetch --preset thinksound"
# (repo, files, revision) -> the files the hub has; raises when the hub cannot be asked.
HubLookup = Callable[[str, list[str], str], set[str]]


class WeightsMissing(RuntimeError):
    """Some model of the preset is nowhere to be found; ``lines`` say what and how to fetch it."""

    def __init__(self, lines: list[str], detail: list[str]) -> None:
        super().__init__("\n".join(lines))
        self.lines = lines
        self.detail = detail


@dataclass
class Preflight:
    settings: PipelineSettings
    offline: bool
    missing: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    detail: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        """What a user reads: the missing parts, why the hub was not asked, and the fix."""
        out = [f"missing  {line}" for line in self.missing]
        if self.offline:
            out.append("offline: HF_HUB_OFFLINE is set, so the hub was not asked; only local folders and the hub cache count")
        out.append(f"fetch them with: {FETCH_COMMAND}   (on a machine with hub access; --to DIR for another cache)")
        return out


def hub_lookup(repo: str, names: list[str], revision: str) -> set[str]:
    from huggingface_hub import HfApi

    return {info.path for info in HfApi().get_paths_info(repo, names, revision=revision)}


def _locked(lock: WeightsLock, repo: str, key: str, names: list[str]) -> LockedModel:
    """The lock's entry for this repo (pinned revision), or an unpinned one at main."""
    for model in lock.models.values():
        if model.repo == repo:
            return model
    return LockedModel(key=key, repo=repo, revision="main", files=tuple(LockedFile(n) for n in names))


class _Checker:
    def __init__(self, result: Preflight, lock: WeightsLock, hub: HubLookup) -> None:
        self.result, self.lock, self.hub = result, lock, hub

    def on_hub(self, label: str, model: LockedModel, names: list[str]) -> bool:
        """Whether the hub has the files (never asked offline); a miss is recorded."""
        where = "not in the hub cache"
        if not self.result.offline:
            try:
                present = self.hub(model.repo, names, model.revision)
            except Exception as exc:  # the hub's errors are many (network, auth, not found): all mean "no"
                self.result.detail.append(f"{label}: hub lookup of {model.repo}@{model.revision} failed: {exc!r}")
                where = "not in the hub cache, and the hub cannot be reached"
            else:
                lacking = [n for n in names if n not in present]
                if not lacking:
                    self.result.notes.append(f"{label}: {model.repo} will be downloaded from the hub on first use")
                    return True
                where = f"not in the hub cache, and {model.repo}@{model.revision} lacks {', '.join(lacking)}"
        files = ", ".join(names) if len(names) <= 3 else f"{len(names)} files"
        self.result.missing.append(f"{label} {model.repo}: {files} ({where})")
        self.result.detail.append(f"{label}: looked for {names} of {model.repo}@{model.revision} in the hub cache")
        return False

    def checkpoints(self, source: str | None) -> str | None:
        """The generator's folder: a local one, or the cached snapshot; None keeps the setting."""
        names = [MAIN_CHECKPOINT, VAE_CHECKPOINT]
        locked = self.lock.models.get("thinksound")
        repo = source or (locked.repo if locked else "liuhuadai/ThinkSound")
        label = "ThinkSound checkpoints"
        if Path(repo).is_dir():
            lacking = [n for n in names if not (Path(repo) / n).is_file()]
            if lacking:
                self.result.missing.append(f"{label} in {repo}: {', '.join(lacking)} (no such file)")
            return None
        model = _locked(self.lock, repo, "thinksound", names)
        found = [find_file(model, n, None) for n in names]
        if all(found) and len({p.parent for p in found}) == 1:
            self.result.detail.append(f"{label}: {found[0].parent}")
            return str(found[0].parent)
        self.on_hub(label, model, [n for n, p in zip(names, found, strict=True) if p is None])
        return None

    def synchformer(self, source: str | None, weights: str | None) -> str | None:
        label = "Synchformer weights"
        if source is None and weights and (Path(weights) / SYNCHFORMER_FILENAME).is_file():
            return str(Path(weights) / SYNCHFORMER_FILENAME)
        source = source or (self.lock.models["thinksound"].repo if "thinksound" in self.lock.models else None)
        ref = hub_file(source or "", default_filename=SYNCHFORMER_FILENAME)
        if ref is None:
            if not Path(str(source)).is_file():
                self.result.missing.append(f"{label} {source} (no such file)")
            return None
        model = _locked(self.lock, ref[0], "synchformer", [ref[1]])
        found = find_file(model, ref[1], None)
        if found is not None:
            return str(found)
        self.on_hub(label, model, [ref[1]])
        return None

    def encoder(self, label: str, key: str, source: str) -> str | None:
        """A transformers model: a local folder with config.json, or the cached snapshot of the lock."""
        if Path(source).is_dir():
            if not (Path(source) / "config.json").is_file():
                self.result.missing.append(f"{label} in {source}: config.json (no such file)")
            return None
        model = _locked(self.lock, source, key, ["config.json"])
        folder = snapshot_dir(model, None)
        if folder is not None:
            return str(folder)
        lacking = [f.name for f in model.files if find_file(model, f.name, None) is None]
        self.on_hub(label, model, lacking)
        return None


def check(
    settings: PipelineSettings, *, offline: bool, lock: WeightsLock | None = None, hub: HubLookup = hub_lookup
) -> Preflight:
    """Find every model of the settings' preset; the result's settings point at what was found."""
    result = Preflight(settings=settings, offline=offline)
    if settings.preset == "tiny":
        return result
    checker = _Checker(result, lock or WeightsLock.read(), hub)
    weights = checker.checkpoints(settings.weights)
    found = {
        "weights": weights,
        "synchformer_weights": checker.synchformer(settings.synchformer_weights, weights or settings.weights),
        "clip_model": checker.encoder("MetaCLIP-H/14", "metaclip", settings.clip_model),
        "t5_model": checker.encoder("T5-v1.1-XL", "t5", settings.t5_model),
    }
    if settings.quality.listen:
        found["clap_model"] = checker.encoder("CLAP", "clap", settings.clap_model)
        found["tagger_model"] = checker.encoder("AST AudioSet tagger", "ast_tagger", settings.tagger_model)
    result.settings = settings.model_copy(update={k: v for k, v in found.items() if v is not None})
    result.detail.extend(f"resolved {k} = {v}" for k, v in found.items() if v is not None)
    return result


def require(settings: PipelineSettings, *, offline: bool | None = None) -> PipelineSettings:
    """The settings with every model pinned to a local path; raises WeightsMissing when one is missing.

    ``offline`` defaults to huggingface_hub's own reading of HF_HUB_OFFLINE.
    """
    if settings.preset == "tiny":
        return settings
    if offline is None:
        from huggingface_hub import constants

        offline = bool(constants.HF_HUB_OFFLINE)
    result = check(settings, offline=offline)
    if result.missing:
        raise WeightsMissing(result.lines(), result.detail + result.notes)
    return result.settings
