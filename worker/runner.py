"""One job run: claim the job, build the inputs, do the work, record the outcome.

A training run calls its method and stores the model; a batch prediction
(:func:`app.services.batch_predictions.run`) predicts its images and stores the results;
an audit (:func:`app.services.audit.run_job`) audits its project's images and stores the
result.
The worker looks methods up by name and never branches on them. A run heartbeats from a
background thread, reports progress through the ``progress`` callback (which raises
:class:`~app.errors.JobCancelled` when the job was cancelled), and writes its output
before it marks the job ``succeeded``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.config import Settings
from app.db.models import Job, Project
from app.db.session import session_scope
from app.errors import (
    AuditFailed,
    BatchPredictionFailed,
    DovecoteError,
    JobCancelled,
    JobSetupFailed,
    JobTimedOut,
    NotFound,
    TrainingFailed,
)
from app.services import audit as audit_service
from app.services import backbones as learned_backbones
from app.services import batch_predictions, training_data
from app.services import jobs as jobs_service
from app.services import models as models_service
from app.storage import open_store
from app.transfer.data import Progress
from app.transfer.methods import get_method

log = logging.getLogger(__name__)


class _Heartbeat(threading.Thread):
    """Keeps ``heartbeat_at`` fresh while a long step (a big forward pass) runs."""

    def __init__(self, settings: Settings, job_id: str, token: str) -> None:
        super().__init__(name=f"heartbeat-{job_id}", daemon=True)
        self.settings, self.job_id, self.token = settings, job_id, token
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.settings.job_heartbeat_seconds):
            try:
                with session_scope(self.settings.resolved_database_url) as db:
                    jobs_service.heartbeat(db=db, job_id=self.job_id, token=self.token)
            except NotFound:
                return
            except Exception:  # a DB hiccup must not kill the run; the next beat retries
                log.exception("heartbeat failed for job %s", self.job_id)


def _progress_reporter(settings: Settings, job_id: str, token: str) -> Progress:
    """Records progress; raises :class:`JobCancelled` once the job was cancelled and
    :class:`JobTimedOut` once the run is past ``settings.job_max_minutes``."""
    last: dict[str, object] = {}
    deadline = time.monotonic() + settings.job_max_minutes * 60

    def report(fraction: float, stage: str, record: dict[str, Any] | None = None) -> None:
        if time.monotonic() > deadline:
            raise JobTimedOut(
                f"The run took longer than {settings.job_max_minutes:g} minutes "
                "(DOVECOTE_JOB_MAX_MINUTES); lower the method's epochs or max_minutes, or use "
                "fewer images."
            )
        rounded = round(fraction, 3)
        if record is None and last.get("v") == (rounded, stage):
            return
        last["v"] = (rounded, stage)
        with session_scope(settings.resolved_database_url) as db:
            cancelled = jobs_service.heartbeat(
                db=db, job_id=job_id, token=token, progress=fraction, stage=stage, record=record
            )
        if cancelled:
            raise JobCancelled(f"Job {job_id} was cancelled.")

    return report


@dataclass(frozen=True)
class _Work:
    """What a claimed job does: ``run(progress)`` returns the id of the model the job ends
    with (the one a training made, the one a batch prediction used; an audit: None). An unexpected error
    fails the job as ``failure`` ("``what`` stopped on an unexpected internal error");
    ``discard`` removes what a run that did not succeed leaves behind."""

    run: Callable[[Progress], str | None]
    failure: type[DovecoteError]
    what: str
    discard: Callable[[], None] = lambda: None


def _training(db: Session, settings: Settings, job: Job) -> _Work:
    project = db.get(Project, job.project_id)
    assert project is not None  # jobs are deleted with their project
    data = training_data.load(db=db, settings=settings, project=project, backbone=job.backbone)
    labeled_images = sum(1 for s in data.samples if s.label is not None)
    job_id, method_name, raw_params = job.id, job.method, dict(job.params or {})

    def run(progress: Progress) -> str:
        method = get_method(method_name)
        trained = method.fit(data, method.parse_params(raw_params), progress)
        progress(1.0, "auditing the images")
        store = open_store(settings.resolved_storage_url)
        with session_scope(settings.resolved_database_url) as db:
            job = db.get(Job, job_id)
            assert job is not None
            project = db.get(Project, job.project_id)
            assert project is not None
            audit_service.record_in_metrics(
                db=db, settings=settings, store=store, project=project, backbone=job.backbone,
                metrics=trained.metrics,
            )  # fmt: skip
            model = models_service.save_trained(
                db=db, store=store, job=job, trained=trained, labeled_images=labeled_images
            )
            return model.id

    return _Work(run, TrainingFailed, "Training")


def _batch_prediction(db: Session, settings: Settings, job: Job) -> _Work:
    job_id, project_id = job.id, job.project_id
    return _Work(
        lambda progress: batch_predictions.run(settings=settings, job_id=job_id, progress=progress),
        BatchPredictionFailed,
        "The batch prediction",
        lambda: batch_predictions.discard(
            store=open_store(settings.resolved_storage_url), project_id=project_id, job_id=job_id
        ),
    )


def _audit(db: Session, settings: Settings, job: Job) -> _Work:
    job_id = job.id

    def run(progress: Progress) -> None:
        audit_service.run_job(settings=settings, job_id=job_id, progress=progress)

    return _Work(run, AuditFailed, "The audit")


#: How the work of each kind of job that is not a training is prepared.
_PREPARE = {jobs_service.BATCH_PREDICT: _batch_prediction, jobs_service.AUDIT: _audit}


def _prepare(settings: Settings, job_id: str) -> _Work | None:
    """The work of the claimed job's kind (training, a batch prediction, an audit), with
    its inputs loaded (None when the job is gone).

    Runs under the job's error handling: data that changed since the job was created fails
    it with its own code (a missing image is ``image_missing``), anything else with
    :class:`JobSetupFailed`, whose text names no server detail."""
    try:
        with session_scope(settings.resolved_database_url) as db:
            job = db.get(Job, job_id)
            if job is None:
                return None
            log.info("running job %s (%s, queue %s)", job_id, job.method, job.queue)
            return _PREPARE.get(job.method, _training)(db, settings, job)
    except DovecoteError:
        raise
    except Exception as exc:
        log.exception("job %s: could not prepare its inputs", job_id)
        raise JobSetupFailed(
            f"The worker could not prepare the job's inputs (an internal error); the server "
            f"log has the details under job {job_id}."
        ) from exc


def run_job(job_id: str, *, settings: Settings, queue: str | None = None) -> str:
    """Run one job, woken by the message of ``job_id`` on ``queue`` (default: that job's
    own); returns the final status of the job it ran. Safe to call twice.

    The job run is the fairest queued one of that queue
    (:func:`app.services.jobs.claim_next`), not necessarily ``job_id``: a tenant's long
    queue does not keep another tenant's job waiting behind all of it. With nothing queued,
    it returns ``job_id``'s status (``missing`` when it is gone)."""
    learned_backbones.install(settings)
    url = settings.resolved_database_url
    with session_scope(url) as db:
        claimed = jobs_service.claim_next(
            db=db, job_id=job_id, stale_after=settings.job_stale_after_seconds, queue=queue
        )
        if claimed is None:
            status = db.scalar(select(Job.status).where(Job.id == job_id)) or "missing"
            log.info("woken by job %s (%s): nothing queued to run", job_id, status)
            return status
        if claimed[0] != job_id:
            log.info("woken by job %s, running job %s (fair share)", job_id, claimed[0])
        job_id, token = claimed

    beat = _Heartbeat(settings, job_id, token)
    beat.start()
    work: _Work | None = None
    try:
        work = _prepare(settings, job_id)
        if work is None:  # its project was deleted meanwhile
            return "missing"
        model_id = work.run(_progress_reporter(settings, job_id, token))
        with session_scope(url) as db:
            jobs_service.succeed(db=db, job_id=job_id, token=token, model_id=model_id)
        return "succeeded"
    except JobCancelled:
        with session_scope(url) as db:
            ended = jobs_service.mark_cancelled(db=db, job_id=job_id, token=token)
        outcome = "cancelled"
    except NotFound:  # another run took the job over; it owns the outcome
        return "superseded"
    except DovecoteError as exc:
        with session_scope(url) as db:
            ended = jobs_service.fail(db=db, job_id=job_id, error=exc, token=token)
        outcome = "failed"
    except Exception:
        # The traceback goes to the server log only: exception texts can name server paths.
        log.exception("job %s failed", job_id)
        with session_scope(url) as db:
            ended = jobs_service.fail(
                db=db,
                job_id=job_id,
                error=(work.failure if work else TrainingFailed)(
                    f"{work.what if work else 'Training'} stopped on an unexpected internal error; the server log has "
                    f"the details under job {job_id}."
                ),
                token=token,
            )
        outcome = "failed"
    finally:
        beat.stopped.set()
    if ended and work is not None:  # this run still owned the job: nobody else uses its leftovers
        work.discard()
    return outcome
