"""Webhooks: registration (SSRF checks, the secret shown once, tenant isolation), one signed
delivery per job end to a real receiver on 127.0.0.1, retries with back-off, no redirects."""

from __future__ import annotations

import asyncio
import json
import re
import ssl
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlalchemy import select

from app import cli, sealing
from app.config import Settings
from app.db.models import Webhook, WebhookDelivery
from app.db.session import session_scope
from app.services import webhooks
from tests.api.helpers import assert_problem, digit
from tests.conftest import Api, make_settings, migrate
from tests.receiver import dripping, receiver
from worker.runner import run_job

DOCS = Path(__file__).resolve().parents[2] / "docs" / "API.md"
RETRY = [1.5, 3.0]  # three attempts in all


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    s = make_settings(
        tmp_path, webhook_allow_private=True, webhook_retry_seconds=RETRY,
        webhook_timeout_seconds=5.0,
    )  # fmt: skip
    migrate(s)
    return s


def documented_verifier() -> Callable[[str, bytes, str], bool]:
    """The ``verified`` function of docs/API.md's Python snippet, as a user would paste it."""
    text = DOCS.read_text()
    section = text[text.index("## Webhooks") :]
    code = re.search(r"```python\n(.*?)```", section, re.S)
    assert code is not None, "docs/API.md shows how to verify a signature"
    namespace: dict[str, object] = {}
    exec(code.group(1), namespace)
    return namespace["verified"]  # type: ignore[return-value]


def deliver(settings: Settings) -> dict[str, int]:
    with session_scope(settings.resolved_database_url) as db:
        return webhooks.deliver_due(db=db, settings=settings)


def register(client: TestClient, path: str, url: str, **body: object) -> dict:
    r = client.post(path, json={"url": url, **body})
    assert r.status_code == 201, r.text
    return r.json()


def trained_project(api: Api) -> dict:
    project = api.project("digits")
    api.upload_labeled(project["id"], [(str(d), digit(d, i)) for d in (0, 1) for i in range(4)])
    return project


def queue_job(api: Api, project_id: str) -> str:
    r = api.client.post(f"/v1/projects/{project_id}/jobs", json={"method": "knn"})
    assert r.status_code == 202, r.text
    return r.json()["id"]


def deliveries(client: TestClient, webhook_id: str) -> list[dict]:
    r = client.get(f"/v1/webhooks/{webhook_id}/deliveries")
    assert r.status_code == 200, r.text
    return r.json()["items"]


