"""Batch predictions: one model over a zip of images or its project's unlabeled pool, in
the background; the results as JSON Lines or CSV."""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any, Literal, TypeVar

from fastapi import APIRouter, Query, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ValidationError
from starlette.datastructures import UploadFile

from app.api.deps import (
    CursorQuery,
    EnqueueDep,
    LimitQuery,
    ProjectDep,
    SessionDep,
    SettingsDep,
    StoreDep,
    TenantDep,
)
from app.api.schemas import (
    BatchCountsOut,
    BatchPredictionCreate,
    BatchPredictionOptions,
    BatchPredictionOut,
    BatchResultsOut,
    Page,
    job_state,
)
from app.db.models import Job
from app.errors import InvalidInput
from app.services import batch_predictions as service
from app.services import models as models_service

router = APIRouter(tags=["batch predictions"])

M = TypeVar("M", bound=BaseModel)

_ZIP_FORM: dict[str, Any] = {
    "type": "object",
    "required": ["files"],
    "properties": {
        "files": {
            "type": "string",
            "format": "binary",
            "description": "One .zip of images (JPEG, PNG, WebP, BMP, GIF first frame), checked "
            "as an upload's zip; folders are kept in the results' `filename` only.",
        },
        **BatchPredictionOptions.model_json_schema()["properties"],
    },
}
_CREATE_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {"schema": _ZIP_FORM},
            "application/json": {
                "schema": BatchPredictionCreate.model_json_schema(),
                "example": {"source": "unlabeled", "top_k": 3, "reject_below": "default"},
            },
        },
    }
}


def batch_prediction_out(job: Job) -> BatchPredictionOut:
    params = job.params
    path = f"/v1/batch-predictions/{job.id}/results"
    return BatchPredictionOut(
        id=job.id,
        project_id=job.project_id,
        model_id=job.model_id or "",
        model_version=params["model_version"],
        source=params["source"],
        filename=params.get("filename"),
        top_k=params["top_k"],
        reject_below=params.get("reject_below"),
        counts=BatchCountsOut(**dataclasses.asdict(service.counts(job))),
        results=BatchResultsOut(jsonl=f"{path}?format=jsonl", csv=f"{path}?format=csv")
        if job.status == "succeeded"
        else None,
        **job_state(job),
    )


def _parse(model: type[M], data: Any) -> M:
    """``data`` as ``model``, or the API's ``422 validation_error``."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise RequestValidationError(
            [{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False)]
        ) from None


@router.post(
    "/v1/models/{model_id}/batch-predictions",
    status_code=status.HTTP_202_ACCEPTED,
    openapi_extra=_CREATE_BODY,
)
async def create_batch_prediction(
    model_id: str,
    request: Request,
    response: Response,
    db: SessionDep,
    tenant: TenantDep,
    settings: SettingsDep,
    store: StoreDep,
    enqueue: EnqueueDep,
) -> BatchPredictionOut:
    """Predict many images with the model in the background: a zip of images (multipart
    `files`, one .zip) or the project's unlabeled pool (JSON `{"source": "unlabeled"}`).
    Answers `202` with the job (`Location`: where to poll it); its results are downloaded
    from `GET /v1/batch-predictions/{batch_prediction_id}/results` once it has succeeded.
    Nothing is added to the project."""
    model = await run_in_threadpool(
        models_service.get, db=db, tenant_id=tenant.id, model_id=model_id
    )
    content_type = request.headers.get("content-type", "").lower()
    if content_type.startswith("multipart/form-data"):
        async with request.form() as form:
            uploads = [v for v in form.getlist("files") if isinstance(v, UploadFile)]
            if len(uploads) != 1:
                raise InvalidInput(
                    f"Send one .zip of images in the multipart field `files` ({len(uploads)} "
                    "files were sent).",
                    field="files",
                )
            fields = {k: v for k, v in form.multi_items() if k != "files"}
            options = _parse(BatchPredictionOptions, fields)
            filename, data = uploads[0].filename or "upload.zip", await uploads[0].read()
        job = await run_in_threadpool(
            service.create_from_zip, db=db, store=store, settings=settings, model=model,
            filename=filename, data=data, top_k=options.top_k,
            reject_below=options.reject_below, enqueue=enqueue,
        )  # fmt: skip
    elif "json" in content_type:
        try:
            body = await request.json()
        except ValueError:
            raise RequestValidationError(
                [{"loc": ("body",), "msg": "The body is not valid JSON.", "type": "json_invalid"}]
            ) from None
        create = _parse(BatchPredictionCreate, body)
        job = await run_in_threadpool(
            service.create_from_pool, db=db, store=store, settings=settings, model=model,
            top_k=create.top_k, reject_below=create.reject_below, enqueue=enqueue,
        )  # fmt: skip
    else:
        raise InvalidInput(
            "Send a zip of images as multipart/form-data (field `files`), or JSON "
            '{"source": "unlabeled"} with Content-Type: application/json.',
            field="body",
        )
    response.headers["Location"] = f"/v1/batch-predictions/{job.id}"
    return batch_prediction_out(job)


@router.get("/v1/projects/{project_id}/batch-predictions")
def list_batch_predictions(
    project: ProjectDep, db: SessionDep, limit: LimitQuery = 50, cursor: CursorQuery = None
) -> Page[BatchPredictionOut]:
    """The project's batch predictions, oldest first."""
    items, next_cursor = service.list_(db=db, project=project, limit=limit, cursor=cursor)
    return Page(items=[batch_prediction_out(j) for j in items], next_cursor=next_cursor)


