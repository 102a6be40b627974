"""Input a hostile tenant sends: every answer is a typed 4xx, nothing is half-written, and
the result is the same on SQLite and PostgreSQL (which refuses NUL characters and
non-finite JSON numbers that SQLite would store)."""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from app.api.main import create_app
from app.config import Settings
from tests.api.helpers import assert_problem, digit, png
from tests.conftest import Api, make_settings, migrate


@pytest.fixture(params=["sqlite", "postgresql"])
def any_db_api(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Api]:
    overrides: dict[str, object] = {}
    if request.param == "postgresql":
        overrides["database_url"] = request.getfixturevalue("postgres_redis")["database_url"]
    settings = make_settings(tmp_path, **overrides)
    migrate(settings)
    a = Api(settings)
    with a.client:
        yield a


def _projects(api: Api) -> list[dict]:
    r = api.client.get("/v1/projects")
    assert r.status_code == 200, r.text
    return r.json()["items"]


def _limited_api(tmp_path: Path, **overrides: object) -> Api:
    settings = make_settings(tmp_path, **overrides)
    migrate(settings)
    return Api(settings)


def _knn_job(api: Api) -> dict:
    """Train ``knn`` on a small project of two digit classes; the job as it ended."""
    project = api.project()
    api.upload_labeled(project["id"], [(str(d), digit(d, i)) for d in (0, 1) for i in range(3)])
    r = api.client.post(f"/v1/projects/{project['id']}/jobs", json={"method": "knn"})
    assert r.status_code == 202, r.text
    api.run_queued()
    return api.client.get(f"/v1/jobs/{r.json()['id']}").json()


def _jobs(api: Api, project_id: str) -> list[dict]:
    r = api.client.get(f"/v1/projects/{project_id}/jobs")
    assert r.status_code == 200, r.text
    return r.json()["items"]


def _raw_json(api: Api, method: str, url: str, text: str):
    return api.client.request(
        method, url, content=text.encode(), headers={"Content-Type": "application/json"}
    )


@pytest.mark.parametrize(
    "body",
    [
        {"name": "pigeons\u0000"},
        {"name": "pigeons", "description": "a\u0000b"},
        {"name": "pigeons", "classes": ["pig\u0000eon", "crow"]},
        {"name": "pigeons", "classes": [{"name": "pigeon", "attributes": {"gr\u0000ey": 1}}]},
    ],
)
def test_nul_characters_in_json_are_refused(any_db_api: Api, body: dict) -> None:
    r = any_db_api.client.post("/v1/projects", json=body)
    assert_problem(r, 422, "invalid_characters")
    assert _projects(any_db_api) == []


@pytest.mark.parametrize(
    "url", ["/v1/jobs/job%00", "/v1/projects?cursor=%00", "/v1/models/a%00b", "/v1/projects/%00"]
)
def test_nul_characters_in_paths_and_queries_are_refused(any_db_api: Api, url: str) -> None:
    assert_problem(any_db_api.client.get(url), 422, "invalid_characters")


def test_nul_in_an_image_label_filter_is_refused(any_db_api: Api) -> None:
    project = any_db_api.project()
    r = any_db_api.client.get(f"/v1/projects/{project['id']}/images?label=%00")
    assert_problem(r, 422, "invalid_characters")


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_numbers_are_refused_on_every_database(any_db_api: Api, constant: str) -> None:
    text = '{"name": "p", "classes": [{"name": "pigeon", "attributes": {"grey": C}}]}'
    text = text.replace("C", constant)
    body = assert_problem(_raw_json(any_db_api, "POST", "/v1/projects", text), 422,
                          "invalid_characters")  # fmt: skip
    assert "finite" in body["detail"]
    assert _projects(any_db_api) == []

    project = any_db_api.project("real")
    text = '{"method": "linear_probe", "params": {"Cs": [C]}}'.replace("C", constant)
    r = _raw_json(any_db_api, "POST", f"/v1/projects/{project['id']}/jobs", text)
    assert_problem(r, 422, "invalid_characters")
    assert _jobs(any_db_api, project["id"]) == []


