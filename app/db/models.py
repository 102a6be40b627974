"""The tables. Tenancy: every project row names its tenant; everything else hangs off a project."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.db.base import Base, new_id, utcnow

Timestamp = DateTime(timezone=True)


class Tenant(Base):
    __tablename__ = "tenants"

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("ten"))
    name: Mapped[str] = mapped_column(String(100), unique=True)
    created_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)


class ApiKey(Base):
    """Only the SHA-256 of a key is stored; the key itself is printed once at creation."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("key"))
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(Timestamp)

    tenant: Mapped[Tenant] = relationship()


class Project(Base):
    __tablename__ = "projects"

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("prj"))
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    # The model the alias ``production`` points to: what the project's /predict serves.
    default_model_id: Mapped[str | None] = mapped_column(String(40))
    # The version number its last model took (models are v1, v2, ...; never reused).
    last_model_version: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # Opt-in: each predict stores its images and answers (:class:`StoredPrediction`),
    # deleted by the worker's sweep ``prediction_retention_days`` after they were made.
    store_predictions: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    prediction_retention_days: Mapped[int] = mapped_column(Integer, default=30, server_default="30")
    created_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)

    classes: Mapped[list[ProjectClass]] = relationship(
        back_populates="project", cascade="all, delete-orphan", order_by="ProjectClass.name"
    )


class ProjectClass(Base):
    __tablename__ = "project_classes"
    __table_args__ = (UniqueConstraint("project_id", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(100))
    description: Mapped[str] = mapped_column(Text, default="")
    attributes: Mapped[dict[str, float]] = mapped_column(JSON, default=dict)
    # A "none of these" class (e.g. "empty terrace"): predictions of it say negative: true.
    negative: Mapped[bool] = mapped_column(Boolean, default=False)

    project: Mapped[Project] = relationship(back_populates="classes")


class Image(Base):
    __tablename__ = "images"
    __table_args__ = (
        UniqueConstraint("project_id", "sha256"),
        Index("ix_images_project_id_label", "project_id", "label"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("img"))
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    filename: Mapped[str] = mapped_column(String(255))
    label: Mapped[str | None] = mapped_column(String(100))
    domain: Mapped[str] = mapped_column(String(16), default="target")
    split: Mapped[str] = mapped_column(String(16), default="auto")
    format: Mapped[str] = mapped_column(String(8))
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    size_bytes: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)

    extra_labels: Mapped[list[ImageLabel]] = relationship(
        cascade="all, delete-orphan", lazy="selectin", order_by="ImageLabel.label"
    )

    @property
    def labels(self) -> dict[str, str | list[str]]:
        """Its labels in the project's label sets: a string, or a list for a multi-label set."""
        out: dict[str, str | list[str]] = {}
        for row in self.extra_labels:
            name = row.label_set.name
            if row.label_set.multi_label:
                out.setdefault(name, []).append(row.label)  # type: ignore[union-attr]
            else:
                out[name] = row.label
        return out


class LabelSet(Base):
    """A named set of labels over a project's images besides their ``label``
    (``is_pigeon``; ``tags`` when ``multi_label``: several labels per image)."""

    __tablename__ = "label_sets"
    __table_args__ = (UniqueConstraint("project_id", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(100))
    multi_label: Mapped[bool] = mapped_column(Boolean, default=False)


class ImageLabel(Base):
    """One label of an image in a label set (several rows for a multi-label set)."""

    __tablename__ = "image_labels"

    image_id: Mapped[str] = mapped_column(
        ForeignKey("images.id", ondelete="CASCADE"), primary_key=True
    )
    label_set_id: Mapped[int] = mapped_column(
        ForeignKey("label_sets.id", ondelete="CASCADE"), primary_key=True
    )
    label: Mapped[str] = mapped_column(String(100), primary_key=True)

    label_set: Mapped[LabelSet] = relationship(lazy="joined")


#: Job statuses after which a job never runs again.
JOB_TERMINAL = ("succeeded", "failed", "cancelled")


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (Index("ix_jobs_status_heartbeat_at", "status", "heartbeat_at"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("job"))
    project_id: Mapped[str] = mapped_column(
        ForeignKey("projects.id", ondelete="CASCADE"), index=True
    )
    method: Mapped[str] = mapped_column(String(40))
    backbone: Mapped[str] = mapped_column(String(100))
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    status: Mapped[str] = mapped_column(String(16), default="queued")
    #: The queue its messages go to (``train`` or ``gpu``: :func:`app.queue.job_queue`),
    #: chosen at creation; a worker woken on a queue claims only that queue's jobs.
    queue: Mapped[str] = mapped_column(String(16), default="train", server_default="train")
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    stage: Mapped[str] = mapped_column(String(100), default="queued")
    error: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # Per-epoch records of iterative methods: epoch, losses, validation accuracy, seconds, ETA.
    history: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    model_id: Mapped[str | None] = mapped_column(String(40))
    # Promotion policy of its model: ``auto`` | ``always`` | ``never``; and what happened.
    promote: Mapped[str] = mapped_column(String(8), default="auto", server_default="auto")
    promotion: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    run_token: Mapped[str | None] = mapped_column(String(40))
    heartbeat_at: Mapped[datetime | None] = mapped_column(Timestamp)
    #: When the queue message of this (queued) job was last sent; the sweep resends it
    #: when the broker may have lost it (a Redis restart without persistence).
    enqueued_at: Mapped[datetime | None] = mapped_column(Timestamp, default=utcnow)
    created_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(Timestamp)
    finished_at: Mapped[datetime | None] = mapped_column(Timestamp)


class Model(Base):
    __tablename__ = "models"
    __table_args__ = (UniqueConstraint("project_id", "version"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("mdl"))
    project_id: Mapped[str] = mapped_column(
        ForeignKey("projects.id", ondelete="CASCADE"), index=True
    )
    # One job yields at most one model, even when its task runs twice.
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), unique=True)
    method: Mapped[str] = mapped_column(String(40))
    backbone: Mapped[str] = mapped_column(String(100))
    classes: Mapped[list[str]] = mapped_column(JSON)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON)
    artifact_prefix: Mapped[str] = mapped_column(String(200))
    # Per-project version number: 1, 2, ... in creation order.
    version: Mapped[int] = mapped_column(Integer)
    # Labeled images of the project when its job ran (null: not known, older models).
    labeled_images: Mapped[int | None] = mapped_column(Integer)
    # Whether its job moved ``production`` to it, and why.
    promotion: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)


