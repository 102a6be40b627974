"""Fair scheduling: a tenant's long queue does not keep another tenant's job behind it.

The worker code runs in-process (``run_job``, once per queue message, in queue order), on
SQLite and on PostgreSQL.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from app.config import Settings
from app.db.models import Job
from app.db.session import session_scope
from app.services import jobs as jobs_service
from tests.api.helpers import client_with_key, new_key, project_with_jobs
from tests.conftest import Api, make_settings, migrate
from worker.runner import run_job

pytestmark = pytest.mark.integration


@pytest.fixture(params=["sqlite", "postgres"])
def fair_settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    urls = {}
    if request.param == "postgres":
        urls = {"database_url": request.getfixturevalue("postgres_redis")["database_url"]}
    settings = make_settings(tmp_path, tenant_max_active_jobs=0, **urls)
    migrate(settings)
    return settings


def _queue(client: TestClient, n: int, method: str = "knn") -> list[str]:
    return [job["id"] for job in project_with_jobs(client, [method] * n)]


def test_other_tenants_job_runs_second_not_last(fair_settings: Settings) -> None:
    """Tenant A queues 4 jobs, then tenant B one: one worker, woken once per message in
    queue order, runs A's first job, then B's, then the rest of A's, each exactly once."""
    api = Api(fair_settings)
    with api.client, client_with_key(api, new_key(fair_settings, "b")) as b:
        a_jobs = _queue(api.client, 4)
        [b_job] = _queue(b, 1)
        assert api.queued == [*a_jobs, b_job]
        assert api.run_queued() == ["succeeded"] * 5
        with session_scope(fair_settings.resolved_database_url) as db:
            runs = db.execute(select(Job.id, Job.status, Job.attempts).order_by(Job.started_at))
            order = [(job_id, status, attempts) for job_id, status, attempts in runs]
    assert [job_id for job_id, _, _ in order] == [a_jobs[0], b_job, *a_jobs[1:]]
    assert {(status, attempts) for _, status, attempts in order} == {("succeeded", 1)}
    # a message of an already-run job wakes the worker to no harm
    assert run_job(b_job, settings=fair_settings) == "succeeded"


def test_workers_picking_at_once_get_different_jobs(fair_settings: Settings) -> None:
    """While one worker's pick is not yet committed, another picks a different job
    (PostgreSQL: ``FOR UPDATE SKIP LOCKED``; SQLite: the conditional update decides)."""
    api = Api(fair_settings)
    with api.client:
        jobs = _queue(api.client, 2)
    url = fair_settings.resolved_database_url
    with session_scope(url) as first, session_scope(url) as second:
        picked = jobs_service.next_fair(db=first, queue="train")
        assert picked == jobs[0]
        if first.get_bind().dialect.name == "postgresql":
            assert jobs_service.next_fair(db=second, queue="train") == jobs[1]
        claimed = jobs_service.claim_next(db=first, job_id=jobs[1], stale_after=60)
        assert claimed is not None and claimed[0] == jobs[0]
        again = jobs_service.claim_next(db=second, job_id=jobs[0], stale_after=60)
        assert again is not None and again[0] == jobs[1]
        assert jobs_service.claim_next(db=second, job_id=jobs[0], stale_after=60) is None
