"""The learning loop: stored predictions, feedback, "label these next" suggestions, and the
retention sweep; with the real worker code."""

from __future__ import annotations

import hashlib
import io
from datetime import timedelta

import numpy as np
from fastapi.testclient import TestClient
from PIL import Image as PILImage
from sqlalchemy import update

from app.db.base import utcnow
from app.db.models import StoredPrediction
from app.db.session import session_scope
from app.services import predictions as predictions_service
from app.storage import open_store
from tests.api.helpers import assert_problem, blob_files, digit, image_blobs
from tests.conftest import Api
from tests.factories import digit_images, encode


def files(*items: tuple[str, bytes]) -> list[tuple[str, tuple[str, bytes]]]:
    return [("files", item) for item in items]


def trained_project(api: Api, store: bool = True, classes: tuple[int, ...] = (0, 1)) -> str:
    pid = api.project("digits", store_predictions=store)["id"]
    api.upload_labeled(pid, digit_images(6, list(classes)))
    api.train(pid)
    return pid


def predict(api: Api, pid: str, *images: tuple[str, bytes], **params: object) -> dict:
    r = api.client.post(f"/v1/projects/{pid}/predict", params=params, files=files(*images))
    assert r.status_code == 200, r.text
    return r.json()


def predictions(api: Api, pid: str, **params: object) -> dict:
    r = api.client.get(f"/v1/projects/{pid}/predictions", params=params)
    assert r.status_code == 200, r.text
    return r.json()


def blend(a: bytes, b: bytes, alpha: float = 0.5) -> bytes:
    """``alpha`` of ``a`` and the rest of ``b``, pixel by pixel: a picture between two classes."""
    x = np.asarray(PILImage.open(io.BytesIO(a)).convert("L"), dtype=np.float64)
    y = np.asarray(PILImage.open(io.BytesIO(b)).convert("L"), dtype=np.float64)
    return encode((alpha * x + (1 - alpha) * y).astype(np.uint8))


def ambiguous_image(api: Api, pid: str) -> bytes:
    """The blend of a 0 and a 1 the project's model is least sure about (smallest margin)."""
    zero, one = digit(0, 60), digit(1, 60)
    candidates = [blend(zero, one, a) for a in np.linspace(0.2, 0.8, 13)]
    answer = predict(api, pid, *[(f"b{i}.png", c) for i, c in enumerate(candidates)], top_k=2)
    margins = [p["scores"][0]["score"] - p["scores"][1]["score"] for p in answer["predictions"]]
    return candidates[int(np.argmin(margins))]


def test_project_settings_are_shown_and_patched(api: Api) -> None:
    project = api.project("p")
    assert (project["store_predictions"], project["prediction_retention_days"]) == (False, 30)
    r = api.client.patch(
        f"/v1/projects/{project['id']}",
        json={"store_predictions": True, "prediction_retention_days": 7},
    )
    assert r.status_code == 200, r.text
    assert (r.json()["store_predictions"], r.json()["prediction_retention_days"]) == (True, 7)
    r = api.client.patch(f"/v1/projects/{project['id']}", json={"prediction_retention_days": 0})
    assert_problem(r, 422, "validation_error")
    r = api.client.patch(f"/v1/projects/{project['id']}", json={"store_predictions": None})
    assert_problem(r, 422, "validation_error")


