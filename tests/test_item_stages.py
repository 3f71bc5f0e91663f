"""An item's next stage and the stage it failed at are kept apart: a failure is reported, and recorded in
lineage, at the stage that failed, while the items that got through move on."""

from __future__ import annotations

from pathlib import Path

from media import make_video, truncate

from flows.report import report_markdown
from storage import Lineage, Stage
from tasks.config import PipelineSettings
from tasks.cot import run_cot
from tasks.executors import Batch
from tasks.features import run_features
from tasks.handles import Handles
from tasks.ingest import run_ingest
from tasks.items import WorkItem
from tasks.outcomes import state_row


def test_an_item_failed_at_features_is_reported_at_features_not_at_the_next_stage(tmp_path):
    settings = PipelineSettings(workdir=str(tmp_path), preset="tiny", steps=2, max_duration_sec=2.0)
    handles = Handles()
    videos = [make_video(tmp_path / name, duration=1.0) for name in ("good.mp4", "bad.mp4")]
    items = [WorkItem(source=str(video), position=n) for n, video in enumerate(videos)]
    for run_stage in (run_ingest, run_cot):
        items = run_stage(handles, Batch("run-1", items, settings, {})).items
    assert [(i.status, i.next_stage) for i in items] == [("pending", Stage.FEATURES)] * 2
    # The file breaks after ingest probed it: only the decoding in the features stage can fail on it.
    bad = Path(items[1].local_path)
    truncate(bad, bad, keep_fraction=0.2)

    result = run_features(handles, Batch("run-1", items, settings, {}))

    good, broken = result.items
    assert (good.status, good.next_stage, good.failed_at) == ("pending", Stage.SYNTHESIS, None)
    assert (broken.status, broken.failed_at, broken.next_stage) == ("failed", Stage.FEATURES, Stage.FEATURES)
    attempts = {a["item_id"]: (a["stage"], a["status"]) for a in result.records.attempts}
    assert attempts[broken.item_id] == ("features", "failed")
    assert (state_row(good)["stage"], state_row(broken)["stage"]) == ("synthesis", "features")
    # The same after both settle, as the run's last stages leave them.
    good.next_stage, good.status = Stage.PUBLISH, "succeeded"
    assert [state_row(i)["stage"] for i in (good, broken)] == ["publish", "features"]

    with Lineage.open(tmp_path / "lineage.duckdb") as lin:
        lin.start_run("run-1", input=str(tmp_path), params={})
        lin.set_item_states("run-1", [state_row(i) for i in (good, broken)])
        recorded = {r["source"]: (r["status"], r["stage"]) for r in lin.run_states("run-1")}
    assert recorded == {good.source: ("succeeded", "publish"), broken.source: ("failed", "features")}
    report = report_markdown("run-1", [good, broken], preset="tiny", outputs=lambda item: "")
    assert "**failed** at features" in report, report


def test_a_failed_regeneration_is_reported_at_synthesis_not_at_the_stage_the_item_had_reached():
    """QC asked for a new generation of an item that had reached qc; synthesis then failed on it."""
    item = WorkItem(source="/data/a.mp4", position=0, item_id="i1", next_stage=Stage.QC, generation=1)
    item.fail(Stage.SYNTHESIS, "generation failed: out of memory")
    assert (item.failed_at, item.next_stage) == (Stage.SYNTHESIS, Stage.QC)
    duplicate = WorkItem(source="/data/copy_of_a.mp4", position=1)
    duplicate.adopt_outcome(item)
    assert [state_row(i)["stage"] for i in (item, duplicate)] == ["synthesis", "synthesis"]
    report = report_markdown("run-1", [item, duplicate], preset="tiny", outputs=lambda i: "")
    assert report.count("**failed** at synthesis") == 2, report
    rejected = WorkItem(source="/data/b.mp4", position=2, next_stage=Stage.QC)
    rejected.reject(["silence ratio 0.98 > 0.9"])
    assert (rejected.failed_at, state_row(rejected)["stage"]) == (Stage.QC, "qc")
