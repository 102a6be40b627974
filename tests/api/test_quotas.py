"""Per-tenant quotas, the per-key rate limit, /v1/usage, key revocation and /metrics' key."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from app import cli
from app.api.ratelimit import InFlight, TokenBuckets
from app.db.base import utcnow
from app.db.models import Tenant
from app.db.session import session_scope
from app.services import predict as predict_service
from app.services import predictions as predictions_service
from app.services import quotas
from app.storage import open_store
from app.transfer.predictor import budget_key
from tests.api.helpers import assert_problem, client_with_key, digit, image_blobs, new_key, png
from tests.api.test_learning_loop import predict, predictions, trained_project
from tests.conftest import Api, make_settings, migrate
from tests.factories import make_zip


@pytest.fixture
def limited(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Api]:
    """An app whose settings are ``make_settings`` plus the test's ``quota`` marker kwargs."""
    marker = request.node.get_closest_marker("quota")
    settings = make_settings(tmp_path, **(marker.kwargs if marker else {}))
    migrate(settings)
    a = Api(settings)
    with a.client:
        yield a


def labeled_project(api: Api, client: TestClient | None = None) -> str:
    client = client or api.client
    project = client.post("/v1/projects", json={"name": "p"}).json()
    for label in (0, 1):
        r = client.post(
            f"/v1/projects/{project['id']}/images",
            files=[("files", (f"{label}-{i}.png", digit(label, i))) for i in range(3)],
            data={"label": str(label)},
        )
        assert r.status_code == 201, r.text
    return project["id"]


@pytest.mark.quota(tenant_max_active_jobs=2)
def test_active_jobs_over_the_limit_is_429_with_retry_after(limited: Api) -> None:
    pid = labeled_project(limited)
    for _ in range(2):
        assert (
            limited.client.post(f"/v1/projects/{pid}/jobs", json={"method": "knn"}).status_code
            == 202
        )
    r = limited.client.post(f"/v1/projects/{pid}/jobs", json={"method": "knn"})
    body = assert_problem(r, 429, "too_many_active_jobs")
    assert int(r.headers["Retry-After"]) > 0
    assert body["limit"] == "active_jobs" and body["max"] == 2
    assert "DOVECOTE_TENANT_MAX_ACTIVE_JOBS" in body["detail"]
    assert len(limited.queued) == 2  # nothing was stored or enqueued for the refused one

    # another tenant is not held back by this one's jobs
    with client_with_key(limited, new_key(limited.settings, "acme")) as acme:
        other = labeled_project(limited, acme)
        assert acme.post(f"/v1/projects/{other}/jobs", json={"method": "knn"}).status_code == 202

    limited.run_queued()  # jobs that ended free their slots
    assert (
        limited.client.post(f"/v1/projects/{pid}/jobs", json={"method": "knn"}).status_code == 202
    )


@pytest.mark.quota(tenant_max_projects=2)
def test_projects_over_the_limit_is_403_naming_it(limited: Api) -> None:
    first = limited.project("a")
    limited.project("b")
    body = assert_problem(
        limited.client.post("/v1/projects", json={"name": "c"}), 403, "project_quota_exceeded"
    )
    assert body["limit"] == "projects" and body["max"] == 2
    assert "Retry-After" not in limited.client.post("/v1/projects", json={"name": "c"}).headers
    assert limited.client.delete(f"/v1/projects/{first['id']}").status_code == 204
    limited.project("c")


@pytest.mark.quota(max_webhooks_per_project=2, max_tenant_webhooks=1, webhook_allow_private=True)
def test_webhooks_over_the_limits_are_403_and_store_nothing(limited: Api) -> None:
    a, b = limited.project("a")["id"], limited.project("b")["id"]

    def register(path: str, client: TestClient | None = None) -> httpx.Response:
        return (client or limited.client).post(path, json={"url": "http://127.0.0.1:9/hook"})

    first = register(f"/v1/projects/{a}/webhooks").json()
    assert register(f"/v1/projects/{a}/webhooks").status_code == 201
    body = assert_problem(register(f"/v1/projects/{a}/webhooks"), 403, "webhook_quota_exceeded")
    assert body["limit"] == "webhooks_per_project" and body["max"] == 2
    assert "DOVECOTE_MAX_WEBHOOKS_PER_PROJECT" in body["detail"]
    assert len(limited.client.get(f"/v1/projects/{a}/webhooks").json()["items"]) == 2
    assert register(f"/v1/projects/{b}/webhooks").status_code == 201  # each project its own

    assert register("/v1/webhooks").status_code == 201
    body = assert_problem(register("/v1/webhooks"), 403, "webhook_quota_exceeded")
    assert body["limit"] == "tenant_webhooks" and body["max"] == 1
    assert len(limited.client.get("/v1/webhooks").json()["items"]) == 4
    with client_with_key(limited, new_key(limited.settings, "acme")) as acme:
        assert register("/v1/webhooks", acme).status_code == 201  # another tenant's own

    assert limited.client.delete(f"/v1/webhooks/{first['id']}").status_code == 204
    assert register(f"/v1/projects/{a}/webhooks").status_code == 201


