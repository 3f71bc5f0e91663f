"""The production CoT backend: a vLLM OpenAI-compatible server, structured output, bounded concurrency.

Two kinds of retry, counted together in `CotResult.retries`:
- transient transport errors (connection, timeout, HTTP 429 and 5xx) are retried with exponential
  backoff, up to `max_retries` times per request;
- a rejected answer (cut off, empty, not JSON, off-schema, over the T5 budget) is re-asked in the same
  conversation with the reason as feedback, up to `max_retries` times. After the last one an over-budget
  CoT is shortened at a sentence boundary when possible, else the item fails with the reason.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import Coroutine, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import av.error
import openai

from cot_prompts.budget import BudgetError, fit_to_budget, split_sentences
from cot_prompts.media import frames_data_url, sample_frames, video_data_url, video_file_url
from cot_prompts.messages import VideoPart, build_chat_request, build_messages, with_feedback
from cot_prompts.prompt import PromptTemplate
from cot_prompts.types import T5_TOKEN_BUDGET, CotError, CotRequest, CotResult, TokenCounter
from cot_prompts.validate import AnswerProblem, ParsedAnswer, check_answer

log = logging.getLogger(__name__)

VideoMode = Literal["frames", "video_url", "video_base64"]
_TRANSIENT = (openai.APIConnectionError, openai.RateLimitError, openai.InternalServerError)
_UNREACHABLE = "unreachable"
T = TypeVar("T")


class _TransientExhausted(Exception):
    def __init__(self, reason: str, retries: int, http_s: float) -> None:
        super().__init__(reason)
        self.reason, self.retries, self.http_s = reason, retries, http_s


@dataclass(frozen=True)
class _Reply:
    content: str | None
    finish_reason: str | None
    retries: int
    http_s: float


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine from sync code, also when this thread already runs an event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()


def _is_transient(exc: BaseException) -> bool:
    return isinstance(exc, _TRANSIENT) or (isinstance(exc, openai.APIStatusError) and exc.status_code >= 500)


class VllmBackend:
    """Describe videos with an MLLM served by vLLM; `generate` keeps the order of its requests."""

    def __init__(
        self,
        *,
        base_url: str,
        model: str,
        prompt: PromptTemplate,
        count_t5_tokens: TokenCounter,
        max_t5_tokens: int = T5_TOKEN_BUDGET,
        max_concurrency: int = 8,
        timeout_s: float = 120.0,
        max_retries: int = 3,
        video_mode: VideoMode = "frames",
        frames: int = 8,
        frame_max_side: int = 448,
        max_answer_tokens: int | None = None,
        send_frame_rate: bool = False,
        seed: int | None = None,
        backoff_s: float = 0.5,
        check_timeout_s: float = 10.0,
        api_key: str = "EMPTY",
    ) -> None:
        if video_mode not in ("frames", "video_url", "video_base64"):
            raise ValueError(f"unknown {video_mode=}")
        if max_concurrency < 1 or frames < 1 or max_retries < 0 or timeout_s <= 0:
            raise ValueError(f"bad settings: {max_concurrency=} {frames=} {max_retries=} {timeout_s=}")
        self.base_url = base_url
        self.model = model
        self.prompt = prompt
        self.count_t5_tokens = count_t5_tokens
        self.max_t5_tokens = max_t5_tokens
        self.max_concurrency = max_concurrency
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.video_mode = video_mode
        self.frames = frames
        self.frame_max_side = frame_max_side
        self.max_answer_tokens = max_answer_tokens or prompt.max_tokens
        self.send_frame_rate = send_frame_rate
        self.seed = seed
        self.backoff_s = backoff_s
        self.check_timeout_s = check_timeout_s
        self.api_key = api_key

    @property
    def identity(self) -> str:
        """Everything but the prompt that changes the answer; the prompt hash enters the cache key apart."""
        media = self.video_mode
        if self.video_mode == "frames":
            media += f":{self.frames}x{self.frame_max_side}:fps={self.send_frame_rate}"
        return f"vllm:{self.model}:{media}:t5max={self.max_t5_tokens}:maxtok={self.max_answer_tokens}:seed={self.seed}"

    def generate(self, requests: Sequence[CotRequest]) -> list[CotResult]:
        return run_sync(self.agenerate(requests))

    async def agenerate(self, requests: Sequence[CotRequest]) -> list[CotResult]:
        client = openai.AsyncOpenAI(
            base_url=self.base_url, api_key=self.api_key, timeout=self.timeout_s, max_retries=0
        )
        async with client:
            await self._check_server(client)
            gate = asyncio.Semaphore(self.max_concurrency)
            results = await asyncio.gather(*(self._describe(client, gate, r) for r in requests))
        if results and all((r.error or "").startswith(_UNREACHABLE) for r in results):
            raise CotError(f"vLLM server at {self.base_url} became unreachable: {results[0].error}")
        return list(results)

    async def _with_retries(self, call: Any, timeout_s: float) -> tuple[Any, int, float]:
        """Await `call()` with backoff on transient errors; returns (value, retries, seconds waited on it).

        `timeout_s` bounds each attempt as a whole: the HTTP client's own timeouts apply per read, so a
        server that streams nothing for a while but answers quickly after that would never trip them.
        """
        http_s = 0.0
        attempt = 0
        while True:
            started = time.perf_counter()
            try:
                async with asyncio.timeout(timeout_s):
                    value = await call()
                return value, attempt, http_s + time.perf_counter() - started
            except (openai.APIError, TimeoutError) as exc:
                http_s += time.perf_counter() - started
                if isinstance(exc, openai.APIError) and not _is_transient(exc):
                    raise
                name = (
                    "timeout"
                    if isinstance(exc, TimeoutError | openai.APITimeoutError)
                    else type(exc).__name__
                )
                if attempt == self.max_retries:
                    kind = _UNREACHABLE if type(exc) is openai.APIConnectionError else "transient"
                    detail = f"no answer within {timeout_s}s" if name == "timeout" else str(exc)
                    raise _TransientExhausted(
                        f"{kind}: {name} after {attempt} retries: {detail}", attempt, http_s
                    ) from exc
                delay = min(8.0, self.backoff_s * 2**attempt) * random.uniform(0.5, 1.0)
                log.warning(
                    "transient %s from %s; retry %d in %.2fs", name, self.base_url, attempt + 1, delay
                )
                await asyncio.sleep(delay)
                attempt += 1

    async def _check_server(self, client: openai.AsyncOpenAI) -> None:
        try:
            # Its own timeout: a tight per-request timeout must not make a live server look dead.
            checker = client.with_options(timeout=self.check_timeout_s)
            page, _, _ = await self._with_retries(checker.models.list, self.check_timeout_s)
        except _TransientExhausted as exc:
            raise CotError(f"vLLM server at {self.base_url} is unreachable: {exc.reason}") from exc
        except openai.APIError as exc:
            raise CotError(f"vLLM server at {self.base_url} refused to list models: {exc}") from exc
        served = [entry.id for entry in page.data]
        if self.model not in served:
            raise CotError(f"model {self.model!r} is not served at {self.base_url}; it serves {served}")

    def _video_part(self, request: CotRequest) -> VideoPart:
        if self.video_mode == "frames":
            sampled = sample_frames(
                request.video_path,
                start_sec=request.start_sec,
                duration_sec=request.duration_sec,
                n_frames=self.frames,
                max_side=self.frame_max_side,
            )
            return VideoPart(url=frames_data_url(sampled), frame_times=sampled.times_sec)
        if request.start_sec > 0:
            raise ValueError(f"video_mode {self.video_mode!r} sends whole files; use 'frames' for segments")
        if self.video_mode == "video_url":
            return VideoPart(url=video_file_url(request.video_path))
        return VideoPart(url=video_data_url(request.video_path))

    async def _ask(self, client: openai.AsyncOpenAI, body: dict[str, Any]) -> _Reply:
        completion, retries, http_s = await self._with_retries(
            lambda: client.chat.completions.create(**body), self.timeout_s
        )
        choice = completion.choices[0]
        return _Reply(choice.message.content, choice.finish_reason, retries, http_s)

    async def _describe(
        self, client: openai.AsyncOpenAI, gate: asyncio.Semaphore, request: CotRequest
    ) -> CotResult:
        async with gate:
            # Latency starts once a slot is free: time queued behind max_concurrency is not this item's.
            state = _Attempts(request=request, backend=self, started=time.perf_counter())
            try:
                video = await asyncio.to_thread(self._video_part, request)
            except (OSError, ValueError, av.error.FFmpegError) as exc:
                return state.failed(f"video_unreadable: {exc}")
            messages = build_messages(self.prompt, request, video)
            ask = 0
            while True:
                body = build_chat_request(
                    model=self.model,
                    prompt=self.prompt,
                    messages=messages,
                    video=video,
                    duration_sec=request.duration_sec,
                    max_tokens=self.max_answer_tokens,
                    seed=self.seed,
                    send_frame_rate=self.send_frame_rate,
                )
                try:
                    reply = await self._ask(client, body)
                except _TransientExhausted as exc:
                    state.retries += exc.retries
                    state.http_s += exc.http_s
                    return state.failed(exc.reason)
                except openai.APIStatusError as exc:
                    return state.failed(f"request_rejected: HTTP {exc.status_code}: {exc.message}")
                state.note_reply(reply)
                checked = check_answer(
                    reply.content,
                    reply.finish_reason,
                    prompt=self.prompt,
                    count_t5_tokens=self.count_t5_tokens,
                    max_t5_tokens=self.max_t5_tokens,
                )
                if isinstance(checked, ParsedAnswer):
                    return state.succeeded(
                        checked.caption, checked.cot, checked.t5_tokens, False, checked.data
                    )
                state.problems.append(checked)
                if ask == self.max_retries:
                    return self._last_resort(state, checked, reply.content)
                messages = with_feedback(messages, reply.content, checked.feedback)
                state.retries += 1
                ask += 1

    def _last_resort(self, state: _Attempts, problem: AnswerProblem, content: str | None) -> CotResult:
        """After the last re-ask an over-budget CoT may still be shortened at a sentence boundary."""
        parsed = state.parsed_json(content)
        if problem.code not in ("cot_too_long", "cot_cut") or parsed is None:
            return state.failed(state.reason())
        cot = " ".join(parsed["cot"].split())
        sentences = split_sentences(cot)
        if sentences and sentences[-1][-1] not in ".!?":
            cot = " ".join(sentences[:-1])  # drop a fragment the grammar's maxLength cut mid-sentence
        try:
            fit = fit_to_budget(cot, count_tokens=self.count_t5_tokens, max_tokens=self.max_t5_tokens)
        except BudgetError as exc:
            return state.failed(f"{exc} ({state.reason()})")
        if not fit.text:
            return state.failed(state.reason())
        tokens = self.count_t5_tokens(" ".join(parsed["cot"].split()))
        return state.succeeded(" ".join(parsed["caption"].split()), fit.text, tokens, True, parsed)


class _Attempts:
    """Book-keeping of one item's conversation, turned into a CotResult at the end."""

    def __init__(self, *, request: CotRequest, backend: VllmBackend, started: float) -> None:
        self.request, self.backend, self.started = request, backend, started
        self.retries = 0
        self.http_s = 0.0
        self.raw: str | None = None
        self.problems: list[AnswerProblem] = []

    def note_reply(self, reply: _Reply) -> None:
        self.retries += reply.retries
        self.http_s += reply.http_s
        self.raw = reply.content

    @staticmethod
    def parsed_json(content: str | None) -> dict[str, Any] | None:
        try:
            data = json.loads(content or "")
        except json.JSONDecodeError:
            return None
        return (
            data
            if isinstance(data, dict)
            and isinstance(data.get("cot"), str)
            and isinstance(data.get("caption"), str)
            else None
        )

    def reason(self) -> str:
        last = self.problems[-1].reason
        earlier = ", ".join(p.code for p in self.problems[:-1])
        return f"{last} (after {len(self.problems) - 1} re-asks: {earlier})" if earlier else last

    def _result(self, **fields: Any) -> CotResult:
        return CotResult(
            item_id=self.request.item_id,
            backend="vllm",
            model=self.backend.model,
            prompt_version=self.backend.prompt.version,
            prompt_hash=self.backend.prompt.hash,
            raw_answer=self.raw,
            latency_s=time.perf_counter() - self.started,
            retries=self.retries,
            http_s=self.http_s,
            **fields,
        )

    def succeeded(self, caption: str, cot: str, tokens: int, shortened: bool, data: Any) -> CotResult:
        return self._result(
            caption=caption, caption_cot=cot, parsed=data, t5_tokens=tokens, shortened=shortened, error=None
        )

    def failed(self, reason: str) -> CotResult:
        parsed = self.parsed_json(self.raw)
        tokens = self.backend.count_t5_tokens(" ".join(parsed["cot"].split())) if parsed else 0
        return self._result(
            caption="", caption_cot="", parsed=parsed, t5_tokens=tokens, shortened=False, error=reason
        )
