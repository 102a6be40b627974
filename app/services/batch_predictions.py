"""Batch predictions: a model over a zip of images, or over its project's unlabeled pool,
run by the worker in the background; the results as JSON Lines or CSV.

A batch prediction is a job row whose ``method`` is :data:`~app.services.jobs.BATCH_PREDICT`,
so the queue's machinery holds for it unchanged: the atomic claim and the recovery sweep,
heartbeat, cancel, the time limit (``DOVECOTE_JOB_MAX_MINUTES``), fair scheduling between
tenants and the tenant's active-job quota. Its options are the job's ``params``, the model
is its ``model_id``, and its counts are the job's ``history``: one record per chunk, the
last one current.

Blobs live under ``batch-predictions/<project>/<job>/``: the input (``input.zip``, the zip
as uploaded; ``input.jsonl``, the pool as it was at creation), deleted when the job ends,
and the results, one JSON Lines part per chunk (``results/000001.jsonl``, ...), kept until
the batch prediction or its project is deleted. Nothing is added to the project: the images
of a zip are not uploads, and no stored prediction is made.

A chunk is what one predict request may be: at most ``DOVECOTE_PREDICT_MAX_FILES`` images
and ``DOVECOTE_MAX_PIXELS_PER_REQUEST`` pixels (from the headers, before any pixel is
decoded), predicted by :func:`app.services.predict.predict_files`, so the decoding rules,
``DOVECOTE_PREDICT_BATCH_SIZE`` and the predictor's ``DOVECOTE_INFERENCE_MAX_IMAGES`` apply
as for predict.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from typing import Any, Literal

from sqlalchemy.orm import Session

from app.config import Settings
from app.db.base import new_id
from app.db.models import JOB_TERMINAL, Job, Model, Project
from app.db.session import session_scope
from app.errors import (
    ArchiveInvalid,
    DovecoteError,
    ImageTooLarge,
    ImageUndecodable,
    JobNotFinished,
    ModelDeleted,
    NotFound,
    ResultsNotReady,
    UnlabeledPoolEmpty,
)
from app.queue import TRAIN_QUEUE
from app.services import jobs, quotas
from app.services import predict as predict_service
from app.services.images import Candidate, Rejection, blob_key, stored_filename, unzip
from app.services.scoping import get_owned, list_in_project
from app.services.suggestions import unlabeled_pool
from app.storage import BlobNotFound, BlobStore, open_store
from app.transfer.data import Progress
from app.transfer.predictor import Prediction, reject_threshold
from app.transfer.preprocess import image_size

Source = Literal["zip", "unlabeled"]
Format = Literal["jsonl", "csv"]
#: Media type and file suffix of each results format.
FORMATS: dict[str, tuple[str, str]] = {
    "jsonl": ("application/x-ndjson", ".jsonl"),
    "csv": ("text/csv; charset=utf-8", ".csv"),
}
ZIP_INPUT, POOL_INPUT = "input.zip", "input.jsonl"
#: The CSV columns before the top-k ``label_i``, ``score_i`` pairs.
CSV_COLUMNS = (
    "filename", "sha256", "image_id", "prediction_id", "label", "score", "rejected",
    "negative", "error", "error_detail",
)  # fmt: skip


def job_prefix(project_id: str, job_id: str) -> str:
    return f"batch-predictions/{project_id}/{job_id}"


def _part_key(prefix: str, part: int) -> str:
    return f"{prefix}/results/{part:06d}.jsonl"


@dataclass(frozen=True)
class Counts:
    """``images`` in the batch; ``processed`` so far, of which ``predicted`` (``rejected``:
    answered "none of the above") and ``failed`` (not a readable image)."""

    images: int
    processed: int = 0
    predicted: int = 0
    failed: int = 0
    rejected: int = 0


def counts(job: Job) -> Counts:
    """The job's counts: its last history record, or none processed yet."""
    last = job.history[-1] if job.history else {}
    return Counts(
        images=int(job.params.get("images", 0)),
        **{k: int(last.get(k, 0)) for k in ("processed", "predicted", "failed", "rejected")},
    )