def test_predict_with_storage_stores_and_lists_with_filters(api: Api) -> None:
    pid = trained_project(api)
    model_id = api.client.get(f"/v1/projects/{pid}").json()["default_model_id"]
    zero, one = digit(0, 30), digit(1, 30)
    before = blob_files(api.settings)
    t0 = utcnow()
    answer = predict(api, pid, ("zero.png", zero), ("one.png", one))
    ids = [p["prediction_id"] for p in answer["predictions"]]
    assert all(ids), answer
    # The bytes are stored once each, under the same key scheme as uploads.
    new = blob_files(api.settings) - before
    assert new == {f"images/{pid}/{hashlib.sha256(d).hexdigest()}" for d in (zero, one)}
    # The same image again: a second row, no second blob.
    rejected = predict(api, pid, ("zero-again.png", zero), reject_below=0.999999)
    assert rejected["predictions"][0]["label"] is None
    assert blob_files(api.settings) - before == new

    page = predictions(api, pid)
    assert {p["id"] for p in page["items"][:2]} == set(ids) and len(page["items"]) == 3
    first = next(p for p in page["items"] if p["filename"] == "zero.png")
    assert first["label"] == answer["predictions"][0]["label"] == "0"
    assert (first["model_id"], first["model_version"], first["filename"]) == (
        model_id,
        1,
        "zero.png",
    )
    assert first["sha256"] == hashlib.sha256(zero).hexdigest()
    assert first["scores"][0]["label"] == "0" and first["feedback"] is None
    assert first["rejected"] is False

    assert [p["filename"] for p in predictions(api, pid, label="1")["items"]] == ["one.png"]
    assert [p["filename"] for p in predictions(api, pid, rejected=True)["items"]] == [
        "zero-again.png"
    ]
    assert len(predictions(api, pid, rejected=False)["items"]) == 2
    assert len(predictions(api, pid, model_id=model_id)["items"]) == 3
    assert predictions(api, pid, model_id="mdl_other")["items"] == []
    top = max(p["score"] for p in page["items"])
    assert len(predictions(api, pid, below=top)["items"]) < 3
    assert len(predictions(api, pid, below=1.0)["items"]) == 3
    since = (t0 - timedelta(seconds=1)).isoformat()
    assert len(predictions(api, pid, since=since)["items"]) == 3
    assert predictions(api, pid, until=since)["items"] == []
    one_page = predictions(api, pid, limit=2)
    assert len(one_page["items"]) == 2 and one_page["next_cursor"]
    rest = predictions(api, pid, limit=2, cursor=one_page["next_cursor"])
    assert [p["filename"] for p in rest["items"]] == ["zero-again.png"]
    assert rest["next_cursor"] is None
    r = api.client.get(f"/v1/predictions/{ids[1]}")
    assert r.status_code == 200 and r.json()["filename"] == "one.png"

    # Predicting by model id stores too (the model's project opted in).
    r = api.client.post(f"/v1/models/{model_id}/predict", files=files(("m.png", digit(1, 31))))
    assert r.status_code == 200 and r.json()["predictions"][0]["prediction_id"]


def test_storage_off_stores_nothing(api: Api) -> None:
    pid = trained_project(api, store=False)
    before = blob_files(api.settings)
    answer = predict(api, pid, ("zero.png", digit(0, 30)))
    assert answer["predictions"][0]["prediction_id"] is None
    assert predictions(api, pid)["items"] == []
    assert blob_files(api.settings) == before


