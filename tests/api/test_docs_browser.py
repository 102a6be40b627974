"""/docs in a real browser: headless Chromium (Debian's `chromium` + `chromium-driver`, no
browser download) loads the page served offline, authorizes with a key, runs "create
project" and sees 201. A screenshot is kept under test-artifacts/.

Without Chromium the test skips locally and fails in CI (where `.ci/run` installs it).
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn

from app.api.main import create_app
from app.config import Settings
from tests.conftest import API_KEY

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


def _chromium() -> tuple[str, str]:
    browser = shutil.which("chromium")
    driver = shutil.which("chromedriver")
    if browser is None or driver is None:
        message = "chromium and chromedriver are not installed (apt-get install -y chromium chromium-driver)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return browser, driver


@pytest.fixture
def served_url(settings: Settings) -> Iterator[str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(100):
        if server.started:
            break
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


def test_docs_authorize_and_create_a_project_in_chromium(served_url: str) -> None:
    browser, driver_path = _chromium()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--window-size=1280,2000",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    wait = WebDriverWait(driver, 30)
    try:
        driver.get(f"{served_url}/docs")
        wait.until(ec.element_to_be_clickable((By.CSS_SELECTOR, "button.authorize"))).click()
        key_input = wait.until(
            ec.visibility_of_element_located((By.CSS_SELECTOR, ".modal-ux input"))
        )
        key_input.send_keys(API_KEY)
        driver.find_element(By.CSS_SELECTOR, ".modal-ux .auth-btn-wrapper .authorize").click()
        driver.find_element(By.CSS_SELECTOR, ".modal-ux .btn-done").click()

        op = driver.find_element(By.ID, "operations-projects-create_project")
        op.find_element(By.CSS_SELECTOR, ".opblock-summary").click()
        wait.until(
            ec.element_to_be_clickable(
                (By.CSS_SELECTOR, "#operations-projects-create_project .try-out__btn")
            )
        ).click()
        body = wait.until(
            ec.visibility_of_element_located(
                (By.CSS_SELECTOR, "#operations-projects-create_project textarea.body-param__text")
            )
        )
        body.clear()
        body.send_keys('{"name": "terrace", "classes": ["pigeon", "empty"]}')
        driver.find_element(By.CSS_SELECTOR, "#operations-projects-create_project .execute").click()
        status = wait.until(
            ec.visibility_of_element_located(
                (
                    By.CSS_SELECTOR,
                    "#operations-projects-create_project .live-responses-table tr.response td.response-col_status",
                )
            )
        )
        ARTIFACTS.mkdir(exist_ok=True)
        driver.save_screenshot(str(ARTIFACTS / "docs-create-project.png"))
        assert status.text.strip().startswith("201"), status.text
        assert (
            "prj_"
            in driver.find_element(
                By.CSS_SELECTOR,
                "#operations-projects-create_project .live-responses-table .highlight-code",
            ).text
        )
    finally:
        driver.quit()
