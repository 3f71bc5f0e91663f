"""The qc stage in the pipeline: best-of-N, listening gates, scores in metrics.json, lineage and the
item_scores view, reprocessing by score. Flows run on the tiny presets against a real Prefect API and
DuckDB file; selection rules and the score filter are also checked on their own."""

from __future__ import annotations

import json
import math
from pathlib import Path

import duckdb
import pytest
from media import make_video

from flows.report_scores import histogram, score_sections
from tasks.items import WorkItem
from tasks.score_filter import ScoreFilter, ScoreFilterError, parse_score_filter
from thinksound.qc.selection import (
    ListeningThresholds,
    failed_listening,
    first_sentence,
    lifted_gates,
    rank_key,
)

SCORES = ("desync_sec", "clap", "speech", "music")
WORDS = ListeningThresholds(speech_words=("talk", "speech", "sing"), music_words=("music", "sing"))


def _settings(workdir: Path, **quality):
    from tasks.config import PipelineSettings, QualitySettings

    return PipelineSettings(
        workdir=str(workdir), steps=2, batch_size=4, max_duration_sec=2.0, quality=QualitySettings(**quality)
    )


def _rows(workdir: Path, sql: str, params: list | None = None) -> list[tuple]:
    with duckdb.connect(str(workdir / "lineage.duckdb"), read_only=True) as con:
        return con.execute(sql, params or []).fetchall()


def _metrics_files(result: dict) -> dict[str, dict]:
    return {
        i["source"]: json.loads(Path(i["metrics_uri"].removeprefix("file://")).read_text())
        for i in result["items"]
        if i["status"] == "succeeded"
    }


# ---- selection rules -------------------------------------------------------------------------


def test_words_in_the_text_lift_only_their_gate():
    assert lifted_gates("A man is talking while rain falls.", WORDS) == {"speech"}
    assert lifted_gates("Background MUSIC swells.", WORDS) == {"music"}
    assert lifted_gates("A choir is singing.", WORDS) == {"speech", "music"}
    assert lifted_gates("Waves crash; no one talks?", WORDS) == {"speech"}  # a stem matches "talks"
    assert lifted_gates("Stalking footsteps in the dark.", WORDS) == set()  # not at a word start


def test_gates_reject_past_their_thresholds_unless_lifted():
    limits = ListeningThresholds(max_speech_prob=0.5, max_music_prob=0.5, max_desync_sec=0.6, min_clap=0.1,
                                 speech_words=WORDS.speech_words, music_words=WORDS.music_words)
    good = {"desync_sec": 0.2, "clap": 0.3, "speech": 0.1, "music": 0.1}
    assert failed_listening(good, "rain", limits) == []
    assert "unwanted speech" in failed_listening({**good, "speech": 0.9}, "rain", limits)[0]
    assert failed_listening({**good, "speech": 0.9}, "a woman talking", limits) == []
    assert "unwanted music" in failed_listening({**good, "music": 0.7}, "a woman talking", limits)[0]
    assert "off sync" in failed_listening({**good, "desync_sec": 0.8}, "rain", limits)[0]
    assert "CLAP" in failed_listening({**good, "clap": 0.05}, "rain", limits)[0]
    assert "not finite" in failed_listening({**good, "clap": math.nan}, "rain", limits)[0]


def test_ranking_is_gates_then_desync_then_clap_then_draw_order():
    a = rank_key(0, {"desync_sec": 0.4, "clap": 0.1}, 0)
    b = rank_key(0, {"desync_sec": 0.2, "clap": 0.0}, 1)
    c = rank_key(0, {"desync_sec": 0.2, "clap": 0.3}, 2)
    d = rank_key(1, {"desync_sec": 0.0, "clap": 0.9}, 3)
    e = rank_key(0, {"desync_sec": 0.2, "clap": 0.3}, 4)
    assert sorted([a, b, c, d, e]) == [c, e, b, a, d]
    assert rank_key(0, {}, 0) > rank_key(0, {"desync_sec": 2.0, "clap": -1.0}, 5)


def test_clap_text_is_the_caption_or_the_cots_first_sentence():
    from tasks.quality import clap_text

    assert first_sentence("Rain falls. Then thunder rolls!") == "Rain falls."
    assert first_sentence("  no full stop here") == "no full stop here"
    assert clap_text(WorkItem(source="x", position=0, caption="a dog", caption_cot="Rain. Wind.")) == "a dog"
    assert clap_text(WorkItem(source="x", position=0, caption=" ", caption_cot="Rain 2.5 m away. Wind.")) == (
        "Rain 2.5 m away."
    )