def test_feedback_makes_labeled_images_that_the_next_training_uses(
    api: Api, acme: TestClient
) -> None:
    pid = trained_project(api)
    project = api.client.get(f"/v1/projects/{pid}").json()
    model_id = project["default_model_id"]
    counts = {c["name"]: c["image_count"] for c in project["classes"]}
    assert (project["image_count"], counts) == (12, {"0": 6, "1": 6})
    blobs = image_blobs(api.settings, pid)

    zero, one, two = digit(0, 40), digit(1, 40), digit(2, 40)
    answer = predict(api, pid, ("zero.png", zero), ("one.png", one), ("two.png", two))
    zero_id, one_id, two_id = (p["prediction_id"] for p in answer["predictions"])
    assert answer["predictions"][0]["label"] == "0"

    # Bad requests are typed: neither or both fields, a bad label, a look-alike class.
    url = f"/v1/predictions/{zero_id}/feedback"
    assert_problem(api.client.post(url, json={}), 422, "invalid_input")
    assert_problem(api.client.post(url, json={"label": "0", "correct": True}), 422, "invalid_input")
    assert_problem(api.client.post(url, json={"label": "a/b"}), 422, "invalid_label")
    assert_problem(api.client.post(url, json={"label": " "}), 422, "invalid_label")
    assert_problem(api.client.post(url, json={"colour": "red"}), 422, "validation_error")
    # Unknown and another tenant's predictions read the same: 404.
    assert_problem(
        api.client.post("/v1/predictions/prd_nope/feedback", json={"correct": True}),
        404,
        "not_found",
    )
    assert_problem(acme.post(url, json={"correct": True}), 404, "not_found")
    assert_problem(acme.get(f"/v1/predictions/{zero_id}"), 404, "not_found")
    assert_problem(acme.get(f"/v1/projects/{pid}/predictions"), 404, "not_found")

    r = api.client.post(url, json={"correct": True})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["prediction"]["feedback"] == "confirmed"
    assert body["image"]["label"] == "0"
    assert body["image"]["sha256"] == hashlib.sha256(zero).hexdigest()
    assert body["prediction"]["image_id"] == body["image"]["id"]
    r = api.client.post(f"/v1/predictions/{two_id}/feedback", json={"label": "2"})
    assert r.status_code == 200, r.text
    assert r.json()["prediction"]["feedback"] == "corrected"
    # No second copy of the bytes: the images point at the blobs the predictions stored.
    after = image_blobs(api.settings, pid)
    assert after - blobs == {
        f"images/{pid}/{hashlib.sha256(d).hexdigest()}" for d in (zero, one, two)
    }
    content = api.client.get(f"/v1/projects/{pid}/images/{body['image']['id']}/content")
    assert content.status_code == 200 and content.content == zero

    # The same bytes already an image of the project: that image is labeled, no new one.
    up = api.upload(pid, [("one-up.png", one)])
    assert up.status_code == 201, up.text
    image_id = up.json()["items"][0]["id"]
    r = api.client.post(f"/v1/predictions/{one_id}/feedback", json={"label": "1"})
    assert r.status_code == 200, r.text
    assert r.json()["image"]["id"] == image_id and r.json()["image"]["label"] == "1"

    project = api.client.get(f"/v1/projects/{pid}").json()
    counts = {c["name"]: c["image_count"] for c in project["classes"]}
    assert (project["image_count"], counts) == (15, {"0": 7, "1": 7, "2": 1})
    model = api.client.get(f"/v1/models/{model_id}").json()
    assert model["feedback"] == {"confirmed": 2, "corrected": 1}
    listed = api.client.get(f"/v1/projects/{pid}/models").json()["items"]
    assert listed[0]["feedback"] == {"confirmed": 2, "corrected": 1}
    assert [p["filename"] for p in predictions(api, pid, feedback=False)["items"]] == []

    # The next training sees the new labeled images and the new class.
    api.upload_labeled(pid, digit_images(5, [2], offset=50))
    job = api.train(pid)
    second = api.client.get(f"/v1/models/{job['model_id']}").json()
    assert second["classes"] == ["0", "1", "2"]
    assert second["feedback"] == {"confirmed": 0, "corrected": 0}
    assert job["promotion"]["promoted"] is True
    with session_scope(api.settings.resolved_database_url) as db:
        from app.db.models import Model

        assert db.get(Model, job["model_id"]).labeled_images == 20


