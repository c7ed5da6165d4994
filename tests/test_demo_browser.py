"""The Gradio demo in Debian's Chromium, driven by Playwright: open it, run TTS, and check that an
audio element received audio; a screenshot is saved to the artifacts folder.

Needs ``apt-get install chromium`` (``/usr/bin/chromium``; Playwright never downloads a browser) and,
for the streamed-playback case, ``ffmpeg`` (Gradio encodes streamed audio with it).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from playwright.sync_api import sync_playwright

from mimo_audio import MimoAudio
from mimo_audio.serve import free_port
from mimo_audio.ui import build_demo

from conftest import PARITY_DIR, ROOT

CHROMIUM = os.environ.get("MIMO_AUDIO_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(os.environ.get("MIMO_AUDIO_ARTIFACTS", ROOT / "tmp" / "artifacts"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Every <audio> element, shadow roots included (Gradio's waveform player keeps its own in one).
AUDIO_ELEMENTS = """() => { const out = [];
    const walk = root => root.querySelectorAll('*').forEach(el => {
        if (el.tagName === 'AUDIO') out.push({src: el.src || '', ready: el.readyState, duration: el.duration || 0});
        if (el.shadowRoot) walk(el.shadowRoot); });
    walk(document); return out; }"""
HAS_AUDIO = f"() => ({AUDIO_ELEMENTS})().some(a => a.src && a.ready >= 1 && a.duration > 0)"


pytestmark = pytest.mark.filterwarnings("ignore::Warning:gradio")  # gradio's own pandas deprecations


@pytest.fixture(scope="module")
def model() -> MimoAudio:
    return MimoAudio.from_pretrained(
        PARITY_DIR / "model",
        PARITY_DIR / "tokenizer",
        device="cpu",
        progress=False,
        max_batch=1,
        max_len=1024,
    )


@pytest.fixture(scope="module")
def browser():
    assert Path(CHROMIUM).is_file(), f"{CHROMIUM} not found: apt-get install chromium"
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_tts_tab_plays_audio(model, browser, stream):
    if stream:
        assert shutil.which("ffmpeg"), "streamed playback needs ffmpeg: apt-get install ffmpeg"
    app = build_demo(model, max_new_steps=24, stream=stream)
    app.queue(default_concurrency_limit=1)
    port = free_port()
    app.launch(
        server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, show_error=True
    )
    try:
        page = browser.new_page()
        page.goto(f"http://127.0.0.1:{port}/", wait_until="domcontentloaded")
        page.locator("#tts-text textarea").fill("Hello from the browser test.")
        page.locator("#tts-go").click()
        page.wait_for_function(HAS_AUDIO, timeout=60_000)
        loaded = [a for a in page.evaluate(AUDIO_ELEMENTS) if a["src"] and a["duration"] > 0]
        assert loaded and all(a["src"].startswith(("blob:", "http")) for a in loaded), loaded
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(
            path=str(ARTIFACTS / f"demo_tts_{'streamed' if stream else 'whole'}.png"), full_page=True
        )
        page.close()
    finally:
        app.close()