@pytest.mark.quota(tenant_max_models=2, tenant_max_active_jobs=0)
def test_models_over_the_limit_is_403_counting_the_jobs_that_will_make_them(
    limited: Api,
) -> None:
    pid = labeled_project(limited)

    def train() -> httpx.Response:
        return limited.client.post(f"/v1/projects/{pid}/jobs", json={"method": "knn"})

    assert train().status_code == 202
    assert limited.client.get("/v1/usage").json()["models"] == {"used": 1, "limit": 2}
    assert train().status_code == 202  # queued: each will make a model
    body = assert_problem(train(), 403, "model_quota_exceeded")
    assert body["limit"] == "models" and body["max"] == 2
    assert "DOVECOTE_TENANT_MAX_MODELS" in body["detail"]
    assert len(limited.queued) == 2  # nothing stored or enqueued for the refused one

    limited.run_queued()
    models = limited.client.get(f"/v1/projects/{pid}/models").json()["items"]
    assert len(models) == 2
    assert_problem(train(), 403, "model_quota_exceeded")  # kept models count as well
    # A batch prediction makes no model: it is held to the active-job quota only.
    r = limited.client.post(
        f"/v1/models/{models[0]['id']}/batch-predictions",
        files=[("files", ("photos.zip", make_zip({"a.png": digit(0, 70)})))],
    )
    assert r.status_code == 202, r.text
    limited.run_queued()
    with client_with_key(limited, new_key(limited.settings, "acme")) as acme:
        other = labeled_project(limited, acme)  # another tenant has its own count
        assert acme.post(f"/v1/projects/{other}/jobs", json={"method": "knn"}).status_code == 202

    assert limited.client.delete(f"/v1/models/{models[0]['id']}").status_code == 204
    assert train().status_code == 202


@pytest.mark.quota(max_aliases_per_project=1)
def test_aliases_over_the_limit_are_403_and_existing_ones_still_move(limited: Api) -> None:
    pid = labeled_project(limited)
    for _ in range(2):
        limited.client.post(f"/v1/projects/{pid}/jobs", json={"method": "knn"})
    limited.run_queued()
    first, second = (
        m["id"] for m in limited.client.get(f"/v1/projects/{pid}/models").json()["items"]
    )

    def put(name: str, model_id: str) -> httpx.Response:
        return limited.client.put(f"/v1/projects/{pid}/aliases/{name}", json={"model_id": model_id})

    assert put("staging", first).status_code == 200
    body = assert_problem(put("canary", first), 403, "alias_quota_exceeded")
    assert body["limit"] == "aliases_per_project" and body["max"] == 1
    assert "DOVECOTE_MAX_ALIASES_PER_PROJECT" in body["detail"]
    assert put("staging", second).json()["model_id"] == second  # re-pointing is not a new alias
    assert put("production", second).status_code == 200  # production is not counted
    names = [a["name"] for a in limited.client.get(f"/v1/projects/{pid}/aliases").json()]
    assert names == ["production", "staging"]
    history = limited.client.get(f"/v1/projects/{pid}/aliases/canary/history").json()
    assert history["items"] == []  # the refused one left no trace
    assert limited.client.delete(f"/v1/projects/{pid}/aliases/staging").status_code == 204
    assert put("canary", first).status_code == 200


@pytest.mark.quota(tenant_max_images=3)
def test_images_over_the_limit_is_403_and_stores_nothing(limited: Api) -> None:
    pid = limited.project()["id"]
    assert limited.upload(pid, [("a.png", png(1)), ("b.png", png(2))]).status_code == 201
    blobs = image_blobs(limited.settings, pid)
    r = limited.upload(pid, [("c.png", png(3)), ("d.png", png(4))])
    body = assert_problem(r, 403, "image_quota_exceeded")
    assert body["limit"] == "images" and body["max"] == 3
    assert image_blobs(limited.settings, pid) == blobs
    assert limited.client.get(f"/v1/projects/{pid}").json()["image_count"] == 2
    # duplicates are not new images; one more fits exactly
    assert limited.upload(pid, [("a.png", png(1)), ("c.png", png(3))]).status_code == 201
    assert limited.client.get("/v1/usage").json()["images"] == {"used": 3, "limit": 3}


