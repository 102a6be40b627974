"""Request and response bodies of the HTTP contract (docs/API.md)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    field_serializer,
    field_validator,
)

from app.config import QueueName
from app.services import webhooks
from app.services.predict import MAX_TOP_K
from app.transfer import audit
from app.transfer.methods import list_methods

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


StorePredictions = Annotated[
    bool,
    Field(
        description="Keep every predict's images and answers (`GET /v1/projects/{project_id}/"
        "predictions`), for feedback and suggestions."
    ),
]
RetentionDays = Annotated[
    int, Field(ge=1, le=3650, description="Stored predictions older than this are deleted.")
]


class ProjectCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=200)
    description: str = Field("", max_length=5000)
    classes: list[str | ClassSpec] = Field(default_factory=list, max_length=10_000)
    store_predictions: StorePredictions = False
    prediction_retention_days: RetentionDays = 30

    def class_dicts(self) -> list[dict[str, Any]]:
        return [{"name": c} if isinstance(c, str) else c.model_dump() for c in self.classes]


class ProjectUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(None, min_length=1, max_length=200)
    description: str | None = Field(None, max_length=5000)
    classes: list[str | ClassSpec] | None = Field(None, max_length=10_000)
    store_predictions: StorePredictions | None = None
    prediction_retention_days: RetentionDays | None = None

    @field_validator("name", "description", "store_predictions", "prediction_retention_days")
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
    default_model_id: str | None = Field(description="The model of the alias `production`.")
    default_model_version: int | None = None
    store_predictions: StorePredictions = False
    prediction_retention_days: RetentionDays = 30
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


def _method_field(default: Any = ...) -> Any:
    """``method``: a documented enum of the registry's names, with their summaries. Not
    validated by the schema: an unknown name is the service's ``unknown_method`` problem,
    which lists the available ones."""
    methods = sorted(list_methods(), key=lambda m: m.name)
    return Field(
        default,
        description="The training method (`GET /v1/methods` for their params):\n"
        + "\n".join(f"- `{m.name}`: {m.summary}" for m in methods),
        json_schema_extra={"enum": [m.name for m in methods]},
    )


JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]
PromotePolicy = Literal["auto", "always", "never"]
PROMOTE_DESCRIPTION = (
    "Whether the new model becomes the project's `production` alias (what its /predict "
    "serves): `always`; `never`; `auto` (default): when the project has no production model, "
    "or when the current one is stale (trained on another class set than the project has "
    "now, or on fewer labeled images than it holds now) and the new model is not flagged "
    "`negative_transfer` and beats its own baseline."
)


class PromotionOut(BaseModel):
    """Whether a job's model was made `production`, and why."""

    promoted: bool
    policy: PromotePolicy
    reason: str = Field(description="Why, for people.")
    alias: str = "production"
    previous_model_id: str | None = Field(description="Production before this job ended.")
    previous_version: int | None


class JobCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    method: str = _method_field("linear_probe")
    backbone: str | None = Field(
        None,
        max_length=200,
        description="Backbone name (`GET /v1/backbones`); omitted: the default one.",
    )
    params: dict[str, Any] | None = Field(
        None, description="The method's params (`params_schema` in `GET /v1/methods`)."
    )
    promote: PromotePolicy = Field("auto", description=PROMOTE_DESCRIPTION)


def job_create_examples() -> dict[str, dict[str, Any]]:
    """One realistic request body per registered method (the OpenAPI examples)."""
    return {
        m.name: {
            "summary": m.name,
            "description": m.summary,
            "value": {"method": m.name, "params": m.example_params},
        }
        for m in sorted(list_methods(), key=lambda m: m.name)
    }


