"""Fixtures of the API tests: a second tenant and an unauthenticated client on the same app."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from tests.api.helpers import client_with_key, new_key
from tests.conftest import Api


@pytest.fixture
def acme(api: Api) -> Iterator[TestClient]:
    """A client authenticated as another tenant, ``acme``, on the same app."""
    with client_with_key(api, new_key(api.settings, "acme")) as client:
        yield client


@pytest.fixture
def anonymous(api: Api) -> Iterator[TestClient]:
    """A client without any ``Authorization`` header."""
    with client_with_key(api, None) as client:
        yield client
