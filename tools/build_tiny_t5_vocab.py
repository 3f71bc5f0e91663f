"""Build the tiny preset's T5 vocabulary: a SentencePiece-style unigram model trained offline.

The real T5 tokenizer splits English into subwords (about 1.3 tokens a word), so a normal caption or
chain of thought fits its 77-token budget. The tiny preset needs counts that look like that, or real
text is refused as too long. This learns pieces from `tools/tiny_t5_corpus.txt` (a few KB of English,
mostly sound descriptions) and writes them with their scores; `thinksound/features/tiny.py` turns them
into a `T5Tokenizer`:

    .venv/bin/python tools/build_tiny_t5_vocab.py            # rewrites thinksound/features/tiny_t5_vocab.json

Every printable ASCII character is a piece on its own, with and without the word-start marker, so any
text can be tokenized; anything else becomes <unk>, as with T5. The same corpus gives the same file.
"""

from __future__ import annotations

import argparse
import json
import math
import string
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO / "tools" / "tiny_t5_corpus.txt"
OUTPUT = REPO / "thinksound" / "features" / "tiny_t5_vocab.json"
SPECIALS = ["<pad>", "</s>", "<unk>"]
WORD_START = "\u2581"
VOCAB_SIZE = 1500


def train(corpus: Path, vocab_size: int) -> list[tuple[str, float]]:
    """Learn subword pieces with BPE merges, then score each by its log frequency in the corpus.

    T5's tokenizer is a unigram model: it picks the segmentation whose pieces' scores sum highest. BPE
    on a small corpus finds better pieces than unigram training does (its seed set needs more text);
    the frequencies of those pieces, as BPE splits the corpus, make them a unigram model.
    """
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    characters = string.ascii_letters + string.digits + string.punctuation
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement=WORD_START, prepend_scheme="always")
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIALS,
        initial_alphabet=list(characters + WORD_START),
        show_progress=False,
    )
    lines = [" ".join(line.split()) for line in corpus.read_text(encoding="utf-8").splitlines() if line.strip()]
    tokenizer.train_from_iterator(lines, trainer=trainer)
    counts: Counter[str] = Counter()
    for line in lines:
        counts.update(tokenizer.encode(line).tokens)
    total = sum(counts.values())
    learned = [piece for piece in tokenizer.get_vocab() if piece not in SPECIALS]
    for char in characters:  # every printable character, bare and word-initial, can be spelled out
        learned += [p for p in (char, WORD_START + char) if p not in learned]
    # Unseen pieces (BPE's intermediate merges, spelled-out characters) get half a count.
    scored = {piece: round(math.log((counts[piece] + 0.5) / total), 6) for piece in learned}
    ordered = sorted(scored.items(), key=lambda item: (-item[1], item[0]))
    return [(piece, 0.0) for piece in SPECIALS] + ordered


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=CORPUS)
    parser.add_argument("--output", type=Path, default=OUTPUT)
    parser.add_argument("--vocab-size", type=int, default=VOCAB_SIZE)
    args = parser.parse_args()
    pieces = train(args.corpus, args.vocab_size)
    if [piece for piece, _ in pieces[: len(SPECIALS)]] != SPECIALS:
        raise SystemExit(f"the specials must come first, got {pieces[:3]}")
    lines = ",\n".join(json.dumps(piece, ensure_ascii=False) for piece in pieces)
    args.output.write_text(f'{{"pieces": [\n{lines}\n]}}\n', encoding="utf-8")
    print(f"wrote {len(pieces)} pieces to {args.output}")


if __name__ == "__main__":
    main()
