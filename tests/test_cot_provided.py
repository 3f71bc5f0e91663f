"""Manifest-driven CoT: provided, template and none backends, and the CoT cache key."""

from __future__ import annotations

from pathlib import Path

import yaml

from cot_prompts import CotRequest, PromptTemplate, ProvidedBackend, cot_cache_key, load_prompt
from cot_prompts.prompt import templates_dir


def words(text: str) -> int:
    return len(text.split()) + 1


def request(item: str = "item-1", **texts) -> CotRequest:
    return CotRequest(item_id=item, video_path=Path(f"/videos/{item}.mp4"), duration_sec=8.0, **texts)


def test_provided_cot_within_budget_is_kept_and_recorded_as_provided():
    backend = ProvidedBackend(words)
    [result] = backend.generate(
        [request(caption="playing tennis", caption_cot="Start with hits.  Avoid music.")]
    )
    assert result.ok and result.backend == "provided"
    assert result.caption == "playing tennis" and result.caption_cot == "Start with hits. Avoid music."
    assert result.t5_tokens == 6 and not result.shortened
    assert result.model is None and result.prompt_version is None and result.retries == 0


def test_provided_cot_over_budget_is_cut_at_the_budget_with_a_warning(caplog):
    cot = "Start with rain on glass. Add a low rumble of rain on the roof. Add wind. Avoid voices and music."
    with caplog.at_level("WARNING", logger="cot_prompts.provided"):
        [result] = ProvidedBackend(words, max_t5_tokens=11).generate([request(caption_cot=cot)])
    assert result.ok and result.shortened and result.backend == "provided"
    assert result.t5_tokens == words(cot), "t5_tokens is the length before the cut"
    # What the original's encoder would read: the first 10 words and the end token.
    assert result.caption_cot == "Start with rain on glass. Add a low rumble of"
    assert result.t5_truncated_tokens == words(cot) - 11
    assert result.raw_answer == cot
    assert "item-1" in caplog.text and "cut to 11" in caplog.text


def test_provided_cot_whose_first_sentence_is_too_long_is_cut_not_failed():
    cot = "Start with a very long description of every single sound that happens here. Avoid music."
    [result] = ProvidedBackend(words, max_t5_tokens=8).generate([request(caption_cot=cot)])
    assert result.ok and result.shortened
    assert result.caption_cot == "Start with a very long description of"
    assert result.t5_tokens == words(cot) and result.t5_truncated_tokens == words(cot) - 8


def test_a_single_word_longer_than_the_budget_is_cut_between_characters():
    def characters(text: str) -> int:
        return len(text) + 1

    [result] = ProvidedBackend(characters, max_t5_tokens=6).generate([request(caption_cot="Supercalifragilistic")])
    assert result.ok and result.caption_cot == "Super"


def test_caption_only_gives_a_template_cot_marked_as_such():
    prompt = load_prompt("v1")
    [result] = ProvidedBackend(words, prompt=prompt).generate([request(caption="dog barking")])
    assert result.ok and result.backend == "template"
    assert result.caption == "dog barking"
    assert result.caption_cot.startswith("Start with the sound of dog barking")
    assert result.model is None, "a templated CoT must never look like MLLM output"
    assert result.prompt_version == "v1" and result.prompt_hash == prompt.hash
    assert result.t5_tokens == words(result.caption_cot) <= 77


def test_template_cot_is_cut_at_the_budget_too():
    long_caption = " ".join(["very"] * 80) + " loud engine"
    [result] = ProvidedBackend(words).generate([request(caption=long_caption)])
    assert result.ok and result.backend == "template" and result.shortened
    assert words(result.caption_cot) == 77 and result.caption_cot.startswith("Start with the sound of very")


def test_nothing_given_means_no_text_and_backend_none():
    [blank, spaces] = ProvidedBackend(words).generate(
        [request(), request("item-2", caption="  ", caption_cot="\n")]
    )
    for result in (blank, spaces):
        assert result.ok and result.backend == "none"
        assert result.caption == "" and result.caption_cot == "" and result.t5_tokens == 0


def test_results_keep_request_order():
    requests = [request(f"item-{i}", caption=f"sound {i}") for i in range(5)]
    assert [r.item_id for r in ProvidedBackend(words).generate(requests)] == [f"item-{i}" for i in range(5)]


def test_cache_key_depends_on_content_identity_texts_backend_and_prompt():
    prompt = load_prompt("v1")
    base = request(caption="rain")
    key = cot_cache_key(base, "vllm:model-a", prompt.hash)
    assert key == cot_cache_key(base, "vllm:model-a", prompt.hash)
    # The same content under another path is the same item.
    moved = CotRequest(
        item_id="item-1", video_path=Path("/elsewhere/x.mp4"), duration_sec=8.0, caption="rain"
    )
    assert cot_cache_key(moved, "vllm:model-a", prompt.hash) == key
    data = yaml.safe_load((templates_dir() / "v1.yaml").read_text())
    data["instruction"] += " Be concise."
    edited = PromptTemplate.from_mapping(data)
    variants = [
        cot_cache_key(base, "vllm:model-b", prompt.hash),
        cot_cache_key(base, "vllm:model-a", edited.hash),
        cot_cache_key(request("item-2", caption="rain"), "vllm:model-a", prompt.hash),
        cot_cache_key(request(caption="rain", caption_cot="Start with rain."), "vllm:model-a", prompt.hash),
        cot_cache_key(
            CotRequest(
                item_id="item-1", video_path=Path("x"), duration_sec=8.0, caption="rain", start_sec=2.0
            ),
            "vllm:model-a",
            prompt.hash,
        ),
        cot_cache_key(base, "vllm:model-a", None),
    ]
    assert len({key, *variants}) == len(variants) + 1


def test_backend_identity_changes_with_budget():
    assert ProvidedBackend(words).identity != ProvidedBackend(words, max_t5_tokens=60).identity