class JobStateOut(BaseModel):
    """Where a background job (a batch prediction, an audit) stands."""

    status: JobStatus
    progress: float = Field(ge=0, le=1, description="Fraction done, 0 to 1.")
    stage: str = Field(description="What it is doing now, for people: `queued`, ..., `done`.")
    error: dict[str, Any] | None = Field(
        description="The problem document (`code`, `detail`, ...) of a failed job."
    )
    attempts: int
    cancel_requested: bool
    created_at: UTCDatetime
    started_at: UTCDatetime | None
    finished_at: UTCDatetime | None
    heartbeat_at: UTCDatetime | None


def job_state(job: Any) -> dict[str, Any]:
    """The :class:`JobStateOut` fields of a ``jobs`` row."""
    return {name: getattr(job, name) for name in JobStateOut.model_fields}


class JobOut(JobStateOut):
    model_config = ConfigDict(from_attributes=True)
    id: str
    project_id: str
    method: str = _method_field()
    backbone: str
    params: dict[str, Any]
    queue: QueueName = Field(
        "train",
        description="The worker queue it was sent to: `gpu` for a job that trains through a "
        "backbone when the server has GPU workers (`DOVECOTE_GPU_QUEUE`), else `train`.",
    )
    stage: str = Field(
        description="What the job is doing now, for people: `queued`, `starting`, `loading "
        "backbone`, `embedding class names`, `extracting features`, `epoch 3/10`, `evaluating`, "
        "..., then `done`, `failed` or `cancelled`."
    )
    history: list[dict[str, Any]] = Field(
        default_factory=list,
        description="Per-epoch records: epoch, losses, accuracy, seconds, ETA.",
    )
    model_id: str | None
    promote: PromotePolicy = "auto"
    promotion: PromotionOut | None = Field(
        None, description="Set when the job made a model: whether it was promoted, and why."
    )


# --- models and prediction --------------------------------------------------------------


class ClassMetrics(BaseModel):
    model_config = ConfigDict(extra="allow")
    precision: float | None = None
    recall: float | None = None
    f1: float | None = None
    support: int | None = None


class ConfusionMatrix(BaseModel):
    model_config = ConfigDict(extra="allow")
    labels: list[str]
    matrix: list[list[int]] = Field(description="Rows: true class; columns: predicted class.")


class Metrics(BaseModel):
    """The fields most models' metrics share; methods add their own (kept as they are)."""

    model_config = ConfigDict(extra="allow")
    accuracy: float | None = None
    macro_f1: float | None = None
    per_class: dict[str, ClassMetrics] | None = None
    confusion_matrix: ConfusionMatrix | None = None
    validation: str | None = Field(
        None, description="How it was measured: `k-fold`, `holdout`, `test-split`, `none`..."
    )
    n_train: int | None = None
    n_validation: int | None = None
    folds: int | None = Field(None, description="With `k-fold` validation: how many.")
    reject_below: float | None = Field(
        None, description="The default `reject_below` threshold chosen on validation data."
    )
    baseline: dict[str, Any] | None = Field(
        None, description="The same metrics for the plain baseline, named by `name`."
    )
    negative_transfer: bool | None = Field(None, description="The model scored below its baseline.")
    audit: dict[str, Any] | None = Field(
        None,
        description="The dataset audit of the images it was trained on (`GET /v1/projects/"
        "{id}/audit`): `digest`, `backbone`, `summary` (findings per kind); or `skipped`.",
    )
    leakage: dict[str, int] | None = Field(
        None,
        description="`test_images_with_train_near_duplicates`: test images nearly identical "
        "to a training image (the test metrics are inflated); absent when none.",
    )
    warnings: list[dict[str, str]] | None = Field(
        None, description="`{code, detail}`: what to know before trusting the metrics."
    )


class FeedbackCounts(BaseModel):
    """Feedback on the model's stored predictions: its live accuracy is
    `confirmed / (confirmed + corrected)`."""

    confirmed: int = 0
    corrected: int = 0


class ModelOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: str
    project_id: str
    job_id: str
    method: str = _method_field()
    backbone: str
    classes: list[str]
    metrics: Metrics
    version: int = Field(description="Per-project version number: 1, 2, ... (shown as `v1`).")
    aliases: list[str] = Field(
        default_factory=list, description="The project's aliases pointing to it (`production`...)."
    )
    promotion: PromotionOut | None = Field(
        None, description="Whether its job made it `production`, and why."
    )
    feedback: FeedbackCounts = Field(
        default_factory=FeedbackCounts,
        description="Feedback on its stored predictions (`POST /v1/predictions/{id}/feedback`).",
    )
    created_at: UTCDatetime

    @field_serializer("metrics")
    def _metrics_as_stored(self, metrics: Metrics):  # type: ignore[no-untyped-def]
        # Unannotated on purpose: the OpenAPI schema stays ``Metrics``; fields a model's
        # metrics do not have stay absent rather than null.
        return metrics.model_dump(mode="json", exclude_unset=True)


class DefaultModelIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model_id: str


class AliasIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model_id: str


class AliasOut(BaseModel):
    name: str
    model_id: str | None = Field(description="null: the alias points to no model.")
    version: int | None


class AliasEventOut(BaseModel):
    """One move of an alias."""

    model_config = ConfigDict(from_attributes=True)
    id: int
    alias: str
    action: Literal["put", "delete", "default-model", "promotion", "rollback", "model-deleted"]
    from_model_id: str | None
    from_version: int | None
    to_model_id: str | None = Field(description="null: the alias was cleared.")
    to_version: int | None
    reason: str
    actor: str = Field(description="Who: an API key (prefix and id), or a job, with the tenant.")
    tenant_id: str | None
    api_key_id: str | None = Field(description="null: the admin key, or the system.")
    created_at: UTCDatetime


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
    prediction_id: str | None = Field(
        None,
        description="The stored prediction's id when the project has `store_predictions` "
        "(for `POST /v1/predictions/{prediction_id}/feedback`); null otherwise.",
    )


class PredictOut(BaseModel):
    model_id: str
    version: int = Field(description="The model's per-project version number.")
    alias: str | None = Field(
        None,
        description="The alias that chose the model (project predict: `production` unless "
        "`?alias=`); null when predicting with a model id.",
    )
    predictions: list[PredictionOut] = Field(description="The readable files, in request order.")
    rejected: list[Rejected] = Field(
        default_factory=list,
        description="Files that are not readable images (the answer is then a 207).",
    )


class StoredPredictionOut(BaseModel):
    """A predict answer kept by a project with `store_predictions`."""

    model_config = ConfigDict(from_attributes=True)
    id: str
    project_id: str
    model_id: str
    model_version: int
    filename: str
    sha256: str = Field(description="The image's SHA-256 (one stored copy per project).")
    width: int
    height: int
    label: str | None = Field(description='The answer; null for "none of the above".')
    top_label: str = Field(description="The best class, even when the answer was rejected.")
    score: float
    scores: list[Score]
    rejected: bool = Field(description='The answer was "none of the above" (`reject_below`).')
    feedback: Literal["confirmed", "corrected"] | None = Field(description="null: no feedback yet.")
    feedback_label: str | None
    image_id: str | None = Field(description="The training image feedback made of it.")
    created_at: UTCDatetime
    feedback_at: UTCDatetime | None


class FeedbackIn(BaseModel):
    """The right label, or `{"correct": true}`: the model's label was right."""

    model_config = ConfigDict(extra="forbid")
    label: str | None = Field(None, min_length=1, max_length=100)
    correct: bool | None = None


class FeedbackOut(BaseModel):
    prediction: StoredPredictionOut
    image: ImageOut = Field(description="The project's labeled image it became.")


