"""Jobs routed by need: backbone training to the `gpu` queue when GPU workers exist, the rest
to `train`; a worker woken on a queue claims only that queue's jobs, fairly per queue.

A real Celery worker consuming one queue: tests/integration/test_worker.py."""

from __future__ import annotations

import argparse
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from app.cli import _queue_list
from app.config import Settings
from app.db.base import utcnow
from app.db.models import Job
from app.db.session import session_scope
from app.queue import GPU_QUEUE, TRAIN_QUEUE, job_queue
from app.services import jobs as jobs_service
from app.transfer.methods import get_method, list_methods
from tests.api.helpers import client_with_key, new_key, project_with_jobs
from tests.conftest import Api, make_settings, migrate

#: What each registered method's jobs need with its default params; a new method must say.
TRAINS_BACKBONE_BY_DEFAULT = {
    "attributes": False,
    "auto": True,  # finetune is one of its default candidates
    "distill": True,
    "domain_adaptation": False,
    "finetune": True,
    "knn": False,
    "linear_probe": False,
    "multitask": False,
    "pretrain": True,
    "zero_shot": False,
    "zero_shot_dap": False,
    "zero_shot_generalized": False,
}


def _defaults(name: str) -> dict[str, Any]:
    return {"teacher_model_id": "mdl_x"} if name == "distill" else {}  # its one required param


@pytest.mark.parametrize("method", sorted(m.name for m in list_methods()))
def test_every_method_says_whether_it_trains_a_backbone(method: str) -> None:
    impl = get_method(method)
    assert method in TRAINS_BACKBONE_BY_DEFAULT, f"add {method!r} to TRAINS_BACKBONE_BY_DEFAULT"
    assert (
        impl.trains_backbone(impl.parse_params(_defaults(method)))
        is (TRAINS_BACKBONE_BY_DEFAULT[method])
    )


@pytest.mark.parametrize(
    ("method", "params", "expected"),
    [
        ("domain_adaptation", {"dann_finetune_blocks": 2}, True),
        ("domain_adaptation", {"algorithm": "dann", "dann_finetune_blocks": 1}, True),
        ("domain_adaptation", {"algorithm": "coral", "dann_finetune_blocks": 2}, False),
        ("domain_adaptation", {"algorithm": "dann"}, False),
        ("auto", {"candidates": ["linear_probe", "knn", "zero_shot"]}, False),
        ("auto", {"candidates": ["knn", "finetune"]}, True),
        ("finetune", {"trainable": "head"}, True),  # its epochs still run the network
    ],
)
def test_params_decide_where_the_method_lets_them(
    method: str, params: dict[str, Any], expected: bool
) -> None:
    impl = get_method(method)
    assert impl.trains_backbone(impl.parse_params(params)) is expected


def test_job_queue_is_gpu_only_for_backbone_training_with_gpu_workers() -> None:
    assert job_queue(trains_backbone=True, gpu_queue=True) == GPU_QUEUE
    assert job_queue(trains_backbone=True, gpu_queue=False) == TRAIN_QUEUE
    assert job_queue(trains_backbone=False, gpu_queue=True) == TRAIN_QUEUE
    assert job_queue(trains_backbone=False, gpu_queue=False) == TRAIN_QUEUE


def test_worker_queues_default_to_every_queue_jobs_are_sent_to(tmp_path: Path) -> None:
    assert Settings(data_dir=tmp_path).consumed_queues == ["train"]  # type: ignore[call-arg]
    assert Settings(data_dir=tmp_path, gpu_queue=True).consumed_queues == ["train", "gpu"]  # type: ignore[call-arg]
    only_gpu = Settings(data_dir=tmp_path, gpu_queue=True, worker_queues="gpu")  # type: ignore[call-arg]
    assert only_gpu.consumed_queues == ["gpu"]
    both = Settings(data_dir=tmp_path, worker_queues=" gpu, train,gpu")  # type: ignore[call-arg]
    assert both.consumed_queues == ["gpu", "train"]
    with pytest.raises(ValueError, match="worker_queues"):
        Settings(data_dir=tmp_path, worker_queues="cpu")  # type: ignore[call-arg]
    assert _queue_list("gpu, train") == "gpu,train"
    for bad in ("cpu", "", ","):
        with pytest.raises(argparse.ArgumentTypeError):
            _queue_list(bad)