def test_deeply_nested_json_is_refused_and_the_connection_stays_usable(any_db_api: Api) -> None:
    text = '{"name": "p", "description": ' + "[" * 3000 + "]" * 3000 + "}"
    r = _raw_json(any_db_api, "POST", "/v1/projects", text)
    assert_problem(r, 422, "invalid_characters")
    assert any_db_api.client.get("/v1/projects").status_code == 200


def test_labels_nested_3000_deep_are_invalid_labels(any_db_api: Api) -> None:
    project = any_db_api.project()
    deep = '{"tags": ' + "[" * 3000 + "]" * 3000 + "}"
    r = any_db_api.upload(project["id"], [("a.png", png(1))], labels=deep)
    assert_problem(r, 422, "invalid_labels")
    r = any_db_api.upload(project["id"], [("a.png", png(1))], labels='{"grey": NaN}')
    assert_problem(r, 422, "invalid_labels")
    assert any_db_api.client.get(f"/v1/projects/{project['id']}").json()["image_count"] == 0


def test_nul_in_an_uploaded_filename_is_dropped(any_db_api: Api) -> None:
    project = any_db_api.project()
    body = (  # written by hand: httpx would percent-encode the NUL
        b'--x\r\nContent-Disposition: form-data; name="files"; filename="pige\x00on.png"\r\n'
        b"Content-Type: image/png\r\n\r\n" + png(2) + b"\r\n--x--\r\n"
    )
    r = any_db_api.client.post(
        f"/v1/projects/{project['id']}/images", content=body,
        headers={"Content-Type": "multipart/form-data; boundary=x"},
    )  # fmt: skip
    assert r.status_code == 201, r.text
    assert r.json()["items"][0]["filename"] == "pigeon.png"


def test_patch_with_too_many_classes_is_a_validation_error(any_db_api: Api) -> None:
    project = any_db_api.project()
    classes = [f"c{i}" for i in range(10_001)]
    r = any_db_api.client.patch(f"/v1/projects/{project['id']}", json={"classes": classes})
    assert_problem(r, 422, "validation_error")
    assert any_db_api.client.get(f"/v1/projects/{project['id']}").json()["classes"] == []