def test_score_filter_takes_only_known_columns_operators_and_numbers():
    flt = parse_score_filter("desync_sec > 0.4")
    assert flt == ScoreFilter("desync_sec", ">", 0.4) and flt.sql() == "s.desync_sec > ?"
    assert parse_score_filter(" clap<=-0.25 ").sql() == "s.clap <= ?"
    assert parse_score_filter("music != 1e-1") == ScoreFilter("music", "!=", 0.1)
    for bad in ("desync_sec > 0.4; DROP TABLE runs", "source = 'x'", "desync_sec > abs(1)", "desync_sec >", "",
                "desync_sec > 0.4 OR 1=1", "loudness_lufs > 1"):
        with pytest.raises(ScoreFilterError):
            parse_score_filter(bad)
    with pytest.raises(ScoreFilterError):
        ScoreFilter("1=1 OR desync_sec", ">", 0.0)


def test_histograms_bin_every_value_once():
    bins = histogram([0.0, 0.2, 0.2, 1.99, 2.0, 5.0, -1.0], 0.0, 2.0, 0.2)
    assert len(bins) == 10 and sum(c for _, _, c in bins) == 7
    assert bins[0][2] == 2 and bins[1][2] == 2 and bins[-1][2] == 3
    item = WorkItem(source="a", position=0, scores={"desync_sec": 0.4, "clap": 0.1, "speech": 0.2, "music": 0.05})
    text = "\n".join(score_sections([item, WorkItem(source="b", position=1)]))
    assert all(f"### {name} (1 items" in text for name in SCORES)


# ---- the flow --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("qc-videos")
    make_video(folder / "walk.mp4", duration=1.5)
    make_video(folder / "spin.mp4", duration=2.0, pattern="testsrc")
    return folder


@pytest.fixture(scope="module")
def best_of_3(videos, tmp_path_factory, prefect_harness):
    from flows.dub import dub_dataset

    workdir = tmp_path_factory.mktemp("qc-work")
    return workdir, dub_dataset(input=str(videos), settings=_settings(workdir, best_of=3))


def test_best_of_3_publishes_the_best_candidate_with_every_candidates_scores(best_of_3):
    _, result = best_of_3
    assert result["counts"] == {"succeeded": 2}
    for record in _metrics_files(result).values():
        assert set(record["scores"]) == set(SCORES)
        assert all(math.isfinite(record["scores"][k]) for k in SCORES)
        assert record["best_of"] == 3
        candidates = record["candidates"]
        assert len(candidates) == 3 and len({c["seed"] for c in candidates}) == 3
        assert all(set(c["scores"]) == set(SCORES) for c in candidates)
        winner = next(c for c in candidates if c["seed"] == record["seed"])
        assert winner["scores"] == record["scores"]
        best = min(
            candidates,
            key=lambda c: (len(c["reasons"]), c["scores"]["desync_sec"], -c["scores"]["clap"], c["candidate"]),
        )
        assert best["seed"] == record["seed"]


def test_lineage_records_every_candidate_and_the_view_holds_the_winner(best_of_3):
    workdir, result = best_of_3
    files = _metrics_files(result)
    rows = _rows(workdir, "SELECT source, details, model_version FROM stage_attempts WHERE stage = 'qc'")
    assert len(rows) == 2
    for source, details, model_version in rows:
        details = json.loads(details)
        assert [c["seed"] for c in details["candidates"]] == [c["seed"] for c in files[source]["candidates"]]
        assert all(len(c["listening"]["speech_over_time"]) >= 1 for c in details["candidates"])
        assert details["chosen"]["seed"] == files[source]["seed"]
        assert model_version.startswith("tiny-qc/")
    seeds = _rows(workdir, "SELECT params->>'candidate_seeds' FROM stage_attempts WHERE stage = 'synthesis'")
    assert all(len(json.loads(s[0])) == 3 for s in seeds)
    view = {r[0]: r[1:] for r in _rows(workdir, "SELECT * FROM item_scores")}
    assert set(view) == set(files)
    for source, (desync, clap, speech, music, best_of, chosen_generation) in view.items():
        assert (desync, clap, speech, music) == pytest.approx(tuple(files[source]["scores"][k] for k in SCORES))
        assert (best_of, chosen_generation) == (3, 0)


