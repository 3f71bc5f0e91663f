"""Feature records with the original ``.npz`` field names, stored as safetensors or as the original npz.

Video and text features are separate records because they are computed and cached separately: a new
chain-of-thought text re-runs only the text encoders. ``Features`` joins them under one id.

All tensors are float32 on CPU, as the original saves them (``.float().cpu().numpy()``), whatever
precision the encoders ran in.
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

VIDEO_KEYS = ("metaclip_features", "sync_features")
TEXT_KEYS = ("metaclip_text_features", "metaclip_global_text_features", "t5_features")
STRING_KEYS = ("id", "caption", "caption_cot")
FORMAT = "thinksound.features/1"
UNKNOWN_TOKENS = -1
# Both text encoders see 77 tokens (padded, truncated), as in the original.
TEXT_LENGTH = 77


def _f32(t: torch.Tensor | np.ndarray) -> torch.Tensor:
    t = torch.as_tensor(t)
    return t.detach().to(device="cpu", dtype=torch.float32).contiguous()


def _check_rank(name: str, t: torch.Tensor, rank: int) -> None:
    if t.ndim != rank:
        raise ValueError(f"{name} must have {rank} dims, got {tuple(t.shape)}")


@dataclass(frozen=True, eq=False)
class VideoFeatures:
    """``metaclip_features`` (Lc, clip_dim) and ``sync_features`` (Ls, sync_dim)."""

    metaclip_features: torch.Tensor
    sync_features: torch.Tensor

    def __post_init__(self) -> None:
        for name in VIDEO_KEYS:
            object.__setattr__(self, name, _f32(getattr(self, name)))
            _check_rank(name, getattr(self, name), 2)

    def tensors(self) -> dict[str, torch.Tensor]:
        return {k: getattr(self, k) for k in VIDEO_KEYS}

    def to_bytes(self) -> bytes:
        return st_save(self.tensors(), metadata={"format": FORMAT, "kind": "video"})

    @classmethod
    def from_bytes(cls, data: bytes) -> VideoFeatures:
        return cls(**{k: v for k, v in st_load(data).items() if k in VIDEO_KEYS})


@dataclass(frozen=True, eq=False)
class TextFeatures:
    """MetaCLIP caption states (77, d) and pooled (d,), T5 CoT states (77, d5), and the CoT token count.

    ``t5_tokens`` counts the CoT's T5 tokens (with the end token) before truncation to 77;
    ``t5_truncated_tokens`` how many were cut off. Both are -1 when unknown (read from an original npz).
    """

    metaclip_text_features: torch.Tensor
    metaclip_global_text_features: torch.Tensor
    t5_features: torch.Tensor
    t5_tokens: int
    t5_truncated_tokens: int
    caption: str
    caption_cot: str

    def __post_init__(self) -> None:
        for name, rank in zip(TEXT_KEYS, (2, 1, 2), strict=True):
            object.__setattr__(self, name, _f32(getattr(self, name)))
            _check_rank(name, getattr(self, name), rank)

    def tensors(self) -> dict[str, torch.Tensor]:
        return {k: getattr(self, k) for k in TEXT_KEYS}

    def metadata(self) -> dict[str, str]:
        return {
            "caption": self.caption,
            "caption_cot": self.caption_cot,
            "t5_tokens": str(self.t5_tokens),
            "t5_truncated_tokens": str(self.t5_truncated_tokens),
        }

    def to_bytes(self) -> bytes:
        return st_save(self.tensors(), metadata={"format": FORMAT, "kind": "text", **self.metadata()})

    @classmethod
    def from_bytes(cls, data: bytes) -> TextFeatures:
        tensors, meta = _load_with_metadata(data)
        return cls._from_parts(tensors, meta)

    @classmethod
    def _from_parts(cls, tensors: Mapping[str, torch.Tensor], meta: Mapping[str, str]) -> TextFeatures:
        return cls(
            **{k: tensors[k] for k in TEXT_KEYS},
            t5_tokens=int(meta.get("t5_tokens", UNKNOWN_TOKENS)),
            t5_truncated_tokens=int(meta.get("t5_truncated_tokens", UNKNOWN_TOKENS)),
            caption=meta.get("caption", ""),
            caption_cot=meta.get("caption_cot", ""),
        )


def _load_with_metadata(data: bytes) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    # The string metadata sits in the JSON header: 8-byte little-endian length, then the JSON.
    header_len = int.from_bytes(data[:8], "little")
    meta = json.loads(data[8 : 8 + header_len]).get("__metadata__") or {}
    return st_load(data), meta


@dataclass(frozen=True, eq=False)
class Features:
    """One item's features; either part may be missing. Original npz names are attributes."""

    video: VideoFeatures | None = None
    text: TextFeatures | None = None
    id: str = ""

    def __getattr__(self, name: str):
        # Only reached for names that are not fields: expose the npz names of the parts.
        if name in VIDEO_KEYS:
            part = self.__dict__.get("video")
        elif name in TEXT_KEYS or name in ("caption", "caption_cot", "t5_tokens", "t5_truncated_tokens"):
            part = self.__dict__.get("text")
        else:
            raise AttributeError(name)
        if part is None:
            raise AttributeError(f"{name}: this Features record has no {'video' if name in VIDEO_KEYS else 'text'}")
        return getattr(part, name)

    def tensors(self) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        if self.video is not None:
            out.update(self.video.tensors())
        if self.text is not None:
            out.update(self.text.tensors())
        return out

    def to_bytes(self) -> bytes:
        meta = {"format": FORMAT, "kind": "features", "id": self.id}
        if self.text is not None:
            meta.update(self.text.metadata())
        return st_save(self.tensors(), metadata=meta)

    @classmethod
    def from_bytes(cls, data: bytes) -> Features:
        tensors, meta = _load_with_metadata(data)
        return cls._from_mapping(tensors, meta)

    @classmethod
    def _from_mapping(cls, tensors: Mapping[str, torch.Tensor], meta: Mapping[str, str]) -> Features:
        has_video = [k in tensors for k in VIDEO_KEYS]
        has_text = [k in tensors for k in TEXT_KEYS]
        if any(has_video) and not all(has_video):
            raise ValueError(f"partial video features: have {[k for k in VIDEO_KEYS if k in tensors]}")
        if any(has_text) and not all(has_text):
            raise ValueError(f"partial text features: have {[k for k in TEXT_KEYS if k in tensors]}")
        video = VideoFeatures(**{k: tensors[k] for k in VIDEO_KEYS}) if all(has_video) else None
        text = TextFeatures._from_parts(tensors, meta) if all(has_text) else None
        return cls(video=video, text=text, id=meta.get("id", ""))

    def save(self, path: str | Path) -> None:
        Path(path).write_bytes(self.to_bytes())

    @classmethod
    def load(cls, path: str | Path) -> Features:
        return cls.from_bytes(Path(path).read_bytes())

    def to_npz_bytes(self) -> bytes:
        """The original extractor's npz: id, caption, caption_cot strings plus float32 arrays."""
        arrays: dict[str, np.ndarray] = {k: v.numpy() for k, v in self.tensors().items()}
        strings = {"id": self.id}
        if self.text is not None:
            strings.update(caption=self.text.caption, caption_cot=self.text.caption_cot)
        buf = io.BytesIO()
        np.savez(buf, **strings, **arrays)
        return buf.getvalue()

    @classmethod
    def from_npz_bytes(cls, data: bytes) -> Features:
        """Read an npz written by the original extractor (or by us); pickled objects are refused."""
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            tensors = {
                k: torch.from_numpy(np.asarray(z[k], dtype=np.float32)) for k in z.files if k not in STRING_KEYS
            }
            meta = {k: str(z[k]) for k in STRING_KEYS if k in z.files}
        return cls._from_mapping(tensors, meta)

    def save_npz(self, path: str | Path) -> None:
        Path(path).write_bytes(self.to_npz_bytes())

    @classmethod
    def load_npz(cls, path: str | Path) -> Features:
        return cls.from_npz_bytes(Path(path).read_bytes())

    @staticmethod
    def collate(items: Sequence[Features]) -> dict[str, torch.Tensor]:
        """Stack a batch under the npz names; a part missing from every item is left out."""
        if not items:
            raise ValueError("cannot collate an empty batch")
        out: dict[str, torch.Tensor] = {}
        for part, keys in (("video", VIDEO_KEYS), ("text", TEXT_KEYS)):
            present = [getattr(it, part) is not None for it in items]
            if not any(present):
                continue
            if not all(present):
                raise ValueError(f"{part} features present in {sum(present)} of {len(items)} items")
            for k in keys:
                ts = [getattr(getattr(it, part), k) for it in items]
                shapes = {tuple(t.shape) for t in ts}
                if len(shapes) != 1:
                    raise ValueError(f"{k}: items differ in shape {sorted(shapes)}")
                out[k] = torch.stack(ts)
        return out