class ModelAlias(Base):
    """A named pointer to one of the project's models (``staging``, ...). ``production`` is
    not a row: it is :attr:`Project.default_model_id`."""

    __tablename__ = "model_aliases"

    project_id: Mapped[str] = mapped_column(
        ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True
    )
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    model_id: Mapped[str] = mapped_column(String(40))
    updated_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)


class AliasEvent(Base):
    """One move of an alias: who, from which model, to which (null: cleared), when, why."""

    __tablename__ = "alias_events"
    __table_args__ = (Index("ix_alias_events_project_id_alias", "project_id", "alias"),)

    # Autoincrement: events of one alias replay in exactly the order they happened.
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    alias: Mapped[str] = mapped_column(String(64))
    from_model_id: Mapped[str | None] = mapped_column(String(40))
    from_version: Mapped[int | None] = mapped_column(Integer)
    to_model_id: Mapped[str | None] = mapped_column(String(40))
    to_version: Mapped[int | None] = mapped_column(Integer)
    # put | delete | default-model | promotion | rollback | model-deleted
    action: Mapped[str] = mapped_column(String(20))
    reason: Mapped[str] = mapped_column(Text, default="")
    tenant_id: Mapped[str | None] = mapped_column(String(40))
    api_key_id: Mapped[str | None] = mapped_column(String(40))
    actor: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)