def test_one_signed_delivery_per_job_end(api: Api, settings: Settings) -> None:
    verified = documented_verifier()
    project = trained_project(api)
    with receiver() as hook:
        created = register(api.client, f"/v1/projects/{project['id']}/webhooks", hook.url,
                           events=["job.finished"])  # fmt: skip
        secret = created["secret"]

        succeeded = api.train(project["id"], "knn")
        timed_out = queue_job(api, project["id"])  # a run past DOVECOTE_JOB_MAX_MINUTES fails
        assert (
            run_job(timed_out, settings=settings.model_copy(update={"job_max_minutes": 0.0}))
            == "failed"
        )
        api.queued.clear()
        cancelled = queue_job(api, project["id"])
        assert api.client.post(f"/v1/jobs/{cancelled}/cancel").json()["status"] == "cancelled"
        api.queued.clear()

        assert deliver(settings) == {"succeeded": 3}
        assert deliver(settings) == {}  # nothing sent twice
        got = hook.received
        assert len(got) == 3

    bodies = []
    for r in got:
        assert r.headers["Content-Type"] == "application/json"
        assert verified(secret, r.body, r.headers["Dovecote-Signature"])
        assert not verified(secret, r.body + b" ", r.headers["Dovecote-Signature"])
        assert not verified("whsec_other", r.body, r.headers["Dovecote-Signature"])
        assert abs(int(r.headers["Dovecote-Timestamp"]) - time.time()) < 120
        assert r.headers["Dovecote-Event"] == "job.finished"
        bodies.append(json.loads(r.body))
    by_job = {b["data"]["job"]["id"]: b for b in bodies}
    assert set(by_job) == {succeeded["id"], timed_out, cancelled}
    assert len({b["id"] for b in bodies}) == 3
    for b in bodies:
        assert b["event"] == "job.finished" and b["project_id"] == project["id"]
    ok = by_job[succeeded["id"]]["data"]["job"]
    assert ok["status"] == "succeeded" and ok["model_id"] == succeeded["model_id"]
    assert ok["model_version"] == 1
    assert ok["promotion"]["promoted"] is True and ok["promotion"] == succeeded["promotion"]
    assert ok["error"] is None and ok["finished_at"].endswith("Z")
    late = by_job[timed_out]["data"]["job"]
    assert late["status"] == "failed" and late["error"]["code"] == "job_timed_out"
    assert late["model_id"] is None and late["model_version"] is None
    assert by_job[cancelled]["data"]["job"]["status"] == "cancelled"

    listed = deliveries(api.client, created["id"])
    assert len(listed) == 3
    for d in listed:
        assert d["status"] == "succeeded" and d["attempts"] == 1
        assert d["last_status_code"] == 200 and d["last_error"] is None
        assert d["next_attempt_at"] is None and d["delivered_at"].endswith("Z")
        assert [a["status_code"] for a in d["attempt_log"]] == [200]
    received_ids = {r.headers["Dovecote-Delivery"] for r in got}
    assert received_ids == {d["id"] for d in listed}


