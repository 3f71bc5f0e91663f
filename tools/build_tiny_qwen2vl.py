"""Build a tiny, randomly initialised Qwen2-VL or Qwen2.5-VL model directory, fully offline.

Its outputs are noise: it exists so that a real vLLM server can load and serve a video model in tests
and benchmarks without downloading weights. Run it with a Python that has transformers and a working
torchvision (the vLLM environment has both), so that the processor files match what the server loads:

    .venv-vllm/bin/python tools/build_tiny_qwen2vl.py OUT_DIR [--variant qwen2_5_vl] [--seed 0]

What it writes (all sizes chosen to load in seconds on a CPU):
- a byte-level BPE tokenizer trained here on a small built-in English corpus, holding the Qwen2-VL
  special tokens, plus a chat template that renders OpenAI-style content parts;
- the model: text hidden 128, 2 layers, 4 heads of 32 (vLLM's CPU attention accepts only some head sizes),
  vision depth 2, embed 64;
- a processor with small min/max pixels, so a video costs a few dozen tokens.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
]

# Renders OpenAI-style messages (string content or a list of text/image/video parts) in the ChatML
# layout Qwen2-VL uses; each image or video part becomes one vision placeholder run.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if loop.first and message['role'] != 'system' -%}"
    "<|im_start|>system{{ '\\n' }}You are a helpful assistant.<|im_end|>{{ '\\n' }}"
    "{%- endif -%}"
    "<|im_start|>{{ message['role'] }}{{ '\\n' }}"
    "{%- if message['content'] is string -%}{{ message['content'] }}"
    "{%- else -%}{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'text' -%}{{ part['text'] }}"
    "{%- elif part['type'] in ['image', 'image_url'] -%}<|vision_start|><|image_pad|><|vision_end|>"
    "{%- elif part['type'] in ['video', 'video_url'] -%}<|vision_start|><|video_pad|><|vision_end|>"
    "{%- endif -%}{%- endfor -%}{%- endif -%}"
    "<|im_end|>{{ '\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}<|im_start|>assistant{{ '\\n' }}{%- endif -%}"
)

_CORPUS_WORDS = (
    "start with add keep avoid minimal the a an of and or to in on at for with without from by "
    "sound sounds soft loud sharp steady short long low high distant close faint light heavy quiet "
    "voices voice music speech crowd traffic wind rain water waves birds dog barking engine car door "
    "footsteps hits ball racket tennis court room tone ambience background rhythm every seconds second "
    "beginning end clip video frames caption cot events source start_sec end_sec true false null "
    "playing typing keyboard thunder glass roof grass breeze birdsong squeaks bounce impact pause then "
    "json object answer format field limit tokens rewrite shorter drop details main timing scene label"
).split()


def _corpus() -> list[str]:
    lines = [" ".join(_CORPUS_WORDS[i : i + 12]) for i in range(0, len(_CORPUS_WORDS), 12)]
    lines += ['{"caption":"dog barking","cot":"Start with barks. Avoid music.","events":[]}']
    lines += [f"{i} {i / 10:.1f} {i * 1.5:.2f}" for i in range(100)]
    lines += ["!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~ \n\t"]
    return lines * 4


def build_tokenizer(vocab_size: int) -> Tokenizer:
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_corpus(), trainer=trainer)
    return tokenizer


def _round_up(value: int, multiple: int) -> int:
    return (value + multiple - 1) // multiple * multiple


def build(out_dir: Path, *, variant: str, seed: int, vocab_size: int) -> None:
    from transformers import PreTrainedTokenizerFast

    out_dir.mkdir(parents=True, exist_ok=True)
    raw = build_tokenizer(vocab_size)
    ids = {token: raw.token_to_id(token) for token in SPECIAL_TOKENS}
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=raw,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
        extra_special_tokens={},
        chat_template=CHAT_TEMPLATE,
    )
    text_config = {
        "vocab_size": _round_up(raw.get_vocab_size(), 64),
        "hidden_size": 128,
        "intermediate_size": 256,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 8192,
        "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [4, 6, 6]},
        "bos_token_id": ids["<|endoftext|>"],
        "eos_token_id": ids["<|im_end|>"],
        "pad_token_id": ids["<|endoftext|>"],
    }
    common = {
        "image_token_id": ids["<|image_pad|>"],
        "video_token_id": ids["<|video_pad|>"],
        "vision_start_token_id": ids["<|vision_start|>"],
        "vision_end_token_id": ids["<|vision_end|>"],
        "tie_word_embeddings": False,
    }
    pixels = {"min_pixels": 28 * 28 * 4, "max_pixels": 28 * 28 * 16}
    if variant == "qwen2_vl":
        from transformers import (
            Qwen2VLConfig,
            Qwen2VLForConditionalGeneration,
            Qwen2VLImageProcessor,
            Qwen2VLProcessor,
            Qwen2VLVideoProcessor,
        )

        vision_config = {"depth": 2, "embed_dim": 64, "hidden_size": 128, "mlp_ratio": 2, "num_heads": 2}
        config = Qwen2VLConfig(text_config=text_config, vision_config=vision_config, **common)
        model_cls, processor_cls = Qwen2VLForConditionalGeneration, Qwen2VLProcessor
        image_processor_cls, video_processor_cls = Qwen2VLImageProcessor, Qwen2VLVideoProcessor
    elif variant == "qwen2_5_vl":
        from transformers import (
            Qwen2_5_VLConfig,
            Qwen2_5_VLForConditionalGeneration,
            Qwen2_5_VLProcessor,
            Qwen2VLImageProcessor,
            Qwen2VLVideoProcessor,
        )

        vision_config = {
            "depth": 2,
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_heads": 2,
            "out_hidden_size": 128,
            "fullatt_block_indexes": [1],
            "window_size": 112,
        }
        config = Qwen2_5_VLConfig(text_config=text_config, vision_config=vision_config, **common)
        model_cls, processor_cls = Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor
        image_processor_cls, video_processor_cls = Qwen2VLImageProcessor, Qwen2VLVideoProcessor
    else:
        raise ValueError(f"unknown {variant=}")
    torch.manual_seed(seed)
    model = model_cls(config).to(torch.float32).eval()
    model.save_pretrained(out_dir)
    processor = processor_cls(
        image_processor=image_processor_cls(**pixels),
        video_processor=video_processor_cls(**pixels),
        tokenizer=tokenizer,
        chat_template=CHAT_TEMPLATE,
    )
    processor.save_pretrained(out_dir)
    note = {"built_by": "tools/build_tiny_qwen2vl.py", "variant": variant, "seed": seed, "weights": "random"}
    (out_dir / "TINY_RANDOM_MODEL.json").write_text(json.dumps(note, indent=2) + "\n", encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--variant", choices=["qwen2_vl", "qwen2_5_vl"], default="qwen2_vl")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--vocab-size", type=int, default=1024)
    args = parser.parse_args()
    build(args.out_dir, variant=args.variant, seed=args.seed, vocab_size=args.vocab_size)


if __name__ == "__main__":
    main()
