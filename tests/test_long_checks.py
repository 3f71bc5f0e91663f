"""Per-window CoT parsing and the seam / window checks of a joined track, on known signals."""

from __future__ import annotations

import numpy as np
import pytest

from tasks.windows import _cot_for, parse_window_cots
from thinksound.seams import seam_jumps_db, window_silence_ratios

SR = 8000


def test_window_cots_from_a_manifest_json_list() -> None:
    assert parse_window_cots("Start with rain. Avoid music.") is None
    assert parse_window_cots(None) is None
    entries = parse_window_cots(
        '[{"start": 0, "end": 6, "cot": " rain "}, {"start": 6, "end": 12, "cot": "bell"}]'
    )
    assert entries == [{"start": 0.0, "end": 6.0, "cot": "rain"}, {"start": 6.0, "end": 12.0, "cot": "bell"}]
    # Each window takes the entry it overlaps most; one that overlaps none takes the nearest.
    assert _cot_for(0.0, 9.0, entries) == "rain" and _cot_for(3.0, 12.0, entries) == "bell"
    assert _cot_for(20.0, 29.0, entries) == "bell"
    for bad in ("[", "[]", '[{"start": 0, "cot": "x"}]', '[{"start": 5, "end": 2, "cot": "x"}]'):
        with pytest.raises(ValueError, match="caption_cot"):
            parse_window_cots(bad)


def test_seam_jump_is_the_level_step_across_the_fade() -> None:
    rng = np.random.default_rng(0)
    audio = rng.standard_normal((2, 10 * SR)) * 0.01
    audio[:, 5 * SR :] *= 10  # +20 dB from 5 s on
    jumps = seam_jumps_db(audio, SR, [(2.0, 2.5), (4.8, 5.2)])
    assert abs(jumps[0]) < 1.0
    assert jumps[1] == pytest.approx(20.0, abs=1.0)


def test_a_silent_window_is_found_among_loud_ones() -> None:
    audio = np.random.default_rng(1).standard_normal((2, 9 * SR)) * 0.1
    audio[:, 3 * SR : 6 * SR] = 0.0
    ratios = window_silence_ratios(audio, SR, [(0, 3), (3, 6), (6, 9)], threshold_dbfs=-60)
    assert ratios[0] == ratios[2] == 0.0 and ratios[1] == 1.0


def test_a_local_failure_redraws_only_its_windows() -> None:
    from tasks.cache_keys import item_seed
    from tasks.items import WorkItem
    from tasks.windows import assign_seeds, redraw_regenerated_windows

    item = WorkItem(source="v.mp4", position=0, item_id="abc")
    item.windows = [{"index": k, "generation": 0, "failed": False} for k in range(4)]
    first = assign_seeds(item, lambda g: item_seed(0, "abc", g))
    item.windows[2]["failed"] = True
    item.generation = 1
    redraw_regenerated_windows(item)
    second = assign_seeds(item, lambda g: item_seed(0, "abc", g))
    assert [w["generation"] for w in item.windows] == [0, 0, 1, 0]
    assert [a == b for a, b in zip(first, second, strict=True)] == [True, True, False, True]
    # A failure no window explains redraws every window.
    item.generation = 2
    redraw_regenerated_windows(item)
    assert [w["generation"] for w in item.windows] == [2, 2, 2, 2]


def test_qc_marks_the_windows_behind_a_loud_seam_or_a_silent_window(tmp_path) -> None:
    from tasks.config import PipelineSettings
    from tasks.items import WorkItem
    from tasks.quality import _check_windows
    from tasks.windows import item_plan

    settings = PipelineSettings(workdir=str(tmp_path))
    item = WorkItem(source="v.mp4", position=0, item_id="x", duration_sec=30.0)
    plan = item_plan(item, settings)
    assert len(plan.windows) == 4
    item.windows = [{"index": w.index, "generation": 0} for w in plan.windows]
    sr = 44_100
    audio = np.random.default_rng(2).standard_normal((2, 30 * sr)) * 0.05
    audio[:, round(plan.seam_sec(2) * sr) :] *= 10  # seam 2 jumps by +20 dB
    metrics: dict = {}
    reasons = _check_windows(item, audio, metrics, settings)
    assert [w["failed"] for w in item.windows] == [False, False, False, True]
    assert len(reasons) == 1 and reasons[0].startswith("seam 2")
    assert metrics["max_seam_jump_db"] == pytest.approx(20.0, abs=1.5)
    assert [s["index"] for s in item.seams] == [0, 1, 2] and abs(item.seams[0]["level_jump_db"]) < 1.5
    # A silent window is found too.
    audio[:, round(plan.seam_sec(0) * sr) : round(plan.seam_sec(1) * sr)] = 0.0
    _check_windows(item, audio, metrics, settings)
    assert item.windows[1]["failed"] and item.windows[3]["failed"] and not item.windows[0]["failed"]


def test_lineage_cot_rows_are_one_per_window(tmp_path) -> None:
    from tasks.config import PipelineSettings
    from tasks.items import WorkItem
    from tasks.outcomes import cot_rows
    from tasks.windows import plan_item_windows

    settings = PipelineSettings(workdir=str(tmp_path))
    record = {"backend": "manifest", "caption_cot": "Rain on a roof."}
    short = WorkItem(source="s.mp4", position=0, item_id="s", duration_sec=5.0, content_hash="h1")
    short.caption_cot, short.cot_record = "Rain on a roof.", dict(record)
    # Before its windows are laid out, one row for the whole segment.
    (whole,) = cot_rows("r", short)
    assert whole.window_index is None and whole.caption_cot == "Rain on a roof."
    # A clip no longer than one window: one row, window 0 over the whole clip, the same CoT.
    plan_item_windows(short, settings)
    (row,) = cot_rows("r", short)
    assert (row.window_index, row.window_start_sec, row.window_end_sec) == (0, 0.0, 5.0)
    assert (row.caption_cot, row.backend, row.source) == ("Rain on a roof.", "manifest", "s.mp4")
    long = WorkItem(source="l.mp4", position=0, item_id="l", duration_sec=30.0, content_hash="h2")
    long.window_cots = [{"start": 0.0, "end": 15.0, "cot": "rain"}, {"start": 15.0, "end": 30.0, "cot": "bell"}]
    long.cot_record = dict(record)
    plan_item_windows(long, settings)
    rows = cot_rows("r", long)
    assert [r.window_index for r in rows] == [0, 1, 2, 3]
    assert [r.caption_cot for r in rows] == ["rain", "rain", "bell", "bell"]
    assert rows[0].window_start_sec == 0.0 and rows[-1].window_end_sec == 30.0
    assert all(a.window_end_sec > b.window_start_sec for a, b in zip(rows[:-1], rows[1:], strict=True))