class SuggestionOut(BaseModel):
    """An unlabeled image worth labeling, with the model's guess (pre-labeling)."""

    source: Literal["image", "prediction"] = Field(
        description="An image uploaded without a label, or a stored prediction without feedback."
    )
    image_id: str | None = Field(description="With `source: image`: label it with PATCH.")
    prediction_id: str | None = Field(
        description="With `source: prediction`: label it with POST .../feedback."
    )
    sha256: str
    filename: str
    suggested_label: str = Field(description="The model's best class.")
    score: float = Field(description="Its probability.")
    margin: float = Field(description="Best minus second-best probability.")
    rejected: bool = Field(description="Below the model's `reject_below` threshold.")
    priority: float = Field(
        description="Uncertainty times novelty when it was picked (items are in pick order)."
    )


class SuggestionsOut(BaseModel):
    model_id: str
    version: int
    items: list[SuggestionOut]
    pool_size: int = Field(description="Unlabeled images and predictions considered.")


# --- webhooks ---------------------------------------------------------------------------

WebhookEvent = Literal.__getitem__(tuple(webhooks.EVENTS))  # type: ignore[misc]
EVENTS_DESCRIPTION = "Events it receives: " + "; ".join(
    f"`{name}`: {meaning}" for name, meaning in webhooks.EVENTS.items()
)


class WebhookIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: str = Field(
        min_length=1,
        max_length=2048,
        description="An `http://` or `https://` URL whose host has public addresses only "
        "(unless the server sets `DOVECOTE_WEBHOOK_ALLOW_PRIVATE`).",
    )
    events: list[WebhookEvent] = Field(  # type: ignore[valid-type]
        default_factory=lambda: ["job.finished"],
        min_length=1,
        max_length=len(webhooks.EVENTS),
        description=EVENTS_DESCRIPTION,
    )


class WebhookOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: str
    project_id: str | None = Field(description="null: every project of the tenant.")
    url: str
    events: list[str] = Field(description=EVENTS_DESCRIPTION)
    created_at: UTCDatetime


class WebhookCreated(WebhookOut):
    secret: str = Field(
        description="Signs every body (`Dovecote-Signature: sha256=<hex HMAC-SHA256(secret, "
        "body)>`). Shown in this answer only: keep it."
    )


class DeliveryAttempt(BaseModel):
    at: str = Field(description="When the attempt ended (ISO 8601 UTC).")
    status_code: int | None = Field(description="The receiver's HTTP status; null: no answer.")
    error: str | None = Field(description="Why it failed; null: delivered.")
    seconds: float


class DeliveryOut(BaseModel):
    """One event sent (or to send) to one webhook."""

    id: str = Field(description="Sent as `Dovecote-Delivery`.")
    webhook_id: str
    event: str
    event_id: str = Field(description="The body's `id`: the same on every attempt.")
    status: Literal["pending", "succeeded", "failed"] = Field(
        description="`pending`: not delivered yet, attempts left; `failed`: every attempt failed."
    )
    attempts: int
    next_attempt_at: UTCDatetime | None = Field(description="null: no attempt left to make.")
    last_status_code: int | None
    last_error: str | None
    attempt_log: list[DeliveryAttempt] = Field(description="Each attempt, oldest first.")
    body: dict[str, Any] = Field(description="The JSON body sent.")
    created_at: UTCDatetime
    last_attempt_at: UTCDatetime | None
    delivered_at: UTCDatetime | None


# --- batch prediction -------------------------------------------------------------------


class BatchPredictionOptions(BaseModel):
    """The predict options of a batch prediction (as `/predict`'s query)."""

    model_config = ConfigDict(extra="forbid")
    top_k: int = Field(5, ge=1, le=MAX_TOP_K, description="Scores kept per image, best first.")
    reject_below: Annotated[float, Field(ge=0, le=1)] | Literal["default"] | None = Field(
        None,
        description='Answer "none of the above" (`label: null`, `rejected: true`) below this '
        "top score; `default`: the model's own `metrics.reject_below`. Omitted: never reject.",
    )


