"""Schemathesis over every operation of the OpenAPI schema, authenticated, on SQLite and on
PostgreSQL: no input makes a 5xx, and every answer (errors included) matches what the schema
documents. Path ids are swapped for those of a real project, image, job and model half of the
time, so the fuzzing reaches past the 404s into validation, decoding and prediction."""

from __future__ import annotations

import random
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from app.api.main import create_app
from app.config import Settings
from tests.api.helpers import digit
from tests.conftest import API_KEY, Api, fresh_postgres_redis, make_settings, migrate

EXAMPLES_PER_OPERATION = 12


class _Target:
    """The ASGI app under test: the schema is loaded once at import (from an app without a
    database, which serves /openapi.json alone); each database's fixture swaps in its app."""

    def __init__(self) -> None:
        self.app: Any = create_app(Settings(data_dir=Path(tempfile.mkdtemp()), prewarm=False))

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.app(scope, receive, send)


target = _Target()
schema = schemathesis.openapi.from_asgi("/openapi.json", target)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def fuzz_ids(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, str]]:
    """A real project (two classes of digits), image, job and model; their ids by name."""
    with ExitStack() as stack:
        overrides: dict[str, object] = {}
        if request.param == "postgresql":
            overrides["database_url"] = stack.enter_context(fresh_postgres_redis())["database_url"]
        settings = make_settings(tmp_path_factory.mktemp(request.param), **overrides)
        migrate(settings)
        api = Api(settings)
        stack.enter_context(api.client)
        project = api.project("fuzzed")
        api.upload_labeled(project["id"], [(str(d), digit(d, i)) for d in (0, 1) for i in range(3)])
        job = api.train(project["id"], "knn")
        image = api.client.get(f"/v1/projects/{project['id']}/images").json()["items"][0]
        before, target.app = target.app, api.client.app
        try:
            yield {
                "project_id": project["id"],
                "image_id": image["id"],
                "job_id": job["id"],
                "model_id": job["model_id"],
                "name": "production",
            }
        finally:
            target.app = before


@schema.parametrize()
@hypothesis_settings(
    max_examples=EXAMPLES_PER_OPERATION,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_no_input_makes_a_server_error(case: schemathesis.Case, fuzz_ids: dict[str, str]) -> None:
    if case.method != "DELETE" and random.Random(repr(case.path_parameters)).random() < 0.5:
        for name in case.path_parameters or {}:
            if name in fuzz_ids:
                case.path_parameters[name] = fuzz_ids[name]
    case.call_and_validate(
        headers={"Authorization": f"Bearer {API_KEY}"},
        checks=[not_a_server_error, response_schema_conformance],
    )
