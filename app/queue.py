"""The Celery configuration shared by the API (which only sends by task name) and the worker.

Durability settings (ARCHITECTURE.md, "Jobs are durable"): late acks, reject on worker
lost, prefetch 1; tasks are idempotent because a job is claimed atomically in the database.

The embedded broker (kombu's SQLAlchemy transport, ``sqla+<database url>``) is a table the
worker polls; kombu polls it once a second by default, which added 0.2-1.0 s to the start
of every job. Its interval is ``DOVECOTE_BROKER_POLL_SECONDS`` here (a transport option,
which kombu's own SQLAlchemy channel would hand to ``create_engine``: :class:`SQLTransport`
keeps it for the transport). Redis pushes messages and is unaffected.

Queues (ARCHITECTURE.md, "Processes"): ``train`` for jobs on frozen, cached features (CPU
workers), ``gpu`` for jobs that train through a backbone (:meth:`Method.trains_backbone`)
when the installation has GPU workers (``DOVECOTE_GPU_QUEUE``); without them every job goes
to ``train``. A job's queue is chosen once, at creation, and stored on it: its messages, the
sweep's resends included, go there, and a worker woken on a queue claims only that queue's
jobs (:func:`app.services.jobs.claim_next`).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, get_args

from celery import Celery
from kombu.transport import sqlalchemy as kombu_sqla
from sqlalchemy import create_engine

from app.config import QueueName

TRAIN_TASK = "dovecote.train"
TRAIN_QUEUE: QueueName = "train"
GPU_QUEUE: QueueName = "gpu"
QUEUES: tuple[str, ...] = get_args(QueueName)
SQL_PREFIX = "sqla+"
DEFAULT_POLL_SECONDS = 0.1
#: Transport options kombu's SQL channel reads itself; the others go to ``create_engine``.
_NOT_ENGINE_OPTIONS = frozenset(
    {"queue_tablename", "message_tablename", "callback", "errback", "max_retries",
     "interval_start", "interval_step", "interval_max", "retry_errors", "polling_interval"}
)  # fmt: skip


class SQLChannel(kombu_sqla.Channel):
    def _engine_from_config(self) -> Any:
        conninfo = self.connection.client
        options = {
            k: v for k, v in conninfo.transport_options.items() if k not in _NOT_ENGINE_OPTIONS
        }
        return create_engine(conninfo.hostname, **options)


class SQLTransport(kombu_sqla.Transport):
    """kombu's SQLAlchemy transport that accepts ``polling_interval`` as an option."""

    Channel = SQLChannel


def _broker_options(broker_url: str, poll_seconds: float) -> dict[str, Any]:
    if broker_url.startswith(("redis", "rediss")):
        return {"broker_transport_options": {"visibility_timeout": 3600}}
    if broker_url.startswith(SQL_PREFIX):
        return {
            "broker_transport": f"{__name__}:SQLTransport",
            "broker_transport_options": {"polling_interval": poll_seconds},
        }
    return {}


@lru_cache(maxsize=4)
def make_celery(broker_url: str, poll_seconds: float = DEFAULT_POLL_SECONDS) -> Celery:
    """The Celery app on ``broker_url``; ``poll_seconds``: how often a worker polls the
    embedded SQL broker for a new message (ignored by Redis)."""
    # ``sqla+`` would pick kombu's own transport by name: the URL goes without it.
    celery = Celery("dovecote", broker=broker_url.removeprefix(SQL_PREFIX))
    celery.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        task_default_queue=TRAIN_QUEUE,
        task_routes={TRAIN_TASK: {"queue": TRAIN_QUEUE}},
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        worker_cancel_long_running_tasks_on_connection_loss=False,
        **_broker_options(broker_url, poll_seconds),
    )
    return celery


def job_queue(*, trains_backbone: bool, gpu_queue: bool) -> QueueName:
    """The queue of a job: ``gpu`` for one that trains through a backbone when GPU workers
    consume that queue (``gpu_queue``), else ``train``."""
    return GPU_QUEUE if gpu_queue and trains_backbone else TRAIN_QUEUE


def enqueue_training(
    broker_url: str,
    job_id: str,
    poll_seconds: float = DEFAULT_POLL_SECONDS,
    queue: str = TRAIN_QUEUE,
) -> None:
    """Send the message that wakes a worker consuming ``queue`` for job ``job_id``."""
    if queue not in QUEUES:
        raise ValueError(f"unknown queue {queue!r}; known: {QUEUES}")
    make_celery(broker_url, poll_seconds).send_task(
        TRAIN_TASK, args=[job_id], kwargs={"queue": queue}, queue=queue
    )