def _at(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def test_failing_receiver_is_retried_with_backoff_then_given_up(
    api: Api, settings: Settings
) -> None:
    project = api.project("retries")
    with receiver(script=[500, 500, 500]) as failing, receiver(script=[503]) as flaky:
        dead = register(api.client, f"/v1/projects/{project['id']}/webhooks", failing.url)
        recovers = register(api.client, "/v1/webhooks", flaky.url)  # the tenant's
        api.upload_labeled(project["id"], [(str(d), digit(d, i)) for d in (0, 1) for i in range(2)])
        job_id = queue_job(api, project["id"])
        api.client.post(f"/v1/jobs/{job_id}/cancel")

        assert deliver(settings) == {"pending": 2}
        assert deliver(settings) == {}  # back-off: not due yet
        [d] = deliveries(api.client, dead["id"])
        assert (d["status"], d["attempts"], d["last_status_code"]) == ("pending", 1, 500)
        assert d["last_error"].startswith("HTTP 500")
        # The wait counts from the end of the attempt.
        gap = _at(d["next_attempt_at"]) - _at(d["attempt_log"][-1]["at"])
        assert gap == pytest.approx(RETRY[0], abs=0.01), gap

        time.sleep(RETRY[0] + 0.1)
        assert deliver(settings) == {"pending": 1, "succeeded": 1}
        [ok] = deliveries(api.client, recovers["id"])
        assert (ok["status"], ok["attempts"], ok["last_status_code"]) == ("succeeded", 2, 200)
        assert [a["status_code"] for a in ok["attempt_log"]] == [503, 200]

        [d] = deliveries(api.client, dead["id"])
        assert d["attempts"] == 2
        gap = _at(d["next_attempt_at"]) - _at(d["attempt_log"][-1]["at"])
        assert gap == pytest.approx(RETRY[1], abs=0.01), gap
        time.sleep(RETRY[1] + 0.1)
        assert deliver(settings) == {"failed": 1}
        time.sleep(RETRY[1] + 0.1)
        assert deliver(settings) == {}  # given up after len(RETRY) + 1 attempts

    [d] = deliveries(api.client, dead["id"])
    assert (d["status"], d["attempts"], d["next_attempt_at"]) == ("failed", 3, None)
    assert [a["status_code"] for a in d["attempt_log"]] == [500, 500, 500]
    assert all(a["error"].startswith("HTTP 500") for a in d["attempt_log"])
    assert len(failing.received) == 3 and len(flaky.received) == 2
    # Every attempt sent the same body (same event id, same signature).
    assert len({r.body for r in failing.received}) == 1
    assert len({r.headers["Dovecote-Signature"] for r in failing.received}) == 1


def test_redirects_are_not_followed(api: Api, settings: Settings) -> None:
    project = api.project("redirect")
    with receiver() as elsewhere, receiver(script=[(302, "")] * 3) as redirecting:
        redirecting.script = [(302, elsewhere.url)] * 3
        hook = register(api.client, f"/v1/projects/{project['id']}/webhooks", redirecting.url)
        api.upload_labeled(project["id"], [(str(d), digit(d, i)) for d in (0, 1) for i in range(2)])
        api.client.post(f"/v1/jobs/{queue_job(api, project['id'])}/cancel")
        assert deliver(settings) == {"pending": 1}
    [d] = deliveries(api.client, hook["id"])
    assert d["last_status_code"] == 302 and d["last_error"].startswith("HTTP 302")
    assert len(redirecting.received) == 1 and elsewhere.received == []


REFUSED = [
    "http://127.0.0.1:9/hook",
    "http://localhost/hook",
    "http://10.1.2.3/hook",
    "http://192.168.0.10/hook",
    "http://172.16.5.4/hook",
    "http://169.254.169.254/latest/meta-data",
    "http://100.64.0.1/hook",  # shared address space (carrier-grade NAT)
    "http://0.0.0.0/hook",
    "http://224.0.0.1/hook",
    "http://[::1]/hook",
    "http://[::ffff:127.0.0.1]/hook",
    "http://[fe80::1]/hook",
    "http://[fc00::1]/hook",
    "http://192.0.2.1/hook",  # documentation range: reserved
    "https://no-such-host.invalid/hook",
    "ftp://8.8.8.8/hook",
    "file:///etc/passwd",
    "gopher://8.8.8.8:70/",
    "http:///hook",
    "http://[::1/hook",
]


@pytest.fixture
def strict(tmp_path: Path) -> Iterator[Api]:
    """An app with the default: private targets refused."""
    (tmp_path / "strict").mkdir()
    settings = make_settings(tmp_path / "strict")
    migrate(settings)
    api = Api(settings)
    with api.client:
        yield api


def test_private_and_non_http_urls_are_refused(strict: Api) -> None:
    project = strict.project("ssrf")
    for url in REFUSED:
        for path in (f"/v1/projects/{project['id']}/webhooks", "/v1/webhooks"):
            r = strict.client.post(path, json={"url": url})
            body = assert_problem(r, 422, "webhook_url_refused")
            assert body["url"] == url
    assert strict.client.get("/v1/webhooks").json()["items"] == []


def test_public_address_is_accepted_without_the_setting(strict: Api) -> None:
    project = strict.project("public")  # registration only: nothing is ever sent there
    url = "https://8.8.8.8:8443/hook"
    assert register(strict.client, f"/v1/projects/{project['id']}/webhooks", url)["url"] == url


def test_private_target_is_refused_again_at_send_time(api: Api, settings: Settings) -> None:
    """Registered while private targets were allowed; sent after they no longer are."""
    project = api.project("rebind")
    with receiver() as hook:
        created = register(api.client, f"/v1/projects/{project['id']}/webhooks", hook.url)
        api.upload_labeled(project["id"], [(str(d), digit(d, i)) for d in (0, 1) for i in range(2)])
        api.client.post(f"/v1/jobs/{queue_job(api, project['id'])}/cancel")
        strict = settings.model_copy(update={"webhook_allow_private": False})
        assert deliver(strict) == {"pending": 1}
        assert hook.received == []
    [d] = deliveries(api.client, created["id"])
    assert d["last_status_code"] is None
    assert d["last_error"].startswith("refused:") and "loopback" in d["last_error"]


def self_signed(tmp_path: Path, host: str) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A server context with a certificate for ``host`` only, and a client one trusting it."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert_file, key_file)
    return server, ssl.create_default_context(cafile=str(cert_file))


def test_pinned_request_goes_to_the_checked_address_under_the_urls_name(tmp_path: Path) -> None:
    """After the check, the request connects to the address checked (no second lookup that
    could answer otherwise) and still says the URL's host: in ``Host`` and, over TLS, as
    the server name the certificate is verified against."""
    server_tls, client_tls = self_signed(tmp_path, "hooks.test")
    delivery = WebhookDelivery(id="dlv_x", event="job.finished", body='{"id":"evt_x"}')

    def target(scheme: str, host: str, port: int) -> webhooks.Target:
        return webhooks.Target(f"{scheme}://{host}:{port}/hook?a=1", scheme, host, port,
                               "127.0.0.1")  # fmt: skip

    async def sends(verify: ssl.SSLContext | bool, *targets: webhooks.Target) -> list:
        async with httpx.AsyncClient(timeout=5.0, follow_redirects=False, verify=verify) as client:
            return [await webhooks.send(client, t, "s", delivery) for t in targets]

    with receiver() as plain, receiver(tls=server_tls) as tls:
        assert asyncio.run(sends(True, target("http", "hooks.test", plain.port))) == [(200, None)]
        named, other = asyncio.run(
            sends(
                client_tls,
                target("https", "hooks.test", tls.port),
                target("https", "other.test", tls.port),
            )
        )
        assert named == (200, None)
        # The certificate is checked against the URL's name, not the address.
        code, error = other
        assert code is None and "certificate" in (error or "").lower(), error
    for got, port in ((plain.received, plain.port), (tls.received, tls.port)):
        assert [(r.path, r.headers["Host"]) for r in got] == [("/hook?a=1", f"hooks.test:{port}")]
        assert got[0].headers["Dovecote-Signature"] == webhooks.signature("s", got[0].body)
    # Whatever goes wrong is the attempt's error, not a crash.
    bad = webhooks.Target("http://127.0.0.1:9/\x01", "http", "127.0.0.1", 9)
    [(_, error)] = asyncio.run(sends(True, bad))
    assert error is not None and error.startswith("InvalidURL"), error
    v6 = webhooks.Target("http://u:p@h.example/x", "http", "h.example", 80, "2001:db8::1")
    assert v6.request() == ("http://u:p@[2001:db8::1]/x", {"Host": "h.example"}, {})


def test_secret_is_shown_once(api: Api) -> None:
    project = api.project("secret")
    created = register(api.client, f"/v1/projects/{project['id']}/webhooks",
                       "http://127.0.0.1:9/hook", events=["job.finished", "model.drift"])  # fmt: skip
    assert created["secret"].startswith("whsec_") and len(created["secret"]) > 40
    assert created["events"] == ["job.finished", "model.drift"]
    assert created["project_id"] == project["id"]
    shown = [
        api.client.get(f"/v1/webhooks/{created['id']}").json(),
        *api.client.get(f"/v1/projects/{project['id']}/webhooks").json()["items"],
        *api.client.get("/v1/webhooks").json()["items"],
    ]
    assert len(shown) == 3
    for item in shown:
        assert "secret" not in item and created["secret"] not in json.dumps(item)
        assert item["id"] == created["id"]
    second = register(api.client, f"/v1/projects/{project['id']}/webhooks", "http://127.0.0.1:9/b")
    assert second["secret"] != created["secret"]

    assert api.client.delete(f"/v1/webhooks/{created['id']}").status_code == 204
    assert_problem(api.client.get(f"/v1/webhooks/{created['id']}"), 404, "not_found")
    assert_problem(api.client.get(f"/v1/webhooks/{created['id']}/deliveries"), 404, "not_found")


def test_bad_events_and_malformed_urls_are_422(api: Api) -> None:
    project = api.project("events")
    path = f"/v1/projects/{project['id']}/webhooks"
    for url in ("http://exa\tmple.test/hook", "http://bad host/hook", "file:///etc/passwd"):
        assert_problem(api.client.post(path, json={"url": url}), 422, "webhook_url_refused")
    for events in (["job.exploded"], [], "job.finished"):
        r = api.client.post(path, json={"url": "http://127.0.0.1:9/", "events": events})
        assert_problem(r, 422, "validation_error")
    assert api.client.get(path).json()["items"] == []


def test_lists_are_paginated(api: Api) -> None:
    project = api.project("pages")
    path = f"/v1/projects/{project['id']}/webhooks"
    ids = [register(api.client, path, f"http://127.0.0.1:9/{i}")["id"] for i in range(3)]
    first = api.client.get(path, params={"limit": 2}).json()
    assert [w["id"] for w in first["items"]] == ids[:2] and first["next_cursor"]
    rest = api.client.get(path, params={"limit": 2, "cursor": first["next_cursor"]}).json()
    assert [w["id"] for w in rest["items"]] == ids[2:] and rest["next_cursor"] is None
    register(api.client, "/v1/webhooks", "http://127.0.0.1:9/tenant")
    assert len(api.client.get(path).json()["items"]) == 3  # the project's own
    assert len(api.client.get("/v1/webhooks").json()["items"]) == 4  # all the tenant's


def test_other_tenants_webhooks_are_invisible(
    api: Api, acme: TestClient, settings: Settings
) -> None:
    project = api.project("mine")
    mine = register(api.client, f"/v1/projects/{project['id']}/webhooks", "http://127.0.0.1:9/a")
    register(api.client, "/v1/webhooks", "http://127.0.0.1:9/tenant")
    for method, path in (
        ("GET", f"/v1/webhooks/{mine['id']}"),
        ("DELETE", f"/v1/webhooks/{mine['id']}"),
        ("GET", f"/v1/webhooks/{mine['id']}/deliveries"),
        ("GET", f"/v1/projects/{project['id']}/webhooks"),
        ("POST", f"/v1/projects/{project['id']}/webhooks"),
    ):
        kwargs = {"json": {"url": "http://127.0.0.1:9/x"}} if method == "POST" else {}
        assert_problem(acme.request(method, path, **kwargs), 404, "not_found")
    assert acme.get("/v1/webhooks").json()["items"] == []
    assert api.client.get(f"/v1/webhooks/{mine['id']}").status_code == 200

    # acme's own job end reaches acme's webhooks only, never default's tenant-wide one.
    theirs = acme.post("/v1/projects", json={"name": "theirs"}).json()
    with receiver() as hook:
        acme_hook = register(acme, "/v1/webhooks", hook.url)
        for d in (0, 1):
            files = [("files", (f"{d}-{i}.png", digit(d, i))) for i in range(2)]
            acme.post(f"/v1/projects/{theirs['id']}/images", files=files, data={"label": str(d)})
        job = acme.post(f"/v1/projects/{theirs['id']}/jobs", json={"method": "knn"}).json()
        acme.post(f"/v1/jobs/{job['id']}/cancel")
        api.queued.clear()
        with session_scope(settings.resolved_database_url) as db:
            hooks = set(db.scalars(select(WebhookDelivery.webhook_id)))
        assert hooks == {acme_hook["id"]}
        assert deliver(settings) == {"succeeded": 1}
    assert [json.loads(r.body)["project_id"] for r in hook.received] == [theirs["id"]]


def test_emit_reaches_only_subscribed_webhooks(api: Api, settings: Settings) -> None:
    """The service call other features use (``model.drift``)."""
    project = api.project("drift")
    with receiver() as hook:
        drift = register(api.client, f"/v1/projects/{project['id']}/webhooks", hook.url,
                         events=["model.drift"])  # fmt: skip
        register(api.client, f"/v1/projects/{project['id']}/webhooks", hook.url)  # job.finished
        with session_scope(settings.resolved_database_url) as db:
            rows = webhooks.emit(db, project_id=project["id"], event="model.drift",
                                 payload={"model_id": "mdl_x", "score": 0.4})  # fmt: skip
            assert len(rows) == 1
            with pytest.raises(ValueError):
                webhooks.emit(db, project_id=project["id"], event="nope", payload={})
        assert deliver(settings) == {"succeeded": 1}
        [got] = hook.received
    body = json.loads(got.body)
    assert body["event"] == "model.drift" and body["data"] == {"model_id": "mdl_x", "score": 0.4}
    assert [d["event"] for d in deliveries(api.client, drift["id"])] == ["model.drift"]


def test_finished_deliveries_are_swept_after_their_retention(api: Api, settings: Settings) -> None:
    project = api.project("sweep")
    with receiver() as hook:
        created = register(api.client, f"/v1/projects/{project['id']}/webhooks", hook.url)
        with session_scope(settings.resolved_database_url) as db:
            webhooks.emit(db, project_id=project["id"], event="job.finished", payload={})
        assert deliver(settings) == {"succeeded": 1}
        with session_scope(settings.resolved_database_url) as db:
            webhooks.emit(db, project_id=project["id"], event="job.finished", payload={})
            db.commit()  # not sent yet: pending, kept whatever its age
            assert webhooks.sweep_old(db=db, days=30) == {"deliveries_deleted": 0}
            later = datetime.now(UTC) + timedelta(days=31)
            assert webhooks.sweep_old(db=db, days=30, now=later) == {"deliveries_deleted": 1}
    assert [d["status"] for d in deliveries(api.client, created["id"])] == ["pending"]


def test_a_dripping_receiver_is_cut_off_and_holds_up_no_other_tenant(
    api: Api, acme: TestClient, settings: Settings
) -> None:
    """One tenant's receivers answer a byte every 0.2 s, never finishing (each read well
    within httpx's read timeout); another tenant's receiver is healthy. The slow ones are
    cut off at the attempt's deadline (and retried later); the other tenant takes its turn
    in the first batch, its attempt made while a dripping one is still open."""
    fast = settings.model_copy(update={"webhook_timeout_seconds": 1.0, "webhook_concurrency": 2})
    mine = api.project("slow")
    theirs = acme.post("/v1/projects", json={"name": "fast"}).json()
    with dripping() as slow, dripping() as slower, receiver() as hook:
        for url in (slow.url, slower.url):
            register(api.client, f"/v1/projects/{mine['id']}/webhooks", url)
        acme_hook = register(acme, "/v1/webhooks", hook.url)
        with session_scope(settings.resolved_database_url) as db:
            webhooks.emit(db, project_id=mine["id"], event="job.finished", payload={})
            db.commit()  # the slow tenant's two deliveries are the older ones
            webhooks.emit(db, project_id=theirs["id"], event="job.finished", payload={})
        with session_scope(fast.resolved_database_url) as db:
            assert webhooks.deliver_due(db=db, settings=fast, limit=2) == {
                "succeeded": 1,
                "pending": 1,
            }
        cut = [d.cut_at for d in (slow, slower) if d.cut_at is not None]
        assert len(cut) == 1  # one dripping receiver tried, and hung up on
        [got] = hook.received
        assert got.at < cut[0]  # while it was still dripping
    [done] = deliveries(acme, acme_hook["id"])
    assert done["status"] == "succeeded"
    with session_scope(settings.resolved_database_url) as db:
        tried = db.scalars(select(WebhookDelivery).where(WebhookDelivery.attempts == 1)).all()
    errors = sorted(d.last_error or "" for d in tried)
    assert errors == ["", "timed out: no complete answer within 1 s"], errors


def test_tenants_take_turns_in_a_batch() -> None:
    due = [("a1", "A"), ("a2", "A"), ("a3", "A"), ("b1", "B"), ("c1", "C"), ("b2", "B")]
    assert webhooks.fair_order(due, 4) == ["a1", "b1", "c1", "a2"]
    assert webhooks.fair_order(due, 10) == ["a1", "b1", "c1", "a2", "b2", "a3"]
    assert webhooks.fair_order([], 3) == []


def test_secrets_are_stored_sealed_resealed_and_rotated(
    api: Api,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The database holds no secret in clear; a secret stored before sealing still signs and
    ``dovecote secrets reseal`` seals it; a new first key reseals all; a wrong key sends
    nothing (the attempt fails, the delivery waits)."""
    verified = documented_verifier()
    project = api.project("sealed")
    api.upload_labeled(project["id"], [(str(d), digit(d, i)) for d in (0, 1) for i in range(2)])
    with receiver(script=[200] * 8) as hook:
        new = register(api.client, f"/v1/projects/{project['id']}/webhooks", hook.url)
        old = register(api.client, "/v1/webhooks", hook.url)  # the tenant's
        legacy = "whsec_stored-in-clear-before-sealing"
        with session_scope(settings.resolved_database_url) as db:
            rows = {w.id: w for w in db.scalars(select(Webhook))}
            stored = rows[new["id"]].secret
            rows[old["id"]].secret = legacy  # as a row from before sealing
        assert stored.startswith("fernet:") and new["secret"] not in stored
        assert sealing.unseal(stored, settings=settings) == new["secret"]
        key_file = settings.data_dir / sealing.KEY_FILE
        assert key_file.stat().st_mode & 0o777 == 0o600

        def job_end_signed_by(secrets: list[str], with_settings: Settings) -> None:
            job_id = queue_job(api, project["id"])
            api.client.post(f"/v1/jobs/{job_id}/cancel")
            before = len(hook.received)
            assert deliver(with_settings) == {"succeeded": 2}
            got = hook.received[before:]
            for secret in secrets:
                assert (
                    sum(verified(secret, r.body, r.headers["Dovecote-Signature"]) for r in got) == 1
                )

        job_end_signed_by([new["secret"], legacy], settings)

        monkeypatch.setenv("DOVECOTE_DATA_DIR", str(settings.data_dir))
        cli.main(["secrets", "reseal"])
        assert capsys.readouterr().out.strip() == "webhook secrets: 1 sealed, 1 resealed"
        with session_scope(settings.resolved_database_url) as db:
            assert all(sealing.is_sealed(w.secret) for w in db.scalars(select(Webhook)))
        job_end_signed_by([new["secret"], legacy], settings)

        # Rotation: a new key first, the old one still opening; reseal; then the new alone.
        rotated = settings.model_copy(
            update={"secret_key": SecretStr(f"{sealing.new_key()},{key_file.read_text().strip()}")}
        )
        with session_scope(settings.resolved_database_url) as db:
            assert webhooks.reseal_secrets(db=db, settings=rotated) == {"sealed": 0, "rotated": 2}
        first_only = rotated.model_copy(
            update={"secret_key": SecretStr(rotated.secret_key.get_secret_value().split(",")[0])}
        )
        job_end_signed_by([new["secret"], legacy], first_only)

        wrong = settings.model_copy(update={"secret_key": SecretStr(sealing.new_key())})
        job_id = queue_job(api, project["id"])
        api.client.post(f"/v1/jobs/{job_id}/cancel")
        before = len(hook.received)
        assert deliver(wrong) == {"pending": 2}
        assert len(hook.received) == before  # nothing went out unsigned or signed wrongly
    [pending, *_] = deliveries(api.client, new["id"])[::-1]
    assert pending["status"] == "pending"
    assert pending["last_error"].startswith("not sent: no key opens this sealed secret")
