"""Building the chat request sent to an OpenAI-compatible vLLM server (pure: no I/O)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cot_prompts.prompt import PromptTemplate
from cot_prompts.types import CotRequest

SCHEMA_NAME = "thinksound_cot"


@dataclass(frozen=True)
class VideoPart:
    """The clip as the server will read it: a URL plus, for sampled frames, their times."""

    url: str
    frame_times: tuple[float, ...] | None = None  # None: the server decodes and samples the video


def build_messages(prompt: PromptTemplate, request: CotRequest, video: VideoPart) -> list[dict[str, Any]]:
    """System turn (instructions and examples), then one user turn holding the video and the instruction."""
    instruction = prompt.instruction_text(
        duration_sec=request.duration_sec, frame_times=video.frame_times, caption=request.caption
    )
    return [
        {"role": "system", "content": prompt.system_text()},
        {
            "role": "user",
            "content": [
                {"type": "video_url", "video_url": {"url": video.url}},
                {"type": "text", "text": instruction},
            ],
        },
    ]


def with_feedback(
    messages: Sequence[dict[str, Any]], answer: str | None, feedback: str
) -> list[dict[str, Any]]:
    """Continue the conversation: the model's rejected answer, then why it was rejected."""
    extended = list(messages)
    if answer:
        extended.append({"role": "assistant", "content": answer})
    extended.append({"role": "user", "content": feedback})
    return extended


def build_chat_request(
    *,
    model: str,
    prompt: PromptTemplate,
    messages: Sequence[dict[str, Any]],
    video: VideoPart,
    duration_sec: float,
    max_tokens: int,
    seed: int | None,
    send_frame_rate: bool = False,
) -> dict[str, Any]:
    """Keyword arguments for `chat.completions.create`; structured output through `response_format`."""
    body: dict[str, Any] = {
        "model": model,
        "messages": list(messages),
        "max_tokens": max_tokens,
        "temperature": prompt.temperature,
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": SCHEMA_NAME, "schema": prompt.schema, "strict": True},
        },
    }
    if seed is not None:
        body["seed"] = seed
    if send_frame_rate and video.frame_times is not None:
        # Without this vLLM assumes 1 frame per second for JPEG frames, which skews the model's temporal
        # positions; the server accepts it only when started with --trust-request-mm-kwargs.
        fps = len(video.frame_times) / duration_sec
        body["extra_body"] = {"media_io_kwargs": {"video": {"fps": fps, "duration": duration_sec}}}
    return body
