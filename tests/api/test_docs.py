"""The interactive docs: served offline, able to authenticate, honest about the contract."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient

from app.transfer.methods import get_method, list_methods
from tests.api.helpers import assert_problem, digit
from tests.conftest import Api

# Attributes that make a browser fetch something: src=, href=, spec-url=, and Swagger's url: '…'.
URL = re.compile(r"""(?:\bsrc=|\bhref=|spec-url=|\burl:\s*)["']([^"']+)["']""")


def _referenced(html: str) -> list[str]:
    return URL.findall(html)


def test_docs_pages_reference_no_external_host(anonymous: TestClient) -> None:
    for page in ("/docs", "/redoc"):
        r = anonymous.get(page)
        assert r.status_code == 200, page
        assert "http://" not in r.text and "https://" not in r.text, page
        refs = _referenced(r.text)
        assert refs, page
        for ref in refs:
            assert ref.startswith("/"), (page, ref)
            if ref != "/openapi.json":
                asset = anonymous.get(ref)
                assert asset.status_code == 200, ref
                assert len(asset.content) > 1000, ref


def test_openapi_declares_the_bearer_scheme_on_every_v1_route(anonymous: TestClient) -> None:
    spec = anonymous.get("/openapi.json").json()
    assert spec["components"]["securitySchemes"]["ApiKey"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "An API key: `dovecote keys create --tenant NAME` prints one.",
    }
    for path, operations in spec["paths"].items():
        for method, op in operations.items():
            secured = op.get("security") == [{"ApiKey": []}]
            assert secured == path.startswith("/v1"), (method, path)


def test_wrong_key_says_how_keys_are_made(anonymous: TestClient, api: Api) -> None:
    for headers in ({}, {"Authorization": "Bearer nope"}):
        body = assert_problem(anonymous.get("/v1/projects", headers=headers), 401, "unauthorized")
        assert "dovecote keys create" in body["detail"]


def _schema(spec: dict, ref: str) -> dict:
    return spec["components"]["schemas"][ref.rsplit("/", 1)[-1]]


def test_job_and_model_schemas_are_typed_from_the_registry(anonymous: TestClient) -> None:
    spec = anonymous.get("/openapi.json").json()
    names = sorted(m.name for m in list_methods())
    job_create = _schema(spec, "JobCreate")
    assert job_create["properties"]["method"]["enum"] == names
    for m in list_methods():
        assert f"`{m.name}`: {m.summary}" in job_create["properties"]["method"]["description"]
    job_out = _schema(spec, "JobOut")
    assert job_out["properties"]["status"]["enum"] == [
        "queued", "running", "succeeded", "failed", "cancelled"
    ]  # fmt: skip
    assert job_out["properties"]["method"]["enum"] == names
    metrics = _schema(spec, _schema(spec, "ModelOut")["properties"]["metrics"]["$ref"])
    assert {"accuracy", "macro_f1", "per_class", "confusion_matrix", "validation"} <= set(
        metrics["properties"]
    )
    upload = spec["paths"]["/v1/projects/{project_id}/images"]["post"]["responses"]
    for code in ("201", "207"):
        assert upload[code]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/UploadResult"
        }


def test_one_valid_job_example_per_method(anonymous: TestClient) -> None:
    op = anonymous.get("/openapi.json").json()["paths"]["/v1/projects/{project_id}/jobs"]
    examples = op["post"]["requestBody"]["content"]["application/json"]["examples"]
    assert sorted(examples) == sorted(m.name for m in list_methods())
    for name, example in examples.items():
        method = get_method(name)
        assert example["value"]["method"] == name
        assert example["description"] == method.summary
        method.parse_params(example["value"]["params"])  # raises InvalidParams if stale


def test_model_metrics_keep_their_shape(api: Api) -> None:
    project = api.project("digits")
    api.upload_labeled(project["id"], [(str(i % 2), digit(i % 2, i)) for i in range(8)])
    job = api.train(project["id"], "knn")
    model = api.client.get(f"/v1/models/{job['model_id']}").json()
    metrics = model["metrics"]
    assert None not in (metrics.get(k, 0) for k in ("accuracy", "macro_f1", "n_train"))
    assert "negative_transfer" not in metrics  # absent stays absent (not null)
    assert metrics["baseline"]["name"] == "majority_class"
