"""The one exception hierarchy of Dovecote's domain.

Each error carries a stable machine-readable ``code`` and the HTTP status the API
answers it with; the API maps them to RFC 9457 problem documents in one place
(``app/api/problems.py``). Nothing here imports HTTP.
"""

from __future__ import annotations

from typing import Any, ClassVar

PROBLEM_BASE = "https://dovecote.dev/problems/"
#: Longest ``detail`` and echoed string an error carries: input is quoted, never mirrored.
MAX_DETAIL, MAX_ECHO = 2000, 200


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _clip_echo(value: Any) -> Any:
    return _clip(value, MAX_ECHO) if isinstance(value, str) else value


class DovecoteError(Exception):
    code: ClassVar[str] = "error"
    status: ClassVar[int] = 400
    title: ClassVar[str] = "Bad request"

    def __init__(self, detail: str, **extra: Any) -> None:
        detail = _clip(detail, MAX_DETAIL)
        super().__init__(detail)
        self.detail = detail
        self.extra = {key: _clip_echo(value) for key, value in extra.items()}

    def problem(self) -> dict[str, Any]:
        """This error as an RFC 9457 problem document."""
        return {
            "type": PROBLEM_BASE + self.code,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
            "code": self.code,
            **self.extra,
        }


class NotFound(DovecoteError):
    code = "not_found"
    status = 404
    title = "Not found"


class Unauthorized(DovecoteError):
    code = "unauthorized"
    status = 401
    title = "Missing or invalid API key"


class Conflict(DovecoteError):
    code = "conflict"
    status = 409
    title = "Conflict"


class InvalidInput(DovecoteError):
    code = "invalid_input"
    status = 422
    title = "Invalid input"


class UploadTooLarge(DovecoteError):
    code = "upload_too_large"
    status = 413
    title = "Upload too large"


class TooManyFiles(UploadTooLarge):
    """More files in one request than a setting allows: ``limit`` names it."""

    code = "too_many_files"
    title = "Too many files in one request"


class ImageUndecodable(InvalidInput):
    code = "image_undecodable"
    title = "Not a decodable image"


class ImageTooLarge(InvalidInput):
    code = "image_too_large"
    title = "Image has too many pixels"


class ArchiveInvalid(InvalidInput):
    code = "archive_invalid"
    title = "Not a readable zip archive"


class ArchiveTooLarge(InvalidInput):
    code = "archive_too_large"
    title = "Zip archive exceeds the configured limits"


class InvalidLabel(InvalidInput):
    code = "invalid_label"
    title = "Invalid label"


class SimilarClassExists(InvalidLabel):
    code = "similar_class_exists"
    title = "A class with this name but for case or spaces exists"


class ProjectHasNoLabels(InvalidInput):
    code = "project_has_no_labels"
    title = "Not enough labeled images to train"


class ClassTooSmall(InvalidInput):
    code = "class_too_small"
    title = "A class has too few images"


class UnknownMethod(InvalidInput):
    code = "unknown_method"
    title = "Unknown training method"


class InvalidParams(InvalidInput):
    code = "invalid_params"
    title = "Invalid method parameters"


class TeacherNotInProject(InvalidInput):
    code = "teacher_not_in_project"
    title = "The teacher is not a model of this project"


class TeacherClassesMismatch(InvalidInput):
    code = "teacher_classes_mismatch"
    title = "The teachers do not cover the project's classes"


class LocalizationUnsupported(InvalidInput):
    code = "localization_unsupported"
    title = "This model cannot localize"


class SourceHasNoLabels(InvalidInput):
    code = "source_has_no_labels"
    title = "Not enough labeled source images for domain adaptation"


class TargetHasNoImages(InvalidInput):
    code = "target_has_no_images"
    title = "No unlabeled target images to adapt to"


class TooFewImages(InvalidInput):
    code = "too_few_images"
    title = "Not enough images to learn from"


class BackboneUnavailable(InvalidInput):
    code = "backbone_unavailable"
    title = "Backbone weights cannot be had"


class BackboneNotTrainable(InvalidInput):
    code = "backbone_not_trainable"
    title = "This backbone cannot be finetuned"


class TooFewClasses(InvalidInput):
    code = "too_few_classes"
    title = "A classifier needs at least two classes"


class TextEncoderUnavailable(InvalidInput):
    code = "text_encoder_unavailable"
    title = "The sentence-embedding model cannot be had"


class BackboneHasNoClassifier(InvalidInput):
    code = "backbone_has_no_classifier"
    title = "Zero-shot needs a backbone with its ImageNet classifier"


class ClassAttributesInvalid(InvalidInput):
    code = "class_attributes_invalid"
    title = "Class attributes missing or out of range"


class NoRejectDefault(InvalidInput):
    code = "no_reject_default"
    title = "The model has no default rejection threshold"


class InvalidLabels(InvalidInput):
    code = "invalid_labels"
    title = "Invalid label sets"


class ProjectHasNoLabelSets(InvalidInput):
    code = "project_has_no_label_sets"
    title = "The project has no label sets"


