"""The demo page in a real browser: Debian's chromium driven by Playwright, against `diffres serve` (uvicorn).

Playwright cannot download its own browsers here, so it is pointed at the system chromium
(`DIFFRES_CHROMIUM` or `chromium` on PATH); without either, or without the playwright package, these
tests skip and say why. Everything the page is given comes from the committed sample recordings
(examples/), so nothing here needs ../shared/data. The microphone is chromium's fake device playing
examples/computer.flac and examples/alexa.flac with silence around them, in real time: the browser's
own MediaRecorder makes the WebM/Opus the service classifies (Record), and its Web Audio makes the PCM
the page streams to /v1/stream (Listen).

Every screenshot is kept: in the test's temporary folder, or in $DIFFRES_SCREENSHOTS when set.
`DIFFRES_SCREENSHOTS=docs pytest tests/test_browser.py` refreshes docs/demo.png, the README's picture
(the page after uploading examples/long.flac); it writes the other pictures there too, and only demo.png is used.
"""

from __future__ import annotations

import base64
import os
import shutil
from collections.abc import Iterator
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import httpx
import numpy as np
import pytest

from diffres.decode import load_audio
from tests.conftest import EXAMPLES, encode, require_model
from tests.test_app_e2e import Server, start_server, stop

CHROMIUM = os.environ.get("DIFFRES_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--no-first-run", "--disable-sync", "--autoplay-policy=no-user-gesture-required"]
PAGE_TIMEOUT_MS = 30_000  # generous: a slow 2-core machine runs the server and the browser side by side
LONG = EXAMPLES / "long.flac"  # 30 s, five keywords in pink noise (examples/README.md)
# The fake microphone: "computer", then "alexa", with silence around them (the trailing silence lets the
# stream close the first event while the microphone still plays).
MIC_PARTS = [0.5, "computer.flac", 1.0, "alexa.flac", 3.0]
MIC_WORDS = {"computer", "alexa"}
MIC_RATE = 48000
DESKTOP = {"viewport": {"width": 1100, "height": 1000}}


def require_browser() -> Any:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed (pip install -e '.[browser]'; `make test` does): "
                    "browser tests skipped")
    if not CHROMIUM:
        pytest.skip("no chromium (apt-get install chromium, as .ci/run does; or set DIFFRES_CHROMIUM): "
                    "browser tests skipped")
    return sync_playwright


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    require_browser()
    require_model("keywords")
    running = start_server(tmp_path_factory.mktemp("browser-server"))
    try:
        yield running
    finally:
        stop(running)


@pytest.fixture(scope="module")
def microphone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What chromium's fake microphone plays: 48 kHz 16-bit WAV of two keywords with silence around them."""
    parts = [np.zeros(int(p * MIC_RATE), np.float32) if isinstance(p, float) else load_audio(EXAMPLES / p, MIC_RATE)
             for p in MIC_PARTS]
    path = tmp_path_factory.mktemp("mic") / "microphone.wav"
    path.write_bytes(encode(np.concatenate(parts), MIC_RATE))
    return path


@pytest.fixture(scope="module")
def mic_seconds() -> float:
    return sum(p if isinstance(p, float) else len(load_audio(EXAMPLES / p, MIC_RATE)) / MIC_RATE for p in MIC_PARTS)


@pytest.fixture(scope="module")
def browser(microphone: Path) -> Iterator[Any]:
    with require_browser()() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=[
            *CHROMIUM_FLAGS, "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-audio-capture={microphone}%noloop"])
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture(scope="module")
def api(server: Server) -> Iterator[httpx.Client]:
    """The same service, called directly: what the page shows must be what the API says."""
    with httpx.Client(base_url=server.url, timeout=60) as client:
        yield client


def classify(api: httpx.Client, path: Path, **params: Any) -> dict[str, Any]:
    r = api.post("/v1/classify", params={"model": "keywords", **params}, files={"file": (path.name, path.read_bytes())})
    assert r.status_code == 200, r.text
    return r.json()


def screenshot(page: Any, tmp_path: Path, name: str) -> Path:
    folder = Path(os.environ.get("DIFFRES_SCREENSHOTS", tmp_path))
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    page.screenshot(path=str(path), full_page=True)
    return path


