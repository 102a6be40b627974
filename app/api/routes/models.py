from __future__ import annotations

import base64
import dataclasses
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, File, Query, Response, UploadFile, status
from fastapi.responses import JSONResponse

from app.api.deps import (
    ActorDep,
    CursorQuery,
    LimitQuery,
    ProjectDep,
    SessionDep,
    SettingsDep,
    StoreDep,
    TenantDep,
)
from app.api.routes.projects import project_out
from app.api.schemas import (
    BoxOut,
    DefaultModelIn,
    FeedbackCounts,
    ModelOut,
    MonitoringOut,
    Page,
    PredictionOut,
    PredictOut,
    ProjectOut,
    Rejected,
    Score,
    TaskPredictionOut,
)
from app.db.models import Model
from app.services import aliases as aliases_service
from app.services import models as service
from app.services import monitoring as monitoring_service
from app.services import predict as predict_service
from app.services import predictions as predictions_service

router = APIRouter(tags=["models"])

FilesField = Annotated[list[UploadFile], File(description="One or more images.")]
TopK = Annotated[int, Query(ge=1, le=predict_service.MAX_TOP_K)]
RejectBelow = Annotated[
    float | Literal["default"] | None,
    Query(
        description='Answer "none of the above" (`label: null`, scores still listed) when the '
        "top score is below this probability (0-1); `default`: the threshold the model chose "
        "on validation data at training (`metrics.reject_below`). Omitted: never reject."
    ),
]
Localize = Annotated[
    bool, Query(description="Add `box`: where the predicted class is (class activation map).")
]
Heatmap = Annotated[
    bool, Query(description="Add `heatmap_png` (base64) and `box`: the class activation map.")
]
LocalizeThreshold = Annotated[
    float,
    Query(gt=0, lt=1, description="Fraction of the map's peak that counts as the object."),
]


@dataclass(frozen=True)
class LocalizeOptions:
    localize: bool
    heatmap: bool
    threshold: float


def localize_options(
    localize: Localize = False,
    heatmap: Heatmap = False,
    localize_threshold: LocalizeThreshold = predict_service.DEFAULT_THRESHOLD,
) -> LocalizeOptions:
    return LocalizeOptions(localize or heatmap, heatmap, localize_threshold)


LocalizeDep = Annotated[LocalizeOptions, Depends(localize_options)]


def model_out(
    model: Model, names: dict[str, list[str]], feedback: dict[str, dict[str, int]] | None = None
) -> ModelOut:
    """A model with the aliases pointing to it (``names``: :func:`aliases.names_by_model`)
    and its feedback counts (:func:`predictions.feedback_counts`)."""
    out = ModelOut.model_validate(model)
    out.aliases = names.get(model.id, [])
    if feedback and model.id in feedback:
        out.feedback = FeedbackCounts(**feedback[model.id])
    return out


@router.get("/v1/projects/{project_id}/models")
def list_models(
    project: ProjectDep, db: SessionDep, limit: LimitQuery = 50, cursor: CursorQuery = None
) -> Page[ModelOut]:
    items, next_cursor = service.list_(db=db, project=project, limit=limit, cursor=cursor)
    names = aliases_service.names_by_model(db=db, project_id=project.id)
    feedback = predictions_service.feedback_counts(db=db, model_ids=[m.id for m in items])
    return Page(items=[model_out(m, names, feedback) for m in items], next_cursor=next_cursor)


@router.get("/v1/models/{model_id}")
def get_model(model_id: str, db: SessionDep, tenant: TenantDep) -> ModelOut:
    model = service.get(db=db, tenant_id=tenant.id, model_id=model_id)
    return model_out(
        model,
        aliases_service.names_by_model(db=db, project_id=model.project_id),
        predictions_service.feedback_counts(db=db, model_ids=[model.id]),
    )


