"""/docs in a real browser: headless Chromium (Debian's `chromium` + `chromium-driver`, no
browser download) loads the page served offline, authorizes with a key, runs "create
project" and sees 201. A screenshot is kept under test-artifacts/.

Without Chromium the test skips locally and fails in CI (where `.ci/run` installs it).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from app.api.main import create_app
from app.config import Settings
from tests.browser import ARTIFACTS, chrome, serve
from tests.conftest import API_KEY


@pytest.fixture
def served_url(settings: Settings) -> Iterator[str]:
    with serve(create_app(settings)) as url:
        yield url


def test_docs_authorize_and_create_a_project_in_chromium(served_url: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    with chrome() as driver:
        wait = WebDriverWait(driver, 30)
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
