"""The web demo in headless Chromium: upload, generate on the tiny preset, watch the result play.

Playwright drives the Debian Chromium at /usr/bin/chromium; it never downloads a browser of its own.
Set THINKSOUND_UPDATE_SCREENSHOT=1 to also write the README's screenshot, docs/demo.png.
"""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path

import pytest
from demo_helpers import start_demo
from media import make_video

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
REPO = Path(__file__).resolve().parents[1]

pytestmark = [pytest.mark.browser, pytest.mark.usefixtures("prefect_harness")]

# Resolves once the element can report its length, then plays it muted (autoplay rules allow that)
# and reports how far playback got.
PLAY_MEDIA = """async (selector) => {
    const media = document.querySelector(selector);
    if (media.readyState < 1) {
        await new Promise((resolve, reject) => {
            media.addEventListener('loadedmetadata', resolve, {once: true});
            media.addEventListener('error', () => reject(new Error('media error ' + media.error?.code)), {once: true});
        });
    }
    media.muted = true;
    await media.play();
    await new Promise((resolve) => setTimeout(resolve, 600));
    media.pause();
    return {duration: media.duration, played: media.currentTime};
}"""


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is absent: install Debian's chromium (`bash scripts/setup.sh --test` does)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        yield chromium
        chromium.close()


def test_upload_generate_and_play_in_chromium(browser, tmp_path):
    from flows.demo_backend import TINY_NOTICE

    demo = start_demo(tmp_path / "work", max_duration_sec=30.0, max_upload_mb=200.0)
    video = make_video(tmp_path / "surf.mp4", duration=3.0, size="320x180")
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    outside = []
    page.on("request", lambda r: outside.append(r.url) if not r.url.startswith((demo.url, "data:", "blob:")) else None)
    try:
        page.goto(demo.url)
        page.get_by_text(TINY_NOTICE).first.wait_for(state="visible")
        page.set_input_files("#video-input input[type=file]", str(video))
        page.locator("#video-input video").wait_for(state="attached", timeout=30_000)
        page.get_by_label("Caption (optional)").fill("waves breaking on a pebble beach")
        page.click("#generate")

        page.locator("#dubbed-video video").wait_for(state="attached", timeout=180_000)
        page.locator("#status").get_by_text("Done").wait_for(timeout=30_000)
        result = page.evaluate(PLAY_MEDIA, "#dubbed-video video")
        assert result["duration"] == pytest.approx(3.0, abs=0.1), result
        assert result["played"] > 0, f"the dubbed video did not play: {result}"
        assert "pebble beach" in page.locator("#cot textarea").input_value()
        assert page.locator("#status").get_by_text(TINY_NOTICE).is_visible()

        page.evaluate("() => document.querySelector('#dubbed-video video').currentTime = 1.5")
        screenshot = tmp_path / "demo.png"
        page.screenshot(path=str(screenshot), full_page=True)
        assert screenshot.stat().st_size > 10_000
        if os.environ.get("THINKSOUND_UPDATE_SCREENSHOT") == "1":
            (REPO / "docs").mkdir(exist_ok=True)
            shutil.copyfile(screenshot, REPO / "docs" / "demo.png")
    finally:
        page.close()
        demo.app.close()
    assert outside == [], f"the page reached beyond the app: {outside}"


def test_a_cot_edited_during_a_generation_is_kept_and_generated_next(browser, tmp_path):
    import duckdb

    from flows.report import stage_listeners

    synthesis_started = threading.Event()

    def on_stage(stage: str) -> None:
        if stage == "synthesis":
            synthesis_started.set()

    stage_listeners.append(on_stage)
    demo = start_demo(tmp_path / "work", max_duration_sec=30.0, max_upload_mb=200.0)
    # Long enough that the edit below lands while the first generation runs.
    video = make_video(tmp_path / "surf.mp4", duration=8.0, size="160x90")
    edited = "Start with heavy surf on pebbles. Add a gull calling once. Avoid voices and music."
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    try:
        page.goto(demo.url)
        page.set_input_files("#video-input input[type=file]", str(video))
        page.locator("#video-input video").wait_for(state="attached", timeout=30_000)
        page.get_by_label("Caption (optional)").fill("waves breaking on a pebble beach")
        page.click("#generate")
        assert synthesis_started.wait(timeout=180), "the first generation never reached synthesis"
        page.locator("#cot textarea").fill(edited)
        page.click("#generate")
        assert page.locator("#status").get_by_text("Done").count() == 0, "the first generation had finished"

        # The second click ran next, with the edit, and the first one's result did not overwrite it.
        page.locator("#status code", has_text="provided").wait_for(timeout=300_000)
        assert page.locator("#cot textarea").input_value() == edited
    finally:
        stage_listeners.remove(on_stage)
        page.close()
        demo.app.close()
    with duckdb.connect(str(demo.workdir / "lineage.duckdb"), read_only=True) as con:
        cots = con.execute("SELECT cot_backend, caption_cot FROM (SELECT backend AS cot_backend, caption_cot, "
                           "created_at FROM cot) ORDER BY created_at").fetchall()
    assert [backend for backend, _ in cots] == ["template", "provided"] and cots[1][1] == edited