@pytest.mark.parametrize("gpu_queue", [False, True])
def test_jobs_are_sent_to_the_queue_their_method_needs(tmp_path: Path, gpu_queue: bool) -> None:
    settings = make_settings(tmp_path, gpu_queue=gpu_queue)
    migrate(settings)
    api = Api(settings)
    with api.client:
        finetune, probe = project_with_jobs(api.client, ["finetune", "linear_probe"])
        expected = "gpu" if gpu_queue else "train"
        assert finetune["queue"] == expected  # the job says where it went
        assert probe["queue"] == "train"
        assert api.queues == {finetune["id"]: expected, probe["id"]: "train"}
        assert api.client.get(f"/v1/jobs/{finetune['id']}").json()["queue"] == expected


def test_a_worker_woken_on_train_never_claims_a_gpu_job(tmp_path: Path) -> None:
    """The older gpu job is the fairest overall, but a `train` message only claims `train`
    jobs, and the `gpu` message only the gpu job; the sweep resends each on its own queue."""
    settings = make_settings(tmp_path, gpu_queue=True)
    migrate(settings)
    api = Api(settings)
    with api.client:
        finetune, probe, knn = project_with_jobs(api.client, ["finetune", "linear_probe", "knn"])
    url = settings.resolved_database_url
    with session_scope(url) as db:
        assert jobs_service.next_fair(db=db, queue="train") == probe["id"]
        assert jobs_service.next_fair(db=db, queue="gpu") == finetune["id"]
        # woken by the finetune job's id on `train` (as a worker consuming `train` only
        # would never be, but the queue is what counts): a train job, never the gpu one
        claimed = jobs_service.claim_next(
            db=db, job_id=finetune["id"], stale_after=60, queue="train"
        )
        assert claimed is not None and claimed[0] == probe["id"]
        claimed = jobs_service.claim_next(db=db, job_id=knn["id"], stale_after=60)
        assert claimed is not None and claimed[0] == knn["id"]
        assert jobs_service.claim_next(db=db, job_id=probe["id"], stale_after=60) is None
        # a message of a job that is gone wakes on its queue (`train` when not given)
        assert jobs_service.claim_next(db=db, job_id="job_gone", stale_after=60) is None
        assert db.scalar(select(Job.status).where(Job.id == finetune["id"])) == "queued"

        stale = utcnow() - timedelta(seconds=settings.job_stale_after_seconds + 1)
        db.execute(update(Job).where(Job.id == finetune["id"]).values(enqueued_at=stale))
        db.commit()
        resent: list[tuple[str, str]] = []
        counts = jobs_service.sweep(
            db=db, settings=settings, enqueue=lambda j, q: resent.append((j, q))
        )
        assert counts["resent"] == 1 and resent == [(finetune["id"], "gpu")]

        claimed = jobs_service.claim_next(db=db, job_id="job_gone", stale_after=60, queue="gpu")
        assert claimed is not None and claimed[0] == finetune["id"]


def test_fair_share_is_counted_per_queue(tmp_path: Path) -> None:
    """Each queue is its own pool of workers, shared fairly on its own: tenant A's running
    gpu job does not put A's train job behind tenant B's newer one."""
    settings = make_settings(tmp_path, gpu_queue=True, tenant_max_active_jobs=0)
    migrate(settings)
    api = Api(settings)
    with api.client, client_with_key(api, new_key(settings, "b")) as b:
        finetune, a_probe = project_with_jobs(api.client, ["finetune", "linear_probe"])
        [b_probe] = project_with_jobs(b, ["linear_probe"])
    with session_scope(settings.resolved_database_url) as db:
        assert jobs_service.next_fair(db=db, queue="train") == a_probe["id"]
        assert jobs_service.claim(db=db, job_id=finetune["id"], stale_after=60) is not None
        assert jobs_service.next_fair(db=db, queue="gpu") is None
        assert jobs_service.next_fair(db=db, queue="train") == a_probe["id"]
        assert jobs_service.claim(db=db, job_id=a_probe["id"], stale_after=60) is not None
        assert jobs_service.next_fair(db=db, queue="train") == b_probe["id"]
