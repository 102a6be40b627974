"""The console in a real browser (headless Chromium via Selenium, tests/browser.py): sign in
→ create a project → upload a zip of real images → start a linear probe from the form
built from the method's schema → watch the job finish (run by the worker's own code) →
open the model. A screenshot of each page goes to test-artifacts/console/."""

from __future__ import annotations

import base64
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.api.main import create_app
from app.config import Settings
from tests.browser import ARTIFACTS, assert_fits_phone, chrome, screenshot, serve
from tests.conftest import API_KEY
from tests.factories import digit_images, make_zip
from worker.runner import run_job

#: Form controls without an accessible name, and images without alt text.
UNLABELED = """return [...document.querySelectorAll(
    'input:not([type=hidden]), select, textarea, button, img')].filter((e) =>
    e.tagName === 'IMG' ? !e.hasAttribute('alt')
    : !(e.labels && e.labels.length) && !e.getAttribute('aria-label')
      && !(e.tagName === 'BUTTON' && e.textContent.trim())).map((e) => e.outerHTML)"""


@pytest.fixture
def console(settings: Settings) -> Iterator[tuple[str, threading.Event]]:
    """The app on a real server, and the event that lets its worker go: a job it enqueues
    runs on a thread through :func:`worker.runner.run_job` (what the Celery task calls)
    once the event is set, so the test sees the job page before the job moves."""
    go = threading.Event()

    def work(job_id: str, queue: str) -> None:
        go.wait(120)
        run_job(job_id, settings=settings, queue=queue)

    def enqueue(job_id: str, queue: str) -> None:
        threading.Thread(target=work, args=(job_id, queue), daemon=True).start()

    with serve(create_app(settings, enqueue=enqueue)) as url:
        yield url, go


