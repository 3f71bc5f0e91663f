"""Real captions and CoTs on the tiny preset: its T5 tokenizer counts subwords like T5's, and a text the
user wrote that is over the 77-token budget is cut, flagged in lineage, instead of failing the item."""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import duckdb
import pytest
from media import make_video

pytestmark = pytest.mark.usefixtures("prefect_harness")

CAPTION_40_WORDS = (
    "A young woman walks her dog along a city street at night while cars pass slowly, "
    "rain drips from the shop signs, a bus stops at the corner with a hiss of brakes and people hurry "
    "home under their umbrellas"
)
LONG_COT = " ".join(
    [
        "Start with the steady patter of rain on the pavement and the soft footsteps of the woman and her dog.",
        "Add cars passing slowly on the wet road, their tyres hissing through the puddles one after another.",
        "Add a bus that stops at the corner with the hiss of its air brakes and the sound of its doors opening.",
        "Add drops falling from the shop signs and the rustle of umbrellas as people hurry home.",
        "Avoid voices, music and any sound that is not part of the scene.",
    ]
)


def test_the_tiny_tokenizer_counts_english_like_t5():
    from thinksound.features import FeatureExtractor

    extractor = FeatureExtractor.from_preset("tiny")
    assert len(CAPTION_40_WORDS.split()) == 40
    # T5's own tokenizer: 11 tokens for this caption (end token included), about 1.3 a word for prose.
    assert extractor.count_t5_tokens("a rubber ball bounces on a wooden floor") <= 14
    assert 40 < extractor.count_t5_tokens(CAPTION_40_WORDS) <= 70
    assert extractor.count_t5_tokens(LONG_COT) > 77


class Collected(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_a_40_word_caption_and_an_over_long_cot_succeed_on_the_tiny_preset(tmp_path):
    from flows.dub import dub_dataset
    from tasks.config import PipelineSettings

    make_video(tmp_path / "street.mp4", duration=1.2, size="32x32")
    make_video(tmp_path / "rain.mp4", duration=1.3, size="32x32")
    manifest = tmp_path / "manifest.csv"
    with manifest.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["video", "caption", "caption_cot"])
        writer.writeheader()
        writer.writerow({"video": "street.mp4", "caption": CAPTION_40_WORDS, "caption_cot": ""})
        writer.writerow({"video": "rain.mp4", "caption": "rain at night", "caption_cot": LONG_COT})
    workdir = tmp_path / "w"
    settings = PipelineSettings(workdir=str(workdir), preset="tiny", steps=2, batch_size=2, max_duration_sec=2.0)
    # Prefect's flow engine reconfigures the root logger's handlers: listen on the module's own logger.
    warnings = Collected()
    logging.getLogger("cot_prompts.provided").addHandler(warnings)
    try:
        result = dub_dataset(input=str(manifest), settings=settings)
    finally:
        logging.getLogger("cot_prompts.provided").removeHandler(warnings)
    assert result["counts"] == {"succeeded": 2}, result["items"]

    with duckdb.connect(str(workdir / "lineage.duckdb"), read_only=True) as con:
        rows = con.execute(
            "SELECT source, cot_backend, caption_cot, t5_tokens, t5_truncated_tokens FROM item_cot"
        ).fetchall()
    cots = {Path(source).name: row for source, *row in rows}
    backend, text, tokens, truncated = cots["rain.mp4"]
    assert backend == "provided" and tokens > 77 and truncated > 0
    assert LONG_COT.startswith(text) and len(text) < len(LONG_COT), "cut at the budget, from the start"
    assert any("provided CoT" in m and "cut to" in m for m in warnings.messages), warnings.messages
    backend, text, tokens, truncated = cots["street.mp4"]
    assert backend == "template" and text.startswith(f"Start with the sound of {CAPTION_40_WORDS[:40]}")
    assert tokens <= 77 or truncated == tokens - 77
