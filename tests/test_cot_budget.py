"""The T5 budget: sentence splitting, shortening at sentence boundaries, and failing when impossible."""

from __future__ import annotations

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers

from cot_prompts import BudgetError, fit_to_budget, split_sentences


def words(text: str) -> int:
    """Words plus one end-of-sequence token, like T5's tokenizer with special tokens."""
    return len(text.split()) + 1


@pytest.fixture(scope="module")
def t5_like():
    """A real sentencepiece-style tokenizer trained here (T5's cannot be downloaded), appending </s>."""
    tokenizer = Tokenizer(models.Unigram())
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    corpus = [
        "Start with sharp racket hits on the ball every two seconds.",
        "Add light sneaker squeaks between the hits and a faint ambience.",
        "Keep the crowd minimal and avoid voices and music.",
    ] * 20
    trainer = trainers.UnigramTrainer(
        vocab_size=120, special_tokens=["<pad>", "</s>", "<unk>"], unk_token="<unk>"
    )
    tokenizer.train_from_iterator(corpus, trainer=trainer)
    tokenizer.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return lambda text: len(tokenizer.encode(text).ids)


COT = (
    "Start with sharp racket hits on the ball every two seconds. "
    "Add light sneaker squeaks between the hits. "
    "Add a faint open-air ambience. "
    "Keep the crowd minimal and avoid voices and music."
)


def test_split_sentences_handles_spacing_and_terminators():
    assert split_sentences("  One.  Two!\nThree?  Four") == ["One.", "Two!", "Three?", "Four"]
    assert split_sentences("") == []
    assert split_sentences("No terminator at all") == ["No terminator at all"]
    # Decimal points and abbreviations without a following space do not split.
    assert split_sentences("Hits at 1.5 seconds. Then rain.") == ["Hits at 1.5 seconds.", "Then rain."]


def test_text_within_budget_is_unchanged_except_whitespace():
    fit = fit_to_budget("Start  with\nrain.  Avoid music.", count_tokens=words, max_tokens=77)
    assert fit.text == "Start with rain. Avoid music."
    assert not fit.shortened and fit.tokens == fit.fitted_tokens == 6 and fit.dropped_sentences == 0


def test_exactly_at_budget_fits():
    fit = fit_to_budget("a b c.", count_tokens=words, max_tokens=4)
    assert not fit.shortened and fit.tokens == 4


def test_over_budget_keeps_first_then_last_then_middle_in_order():
    total = words(COT)
    first_last = words(
        "Start with sharp racket hits on the ball every two seconds. Keep the crowd minimal and avoid voices and music."
    )
    fit = fit_to_budget(COT, count_tokens=words, max_tokens=first_last)
    assert fit.shortened and fit.tokens == total and fit.fitted_tokens == first_last
    assert fit.text.startswith("Start with") and fit.text.endswith("avoid voices and music.")
    assert fit.dropped_sentences == 2
    # Seven more tokens admit the first middle sentence (seven words), in its original place.
    roomier = fit_to_budget(COT, count_tokens=words, max_tokens=first_last + 7)
    assert roomier.text == (
        "Start with sharp racket hits on the ball every two seconds. Add light sneaker squeaks between the hits. "
        "Keep the crowd minimal and avoid voices and music."
    )
    assert roomier.fitted_tokens == first_last + 7


def test_middle_sentence_may_be_skipped_while_a_later_one_fits():
    text = "Start here. This middle sentence is far too long to keep at all. Short one. Avoid music."
    fit = fit_to_budget(text, count_tokens=words, max_tokens=8)
    assert fit.text == "Start here. Short one. Avoid music."
    assert fit.dropped_sentences == 1


def test_first_sentence_over_budget_is_an_error_never_a_cut():
    with pytest.raises(BudgetError, match="first sentence"):
        fit_to_budget("One two three four five six. Avoid music.", count_tokens=words, max_tokens=4)
    with pytest.raises(BudgetError, match="cot_too_long"):
        fit_to_budget(" ".join(["word"] * 100), count_tokens=words, max_tokens=77)


def test_budget_with_a_real_subword_tokenizer(t5_like):
    total = t5_like(COT)
    assert total > words(COT) - 1, "subword tokenizers count at least one token per word"
    budget = total - 1
    fit = fit_to_budget(COT, count_tokens=t5_like, max_tokens=budget)
    assert fit.shortened and fit.tokens == total
    assert t5_like(fit.text) == fit.fitted_tokens <= budget
    # The result is always whole sentences of the input, in order.
    sentences = split_sentences(COT)
    kept = split_sentences(fit.text)
    assert [sentences.index(s) for s in kept] == sorted(sentences.index(s) for s in kept)


def test_the_counter_is_called_on_the_joined_text_not_summed(t5_like):
    # Token counts are not additive (one </s> per text): the fit must hold for the joined result.
    sentences = split_sentences(COT)
    summed = sum(t5_like(s) for s in sentences)
    assert summed > t5_like(COT)
    fit = fit_to_budget(COT, count_tokens=t5_like, max_tokens=t5_like(COT))
    assert not fit.shortened
