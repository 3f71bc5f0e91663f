"""Locating weights (local path, hub id, hub file) and fingerprinting them for cache keys."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file

from thinksound.features.synchformer import VFEAT_PREFIX, Synchformer

HUB_FILE_SCHEME = "hf://"
_SAMPLE_BYTES = 1 << 20


def resolve_file(source: str | Path, *, local_files_only: bool) -> Path:
    """A local file path, or ``hf://owner/repo/path/in/repo`` fetched into the hub cache."""
    text = str(source)
    if text.startswith(HUB_FILE_SCHEME):
        from huggingface_hub import hf_hub_download  # noqa: PLC0415 - hub only when asked for

        owner, repo, filename = text[len(HUB_FILE_SCHEME) :].split("/", 2)
        return Path(hf_hub_download(f"{owner}/{repo}", filename, local_files_only=local_files_only))
    path = Path(text)
    if not path.is_file():
        raise FileNotFoundError(f"Synchformer weights not found: {path}")
    return path


def _file_digest(path: Path) -> str:
    """Size plus head and tail samples: cheap on multi-GB files, and changes whenever weights do.

    A safetensors header is hashed in canonical JSON form, since writers may order its metadata
    differently from run to run; the tensor data after it is sampled like any other file.
    """
    h = hashlib.sha256()
    size = path.stat().st_size
    start = 0
    with open(path, "rb") as f:
        if path.suffix == ".safetensors" and size >= 8:
            header_len = int.from_bytes(f.read(8), "little")
            header = json.loads(f.read(header_len))
            h.update(json.dumps(header, sort_keys=True).encode())
            start = 8 + header_len
        h.update(str(size - start).encode())
        f.seek(start)
        if size - start <= 4 * _SAMPLE_BYTES:
            h.update(f.read())
        else:
            h.update(f.read(_SAMPLE_BYTES))
            f.seek(size - _SAMPLE_BYTES)
            h.update(f.read())
    return h.hexdigest()[:16]


def source_identity(source: str | Path) -> str:
    """Stable identity of a model source: content digest for local paths, id@commit for hub ids."""
    path = Path(str(source))
    if path.is_file():
        return f"file:{path.name}:{_file_digest(path)}"
    if path.is_dir():
        digests = {p.relative_to(path).as_posix(): _file_digest(p) for p in sorted(path.rglob("*")) if p.is_file()}
        return "dir:" + hashlib.sha256(json.dumps(digests, sort_keys=True).encode()).hexdigest()[:16]
    text = str(source)
    if text.startswith(HUB_FILE_SCHEME):
        return f"hub-file:{text}@{_cached_commit(text[len(HUB_FILE_SCHEME) :].split('/', 2))}"
    owner_repo = text.split("/", 1)
    return f"hub:{text}@{_cached_commit([*owner_repo, 'config.json'])}"


def _cached_commit(parts: list[str]) -> str:
    # The hub cache keeps files under snapshots/<commit>/, so the commit is known offline once cached.
    from huggingface_hub import try_to_load_from_cache  # noqa: PLC0415

    if len(parts) < 3:
        return "unresolved"
    found = try_to_load_from_cache(f"{parts[0]}/{parts[1]}", parts[2])
    if isinstance(found, str) and "/snapshots/" in found:
        return found.split("/snapshots/")[1].split("/")[0]
    return "unresolved"


def load_synchformer(
    source: str | Path, *, device: torch.device, dtype: torch.dtype, local_files_only: bool = False
) -> Synchformer:
    """Build on the meta device and load strictly with ``assign``: no second copy of the weights."""
    path = resolve_file(source, local_files_only=local_files_only)
    meta: dict[str, str] = {}
    if path.suffix == ".safetensors":
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        state = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    state = {k: v for k, v in state.items() if k.startswith(VFEAT_PREFIX)}
    if f"{VFEAT_PREFIX}cls_token" not in state:
        raise ValueError(f"{path}: no {VFEAT_PREFIX}* keys; not a Synchformer checkpoint")
    embed_dim = int(state[f"{VFEAT_PREFIX}cls_token"].shape[-1])
    depth = len({k.split(".")[2] for k in state if k.startswith(f"{VFEAT_PREFIX}blocks.")})
    # Head count is not visible in shapes; the published model uses 64-wide heads.
    num_heads = int(meta.get("num_heads", embed_dim // 64))
    with torch.device("meta"):
        enc = Synchformer(embed_dim=embed_dim, depth=depth, num_heads=num_heads)
    enc.load_state_dict(state, strict=True, assign=True)
    return enc.to(device=device, dtype=dtype).eval()
