"""Console sessions over HTTP: cookie flags, CSRF, sign-in redirects, tenant isolation,
sign-out and key revocation."""

from __future__ import annotations

from app.db.session import session_scope
from app.services import tenants
from tests.api.helpers import digit, new_key
from tests.conftest import API_KEY, Api
from tests.console.helpers import console_client, csrf, sign_in, token_of


def _cookies(response) -> dict[str, str]:
    return {c.split("=", 1)[0]: c for c in response.headers.get_list("set-cookie")}


def test_sign_in_keeps_the_key_in_an_httponly_samesite_strict_cookie(api: Api) -> None:
    client = console_client(api)
    r = sign_in(client, API_KEY)
    assert r.status_code == 303 and r.headers["location"] == "/console/"
    cookies = _cookies(r)
    for name in ("dovecote_key", "dovecote_csrf"):
        flags = [f.strip().lower() for f in cookies[name].split(";")]
        assert "httponly" in flags and "samesite=strict" in flags and "path=/console" in flags
    page = client.get("/console/")
    assert page.status_code == 200 and "Projects" in page.text
    assert API_KEY not in page.text  # the key never appears in a page


def test_a_wrong_key_is_refused_and_no_session_starts(api: Api) -> None:
    client = console_client(api)
    r = sign_in(client, "not-a-key")
    assert r.status_code == 401 and "not valid" in r.text
    assert "dovecote_key" not in _cookies(r)
    assert client.get("/console/").status_code == 303


def test_pages_redirect_to_sign_in_and_back(api: Api) -> None:
    client = console_client(api)
    r = client.get("/console/projects/new")
    assert r.status_code == 303
    assert r.headers["location"] == "/console/sign-in?next=/console/projects/new"
    page = client.get(r.headers["location"])
    r = client.post(
        "/console/sign-in",
        data={"key": API_KEY, "csrf_token": token_of(page), "next": "/console/projects/new"},
    )
    assert r.headers["location"] == "/console/projects/new"
    # Never an open redirect.
    sign_in(client, API_KEY)
    token = csrf(client)
    r = client.post(
        "/console/sign-in",
        data={"key": API_KEY, "csrf_token": token, "next": "https://evil.example/"},
    )
    assert r.headers["location"] == "/console/"


def test_every_post_needs_the_sessions_csrf_token(api: Api) -> None:
    client = console_client(api)
    # Sign-in itself: no token, a made-up one.
    assert client.post("/console/sign-in", data={"key": API_KEY}).status_code == 403
    client.get("/console/sign-in")
    r = client.post("/console/sign-in", data={"key": API_KEY, "csrf_token": "0" * 64})
    assert r.status_code == 403 and "dovecote_key" not in _cookies(r)

    sign_in(client, API_KEY)
    token = csrf(client)
    project = api.project("terrace")
    for path, data in (
        ("/console/projects", {"name": "x"}),
        (f"/console/projects/{project['id']}/jobs", {"method": "linear_probe"}),
        ("/console/sign-out", {}),
    ):
        r = client.post(path, data=data)
        assert r.status_code == 403, (path, r.status_code)
        assert "CSRF" in r.text
    # The token of another session (another browser) is no good either.
    other = console_client(api)
    sign_in(other, API_KEY)
    r = client.post("/console/projects", data={"name": "x", "csrf_token": csrf(other)})
    assert r.status_code == 403
    # The same request with this session's token (form field or header) goes through.
    r = client.post("/console/projects", data={"name": "x", "csrf_token": token})
    assert r.status_code == 303
    r = client.post("/console/projects", data={"name": "y"}, headers={"X-CSRF-Token": token})
    assert r.status_code == 303
    names = {p["name"] for p in api.client.get("/v1/projects").json()["items"]}
    assert names == {"terrace", "x", "y"}


def test_another_tenants_project_job_and_images_are_404(api: Api) -> None:
    project = api.project("mine", classes=["0", "1"])
    api.upload_labeled(project["id"], [(str(i % 2), digit(i % 2, i)) for i in range(10)])
    job = api.train(project["id"])
    image = api.client.get(f"/v1/projects/{project['id']}/images").json()["items"][0]

    client = console_client(api)
    sign_in(client, new_key(api.settings, "acme"))
    token = csrf(client)
    base = f"/console/projects/{project['id']}"
    for path in (
        base, f"{base}/train", f"{base}/images/{image['id']}/thumbnail",
        f"/console/jobs/{job['id']}", f"/console/jobs/{job['id']}/status",
        f"/console/models/{job['model_id']}",
    ):  # fmt: skip
        r = client.get(path)
        assert r.status_code == 404, path
        assert r.headers["content-type"].startswith("text/html")
    for path in (f"{base}/images/{image['id']}", f"{base}/images/{image['id']}/delete"):
        assert client.post(path, data={"csrf_token": token, "label": "1"}).status_code == 404
    r = client.post(
        f"{base}/images", data={"csrf_token": token}, files=[("files", ("a.png", digit(0, 50)))]
    )
    assert r.status_code == 404
    assert "mine" not in client.get("/console/").text
    # Nothing changed.
    again = api.client.get(f"/v1/projects/{project['id']}/images/{image['id']}").json()
    assert again["label"] == image["label"] and again["id"] == image["id"]
    # The owner sees them.
    owner = console_client(api)
    sign_in(owner, API_KEY)
    assert owner.get(base).status_code == 200
    thumb = owner.get(f"{base}/images/{image['id']}/thumbnail")
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
    cached = owner.get(
        f"{base}/images/{image['id']}/thumbnail", headers={"If-None-Match": thumb.headers["etag"]}
    )
    assert cached.status_code == 304 and not cached.content


def test_sign_out_ends_the_session(api: Api) -> None:
    client = console_client(api)
    sign_in(client, API_KEY)
    token = csrf(client)
    r = client.post("/console/sign-out", data={"csrf_token": token})
    assert r.status_code == 303 and r.headers["location"] == "/console/sign-in"
    cookies = _cookies(r)
    assert (
        'dovecote_key=""' in cookies["dovecote_key"]
        and "max-age=0" in cookies["dovecote_key"].lower()
    )
    assert client.get("/console/").status_code == 303
    # A request replaying the old token cannot act either.
    assert (
        client.post("/console/projects", data={"name": "x", "csrf_token": token}).status_code == 403
    )


def test_a_revoked_key_signs_the_console_out(api: Api) -> None:
    key = new_key(api.settings, "acme")
    client = console_client(api)
    sign_in(client, key)
    assert client.get("/console/").status_code == 200
    with session_scope(api.settings.resolved_database_url) as db:
        tenants.revoke_key(db=db, key=key)
    r = client.get("/console/")
    assert r.status_code == 303 and r.headers["location"].startswith("/console/sign-in")
