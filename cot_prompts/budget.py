"""Fitting a CoT into the T5 token budget (77 tokens, what ThinkSound's T5 encoder reads).

- An MLLM's answer (`fit_to_budget`) drops whole sentences, never cuts one: the encoder's silent
  truncation could cut the "avoid ..." sentence users rely on. It keeps a subset of its sentences, in
  their original order, chosen by priority: the first sentence (the main sound, "Start with ...") is
  mandatory; the last one (usually what to avoid) comes next; the middle ones follow in order while they
  fit. When the first sentence alone is over budget the answer fails with that reason (and is re-asked).
- A text the user wrote (`cut_to_budget`) is the user's choice: it is cut at the budget, as the
  original's encoder does, and the cut is flagged.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from cot_prompts.types import TokenCounter

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


class BudgetError(ValueError):
    """The text cannot be brought within the budget at a sentence boundary."""


@dataclass(frozen=True)
class BudgetFit:
    text: str
    tokens: int  # before shortening
    fitted_tokens: int
    shortened: bool
    dropped_sentences: int


def normalize_text(text: str) -> str:
    return " ".join(text.split())


def split_sentences(text: str) -> list[str]:
    return [part for part in _SENTENCE_END.split(normalize_text(text)) if part]


def fit_to_budget(text: str, *, count_tokens: TokenCounter, max_tokens: int) -> BudgetFit:
    """Return the text unchanged when it fits, else the best sentence subset; raise BudgetError if none."""
    text = normalize_text(text)
    tokens = count_tokens(text)
    if tokens <= max_tokens:
        return BudgetFit(text=text, tokens=tokens, fitted_tokens=tokens, shortened=False, dropped_sentences=0)
    sentences = split_sentences(text)
    first_tokens = count_tokens(sentences[0]) if sentences else tokens
    if len(sentences) < 2 or first_tokens > max_tokens:
        raise BudgetError(
            f"cot_too_long: {tokens} T5 tokens > {max_tokens}, and its first sentence alone has "
            f"{first_tokens} tokens, so no sentence boundary fits"
        )
    kept = {0}
    fitted = first_tokens
    for index in [len(sentences) - 1, *range(1, len(sentences) - 1)]:
        trial = " ".join(sentences[i] for i in sorted(kept | {index}))
        trial_tokens = count_tokens(trial)
        if trial_tokens <= max_tokens:
            kept.add(index)
            fitted = trial_tokens
    return BudgetFit(
        text=" ".join(sentences[i] for i in sorted(kept)),
        tokens=tokens,
        fitted_tokens=fitted,
        shortened=True,
        dropped_sentences=len(sentences) - len(kept),
    )


def cut_to_budget(text: str, *, count_tokens: TokenCounter, max_tokens: int) -> BudgetFit:
    """Return the text unchanged when it fits, else its longest prefix of whole words that fits.

    This is what the original does with a text the user wrote: its T5 encoder reads the first 77
    tokens and drops the rest. Cutting the text itself makes the cut visible in lineage and in the CoT
    shown to the user. A first word longer than the budget on its own is cut between characters.
    """
    text = normalize_text(text)
    tokens = count_tokens(text)
    if tokens <= max_tokens:
        return BudgetFit(text=text, tokens=tokens, fitted_tokens=tokens, shortened=False, dropped_sentences=0)
    words = text.split(" ")
    kept = _longest_fitting(len(words), lambda n: " ".join(words[:n]), count_tokens, max_tokens)
    cut = " ".join(words[:kept])
    if not kept:
        cut = words[0][: _longest_fitting(len(words[0]), lambda n: words[0][:n], count_tokens, max_tokens)]
    return BudgetFit(
        text=cut,
        tokens=tokens,
        fitted_tokens=count_tokens(cut) if cut else 0,
        shortened=True,
        dropped_sentences=len(split_sentences(text)) - len(split_sentences(cut)),
    )


def _longest_fitting(limit: int, prefix: Callable[[int], str], count_tokens: TokenCounter, max_tokens: int) -> int:
    """Largest n <= limit whose `prefix(n)` fits, by bisection (token counts grow with the prefix)."""
    low, high = 0, limit
    while low < high:
        middle = (low + high + 1) // 2
        if count_tokens(prefix(middle)) <= max_tokens:
            low = middle
        else:
            high = middle - 1
    return low
