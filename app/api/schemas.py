"""Request and response bodies of the HTTP contract (docs/API.md)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer, field_validator

T = TypeVar("T")


def _iso_utc(value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:  # SQLite hands back naive datetimes; all are stored as UTC
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


UTCDatetime = Annotated[datetime, PlainSerializer(_iso_utc, return_type=str)]


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None


# --- projects ---------------------------------------------------------------------------


class ClassSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=100)
    description: str | None = Field(None, max_length=2000)
    attributes: dict[str, float] | None = None
    negative: bool | None = Field(
        None,
        description='A "none of these" class (e.g. "empty terrace"): /predict marks its '
        "predictions `negative: true`. Omitted: unchanged (new classes: false).",
    )


class ProjectCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=200)
    description: str = Field("", max_length=5000)
    classes: list[str | ClassSpec] = Field(default_factory=list, max_length=10_000)

    def class_dicts(self) -> list[dict[str, Any]]:
        return [{"name": c} if isinstance(c, str) else c.model_dump() for c in self.classes]


class ProjectUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(None, min_length=1, max_length=200)
    description: str | None = Field(None, max_length=5000)
    classes: list[str | ClassSpec] | None = None

    @field_validator("name", "description")
    @classmethod
    def _not_null(cls, value: str | None) -> str:
        # Omitted means "unchanged"; an explicit null is not a name or a description.
        if value is None:
            raise ValueError("may not be null; omit the field to leave it unchanged")
        return value


class ClassOut(BaseModel):
    name: str
    description: str
    attributes: dict[str, float]
    negative: bool = Field(False, description='A "none of these" class.')
    image_count: int


class LabelSetOut(BaseModel):
    name: str
    multi_label: bool = Field(description="Tags: several labels per image.")
    labels: dict[str, int] = Field(description="Each label and how many images carry it.")
    image_count: int = Field(description="Images with a value in this set.")


class ProjectOut(BaseModel):
    id: str
    name: str
    description: str
    classes: list[ClassOut]
    label_sets: list[LabelSetOut] = Field(
        default_factory=list, description="Named label sets over the images, besides `label`."
    )
    image_count: int
    default_model_id: str | None
    created_at: UTCDatetime


# --- images -----------------------------------------------------------------------------


class ImageOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: str
    filename: str
    label: str | None
    domain: str
    split: str
    width: int
    height: int
    sha256: str
    created_at: UTCDatetime
    labels: dict[str, str | list[str]] = Field(
        default_factory=dict,
        description="Labels in the project's label sets: a string, or a list for a "
        "multi-label set (tags).",
    )


class ImageUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    label: str | None = Field(None, max_length=100)
    split: Literal["auto", "train", "test"] | None = None
    domain: Literal["target", "source"] | None = None
    labels: dict[str, Any] | None = Field(
        None,
        description='Label sets to set: {"is_pigeon": "no", "tags": ["bird"]}; a set given '
        "null drops the image from it; sets not named are unchanged.",
    )


class Rejected(BaseModel):
    filename: str
    code: str
    detail: str


class UploadResult(BaseModel):
    created: int
    duplicates: int
    rejected: list[Rejected]
    items: list[ImageOut]


# --- jobs -------------------------------------------------------------------------------


class JobCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    method: str = Field("linear_probe", description="linear_probe | knn (see GET /v1/methods)")
    backbone: str | None = Field(None, description="Backbone name (see GET /v1/backbones).")
    params: dict[str, Any] | None = None


class JobOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: str
    project_id: str
    method: str
    backbone: str
    params: dict[str, Any]
    status: str
    progress: float
    stage: str
    error: dict[str, Any] | None
    history: list[dict[str, Any]] = Field(
        default_factory=list,
        description="Per-epoch records: epoch, losses, accuracy, seconds, ETA.",
    )
    model_id: str | None
    attempts: int
    cancel_requested: bool
    created_at: UTCDatetime
    started_at: UTCDatetime | None
    finished_at: UTCDatetime | None
    heartbeat_at: UTCDatetime | None


# --- models and prediction --------------------------------------------------------------


class ModelOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: str
    project_id: str
    job_id: str
    method: str
    backbone: str
    classes: list[str]
    metrics: dict[str, Any]
    created_at: UTCDatetime


class DefaultModelIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model_id: str


class Score(BaseModel):
    label: str
    score: float


class BoxOut(BaseModel):
    """Normalised 0-1 image coordinates (Azure Custom Vision's bounding box)."""

    left: float
    top: float
    width: float
    height: float


class TaskPredictionOut(BaseModel):
    label: str | None = Field(None, description="Single-label sets: the best label.")
    labels: list[str] | None = Field(
        None, description="Multi-label sets: every tag scoring at least 0.5."
    )
    scores: list[Score] = Field(description="Top-k, best first (per-tag scores for tags).")


class PredictionOut(BaseModel):
    filename: str
    label: str | None = Field(
        description='The best class; null for "none of the above" (see `reject_below`).'
    )
    score: float
    scores: list[Score]
    negative: bool = Field(
        False, description='The label is a negative ("none of these") class of the project.'
    )
    box: BoxOut | None = Field(
        None,
        description="With `?localize=true`: where the predicted class is, from class "
        "activation maps (Grad-CAM); null otherwise or when the label is not a model class.",
    )
    heatmap_png: str | None = Field(
        None,
        description="With `?heatmap=true`: base64 8-bit greyscale PNG of the class "
        "activation map over the whole image (stretch it over the photo).",
    )
    tasks: dict[str, TaskPredictionOut] | None = Field(
        None,
        description="Multi-task models: the prediction for each of the project's other "
        "label sets, by set name; null for single-task models.",
    )


class PredictOut(BaseModel):
    model_id: str
    predictions: list[PredictionOut]


# --- catalogue --------------------------------------------------------------------------


class MethodOut(BaseModel):
    name: str
    summary: str
    params_schema: dict[str, Any]


class BackboneOut(BaseModel):
    name: str
    architecture: str
    description: str
    available: bool = Field(description="Whether its weights can be had on this deployment.")
    weights_source: str | None = Field(
        description="Where the weights come from: `file` (the weights folder), `package` "
        "(a Python package bundling them), `hub` (Hugging Face, when allowed), `tenant` (a "
        "`pretrain` model of yours; the name is its model id); null when unavailable."
    )
