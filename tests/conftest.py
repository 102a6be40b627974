from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text

from app.api.main import create_app
from app.cli import alembic_config
from app.config import Settings
from worker.runner import run_job

API_KEY = "test-admin-key"
POSTGRES_ADMIN_URL = os.environ.get(
    "DOVECOTE_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
REDIS_URL = os.environ.get("DOVECOTE_TEST_REDIS_URL", "redis://127.0.0.1:6379")


def make_settings(tmp_path: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "data_dir": tmp_path,
        "api_key": API_KEY,
        "job_heartbeat_seconds": 1.0,
        "job_stale_after_seconds": 5.0,
        "sweep_interval_seconds": 1.0,
        "feature_batch_size": 16,
        "shared_cache_dir": tmp_path / "shared-cache",
        "prewarm": False,  # fast in-process apps; tests/test_prewarm.py turns it on
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


def migrate(settings: Settings) -> None:
    from alembic import command

    command.upgrade(alembic_config(settings.resolved_database_url), "head")


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    s = make_settings(tmp_path)
    migrate(s)
    return s


class Api:
    """An httpx client on the app, with the jobs it enqueued run by the real worker code."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.queued: list[str] = []
        self.queues: dict[str, str] = {}  # job id -> the queue it was sent to
        self.client = TestClient(create_app(settings, enqueue=self.enqueue))
        self.client.headers["Authorization"] = f"Bearer {API_KEY}"

    def enqueue(self, job_id: str, queue: str) -> None:
        self.queued.append(job_id)
        self.queues[job_id] = queue

    def run_queued(self) -> list[str]:
        statuses = [run_job(job_id, settings=self.settings) for job_id in self.queued]
        self.queued.clear()
        return statuses

    def project(self, name: str = "pigeons", **body: object) -> dict:
        r = self.client.post("/v1/projects", json={"name": name, **body})
        assert r.status_code == 201, r.text
        return r.json()

    def upload(self, project_id: str, files: list[tuple[str, bytes]], **form: str):
        return self.client.post(
            f"/v1/projects/{project_id}/images",
            files=[("files", (name, data)) for name, data in files],
            data=form,
        )

    def upload_labeled(
        self, project_id: str, items: list[tuple[str, bytes]], split: str = "auto"
    ) -> None:
        by_label: dict[str, list[tuple[str, bytes]]] = {}
        for i, (label, data) in enumerate(items):
            by_label.setdefault(label, []).append((f"{label}-{i}.png", data))
        for label, files in by_label.items():
            r = self.upload(project_id, files, label=label, split=split)
            assert r.status_code in (201, 207), r.text

    def train(self, project_id: str, method: str = "linear_probe", **body: object) -> dict:
        r = self.client.post(f"/v1/projects/{project_id}/jobs", json={"method": method, **body})
        assert r.status_code == 202, r.text
        self.run_queued()
        job = self.client.get(f"/v1/jobs/{r.json()['id']}").json()
        assert job["status"] == "succeeded", job
        return job


@pytest.fixture
def api(settings: Settings) -> Iterator[Api]:
    a = Api(settings)
    with a.client:
        yield a


@pytest.fixture
def postgres_redis(tmp_path: Path) -> Iterator[dict[str, str]]:
    with fresh_postgres_redis() as urls:
        yield urls


@contextmanager
def fresh_postgres_redis() -> Iterator[dict[str, str]]:
    """A new PostgreSQL database and an emptied Redis db, dropped and flushed afterwards."""
    import redis

    name = f"dovecote_it_{secrets.token_hex(4)}"
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    db_index = 1 + secrets.randbelow(15)
    client = redis.Redis.from_url(f"{REDIS_URL}/{db_index}")
    client.flushdb()
    try:
        yield {
            "database_url": POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}",
            "broker_url": f"{REDIS_URL}/{db_index}",
        }
    finally:
        client.flushdb()
        from app.db.session import get_engine

        get_engine.cache_clear()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
