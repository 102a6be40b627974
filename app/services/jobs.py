"""Training jobs: create (validate everything up front), read, cancel; and the worker-side
state machine: claim, heartbeat, progress, finish, and the recovery sweep.

``queued -> running -> succeeded | failed | cancelled``. The job row is the truth.

The queue runs two other kinds of job on the same machinery (durability, fair scheduling,
cancel, time limit, heartbeat, the active-job quota): batch predictions
(:mod:`app.services.batch_predictions`), rows whose ``method`` is :data:`BATCH_PREDICT`,
and dataset audits of large projects (:mod:`app.services.audit`), :data:`AUDIT`. The
training-job reads here never show them.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session

from app.config import Settings
from app.db.base import utcnow
from app.db.models import JOB_TERMINAL, Job, Project
from app.errors import DovecoteError, JobNotCancellable, NotFound
from app.queue import TRAIN_QUEUE, job_queue
from app.services import backbones, quotas, training_data, webhooks
from app.services.scoping import get_owned, list_in_project
from app.transfer.backbones import DEFAULT_BACKBONE, resolve_weights
from app.transfer.methods import get_method

log = logging.getLogger(__name__)

#: Sends the message of job ``(job id, queue)`` that wakes a worker consuming that queue.
Enqueue = Callable[[str, str], None]


#: ``Job.method`` of a batch prediction: never a training method's name (a test holds it),
#: so the column tells the two kinds of job apart.
BATCH_PREDICT = "batch_predict"
#: ``Job.method`` of a dataset audit (likewise never a training method's name).
AUDIT = "audit"
#: The ``Job.method`` values that are not training methods.
NOT_TRAINING = (BATCH_PREDICT, AUDIT)


class QueueUnavailable(DovecoteError):
    code = "queue_unavailable"
    status = 503
    title = "The job queue is unavailable"


def create(
    *,
    db: Session,
    settings: Settings,
    project: Project,
    method: str,
    backbone: str | None,
    params: dict[str, Any] | None,
    enqueue: Enqueue,
    promote: str = "auto",
) -> Job:
    """Check the tenant's active-job and model quotas; validate method, params, backbone and data;
    then store and enqueue the job, on the queue its method's need picks
    (:func:`app.queue.job_queue`). ``promote``: its model's promotion policy
    (:func:`app.services.aliases.promote_trained`)."""
    quotas.check_new_training_job(db=db, settings=settings, tenant_id=project.tenant_id)
    impl = get_method(method)
    parsed = impl.parse_params(params)
    backbone = backbone or DEFAULT_BACKBONE
    backbones.check_usable(db=db, tenant_id=project.tenant_id, name=backbone)
    resolve_weights(backbone, weights_dir=settings.weights_dir, allow_hub=settings.allow_hub)
    data = training_data.load(db=db, settings=settings, project=project, backbone=backbone)
    trained_on = impl.model_backbone(data, parsed)  # distill: its student's
    if trained_on != backbone:
        backbones.check_usable(db=db, tenant_id=project.tenant_id, name=trained_on)
        backbone = trained_on
    impl.check(data, parsed)
    job = Job(
        project_id=project.id,
        method=method,
        backbone=backbone,
        params=parsed.model_dump(mode="json"),
        promote=promote,
        status="queued",
        queue=job_queue(trains_backbone=impl.trains_backbone(parsed), gpu_queue=settings.gpu_queue),
        stage="queued",
    )
    return submit(db=db, job=job, enqueue=enqueue)


def submit(*, db: Session, job: Job, enqueue: Enqueue) -> Job:
    """Store the new ``queued`` job and send its queue message; a broker that cannot be
    reached fails the job and raises :class:`QueueUnavailable`."""
    db.add(job)
    db.commit()
    try:
        enqueue(job.id, job.queue)
    except Exception as exc:
        log.exception("could not enqueue job %s", job.id)
        error = QueueUnavailable("The job could not be queued: the broker is unreachable; retry.")
        fail(db=db, job_id=job.id, error=error)
        raise error from exc
    return job


def get(*, db: Session, tenant_id: str, job_id: str) -> Job:
    """A training job of the tenant (a batch prediction's or an audit's id reads like a
    missing one)."""
    job = get_owned(db, Job, job_id, tenant_id=tenant_id, resource="job")
    if job.method in NOT_TRAINING:
        raise NotFound(f"No job {job_id!r}.", resource="job")
    return job


def list_(
    *, db: Session, project: Project, limit: int, cursor: str | None
) -> tuple[list[Job], str | None]:
    """The project's training jobs."""
    return list_in_project(
        db, Job, project=project, limit=limit, cursor=cursor,
        where=Job.method.not_in(NOT_TRAINING),
    )  # fmt: skip