@router.get("/v1/batch-predictions/{batch_prediction_id}")
def get_batch_prediction(
    batch_prediction_id: str, db: SessionDep, tenant: TenantDep
) -> BatchPredictionOut:
    return batch_prediction_out(service.get(db=db, tenant_id=tenant.id, job_id=batch_prediction_id))


@router.post(
    "/v1/batch-predictions/{batch_prediction_id}/cancel", status_code=status.HTTP_202_ACCEPTED
)
def cancel_batch_prediction(
    batch_prediction_id: str, db: SessionDep, tenant: TenantDep, store: StoreDep
) -> BatchPredictionOut:
    """A queued one ends at once, a running one after its current chunk; `409` once ended."""
    job = service.get(db=db, tenant_id=tenant.id, job_id=batch_prediction_id)
    return batch_prediction_out(service.cancel(db=db, store=store, job=job))


@router.delete(
    "/v1/batch-predictions/{batch_prediction_id}", status_code=status.HTTP_204_NO_CONTENT
)
def delete_batch_prediction(
    batch_prediction_id: str, db: SessionDep, tenant: TenantDep, store: StoreDep
) -> Response:
    """Delete an ended batch prediction and its results (`409 job_not_finished` before)."""
    job = service.get(db=db, tenant_id=tenant.id, job_id=batch_prediction_id)
    service.delete(db=db, store=store, job=job)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get(
    "/v1/batch-predictions/{batch_prediction_id}/results",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "One row per image, in the input's order.",
            "content": {"application/x-ndjson": {}, "text/csv": {}},
        }
    },
)
def batch_prediction_results(
    batch_prediction_id: str,
    db: SessionDep,
    tenant: TenantDep,
    store: StoreDep,
    format: Annotated[
        Literal["jsonl", "csv"], Query(description="`jsonl` (JSON Lines) or `csv`.")
    ] = "jsonl",
) -> StreamingResponse:
    """The results of a succeeded batch prediction, streamed. A row: `filename` (the path
    in the zip, or the pool image's name), `sha256`, `image_id` / `prediction_id` (pool
    entries), `label` (null: "none of the above" or no prediction), `score`, `scores` (top
    k: `label`, `score`), `rejected` ("none of the above"), `negative`, `tasks` and `error`
    (`code`, `detail`: not a readable image; no prediction). CSV: the same columns, with
    `error` and `error_detail`, and the top k as `label_1`, `score_1`, ... `label_k`,
    `score_k`. `409 results_not_ready` until the job has succeeded."""
    job = service.get(db=db, tenant_id=tenant.id, job_id=batch_prediction_id)
    chunks = service.results(store=store, job=job, fmt=format)
    media_type, suffix = service.FORMATS[format]
    return StreamingResponse(
        chunks,
        media_type=media_type,
        headers={"Content-Disposition": f'attachment; filename="{job.id}{suffix}"'},
    )
