"""What the vLLM backend sends (messages, media, response_format) and how it judges one answer."""

from __future__ import annotations

import base64
import io
import json
import re

import pytest
from PIL import Image
from vllm_server import make_clip

from cot_prompts import CotRequest, load_prompt
from cot_prompts.media import frame_times, frames_data_url, sample_frames, video_data_url, video_file_url
from cot_prompts.messages import VideoPart, build_chat_request, build_messages, with_feedback
from cot_prompts.validate import AnswerProblem, ParsedAnswer, check_answer


def words(text: str) -> int:
    return len(text.split()) + 1


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return make_clip(tmp_path_factory.mktemp("clips") / "clip.mp4", seconds=4.0, size="320x240", rate=10)


def test_frame_times_are_slice_centres():
    assert frame_times(4.0, 4) == [0.5, 1.5, 2.5, 3.5]
    with pytest.raises(ValueError):
        frame_times(0.0, 4)


def test_sampled_frames_are_small_jpegs_in_a_video_jpeg_data_url(clip):
    frames = sample_frames(clip, start_sec=0.0, duration_sec=4.0, n_frames=4, max_side=64)
    assert frames.times_sec == (0.5, 1.5, 2.5, 3.5)
    images = [Image.open(io.BytesIO(jpeg)) for jpeg in frames.jpegs]
    assert all(im.format == "JPEG" and max(im.size) == 64 for im in images)
    # The test pattern moves: frames from different times differ.
    assert len({jpeg for jpeg in frames.jpegs}) == 4
    url = frames_data_url(frames)
    prefix, payload = url.split(",", 1)
    assert prefix == "data:video/jpeg;base64"
    assert [base64.b64decode(part) for part in payload.split(",")] == list(frames.jpegs)


def test_segment_sampling_and_short_clips(clip):
    late = sample_frames(clip, start_sec=2.0, duration_sec=2.0, n_frames=2, max_side=64)
    early = sample_frames(clip, start_sec=0.0, duration_sec=2.0, n_frames=2, max_side=64)
    assert late.jpegs != early.jpegs
    # Asking for more time than the file holds repeats the last frame instead of failing.
    padded = sample_frames(clip, start_sec=0.0, duration_sec=40.0, n_frames=4, max_side=64)
    assert len(padded.jpegs) == 4 and padded.jpegs[-1] == padded.jpegs[-2]


def test_unreadable_video_raises_a_clear_error(tmp_path):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video at all")
    with pytest.raises((OSError, ValueError)):
        sample_frames(broken, start_sec=0.0, duration_sec=1.0, n_frames=2)


def test_whole_video_urls(clip):
    assert video_file_url(clip) == "file://" + str(clip.resolve())
    url = video_data_url(clip)
    assert url.startswith("data:video/mp4;base64,")
    assert base64.b64decode(url.split(",", 1)[1]) == clip.read_bytes()


def test_messages_and_request_shape(clip):
    prompt = load_prompt("v1")
    request = CotRequest(item_id="a", video_path=clip, duration_sec=4.0, caption="test pattern")
    video = VideoPart(url="data:video/jpeg;base64,AAAA,BBBB", frame_times=(1.0, 3.0))
    messages = build_messages(prompt, request, video)
    assert [m["role"] for m in messages] == ["system", "user"]
    assert messages[0]["content"] == prompt.system_text()
    video_part, text_part = messages[1]["content"]
    assert video_part == {"type": "video_url", "video_url": {"url": video.url}}
    assert (
        text_part["type"] == "text"
        and "2 frames" in text_part["text"]
        and '"test pattern"' in text_part["text"]
    )

    body = build_chat_request(
        model="m", prompt=prompt, messages=messages, video=video, duration_sec=4.0, max_tokens=99, seed=7
    )
    assert body["model"] == "m" and body["max_tokens"] == 99 and body["seed"] == 7
    assert body["temperature"] == prompt.temperature
    fmt = body["response_format"]
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["schema"] == prompt.schema
    assert fmt["json_schema"]["strict"] is True and fmt["json_schema"]["name"]
    assert "extra_body" not in body, "per-request media kwargs need a server flag; off by default"
    json.dumps(body)  # the whole request must be plain JSON

    with_rate = build_chat_request(
        model="m",
        prompt=prompt,
        messages=messages,
        video=video,
        duration_sec=4.0,
        max_tokens=9,
        seed=None,
        send_frame_rate=True,
    )
    assert with_rate["extra_body"] == {"media_io_kwargs": {"video": {"fps": 0.5, "duration": 4.0}}}
    assert "seed" not in with_rate


def test_feedback_extends_the_conversation_without_mutating_it():
    messages = [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]
    extended = with_feedback(messages, '{"caption":"x"', "cut off, answer again")
    assert len(messages) == 2
    assert extended[2:] == [
        {"role": "assistant", "content": '{"caption":"x"'},
        {"role": "user", "content": "cut off, answer again"},
    ]
    assert with_feedback(messages, None, "empty")[2:] == [{"role": "user", "content": "empty"}]


def check(content, finish="stop", limit=77):
    return check_answer(content, finish, prompt=load_prompt("v1"), count_t5_tokens=words, max_t5_tokens=limit)


def test_a_good_answer_parses():
    answer = check(
        '{"caption":" rain ","cot":"Start with rain.  Avoid music.","events":[{"source":"rain","start_sec":0,"end_sec":4}]}'
    )
    assert isinstance(answer, ParsedAnswer)
    assert (
        answer.caption == "rain" and answer.cot == "Start with rain. Avoid music." and answer.t5_tokens == 6
    )
    assert answer.data["events"][0]["source"] == "rain"


@pytest.mark.parametrize(
    ("content", "finish", "code"),
    [
        ('{"caption":"rain","cot":"Start', "length", "cut_off"),
        ('{"caption":"rain","cot":"Start with rain."}', "length", "cut_off"),
        (None, "stop", "empty_answer"),
        ("   ", "stop", "empty_answer"),
        ('{"caption":"rain",', "stop", "invalid_json"),
        ('{"caption":"rain"}', "stop", "schema"),
        ('{"caption":"rain","cot":"x","mood":"calm"}', "stop", "schema"),
        ('{"caption":"","cot":"Start with rain."}', "stop", "schema"),
        ('{"caption":"  ","cot":"Start with rain."}', "stop", "empty_field"),
        ('["caption","cot"]', "stop", "schema"),
    ],
)
def test_bad_answers_get_a_code_and_feedback(content, finish, code):
    problem = check(content, finish)
    assert isinstance(problem, AnswerProblem) and problem.code == code
    assert problem.feedback and not re.search(r"\{[a-z_]+\}", problem.feedback), "unfilled placeholder"
    assert problem.reason.startswith(code)


def test_over_budget_and_grammar_cut_cots_are_flagged():
    too_long = check('{"caption":"rain","cot":"' + "word " * 80 + '"}')
    assert isinstance(too_long, AnswerProblem) and too_long.code == "cot_too_long"
    assert "81 tokens" in too_long.feedback and "77" in too_long.feedback
    at_limit = check('{"caption":"rain","cot":"' + "a" * 420 + '"}')
    assert isinstance(at_limit, AnswerProblem) and at_limit.code == "cot_cut" and "420" in at_limit.feedback
