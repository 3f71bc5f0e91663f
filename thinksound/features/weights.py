"""Locating weights (local path, hub id, hub file) and fingerprinting them for cache keys."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from safetensors import safe_open

from thinksound.features.synchformer import VFEAT_PREFIX, Synchformer
from thinksound.loading import read_state_dict

HUB_FILE_SCHEME = "hf://"
SYNCHFORMER_FILENAME = "synchformer_state_dict.pth"
_SAMPLE_BYTES = 1 << 20


def hub_file(source: str | Path, *, default_filename: str) -> tuple[str, str] | None:
    """``hf://owner/repo/file``, ``owner/repo/file`` or ``owner/repo`` (+ default file) -> (repo, file).

    None for anything that exists locally or does not look like a hub reference.
    """
    text = str(source)
    if not text.startswith(HUB_FILE_SCHEME) and Path(text).exists():
        return None
    parts = text.removeprefix(HUB_FILE_SCHEME).split("/")
    if len(parts) < 2 or not all(parts) or text.startswith(("/", ".")):
        return None
    return f"{parts[0]}/{parts[1]}", "/".join(parts[2:]) or default_filename


def resolve_file(source: str | Path, *, local_files_only: bool, default_filename: str) -> Path:
    """A local file, or a hub file (see ``hub_file``) fetched into the hub cache."""
    ref = hub_file(source, default_filename=default_filename)
    if ref is not None:
        from huggingface_hub import hf_hub_download  # noqa: PLC0415 - hub only when asked for

        return Path(hf_hub_download(ref[0], ref[1], local_files_only=local_files_only))
    path = Path(str(source))
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
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


def source_identity(source: str | Path, *, default_filename: str = "config.json") -> str:
    """Stable identity of a model source: content digest for local paths, repo/file@commit for the hub.

    A hub source that is not in the local cache yet is "unresolved": its identity then names the repo
    but cannot see a change of weights behind it.
    """
    path = Path(str(source))
    if path.is_file():
        return f"file:{path.name}:{_file_digest(path)}"
    if path.is_dir():
        digests = {p.relative_to(path).as_posix(): _file_digest(p) for p in sorted(path.rglob("*")) if p.is_file()}
        return "dir:" + hashlib.sha256(json.dumps(digests, sort_keys=True).encode()).hexdigest()[:16]
    ref = hub_file(source, default_filename=default_filename)
    if ref is None:
        return f"unknown:{source}"
    return f"hub:{ref[0]}/{ref[1]}@{_cached_commit(*ref)}"


def _cached_commit(repo: str, filename: str) -> str:
    # The hub cache keeps files under snapshots/<commit>/, so the commit is known offline once cached.
    from huggingface_hub import try_to_load_from_cache  # noqa: PLC0415

    found = try_to_load_from_cache(repo, filename)
    if isinstance(found, str) and "/snapshots/" in found:
        return found.split("/snapshots/")[1].split("/")[0]
    return "unresolved"


def load_synchformer(
    source: str | Path, *, device: torch.device, dtype: torch.dtype, local_files_only: bool = False
) -> Synchformer:
    """Build on the meta device and load strictly with ``assign``: no second copy of the weights."""
    path = resolve_file(source, local_files_only=local_files_only, default_filename=SYNCHFORMER_FILENAME)
    meta: dict[str, str] = {}
    if path.suffix == ".safetensors":
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    state = read_state_dict(path)
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
