"""The web demo through Gradio's own Python client: real app, real flow, real lineage."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import psutil
import pytest
import soundfile
from demo_helpers import free_port, item_status, start_demo, wait_for_http
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from media import make_video
from PIL import Image

pytestmark = pytest.mark.usefixtures("prefect_harness")

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    running = start_demo(tmp_path_factory.mktemp("demo-work"), max_duration_sec=3.0, max_upload_mb=0.2)
    yield running
    running.app.close()


@pytest.fixture(scope="module")
def client(demo, tmp_path_factory):
    return Client(demo.url, download_files=str(tmp_path_factory.mktemp("downloads")), verbose=False)


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("demo-media")
    make_video(folder / "clip.mp4", duration=2.0)
    make_video(folder / "long.mp4", duration=4.0)
    make_video(folder / "blink.mp4", duration=0.3)
    (folder / "notes.mp4").write_text("these are meeting notes, not a video\n")
    (folder / "huge.mp4").write_bytes(np.random.default_rng(0).bytes(300_000))
    return folder


def _generate(client: Client, video: Path, *, caption: str = "", cot: str = "", seed: int = 0, steps: int = 8):
    """Submit through the queue, as the page does; returns the outputs and the progress texts seen."""
    job = client.submit(handle_file(str(video)), caption, cot, seed, steps, 5.0, "fp32", api_name="/generate")
    outputs = job.result(timeout=300)
    seen = []
    while not job.communicator.updates.empty():
        update = job.communicator.updates.get_nowait()
        for unit in getattr(update, "progress_data", None) or []:
            if unit.desc and (not seen or seen[-1] != unit.desc):
                seen.append(unit.desc)
    return outputs, seen


def test_a_video_is_dubbed_with_stage_progress_and_recorded_in_lineage(demo, client, media):
    from flows.demo_backend import STAGE_LABELS, TINY_NOTICE

    (status, video, audio, cot, spectrogram, metrics), progress = _generate(
        client, media / "clip.mp4", caption="waves on a pebble beach"
    )
    assert "Done" in status and TINY_NOTICE in status
    assert metrics["status"] == "succeeded" and metrics["cot_backend"] == "template"
    assert "waves on a pebble beach" in cot, "the CoT written from the caption is shown for editing"

    data, rate = soundfile.read(audio, always_2d=True)
    assert rate == 44100 and data.shape[1] == 2
    assert abs(len(data) / rate - 2.0) < 0.05 and np.abs(data).max() > 0
    assert Path(video).stat().st_size > 0
    assert Image.open(spectrogram).size[0] >= 400

    stages = [desc.split(":")[0] for desc in progress if desc.split(":")[0] in STAGE_LABELS]
    order = list(STAGE_LABELS)
    assert {"features", "synthesis", "publish"} <= set(stages), progress
    assert stages == sorted(stages, key=order.index), f"stages out of order: {progress}"

    uploads = list((demo.workdir / "uploads").iterdir())
    assert len(uploads) == 1 and uploads[0].read_bytes() == (media / "clip.mp4").read_bytes()
    row = item_status(demo.workdir, uploads[0])
    assert row is not None and row["status"] == "succeeded" and row["error"] is None
    assert row["item_id"] == metrics["item_id"]
    assert Path(row["audio_uri"].removeprefix("file://")).read_bytes() == Path(audio).read_bytes()


def test_an_edited_cot_regenerates_with_the_models_kept_warm(demo, client, media):
    from tasks.handles import process_handles

    deadline = time.monotonic() + 120
    while not demo.backend.is_warm and time.monotonic() < deadline:
        time.sleep(0.2)
    loads = process_handles().model_loads

    edited = "Gentle waves roll over pebbles; a gull calls once in the distance."
    started = time.perf_counter()
    (status, _, audio, cot, _, metrics), _ = _generate(client, media / "clip.mp4", cot=edited, seed=3)
    latency = time.perf_counter() - started
    print(f"warm demo request (tiny, 2 s video, 8 steps): {latency:.2f} s")

    assert cot == edited and metrics["cot_backend"] == "provided"
    assert process_handles().model_loads == loads
    import duckdb

    with duckdb.connect(str(demo.workdir / "lineage.duckdb"), read_only=True) as con:
        recorded = con.execute("SELECT caption_cot, cot_backend FROM item_cot").fetchall()
        runs = con.execute("SELECT count(*) FROM runs WHERE status = 'completed'").fetchone()[0]
    assert (edited, "provided") in recorded
    assert runs >= 2, "each demo generation is its own lineage run"


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("notes.mp4", "not a video"),
        ("long.mp4", "too long: 4.0"),
        ("blink.mp4", "too short"),
    ],
)
def test_bad_input_gets_a_clear_message(client, media, name, message):
    with pytest.raises(AppError) as caught:
        _generate(client, media / name)
    text = str(caught.value)
    assert message in text and "Traceback" not in text


def test_too_large_uploads_are_refused(demo, client, media):
    with pytest.raises(ValueError, match="maximum file size"):
        _generate(client, media / "huge.mp4")
    with (media / "huge.mp4").open("rb") as handle:
        response = httpx.post(f"{demo.url}gradio_api/upload", files={"files": ("huge.mp4", handle)})
    assert response.status_code == 413 and "maximum allowed size" in response.text


def test_the_backend_checks_size_and_content_itself(tmp_path, media):
    from flows.demo_input import InputRejected, UploadLimits, check_video
    from tasks.uploads import store_upload

    with pytest.raises(InputRejected, match="too large: 0.3 MB; the limit is 0.1 MB"):
        check_video(media / "huge.mp4", UploadLimits(max_upload_mb=0.1))
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(InputRejected, match="empty"):
        check_video(empty, UploadLimits())
    assert check_video(media / "clip.mp4", UploadLimits()).duration_sec == pytest.approx(2.0, abs=0.05)
    first = store_upload(media / "clip.mp4", tmp_path / "uploads")
    renamed = tmp_path / "renamed.MP4"
    renamed.write_bytes((media / "clip.mp4").read_bytes())
    assert store_upload(renamed, tmp_path / "uploads") == first, "same bytes, same stored source"


def test_a_rejected_item_is_shown_with_its_reason(tmp_path, media):
    from tasks.config import QualitySettings

    # No audio is that loud, so the quality checks reject every generation.
    strict = start_demo(tmp_path / "work", quality=QualitySettings(min_loudness_lufs=10.0))
    try:
        client = Client(strict.url, download_files=str(tmp_path / "downloads"), verbose=False)
        (status, video, audio, _, spectrogram, metrics), _ = _generate(client, media / "clip.mp4")
    finally:
        strict.app.close()
    assert "Rejected by the quality checks" in status and "too quiet" in status
    assert video is None and audio is None and spectrogram is None
    assert metrics["status"] == "rejected"
    row = item_status(strict.workdir, next((strict.workdir / "uploads").iterdir()))
    assert row["status"] == "rejected" and row["error"]


def test_the_command_serves_on_localhost_within_120_s(tmp_path, media):
    """`thinksound demo` as a user starts it: its own embedded Prefect API, state in the work directory."""
    port = free_port()
    workdir = tmp_path / "work"
    env = {k: v for k, v in os.environ.items() if k not in {"PREFECT_HOME", "PREFECT_API_URL"}}
    command = [str(Path(sys.executable).with_name("thinksound")), "demo", "--preset", "tiny", "--port", str(port),
               "--workdir", str(workdir)]
    log = (tmp_path / "demo.log").open("wb")
    server = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT,
                              start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}/"
        seconds = wait_for_http(url, timeout_s=120, alive=lambda: server.poll() is None)
        print(f"thinksound demo answered after {seconds:.1f} s")
        listening = {c.laddr.ip for c in psutil.Process(server.pid).net_connections() if c.laddr.port == port}
        assert listening == {"127.0.0.1"}, listening
        assert "random weights: this audio is noise" in httpx.get(f"{url}config").text

        client = Client(url, download_files=str(tmp_path / "downloads"), verbose=False)
        (status, video, *_), _ = _generate(client, media / "clip.mp4", steps=2)
        assert "Done" in status and Path(video).stat().st_size > 0
        assert (workdir / "prefect").is_dir()
        assert item_status(workdir, next((workdir / "uploads").iterdir()))["status"] == "succeeded"
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=10)
        log.close()


def test_an_empty_cot_is_written_by_the_cot_server_and_shown_for_editing(tmp_path, media):
    """An OpenAI-compatible endpoint with a scripted answer stands in for vLLM (test_cot_vllm runs the real one)."""
    from vllm_server import ScriptedEndpoint, completion

    from tasks.config import CotSettings

    answer = {"caption": "surf on pebbles", "cot": "Start with waves washing over pebbles. Avoid music and voices."}
    endpoint = ScriptedEndpoint(script=lambda body, index: completion(json.dumps(answer)))
    with endpoint.serving() as cot_url:
        demo = start_demo(tmp_path / "work", cot=CotSettings(url=cot_url, model="scripted"))
        try:
            client = Client(demo.url, download_files=str(tmp_path / "downloads"), verbose=False)
            (status, _, _, written, _, metrics), _ = _generate(client, media / "clip.mp4")
            edited = written + " A gull calls once."
            (_, _, _, used, _, regenerated), _ = _generate(client, media / "clip.mp4", cot=edited)
        finally:
            demo.app.close()
    assert "Done" in status and written == answer["cot"]
    assert metrics["cot_backend"] == "vllm" and "vllm" in status
    assert used == edited and regenerated["cot_backend"] == "provided"
    assert len(endpoint.bodies) == 1, "a provided CoT never asks the server"


def test_a_reused_result_shows_its_metrics_published_audio_first(client, media):
    from flows.demo_backend import GENERATED_GROUP, PUBLISHED_GROUP

    first, _ = _generate(client, media / "clip.mp4", caption="a kettle whistles", seed=11, steps=2)
    again, _ = _generate(client, media / "clip.mp4", caption="a kettle whistles", seed=11, steps=2)
    fresh, reused = first[5], again[5]
    assert not fresh["reused_earlier_result"] and reused["reused_earlier_result"]
    assert "reused" in again[0]
    for metrics in (fresh, reused):
        groups = [key for key in metrics if isinstance(metrics[key], dict)]
        assert groups == [PUBLISHED_GROUP, GENERATED_GROUP], metrics
        # Normalised to the loudness target, the published audio is well below full scale.
        assert metrics[PUBLISHED_GROUP]["peak_dbfs"] < -1.0
    assert reused[PUBLISHED_GROUP] == fresh[PUBLISHED_GROUP]
