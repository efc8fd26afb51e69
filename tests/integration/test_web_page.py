"""The voice page at ``/`` in a real browser: Debian's Chromium, headless, driven by
Selenium, with its fake microphone playing a spoken WAV, against the real stack.

Chromium plays the file from its start each time the page opens the microphone, so the
test speaks by turning listening off and on. Bounded: one browser, 127.0.0.1 only.
"""

from __future__ import annotations

import base64
import io
import os
import shutil
import time
import wave
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from benchmarks.speech import clips, normalise
from tests.conftest import bearer, make_key, wav_bytes
from tests.live_server import LiveServer, live

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    not (CHROMIUM and DRIVER),
    reason="needs Debian's chromium and chromium-driver (make install-dev installs them)",
)
QUESTION = "What is the weather going to be like in London this weekend?"
SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "voice-page.png"


@pytest.fixture(scope="module")
def server(triton, database_url) -> Iterator[LiveServer]:
    with live(triton, database_url, turn_max_tokens=32) as s:
        yield s


@pytest.fixture(scope="module")
def key(database_url) -> str:
    return make_key(database_url, "browser-user")


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    speech = next(audio for said, audio in clips() if said == QUESTION)
    mic = tmp_path_factory.mktemp("mic") / "question.wav"
    # half a second of room, the question, then a long silence (the file loops)
    samples = np.concatenate([np.zeros(8000), speech, np.zeros(16000 * 30)]).astype(np.float32)
    mic.write_bytes(wav_bytes(samples))
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--window-size=390,844",  # a phone
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={mic}",
        "--autoplay-policy=no-user-gesture-required",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    driver.set_script_timeout(30)
    yield driver
    driver.quit()


def wait(what: Callable[[], object], timeout: float, why: str) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = what()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {why}")


def test_the_page_is_served_with_strict_security_headers(server):
    page = httpx.get(f"{server.url}/")  # no key needed: the page asks for it
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    csp = page.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp
    assert "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp
    assert page.headers["x-content-type-options"] == "nosniff"
    assert page.headers["x-frame-options"] == "DENY"
    assert page.headers["referrer-policy"] == "no-referrer"
    assert "<script" in page.text and "<script>" not in page.text  # no inline script
    assert (
        httpx.get(f"{server.url}/web/app.js").headers["content-type"].startswith("text/javascript")
    )
    for outside in ("/web/..%2Fconfig.py", "/web/%2e%2e%2fturn.py", "/web/../config.py"):
        response = httpx.get(f"{server.url}{outside}")
        assert response.status_code in (401, 404) and "import" not in response.text
    assert httpx.get(f"{server.url}/web/secrets.txt").status_code == 404
    assert httpx.get(f"{server.url}/v1/documents").status_code == 401  # the API still needs one


def test_a_person_talks_to_june_in_the_browser(server, key, browser):
    from selenium.webdriver.common.by import By

    def state() -> str:
        return browser.find_element(By.TAG_NAME, "body").get_attribute("data-state")

    def lines(who: str) -> list:
        return browser.find_elements(By.CSS_SELECTOR, f"#history li.{who}")

    def speak() -> None:  # listening off and on: the fake microphone starts its file again
        listen = browser.find_element(By.ID, "listen")
        if listen.get_attribute("aria-pressed") == "true":
            listen.click()
        listen.click()

    browser.get(server.url)
    browser.find_element(By.ID, "key").send_keys(key)
    browser.find_element(By.CSS_SELECTOR, "#signin button").click()
    assert browser.execute_script("return window.sessionStorage.getItem('june.key')") == key
    assert key not in browser.current_url

    # 1. ask: the page shows the transcript, streams the reply and plays it
    speak()
    wait(lambda: lines("user"), 90, "the transcript")
    assert {"weather", "london"} <= set(normalise(lines("user")[0].text).split())
    link = wait(
        lambda: browser.find_elements(By.CSS_SELECTOR, "#history li.june a"), 120, "the reply"
    )[0]
    reply = lines("june")[0].find_element(By.TAG_NAME, "span").text
    assert reply
    played = browser.execute_async_script(
        """const done = arguments[arguments.length - 1];
        fetch(arguments[0]).then(r => r.arrayBuffer()).then(b => {
          let s = ""; new Uint8Array(b).forEach(c => s += String.fromCharCode(c)); done(btoa(s));
        });""",
        link.get_attribute("href"),
    )
    audio = base64.b64decode(played)
    with wave.open(io.BytesIO(audio)) as w:
        assert w.getnframes() > w.getframerate()  # over a second of speech
    heard = httpx.post(
        f"{server.url}/v1/transcribe",
        headers=bearer(key),
        files={"file": ("reply.wav", audio, "audio/wav")},
        timeout=60,
    ).json()["text"]
    said, got = set(normalise(reply).split()), set(normalise(heard).split())
    assert len(said & got) >= 0.6 * len(said), (reply, heard)
    wait(lambda: state() != "speaking", 60, "the reply to finish playing")

    # 2. ask again, and talk over the reply while it plays
    speak()
    wait(lambda: len(lines("june")) >= 2 and state() == "speaking", 120, "the second reply")
    speak()
    wait(
        lambda: browser.find_elements(By.CSS_SELECTOR, "#history li.june.interrupted"),
        60,
        "the reply to be interrupted",
    )
    assert state() != "speaking" or len(lines("june")) >= 3  # silent, or already answering
    wait(lambda: len(lines("user")) >= 3, 90, "the interrupting question's transcript")

    conversation = browser.execute_script(
        "return window.sessionStorage.getItem('june.conversation')"
    )
    stored = httpx.get(f"{server.url}/v1/conversations/{conversation}", headers=bearer(key)).json()[
        "turns"
    ]
    assert [t["interrupted"] for t in stored[:2]] == [False, True]
    assert not browser.find_element(By.ID, "signin").is_displayed()
    if os.environ.get("JUNE_UPDATE_SCREENSHOT"):  # the README's picture
        browser.execute_script("window.scrollTo(0, 0)")
        browser.save_screenshot(str(SCREENSHOT))
    assert browser.get_screenshot_as_png()[:4] == b"\x89PNG"


def test_push_to_talk_in_the_browser(server, key, browser):
    """Hold the button while speaking, let go: the question is answered."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    browser.get(server.url)  # the key is still in this tab's session storage
    browser.find_element(By.ID, "new").click()
    browser.find_element(By.CSS_SELECTOR, "input[name=mode][value=manual]").click()
    hold = browser.find_element(By.ID, "hold")
    assert hold.is_displayed() and not browser.find_element(By.ID, "listen").is_displayed()
    hands = ActionChains(browser)
    hands.click_and_hold(hold).perform()  # opens the microphone: its file starts again
    time.sleep(5)  # half a second of room, then the 3.5 s question
    hands.release(hold).perform()
    wait(lambda: browser.find_elements(By.CSS_SELECTOR, "#history li.june a"), 120, "the answer")
    asked = browser.find_element(By.CSS_SELECTOR, "#history li.user").text
    assert {"weather", "london"} <= set(normalise(asked).split())
