"""The playground page in a real headless Chromium (Debian `chromium` + `chromium-driver`,
driven by Selenium): submit a job, watch the progress bar advance and chunk players appear.

The screenshot lands in $VOICEFLEET_TEST_ARTIFACTS (or the test's tmp dir). Skipped when
Chromium, its driver or Selenium is not installed.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from jobs_support import sentences
from server_process import ServerProcess

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
    players = driver.find_elements(By.CSS_SELECTOR, "#chunks li.chunk audio")  # type: ignore[attr-defined]
    assert len(players) == 15
    assert players[0].get_attribute("src").endswith("/chunks/0")
    assert driver.find_element(By.ID, "whole").is_displayed()  # type: ignore[attr-defined]

    artifacts = Path(os.environ.get("VOICEFLEET_TEST_ARTIFACTS", tmp_path))
    artifacts.mkdir(parents=True, exist_ok=True)
    shot = artifacts / "playground-job.png"
    assert driver.save_screenshot(str(shot))  # type: ignore[attr-defined]
    assert shot.stat().st_size > 1000
