"""The run report shown in the Prefect UI: escaped user text, full reasons, links a browser can open;
and `thinksound serve`, the read-only server that makes local outputs clickable."""

from __future__ import annotations

import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from markdown_it import MarkdownIt
from s3_server import new_bucket_name, s3_server  # noqa: F401 - the fixture is used by name

from storage import LocalStore, S3Store, Stage
from tasks.config import PipelineSettings
from tasks.items import WorkItem

THINKSOUND = str(Path(sys.executable).with_name("thinksound"))
CRAFTED = "clip `[x](http://evil.example)` **bold** <b>|.mp4"


def _succeeded(store, source: str) -> WorkItem:
    from tasks.cache_keys import output_keys

    item = WorkItem(source=source, position=0, item_id="i1", result_key="ab" + "0" * 30, video_codec="h264")
    item.status, item.next_stage = "succeeded", Stage.PUBLISH
    keys = output_keys(item)
    for kind, key in keys.items():
        uri = store.put_bytes(key, f"{kind} bytes".encode())
        setattr(item, f"{kind}_uri", uri)
    return item


def _failed(source: str, reason: str) -> WorkItem:
    item = WorkItem(source=source, position=1)
    item.fail(Stage.INGEST, reason)
    return item


def _html(markdown: str) -> str:
    return MarkdownIt("commonmark").enable("table").render(markdown)


def _report(items, store, settings) -> str:
    from flows.report import outputs_cell, report_markdown

    return report_markdown("run-1", items, preset="tiny", outputs=lambda i: outputs_cell(i, store, settings))


def test_crafted_file_names_render_as_text_and_reasons_in_full(tmp_path):
    store = LocalStore(root=tmp_path / "artifacts")
    settings = PipelineSettings(workdir=str(tmp_path))
    reason = "not a video: " + " ".join(f"word{n}" for n in range(120)) + " | [y](http://evil.example)"
    markdown = _report([_succeeded(store, f"/data/{CRAFTED}"), _failed(f"/data/2{CRAFTED}", reason)], store, settings)
    html = _html(markdown)
    assert "evil.example\"" not in html and "<a " not in html, html
    assert "<b>" not in html and "<strong>bold" not in html
    assert html.count("clip `[x](http://evil.example)` **bold** &lt;b&gt;|.mp4") == 2, html
    assert " ".join(f"word{n}" for n in range(120)) in html, "the reason is shown whole"
    assert "<td>" in html, "a crafted name must not break the outputs table"


def test_local_outputs_are_copyable_paths_not_file_links(tmp_path):
    store = LocalStore(root=tmp_path / "artifacts")
    item = _succeeded(store, "/data/clip.mp4")
    markdown = _report([item], store, PipelineSettings(workdir=str(tmp_path)))
    assert "file://" not in markdown
    assert f"{Path(item.metrics_uri.removeprefix('file://')).parent}/" in markdown

    served = PipelineSettings(workdir=str(tmp_path), artifact_base_url="http://127.0.0.1:8765/")
    html = _html(_report([item], store, served))
    assert f'href="http://127.0.0.1:8765/outputs/ab/{item.result_key}/audio.wav"' in html


def test_s3_outputs_are_presigned_http_links_that_expire(s3_server):  # noqa: F811 - pytest fixture argument
    store = S3Store(bucket=new_bucket_name(), prefix="runs", config=s3_server.config())
    item = _succeeded(store, "/data/clip.mp4")
    settings = PipelineSettings(workdir="/tmp/unused", link_expiry_s=600)
    html = _html(_report([item], store, settings))
    links = [part.split('"')[0] for part in html.split('href="')[1:]]
    assert len(links) == 3 and all(link.startswith("http://127.0.0.1:") for link in links), links
    assert all("X-Amz-Expires=600" in link.replace("&amp;", "&") for link in links)
    with urllib.request.urlopen(links[0].replace("&amp;", "&"), timeout=30) as response:
        assert response.read() == b"audio bytes"


@pytest.fixture
def served(tmp_path):
    root = tmp_path / "artifacts"
    (root / "outputs").mkdir(parents=True)
    (root / "outputs" / "audio.wav").write_bytes(b"RIFF")
    (tmp_path / "lineage.duckdb").write_bytes(b"private")
    (root / "outputs" / "escape").symlink_to(tmp_path / "lineage.duckdb")
    process = subprocess.Popen(
        [THINKSOUND, "serve", "--workdir", str(tmp_path), "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    line = process.stdout.readline()
    try:
        assert "read-only on http://127.0.0.1:" in line, line + process.stdout.read()
        yield line.split(" on ", 1)[1].strip()
    finally:
        process.terminate()
        process.wait(timeout=30)


def _status(url: str, method: str = "GET") -> int:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method=method, data=b"x" if method == "PUT" else None),
                                    timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_serve_is_read_only_and_stays_inside_the_artifact_folder(served):
    with urllib.request.urlopen(served + "outputs/audio.wav", timeout=30) as response:
        assert response.read() == b"RIFF"
    assert _status(served + "outputs/audio.wav", "PUT") == 501
    assert _status(served + "outputs/escape") == 404
    assert _status(served + "../lineage.duckdb") == 404
