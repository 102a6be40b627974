"""The Celery app of the worker: shared config from ``app.queue`` plus the tasks here.

Run it with ``dovecote worker`` (solo pool: no fork after torch is initialised).
"""

from __future__ import annotations

import logging
import threading

from celery.signals import worker_ready, worker_shutdown

from app.config import get_settings
from app.db.session import session_scope
from app.queue import TRAIN_TASK, enqueue_training, make_celery
from app.services import jobs as jobs_service
from app.services import predictions as predictions_service
from app.storage import open_store
from worker.runner import run_job

log = logging.getLogger(__name__)
settings = get_settings()
celery = make_celery(settings.resolved_broker_url, settings.broker_poll_seconds)


def _enqueue(job_id: str) -> None:
    enqueue_training(settings.resolved_broker_url, job_id, settings.broker_poll_seconds)


@celery.task(name=TRAIN_TASK, acks_late=True, reject_on_worker_lost=True)
def train(job_id: str) -> str:
    return run_job(job_id, settings=settings)


def sweep_once() -> dict[str, int]:
    """Recover orphaned jobs; delete stored predictions past their project's retention."""
    with session_scope(settings.resolved_database_url) as db:
        counts = jobs_service.sweep(db=db, settings=settings, enqueue=_enqueue)
        store = open_store(settings.resolved_storage_url)
        try:
            counts.update(predictions_service.sweep_expired(db=db, store=store))
        except Exception:
            db.rollback()
            log.exception("stored-prediction retention sweep failed")
        return counts


_stop_sweeping = threading.Event()


def _sweep_forever() -> None:
    while True:
        try:
            counts = sweep_once()
            if any(counts.values()):
                log.warning("recovery sweep: %s", counts)
        except Exception:
            log.exception("recovery sweep failed")
        if _stop_sweeping.wait(settings.sweep_interval_seconds):
            return


@worker_ready.connect
def _start_sweeper(**_: object) -> None:
    threading.Thread(target=_sweep_forever, name="recovery-sweep", daemon=True).start()


@worker_shutdown.connect
def _stop_sweeper(**_: object) -> None:
    _stop_sweeping.set()