@router.delete("/v1/models/{model_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_model(
    model_id: str,
    db: SessionDep,
    tenant: TenantDep,
    store: StoreDep,
    settings: SettingsDep,
    actor: ActorDep,
) -> Response:
    """Delete the model. An alias pointing to it (`production`...) goes back to the model it
    pointed to before that still exists, or is left empty."""
    model = service.get(db=db, tenant_id=tenant.id, model_id=model_id)
    service.delete(db=db, store=store, model=model, actor=actor)
    predict_service.evict(settings=settings, model_id=model_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get(
    "/v1/models/{model_id}/export",
    response_class=Response,
    responses={200: {"content": {"application/onnx": {}, "application/octet-stream": {}}}},
)
def export_model(
    model_id: str,
    db: SessionDep,
    tenant: TenantDep,
    settings: SettingsDep,
    store: StoreDep,
    format: Annotated[
        predict_service.ExportFormat, Query(description="onnx | torchscript")
    ] = "onnx",
) -> Response:
    """One self-contained file: preprocessed image tensors in, class probabilities out;
    class names and preprocessing in its metadata (ONNX `metadata_props["dovecote"]`,
    TorchScript extra file `dovecote.json`)."""
    model = service.get(db=db, tenant_id=tenant.id, model_id=model_id)
    data, filename, media_type = predict_service.export_file(
        settings=settings, store=store, model=model, fmt=format
    )
    disposition = f'attachment; filename="{filename}"'
    return Response(data, media_type=media_type, headers={"Content-Disposition": disposition})


@router.get("/v1/models/{model_id}/monitoring", tags=["monitoring"])
def monitor_model(
    model_id: str,
    db: SessionDep,
    tenant: TenantDep,
    settings: SettingsDep,
    store: StoreDep,
    window: Annotated[
        Literal["day", "hour"], Query(description="Length of a window (UTC days or hours).")
    ] = "day",
    since: Annotated[
        datetime | None,
        Query(
            description="From (ISO 8601; rounded down to its window); default: 7 days or "
            "24 hours before `until`."
        ),
    ] = None,
    until: Annotated[
        datetime | None, Query(description="Up to, exclusive (ISO 8601); default: now.")
    ] = None,
) -> MonitoringOut:
    """The model in production, per window of its stored predictions (the project's
    `store_predictions`): count, class mix, confidence histogram, "none of the above"
    rate, feedback accuracy, and drift: MMD² between the window's images and the model's
    training images (features of its pretrained backbone, from the feature cache; images
    not cached yet are embedded once), `drift: true` at `DOVECOTE_DRIFT_THRESHOLD`."""
    model = service.get(db=db, tenant_id=tenant.id, model_id=model_id)
    return MonitoringOut.model_validate(
        monitoring_service.monitor(
            db=db,
            settings=settings,
            store=store,
            model=model,
            window=window,
            since=since,
            until=until,
        )
    )


@router.post("/v1/projects/{project_id}/default-model")
def set_default_model(
    body: DefaultModelIn, project: ProjectDep, db: SessionDep, actor: ActorDep
) -> ProjectOut:
    """Point the alias `production` (what the project's /predict serves) at the model; the
    same as `PUT /v1/projects/{project_id}/aliases/production`."""
    project = service.set_default(db=db, project=project, model_id=body.model_id, actor=actor)
    return project_out(db, project)


def _tasks_out(prediction: predict_service.Prediction) -> dict[str, TaskPredictionOut]:
    return {
        name: TaskPredictionOut(
            label=t.label,
            labels=t.labels,
            scores=[Score(label=label, score=score) for label, score in t.scores],
        )
        for name, t in prediction.tasks.items()
    }


def _predict(
    model: Model,
    files: list[UploadFile],
    top_k: int,
    settings: SettingsDep,
    store: StoreDep,
    where: LocalizeOptions,
    db: SessionDep,
    reject_below: float | Literal["default"] | None = None,
    alias: str | None = None,
) -> JSONResponse:
    predict_service.check_file_count(settings=settings, count=len(files))
    named = [(f.filename or f"file {i + 1}", f.file.read()) for i, f in enumerate(files)]
    result = predict_service.predict(
        settings=settings, store=store, model=model, files=named, top_k=top_k,
        reject_below=reject_below, negative=predict_service.negative_classes(db=db, model=model),
    )  # fmt: skip
    stored = predictions_service.record(
        db=db, settings=settings, store=store, model=model, files=named, predicted=result.predicted
    )
    out = PredictOut(
        model_id=model.id,
        version=model.version,
        alias=alias,
        predictions=[
            PredictionOut(
                filename=named[i][0],
                label=r.label,
                score=r.score,
                scores=[Score(label=label, score=score) for label, score in r.scores],
                negative=r.negative,
                tasks=_tasks_out(r) or None,
                prediction_id=stored.get(i),
            )
            for i, r in result.predicted
        ],
        rejected=[Rejected(**r.as_dict()) for r in result.rejected],
    )
    if where.localize:
        found = predict_service.localize(
            settings=settings, store=store, model=model,
            images=[named[i][1] for i, _ in result.predicted],
            labels=[None if r.negative else r.label for _, r in result.predicted],
            threshold=where.threshold,
        )  # fmt: skip
        for prediction, loc in zip(out.predictions, found, strict=True):
            if loc is not None:
                prediction.box = BoxOut(**dataclasses.asdict(loc.box))
                if where.heatmap:
                    prediction.heatmap_png = base64.b64encode(loc.heatmap_png()).decode()
    code = status.HTTP_207_MULTI_STATUS if result.rejected else status.HTTP_200_OK
    return JSONResponse(out.model_dump(mode="json"), status_code=code)


_PREDICT_RESPONSES: dict[int | str, dict[str, Any]] = {
    207: {"model": PredictOut, "description": "Some files were not readable images."}
}


@router.post(
    "/v1/models/{model_id}/predict",
    tags=["prediction"],
    response_model=PredictOut,
    responses=_PREDICT_RESPONSES,
)
def predict_with_model(
    model_id: str,
    files: FilesField,
    db: SessionDep,
    tenant: TenantDep,
    settings: SettingsDep,
    store: StoreDep,
    where: LocalizeDep,
    top_k: TopK = 5,
    reject_below: RejectBelow = None,
) -> JSONResponse:
    model = service.get(db=db, tenant_id=tenant.id, model_id=model_id)
    return _predict(model, files, top_k, settings, store, where, db, reject_below)


@router.post(
    "/v1/projects/{project_id}/predict",
    tags=["prediction"],
    response_model=PredictOut,
    responses=_PREDICT_RESPONSES,
)
def predict_with_project(
    project: ProjectDep,
    files: FilesField,
    db: SessionDep,
    settings: SettingsDep,
    store: StoreDep,
    where: LocalizeDep,
    top_k: TopK = 5,
    reject_below: RejectBelow = None,
    alias: Annotated[
        str,
        Query(
            description="The alias whose model answers (`GET /v1/projects/{project_id}/"
            "aliases`); the response names it, with the model's id and version."
        ),
    ] = aliases_service.PRODUCTION,
) -> JSONResponse:
    model = aliases_service.resolve_for_predict(db=db, project=project, name=alias)
    return _predict(model, files, top_k, settings, store, where, db, reject_below, alias)