def cancel(*, db: Session, job: Job) -> Job:
    """Queued jobs end at once; running ones stop at their next progress report."""
    if job.status == "queued":
        claimed = db.execute(
            update(Job)
            .where(Job.id == job.id, Job.status == "queued")
            .values(
                status="cancelled", stage="cancelled", cancel_requested=True, finished_at=utcnow()
            )
        ).rowcount
        if claimed:
            webhooks.job_finished(db, job.id)
        db.commit()
        if claimed:
            db.refresh(job)
            return job
        db.refresh(job)
    if job.status == "running":
        db.execute(update(Job).where(Job.id == job.id).values(cancel_requested=True))
        db.commit()
        db.refresh(job)
        return job
    raise JobNotCancellable(f"Job {job.id} is {job.status}; only queued or running jobs cancel.")


# --- worker side -------------------------------------------------------------------------


def claim(*, db: Session, job_id: str, stale_after: float) -> str | None:
    """Atomically take a queued (or orphaned running) job; returns the run token or None."""
    now = utcnow()
    token = secrets.token_hex(8)
    claimed = db.execute(
        update(Job)
        .where(
            Job.id == job_id,
            Job.cancel_requested.is_(False),
            or_(
                Job.status == "queued",
                (Job.status == "running")
                & (Job.heartbeat_at < now - timedelta(seconds=stale_after)),
            ),
        )
        .values(
            status="running",
            stage="starting",
            run_token=token,
            heartbeat_at=now,
            started_at=now,
            attempts=Job.attempts + 1,
            error=None,
            history=[],
        )
    ).rowcount
    db.commit()
    return token if claimed else None


#: Picks a worker tries while other workers keep taking its pick first (SQLite). Each lost
#: race means another worker claimed a job, so this bound is only a guard against a bug.
CLAIM_ATTEMPTS = 100


def next_fair(*, db: Session, queue: str) -> str | None:
    """The queued job of ``queue`` that should run next: the tenant with the fewest running
    jobs of that queue first, among equals the one whose last job there started longest ago
    (never: first), and within a tenant the oldest job. One worker thus alternates between
    tenants that have work queued, whatever the order their jobs were queued in; each queue
    (its own pool of workers) is shared fairly on its own.

    On PostgreSQL the row is locked ``FOR UPDATE SKIP LOCKED`` until the caller commits, so
    workers picking at once get different jobs; on SQLite (one writer) the conditional
    update of :func:`claim` settles who gets it."""
    running = (
        select(Project.tenant_id.label("tenant_id"), func.count().label("n"))
        .select_from(Job)
        .join(Project, Job.project_id == Project.id)
        .where(Job.status == "running", Job.queue == queue)
        .group_by(Project.tenant_id)
        .subquery("running")
    )
    last_start = (
        select(Project.tenant_id.label("tenant_id"), func.max(Job.started_at).label("at"))
        .select_from(Job)
        .join(Project, Job.project_id == Project.id)
        .where(Job.started_at.is_not(None), Job.queue == queue)
        .group_by(Project.tenant_id)
        .subquery("last_start")
    )
    stmt = (
        select(Job.id)
        .join(Project, Job.project_id == Project.id)
        .outerjoin(running, running.c.tenant_id == Project.tenant_id)
        .outerjoin(last_start, last_start.c.tenant_id == Project.tenant_id)
        .where(Job.status == "queued", Job.queue == queue, Job.cancel_requested.is_(False))
        .order_by(
            func.coalesce(running.c.n, 0),
            last_start.c.at.asc().nulls_first(),
            Job.created_at,
            Job.id,
        )
        .limit(1)
    )
    if db.get_bind().dialect.name == "postgresql":
        stmt = stmt.with_for_update(skip_locked=True, of=Job)
    return db.scalar(stmt)


def claim_next(
    *, db: Session, job_id: str, stale_after: float, queue: str | None = None
) -> tuple[str, str] | None:
    """Take the job a worker should run now, woken by the message of ``job_id`` on ``queue``
    (default: that job's own queue, ``train`` when it is gone).

    A message only wakes a worker: it runs ``job_id`` itself only when that job's run was
    orphaned (``running`` with a stale heartbeat: a redelivery after a worker died);
    otherwise the fairest queued job of ``job_id``'s queue (:func:`next_fair`), whichever
    tenant queued it. Every job is enqueued at least once, on its own queue, so each queue
    always holds at least as many messages as it has queued jobs and each one runs; a worker
    only ever claims jobs of the queues it consumes. Returns ``(job id, run token)``, or None
    when nothing is queued there."""
    woken = db.execute(select(Job.status, Job.queue).where(Job.id == job_id)).first()
    queue = queue or (woken.queue if woken is not None else TRAIN_QUEUE)
    if woken is not None and woken.status == "running":
        token = claim(db=db, job_id=job_id, stale_after=stale_after)
        if token is not None:
            return job_id, token
    for _ in range(CLAIM_ATTEMPTS):
        picked = next_fair(db=db, queue=queue)
        if picked is None:
            db.commit()
            return None
        token = claim(db=db, job_id=picked, stale_after=stale_after)
        if token is not None:
            return picked, token
    log.warning("gave up claiming a queued job after %d lost races", CLAIM_ATTEMPTS)
    return None


