"""The web demo in headless Chromium: upload, generate on the tiny preset, watch the result play.

Playwright drives the Debian Chromium at /usr/bin/chromium; it never downloads a browser of its own.
Set THINKSOUND_UPDATE_SCREENSHOT=1 to also write the README's screenshot, docs/demo.png.
"""

from __future__ import annotations

import os
import shutil
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