# --- the input, one entry per image -----------------------------------------------------


@dataclass(frozen=True)
class _Entry:
    """One image of the batch: its bytes and pixel count, or the problem that makes it no
    readable image."""

    filename: str
    sha256: str | None
    data: bytes | None = None
    pixels: int = 0
    image_id: str | None = None
    prediction_id: str | None = None
    error: DovecoteError | None = None


def _checked(entry: _Entry, settings: Settings) -> _Entry:
    """``entry`` with its pixel count from the header (no pixel decoded), or its problem."""
    assert entry.data is not None
    try:
        width, height = image_size(entry.data, max_pixels=settings.max_image_pixels)
    except (ImageUndecodable, ImageTooLarge) as exc:
        return _Entry(entry.filename, entry.sha256, error=exc)
    return _Entry(
        entry.filename, entry.sha256, entry.data, width * height, entry.image_id,
        entry.prediction_id,
    )  # fmt: skip


def _zip_entries(filename: str, data: bytes, settings: Settings) -> Iterator[_Entry]:
    """The zip's files (:func:`app.services.images.unzip`), named by their path in it."""
    shown = f"{filename}:"
    for item in unzip(filename, data, None, settings):
        if isinstance(item, Rejection):
            yield _Entry(item.filename.removeprefix(shown), None, error=item.error)
            continue
        assert isinstance(item, Candidate) and item.source is not None
        sha = hashlib.sha256(item.data).hexdigest()
        yield _checked(_Entry(item.source.removeprefix(shown), sha, item.data), settings)


def _pool_entries(
    manifest: bytes, store: BlobStore, project_id: str, settings: Settings
) -> Iterator[_Entry]:
    """The pool images listed at creation, read from the project's blobs."""
    for line in manifest.splitlines():
        item = json.loads(line)
        sha, name = item["sha256"], item["filename"]
        ids = {"image_id": item.get("image_id"), "prediction_id": item.get("prediction_id")}
        try:
            data = store.get(blob_key(project_id, sha))
        except BlobNotFound:
            gone = NotFound("The image was deleted after the batch prediction was created.")
            yield _Entry(name, sha, error=gone, **ids)
            continue
        yield _checked(_Entry(name, sha, data, **ids), settings)


def _chunks(entries: Iterable[_Entry], settings: Settings) -> Iterator[list[_Entry]]:
    """``entries`` in order, in chunks one predict request may be: at most
    ``predict_max_files`` readable images and ``max_pixels_per_request`` pixels."""
    chunk: list[_Entry] = []
    files = pixels = 0
    for entry in entries:
        if entry.data is not None:
            full = files == settings.predict_max_files
            if chunk and (full or pixels + entry.pixels > settings.max_pixels_per_request):
                yield chunk
                chunk, files, pixels = [], 0, 0
            files, pixels = files + 1, pixels + entry.pixels
        chunk.append(entry)
    if chunk:
        yield chunk


# --- create, read, cancel, delete -------------------------------------------------------


def create_from_zip(
    *,
    db: Session,
    store: BlobStore,
    settings: Settings,
    model: Model,
    filename: str,
    data: bytes,
    top_k: int,
    reject_below: float | Literal["default"] | None,
    enqueue: jobs.Enqueue,
) -> Job:
    """A batch prediction over the images of one zip (checked as an upload's zip, each file's
    header read): the zip's problem, or its first file's when none is a readable image,
    with nothing stored."""
    project = _check(db=db, settings=settings, model=model, top_k=top_k, reject_below=reject_below)
    filename = stored_filename(filename)
    total, rejected = 0, []
    for entry in _zip_entries(filename, data, settings):
        total += 1
        if entry.error is not None:
            rejected.append(Rejection(entry.filename, entry.error))
    if not total:
        raise ArchiveInvalid(f"{filename!r} holds no files.", filename=filename)
    if len(rejected) == total:
        first = rejected[0]
        raise type(first.error)(
            f"{first.filename!r}: {first.error.detail}"
            if total == 1
            else f"None of the {total} files of {filename!r} is a readable image (first: "
            f"{first.filename!r}: {first.error.detail})",
            **first.error.extra,
            rejected=[r.as_dict() for r in rejected],
        )
    return _submit(
        db=db, store=store, model=model, project=project, enqueue=enqueue,
        params={"source": "zip", "filename": filename, "images": total},
        top_k=top_k, reject_below=reject_below, blob=(ZIP_INPUT, data),
    )  # fmt: skip