def test_reprocess_by_score_draws_new_candidates(best_of_3, videos, monkeypatch):
    import functools

    import flows.pipeline
    from flows.reprocess import reprocess_failed
    from tasks.records import RecordWriter

    # The driver buffers lineage rows for up to 2 s. When the qc stage's rows and the publish stage's rows
    # of an item waited in the same buffer, publish's metrics replaced qc's scores (a full-suite run, with
    # warm models, was fast enough). Holding every row until the flow flushes makes that happen each time.
    monkeypatch.setattr(flows.pipeline, "RecordWriter", functools.partial(RecordWriter, max_delay_s=math.inf))
    workdir, first = best_of_3
    nothing = reprocess_failed(workdir=str(workdir), stage="qc", where="desync_sec > 5")
    assert nothing["items"] == []
    with pytest.raises(ScoreFilterError):
        reprocess_failed(workdir=str(workdir), stage="synthesis", where="desync_sec > 0.4")

    # The first run's settings (best-of 3) come back with it: each item draws 3 new candidates.
    again = reprocess_failed(workdir=str(workdir), stage="qc", where="desync_sec >= 0")
    assert again["counts"] == {"succeeded": 2} and again["cached"] == 0
    old = {s: r["seed"] for s, r in _metrics_files(first).items()}
    new = _metrics_files(again)
    for source, record in new.items():
        assert record["generation"] == 1 and record["seed"] != old[source] and len(record["candidates"]) == 3
    view = {r[0]: r[1] for r in _rows(workdir, "SELECT source, chosen_generation FROM item_scores")}
    assert set(view.values()) == {1}


def test_buffered_rows_keep_every_stages_metrics_of_an_item(tmp_path):
    from storage import Lineage
    from tasks.records import LineageRecords, RecordWriter

    lin = Lineage.open(tmp_path / "lineage.duckdb")
    try:
        lin.start_run("r1", input="/data", params={})
        writer = RecordWriter(lin, "r1", max_delay_s=math.inf)
        for metrics in ({"best_of": 3, "chosen_generation": 1}, {"final_lufs": -23.0}):  # qc, then publish
            records = LineageRecords("r1")
            records.metrics["item"] = metrics
            writer.add(records)
        writer.flush()
        stored = {r["name"]: r["value"] for r in lin.execute("SELECT name, value FROM metrics WHERE item_id = 'item'")}
    finally:
        lin.close()
    assert stored == {"best_of": 3, "chosen_generation": 1, "final_lufs": -23.0}


def test_unwanted_speech_is_rejected_unless_the_cot_asks_for_it(videos, tmp_path, prefect_harness):
    import csv
    import shutil

    from flows.dub import dub_dataset

    for name in ("walk.mp4", "spin.mp4"):
        shutil.copy(videos / name, tmp_path / name)  # a manifest's videos sit under its folder (input root)
    manifest = tmp_path / "manifest.csv"
    with manifest.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["video", "caption", "caption_cot"])
        writer.writeheader()
        writer.writerow({"video": "walk.mp4", "caption": "", "caption_cot": "A man is talking."})
        writer.writerow({"video": "spin.mp4", "caption": "", "caption_cot": "Waves crash on rocks."})
    # The tiny tagger's P(speech) is ~0.05: a limit of 0.01 makes every unasked-for speech a failure.
    result = dub_dataset(input=str(manifest), settings=_settings(tmp_path / "w", max_speech_prob=0.01))
    status = {Path(i["source"]).name: i for i in result["items"]}
    assert status["walk.mp4"]["status"] == "succeeded"
    assert status["spin.mp4"]["status"] == "rejected"
    assert "unwanted speech" in status["spin.mp4"]["error"]
    scores = {Path(r[0]).name: r[1] for r in _rows(tmp_path / "w", "SELECT source, speech FROM item_scores")}
    assert scores["spin.mp4"] > 0.01  # rejected items keep their scores in the view too


def test_demo_message_shows_scores_and_the_winner():
    from flows.demo_backend import listening_lines

    item = {
        "seed": 22,
        "scores": {"desync_sec": 0.2, "clap": 0.31, "speech": 0.04, "music": None},
        "candidates": [
            {"seed": 11, "scores": {"desync_sec": 0.6, "clap": 0.40}},
            {"seed": 22, "scores": {"desync_sec": 0.2, "clap": 0.31}},
        ],
    }
    lines = listening_lines(item)
    assert "DeSync 0.20 s" in lines[0] and "P(music) n/a" in lines[0]
    assert "Best of 2" in lines[1] and "**#2 seed 22: DeSync 0.20 s, CLAP 0.310 (won)**" in lines[1]
    assert "#1 seed 11" in lines[1] and "(won)" not in lines[1].split(";")[0]
    assert listening_lines({"scores": {}}) == []
