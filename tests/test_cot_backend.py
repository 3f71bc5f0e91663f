"""VllmBackend's transport and re-ask logic against a scripted OpenAI-compatible endpoint.

The real-server tests (test_cot_vllm.py) cover what vLLM does; these pin down what the backend does with
each kind of reply, deterministically: backoff on 429/5xx, re-asks carrying feedback, the last-resort
shortening, per-item failures that never stop the batch, and the errors that do stop it.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time

import pytest
from vllm_server import ScriptedEndpoint, completion, free_port_url, http_error, make_clip

from cot_prompts import CotError, CotRequest, VllmBackend, load_prompt

GOOD = '{"caption":"test pattern","cot":"Start with a soft hum. Avoid voices and music."}'


def words(text: str) -> int:
    return len(text.split()) + 1


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return make_clip(tmp_path_factory.mktemp("clips") / "clip.mp4", seconds=2.0)


def backend(url: str, **kwargs) -> VllmBackend:
    settings = dict(
        base_url=url,
        model="scripted",
        prompt=load_prompt("v1"),
        count_t5_tokens=words,
        frames=2,
        frame_max_side=64,
        max_retries=2,
        backoff_s=0.01,
        timeout_s=10,
    )
    settings.update(kwargs)
    return VllmBackend(**settings)


def requests_for(clip, n: int) -> list[CotRequest]:
    return [CotRequest(item_id=f"item-{i}", video_path=clip, duration_sec=2.0) for i in range(n)]


def turns(body: dict) -> int:
    return len(body["messages"])


def test_good_answers_carry_full_lineage_in_request_order(clip):
    endpoint = ScriptedEndpoint(lambda body, i: completion(GOOD))
    with endpoint.serving() as url:
        results = backend(url).generate(requests_for(clip, 5))
    assert [r.item_id for r in results] == [f"item-{i}" for i in range(5)]
    prompt = load_prompt("v1")
    for r in results:
        assert r.ok and r.backend == "vllm" and r.model == "scripted"
        assert (
            r.caption == "test pattern" and r.caption_cot == "Start with a soft hum. Avoid voices and music."
        )
        assert r.prompt_version == "v1" and r.prompt_hash == prompt.hash
        assert r.raw_answer == GOOD and r.parsed == json.loads(GOOD)
        assert r.t5_tokens == 10 and r.retries == 0 and not r.shortened
        assert r.latency_s >= r.http_s > 0
    assert len(endpoint.bodies) == 5
    assert all(b["response_format"]["json_schema"]["schema"] == prompt.schema for b in endpoint.bodies)


def test_transient_errors_are_retried_with_backoff(clip):
    def script(body, index):
        return [http_error(503), http_error(429), completion(GOOD)][index] if index < 3 else completion(GOOD)

    endpoint = ScriptedEndpoint(script)
    with endpoint.serving() as url:
        [result] = backend(url).generate(requests_for(clip, 1))
    assert result.ok and result.retries == 2 and len(endpoint.bodies) == 3


def test_transient_errors_past_the_limit_fail_the_item_not_the_batch(clip):
    endpoint = ScriptedEndpoint(lambda body, i: http_error(500))
    with endpoint.serving() as url:
        [result] = backend(url, max_retries=1).generate(requests_for(clip, 1))
    assert not result.ok and result.error.startswith("transient: InternalServerError after 1 retries")
    assert result.retries == 1 and len(endpoint.bodies) == 2


def test_slow_answers_time_out_per_attempt_and_are_retried(clip):
    endpoint = ScriptedEndpoint(lambda body, i: completion(GOOD), delay_s=0.5)
    with endpoint.serving() as url:
        [result] = backend(url, timeout_s=0.1, max_retries=1).generate(requests_for(clip, 1))
    assert result.error == "transient: timeout after 1 retries: no answer within 0.1s"
    # Two 0.1 s attempts; without the timeout they would wait 2 x 0.5 s. 0.9 leaves room for late timers
    # on a loaded machine and still tells the two apart.
    assert result.retries == 1 and len(endpoint.bodies) == 2 and result.http_s < 0.9


def test_client_errors_are_not_retried(clip):
    endpoint = ScriptedEndpoint(lambda body, i: http_error(400, "video could not be decoded"))
    with endpoint.serving() as url:
        [result] = backend(url).generate(requests_for(clip, 1))
    assert result.error.startswith("request_rejected: HTTP 400") and "could not be decoded" in result.error
    assert len(endpoint.bodies) == 1


def test_bad_answers_are_re_asked_with_feedback_in_the_conversation(clip):
    def script(body, index):
        if turns(body) == 2:
            return completion('{"caption":"x","cot":"Sta', "length")
        if turns(body) == 4:
            return completion('{"caption":"  ","cot":"Start with hum."}')
        return completion(GOOD)

    endpoint = ScriptedEndpoint(script)
    with endpoint.serving() as url:
        [result] = backend(url).generate(requests_for(clip, 1))
    assert result.ok and result.retries == 2 and result.raw_answer == GOOD
    last = endpoint.bodies[-1]["messages"]
    assert [m["role"] for m in last] == ["system", "user", "assistant", "user", "assistant", "user"]
    assert last[2]["content"] == '{"caption":"x","cot":"Sta' and "cut off" in last[3]["content"]
    assert '"caption"' in last[5]["content"] and "empty" in last[5]["content"]
    # The video stays in the first user turn only.
    assert sum(isinstance(m["content"], list) for m in last) == 1


def test_persistently_bad_answers_fail_with_the_last_reason_and_history(clip):
    endpoint = ScriptedEndpoint(lambda body, i: completion("not json"))
    with endpoint.serving() as url:
        [result] = backend(url, max_retries=2).generate(requests_for(clip, 1))
    assert not result.ok and result.retries == 2 and len(endpoint.bodies) == 3
    assert (
        result.error.startswith("invalid_json")
        and "after 2 re-asks: invalid_json, invalid_json" in result.error
    )
    assert result.raw_answer == "not json" and result.parsed is None


def test_over_budget_answers_are_re_asked_then_shortened_at_a_sentence_boundary(clip):
    long_cot = "Start with a hum. Add many many many many clicks. Add a whir. Avoid voices and music."
    endpoint = ScriptedEndpoint(lambda body, i: completion(json.dumps({"caption": "hum", "cot": long_cot})))
    with endpoint.serving() as url:
        [result] = backend(url, max_t5_tokens=12, max_retries=1).generate(requests_for(clip, 1))
    assert result.ok and result.shortened and result.retries == 1
    assert result.caption_cot == "Start with a hum. Add a whir. Avoid voices and music."
    assert result.t5_tokens == words(long_cot)
    assert "tokens long; the limit is 12" in endpoint.bodies[-1]["messages"][-1]["content"]


def test_over_budget_without_a_usable_sentence_boundary_fails(clip):
    cot = "Start with " + "very " * 30 + "loud hum. Avoid music."
    endpoint = ScriptedEndpoint(lambda body, i: completion(json.dumps({"caption": "hum", "cot": cot})))
    with endpoint.serving() as url:
        [result] = backend(url, max_t5_tokens=12, max_retries=1).generate(requests_for(clip, 1))
    assert not result.ok and result.error.startswith("cot_too_long") and "first sentence" in result.error
    assert result.t5_tokens == words(cot) and result.parsed["cot"] == cot


def test_concurrency_is_bounded(clip):
    guard = threading.Lock()
    active, peak = 0, 0

    def script(body, index):
        nonlocal active, peak
        with guard:
            active += 1
            peak = max(peak, active)
        time.sleep(0.15)
        with guard:
            active -= 1
        return completion(GOOD)

    endpoint = ScriptedEndpoint(script)
    with endpoint.serving() as url:
        results = backend(url, max_concurrency=3).generate(requests_for(clip, 9))
    assert all(r.ok for r in results)
    assert peak == 3


def test_broken_video_fails_only_that_item(clip, tmp_path):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00" * 100)
    endpoint = ScriptedEndpoint(lambda body, i: completion(GOOD))
    with endpoint.serving() as url:
        results = backend(url).generate(
            [CotRequest(item_id="bad", video_path=broken, duration_sec=2.0), *requests_for(clip, 1)]
        )
    assert results[0].error.startswith("video_unreadable") and results[1].ok
    assert len(endpoint.bodies) == 1


def test_unreachable_server_raises_cot_error(clip):
    with pytest.raises(CotError, match="unreachable"):
        backend(free_port_url(), max_retries=1).generate(requests_for(clip, 1))


def test_model_not_served_raises_cot_error(clip):
    endpoint = ScriptedEndpoint(lambda body, i: completion(GOOD), model="other-model")
    with endpoint.serving() as url, pytest.raises(CotError, match="not served"):
        backend(url).generate(requests_for(clip, 1))
    assert endpoint.bodies == []


def test_generate_works_inside_a_running_event_loop(clip):
    endpoint = ScriptedEndpoint(lambda body, i: completion(GOOD))

    async def caller(url):
        return backend(url).generate(requests_for(clip, 2))

    with endpoint.serving() as url:
        results = asyncio.run(caller(url))
    assert all(r.ok for r in results)


def test_identity_reflects_what_changes_answers():
    prompt = load_prompt("v1")
    a = VllmBackend(base_url="http://x/v1", model="m", prompt=prompt, count_t5_tokens=words)
    assert (
        a.identity
        == VllmBackend(base_url="http://y/v1", model="m", prompt=prompt, count_t5_tokens=words).identity
    )
    for change in ({"model": "n"}, {"frames": 4}, {"video_mode": "video_url"}, {"max_t5_tokens": 60}):
        other = VllmBackend(
            **{"base_url": "http://x/v1", "model": "m", "prompt": prompt, "count_t5_tokens": words, **change}
        )
        assert other.identity != a.identity