class StoredPrediction(Base):
    """One image a predict answered, kept when its project has ``store_predictions``: the
    bytes are the blob of an upload with the same sha256 (``images/<project>/<sha256>``)."""

    __tablename__ = "stored_predictions"
    __table_args__ = (
        Index("ix_stored_predictions_project_id_created_at", "project_id", "created_at"),
        Index("ix_stored_predictions_project_id_sha256", "project_id", "sha256"),
        # A model's monitoring windows, and the worker's drift check over recent windows.
        Index("ix_stored_predictions_model_id_created_at", "model_id", "created_at"),
        Index("ix_stored_predictions_created_at", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("prd"))
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    # No foreign key: a prediction outlives the model that made it.
    model_id: Mapped[str] = mapped_column(String(40))
    model_version: Mapped[int] = mapped_column(Integer)
    filename: Mapped[str] = mapped_column(String(255))
    sha256: Mapped[str] = mapped_column(String(64))
    format: Mapped[str] = mapped_column(String(8))
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    size_bytes: Mapped[int] = mapped_column(Integer)
    label: Mapped[str | None] = mapped_column(String(100))  # null: rejected
    top_label: Mapped[str] = mapped_column(String(100))  # the best class, even when rejected
    score: Mapped[float] = mapped_column(Float)
    scores: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    rejected: Mapped[bool] = mapped_column(Boolean, default=False)
    # Feedback: ``confirmed`` | ``corrected`` (null: none yet), the label given, the image.
    feedback: Mapped[str | None] = mapped_column(String(16))
    feedback_label: Mapped[str | None] = mapped_column(String(100))
    image_id: Mapped[str | None] = mapped_column(String(40))
    feedback_at: Mapped[datetime | None] = mapped_column(Timestamp)
    created_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)


class Webhook(Base):
    """A URL that receives a signed JSON POST for each event it subscribed to
    (:mod:`app.services.webhooks`): a project's (``project_id``) or, with ``project_id``
    null, every project's of its tenant. The secret signs the bodies; it is shown once and
    stored sealed (``fernet:...``, :mod:`app.sealing`)."""

    __tablename__ = "webhooks"

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("whk"))
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    project_id: Mapped[str | None] = mapped_column(
        ForeignKey("projects.id", ondelete="CASCADE"), index=True
    )
    url: Mapped[str] = mapped_column(String(2048))
    events: Mapped[list[str]] = mapped_column(JSON)
    secret: Mapped[str] = mapped_column(String(400))
    created_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)


class WebhookDelivery(Base):
    """One event for one webhook: the exact body it is sent (signed the same on every
    attempt), ``pending`` until an attempt got a 2xx (``succeeded``) or the last attempt
    failed (``failed``). A worker sends it when ``next_attempt_at`` is due: claiming it
    counts the attempt and moves ``next_attempt_at`` past the attempt's lease, so a worker
    that dies mid-send leaves it due again, never lost."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        Index("ix_webhook_deliveries_status_next_attempt_at", "status", "next_attempt_at"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("dlv"))
    webhook_id: Mapped[str] = mapped_column(
        ForeignKey("webhooks.id", ondelete="CASCADE"), index=True
    )
    event: Mapped[str] = mapped_column(String(64))
    event_id: Mapped[str] = mapped_column(String(40))
    body: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(Timestamp)
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    # One record per attempt: at, status_code, error, seconds.
    attempt_log: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)
    last_attempt_at: Mapped[datetime | None] = mapped_column(Timestamp)
    delivered_at: Mapped[datetime | None] = mapped_column(Timestamp)


class DriftAlert(Base):
    """A monitoring window of a model that sent ``model.drift``: one row per model, window
    kind and window start, the primary key, inserted or ignored in the transaction that
    records the event's deliveries (:func:`app.services.monitoring.alert`), so two
    computations of the same window at once send it once."""

    __tablename__ = "drift_alerts"

    model_id: Mapped[str] = mapped_column(
        ForeignKey("models.id", ondelete="CASCADE"), primary_key=True
    )
    window: Mapped[str] = mapped_column(String(8), primary_key=True)  # "day" | "hour"
    window_start: Mapped[datetime] = mapped_column(Timestamp, primary_key=True)
    drift_score: Mapped[float] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(Timestamp, default=utcnow)
