"""The playground page in a real headless Chromium (Debian `chromium` + `chromium-driver`,
driven by Selenium): submit a job, watch the progress bar advance and chunk players appear;
with API keys on, enter a key (kept in sessionStorage), speak, see the waveform, the
download link and the word being said highlighted; on a SpeechT5 pod, upload a reference
clip and find the new voice in the list.

The screenshot lands in $VOICEFLEET_TEST_ARTIFACTS (or the test's tmp dir). Skipped when
Chromium, its driver or Selenium is not installed.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hardening_support import INLINE_KEYS
from jobs_support import sentences
from server_process import ServerProcess, start_server

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")


@pytest.fixture
def browser() -> Iterator[object]:
    if CHROMIUM is None or DRIVER is None:
        pytest.skip("needs Debian's chromium and chromium-driver")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(flag)
    options.add_argument("--window-size=900,1200")
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(DRIVER))
    yield driver
    driver.quit()


def test_job_progress_and_chunk_players(
    browser: object, server: ServerProcess, tmp_path: Path
) -> None:
    driver = browser
    driver.get(server.url + "/")  # type: ignore[attr-defined]
    wait = WebDriverWait(driver, 30)
    wait.until(lambda d: d.find_element(By.ID, "status").text.startswith("Model:"))
    text = driver.find_element(By.ID, "text")  # type: ignore[attr-defined]
    text.clear()
    text.send_keys(sentences(120))
    Select(driver.find_element(By.ID, "format")).select_by_value("wav")  # type: ignore[attr-defined]
    driver.find_element(By.ID, "longform").click()  # type: ignore[attr-defined]
    driver.find_element(By.ID, "speak").click()  # type: ignore[attr-defined]

    progress: list[float] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        value = float(driver.find_element(By.ID, "progress").get_attribute("value") or 0)  # type: ignore[attr-defined]
        progress.append(value)
        if value >= 1.0:
            break
        time.sleep(0.1)
    assert progress[-1] == 1.0, progress
    assert any(0 < v < 1 for v in progress), "the progress bar never showed partial progress"
    assert progress == sorted(progress)
    wait.until(lambda d: "succeeded" in d.find_element(By.ID, "status").text)
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#chunks li.chunk.loaded")) == 15)
    chunks = driver.find_elements(By.CSS_SELECTOR, "#chunks li.chunk")  # type: ignore[attr-defined]
    assert chunks[0].get_attribute("data-url").endswith("/chunks/0")
    player = chunks[0].find_element(By.TAG_NAME, "audio")
    assert player.get_attribute("src").startswith("blob:")  # fetched with the key, if any
    assert driver.find_element(By.ID, "whole").is_displayed()  # type: ignore[attr-defined]

    artifacts = Path(os.environ.get("VOICEFLEET_TEST_ARTIFACTS", tmp_path))
    artifacts.mkdir(parents=True, exist_ok=True)
    shot = artifacts / "playground-job.png"
    assert driver.save_screenshot(str(shot))  # type: ignore[attr-defined]
    assert shot.stat().st_size > 1000


@pytest.fixture(scope="module")
def keyed_server(
    tiny_model_dir: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    server = start_server(
        tiny_model_dir, tmp_path_factory.mktemp("keyed"), "--no-autotune",
        "--api-key", INLINE_KEYS[0],
    )  # fmt: skip
    yield server
    server.stop()


def enter_key(driver: Any, wait: WebDriverWait, key: str) -> None:
    field = driver.find_element(By.ID, "apikey")
    field.clear()
    field.send_keys(key)
    driver.execute_script("document.getElementById('apikey').dispatchEvent(new Event('change'))")
    wait.until(lambda d: d.find_element(By.ID, "status").text.startswith("Model:"))


def test_with_keys_speak_waveform_download_and_word_highlight(
    browser: Any, keyed_server: ServerProcess, tmp_path: Path
) -> None:
    driver = browser
    driver.get(keyed_server.url + "/")
    wait = WebDriverWait(driver, 30)
    # Without a key the page says what to do instead of failing silently.
    wait.until(lambda d: "API key" in d.find_element(By.ID, "status").text)
    enter_key(driver, wait, INLINE_KEYS[0])
    assert (
        driver.execute_script("return sessionStorage.getItem('voicefleet.apiKey')")
        == (INLINE_KEYS[0])
    )
    # The key survives a reload of the tab (sessionStorage), not the tab itself.
    driver.refresh()
    wait.until(lambda d: d.find_element(By.ID, "status").text.startswith("Model:"))

    text = driver.find_element(By.ID, "text")
    text.clear()
    text.send_keys("Hello there, friend. This sentence has seven words in it.")
    driver.find_element(By.ID, "speak").click()
    wait.until(lambda d: d.find_element(By.ID, "status").text.startswith("Done"))

    words = driver.find_elements(By.CSS_SELECTOR, "#words .word")
    assert [w.text for w in words] == [
        "Hello", "there", "friend", "This", "sentence", "has", "seven", "words", "in", "it",
    ]  # fmt: skip
    link = driver.find_element(By.ID, "download")
    assert link.get_attribute("href").startswith("blob:") and link.get_attribute("download")
    # The waveform was drawn from the decoded audio: the canvas has dark pixels.
    painted = driver.execute_script(
        "const c = document.getElementById('waveform');"
        "const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
        "let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++; return n;"
    )
    assert painted > 500
    assert float(driver.find_element(By.ID, "waveform").get_attribute("data-seconds")) > 1
    # Seek into a word: that word, and only it, is highlighted.
    driver.execute_script("document.getElementById('player').pause()")
    for index in (1, 4, 9):
        start = float(words[index].get_attribute("data-start"))
        end = float(words[index].get_attribute("data-end"))
        driver.execute_script(
            "document.getElementById('player').currentTime = arguments[0]", (start + end) / 2
        )
        wait.until(
            lambda d, i=index: (
                [
                    w.get_attribute("data-index")
                    for w in d.find_elements(By.CSS_SELECTOR, "#words .word.active")
                ]
                == [str(i)]
            )
        )
    artifacts = Path(os.environ.get("VOICEFLEET_TEST_ARTIFACTS", tmp_path))
    artifacts.mkdir(parents=True, exist_ok=True)
    assert driver.save_screenshot(str(artifacts / "playground-words.png"))

    # A job with keys on: chunks are fetched with the key and play from blob URLs.
    text.clear()
    text.send_keys(sentences(20))
    driver.find_element(By.ID, "longform").click()
    driver.find_element(By.ID, "speak").click()
    wait.until(lambda d: "succeeded" in d.find_element(By.ID, "status").text)
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#chunks li.chunk.loaded"))
    assert driver.find_element(By.ID, "whole").get_attribute("href").startswith("blob:")


@pytest.fixture(scope="module")
def cloning_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    from voicefleet_server.tiny_model import make_tiny_speecht5

    family = make_tiny_speecht5(tmp_path_factory.mktemp("play-speecht5")).parent
    server = start_server(
        str(family / "model"), tmp_path_factory.mktemp("play-logs"),
        "--vocoder", str(family / "vocoder"), "--speaker-encoder", str(family / "speaker-encoder"),
        "--no-autotune", "--dtype", "float32", "--api-key", INLINE_KEYS[1],
    )  # fmt: skip
    yield server
    server.stop()


def test_upload_a_reference_clip_on_a_speecht5_pod(
    browser: Any, cloning_server: ServerProcess, tmp_path: Path
) -> None:
    import numpy as np
    import soundfile

    clip = tmp_path / "my-voice.wav"
    t = np.arange(32000) / 16000
    soundfile.write(clip, (0.4 * np.sin(2 * np.pi * 150 * t)).astype(np.float32), 16000)
    driver = browser
    driver.get(cloning_server.url + "/")
    wait = WebDriverWait(driver, 30)
    enter_key(driver, wait, INLINE_KEYS[1])
    assert driver.find_element(By.ID, "clone").is_displayed()
    driver.find_element(By.ID, "clipfile").send_keys(str(clip))
    name = driver.find_element(By.ID, "clipname")
    name.clear()
    name.send_keys("browser voice")
    driver.find_element(By.ID, "consent").send_keys("cons_test")
    driver.find_element(By.ID, "upload").click()
    wait.until(lambda d: "ready" in d.find_element(By.ID, "status").text)
    chosen = Select(driver.find_element(By.ID, "voice")).first_selected_option
    assert chosen.text == "browser voice (uploaded)"
    assert chosen.get_attribute("value").startswith("voice_")
    # SpeechT5 predicts no durations: the page speaks without word timestamps.
    driver.find_element(By.ID, "speak").click()
    wait.until(lambda d: d.find_element(By.ID, "status").text.startswith("Done"))
    assert driver.find_elements(By.CSS_SELECTOR, "#words .word") == []
