"""GET /v1/models/{id}/monitoring: per-window counts, class mix, confidence, rejections,
feedback accuracy and drift, with the real worker code; images from a shifted
distribution (inverted, heavily blurred) are flagged, images like the training ones not."""

from __future__ import annotations

import io
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFilter
from sqlalchemy import update

from app.config import Settings
from app.db.base import utcnow
from app.db.models import StoredPrediction
from app.db.session import session_scope
from app.services import monitoring, stats
from app.storage import open_store
from app.transfer import features
from tests.api.helpers import assert_problem
from tests.conftest import Api, make_settings, migrate
from tests.factories import digit_images, encode


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    s = make_settings(tmp_path, webhook_allow_private=True)  # a receiver on 127.0.0.1
    migrate(s)
    return s


def _pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("L"))


def _inverted(data: bytes) -> bytes:
    return encode(255 - _pixels(data))


def _blurred(data: bytes) -> bytes:
    return encode(np.asarray(Image.fromarray(_pixels(data)).filter(ImageFilter.GaussianBlur(4))))


def _predict(api: Api, pid: str, images: list[bytes], **params: object) -> list[dict]:
    r = api.client.post(
        f"/v1/projects/{pid}/predict",
        params=params,
        files=[("files", (f"{i}.png", b)) for i, b in enumerate(images)],
    )
    assert r.status_code == 200, r.text
    return r.json()["predictions"]


def _age(api: Api, ids: list[str], days: int) -> None:
    """Move these stored predictions ``days`` back in time."""
    with session_scope(api.settings.resolved_database_url) as db:
        db.execute(
            update(StoredPrediction)
            .where(StoredPrediction.id.in_(ids))
            .values(created_at=utcnow() - timedelta(days=days))
        )
        db.commit()


