"""The rest of the loop in a real browser (headless Chromium via Selenium, tests/browser.py),
from a project with a trained model: open the model (confusion matrix, per-class metrics)
and the models page → quick test a photo (label, scores, heat map and box over it) →
label three suggestions with number keys → retrain → see the new version promoted
(`production` moved to v2). A screenshot of each page goes to test-artifacts/console/."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from app.api.main import create_app
from app.config import Settings
from tests.browser import ARTIFACTS, assert_fits_phone, chrome, screenshot, serve
from tests.conftest import API_KEY
from tests.console.test_browser import UNLABELED
from tests.factories import digit_images, make_zip
from worker.runner import run_job

CLASSES = ["0", "1", "2"]


@pytest.fixture
def served(settings: Settings) -> Iterator[str]:
    """The app on a real server; a job it enqueues runs on a thread through the worker's
    own :func:`worker.runner.run_job`."""

    def enqueue(job_id: str, queue: str) -> None:
        threading.Thread(
            target=run_job, args=(job_id,), kwargs={"settings": settings, "queue": queue}
        ).start()

    with serve(create_app(settings, enqueue=enqueue)) as url:
        yield url


def _trained_project(url: str) -> tuple[str, dict[str, str]]:
    """Through the API: a project keeping its predictions, a zip of labeled digits and six
    unlabeled ones (at the zip's root), one linear probe. Returns the project id and the
    true class of each unlabeled file."""
    api = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=60)
    pid = api.post("/v1/projects", json={"name": "pigeons", "store_predictions": True}).json()["id"]
    labeled = digit_images(8, [0, 1, 2])
    unlabeled = digit_images(2, [0, 1, 2], offset=20)
    members = {f"{label}/{i}.png": data for i, (label, data) in enumerate(labeled)}
    truth = {f"u{i}.png": label for i, (label, _) in enumerate(unlabeled)}
    members |= {f"u{i}.png": data for i, (_, data) in enumerate(unlabeled)}
    r = api.post(f"/v1/projects/{pid}/images", files={"files": ("d.zip", make_zip(members))})
    assert r.status_code == 201, r.text
    job = api.post(f"/v1/projects/{pid}/jobs", json={"method": "linear_probe"}).json()
    for _ in range(600):
        state = api.get(f"/v1/jobs/{job['id']}").json()
        if state["status"] not in ("queued", "running"):
            break
        time.sleep(0.5)
    assert state["status"] == "succeeded", state
    return pid, truth


def test_quick_test_label_suggestions_retrain_and_see_the_promotion(
    served: str, tmp_path: Path
) -> None:
    pid, truth = _trained_project(served)
    photo = tmp_path / "visitor.png"
    photo.write_bytes(digit_images(1, [2], offset=40)[0][1])
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    with chrome(window=(1200, 900)) as driver:
        wait = WebDriverWait(driver, 120)

        def shot(name: str) -> None:
            """Keep a screenshot of the page; every control has a label, every image alt."""
            screenshot(driver, f"console/{name}")
            assert driver.execute_script(UNLABELED) == [], name

        find = driver.find_element
        base = f"{served}/console/projects/{pid}"

        driver.get(f"{base}/models")
        wait.until(ec.url_contains("/console/sign-in"))
        find(By.ID, "key").send_keys(API_KEY)
        find(By.CSS_SELECTOR, "form button[type=submit]").click()

        # The models page (back here after sign-in): v1, production, beside its baseline.
        versions = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "table.versions")))
        assert "v1" in versions.text and "production" in versions.text
        assert "majority_class" in versions.text
        shot("10-models")

        # The model: the confusion matrix as a heat map, per-class precision and recall.
        find(By.LINK_TEXT, "v1").click()
        cells = wait.until(
            ec.presence_of_all_elements_located((By.CSS_SELECTOR, "table.confusion tbody td"))
        )
        assert len(cells) == len(CLASSES) ** 2
        assert len({c.value_of_css_property("background-color") for c in cells}) > 1
        assert len(driver.find_elements(By.CSS_SELECTOR, "table.perclass tbody tr")) == 3
        assert (
            find(By.PARTIAL_LINK_TEXT, "Download ONNX")
            .get_attribute("href")
            .endswith("format=onnx")
        )
        shot("11-model")

        # Quick test: the label, the scores, the heat map over the photo, the box. Without the
        # "none of the above" threshold (checked by default; tests/console/test_loop_pages.py
        # covers it): a 24-image probe's threshold sits near its scores, so a digit may fall
        # either side of it from one machine to the next, and a rejection has no heat map.
        driver.get(f"{base}/test")
        find(By.ID, "photo").send_keys(str(photo))
        reject = find(By.CSS_SELECTOR, "input[name=reject]")
        assert reject.is_selected()
        reject.click()
        find(By.CSS_SELECTOR, "form.upload button[type=submit]").click()
        answer = wait.until(ec.presence_of_element_located((By.ID, "answer-h")))
        assert answer.text.split()[0] in CLASSES
        heat = find(By.CSS_SELECTOR, "img[data-heatmap]")
        wait.until(lambda d: d.execute_script("return arguments[0].naturalWidth", heat) > 0)
        box = find(By.CSS_SELECTOR, "svg[data-box] rect")
        assert float(box.get_attribute("width")) > 0
        assert len(driver.find_elements(By.CSS_SELECTOR, "table.scores tbody tr")) == 3
        shot("12-quick-test")

        # Label next: three suggestions labeled with number keys (their true class), without
        # leaving the page; the quick test's stored photo is in the pool too.
        driver.get(f"{base}/next")
        cards = wait.until(
            ec.presence_of_all_elements_located((By.CSS_SELECTOR, "#sugg-h ~ ul [data-label-card]"))
        )
        assert len(cards) == len(truth) + 1  # the unlabeled images and the stored photo
        shot("13-label-next")
        done = 0
        for card in cards:
            name = card.find_element(By.CSS_SELECTOR, ".name").text
            if name not in truth:
                continue
            driver.execute_script("arguments[0].focus()", card)
            ActionChains(driver).send_keys(str(CLASSES.index(truth[name]) + 1)).perform()
            wait.until(lambda d, c=card: "labeled" in c.get_attribute("class"))
            assert card.find_element(By.CSS_SELECTOR, "[data-done]").text == f"✓ {truth[name]}"
            done += 1
            if done == 3:
                break
        assert done == 3
        assert driver.switch_to.active_element.get_attribute("data-label-card") is not None
        status = find(By.CSS_SELECTOR, "[data-label-status]")
        assert status.get_attribute("textContent").startswith("Labeled ")
        shot("14-labeled")
        labeled = [i for i in _images(served, pid) if i["filename"] in truth and i["label"]]
        assert len(labeled) == 3 and all(i["label"] == truth[i["filename"]] for i in labeled)

        # The same page on a phone-sized screen: no sideways scrolling.
        assert_fits_phone(driver)
        driver.save_screenshot(str(ARTIFACTS / "console" / "15-label-next-phone.png"))
        driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})

        # The audit of the project, with its findings' one-click fixes.
        driver.get(f"{base}/audit")
        meta = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "main .meta")))
        assert meta.text.startswith(f"{len(_images(served, pid))} images")
        shot("16-audit")
        driver.get(f"{base}/next")

        # Retrain: the job page follows it; the new version replaces production.
        wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "form[action$='/retrain']")))
        find(By.CSS_SELECTOR, "form[action$='/retrain'] button").send_keys(Keys.ENTER)
        wait.until(
            ec.text_to_be_present_in_element((By.CSS_SELECTOR, '[data-job="status"]'), "succeeded")
        )
        shot("17-retrain-done")
        driver.get(f"{base}/models")
        versions = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "table.versions")))
        first = versions.find_element(By.CSS_SELECTOR, "tbody tr")
        assert first.text.startswith("v2") and "production" in first.text, first.text
        assert "promoted" in first.text and "was stale" in first.text
        moves = find(By.CSS_SELECTOR, "ol.moves").text
        assert "promotion, v1 → v2" in moves
        shot("18-promoted")


def _images(url: str, pid: str) -> list[dict]:
    r = httpx.get(
        f"{url}/v1/projects/{pid}/images",
        params={"limit": 500},
        headers={"Authorization": f"Bearer {API_KEY}"},
    )
    return r.json()["items"]
