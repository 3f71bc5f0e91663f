"""Fitting a CoT into the T5 token budget by dropping whole sentences, never by cutting one.

ThinkSound's T5 encoder silently truncates at 77 tokens, which can cut the "avoid ..." sentence that
users rely on. Here an over-long CoT keeps a subset of its sentences, in their original order, chosen by
priority: the first sentence (the main sound, "Start with ...") is mandatory; the last one (usually what
to avoid) comes next; the middle ones follow in order while they fit. When the first sentence alone is
over budget the CoT cannot be shortened without losing its subject, and the item fails with that reason.
"""

from __future__ import annotations

import re
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