def test_suggestions_skip_labeled_images_and_rank_ambiguous_first(api: Api) -> None:
    pid = trained_project(api, store=False, classes=(0, 1))
    ambiguous = ambiguous_image(api, pid)
    api.client.patch(f"/v1/projects/{pid}", json={"store_predictions": True})
    r = api.upload(pid, [("clear.png", digit(0, 61)), ("ambiguous.png", ambiguous)])
    assert r.status_code == 201, r.text
    # A stored prediction without feedback is in the pool too; a labeled image never is.
    predict(api, pid, ("pred.png", digit(1, 62)))
    r = api.client.get(f"/v1/projects/{pid}/suggestions", params={"n": 20})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["pool_size"] == 3
    names = [s["filename"] for s in body["items"]]
    assert sorted(names) == ["ambiguous.png", "clear.png", "pred.png"]
    assert names[0] == "ambiguous.png", body
    first = body["items"][0]
    assert first["source"] == "image" and first["image_id"] and first["prediction_id"] is None
    assert first["suggested_label"] in ("0", "1") and 0 <= first["margin"] <= 1
    pred = next(s for s in body["items"] if s["filename"] == "pred.png")
    assert pred["source"] == "prediction" and pred["prediction_id"]
    assert body["model_id"] == api.client.get(f"/v1/projects/{pid}").json()["default_model_id"]

    # Labeling takes an image out of the pool.
    r = api.client.patch(f"/v1/projects/{pid}/images/{first['image_id']}", json={"label": "0"})
    assert r.status_code == 200, r.text
    r = api.client.post(f"/v1/predictions/{pred['prediction_id']}/feedback", json={"label": "1"})
    assert r.status_code == 200, r.text
    body = api.client.get(f"/v1/projects/{pid}/suggestions").json()
    assert [s["filename"] for s in body["items"]] == ["clear.png"] and body["pool_size"] == 1

    assert_problem(
        api.client.get(f"/v1/projects/{pid}/suggestions", params={"n": 0}),
        422,
        "validation_error",
    )
    empty = api.project("no-model")["id"]
    assert_problem(api.client.get(f"/v1/projects/{empty}/suggestions"), 409, "project_has_no_model")


def test_near_duplicates_do_not_fill_the_suggestions(api: Api) -> None:
    pid = trained_project(api, store=False, classes=(0, 1))
    ambiguous = ambiguous_image(api, pid)
    pixels = np.asarray(PILImage.open(io.BytesIO(ambiguous)), dtype=np.int16)
    copies = [
        (f"copy{k}.png", encode(np.clip(pixels + k, 0, 255).astype(np.uint8))) for k in range(4)
    ]
    others = [(f"other{k}.png", data) for k, (_, data) in enumerate(digit_images(3, [3, 7]))]
    r = api.upload(pid, copies + others)
    assert r.status_code == 201, r.text
    body = api.client.get(f"/v1/projects/{pid}/suggestions", params={"n": 3}).json()
    names = [s["filename"] for s in body["items"]]
    assert sum(n.startswith("copy") for n in names) == 1, body


def test_retention_sweep_deletes_expired_predictions_but_not_blobs_in_use(api: Api) -> None:
    pid = trained_project(api)
    api.client.patch(f"/v1/projects/{pid}", json={"prediction_retention_days": 2})
    kept, gone, uploaded = digit(0, 70), digit(1, 70), digit(0, 71)
    assert api.upload(pid, [("up.png", uploaded)]).status_code == 201
    predict(api, pid, ("gone.png", gone), ("up.png", uploaded))
    predict(api, pid, ("kept.png", kept))
    key = {d: f"images/{pid}/{hashlib.sha256(d).hexdigest()}" for d in (kept, gone, uploaded)}
    with session_scope(api.settings.resolved_database_url) as db:
        db.execute(
            update(StoredPrediction)
            .where(StoredPrediction.filename.in_(["gone.png", "up.png"]))
            .values(created_at=utcnow() - timedelta(days=3))
        )
        db.commit()
        counts = predictions_service.sweep_expired(
            db=db, store=open_store(api.settings.resolved_storage_url)
        )
    assert counts == {"predictions_expired": 2, "prediction_blobs_deleted": 1}
    assert [p["filename"] for p in predictions(api, pid)["items"]] == ["kept.png"]
    blobs = blob_files(api.settings)
    assert key[gone] not in blobs and key[uploaded] in blobs and key[kept] in blobs

    # Deleting an image keeps the blob a stored prediction still names.
    r = api.upload(pid, [("kept-up.png", kept)])
    assert r.status_code == 201, r.text
    image_id = r.json()["items"][0]["id"]
    assert api.client.delete(f"/v1/projects/{pid}/images/{image_id}").status_code == 204
    assert key[kept] in blob_files(api.settings)