@pytest.fixture
def open_page(browser: Any, server: Server) -> Iterator[Any]:
    """open_page(**context) -> a fresh page on the demo with the keywords model picked; console errors are
    collected and must stay empty; every context is closed at the end."""
    opened: list[tuple[Any, list[str]]] = []

    def open_(http_errors: bool = False, **context: Any) -> Any:
        ctx = browser.new_context(**context)
        ctx.grant_permissions(["microphone"], origin=server.url)
        page = ctx.new_page()
        page.set_default_timeout(PAGE_TIMEOUT_MS)
        errors: list[str] = []
        # An error answer of the API is shown on the page, and chromium also logs it: not a page error then.
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" and not (
            http_errors and m.text.startswith("Failed to load resource")) else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        opened.append((ctx, errors))
        page.goto(server.url + "/")
        page.wait_for_selector("#model option[value=keywords]", state="attached")
        page.select_option("#model", "keywords")
        return page

    yield open_
    for ctx, errors in opened:
        ctx.close()
    assert [e for _, errors in opened for e in errors] == []


def upload(page: Any, path: Path) -> None:
    """Choose a file and wait for its answer on the page."""
    page.evaluate("document.getElementById('verdict').textContent = ''")
    page.set_input_files("#file", str(path))
    page.wait_for_selector("#verdict:not(:empty)")


def drop(page: Any, path: Path) -> None:
    """Drag and drop a file onto the page (a DataTransfer holding it, as the browser makes for a real drop)."""
    page.evaluate("document.getElementById('verdict').textContent = ''")
    data = page.evaluate_handle("""([name, b64]) => {
        const dt = new DataTransfer();
        dt.items.add(new File([Uint8Array.from(atob(b64), (c) => c.charCodeAt(0))], name));
        return dt; }""", [path.name, base64.b64encode(path.read_bytes()).decode()])
    page.dispatch_event("#drop", "dragover", {"dataTransfer": data})
    page.dispatch_event("#drop", "drop", {"dataTransfer": data})
    page.wait_for_selector("#verdict:not(:empty)")


def listed_events(page: Any) -> list[dict[str, Any]]:
    return page.eval_on_selector_all("#events button.event", """rows => rows.map((r) => ({label: r.dataset.label,
        start_s: +r.dataset.start, end_s: +r.dataset.end, score: +r.dataset.score, text: r.innerText}))""")


def assert_same_events(page: Any, expected: list[dict[str, Any]]) -> None:
    shown = listed_events(page)
    assert [(e["label"], e["start_s"], e["end_s"]) for e in shown] == \
        [(e["label"], pytest.approx(e["start_s"]), pytest.approx(e["end_s"])) for e in expected]
    for row, event in zip(shown, expected):  # and the times a reader sees are those
        assert f"{js_fixed(event['start_s'])}–{js_fixed(event['end_s'])} s" in row["text"], row["text"]


def js_fixed(seconds: float, digits: int = 2) -> str:
    """What JavaScript's `toFixed` shows: the double's exact decimal value rounded half up (1.625 -> 1.63),
    where Python's format rounds half to even (1.62)."""
    return str(Decimal(seconds).quantize(Decimal(1).scaleb(-digits), rounding=ROUND_HALF_UP))


def drawn(page: Any, canvas: str) -> int:
    """How many different reds 200 pixels spread over a canvas hold: more than a few means something was drawn."""
    return page.evaluate("""(sel) => { const c = document.querySelector(sel);
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        return new Set(Array.from({length: 200}, (_, i) => d[Math.floor(i * d.length / 800) * 4])).size; }""", canvas)


def audio_time(page: Any) -> float:
    return page.evaluate("document.getElementById('player').currentTime")