def _encrypted_zip() -> bytes:
    """A zip whose one member is flagged encrypted (general-purpose bit 0)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("pigeon/a.png", png(3))
    data = bytearray(buf.getvalue())
    local, central = data.find(b"PK\x03\x04"), data.find(b"PK\x01\x02")
    data[local + 6] |= 1
    data[central + 8] |= 1
    return bytes(data)


def test_an_encrypted_zip_is_archive_invalid(any_db_api: Api) -> None:
    project = any_db_api.project()
    r = any_db_api.upload(project["id"], [("secret.zip", _encrypted_zip())])
    body = assert_problem(r, 422, "archive_invalid")
    assert "encrypted" in body["detail"]
    assert any_db_api.client.get(f"/v1/projects/{project['id']}").json()["image_count"] == 0


def test_echoed_values_are_truncated(api: Api) -> None:
    project = api.project()
    huge = "x" * 1_000_000
    r = api.client.post(f"/v1/projects/{project['id']}/jobs", json={"backbone": huge})
    assert r.status_code == 422, r.text[:300]
    assert len(r.content) < 5_000
    r = api.client.post(f"/v1/projects/{project['id']}/jobs", json={"method": huge})
    assert r.status_code == 422, r.text[:300]
    assert len(r.content) < 5_000


@pytest.mark.parametrize(
    ("method", "params"),
    [
        ("linear_probe", {"Cs": [0]}),
        ("linear_probe", {"Cs": [1.0] * 100}),
        ("finetune", {"seed": -5}),
        ("finetune", {"trainable": [f"blocks.{i}" for i in range(100)]}),
        ("domain_adaptation", {"dann_epochs": list(range(1, 100))}),
        ("auto", {"candidates": ["knn"] * 100}),
        ("pretrain", {"architecture": "local-dir:/etc"}),
        ("pretrain", {"architecture": "hf-hub:timm/vit_giant_patch14_dinov2.lvd142m"}),
        ("pretrain", {"architecture": "vit_giant_patch14_224"}),
    ],
)
def test_bad_params_are_refused_at_creation(api: Api, method: str, params: dict) -> None:
    project = api.project()
    r = api.client.post(
        f"/v1/projects/{project['id']}/jobs", json={"method": method, "params": params}
    )
    body = assert_problem(r, 422, "invalid_params")
    assert "/etc" not in json.dumps(body) or "local-dir" not in json.dumps(body)
    assert _jobs(api, project["id"]) == []


def test_a_wrong_key_is_refused_before_the_body_is_read(settings: Settings) -> None:
    app = create_app(settings, enqueue=lambda *_: None)
    received: list[dict] = []
    sent: list[dict] = []

    async def receive() -> dict:
        received.append({})
        return {"type": "http.request", "body": b"x" * 1024, "more_body": True}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": "/v1/projects/p/images", "raw_path": b"/v1/projects/p/images",
        "query_string": b"", "root_path": "", "client": ("127.0.0.1", 1), "server": ("t", 80),
        "headers": [(b"authorization", b"Bearer wrong"), (b"content-length", b"100000000"),
                    (b"content-type", b"multipart/form-data; boundary=x")],
    }  # fmt: skip
    anyio.run(app, scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    assert start["status"] == 401
    assert received == []


def test_duplicates_are_not_decoded_and_decoding_is_budgeted(tmp_path: Path) -> None:
    api = _limited_api(tmp_path, max_pixels_per_request=5_000)
    with api.client:
        project = api.project()
        same = png(4, size=(64, 64))  # 4 096 pixels: the budget holds one decode
        r = api.upload(project["id"], [(f"{i}.png", same) for i in range(10)], label="a")
        assert r.status_code == 201, r.text
        assert (r.json()["created"], r.json()["duplicates"]) == (1, 9)

        r = api.upload(project["id"], [(f"n{i}.png", png(10 + i, size=(64, 64))) for i in range(2)],
                       label="a")  # fmt: skip
        assert r.status_code == 207, r.text
        assert r.json()["created"] == 1
        assert [x["code"] for x in r.json()["rejected"]] == ["decode_budget_exceeded"]


def test_an_unexpected_training_error_does_not_leak_its_text(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    from app.transfer.methods.knn import KNN

    def explode(*args: object, **kwargs: object) -> None:
        raise RuntimeError("cannot open /srv/secret/weights.bin")

    monkeypatch.setattr(KNN, "fit", explode)
    job = _knn_job(api)
    assert job["status"] == "failed"
    assert job["error"]["code"] == "training_failed"
    assert "/srv" not in json.dumps(job) and "RuntimeError" not in json.dumps(job)


def test_every_job_has_a_time_limit(tmp_path: Path) -> None:
    api = _limited_api(tmp_path, job_max_minutes=1e-6)
    with api.client:
        job = _knn_job(api)
        assert job["status"] == "failed"
        assert job["error"]["code"] == "job_timed_out"


def test_predict_decodes_within_the_request_budget(tmp_path: Path) -> None:
    api = _limited_api(tmp_path, max_pixels_per_request=5_000)
    with api.client:
        model_id = _knn_job(api)["model_id"]
        files = [("a.png", png(20, size=(64, 64))), ("b.png", png(21, size=(64, 64)))]
        r = api.client.post(f"/v1/models/{model_id}/predict", files=[("files", f) for f in files])
        assert r.status_code == 207, r.text
        assert len(r.json()["predictions"]) == 1
        assert [(x["filename"], x["code"]) for x in r.json()["rejected"]] == [
            ("b.png", "decode_budget_exceeded")
        ]