@pytest.mark.quota(tenant_max_stored_bytes=1500)
def test_stored_bytes_over_the_limit_is_403(limited: Api) -> None:
    pid = limited.project()["id"]
    small = png(1, size=(8, 8))
    assert limited.upload(pid, [("a.png", small)]).status_code == 201
    r = limited.upload(pid, [("big.png", png(2, size=(40, 40)))])
    body = assert_problem(r, 403, "storage_quota_exceeded")
    assert body["limit"] == "stored_bytes" and body["max"] == 1500
    assert limited.client.get("/v1/usage").json()["stored_bytes"]["used"] == len(small)


@pytest.mark.quota(tenant_rate_limit=0.5, tenant_rate_burst=3)
def test_rate_limit_per_key_is_429_with_retry_after(limited: Api) -> None:
    for _ in range(3):
        assert limited.client.get("/v1/projects").status_code == 200
    r = limited.client.get("/v1/projects")
    body = assert_problem(r, 429, "rate_limited")
    assert int(r.headers["Retry-After"]) >= 1
    assert "DOVECOTE_TENANT_RATE_LIMIT" in body["detail"]
    # another key has its own bucket; a wrong key is a 401, not a 429
    with client_with_key(limited, new_key(limited.settings, "acme")) as acme:
        assert acme.get("/v1/projects").status_code == 200
    with client_with_key(limited, "wrong") as wrong:
        assert wrong.get("/v1/projects").status_code == 401


def test_token_bucket_refills_at_the_rate() -> None:
    buckets = TokenBuckets(rate=2.0, burst=2)
    assert buckets.take("k", now=0.0) is None
    assert buckets.take("k", now=0.0) is None
    assert buckets.take("k", now=0.0) == 1  # half a second to the next token, rounded up
    assert buckets.take("k", now=0.5) is None  # one token back after 1/rate seconds
    assert buckets.take("k", now=0.5) == 1
    assert buckets.take("k", now=100.0) is None  # never more than the burst
    assert buckets.take("k", now=100.0) is None
    assert buckets.take("k", now=100.0) == 1
    assert buckets.take("other", now=100.0) is None


@pytest.mark.quota(tenant_max_active_jobs=4, tenant_max_projects=5, tenant_max_images=0)
def test_usage_shows_limits_and_current_use(limited: Api) -> None:
    pid = labeled_project(limited)
    limited.client.post(f"/v1/projects/{pid}/jobs", json={"method": "knn"})
    usage = limited.client.get("/v1/usage").json()
    assert usage["tenant"] == "default"
    assert usage["active_jobs"] == {"used": 1, "limit": 4}
    assert usage["projects"] == {"used": 1, "limit": 5}
    assert usage["images"] == {"used": 6, "limit": None}  # 0: no limit
    assert usage["stored_bytes"]["used"] > 0
    assert usage["rate_limit"] is None
    with client_with_key(limited, new_key(limited.settings, "acme")) as acme:
        theirs = acme.get("/v1/usage").json()
    assert theirs["tenant"] == "acme" and theirs["projects"]["used"] == 0
    assert theirs["active_jobs"]["used"] == 0


