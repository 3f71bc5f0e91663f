"""Listening gates and best-of-N selection (pure logic; the pipeline supplies thresholds and scores).

Combined score, in order (lower sorts first):
1. gates: how many checks the candidate fails (signal checks, unwanted speech or music, and the
   optional DeSync and CLAP limits); a candidate with non-finite audio fails everything;
2. DeSync: the smaller |offset| in seconds wins;
3. CLAP: the larger text-audio similarity wins;
4. ties go to the earliest candidate drawn, so the choice is reproducible.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

SCORE_NAMES = ("desync_sec", "clap", "speech", "music")


@dataclass(frozen=True)
class ListeningThresholds:
    max_speech_prob: float = 0.5
    max_music_prob: float = 0.5
    max_desync_sec: float | None = None
    min_clap: float | None = None
    speech_words: tuple[str, ...] = ()
    music_words: tuple[str, ...] = ()


def mentions(text: str, words: Iterable[str]) -> bool:
    """Whether ``text`` has a word starting with one of ``words`` ("talk" matches "talking", "talks")."""
    stems = [re.escape(w.lower()) for w in words if w]
    if not stems:
        return False
    return re.search(r"\b(?:" + "|".join(stems) + r")", text.lower()) is not None


def lifted_gates(text: str, limits: ListeningThresholds) -> set[str]:
    """The classes the text asks for, whose unwanted-sound gate is therefore lifted."""
    lifted = set()
    if mentions(text, limits.speech_words):
        lifted.add("speech")
    if mentions(text, limits.music_words):
        lifted.add("music")
    return lifted


def _finite(value: object) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def failed_listening(scores: Mapping[str, float], text: str, limits: ListeningThresholds) -> list[str]:
    """Human-readable reasons for every listening gate the scores fail; empty when they pass."""
    missing = [name for name in SCORE_NAMES if not _finite(scores.get(name))]
    if missing:
        return [f"listening scores not finite: {', '.join(missing)}"]
    lifted = lifted_gates(text, limits)
    reasons = []
    for name, limit in (("speech", limits.max_speech_prob), ("music", limits.max_music_prob)):
        if name not in lifted and scores[name] > limit:
            reasons.append(f"unwanted {name}: P({name}) {scores[name]:.2f} above {limit:.2f} and the CoT asks for none")
    if limits.max_desync_sec is not None and scores["desync_sec"] > limits.max_desync_sec:
        reasons.append(f"off sync: DeSync {scores['desync_sec']:.2f} s above {limits.max_desync_sec:.2f} s")
    if limits.min_clap is not None and scores["clap"] < limits.min_clap:
        reasons.append(f"does not match the text: CLAP {scores['clap']:.3f} below {limits.min_clap:.3f}")
    return reasons


def rank_key(failed: float, scores: Mapping[str, float], order: int) -> tuple[float, float, float, int]:
    """Sort key of a candidate: failed gates, then DeSync, then CLAP (higher is better), then draw order."""
    desync = scores.get("desync_sec")
    clap = scores.get("clap")
    return (
        float(failed),
        desync if _finite(desync) else math.inf,
        -clap if _finite(clap) else math.inf,
        order,
    )


def first_sentence(text: str) -> str:
    """The CoT's first sentence, the text CLAP compares with when no caption is given."""
    match = re.match(r"\s*(.+?[.!?])(?:\s|$)", text, flags=re.S)
    return (match.group(1) if match else text).strip()
