"""The Celery app of the worker: shared config from ``app.queue`` plus the tasks here.

Run it with ``dovecote worker`` (solo pool: no fork after torch is initialised).
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

from celery.signals import worker_ready, worker_shutdown

from app.config import get_settings
from app.db.session import session_scope
from app.queue import TRAIN_TASK, enqueue_training, make_celery
from app.services import jobs as jobs_service
from app.services import monitoring as monitoring_service
from app.services import predictions as predictions_service
from app.services import webhooks as webhooks_service
from app.storage import open_store
from app.transfer.backbones import DEFAULT_BACKBONE
from app.transfer.features import graph_dir_in, warm_up
from app.transfer.methods.base import shared_backbone
from worker.runner import run_job

log = logging.getLogger(__name__)
settings = get_settings()
celery = make_celery(settings.resolved_broker_url, settings.broker_poll_seconds)


def _enqueue(job_id: str, queue: str) -> None:
    enqueue_training(settings.resolved_broker_url, job_id, settings.broker_poll_seconds, queue)


@celery.task(name=TRAIN_TASK, acks_late=True, reject_on_worker_lost=True)
def train(job_id: str, queue: str | None = None) -> str:
    """Woken by job ``job_id``'s message on ``queue`` (absent from messages sent before
    queues existed: the job's own)."""
    return run_job(job_id, settings=settings, queue=queue)


def sweep_once() -> dict[str, int]:
    """Recover orphaned jobs; delete stored predictions past their project's retention and
    finished webhook deliveries past theirs."""
    with session_scope(settings.resolved_database_url) as db:
        counts = jobs_service.sweep(db=db, settings=settings, enqueue=_enqueue)
        store = open_store(settings.resolved_storage_url)
        try:
            counts.update(predictions_service.sweep_expired(db=db, store=store))
        except Exception:
            db.rollback()
            log.exception("stored-prediction retention sweep failed")
        days = settings.webhook_delivery_retention_days
        counts.update(webhooks_service.sweep_old(db=db, days=days))
        return counts


_stopping = threading.Event()


def _sweep_forever() -> None:
    while True:
        try:
            counts = sweep_once()
            if any(counts.values()):
                log.warning("recovery sweep: %s", counts)
        except Exception:
            log.exception("recovery sweep failed")
        if _stopping.wait(settings.sweep_interval_seconds):
            return


def deliver_webhooks_once() -> dict[str, int]:
    """Send the webhook deliveries that are due (one attempt each)."""
    with session_scope(settings.resolved_database_url) as db:
        return webhooks_service.deliver_due(db=db, settings=settings)


def _deliver_forever() -> None:
    """Webhooks go out from their own thread: a slow receiver never holds up a job, and a
    long job never holds up a delivery. A full batch is followed by the next at once."""
    while True:
        sent = 0
        try:
            sent = sum(deliver_webhooks_once().values())
        except Exception:
            log.exception("webhook delivery failed")
        if sent < webhooks_service.DELIVERY_BATCH and _stopping.wait(settings.webhook_poll_seconds):
            return


def check_drift_once() -> dict[str, int]:
    """Compute the recent drift of every model with recent stored predictions, alerting
    on newly flagged windows (:func:`app.services.monitoring.check_recent`)."""
    with session_scope(settings.resolved_database_url) as db:
        store = open_store(settings.resolved_storage_url)
        return monitoring_service.check_recent(db=db, settings=settings, store=store)


def _check_drift_forever() -> None:
    """Drift is checked from its own thread, every ``drift_check_seconds``: it reads
    cached features (a backbone pass only for images never embedded) and never waits
    behind a job. Workers that check at the same moment send each alert once (the
    ``drift_alerts`` key)."""
    while not _stopping.wait(settings.drift_check_seconds):
        try:
            log.info("drift check: %s", check_drift_once())
        except Exception:
            log.exception("drift check failed")


@worker_ready.connect
def _start_sweeper(**_: object) -> None:
    threading.Thread(target=_sweep_forever, name="recovery-sweep", daemon=True).start()
    threading.Thread(target=_deliver_forever, name="webhook-delivery", daemon=True).start()
    if settings.drift_check_seconds > 0:
        threading.Thread(target=_check_drift_forever, name="drift-check", daemon=True).start()


#: Set by ``dovecote worker --ready-file`` (``dovecote serve``): written, with this process's
#: id, once the worker is connected to the broker and warm; ``/readyz`` waits for it.
ready_file: Path | None = None


@worker_ready.connect
def _prewarm_and_report(**_: object) -> None:
    """Load the default backbone before the first job needs it (its inference graph from
    the shared cache when the API exported it already) and run one extraction batch
    through it, then say the worker is ready."""
    if settings.prewarm:
        try:
            backbone = shared_backbone(
                DEFAULT_BACKBONE, settings.weights_dir, settings.allow_hub,
                graph_dir=graph_dir_in(settings.feature_cache_dir),
            )  # fmt: skip
            warm_up(backbone, settings.feature_batch_size)
        except Exception:
            log.warning("could not prewarm the default backbone", exc_info=True)
    if ready_file is not None:
        ready_file.write_text(str(os.getpid()))


@worker_shutdown.connect
def _stop_sweeper(**_: object) -> None:
    _stopping.set()