def test_revoked_key_is_401_at_once(
    api: Api, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DOVECOTE_DATA_DIR", str(api.settings.data_dir))
    key = new_key(api.settings, "acme")
    new_key(api.settings, "other")
    with client_with_key(api, key) as acme:
        assert acme.get("/v1/projects").status_code == 200
        cli.main(["keys", "list", "--tenant", "acme"])
        listing = capsys.readouterr().out.splitlines()
        assert len(listing) == 2 and key not in listing[1]  # a header, one key, never the key
        key_id, tenant, prefix, _, revoked = listing[1].split("\t")
        assert (tenant, prefix, revoked) == ("acme", key[:10] + "...", "-")

        cli.main(["keys", "revoke", key_id])
        assert "revoked" in capsys.readouterr().out
        assert_problem(acme.get("/v1/projects"), 401, "unauthorized")

    cli.main(["keys", "list"])
    rows = [line.split("\t") for line in capsys.readouterr().out.splitlines()[1:]]
    assert {r[1]: r[4] != "-" for r in rows} == {"acme": True, "other": False}
    with pytest.raises(SystemExit, match="No API key matches"):
        cli.main(["keys", "revoke", "key_nope"])


@pytest.mark.quota(metrics_key="scrape-secret")
def test_metrics_can_require_a_key(limited: Api) -> None:
    with client_with_key(limited, None) as anonymous:
        assert_problem(anonymous.get("/metrics"), 401, "unauthorized")
    assert_problem(limited.client.get("/metrics"), 401, "unauthorized")  # a tenant key is not it
    with client_with_key(limited, "scrape-secret") as scraper:
        r = scraper.get("/metrics")
    assert r.status_code == 200 and "dovecote_jobs" in r.text


def test_metrics_open_without_a_metrics_key(api: Api) -> None:
    with client_with_key(api, None) as anonymous:
        assert anonymous.get("/metrics").status_code == 200


@pytest.mark.quota(tenant_max_stored_predictions=3)
def test_past_the_stored_predictions_quota_a_predict_is_answered_not_stored(
    limited: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    pid = trained_project(limited)
    stored = predict(limited, pid, ("a.png", digit(0, 50)), ("b.png", digit(1, 50)))
    assert all(p["prediction_id"] for p in stored["predictions"])
    # Two more would make four: answered as ever, stored not at all.
    over = predict(limited, pid, ("c.png", digit(0, 51)), ("d.png", digit(1, 51)))
    assert [p["label"] in ("0", "1") for p in over["predictions"]] == [True, True]
    assert [p["prediction_id"] for p in over["predictions"]] == [None, None]
    [last] = predict(limited, pid, ("e.png", digit(0, 52)))["predictions"]
    assert last["prediction_id"]  # one more fits
    stored_names = sorted(p["filename"] for p in predictions(limited, pid)["items"])
    assert stored_names == ["a.png", "b.png", "e.png"]  # one request's are stored in any order
    usage = limited.client.get("/v1/usage").json()
    assert usage["stored_predictions"] == {"used": 3, "limit": 3}

    # The retention sweep makes room: a recount (at once here) sees it.
    monkeypatch.setattr(quotas, "RECOUNT_SECONDS", 0.0)
    assert predict(limited, pid, ("f.png", digit(1, 52)))["predictions"][0]["prediction_id"] is None
    with session_scope(limited.settings.resolved_database_url) as db:
        later = utcnow() + timedelta(days=31)
        store = open_store(limited.settings.resolved_storage_url)
        swept = predictions_service.sweep_expired(db=db, store=store, now=later)
    assert swept["predictions_expired"] == 3
    assert predict(limited, pid, ("f.png", digit(1, 52)))["predictions"][0]["prediction_id"]

    # Each tenant's own count.
    with client_with_key(limited, new_key(limited.settings, "acme")) as acme:
        assert acme.get("/v1/usage").json()["stored_predictions"] == {"used": 0, "limit": 3}
    assert limited.client.get("/v1/usage").json()["stored_predictions"]["used"] == 1


@pytest.mark.quota(tenant_max_concurrent_predicts=1)
def test_predicts_in_progress_at_once_are_limited_per_tenant(
    limited: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    pid = trained_project(limited, store=False)
    url = f"/v1/projects/{pid}/predict"
    photo = [("files", ("a.png", digit(0, 60)))]
    started, release = threading.Event(), threading.Event()
    real = predict_service.predict

    def held(**kwargs: Any) -> Any:  # the real predict, once the test lets it go on
        started.set()
        release.wait(60)
        return real(**kwargs)

    monkeypatch.setattr(predict_service, "predict", held)
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(limited.client.post, url, files=photo)
        assert started.wait(60)
        r = limited.client.post(url, files=photo)
        body = assert_problem(r, 429, "too_many_concurrent_predicts")
        assert r.headers["Retry-After"] == "1"
        assert "DOVECOTE_TENANT_MAX_CONCURRENT_PREDICTS" in body["detail"]
        # Another tenant's predict is not held back (it gets as far as its own 404).
        with client_with_key(limited, new_key(limited.settings, "acme")) as acme:
            assert_problem(acme.post("/v1/models/mdl_nope/predict", files=photo), 404, "not_found")
        release.set()
        assert first.result().status_code == 200
    assert limited.client.post(url, files=photo).status_code == 200  # the slot is free again


def test_a_predicts_inference_takes_its_tenants_turns(
    limited: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The tenant's id reaches the predictor's budget (``budget_key``) from the request."""
    pid = trained_project(limited, store=False)
    seen: list[str] = []
    real = predict_service.predict

    def spy(**kwargs: Any) -> Any:
        seen.append(budget_key.get())
        return real(**kwargs)

    monkeypatch.setattr(predict_service, "predict", spy)
    r = limited.client.post(f"/v1/projects/{pid}/predict", files=[("files", ("a.png", digit(1)))])
    assert r.status_code == 200, r.text
    with session_scope(limited.settings.resolved_database_url) as db:
        tenant = db.scalar(select(Tenant).where(Tenant.name == "default"))
    assert tenant is not None and seen == [tenant.id]
    assert budget_key.get() == ""  # and goes no further than the request


def test_in_flight_counts_each_key_up_to_its_limit() -> None:
    slots = InFlight(2)
    assert slots.enter("a") and slots.enter("a") and not slots.enter("a")
    assert slots.enter("b")
    slots.leave("a")
    assert slots.enter("a") and not slots.enter("a")
    for key in ("a", "a", "b"):
        slots.leave(key)
    assert not slots._counts  # nothing kept for idle keys
