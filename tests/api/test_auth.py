"""Authentication, API keys and tenant isolation."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from app import cli
from app.config import get_settings
from app.db.base import utcnow
from app.db.models import ApiKey, Tenant
from app.db.session import session_scope
from app.services import tenants as tenants_service
from tests.api.helpers import (
    assert_problem,
    blob_files,
    client_with_key,
    digit,
    image_count,
    new_key,
    png,
)
from tests.conftest import Api
from tests.factories import digit_images


def test_missing_key_is_401_problem(anonymous: TestClient) -> None:
    r = anonymous.get("/v1/projects")
    assert_problem(r, 401, "unauthorized")
    assert r.headers["www-authenticate"].lower().startswith("bearer")


@pytest.mark.parametrize(
    "authorization",
    [
        "Bearer not-a-key",
        "Bearer ",
        "Bearer dvc_" + "x" * 43,
        "Basic dGVzdC1hZG1pbi1rZXk6",  # the admin key, but not as a Bearer token
        "test-admin-key",  # no scheme at all
    ],
)
def test_wrong_key_is_401_problem(anonymous: TestClient, authorization: str) -> None:
    r = anonymous.get("/v1/projects", headers={"Authorization": authorization})
    assert_problem(r, 401, "unauthorized")


def test_every_v1_route_requires_a_key(anonymous: TestClient) -> None:
    paths = anonymous.get("/openapi.json").json()["paths"]
    checked = 0
    for path, operations in paths.items():
        if not path.startswith("/v1"):
            continue
        url = path.format(
            project_id="prj_x",
            image_id="img_x",
            job_id="job_x",
            model_id="mdl_x",
            name="x",
            prediction_id="prd_x",
            webhook_id="whk_x",
            batch_prediction_id="bpj_x",
        )
        for method in operations:
            r = anonymous.request(method.upper(), url)
            assert_problem(r, 401, "unauthorized")
            checked += 1
    assert checked >= 20


def test_admin_key_from_settings_is_tenant_default(api: Api) -> None:
    r = api.client.get("/v1/projects")
    assert r.status_code == 200
    assert r.json() == {"items": [], "next_cursor": None}
    with session_scope(api.settings.resolved_database_url) as db:
        assert db.scalar(select(Tenant.name)) == "default"


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics", "/docs", "/openapi.json"])
def test_public_endpoints_need_no_key(anonymous: TestClient, path: str) -> None:
    r = anonymous.get(path)
    assert r.status_code == 200, r.text
    if path in ("/healthz", "/readyz"):
        assert r.json()["status"] == "ok"
    if path == "/openapi.json":
        assert r.json()["info"]["title"] == "Dovecote"
    if path == "/docs":
        assert "text/html" in r.headers["content-type"]


def test_keys_create_cli_prints_a_working_key_and_stores_only_its_hash(
    api: Api, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    data_dir = api.settings.data_dir
    # The CLI exports DOVECOTE_DATA_DIR; let monkeypatch restore it afterwards.
    monkeypatch.setenv("DOVECOTE_DATA_DIR", str(data_dir))
    try:
        cli.main(["keys", "create", "--tenant", "acme", "--data-dir", str(data_dir)])
    finally:
        get_settings.cache_clear()
    key = capsys.readouterr().out.strip()
    assert key and "\n" not in key

    # The key works, as tenant acme, which sees none of default's projects.
    api.project("default's")
    with client_with_key(api, key) as acme:
        r = acme.get("/v1/projects")
        assert r.status_code == 200, r.text
        assert r.json()["items"] == []
        r = acme.post("/v1/projects", json={"name": "acme's"})
        assert r.status_code == 201
    names = [p["name"] for p in api.client.get("/v1/projects").json()["items"]]
    assert names == ["default's"]

    # Only the SHA-256 is stored: the key itself is nowhere in the database files.
    with session_scope(api.settings.resolved_database_url) as db:
        rows = list(db.scalars(select(ApiKey)))
        assert [r.key_hash for r in rows] == [hashlib.sha256(key.encode()).hexdigest()]
        assert rows[0].tenant.name == "acme"
        assert len(rows[0].prefix) < len(key) and key.startswith(rows[0].prefix)
    for f in Path(data_dir).glob("dovecote.sqlite*"):
        assert key.encode() not in f.read_bytes(), f


def test_keys_of_two_tenants_are_distinct(api: Api) -> None:
    a, b = new_key(api.settings, "acme"), new_key(api.settings, "acme")
    assert a != b
    for key in (a, b):
        with client_with_key(api, key) as c:
            assert c.get("/v1/projects").status_code == 200


def test_a_body_carrying_request_looks_its_key_up_once(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """EarlyAuth authenticates before the body is read; the route takes that tenant."""
    lookups: list[str | None] = []
    real = tenants_service.authenticate

    def counted(**kwargs: Any) -> Tenant:
        lookups.append(kwargs["key"])
        return real(**kwargs)

    monkeypatch.setattr(tenants_service, "authenticate", counted)
    key = new_key(api.settings, "acme")
    with client_with_key(api, key) as acme:
        r = acme.post("/v1/projects", json={"name": "mine"})
        assert r.status_code == 201, r.text
        assert lookups == [key]
        pid = r.json()["id"]
        assert acme.patch(f"/v1/projects/{pid}", json={"name": "ours"}).json()["name"] == "ours"
        assert acme.get(f"/v1/projects/{pid}").json()["name"] == "ours"  # no body: the route's
        assert lookups == [key] * 3
    # The tenant taken over is the key's own: another tenant still sees a 404.
    assert_problem(api.client.get(f"/v1/projects/{pid}"), 404, "not_found")


def test_revoked_key_is_401(api: Api) -> None:
    key = new_key(api.settings, "acme")
    with session_scope(api.settings.resolved_database_url) as db:
        row = db.scalars(select(ApiKey)).one()
        row.revoked_at = utcnow()
    with client_with_key(api, key) as c:
        assert_problem(c.get("/v1/projects"), 401, "unauthorized")


def test_another_tenants_ids_answer_404_everywhere(api: Api, acme: TestClient) -> None:
    """Every endpoint kind answers 404 (never 403, never a leak) for another tenant's ids."""
    project = api.project("secret", classes=["0", "1"])
    pid = project["id"]
    api.upload_labeled(pid, digit_images(3, [0, 1]))
    job = api.train(pid)
    mid = job["model_id"]
    jid = job["id"]
    image = api.client.get(f"/v1/projects/{pid}/images").json()["items"][0]
    iid = image["id"]
    # A queued (cancellable) job too: cancel must not leak that it exists.
    queued = api.client.post(f"/v1/projects/{pid}/jobs", json={"method": "knn"}).json()
    blobs_before = blob_files(api.settings)

    own = acme.post("/v1/projects", json={"name": "mine"}).json()["id"]
    files = [("files", ("x.png", png(1)))]
    calls = [
        ("GET", f"/v1/projects/{pid}", {}),
        ("PATCH", f"/v1/projects/{pid}", {"json": {"name": "pwned"}}),
        ("DELETE", f"/v1/projects/{pid}", {}),
        ("GET", f"/v1/projects/{pid}/images", {}),
        ("POST", f"/v1/projects/{pid}/images", {"files": files, "data": {"label": "0"}}),
        ("GET", f"/v1/projects/{pid}/images/{iid}", {}),
        ("PATCH", f"/v1/projects/{pid}/images/{iid}", {"json": {"label": "1"}}),
        ("DELETE", f"/v1/projects/{pid}/images/{iid}", {}),
        ("GET", f"/v1/projects/{pid}/images/{iid}/content", {}),
        # an image id of another tenant, through one's own project
        ("GET", f"/v1/projects/{own}/images/{iid}", {}),
        ("GET", f"/v1/projects/{own}/images/{iid}/content", {}),
        ("DELETE", f"/v1/projects/{own}/images/{iid}", {}),
        ("POST", f"/v1/projects/{pid}/jobs", {"json": {"method": "linear_probe"}}),
        ("GET", f"/v1/projects/{pid}/jobs", {}),
        ("GET", f"/v1/jobs/{jid}", {}),
        ("POST", f"/v1/jobs/{jid}/cancel", {}),
        ("POST", f"/v1/jobs/{queued['id']}/cancel", {}),
        ("GET", f"/v1/projects/{pid}/models", {}),
        ("GET", f"/v1/models/{mid}", {}),
        ("DELETE", f"/v1/models/{mid}", {}),
        ("POST", f"/v1/models/{mid}/predict", {"files": files}),
        ("POST", f"/v1/projects/{pid}/predict", {"files": files}),
        ("POST", f"/v1/projects/{pid}/default-model", {"json": {"model_id": mid}}),
    ]
    for method, url, kwargs in calls:
        r = acme.request(method, url, **kwargs)
        assert_problem(r, 404, "not_found")

    # Publishing another tenant's model on one's own project is refused, not leaked.
    r = acme.post(f"/v1/projects/{own}/default-model", json={"model_id": mid})
    never = acme.post(f"/v1/projects/{own}/default-model", json={"model_id": "mdl_nope"})
    assert r.status_code in (404, 422), r.text
    assert (r.status_code, r.json()["code"]) == (never.status_code, never.json()["code"])
    assert acme.get(f"/v1/projects/{own}").json()["default_model_id"] is None

    # acme's listings show nothing of default's.
    assert [p["id"] for p in acme.get("/v1/projects").json()["items"]] == [own]

    # And nothing changed for the owner.
    after = api.client.get(f"/v1/projects/{pid}").json()
    assert after["name"] == "secret"
    assert after["default_model_id"] == mid
    assert image_count(api, pid) == 6
    assert api.client.get(f"/v1/projects/{pid}/images/{iid}").json()["label"] == image["label"]
    assert api.client.get(f"/v1/models/{mid}").status_code == 200
    assert api.client.get(f"/v1/jobs/{queued['id']}").json()["status"] == "queued"
    assert blob_files(api.settings) == blobs_before
    r = api.client.post(f"/v1/projects/{pid}/predict", files=[("files", ("d.png", digit(0, 5)))])
    assert r.status_code == 200, r.text


def test_unknown_route_and_wrong_method_are_problems(api: Api) -> None:
    assert_problem(api.client.get("/v1/nothing-here"), 404, "not_found")
    assert_problem(api.client.put("/v1/projects"), 405, "method_not_allowed")
