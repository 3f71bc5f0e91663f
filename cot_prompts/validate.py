"""Checking one MLLM answer: complete, valid JSON, matching the schema, non-empty, within the T5 budget.

Each failure becomes an AnswerProblem whose `feedback` goes back to the model in the same conversation.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from jsonschema import Draft202012Validator

from cot_prompts.budget import normalize_text
from cot_prompts.prompt import PromptTemplate
from cot_prompts.types import TokenCounter


@dataclass(frozen=True)
class AnswerProblem:
    code: str  # one of the prompt's feedback codes
    detail: str
    feedback: str

    @property
    def reason(self) -> str:
        return f"{self.code}: {self.detail}"


@dataclass(frozen=True)
class ParsedAnswer:
    caption: str
    cot: str
    t5_tokens: int
    data: Mapping[str, Any]


def _problem(prompt: PromptTemplate, code: str, detail: str, **fields: Any) -> AnswerProblem:
    return AnswerProblem(
        code=code, detail=detail, feedback=prompt.feedback_text(code, detail=detail, **fields)
    )


def check_answer(
    content: str | None,
    finish_reason: str | None,
    *,
    prompt: PromptTemplate,
    count_t5_tokens: TokenCounter,
    max_t5_tokens: int,
) -> ParsedAnswer | AnswerProblem:
    """Parse and validate; the token budget is checked last so the parsed JSON is never wasted."""
    if finish_reason == "length":
        return _problem(prompt, "cut_off", f"generation stopped at the token limit ({prompt.max_tokens})")
    if content is None or not content.strip():
        return _problem(prompt, "empty_answer", "no text")
    try:
        data = json.loads(content)
    except json.JSONDecodeError as exc:
        return _problem(prompt, "invalid_json", f"{exc.msg} at character {exc.pos}")
    errors = sorted(Draft202012Validator(prompt.schema).iter_errors(data), key=lambda e: list(e.path))
    if errors:
        where = "/".join(str(part) for part in errors[0].path) or "answer"
        return _problem(prompt, "schema", f"{where}: {errors[0].message}")
    caption = normalize_text(data["caption"])
    cot = normalize_text(data["cot"])
    for field, value in (("caption", caption), ("cot", cot)):
        if not value:
            return _problem(prompt, "empty_field", field)
    tokens = count_t5_tokens(cot)
    cot_limit = prompt.string_limit("cot")
    if tokens > max_t5_tokens:
        detail = f"{tokens} T5 tokens, limit {max_t5_tokens}"
        return _problem(prompt, "cot_too_long", detail, tokens=tokens, limit=max_t5_tokens)
    # A string exactly at the schema's maxLength was most likely cut there by the grammar.
    if cot_limit is not None and len(data["cot"]) >= cot_limit:
        detail = f"reached the schema's {cot_limit} characters, so it was probably cut"
        return _problem(prompt, "cot_cut", detail, limit=cot_limit)
    return ParsedAnswer(caption=caption, cot=cot, t5_tokens=tokens, data=data)