def test_sign_in_upload_train_watch_and_open_the_model(
    console: tuple[str, threading.Event], tmp_path: Path
) -> None:
    console_url, worker_go = console
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import Select, WebDriverWait

    members = {f"{label}/{i}.png": png for i, (label, png) in enumerate(digit_images(8, [0, 1]))}
    members["1/notes.png"] = b"not an image"
    archive = tmp_path / "digits.zip"
    archive.write_bytes(make_zip(members))

    with chrome(window=(1200, 900)) as driver:
        wait = WebDriverWait(driver, 60)

        def shot(name: str) -> None:
            """Keep a screenshot of the page; every control has a label, every image alt."""
            screenshot(driver, f"console/{name}")
            assert driver.execute_script(UNLABELED) == [], name

        # Sign in (the console sends us there, then back).
        driver.get(f"{console_url}/console/")
        wait.until(ec.url_contains("/console/sign-in"))
        shot("01-sign-in")
        driver.find_element(By.ID, "key").send_keys(API_KEY)
        driver.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
        wait.until(ec.presence_of_element_located((By.LINK_TEXT, "New project"))).click()

        # Create a project: classes with descriptions, a negative class.
        wait.until(ec.presence_of_element_located((By.ID, "name"))).send_keys("digits")
        driver.find_element(By.ID, "classes").send_keys("0: a handwritten zero\n1: a one")
        driver.find_element(By.ID, "negative_classes").send_keys("blank: no digit")
        shot("02-new-project")
        driver.find_element(By.CSS_SELECTOR, "main form button[type=submit]").click()
        wait.until(ec.presence_of_element_located((By.ID, "upload-h")))
        assert driver.find_element(By.TAG_NAME, "h1").text == "digits"
        assert "negative" in driver.find_element(By.CSS_SELECTOR, ".cards").text

        # Upload the zip: per-file results, the rejected file with its reason.
        driver.find_element(By.ID, "files").send_keys(str(archive))
        driver.find_element(By.CSS_SELECTOR, "form.upload button[type=submit]").click()
        result = wait.until(ec.presence_of_element_located((By.ID, "upload-result")))
        assert result.text.startswith("Upload: 16 stored, 0 duplicates skipped, 1 rejected")
        rejected = driver.find_element(By.CSS_SELECTOR, "table.rejected").text
        assert "digits.zip:1/notes.png" in rejected and "image_undecodable" in rejected
        counts = [c.text for c in driver.find_elements(By.CSS_SELECTOR, ".card .count")]
        assert sorted(counts) == ["0 images", "8 images", "8 images"], counts
        thumbs = driver.find_elements(By.CSS_SELECTOR, ".grid img")
        assert len(thumbs) == 16
        wait.until(
            lambda d: all(
                d.execute_script("return arguments[0].naturalWidth", t) > 0 for t in thumbs
            )
        )
        shot("03-project-uploaded")

        # Drag and drop: a file dropped on the zone is uploaded at once (the page's script).
        dropped = base64.b64encode(digit_images(1, [0], offset=20)[0][1]).decode()
        driver.execute_script(
            """const bytes = Uint8Array.from(atob(arguments[0]), (c) => c.charCodeAt(0));
            const data = new DataTransfer();
            data.items.add(new File([bytes], "dropped.png", {type: "image/png"}));
            document.querySelector(".drop").dispatchEvent(
                new DragEvent("drop", {dataTransfer: data, bubbles: true, cancelable: true}));""",
            dropped,
        )
        wait.until(
            ec.text_to_be_present_in_element(
                (By.ID, "upload-result"), "Upload: 1 stored, 0 duplicates skipped, 0 rejected"
            )
        )
        newest = driver.find_elements(By.CSS_SELECTOR, ".grid .tile")[-1]
        assert newest.find_element(By.CSS_SELECTOR, ".name").text == "dropped.png"
        newest.find_element(By.CSS_SELECTOR, "form[data-confirm] button").click()  # asks first
        driver.switch_to.alert.accept()
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".grid .tile")) == 16)

        # Filter by label, then relabel one image and see the counts move.
        label_filter = driver.find_element(By.CSS_SELECTOR, "form.filters select[name=label]")
        Select(label_filter).select_by_visible_text("1")
        driver.find_element(By.CSS_SELECTOR, "form.filters button").click()
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".grid .tile")) == 8)
        relabel = driver.find_element(By.CSS_SELECTOR, ".grid .tile form.relabel input[name=label]")
        relabel.clear()
        relabel.send_keys("0")
        relabel.submit()  # back to the same filtered page, one image fewer
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".grid .tile")) == 7)
        counts = [c.text for c in driver.find_elements(By.CSS_SELECTOR, ".card .count")]
        assert sorted(counts) == ["0 images", "7 images", "9 images"], counts

        # Train: the form is built from linear_probe's params schema.
        driver.find_element(By.LINK_TEXT, "Train a model").click()
        max_iter = wait.until(ec.presence_of_element_located((By.ID, "p-max_iter")))
        assert max_iter.get_attribute("type") == "number"
        assert max_iter.get_attribute("placeholder") == "300"
        assert driver.find_element(By.CSS_SELECTOR, "label[for=p-Cs]").text == "Cs"
        max_iter.send_keys("200")
        shot("04-train-form")
        driver.find_element(By.CSS_SELECTOR, "#train-form button[type=submit]").click()

        # The job page follows the job live (its script polls), until the model exists.
        status = wait.until(
            ec.presence_of_element_located((By.CSS_SELECTOR, '[data-job="status"]'))
        )
        assert status.text == "queued"
        assert driver.find_element(By.CSS_SELECTOR, '[data-job="cancel"]').is_displayed()
        worker_go.set()  # the page was rendered while queued: what follows is its script's
        job_ends = WebDriverWait(driver, 600)  # feature extraction on a busy CPU
        job_ends.until(
            lambda d: (
                d.find_element(By.CSS_SELECTOR, '[data-job="status"]').text
                in ("succeeded", "failed", "cancelled")
            )
        )
        assert status.text == "succeeded", driver.find_element(By.CSS_SELECTOR, ".job").text
        assert driver.find_element(By.CSS_SELECTOR, '[data-job="percent"]').text == "100.0%"
        assert not driver.find_element(By.CSS_SELECTOR, '[data-job="cancel"]').is_displayed()
        link = wait.until(ec.visibility_of_element_located((By.LINK_TEXT, "Open the model")))
        shot("05-job-done")
        link.click()

        wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, ".facts")))
        assert driver.find_element(By.TAG_NAME, "h1").text.startswith("Model v1")
        assert "linear_probe" in driver.find_element(By.CSS_SELECTOR, ".facts").text
        shot("06-model")

        # The project page on a phone-sized screen: no sideways scrolling.
        driver.find_element(By.CSS_SELECTOR, ".crumbs a").click()
        wait.until(ec.presence_of_element_located((By.ID, "upload-h")))
        assert_fits_phone(driver)
        driver.save_screenshot(str(ARTIFACTS / "console" / "07-project-phone.png"))
