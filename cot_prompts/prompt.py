"""Versioned prompt templates: loading, hashing and rendering the texts sent to the MLLM."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

DEFAULT_PROMPT_VERSION = "v1"
_REQUIRED_KEYS = (
    "version",
    "system",
    "instruction",
    "media_notes",
    "caption_note",
    "examples",
    "examples_intro",
    "feedback",
    "fallback_cot",
    "generation",
    "schema",
)
_FEEDBACK_CODES = (
    "cut_off",
    "empty_answer",
    "invalid_json",
    "schema",
    "empty_field",
    "cot_too_long",
    "cot_cut",
)


def canonical_json(data: Any) -> str:
    """One spelling per value, so equal content always hashes equally whatever the file's layout."""
    return json.dumps(data, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


@dataclass(frozen=True)
class PromptTemplate:
    """A parsed prompt data file; `hash` is the sha256 of its canonical content."""

    version: str
    content: Mapping[str, Any]
    hash: str

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> PromptTemplate:
        missing = [key for key in _REQUIRED_KEYS if key not in data]
        if missing:
            raise ValueError(f"prompt template lacks keys {missing}")
        missing_feedback = [code for code in _FEEDBACK_CODES if code not in data["feedback"]]
        if missing_feedback:
            raise ValueError(f"prompt template lacks feedback for {missing_feedback}")
        if data["schema"].get("additionalProperties") is not False:
            raise ValueError("the answer schema must set additionalProperties: false")
        # A deep copy through JSON freezes the content against later edits of `data`.
        text = canonical_json(dict(data))
        return cls(
            version=str(data["version"]),
            content=json.loads(text),
            hash=hashlib.sha256(text.encode("utf-8")).hexdigest(),
        )

    @property
    def schema(self) -> dict[str, Any]:
        return json.loads(canonical_json(self.content["schema"]))

    @property
    def max_tokens(self) -> int:
        return int(self.content["generation"]["max_tokens"])

    @property
    def temperature(self) -> float:
        return float(self.content["generation"]["temperature"])

    @property
    def fallback_cot(self) -> str:
        return str(self.content["fallback_cot"])

    def string_limit(self, field: str) -> int | None:
        limit = self.content["schema"]["properties"][field].get("maxLength")
        return None if limit is None else int(limit)

    def system_text(self) -> str:
        """System prompt followed by the few-shot answers, written as the JSON the model must produce."""
        lines = [self.content["system"], "", self.content["examples_intro"]]
        lines += [canonical_json(example) for example in self.content["examples"]]
        return "\n".join(lines)

    def instruction_text(
        self, *, duration_sec: float, frame_times: Sequence[float] | None, caption: str | None
    ) -> str:
        """The user turn's text; frame_times None means the model receives the clip as a video."""
        notes = self.content["media_notes"]
        if frame_times is None:
            media_note = notes["video"]
        else:
            times = ", ".join(f"{t:.1f}" for t in frame_times)
            media_note = notes["frames"].format(n_frames=len(frame_times), frame_times=times)
        caption_note = self.content["caption_note"].format(caption=caption) if caption else ""
        return self.content["instruction"].format(
            duration_sec=duration_sec, media_note=media_note, caption_note=caption_note
        )

    def feedback_text(self, code: str, **fields: Any) -> str:
        return self.content["feedback"][code].format(**fields)


def templates_dir() -> Path:
    return Path(str(resources.files("cot_prompts") / "templates"))


def available_versions(directory: Path | None = None) -> list[str]:
    return sorted(path.stem for path in (directory or templates_dir()).glob("*.yaml"))


def load_prompt(version: str = DEFAULT_PROMPT_VERSION, *, directory: Path | None = None) -> PromptTemplate:
    """Load templates/<version>.yaml; the file's own `version` field must agree with its name."""
    path = (directory or templates_dir()) / f"{version}.yaml"
    if not path.is_file():
        raise ValueError(f"unknown prompt version {version!r}; available: {available_versions(directory)}")
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict) or str(data.get("version")) != version:
        raise ValueError(f"{path} must hold a mapping whose version is {version!r}")
    return PromptTemplate.from_mapping(data)
