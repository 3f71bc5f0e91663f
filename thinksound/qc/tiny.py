"""The ``tiny`` QC preset: small random CLAP and AST tagger, and the whole tiny Synchformer, built offline.

Like the feature extractor's tiny preset, everything is deterministic in ``seed`` and written to a
directory, so that tests and demos exercise the real loading path. Outputs are noise with the right
shapes. The Synchformer file is the feature extractor's own tiny file, which holds the whole model
(visual branch, audio branch and sync head), as the published checkpoint does.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import pre_tokenizers
from transformers import (
    ASTConfig,
    ASTFeatureExtractor,
    ASTForAudioClassification,
    ClapConfig,
    ClapFeatureExtractor,
    ClapModel,
    RobertaTokenizer,
)

from thinksound.features.tiny import _reinit_, build_tiny

TINY_QC_FORMAT = "tiny-qc-v1"
# The AudioSet ontology ids of the classes the gate watches, as in the real tagger's id2label.
AUDIOSET_IDS = {0: "Speech", 137: "Music"}
AUDIOSET_CLASSES = 527
TEXT_LENGTH = 77
TINY_WATCHED_LOGIT = -3.0


@dataclass(frozen=True)
class TinyQcPaths:
    synchformer: Path
    clap: Path
    tagger: Path


def _roberta_tokenizer() -> RobertaTokenizer:
    # Byte-level alphabet, no merges: any text tokenizes, one token per byte.
    vocab = {tok: i for i, tok in enumerate(["<s>", "<pad>", "</s>", "<unk>"])}
    for ch in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab[ch] = len(vocab)
    vocab["<mask>"] = len(vocab)
    return RobertaTokenizer(vocab=vocab, merges=[], model_max_length=TEXT_LENGTH)


def _clap(tokens: int, width: int) -> tuple[ClapModel, ClapFeatureExtractor]:
    config = ClapConfig(
        text_config={
            "vocab_size": tokens,
            "hidden_size": width,
            "intermediate_size": width * 2,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "max_position_embeddings": TEXT_LENGTH + 3,
            "projection_dim": width,
        },
        audio_config={
            "patch_embeds_hidden_size": width // 2,
            "hidden_size": width,
            "depths": [1, 1],
            "num_attention_heads": [2, 4],
            "projection_dim": width,
            "enable_fusion": False,
        },
        projection_dim=width,
    )
    # Unfused model: the processor must crop or pad to one 10 s window, not stack four fused views.
    return ClapModel(config).eval(), ClapFeatureExtractor(truncation="rand_trunc", padding="repeatpad")


def _tagger(width: int) -> tuple[ASTForAudioClassification, ASTFeatureExtractor]:
    labels = {i: AUDIOSET_IDS.get(i, f"AudioSet class {i}") for i in range(AUDIOSET_CLASSES)}
    config = ASTConfig(
        hidden_size=width,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=width * 4,
        id2label=labels,
        label2id={v: k for k, v in labels.items()},
    )
    return ASTForAudioClassification(config).eval(), ASTFeatureExtractor()


def build_tiny_qc(directory: str | Path, *, seed: int = 0, width: int = 32) -> TinyQcPaths:
    """Write the tiny Synchformer (safetensors), CLAP (dir) and AST tagger (dir) under ``directory``."""
    root = Path(directory)
    features = build_tiny(root / "features", seed=seed)
    paths = TinyQcPaths(synchformer=features.synchformer, clap=root / "clap", tagger=root / "tagger")
    gen = torch.Generator().manual_seed(seed + 1)
    tokenizer = _roberta_tokenizer()
    with torch.random.fork_rng(devices=[]):
        clap, clap_features = _clap(len(tokenizer), width)
        tagger, tagger_features = _tagger(width)
    for model in (clap, tagger):
        _reinit_(model, gen)
    with torch.no_grad():
        # Random logits sit near 0, i.e. P = 0.5, right at a plausible gate threshold. The tiny tagger
        # is made to hear neither speech nor music (P ~ 0.05), so tiny runs pass the gate by default and
        # tests move the threshold to see it reject.
        tagger.classifier.dense.bias[list(AUDIOSET_IDS)] = TINY_WATCHED_LOGIT
    clap.save_pretrained(paths.clap)
    clap_features.save_pretrained(paths.clap)
    tokenizer.save_pretrained(paths.clap)
    tagger.save_pretrained(paths.tagger)
    tagger_features.save_pretrained(paths.tagger)
    return paths
