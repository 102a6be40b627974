"""GET /v1/projects/{id}/audit: planted leakage, a flipped label and a blank frame are found."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from app.services import audit as audit_service
from app.storage import open_store
from tests.api.helpers import assert_problem, png
from tests.conftest import Api
from tests.factories import digit_images


def _encode(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


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


def test_audit_of_too_large_a_project_says_the_limit(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    pid = api.project()["id"]
    api.upload(pid, [("a.png", png(1)), ("b.png", png(2))], label="x")
    monkeypatch.setattr(audit_service, "MAX_IMAGES", 1)
    body = assert_problem(api.client.get(f"/v1/projects/{pid}/audit"), 422, "audit_too_large")
    assert body["limit"] == 1


def test_audit_of_an_empty_project_and_of_another_tenants(api: Api, acme) -> None:
    pid = api.project()["id"]
    body = api.client.get(f"/v1/projects/{pid}/audit").json()
    assert body["image_count"] == 0 and body["findings"] == []
    assert acme.get(f"/v1/projects/{pid}/audit").status_code == 404
