"""The interactive docs: served offline, able to authenticate, honest about the contract."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient

from tests.api.helpers import assert_problem
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
