"""The recovery sweep resends the message of a job left queued: a broker that lost its
messages (Redis restarted without persistence) still runs every job."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import update
from sqlalchemy.orm import Session

from app.db.base import utcnow
from app.db.models import Job
from app.db.session import session_scope
from app.services import jobs as jobs_service
from tests.api.helpers import digit
from tests.conftest import Api


def test_a_job_queued_too_long_is_resent_once_per_period(api: Api) -> None:
    project = api.project()
    api.upload_labeled(project["id"], [(str(d), digit(d, i)) for d in (0, 1) for i in range(3)])
    r = api.client.post(f"/v1/projects/{project['id']}/jobs", json={"method": "knn"})
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]
    assert api.queued == [job_id]
    url = api.settings.resolved_database_url
    resent: list[tuple[str, str]] = []

    def sweep(db: Session) -> int:
        enqueue = lambda job_id, queue: resent.append((job_id, queue))  # noqa: E731
        return jobs_service.sweep(db=db, settings=api.settings, enqueue=enqueue)["resent"]

    with session_scope(url) as db:  # sent just now: nothing to resend
        assert sweep(db) == 0
        stale = utcnow() - timedelta(seconds=api.settings.job_stale_after_seconds + 1)
        db.execute(update(Job).where(Job.id == job_id).values(enqueued_at=stale))
        db.commit()
        assert sweep(db) == 1
        assert sweep(db) == 0
    assert resent == [(job_id, "train")]  # on the job's own queue

    # The resent message runs the job exactly once; the first message then finds nothing.
    api.queued = [job_id, *(j for j, _ in resent)]
    api.run_queued()
    assert api.client.get(f"/v1/jobs/{job_id}").json()["status"] == "succeeded"
    models = api.client.get(f"/v1/projects/{project['id']}/models").json()["items"]
    assert len(models) == 1