def test_long_recording_shows_its_events_and_plays_them(open_page: Any, api: httpx.Client, tmp_path: Path) -> None:
    """examples/long.flac: the events the API finds, listed and marked on the importance plot over the whole
    file, each playable; clip scores called what they are; the 19-row window table folded away."""
    expected = classify(api, LONG, include_importance="true")
    assert expected["detected"] and len(expected["events"]) >= 3  # several events to list, mark and play
    page = open_page(**DESKTOP)
    upload(page, LONG)
    page.wait_for_selector("#events button.event")
    assert_same_events(page, expected["events"])
    assert page.get_attribute("#verdict", "data-detected") == "true"
    assert f"min_score {expected['min_score']:g}" in page.inner_text("#verdict")
    assert "best window score" in page.inner_text("#side")
    passed = page.eval_on_selector_all("#labels li", "ls => ls.map((l) => [l.dataset.label, l.dataset.passed])")
    assert passed[:len(expected["predictions"])] == [[p["label"], str(p["passed"]).lower()]
                                                      for p in expected["predictions"]]
    # Long audio: no spectrogram, the importance over the whole file on a time axis, with a marker per event.
    assert not page.is_visible("#logmel") and page.is_visible("#importance") and page.is_visible("#importance-axis")
    assert drawn(page, "#importance") > 3 and drawn(page, "#importance-axis") > 1
    assert page.locator("#importance-box .marker").count() == len(expected["events"])
    assert page.locator("#importance-box .marker .flag").first.is_visible()
    # The per-window table is there but folded.
    assert page.locator("#segments tbody tr").count() == len(expected["segments"])
    assert page.get_attribute("#windows", "open") is None and not page.is_visible("#segments")
    page.click("#windows summary")
    assert page.is_visible("#segments")
    page.click("#windows summary")
    # Clicking an event in the list plays its stretch: the audio is moved into it, then stops at its end.
    index, event = max(enumerate(expected["events"]), key=lambda ie: ie[1]["end_s"] - ie[1]["start_s"])
    page.click(f"#events button.event[data-index='{index}']")
    page.wait_for_function("([a, b]) => { const p = document.getElementById('player');"
                           " return p.currentTime >= a - 0.05 && p.currentTime <= b + 0.5; }",
                           arg=[event["start_s"], event["end_s"]])
    page.wait_for_function("(b) => { const p = document.getElementById('player');"
                           " return p.paused && p.currentTime >= b - 0.05; }", arg=event["end_s"])
    assert event["start_s"] - 0.05 <= audio_time(page) <= event["end_s"] + 0.5
    # The playhead drawn over the plot is where the audio is.
    head = page.eval_on_selector("#importance-box .playhead", "h => parseFloat(h.style.left)")
    span = len(expected["importance"]) * expected["importance_hop_s"]
    assert head == pytest.approx(audio_time(page) / span * 100, abs=1)
    screenshot(page, tmp_path, "demo.png")  # the README's picture (docs/demo.png)
    # A marker on the plot plays its event too.
    first = expected["events"][0]
    page.click("#importance-box .marker[data-index='0'] .flag")
    page.wait_for_function("([a, b]) => { const p = document.getElementById('player');"
                           " return p.currentTime >= a - 0.05 && p.currentTime <= b + 0.5; }",
                           arg=[first["start_s"], first["end_s"]])


STRICT_SCORES = (0.99, 0.995, 0.998, 0.999)


def test_threshold_control_asks_again_and_updates_the_events(open_page: Any, api: httpx.Client,
                                                             tmp_path: Path) -> None:
    default = classify(api, LONG)
    # The loosest strict threshold that drops some of the events but not all (the model decides which).
    tried = {score: classify(api, LONG, min_score=score) for score in STRICT_SCORES}
    fewer = [score for score, r in tried.items() if 0 < len(r["events"]) < len(default["events"])]
    assert fewer, f"no threshold of {STRICT_SCORES} drops some of the {len(default['events'])} events but not all"
    score = fewer[0]
    strict = tried[score]
    page = open_page(**DESKTOP)
    assert page.input_value("#min-score") == f"{default['min_score']:g}"  # the model's default
    upload(page, LONG)
    page.wait_for_selector("#events button.event")
    assert len(listed_events(page)) == len(default["events"])
    with page.expect_request(lambda r: "/v1/classify" in r.url) as request:
        page.fill("#min-score", f"{score:g}")
        page.press("#min-score", "Enter")
    assert parse_qs(urlparse(request.value.url).query)["min_score"] == [f"{score:g}"]
    page.wait_for_selector(f"#events-threshold:has-text('{score:g}')")
    page.wait_for_selector("#result:not([aria-busy])")
    assert_same_events(page, strict["events"])
    assert f"min_score {score:g}" in page.inner_text("#verdict")
    assert page.locator("#importance-box .marker").count() == len(strict["events"])
    screenshot(page, tmp_path, "demo-threshold.png")


def test_a_clip_without_keywords_says_nothing_was_detected(open_page: Any, api: httpx.Client, tmp_path: Path) -> None:
    """examples/three.wav (a spoken digit) dropped on the page for the keywords model: an explicit 'nothing'."""
    expected = classify(api, EXAMPLES / "three.wav")
    assert not expected["detected"]
    page = open_page(**DESKTOP)
    drop(page, EXAMPLES / "three.wav")
    assert page.get_attribute("#verdict", "data-detected") == "false"
    assert f"Nothing detected above the threshold (min_score {expected['min_score']:g})" in page.inner_text("#verdict")
    assert page.locator("#events button.event").count() == 0 and page.locator(".marker").count() == 0
    assert page.get_attribute("#labels li", "data-passed") == "false"
    screenshot(page, tmp_path, "demo-nothing.png")


