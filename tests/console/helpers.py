"""Helpers of the console tests: a cookie-keeping client signed in with a key, and the
CSRF token of the page it last read."""

from __future__ import annotations

import re

import httpx
from fastapi.testclient import TestClient

from tests.conftest import Api

_TOKEN = re.compile(r'name="csrf_token" value="([^"]+)"')


def token_of(page: httpx.Response) -> str:
    match = _TOKEN.search(page.text)
    assert match, page.text[:500]
    return match.group(1)


def console_client(api: Api) -> TestClient:
    """A browser-like client on the app: no Authorization header, keeps cookies."""
    return TestClient(api.client.app, follow_redirects=False)


def sign_in(client: TestClient, key: str) -> httpx.Response:
    token = token_of(client.get("/console/sign-in"))
    return client.post("/console/sign-in", data={"key": key, "csrf_token": token})


def csrf(client: TestClient, path: str = "/console/") -> str:
    """The CSRF token of the signed-in session (read from ``path``)."""
    page = client.get(path)
    assert page.status_code == 200, page.text
    return token_of(page)