def create_from_pool(
    *,
    db: Session,
    store: BlobStore,
    settings: Settings,
    model: Model,
    top_k: int,
    reject_below: float | Literal["default"] | None,
    enqueue: jobs.Enqueue,
) -> Job:
    """A batch prediction over the project's unlabeled pool as it is now (the entries of
    :func:`app.services.suggestions.unlabeled_pool`), the newest ``max_zip_members`` of it."""
    project = _check(db=db, settings=settings, model=model, top_k=top_k, reject_below=reject_below)
    limit = settings.max_zip_members
    pool, _ = unlabeled_pool(db=db, project=project, limit=limit)
    if not pool:
        raise UnlabeledPoolEmpty(
            "The project has no unlabeled images: upload images without a label, or turn on "
            "store_predictions and predict, then ask again."
        )
    manifest = "".join(
        json.dumps({
            "sha256": sha, "filename": entry.filename,
            "image_id": entry.id if entry.source == "image" else None,
            "prediction_id": entry.id if entry.source == "prediction" else None,
        }) + "\n"
        for sha, entry in list(pool.items())[:limit]
    )  # fmt: skip
    return _submit(
        db=db, store=store, model=model, project=project, enqueue=enqueue,
        params={"source": "unlabeled", "filename": None, "images": min(len(pool), limit)},
        top_k=top_k, reject_below=reject_below, blob=(POOL_INPUT, manifest.encode()),
    )  # fmt: skip


def _check(
    *,
    db: Session,
    settings: Settings,
    model: Model,
    top_k: int,
    reject_below: float | Literal["default"] | None,
) -> Project:
    """The model's project, once the tenant may queue a job and the options are predict's."""
    project = db.get(Project, model.project_id)
    assert project is not None  # models are deleted with their project
    quotas.check_new_job(db=db, settings=settings, tenant_id=project.tenant_id)
    predict_service.check_options(top_k=top_k, reject_below=reject_below)
    reject_threshold(model.metrics, reject_below)  # "default" needs the model's threshold
    return project


def _submit(
    *,
    db: Session,
    store: BlobStore,
    model: Model,
    project: Project,
    params: dict[str, Any],
    top_k: int,
    reject_below: float | Literal["default"] | None,
    blob: tuple[str, bytes],
    enqueue: jobs.Enqueue,
) -> Job:
    """Store the input ``blob`` (name, bytes), then the job; the blob goes again when the
    job cannot be stored or queued."""
    job = Job(
        id=new_id("bpj"),
        project_id=project.id,
        method=jobs.BATCH_PREDICT,
        backbone=model.backbone,
        params={**params, "top_k": top_k, "reject_below": reject_below,
                "model_version": model.version},
        model_id=model.id,
        promote="never",
        status="queued",
        queue=TRAIN_QUEUE,  # it trains nothing: CPU workers
        stage="queued",
    )  # fmt: skip
    prefix = job_prefix(project.id, job.id)
    name, data = blob
    store.put(f"{prefix}/{name}", data)
    try:
        jobs.submit(db=db, job=job, enqueue=enqueue)
    except jobs.QueueUnavailable:
        store.delete_prefix(prefix)
        raise
    except BaseException:
        db.rollback()
        store.delete_prefix(prefix)
        raise
    return job


def get(*, db: Session, tenant_id: str, job_id: str) -> Job:
    """A batch prediction of the tenant (a training job's id reads like a missing one)."""
    job = get_owned(db, Job, job_id, tenant_id=tenant_id, resource="batch_prediction")
    if job.method != jobs.BATCH_PREDICT:
        raise NotFound(f"No batch_prediction {job_id!r}.", resource="batch_prediction")
    return job


