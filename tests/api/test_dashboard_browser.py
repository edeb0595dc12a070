"""The dashboard in a real browser: Debian's headless chromium, driven through chromium-driver
by selenium, against a live server. CI installs both (see .ci/run); elsewhere the test is
skipped when they are missing."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service as DriverService
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from api.routes.ui import COOKIE
from tests.api.conftest import Service
from tests.api.support import wait_job

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")


@pytest.fixture
def browser() -> Iterator[webdriver.Chrome]:
    if CHROMIUM is None or DRIVER is None:
        if os.environ.get("CI"):
            pytest.fail("CI must have chromium and chromium-driver (apt) for the dashboard test")
        pytest.skip("no chromium or chromedriver here (apt-get install chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1280,1100",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=DriverService(executable_path=DRIVER))
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def arrive(browser: webdriver.Chrome, url: str) -> None:
    """Wait for a click's navigation to land on ``url``."""
    WebDriverWait(browser, 15).until(lambda b: b.current_url == url)


def _upload(service: Service) -> str:
    lines = [f'{{"custom_id": "item-{i}", "prompt": "Item {i}: the river"}}' for i in range(8)]
    lines.insert(3, "not json at all")
    answer = service.client.post(
        "/v1/files",
        data={"purpose": "batch"},
        files={"file": ("in.jsonl", "\n".join(lines).encode(), "application/jsonl")},
        headers=service.as_("a"),
    )
    assert answer.status_code == 200, answer.text
    return str(answer.json()["id"])


def test_log_in_and_follow_a_job(
    service: Service, live_url: str, browser: webdriver.Chrome, tmp_path: Path
) -> None:
    a = service.as_("a")
    body = {"input_file_id": _upload(service), "params": {"max_new_tokens": 4}}
    job = service.client.post("/v1/jobs", json=body, headers=a).json()
    other = service.client.post(
        "/v1/jobs", json={"requests": [{"prompt": "x"}]}, headers=service.as_("b")
    ).json()
    service.start_worker()
    wait_job(service.client, job["id"], a)

    browser.get(f"{live_url}/ui")
    assert browser.current_url == f"{live_url}/ui/login"  # no key yet
    browser.find_element(By.ID, "key").send_keys("gq_wrong")
    browser.find_element(By.ID, "login").click()
    WebDriverWait(browser, 15).until(lambda b: b.find_elements(By.ID, "login-error"))
    assert "unknown or revoked" in browser.find_element(By.ID, "login-error").text
    browser.find_element(By.ID, "key").send_keys(service.keys["a"])
    browser.find_element(By.ID, "login").click()
    arrive(browser, f"{live_url}/ui")
    assert browser.find_element(By.ID, "tenant").text == "a"
    cookie = browser.get_cookie(COOKIE)
    assert cookie is not None and cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    rows = browser.find_elements(By.CSS_SELECTOR, "#jobs tbody tr")
    assert [r.get_attribute("data-job") for r in rows] == [job["id"]]  # not tenant b's
    assert other["id"] not in browser.page_source
    cells = rows[0].find_elements(By.TAG_NAME, "td")
    assert cells[2].text == "completed" and cells[3].text.endswith("9/9")
    assert cells[4].text == "1"
    # The stylesheet came from the app and applies (the policy allows only this origin).
    header = browser.find_element(By.TAG_NAME, "header")
    assert header.value_of_css_property("background-color") == "rgba(255, 255, 255, 1)"
    worker = browser.find_elements(By.CSS_SELECTOR, "#workers tbody tr td")
    assert worker[1].text == "tiny-gpt2"

    rows[0].find_element(By.TAG_NAME, "a").click()
    arrive(browser, f"{live_url}/ui/jobs/{job['id']}")
    assert browser.find_element(By.ID, "job-status").text == "completed"
    assert browser.find_element(By.ID, "succeeded").text == "8"
    assert browser.find_element(By.ID, "failed").text == "1"
    bars = browser.find_elements(By.CSS_SELECTOR, "#tokens-chart svg rect.bar")
    assert bars and all(b.size["width"] > 0 for b in bars)
    chart = browser.find_element(By.CSS_SELECTOR, "#tokens-chart svg")
    assert chart.size["width"] > 300 and chart.size["height"] > 50  # drawn, not collapsed
    errors = browser.find_elements(By.CSS_SELECTOR, "#errors tbody tr td")
    assert [e.text for e in errors[:2]] == ["3", "line-4"]
    assert "malformed JSON" in errors[2].text

    shot = tmp_path / "job.png"
    assert browser.save_screenshot(str(shot))
    png = shot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000  # a rendered page, not blank
    if os.environ.get("GENQ_SCREENSHOTS"):
        shutil.copy(shot, Path(os.environ["GENQ_SCREENSHOTS"]) / "dashboard-job.png")

    browser.find_element(By.CSS_SELECTOR, "header form button").click()
    arrive(browser, f"{live_url}/ui/login")
    assert browser.get_cookie(COOKIE) is None
    browser.get(f"{live_url}/ui/jobs/{job['id']}")
    assert browser.current_url == f"{live_url}/ui/login"


def test_the_api_docs_render_with_nothing_from_elsewhere(
    live_url: str, browser: webdriver.Chrome
) -> None:
    browser.get(f"{live_url}/docs")
    paths = WebDriverWait(browser, 30).until(
        lambda b: [e.text for e in b.find_elements(By.CSS_SELECTOR, ".opblock-summary-path")]
    )
    assert "/v1/jobs" in paths and "/v1/jobs/{job_id}/retry" in paths
    loaded = browser.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name)"
    )
    assert loaded and all(url.startswith(live_url) for url in loaded), loaded