class UnknownLabelSet(InvalidInput):
    code = "unknown_label_set"
    title = "Unknown label set"


class LabelSetTooSmall(InvalidInput):
    code = "label_set_too_small"
    title = "A label set has too few labeled images"


class InvalidAliasName(InvalidInput):
    code = "invalid_alias_name"
    title = "Invalid alias name"


class ModelNotInProject(InvalidInput):
    code = "model_not_in_project"
    title = "No such model in this project"


class WebhookUrlRefused(InvalidInput):
    """Not an http(s) URL, or one whose host is private, loopback, link-local... (SSRF)."""

    code = "webhook_url_refused"
    title = "Webhook URL refused"


class UnknownWebhookEvent(InvalidInput):
    code = "unknown_webhook_event"
    title = "Unknown webhook event"


class AliasNotFound(NotFound):
    code = "alias_not_found"
    title = "No such alias"


class NothingToRollBack(Conflict):
    code = "nothing_to_roll_back"
    title = "The alias has no earlier model to go back to"


class BackboneInUse(Conflict):
    code = "backbone_in_use"
    title = "A learned backbone other models or jobs depend on"


class JobNotCancellable(Conflict):
    code = "job_not_cancellable"
    title = "Job is not cancellable"


class ImageMissing(Conflict):
    """An image row whose bytes are gone: it was deleted while a job or audit read it, or
    the blob store lost it. ``sha256`` names it."""

    code = "image_missing"
    title = "An image is no longer stored"


class ProjectHasNoModel(Conflict):
    code = "project_has_no_model"
    title = "Project has no model"


class UnlabeledPoolEmpty(InvalidInput):
    code = "unlabeled_pool_empty"
    title = "The project has no unlabeled images"


class JobNotFinished(Conflict):
    code = "job_not_finished"
    title = "The job has not finished"


class ResultsNotReady(Conflict):
    code = "results_not_ready"
    title = "The batch prediction has no results"


class ModelDeleted(Conflict):
    """The model of a queued batch prediction was deleted before it ran."""

    code = "model_deleted"
    title = "The model was deleted"


class QuotaExceeded(DovecoteError):
    """A tenant limit that waiting does not lift (storage, projects): ``limit`` names it."""

    code = "quota_exceeded"
    status = 403
    title = "Tenant quota exceeded"


class ProjectQuotaExceeded(QuotaExceeded):
    code = "project_quota_exceeded"
    title = "Too many projects"


class ImageQuotaExceeded(QuotaExceeded):
    code = "image_quota_exceeded"
    title = "Too many images"


class StorageQuotaExceeded(QuotaExceeded):
    code = "storage_quota_exceeded"
    title = "Too many stored bytes"


class ModelQuotaExceeded(QuotaExceeded):
    code = "model_quota_exceeded"
    title = "Too many models"


class AliasQuotaExceeded(QuotaExceeded):
    code = "alias_quota_exceeded"
    title = "Too many aliases"


class WebhookQuotaExceeded(QuotaExceeded):
    code = "webhook_quota_exceeded"
    title = "Too many webhooks"


class TooManyRequests(DovecoteError):
    """Waiting helps: the answer carries ``Retry-After`` (seconds, from ``retry_after``)."""

    code = "too_many_requests"
    status = 429
    title = "Too many requests"


class TooManyActiveJobs(TooManyRequests):
    code = "too_many_active_jobs"
    title = "Too many queued or running jobs"


class RateLimited(TooManyRequests):
    code = "rate_limited"
    title = "Request rate limit exceeded"


class TooManyConcurrentPredicts(TooManyRequests):
    code = "too_many_concurrent_predicts"
    title = "Too many predicts at once"


class JobCancelled(DovecoteError):
    """Raised inside a training run when its job was cancelled; not an HTTP error."""

    code = "job_cancelled"
    status = 409
    title = "Job cancelled"


class JobTimedOut(DovecoteError):
    code = "job_timed_out"
    status = 422
    title = "Training ran past its time limit"


class DecodeBudgetExceeded(DovecoteError):
    code = "decode_budget_exceeded"
    status = 413
    title = "Too many pixels to decode in one request"


class TrainingFailed(DovecoteError):
    code = "training_failed"
    status = 500
    title = "Training failed"


class JobSetupFailed(TrainingFailed):
    """The worker could not prepare a job's inputs (before training started)."""

    code = "job_setup_failed"
    title = "The job's inputs could not be prepared"


class BatchPredictionFailed(DovecoteError):
    code = "batch_prediction_failed"
    status = 500
    title = "Batch prediction failed"


class AuditFailed(DovecoteError):
    """An audit job stopped on an unexpected internal error."""

    code = "audit_failed"
    status = 500
    title = "The audit failed"


class AuditJobFailed(Conflict):
    """The audit job of the project's current images failed: ``job`` is the job, and
    ``?retry=true`` starts it again."""

    code = "audit_job_failed"
    title = "The audit job failed"
