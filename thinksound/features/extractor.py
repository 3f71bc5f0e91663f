"""``FeatureExtractor``: MetaCLIP + Synchformer for video, MetaCLIP + T5 for text, loaded once.

Video and text are separate entry points with separate version strings, so a new CoT text only
re-runs the text encoders. Each model is loaded on first use and kept, so a worker that only encodes
video never loads T5. Frames and segments of all items in a call are batched together.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch

from thinksound.features.clip import MetaClipEncoder
from thinksound.features.record import TextFeatures, VideoFeatures
from thinksound.features.synchformer import Synchformer
from thinksound.features.t5 import T5TextEncoder
from thinksound.features.tiny import TINY_FORMAT, build_tiny
from thinksound.features.version import FEATURES_CODE_VERSION, TINY_T5_TOKENIZER
from thinksound.features.video import DecodedClip
from thinksound.features.weights import SYNCHFORMER_FILENAME, load_synchformer, source_identity

DEFAULT_CLIP = "facebook/metaclip-h14-fullcc2.5b"
DEFAULT_T5 = "google/t5-v1_1-xl"
PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
_GIVEN = "<given>"  # source of a part handed to from_models: nothing to load it from


def _digest(obj: object) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


class FeatureExtractor:
    """Encodes decoded clips and texts into ``VideoFeatures`` / ``TextFeatures`` (float32, CPU)."""

    def __init__(
        self,
        *,
        clip: str | Path,
        t5: str | Path,
        synchformer: str | Path,
        device: str | torch.device = "cpu",
        precision: str = "fp32",
        is_random_init: bool = False,
        identity: dict[str, str] | None = None,
        local_files_only: bool = False,
        clip_batch_frames: int = 256,
        sync_batch_segments: int = 32,
        text_batch: int = 64,
    ) -> None:
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}")
        self.sources = {"clip": str(clip), "t5": str(t5), "synchformer": str(synchformer)}
        self.device = torch.device(device)
        self.precision = precision
        self.dtype = PRECISIONS[precision]
        self.is_random_init = is_random_init
        self.local_files_only = local_files_only
        self.clip_batch_frames = clip_batch_frames
        self.sync_batch_segments = sync_batch_segments
        self.text_batch = text_batch
        self._identity = dict(identity) if identity else None
        self._lock = threading.Lock()
        self._clip: MetaClipEncoder | None = None
        self._t5: T5TextEncoder | None = None
        self._sync: Synchformer | None = None
        self._t5_tokenizer = None
        self._keepalive: tempfile.TemporaryDirectory | None = None

    # construction

    @classmethod
    def from_pretrained(
        cls,
        *,
        clip: str | Path = DEFAULT_CLIP,
        t5: str | Path = DEFAULT_T5,
        synchformer: str | Path,
        device: str | torch.device = "cpu",
        precision: str = "fp32",
        local_files_only: bool = False,
        **batching: int,
    ) -> FeatureExtractor:
        """Hub ids or local dirs for MetaCLIP and T5. Synchformer: a .pth/.safetensors path, a hub file
        (``hf://owner/repo/file`` or ``owner/repo/file``), or a hub repo holding ``synchformer_state_dict.pth``
        (e.g. ``liuhuadai/ThinkSound``)."""
        return cls(
            clip=clip,
            t5=t5,
            synchformer=synchformer,
            device=device,
            precision=precision,
            local_files_only=local_files_only,
            **batching,
        )

    @classmethod
    def from_preset(
        cls,
        name: str,
        *,
        device: str | torch.device = "cpu",
        precision: str = "fp32",
        seed: int = 0,
        directory: str | Path | None = None,
        **batching: int,
    ) -> FeatureExtractor:
        """``tiny``: small random models and tokenizers written to ``directory`` (or a temp dir).

        Tiny outputs are noise with the right shapes, for tests and offline demos only.
        """
        if name != "tiny":
            raise ValueError(f"unknown preset {name!r}; use from_pretrained for real weights")
        keepalive = None
        if directory is None:
            keepalive = tempfile.TemporaryDirectory(prefix="thinksound-tiny-")
            directory = keepalive.name
        paths = build_tiny(directory, seed=seed)
        tag = f"tiny:{TINY_FORMAT}:seed={seed}"
        t5_tag = f"{tag}:{TINY_T5_TOKENIZER}"
        ext = cls(
            clip=paths.clip,
            t5=paths.t5,
            synchformer=paths.synchformer,
            device=device,
            precision=precision,
            is_random_init=True,
            identity={"clip": tag, "t5": t5_tag, "synchformer": tag},
            local_files_only=True,
            **batching,
        )
        ext._keepalive = keepalive
        return ext

    @classmethod
    def from_models(
        cls,
        *,
        clip: MetaClipEncoder | None = None,
        t5: T5TextEncoder | None = None,
        synchformer: Synchformer | None = None,
        identity: dict[str, str],
        is_random_init: bool,
        device: str | torch.device = "cpu",
        precision: str = "fp32",
        **batching: int,
    ) -> FeatureExtractor:
        """Wrap already built encoders (benchmarks, custom weights); ``identity`` names each for versions.

        A part left as None cannot be used: there is nothing to load it from.
        """
        ext = cls(
            clip=_GIVEN,
            t5=_GIVEN,
            synchformer=_GIVEN,
            device=device,
            precision=precision,
            is_random_init=is_random_init,
            identity=identity,
            **batching,
        )
        ext._clip, ext._t5, ext._sync = clip, t5, synchformer
        if synchformer is not None:
            ext._sync = synchformer.to(device=ext.device, dtype=ext.dtype).eval()
        return ext

    # versions

    def _identities(self) -> dict[str, str]:
        if self._identity is None:
            self._identity = {
                "clip": source_identity(self.sources["clip"]),
                "t5": source_identity(self.sources["t5"]),
                "synchformer": source_identity(self.sources["synchformer"], default_filename=SYNCHFORMER_FILENAME),
            }
        return self._identity

    @property
    def video_version(self) -> str:
        ids = self._identities()
        return "video-" + _digest(
            {"code": FEATURES_CODE_VERSION, "clip": ids["clip"], "sync": ids["synchformer"], "p": self.precision}
        )

    @property
    def text_version(self) -> str:
        ids = self._identities()
        return "text-" + _digest(
            {"code": FEATURES_CODE_VERSION, "clip": ids["clip"], "t5": ids["t5"], "p": self.precision}
        )

    # lazy models

    def _source(self, part: str) -> str:
        if self.sources[part] == _GIVEN:
            raise RuntimeError(f"this extractor was built from_models without a {part} encoder")
        return self.sources[part]

    def _load_clip(self) -> MetaClipEncoder:
        with self._lock:
            if self._clip is None:
                self._clip = MetaClipEncoder.from_pretrained(
                    self._source("clip"), device=self.device, dtype=self.dtype, local_files_only=self.local_files_only
                )
            return self._clip

    def _load_t5(self) -> T5TextEncoder:
        with self._lock:
            if self._t5 is None:
                self._t5 = T5TextEncoder.from_pretrained(
                    self._source("t5"), device=self.device, dtype=self.dtype, local_files_only=self.local_files_only
                )
            return self._t5

    def _load_sync(self) -> Synchformer:
        with self._lock:
            if self._sync is None:
                self._sync = load_synchformer(
                    self._source("synchformer"),
                    device=self.device,
                    dtype=self.dtype,
                    local_files_only=self.local_files_only,
                )
            return self._sync

    def load_all(self) -> FeatureExtractor:
        """Load every model now (e.g. in a worker's setup) instead of on first use."""
        self._load_clip()
        self._load_t5()
        self._load_sync()
        return self

    # encoding

    def encode_videos(self, clips: Sequence[DecodedClip]) -> list[VideoFeatures]:
        """MetaCLIP per-frame embeddings and Synchformer features for each clip, batched across clips."""
        if not clips:
            return []
        clip_enc = self._load_clip()
        sync = self._load_sync()
        counts = [c.clip_frames.shape[0] for c in clips]
        image = torch.cat(
            [clip_enc.encode_images(chunk, batch_size=self.clip_batch_frames) for chunk in
             _chunks([c.clip_frames for c in clips], self.clip_batch_frames)]
        )
        sync_feats = self._encode_sync(sync, [c.sync_frames for c in clips])
        return [
            VideoFeatures(metaclip_features=m, sync_features=s)
            for m, s in zip(image.split(counts), sync_feats, strict=True)
        ]

    @torch.inference_mode()
    def _encode_sync(self, sync: Synchformer, videos: list[torch.Tensor]) -> list[torch.Tensor]:
        cfg = sync.config
        per_item = [sync.num_segments(v.shape[0]) for v in videos]
        for v, s in zip(videos, per_item, strict=True):
            if s < 1:
                raise ValueError(f"sync stream has {v.shape[0]} frames, need {cfg.segment_frames}")
        # (S, 16, 3, H, W) views with hop 8; copied only chunk by chunk.
        segments = [v.unfold(0, cfg.segment_frames, cfg.segment_hop).permute(0, 4, 1, 2, 3) for v in videos]
        outs = []
        for chunk in _chunks(segments, self.sync_batch_segments):
            x = chunk.to(device=self.device, dtype=self.dtype, non_blocking=True).transpose(1, 2)
            outs.append(sync.vfeat_extractor(x).float().cpu())  # (n, 8, D)
        feats = torch.cat(outs)
        return [f.flatten(0, 1) for f in feats.split(per_item)]

    def encode_texts(self, captions: Sequence[str], cots: Sequence[str]) -> list[TextFeatures]:
        """MetaCLIP states of each caption and T5 states of each chain-of-thought text."""
        if len(captions) != len(cots):
            raise ValueError(f"{len(captions)} captions but {len(cots)} CoT texts")
        clip_enc = self._load_clip()
        t5 = self._load_t5()
        out: list[TextFeatures] = []
        for i in range(0, len(captions), self.text_batch):
            caps = list(captions[i : i + self.text_batch])
            cot = list(cots[i : i + self.text_batch])
            states, pooled = clip_enc.encode_texts(caps)
            t5_states, counts = t5.encode(cot)
            for j in range(len(caps)):
                out.append(
                    TextFeatures(
                        metaclip_text_features=states[j],
                        metaclip_global_text_features=pooled[j],
                        t5_features=t5_states[j],
                        t5_tokens=counts[j],
                        t5_truncated_tokens=max(0, counts[j] - t5_states.shape[1]),
                        caption=caps[j],
                        caption_cot=cot[j],
                    )
                )
        return out

    def count_t5_tokens(self, text: str) -> int:
        """T5 tokens of ``text`` (end token included) before truncation; loads only the tokenizer."""
        with self._lock:
            if self._t5 is not None:
                return self._t5.count_tokens(text)
            if self._t5_tokenizer is None:
                from transformers import AutoTokenizer  # noqa: PLC0415

                self._t5_tokenizer = AutoTokenizer.from_pretrained(
                    self._source("t5"), local_files_only=self.local_files_only
                )
            return len(self._t5_tokenizer(text, truncation=False, verbose=False)["input_ids"])


def _chunks(items: list[torch.Tensor], size: int) -> Iterator[torch.Tensor]:
    """Concatenate along dim 0 across items and yield pieces of at most ``size`` rows."""
    pending: list[torch.Tensor] = []
    have = 0
    for t in items:
        start = 0
        while start < t.shape[0]:
            take = min(size - have, t.shape[0] - start)
            pending.append(t[start : start + take])
            have += take
            start += take
            if have == size:
                yield torch.cat(pending)
                pending, have = [], 0
    if pending:
        yield torch.cat(pending)