def test_monitoring_flags_shifted_images_and_not_images_like_the_training_ones(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    pid = api.project("digits", store_predictions=True)["id"]
    api.upload_labeled(pid, digit_images(10, classes=range(5)))
    model_id = api.train(pid)["model_id"]
    held_out = [png for _, png in digit_images(6, classes=range(5), offset=10)]  # unseen
    r = api.client.post(
        f"/v1/projects/{pid}/webhooks",
        json={"url": "http://127.0.0.1:9/drift", "events": ["model.drift"]},
    )
    assert r.status_code == 201, r.text
    hook = r.json()["id"]

    like_training = _predict(api, pid, held_out)  # 2 days ago
    _age(api, [p["prediction_id"] for p in like_training], days=2)
    blurred = _predict(api, pid, [_blurred(b) for b in held_out])  # yesterday
    _age(api, [p["prediction_id"] for p in blurred], days=1)
    inverted = _predict(api, pid, [_inverted(b) for b in held_out])  # today
    rejected = _predict(api, pid, held_out[:4], reject_below=1.0)  # today, all rejected
    first = like_training[0]
    r = api.client.post(
        f"/v1/predictions/{first['prediction_id']}/feedback", json={"correct": True}
    )
    assert r.status_code == 200, r.text
    wrong = next(p for p in like_training[1:] if p["label"] != "4")
    r = api.client.post(f"/v1/predictions/{wrong['prediction_id']}/feedback", json={"label": "4"})
    assert r.status_code == 200, r.text

    r = api.client.get(f"/v1/models/{model_id}/monitoring", params={"window": "day"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model_id"] == model_id and body["window"] == "day"
    assert body["store_predictions"] is True and body["drift_measure"] == "mmd2"
    assert body["reference_images"] == 50  # the training images
    assert body["drift"] is True
    old, yesterday, today = body["windows"]
    print("drift scores:", [w["drift_score"] for w in body["windows"]])
    assert old["predictions"] == old["images"] == 30
    assert old["drift"] is False and old["drift_score"] < body["drift_threshold"]
    assert yesterday["drift"] is True and yesterday["drift_score"] >= body["drift_threshold"]
    assert today["drift"] is True and today["drift_score"] >= body["drift_threshold"]
    # the pixel signature sees the inverted digits too, and the held-out ones as alike
    assert today["drift_score_pixels"] >= body["drift_pixel_threshold"]
    assert old["drift_score_pixels"] < body["drift_pixel_threshold"]
    # the windows' other figures
    assert old["classes"] == {
        label: sum(p["label"] == label for p in like_training)
        for label in sorted({p["label"] for p in like_training})
    }
    assert old["rejected"] == 0 and old["rejection_rate"] == 0.0
    assert sum(old["confidence_histogram"]) == 30
    assert len(old["confidence_histogram"]) == len(body["confidence_bins"]) - 1
    assert old["feedback"] == {"confirmed": 1, "corrected": 1, "accuracy": 0.5}
    assert today["predictions"] == len(inverted) + len(rejected) == 34
    assert today["images"] == 34 and today["rejected"] == 4
    assert today["rejection_rate"] == pytest.approx(4 / 34)
    assert today["feedback"] == {"confirmed": 0, "corrected": 0, "accuracy": None}
    assert [w["start"] for w in body["windows"]] == sorted(w["start"] for w in body["windows"])

    # One model.drift event per flagged window, not one per call.
    def drift_events() -> list[dict]:
        r = api.client.get(f"/v1/webhooks/{hook}/deliveries")
        assert r.status_code == 200, r.text
        return [d["body"]["data"] for d in r.json()["items"]]

    events = drift_events()
    assert sorted(e["window"]["start"] for e in events) == [yesterday["start"], today["start"]]
    assert {e["model"]["id"] for e in events} == {model_id}
    assert all(e["drift_score"] >= e["drift_threshold"] for e in events)

    # Every image's features are cached now: another call takes no backbone pass.
    def no_pass(*args: object, **kwargs: object) -> None:
        raise AssertionError("a cached image took a backbone pass")

    monkeypatch.setattr(features, "embed_tensors", no_pass)
    again = api.client.get(f"/v1/models/{model_id}/monitoring", params={"window": "day"})
    assert again.json()["windows"] == body["windows"]

    hours = api.client.get(
        f"/v1/models/{model_id}/monitoring",
        params={"window": "hour", "since": (utcnow() - timedelta(hours=3)).isoformat()},
    ).json()
    (this_hour,) = hours["windows"]
    assert this_hour["predictions"] == 34 and this_hour["drift"] is True
    assert len(drift_events()) == 3  # the hour window alerts once too; days not again
    # The worker's periodic check covers today and yesterday: both alerted already.
    with session_scope(api.settings.resolved_database_url) as db:
        store = open_store(api.settings.resolved_storage_url)
        checked = monitoring.check_recent(db=db, settings=api.settings, store=store)
    assert checked == {"checked": 1, "failed": 0}
    assert len(drift_events()) == 3

    # /metrics: service-wide aggregates only, no series per model
    text = api.client.get("/metrics").text
    assert 'dovecote_stored_predictions{answer="answered"} 90' in text
    assert 'dovecote_stored_predictions{answer="rejected"} 4' in text
    assert 'dovecote_prediction_feedback{feedback="confirmed"} 1' in text
    assert 'dovecote_prediction_feedback{feedback="corrected"} 1' in text
    assert model_id not in text and pid not in text
    # Counted at most once per DOVECOTE_METRICS_CACHE_SECONDS (60): one more stored
    # prediction shows at the next count, not at the next scrape.
    _predict(api, pid, held_out[:1])
    assert 'dovecote_stored_predictions{answer="answered"} 90' in api.client.get("/metrics").text
    with session_scope(api.settings.resolved_database_url) as db:
        fresh = stats.stored_predictions(db=db, max_age=0)
    assert fresh["answered"] == 91
    assert 'dovecote_stored_predictions{answer="answered"} 91' in api.client.get("/metrics").text


def test_monitoring_of_a_model_without_stored_predictions_and_bad_queries(api: Api, acme) -> None:
    pid = api.project("quiet")["id"]
    api.upload_labeled(pid, digit_images(4, classes=range(2)))
    model_id = api.train(pid)["model_id"]
    _predict(api, pid, [digit_images(1, classes=[0], offset=5)[0][1]])  # not stored
    body = api.client.get(f"/v1/models/{model_id}/monitoring").json()
    assert body["store_predictions"] is False and body["windows"] == []
    assert body["drift"] is False

    url = f"/v1/models/{model_id}/monitoring"
    assert_problem(api.client.get(url, params={"window": "week"}), 422, "validation_error")
    now = utcnow()
    later = {"since": now.isoformat(), "until": (now - timedelta(days=1)).isoformat()}
    assert_problem(api.client.get(url, params=later), 422, "invalid_input")
    too_long = {"window": "hour", "since": (now - timedelta(days=365)).isoformat()}
    assert_problem(api.client.get(url, params=too_long), 422, "invalid_input")
    assert_problem(
        api.client.get(url, params={"until": "0001-01-02T00:00:00"}), 422, "invalid_input"
    )
    assert acme.get(url).status_code == 404
    assert api.client.get("/v1/models/mdl_nope/monitoring").status_code == 404
