"""Stored predictions, their feedback, and "label these next" suggestions."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Query

from app.api.deps import (
    CursorQuery,
    LimitQuery,
    ProjectDep,
    SessionDep,
    SettingsDep,
    StoreDep,
    TenantDep,
)
from app.api.schemas import (
    FeedbackIn,
    FeedbackOut,
    ImageOut,
    Page,
    StoredPredictionOut,
    SuggestionOut,
    SuggestionsOut,
)
from app.services import predictions as service
from app.services import suggestions as suggestions_service

router = APIRouter(tags=["predictions"])


def _utc(value: datetime | None) -> datetime | None:
    """A query time as UTC (one without a zone is read as UTC)."""
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


@router.get("/v1/projects/{project_id}/predictions")
def list_predictions(
    project: ProjectDep,
    db: SessionDep,
    limit: LimitQuery = 50,
    cursor: CursorQuery = None,
    label: Annotated[
        str | None, Query(max_length=100, description="Answers with this label.")
    ] = None,
    below: Annotated[
        float | None, Query(ge=0, le=1, description="Answers whose top score is below this.")
    ] = None,
    rejected: Annotated[
        bool | None, Query(description='Only "none of the above" answers (or only the others).')
    ] = None,
    model_id: Annotated[
        str | None, Query(max_length=40, description="Answers of this model.")
    ] = None,
    since: Annotated[datetime | None, Query(description="Made at or after (ISO 8601).")] = None,
    until: Annotated[datetime | None, Query(description="Made before (ISO 8601).")] = None,
    feedback: Annotated[
        bool | None, Query(description="Only those with feedback (or only those without).")
    ] = None,
) -> Page[StoredPredictionOut]:
    """The project's stored predictions (`store_predictions`), oldest first."""
    items, next_cursor = service.list_(
        db=db, project=project, limit=limit, cursor=cursor, label=label, below=below,
        rejected=rejected, model_id=model_id, since=_utc(since), until=_utc(until),
        feedback=feedback,
    )  # fmt: skip
    return Page(
        items=[StoredPredictionOut.model_validate(p) for p in items], next_cursor=next_cursor
    )


@router.get("/v1/predictions/{prediction_id}")
def get_prediction(prediction_id: str, db: SessionDep, tenant: TenantDep) -> StoredPredictionOut:
    return StoredPredictionOut.model_validate(
        service.get(db=db, tenant_id=tenant.id, prediction_id=prediction_id)
    )


@router.post("/v1/predictions/{prediction_id}/feedback")
def give_feedback(
    prediction_id: str,
    body: FeedbackIn,
    db: SessionDep,
    tenant: TenantDep,
    settings: SettingsDep,
) -> FeedbackOut:
    """The prediction's image becomes a labeled training image of its project (the stored
    bytes are reused; an image with the same content is relabeled instead), and the
    model's `feedback` counts `confirmed` (the model's label) or `corrected`."""
    prediction = service.get(db=db, tenant_id=tenant.id, prediction_id=prediction_id)
    prediction, image = service.give_feedback(
        db=db, settings=settings, prediction=prediction, label=body.label, correct=body.correct
    )
    return FeedbackOut(
        prediction=StoredPredictionOut.model_validate(prediction),
        image=ImageOut.model_validate(image),
    )


@router.get("/v1/projects/{project_id}/suggestions")
def suggestions(
    project: ProjectDep,
    db: SessionDep,
    settings: SettingsDep,
    store: StoreDep,
    n: Annotated[
        int, Query(ge=1, le=suggestions_service.MAX_N, description="How many to suggest.")
    ] = 20,
) -> SuggestionsOut:
    """The unlabeled images (uploaded without a label, or stored predictions without
    feedback) most worth labeling next, with the production model's guess: most uncertain
    first (smallest margin between the two best classes; rejected answers first), near-
    duplicates of an image already suggested pushed back (k-center greedy on the features)."""
    model, items, pool = suggestions_service.suggest(
        db=db, settings=settings, store=store, project=project, n=n
    )
    return SuggestionsOut(
        model_id=model.id,
        version=model.version,
        items=[SuggestionOut(**vars(s)) for s in items],
        pool_size=pool,
    )
