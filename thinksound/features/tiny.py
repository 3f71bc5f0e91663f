"""The ``tiny`` preset: small random MetaCLIP/T5/Synchformer models and tokenizers, built locally.

Everything is deterministic in ``seed`` and needs no hub access. The models and tokenizers are written
to a directory with ``save_pretrained`` so that the real loading path (``from_pretrained(local_dir)``)
is what tests and demos exercise. Their outputs are noise: they only have the right shapes.

Widths: MetaCLIP image projection 64, MetaCLIP text hidden 64 and projection 64, T5 d_model 64,
Synchformer embed 64 / depth 2 / heads 4 (full 224 px input, 16 px patches); its file also holds an audio
branch and sync head of the same width and depth (DeSync, ``thinksound.qc``). Text length stays 77.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import torch
from safetensors.torch import save_file
from tokenizers import pre_tokenizers
from torch import nn
from transformers import CLIPConfig, CLIPModel, CLIPTokenizer, T5Config, T5EncoderModel, T5Tokenizer

from thinksound.features.record import TEXT_LENGTH
from thinksound.features.synchformer import Synchformer
from thinksound.qc.desync import SyncScorer
from thinksound.qc.sync_audio import AudioBranchConfig
from thinksound.qc.sync_head import SyncHeadConfig

TINY_FORMAT = "tiny-v1"
TINY_T5_VOCAB_FILE = "tiny_t5_vocab.json"


@dataclass(frozen=True)
class TinyConfig:
    width: int = 64
    clip_vision_width: int = 64
    clip_vision_patch: int = 32
    layers: int = 2
    heads: int = 4
    sync_depth: int = 2
    sync_heads: int = 4


@dataclass(frozen=True)
class TinyPaths:
    clip: Path
    t5: Path
    synchformer: Path


def _clip_tokenizer() -> CLIPTokenizer:
    # Byte-level alphabet with and without the end-of-word suffix covers any text without merges.
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab: dict[str, int] = {}
    for ch in alphabet:
        vocab[ch] = len(vocab)
    for ch in alphabet:
        vocab[ch + "</w>"] = len(vocab)
    # Like the real CLIP vocab, the two specials come last, so end-of-text has the highest id.
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=TEXT_LENGTH)


def _t5_tokenizer() -> T5Tokenizer:
    # A unigram (SentencePiece-style) vocabulary trained offline on a few KB of English, so that text
    # costs about as many tokens as with T5's own (tools/build_tiny_t5_vocab.py rebuilds it).
    data = json.loads(resources.files(__package__).joinpath(TINY_T5_VOCAB_FILE).read_text(encoding="utf-8"))
    pieces = [(piece, float(score)) for piece, score in data["pieces"]]
    return T5Tokenizer(vocab=pieces, extra_ids=0, model_max_length=TEXT_LENGTH)


def _reinit_(module: nn.Module, generator: torch.Generator) -> None:
    """Redraw every parameter: 0.02 * randn, and 1 + 0.02 * randn for normalisation gains."""
    gains = set()
    for mod_name, mod in module.named_modules():
        if isinstance(mod, nn.LayerNorm) or type(mod).__name__.endswith("LayerNorm"):
            gains.add(f"{mod_name}.weight" if mod_name else "weight")
    with torch.no_grad():
        for name, p in module.named_parameters():
            noise = torch.randn(p.shape, generator=generator, dtype=torch.float32) * 0.02
            p.copy_(noise + 1.0 if name in gains else noise)


def _tiny_sync_scorer(cfg: TinyConfig) -> SyncScorer:
    w = cfg.width
    with torch.random.fork_rng(devices=[]):
        return SyncScorer(
            audio=AudioBranchConfig(hidden=w, layers=cfg.sync_depth, heads=cfg.sync_heads, intermediate=4 * w),
            head=SyncHeadConfig(width=w, visual_dim=w, audio_dim=w, layers=cfg.sync_depth, heads=cfg.sync_heads),
        ).eval()


def build_tiny(directory: str | Path, *, seed: int = 0, config: TinyConfig | None = None) -> TinyPaths:
    """Write tiny CLIP (dir), T5 (dir) and Synchformer (safetensors) under ``directory``."""
    cfg = config or TinyConfig()
    root = Path(directory)
    paths = TinyPaths(clip=root / "metaclip", t5=root / "t5", synchformer=root / "synchformer.safetensors")
    gen = torch.Generator().manual_seed(seed)

    clip_tok = _clip_tokenizer()
    specials = clip_tok.convert_tokens_to_ids(["<|startoftext|>", "<|endoftext|>"])
    clip_cfg = CLIPConfig(
        text_config={
            "vocab_size": len(clip_tok),
            "hidden_size": cfg.width,
            "intermediate_size": cfg.width * 4,
            "num_hidden_layers": cfg.layers,
            "num_attention_heads": cfg.heads,
            "max_position_embeddings": TEXT_LENGTH,
            "hidden_act": "gelu",
            "bos_token_id": specials[0],
            "eos_token_id": specials[1],
            "pad_token_id": specials[1],
        },
        vision_config={
            "hidden_size": cfg.clip_vision_width,
            "intermediate_size": cfg.clip_vision_width * 4,
            "num_hidden_layers": cfg.layers,
            "num_attention_heads": cfg.heads,
            "image_size": 224,
            "patch_size": cfg.clip_vision_patch,
            "hidden_act": "gelu",
        },
        projection_dim=cfg.width,
    )
    t5_tok = _t5_tokenizer()
    t5_cfg = T5Config(
        vocab_size=len(t5_tok),
        d_model=cfg.width,
        d_kv=cfg.width // cfg.heads,
        d_ff=cfg.width * 2,
        num_layers=cfg.layers,
        num_heads=cfg.heads,
        feed_forward_proj="gated-gelu",
        is_encoder_decoder=False,
        use_cache=False,
        tie_word_embeddings=False,
    )
    # Constructors draw from the global RNG; fork it so callers' random streams are untouched.
    with torch.random.fork_rng(devices=[]):
        clip = CLIPModel(clip_cfg).eval()
        t5 = T5EncoderModel(t5_cfg).eval()
        sync = Synchformer(embed_dim=cfg.width, depth=cfg.sync_depth, num_heads=cfg.sync_heads).eval()
    for model in (clip, t5, sync):
        _reinit_(model, gen)
    # The rest of the whole Synchformer (audio branch, sync head), drawn from its own stream so that
    # the visual branch's values stay what they were before it was added.
    scorer = _tiny_sync_scorer(cfg)
    _reinit_(scorer, torch.Generator().manual_seed(seed + 2))

    clip.save_pretrained(paths.clip)
    clip_tok.save_pretrained(paths.clip)
    t5.save_pretrained(paths.t5)
    t5_tok.save_pretrained(paths.t5)
    save_file({**sync.state_dict(), **scorer.state_dict()}, str(paths.synchformer), metadata={
            "format": TINY_FORMAT,
            "seed": str(seed),
            "embed_dim": str(cfg.width),
            "depth": str(cfg.sync_depth),
            "num_heads": str(cfg.sync_heads),
            "ast_heads": str(cfg.sync_heads),
            "sync_head_heads": str(cfg.sync_heads),
        })
    return paths