def list_(
    *, db: Session, project: Project, limit: int, cursor: str | None
) -> tuple[list[Job], str | None]:
    return list_in_project(
        db, Job, project=project, limit=limit, cursor=cursor,
        where=Job.method == jobs.BATCH_PREDICT,
    )  # fmt: skip


def cancel(*, db: Session, store: BlobStore, job: Job) -> Job:
    """As a training job's cancel; one that ends at once (queued) leaves no blobs."""
    job = jobs.cancel(db=db, job=job)
    if job.status == "cancelled":
        discard(store=store, project_id=job.project_id, job_id=job.id)
    return job


def delete(*, db: Session, store: BlobStore, job: Job) -> None:
    """The row, then its blobs; only once the job has ended."""
    if job.status not in JOB_TERMINAL:
        raise JobNotFinished(
            f"Batch prediction {job.id} is {job.status}; cancel it first "
            f"(POST /v1/batch-predictions/{job.id}/cancel)."
        )
    project_id, job_id = job.project_id, job.id
    db.delete(job)
    db.commit()
    discard(store=store, project_id=project_id, job_id=job_id)


def discard(*, store: BlobStore, project_id: str, job_id: str) -> None:
    """Delete every blob of the batch prediction: its input and results."""
    store.delete_prefix(job_prefix(project_id, job_id))


# --- results -----------------------------------------------------------------------------


def results(*, store: BlobStore, job: Job, fmt: Format) -> Iterator[bytes]:
    """The results of a succeeded batch prediction, one row per image in the input's order,
    read and converted one part at a time (JSON Lines as stored, or CSV)."""
    if job.status != "succeeded":
        raise ResultsNotReady(
            f"Batch prediction {job.id} is {job.status}; its results are ready once it has "
            "succeeded.",
            job_status=job.status,
        )
    if fmt not in FORMATS:
        raise ValueError(f"unknown results format {fmt!r}")
    prefix = job_prefix(job.project_id, job.id)
    parts = int(job.history[-1].get("parts", 0)) if job.history else 0
    top_k = int(job.params["top_k"])
    return _stream(store, [_part_key(prefix, i) for i in range(1, parts + 1)], fmt, top_k)


def _stream(store: BlobStore, keys: list[str], fmt: Format, top_k: int) -> Iterator[bytes]:
    if fmt == "csv":
        yield _csv_lines([[*CSV_COLUMNS, *_top_k_columns(top_k)]])
    for key in keys:
        data = store.get(key)
        if fmt == "jsonl":
            yield data
        else:
            yield _csv_lines(_csv_row(json.loads(line), top_k) for line in data.splitlines())


def _top_k_columns(top_k: int) -> list[str]:
    return [name for i in range(1, top_k + 1) for name in (f"label_{i}", f"score_{i}")]


def _csv_lines(rows: Iterable[list[Any]]) -> bytes:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(rows)
    return out.getvalue().encode()


def _csv_row(row: dict[str, Any], top_k: int) -> list[Any]:
    error = row["error"] or {}
    cells: list[Any] = [
        row["filename"], row["sha256"], row["image_id"], row["prediction_id"], row["label"],
        row["score"], "true" if row["rejected"] else "false",
        "true" if row["negative"] else "false", error.get("code"), error.get("detail"),
    ]  # fmt: skip
    scores = row["scores"][:top_k]
    for s in scores:
        cells += [s["label"], s["score"]]
    cells += [None, None] * (top_k - len(scores))
    return ["" if c is None else c for c in cells]


