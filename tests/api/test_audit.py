"""GET /v1/projects/{id}/audit: planted leakage, a flipped label and a blank frame are found."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from app.services.images import blob_key
from app.storage import open_store
from tests.api.helpers import assert_problem
from tests.conftest import Api, make_settings, migrate
from tests.factories import digit_images


def _encode(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_audit_finds_leakage_mislabel_and_blank_image(api: Api) -> None:
    pid = api.project()["id"]
    items = digit_images(15, classes=range(5), smooth=True)
    truth = {17: "1", 33: "2", 64: "4"}
    for i, wrong in zip(truth, ["4", "0", "2"], strict=True):
        items[i] = (wrong, items[i][1])
    api.upload_labeled(pid, items)
    # The same "1" again, one pixel changed (new bytes): in the test split, it leaks.
    one = np.asarray(Image.open(io.BytesIO(items[20][1])).convert("L")).copy()
    one[0, 0] ^= 1
    assert (
        api.upload(pid, [("again.png", _encode(one))], label="1", split="test").status_code == 201
    )
    assert (
        api.upload(pid, [("blank.png", _encode(np.zeros((32, 32), np.uint8)))]).status_code == 201
    )
    images = {
        i["filename"]: i["id"]
        for i in api.client.get(f"/v1/projects/{pid}/images?limit=200").json()["items"]
    }

    r = api.client.get(f"/v1/projects/{pid}/audit")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["image_count"] == 77 and body["backbone"] == "efficientnet_lite0"
    by_kind: dict[str, list[dict]] = {}
    for f in body["findings"]:
        by_kind.setdefault(f["kind"], []).append(f)
    assert body["summary"]["leakage"] == 1
    (leak,) = by_kind["leakage"]
    assert set(leak["image_ids"]) == {images["again.png"], images["1-20.png"]}
    mislabeled = {f["image_ids"][0]: f["suggested_label"] for f in by_kind["mislabel"]}
    flipped = {images[f"{items[i][0]}-{i}.png"]: label for i, label in truth.items()}
    hits = [i for i in flipped if mislabeled.get(i) == flipped[i]]
    assert len(hits) >= 2, (mislabeled, flipped)
    assert any(
        f["image_ids"] == [images["blank.png"]] and "blank" in f["explanation"]
        for f in by_kind["image_quality"]
    )
    assert body["summary"] == {k: len(by_kind.get(k, [])) for k in body["summary"]}
    assert "test split" in body["balance"]["note"]

    assert body["leakage"] == {"test_images_with_train_near_duplicates": 1}
    again = api.client.get(f"/v1/projects/{pid}/audit").json()  # cached: same result
    assert again == body

    # A model trained on these images says so in its metrics, and in its model.json.
    model = api.client.get(f"/v1/models/{api.train(pid)['model_id']}").json()
    metrics = model["metrics"]
    assert metrics["leakage"] == {"test_images_with_train_near_duplicates": 1}
    assert [w["code"] for w in metrics["warnings"]] == ["test_split_leakage"]
    assert metrics["audit"] == {k: body[k] for k in ("digest", "backbone", "summary")}
    manifest = json.loads(
        open_store(api.settings.resolved_storage_url).get(f"models/{pid}/{model['id']}/model.json")
    )
    assert manifest["metrics"]["leakage"] == metrics["leakage"]

    assert api.client.delete(f"/v1/projects/{pid}/images/{images['again.png']}").status_code == 204
    after = api.client.get(f"/v1/projects/{pid}/audit").json()
    assert after["digest"] != body["digest"] and after["summary"]["leakage"] == 0
    clean = api.client.get(f"/v1/models/{api.train(pid)['model_id']}").json()["metrics"]
    assert clean["audit"]["summary"]["leakage"] == 0 and clean["audit"]["digest"] == after["digest"]
    assert "leakage" not in clean and "warnings" not in clean


@pytest.fixture
def jobs_api(tmp_path: Path) -> Iterator[Api]:
    """An API on which projects of more than 10 images are audited by a job."""
    settings = make_settings(tmp_path, audit_inline_max_images=10)
    migrate(settings)
    api = Api(settings)
    with api.client:
        yield api


def test_a_large_projects_audit_is_a_job_cached_until_the_images_change(jobs_api: Api) -> None:
    api = jobs_api
    pid = api.project()["id"]
    items = digit_images(6, classes=range(4))
    api.upload_labeled(pid, items)
    one = np.asarray(Image.open(io.BytesIO(items[0][1])).convert("L")).copy()
    one[0, 0] ^= 1  # the first "0" again, new bytes, in the test split: it leaks
    assert (
        api.upload(pid, [("again.png", _encode(one))], label="0", split="test").status_code == 201
    )
    url = f"/v1/projects/{pid}/audit"

    r = api.client.get(url)
    assert r.status_code == 202, r.text
    pending = r.json()
    assert r.headers["Location"] == url and int(r.headers["Retry-After"]) > 0
    assert pending["status"] == "queued" and pending["image_count"] == 25
    assert api.client.get(url).json()["job_id"] == pending["job_id"]  # no second job
    assert api.queued == [pending["job_id"]]
    # not a training job: the training routes do not show it
    assert api.client.get(f"/v1/jobs/{pending['job_id']}").status_code == 404
    assert api.client.get(f"/v1/projects/{pid}/jobs").json()["items"] == []

    cancelled = api.client.post(f"{url}/cancel")
    assert cancelled.status_code == 202 and cancelled.json()["status"] == "cancelled"
    assert_problem(api.client.post(f"{url}/cancel"), 409, "job_not_cancellable")
    api.queued.clear()
    again = api.client.get(url).json()  # a cancelled job does not block: a new one
    assert again["job_id"] != pending["job_id"] and again["status"] == "queued"
    assert api.run_queued() == ["succeeded"]

    r = api.client.get(url)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["image_count"] == 25 and body["digest"] == pending["digest"]
    assert body["summary"]["leakage"] == 1 and body["leakage"] == {
        "test_images_with_train_near_duplicates": 1
    }
    assert api.client.get(url).json() == body and api.queued == []  # from the cache

    # A model trained now records that audit (it is current); none is computed in the job.
    metrics = api.client.get(f"/v1/models/{api.train(pid)['model_id']}").json()["metrics"]
    assert metrics["audit"] == {k: body[k] for k in ("digest", "backbone", "summary")}
    assert metrics["leakage"] == {"test_images_with_train_near_duplicates": 1}

    # An image moved: the cached audit is stale; training records none, GET starts a job.
    leaked = next(f["image_ids"] for f in body["findings"] if f["kind"] == "leakage")
    r = api.client.patch(f"/v1/projects/{pid}/images/{leaked[0]}", json={"split": "train"})
    assert r.status_code == 200, r.text
    stale = api.client.get(f"/v1/models/{api.train(pid)['model_id']}").json()["metrics"]
    assert "DOVECOTE_AUDIT_INLINE_MAX_IMAGES" in stale["audit"]["skipped"]
    assert "leakage" not in stale
    r = api.client.get(url)
    assert r.status_code == 202 and r.json()["digest"] != body["digest"]

    # A failed job (an image's bytes gone, its features not cached) is a 409 naming it,
    # until ?retry=true.
    open_store(api.settings.resolved_storage_url).delete(blob_key(pid, _sha(items[1][1])))
    shutil.rmtree(api.settings.feature_cache_dir)
    assert api.run_queued() == ["failed"]
    failed = assert_problem(api.client.get(url), 409, "audit_job_failed")
    assert failed["job_id"] == r.json()["job_id"] and failed["error"]["code"] == "image_missing"
    retried = api.client.get(url, params={"retry": "true"})
    assert retried.status_code == 202 and retried.json()["job_id"] != failed["job_id"]


def test_audit_of_an_empty_project_and_of_another_tenants(api: Api, acme) -> None:
    pid = api.project()["id"]
    body = api.client.get(f"/v1/projects/{pid}/audit").json()
    assert body["image_count"] == 0 and body["findings"] == []
    assert acme.get(f"/v1/projects/{pid}/audit").status_code == 404
