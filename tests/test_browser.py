"""The demo page in a real browser: Debian's chromium driven by Playwright, against `diffres serve` (uvicorn).

Playwright cannot download its own browsers here, so it is pointed at the system chromium
(`DIFFRES_CHROMIUM` or `chromium` on PATH); without either, or without the playwright package, these
tests skip and say why. The microphone is chromium's fake device fed a real clip, so the browser's
own MediaRecorder produces the WebM/Opus the service classifies. Screenshots go to the test's
temporary folder, or to $DIFFRES_SCREENSHOTS (e.g. docs/) to refresh the README's.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import soundfile as sf

from diffres.decode import load_audio
from tests.conftest import DATA_DIR, encode, require_model
from tests.test_app_e2e import Server, start_server, stop

CHROMIUM = os.environ.get("DIFFRES_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
CANDIDATES = ["jarvis", "alexa", "computer", "snowboy", "smart_mirror", "view_glass"]
PAGE_TIMEOUT_MS = 30_000
LEAD_S, TAIL_S = 0.25, 0.3  # silence around the clip on the fake microphone
MIN_SCORE = 0.6


def require_browser() -> Any:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed (pip install -e '.[browser]'; `make test` does): browser tests skipped")
    if not CHROMIUM:
        pytest.skip("no chromium (apt-get install chromium, as .ci/run does; or set DIFFRES_CHROMIUM): "
                    "browser tests skipped")
    return sync_playwright


@dataclass
class Clip:
    """A real clip the service gets right as a plain upload, also with the silence a recording adds
    around it, so the browser paths can be held to its label."""

    label: str
    path: Path
    seconds: float


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    require_browser()
    require_model("keywords")
    running = start_server(tmp_path_factory.mktemp("browser-server"))
    try:
        yield running
    finally:
        stop(running)


def with_silence(x: np.ndarray, rate: int, lead_s: float = LEAD_S, tail_s: float = TAIL_S) -> np.ndarray:
    """The clip as the fake microphone plays it: a little silence before and after."""
    return np.concatenate([np.zeros(int(lead_s * rate), np.float32), x, np.zeros(int(tail_s * rate), np.float32)])


def labelled_right(client: httpx.Client, path: Path, label: str) -> bool:
    """Right and clear (score >= MIN_SCORE) alone and with the silences a recording's start jitter gives."""
    x = load_audio(path, 16000)
    for audio in [x] + [with_silence(x, 16000, lead, tail) for lead in (0.0, 0.25, 0.5) for tail in (0.3, 0.8)]:
        r = client.post("/v1/classify?top_k=1", content=encode(audio, 16000), headers={"content-type": "audio/wav"})
        top = r.json()["predictions"][0] if r.status_code == 200 else {}
        if top.get("label") != label or top["score"] < MIN_SCORE:
            return False
    return True


@pytest.fixture(scope="module")
def clip(server: Server) -> Clip:
    """The first real keyword clip (of a few labels) the service labels right, alone and with silence around."""
    with httpx.Client(base_url=server.url, timeout=30) as client:
        for label in CANDIDATES:
            for path in sorted((DATA_DIR / "keywords" / label).glob("*.flac"))[:6]:
                if labelled_right(client, path, label):
                    return Clip(label, path, len(load_audio(path, 16000)) / 16000)
    if not (DATA_DIR / "keywords").is_dir():
        pytest.skip(f"no real clips at {DATA_DIR / 'keywords'}: browser tests skipped")
    pytest.fail("the shipped keywords model gets none of the candidate clips right as plain uploads")


@pytest.fixture(scope="module")
def microphone(clip: Clip, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The clip as chromium's fake microphone input: 48 kHz 16-bit WAV with a little silence around it."""
    path = tmp_path_factory.mktemp("mic") / "microphone.wav"
    path.write_bytes(encode(with_silence(load_audio(clip.path, 48000), 48000), 48000))
    return path


@pytest.fixture(scope="module")
def browser(microphone: Path) -> Iterator[Any]:
    with require_browser()() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=[
            "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-audio-capture={microphone}%noloop"])
        try:
            yield launched
        finally:
            launched.close()


def screenshot_dir(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("DIFFRES_SCREENSHOTS", tmp_path))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def open_page(browser: Any, server: Server, **context: Any) -> tuple[Any, Any, list[str]]:
    """A fresh context on the page, with the console's errors collected."""
    ctx = browser.new_context(**context)
    ctx.grant_permissions(["microphone"], origin=server.url)
    page = ctx.new_page()
    page.set_default_timeout(PAGE_TIMEOUT_MS)
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(server.url + "/")
    page.wait_for_selector("#model option[value=keywords]", state="attached")
    page.select_option("#model", "keywords")
    return ctx, page, errors


def top_label(page: Any) -> str:
    page.wait_for_selector("#labels li", state="visible")
    return page.get_attribute("#labels li:first-child", "data-label")


def test_upload_a_real_clip_and_see_it_classified(browser: Any, server: Server, clip: Clip, tmp_path: Path) -> None:
    ctx, page, errors = open_page(browser, server, viewport={"width": 1100, "height": 1000})
    try:
        page.set_input_files("#file", str(clip.path))
        assert top_label(page) == clip.label
        for canvas in ("#logmel", "#importance", "#merged"):
            assert page.is_visible(canvas), canvas
            # Something was drawn: the canvas holds more than one colour.
            assert page.evaluate(f"""() => {{ const c = document.querySelector('{canvas}');
                const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
                return new Set(Array.from({{length: 200}}, (_, i) => d[Math.floor(i * d.length / 800) * 4])).size; }}""") > 3
        assert "FLAC" in page.inner_text("#summary")
        page.screenshot(path=str(screenshot_dir(tmp_path) / "demo.png"), full_page=True)
        assert errors == []
    finally:
        ctx.close()


def test_record_from_the_microphone_in_the_browsers_own_webm(browser: Any, server: Server, clip: Clip) -> None:
    """The fake microphone plays the clip; chromium's MediaRecorder makes WebM/Opus; the service reads it."""
    ctx, page, errors = open_page(browser, server)
    try:
        page.click("#record")
        page.wait_for_selector("#record[aria-pressed=true]")
        page.wait_for_timeout(int((LEAD_S + clip.seconds + TAIL_S) * 1000))  # it plays in real time: nothing to poll
        page.click("#record")
        assert top_label(page) == clip.label
        assert "WEBM/OPUS" in page.inner_text("#summary")
        assert errors == []
    finally:
        ctx.close()


def test_long_audio_on_a_phone_sized_screen(browser: Any, server: Server, clip: Clip, tmp_path: Path) -> None:
    """A recording longer than the windowing threshold shows the window timeline; nothing overflows a phone."""
    x = load_audio(clip.path, 16000)
    long_clip = tmp_path / "long.flac"
    sf.write(long_clip, np.concatenate([x, np.zeros(16000, np.float32)] * 5), 16000)
    ctx, page, errors = open_page(browser, server, viewport={"width": 390, "height": 844}, is_mobile=True,
                                  device_scale_factor=2)
    try:
        page.set_input_files("#file", str(long_clip))
        top_label(page)
        page.wait_for_selector("#timeline-box", state="visible")
        assert page.locator("#segments tbody tr").count() >= 3
        assert page.is_visible("#importance") and not page.is_visible("#logmel")
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
        page.screenshot(path=str(screenshot_dir(tmp_path) / "demo-phone.png"), full_page=True)
        assert errors == []
    finally:
        ctx.close()