def heartbeat(
    *,
    db: Session,
    job_id: str,
    token: str,
    progress: float | None = None,
    stage: str | None = None,
    record: dict[str, Any] | None = None,
) -> bool:
    """Record liveness (and progress, and a history record); returns whether cancellation
    was requested.

    Raises :class:`NotFound` when this run no longer owns the job (it was taken over).
    """
    values: dict[str, Any] = {"heartbeat_at": utcnow()}
    if progress is not None:
        values["progress"] = max(0.0, min(1.0, progress))
    if stage is not None:
        values["stage"] = stage[:100]
    if record is not None:
        history = db.scalar(select(Job.history).where(Job.id == job_id)) or []
        values["history"] = [*history, record]
    owned = db.execute(
        update(Job)
        .where(Job.id == job_id, Job.run_token == token, Job.status == "running")
        .values(**values)
    ).rowcount
    db.commit()
    if not owned:
        raise NotFound(f"Job {job_id} is no longer owned by this run.")
    return bool(db.scalar(select(Job.cancel_requested).where(Job.id == job_id)))


def _finish(db: Session, job_id: str, token: str | None, **values: Any) -> bool:
    stmt = update(Job).where(Job.id == job_id, Job.status.not_in(JOB_TERMINAL))
    if token is not None:
        stmt = stmt.where(Job.run_token == token)
    done = db.execute(stmt.values(finished_at=utcnow(), **values)).rowcount
    if done:  # the event commits with the status that caused it
        webhooks.job_finished(db, job_id)
    db.commit()
    return bool(done)


def succeed(*, db: Session, job_id: str, token: str, model_id: str | None) -> bool:
    return _finish(
        db, job_id, token, status="succeeded", stage="done", progress=1.0, model_id=model_id
    )


def fail(*, db: Session, job_id: str, error: DovecoteError, token: str | None = None) -> bool:
    return _finish(db, job_id, token, status="failed", stage="failed", error=error.problem())


def mark_cancelled(*, db: Session, job_id: str, token: str) -> bool:
    return _finish(db, job_id, token, status="cancelled", stage="cancelled")


class WorkerLost(DovecoteError):
    code = "worker_lost"
    status = 500
    title = "The worker running this job stopped"


def sweep(*, db: Session, settings: Settings, enqueue: Enqueue) -> dict[str, int]:
    """Requeue (or, past ``job_max_attempts``, fail) running jobs whose heartbeat went silent,
    and resend the message of jobs queued for longer than ``job_stale_after_seconds`` since
    their last one: a broker that lost its messages (Redis restarted without persistence)
    then still runs every job. Each message goes to the job's own queue, whichever worker
    sweeps. An extra message is harmless: it wakes a worker that claims the fairest queued
    job of that queue, or nothing."""
    cutoff = utcnow() - timedelta(seconds=settings.job_stale_after_seconds)
    stale = list(db.scalars(select(Job).where(Job.status == "running", Job.heartbeat_at < cutoff)))
    counts = {"requeued": 0, "failed": 0}
    for job in stale:
        if job.cancel_requested:
            _finish(db, job.id, job.run_token, status="cancelled", stage="cancelled")
            continue
        if job.attempts >= settings.job_max_attempts:
            error = WorkerLost(
                f"The worker stopped responding during attempt {job.attempts} of "
                f"{settings.job_max_attempts} (last heartbeat {job.heartbeat_at}); giving up."
            )
            if fail(db=db, job_id=job.id, error=error, token=job.run_token):
                counts["failed"] += 1
            continue
        requeued = db.execute(
            update(Job)
            .where(Job.id == job.id, Job.run_token == job.run_token, Job.status == "running")
            .values(
                status="queued",
                stage="requeued after worker loss",
                run_token=None,
                enqueued_at=utcnow(),
            )
        ).rowcount
        db.commit()
        if requeued:
            enqueue(job.id, job.queue)
            counts["requeued"] += 1
    counts["resent"] = _resend_waiting(db=db, cutoff=cutoff, enqueue=enqueue)
    return counts


def _resend_waiting(*, db: Session, cutoff: datetime, enqueue: Enqueue) -> int:
    waiting = db.execute(
        select(Job.id, Job.queue).where(
            Job.status == "queued",
            Job.cancel_requested.is_(False),
            or_(Job.enqueued_at.is_(None), Job.enqueued_at < cutoff),
        )
    ).all()
    for job_id, queue in waiting:
        db.execute(update(Job).where(Job.id == job_id).values(enqueued_at=utcnow()))
        db.commit()
        enqueue(job_id, queue)
    return len(waiting)