class BatchPredictionCreate(BatchPredictionOptions):
    """A batch prediction over the project's unlabeled pool (JSON); a zip of images is sent
    as multipart instead (`files`: one .zip, `top_k`, `reject_below`)."""

    source: Literal["unlabeled"] = Field(
        description="The images uploaded without a label and the stored predictions without "
        "feedback (the pool of `/suggestions`), as they are now; the newest "
        "`DOVECOTE_MAX_ZIP_MEMBERS` of them."
    )


class BatchCountsOut(BaseModel):
    images: int = Field(description="Images in the batch (a zip's files, or pool entries).")
    processed: int = Field(description="Rows written so far.")
    predicted: int = Field(description="Rows with a prediction.")
    failed: int = Field(description="Rows with an `error` instead: not a readable image.")
    rejected: int = Field(description='Predictions answered "none of the above".')


class BatchResultsOut(BaseModel):
    jsonl: str = Field(description="Path of the results as JSON Lines.")
    csv: str = Field(description="Path of the results as CSV.")


class BatchPredictionOut(JobStateOut):
    """A batch prediction: a background job that predicts many images with one model."""

    id: str
    project_id: str
    model_id: str
    model_version: int
    source: Literal["zip", "unlabeled"]
    filename: str | None = Field(description="The zip's name (`source: zip`).")
    top_k: int
    reject_below: float | Literal["default"] | None
    progress: float = Field(ge=0, le=1, description="Fraction of the images processed.")
    stage: str = Field(description="`queued`, `predicting 640/1000 images`, ..., `done`.")
    counts: BatchCountsOut
    results: BatchResultsOut | None = Field(
        description="Where to download the results, once the job has succeeded."
    )


# --- catalogue --------------------------------------------------------------------------


class MethodOut(BaseModel):
    name: str
    summary: str
    example_params: dict[str, Any] = Field(description="Realistic `params` for a job.")
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


class QuotaOut(BaseModel):
    used: int
    limit: int | None = Field(description="The tenant's limit; null when there is none.")


class RateLimitOut(BaseModel):
    per_second: float
    burst: int


class UsageOut(BaseModel):
    """A tenant's current usage beside its limits (`DOVECOTE_TENANT_*`)."""

    tenant: str
    active_jobs: QuotaOut = Field(description="Queued plus running jobs (over it: 429).")
    projects: QuotaOut
    images: QuotaOut
    stored_bytes: QuotaOut = Field(description="Bytes of stored images.")
    stored_predictions: QuotaOut = Field(
        description="Stored predictions (past the limit a predict is answered, not stored)."
    )
    models: QuotaOut = Field(
        description="Models kept, counting those queued and running training jobs will make "
        "(at the limit a training job is a 403)."
    )
    rate_limit: RateLimitOut | None = Field(description="Per API key; null when off.")


class Problem(BaseModel):
    """An RFC 9457 problem document: every error answer of the API."""

    model_config = ConfigDict(extra="allow")
    type: str = Field(description="A URI naming the problem kind (ends with `code`).")
    title: str
    status: int = Field(description="The HTTP status.")
    detail: str = Field(description="What went wrong, and how to fix it.")
    code: str = Field(description="Machine-readable problem code.")


# --- dataset audit ----------------------------------------------------------------------


class AuditFinding(BaseModel):
    kind: audit.Kind
    image_ids: list[str]
    explanation: str = Field(description="One line: what was found and what to do.")
    suggested_label: str | None = Field(None, description="For `mislabel`: the likely label.")
    score: float | None = Field(
        None,
        description="Strength: similarity (duplicates, leakage), probability margin "
        "(mislabel), robust z-score (outlier), ratio (imbalance).",
    )


class AuditBalance(BaseModel):
    train_counts: dict[str, int] = Field(description="Labeled images per class outside `test`.")
    test_counts: dict[str, int]
    imbalance_ratio: float | None
    note: str = Field(description="What the validation can and cannot say with these counts.")


