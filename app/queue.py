"""The Celery configuration shared by the API (which only sends by task name) and the worker.

Durability settings (ARCHITECTURE.md, "Jobs are durable"): late acks, reject on worker
lost, prefetch 1; tasks are idempotent because a job is claimed atomically in the database.
"""

from __future__ import annotations

from functools import lru_cache

from celery import Celery

TRAIN_TASK = "dovecote.train"
TRAIN_QUEUE = "train"


@lru_cache(maxsize=4)
def make_celery(broker_url: str) -> Celery:
    celery = Celery("dovecote", broker=broker_url)
    celery.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        task_default_queue=TRAIN_QUEUE,
        task_routes={TRAIN_TASK: {"queue": TRAIN_QUEUE}},
        broker_connection_retry_on_startup=True,
        # kombu's SQLAlchemy transport hands its options to create_engine: Redis only.
        broker_transport_options=(
            {"visibility_timeout": 3600} if broker_url.startswith(("redis", "rediss")) else {}
        ),
        worker_hijack_root_logger=False,
        worker_cancel_long_running_tasks_on_connection_loss=False,
    )
    return celery


def enqueue_training(broker_url: str, job_id: str) -> None:
    make_celery(broker_url).send_task(TRAIN_TASK, args=[job_id], queue=TRAIN_QUEUE)