def _row(
    entry: _Entry, prediction: Prediction | None, error: DovecoteError | None
) -> dict[str, Any]:
    """One result row: the image, then the prediction or the problem."""
    p = prediction
    return {
        "filename": entry.filename,
        "sha256": entry.sha256,
        "image_id": entry.image_id,
        "prediction_id": entry.prediction_id,
        "label": p.label if p else None,
        "score": p.score if p else None,
        "scores": [{"label": label, "score": score} for label, score in p.scores] if p else [],
        "rejected": p is not None and p.label is None,
        "negative": p is not None and p.negative,
        "tasks": {
            name: {
                "label": t.label,
                "labels": t.labels,
                "scores": [{"label": label, "score": score} for label, score in t.scores],
            }
            for name, t in p.tasks.items()
        } if p and p.tasks else None,
        "error": {"code": error.code, "detail": error.detail} if error else None,
    }  # fmt: skip


# --- worker side ---------------------------------------------------------------------------


def run(*, settings: Settings, job_id: str, progress: Progress) -> str:
    """Predict every image of the claimed batch prediction ``job_id``, one chunk at a time:
    each chunk's rows are stored as one results part before its progress (with the counts)
    is reported, which stops the run when the job was cancelled. Returns the model's id."""
    store = open_store(settings.resolved_storage_url)
    with session_scope(settings.resolved_database_url) as db:
        job = db.get(Job, job_id)
        assert job is not None  # claimed by this run
        model = db.get(Model, job.model_id or "")
        if model is None or model.project_id != job.project_id:
            raise ModelDeleted(
                f"Model {job.model_id} was deleted before batch prediction {job_id} ran; "
                "create it again with another model."
            )
        negative = predict_service.negative_classes(db=db, model=model)
        project_id, params = job.project_id, dict(job.params)
    prefix = job_prefix(project_id, job_id)
    if params["source"] == "zip":
        entries = _zip_entries(params["filename"], store.get(f"{prefix}/{ZIP_INPUT}"), settings)
    else:
        manifest = store.get(f"{prefix}/{POOL_INPUT}")
        entries = _pool_entries(manifest, store, project_id, settings)
    total = int(params["images"])
    tally = Counts(images=total)
    started = time.monotonic()
    progress(0.0, f"predicting 0/{total} images")
    for part, chunk in enumerate(_chunks(entries, settings), start=1):
        rows = _predict_chunk(
            settings=settings, store=store, model=model, chunk=chunk, negative=negative,
            top_k=int(params["top_k"]), reject_below=params["reject_below"],
        )  # fmt: skip
        store.put(_part_key(prefix, part), "".join(json.dumps(r) + "\n" for r in rows).encode())
        tally = Counts(
            images=total,
            processed=tally.processed + len(rows),
            predicted=tally.predicted + sum(r["error"] is None for r in rows),
            failed=tally.failed + sum(r["error"] is not None for r in rows),
            rejected=tally.rejected + sum(r["rejected"] for r in rows),
        )
        record = {**asdict(tally), "parts": part, "seconds": round(time.monotonic() - started, 3)}
        progress(
            tally.processed / max(total, 1), f"predicting {tally.processed}/{total} images",
            record,
        )  # fmt: skip
    store.delete(f"{prefix}/{ZIP_INPUT if params['source'] == 'zip' else POOL_INPUT}")
    return model.id


def _predict_chunk(
    *,
    settings: Settings,
    store: BlobStore,
    model: Model,
    chunk: list[_Entry],
    negative: set[str],
    top_k: int,
    reject_below: float | Literal["default"] | None,
) -> list[dict[str, Any]]:
    """The rows of one chunk, in its order."""
    readable = [e for e in chunk if e.data is not None]
    result = predict_service.PredictResult()
    if readable:
        result = predict_service.predict_files(
            settings=settings, store=store, model=model,
            files=[(e.filename, e.data) for e in readable if e.data is not None],
            top_k=top_k, reject_below=reject_below, negative=negative,
        )  # fmt: skip
    predicted = dict(result.predicted)
    failed = {i: r.error for i, r in result.failed}
    rows, i = [], 0
    for entry in chunk:
        if entry.data is None:
            rows.append(_row(entry, None, entry.error))
            continue
        rows.append(_row(entry, predicted.get(i), failed.get(i)))
        i += 1
    return rows
