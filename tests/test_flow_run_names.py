"""Flow runs are named after the lineage run id and what they work on, so runs tell apart in the UI."""

from __future__ import annotations

import pytest
from media import make_video

pytestmark = pytest.mark.usefixtures("prefect_harness")


def _flow_run_names() -> dict[str, str]:
    from prefect import get_client

    with get_client(sync_client=True) as client:
        return {str(run.id): run.name for run in client.read_flow_runs()}


def test_a_dataset_run_without_a_run_id_is_renamed_once_it_has_one(tmp_path):
    from flows.dub import dub_dataset
    from tasks.config import PipelineSettings

    videos = tmp_path / "nightly-incoming"
    videos.mkdir()
    make_video(videos / "a.mp4", duration=1.0, size="32x32")
    state = dub_dataset(
        input=str(videos), settings=PipelineSettings(workdir=str(tmp_path / "w"), steps=2), return_state=True
    )
    run_id = state.result()["run_id"]
    assert _flow_run_names()[str(state.state_details.flow_run_id)] == f"{run_id} nightly-incoming"


def test_a_demo_run_is_named_after_the_uploaded_file(tmp_path):
    from flows.dub import dub_video
    from tasks.config import PipelineSettings

    upload = make_video(tmp_path / "0f3a9c.mp4", duration=1.0, size="32x32")
    state = dub_video(
        video=str(upload), settings=PipelineSettings(workdir=str(tmp_path / "w"), steps=2),
        display_name="holiday at the beach.mp4", return_state=True,
    )
    name = _flow_run_names()[str(state.state_details.flow_run_id)]
    assert name == f"{state.result()['run_id']} holiday at the beach.mp4"