class AuditOut(BaseModel):
    project_id: str
    backbone: str
    image_count: int
    digest: str = Field(description="Of the audited image set: changes when images change.")
    summary: dict[str, int] = Field(description="Findings per kind.")
    leakage: dict[str, int] = Field(
        description="`test_images_with_train_near_duplicates`: test images in a `leakage` finding."
    )
    truncated: dict[str, int] = Field(description="Findings per kind left out of `findings`.")
    balance: AuditBalance
    findings: list[AuditFinding]


class AuditJobOut(JobStateOut):
    """The audit job of a project too large to audit in the request: poll
    `GET /v1/projects/{project_id}/audit` until it answers `200` with the result."""

    job_id: str
    project_id: str
    backbone: str
    digest: str = Field(description="Of the image set the job was started for.")
    image_count: int = Field(description="Images the job was started for.")
    stage: str = Field(description="`queued`, `extracting features`, `reading pixels`, ...")


# --- monitoring ---------------------------------------------------------------------------


class WindowFeedback(BaseModel):
    confirmed: int
    corrected: int
    accuracy: float | None = Field(
        description="`confirmed / (confirmed + corrected)`; null without feedback."
    )


class MonitoringWindow(BaseModel):
    start: UTCDatetime
    end: UTCDatetime = Field(description="Exclusive.")
    predictions: int = Field(description="Stored predictions of the model in the window.")
    images: int = Field(description="Distinct images among them (by content).")
    classes: dict[str, int] = Field(
        description='Answers per label (the class mix), "none of the above" left out.'
    )
    rejected: int = Field(description='"None of the above" answers (`label: null`).')
    rejection_rate: float
    confidence_histogram: list[int] = Field(
        description="Predictions per top-score bin; the bins are the answer's `confidence_bins`."
    )
    feedback: WindowFeedback = Field(description="Feedback given on these predictions.")
    drift_score: float | None = Field(
        description="MMD² between the window's images and the model's training images "
        "(0: alike, up to 2); null with fewer than `drift_min_images` distinct images."
    )
    drift_score_pixels: float | None = Field(
        None,
        description="MMD² between the pixel signatures (grey-level histogram, colour means "
        "and spreads) of the window's images and of the training images: what the backbone "
        "barely sees (an inverted photo is still a photo to it); null as `drift_score`.",
    )
    drift: bool | None = Field(
        description="`drift_score >= drift_threshold` or `drift_score_pixels >= "
        "drift_pixel_threshold`."
    )


class MonitoringOut(BaseModel):
    """A model's stored predictions, window by window (windows without any are left out)."""

    model_id: str
    project_id: str
    window: Literal["day", "hour"]
    since: UTCDatetime = Field(description="Start of the first window covered (inclusive).")
    until: UTCDatetime = Field(description="End of what is covered (exclusive).")
    store_predictions: bool = Field(
        description="Whether the project stores predictions now; without it nothing is recorded."
    )
    drift: bool = Field(description="Some window covered is flagged `drift: true`.")
    drift_measure: Literal["mmd2"]
    drift_threshold: float = Field(description="`DOVECOTE_DRIFT_THRESHOLD`.")
    drift_pixel_threshold: float = Field(description="`DOVECOTE_DRIFT_PIXEL_THRESHOLD`.")
    drift_min_images: int = Field(description="`DOVECOTE_DRIFT_MIN_IMAGES`.")
    drift_max_images: int = Field(
        description="Most distinct images of one window compared (a fixed sample by content)."
    )
    drift_note: str | None = Field(description="Why no window could get a drift score.")
    reference_images: int = Field(
        description="Training images compared with: the project's target-domain images "
        "outside `test` when the model's job started (a fixed sample when many)."
    )
    confidence_bins: list[float] = Field(description="Edges of the confidence histogram.")
    windows: list[MonitoringWindow]