def test_a_short_clip_shows_spectrogram_importance_and_merged_frames(open_page: Any, api: httpx.Client,
                                                                   tmp_path: Path) -> None:
    expected = classify(api, EXAMPLES / "alexa.flac")
    page = open_page(**DESKTOP)
    upload(page, EXAMPLES / "alexa.flac")
    assert page.get_attribute("#labels li:first-child", "data-label") == expected["predictions"][0]["label"] == "alexa"
    assert page.get_attribute("#labels li:first-child", "data-passed") == "true"
    assert_same_events(page, expected["events"])
    for canvas in ("#logmel", "#logmel-axis", "#importance", "#importance-axis", "#merged"):
        assert page.is_visible(canvas), canvas
        assert drawn(page, canvas) > (1 if canvas.endswith("axis") else 3), canvas
    for box in ("#spectrogram-box", "#importance-box"):
        assert page.locator(f"{box} .marker").count() == len(expected["events"]), box
    assert not page.is_visible("#timeline-box")
    assert "FLAC" in page.inner_text("#summary")
    screenshot(page, tmp_path, "demo-short.png")


def test_api_errors_are_shown(open_page: Any, tmp_path: Path) -> None:
    not_audio = tmp_path / "notes.wav"
    not_audio.write_text("not audio at all\n" * 20)
    page = open_page(http_errors=True)
    page.set_input_files("#file", str(not_audio))
    page.wait_for_selector("#status.error")
    assert "could not decode audio" in page.inner_text("#status")  # the message of the API's JSON error body
    assert not page.is_visible("#result")


def test_record_from_the_microphone_in_the_browsers_own_webm(open_page: Any, mic_seconds: float) -> None:
    """Record: chromium's MediaRecorder makes WebM/Opus of the fake microphone; the service reads it."""
    page = open_page()
    page.click("#record")
    page.wait_for_selector("#record[aria-pressed=true]")
    # The microphone plays in real time: wait until the page has recorded all of it.
    page.wait_for_function("(s) => parseFloat(document.getElementById('record-status').textContent.replace("
                           "/^[^0-9]*/, '')) >= s", arg=mic_seconds)
    page.click("#record")
    page.wait_for_selector("#labels li")
    assert page.get_attribute("#labels li:first-child", "data-label") in MIC_WORDS
    assert "WEBM/OPUS" in page.inner_text("#summary")
    assert {e["label"] for e in listed_events(page)} & MIC_WORDS


def test_listen_streams_the_microphone_and_shows_events_as_they_arrive(open_page: Any, tmp_path: Path) -> None:
    """Listen: microphone -> AudioWorklet -> f32le PCM over /v1/stream; onsets and events appear while it plays."""
    page = open_page(**DESKTOP)
    with page.expect_websocket(lambda ws: "/v1/stream" in ws.url) as opened:
        page.click("#listen")
    query = parse_qs(urlparse(opened.value.url).query)
    assert query["format"] == ["f32le"] and query["model"] == ["keywords"] and int(query["sample_rate"][0]) >= 8000
    # A final event arrives while the microphone still plays (the button still says Stop).
    page.wait_for_selector("#live-events li[data-kind=event]")
    assert page.get_attribute("#listen", "aria-pressed") == "true"
    arrived = page.eval_on_selector_all("#live-events li", "ls => ls.map((l) => [l.dataset.kind, l.dataset.label, "
                                        "+l.dataset.start, +l.dataset.end])")
    assert {label for kind, label, *_ in arrived if kind == "event"} & MIC_WORDS, arrived
    assert all(0 <= start <= end for *_, start, end in arrived)
    screenshot(page, tmp_path, "demo-listen.png")
    page.click("#listen")  # Stop: {"type": "end"}, then the server's end message
    page.wait_for_selector("#live-status:has-text('Stream over')")
    page.wait_for_selector("#listen[aria-pressed=false]")
    final = page.eval_on_selector_all("#live-events li[data-kind=event]", "ls => ls.map((l) => l.dataset.label)")
    assert set(final) & MIC_WORDS


def test_long_recording_on_a_phone_sized_screen(open_page: Any, tmp_path: Path) -> None:
    """On a phone the events come first, then the plots; nothing is wider than the screen."""
    page = open_page(viewport={"width": 390, "height": 844}, is_mobile=True, device_scale_factor=2)
    upload(page, LONG)
    page.wait_for_selector("#events button.event")
    events_y = page.eval_on_selector("#events", "e => e.getBoundingClientRect().top")
    plot_y = page.eval_on_selector("#importance", "e => e.getBoundingClientRect().top")
    assert events_y < plot_y
    assert page.is_visible("#importance") and page.is_visible("#timeline") and not page.is_visible("#segments")
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    screenshot(page, tmp_path, "demo-phone.png")
