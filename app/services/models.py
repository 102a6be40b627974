"""Trained models: store an artifact with its row, list, read, delete, publish."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.config import Settings
from app.db.base import new_id
from app.db.models import Job, Model, Project
from app.db.session import session_scope
from app.errors import InvalidInput, TeacherNotInProject
from app.services import aliases, backbones
from app.services.scoping import get_owned, list_in_project
from app.storage import BlobStore, open_store
from app.transfer.artifacts import TrainedModel, is_shared_file


def artifact_prefix(project_id: str, model_id: str) -> str:
    return f"models/{project_id}/{model_id}"


def artifact_key(prefix: str, name: str) -> str:
    """The blob key of artifact file ``name`` of the model at ``prefix``: under the prefix,
    except shared tensors, stored once at the store's root for every model that uses them
    (never deleted with a model: they hold no tenant data, only tensors derived from a
    registry backbone and ImageNet's class texts)."""
    return name if is_shared_file(name) else f"{prefix}/{name}"


def artifact_reader(store: BlobStore, prefix: str) -> Callable[[str], bytes]:
    """``read(name)`` of the artifact at ``prefix`` (:meth:`TrainedModel.from_files`)."""
    return lambda name: store.get(artifact_key(prefix, name))


def save_trained(
    *,
    db: Session,
    store: BlobStore,
    job: Job,
    trained: TrainedModel,
    labeled_images: int | None = None,
) -> Model:
    """Write the artifact, then its row (with the project's next version), then apply the
    job's promotion policy (:func:`aliases.promote_trained`). A job yields one model: a
    rerun returns the first. ``labeled_images``: the project's labeled images it saw."""
    existing = db.scalar(select(Model).where(Model.job_id == job.id))
    if existing is not None:
        return existing
    model_id = new_id("mdl")
    prefix = artifact_prefix(job.project_id, model_id)
    for name, data in trained.to_files().items():
        key = artifact_key(prefix, name)
        if not (is_shared_file(name) and store.exists(key)):  # content-addressed: written once
            store.put(key, data)
    model = Model(
        id=model_id,
        project_id=job.project_id,
        job_id=job.id,
        method=trained.method,
        backbone=trained.backbone,
        classes=trained.classes,
        metrics=trained.metrics,
        artifact_prefix=prefix,
        version=aliases.next_version(db=db, project_id=job.project_id),
        labeled_images=labeled_images,
    )
    db.add(model)
    try:
        db.flush()
        aliases.promote_trained(db=db, job=job, model=model)
        db.commit()
    except IntegrityError:
        db.rollback()
        store.delete_prefix(prefix)
        return db.scalars(select(Model).where(Model.job_id == job.id)).one()
    return model


def get(*, db: Session, tenant_id: str, model_id: str) -> Model:
    return get_owned(db, Model, model_id, tenant_id=tenant_id, resource="model")


def list_(
    *, db: Session, project: Project, limit: int, cursor: str | None
) -> tuple[list[Model], str | None]:
    return list_in_project(db, Model, project=project, limit=limit, cursor=cursor)


def load_trained(*, settings: Settings, project_id: str, model_id: str) -> TrainedModel:
    """The artifact of model ``model_id`` of project ``project_id`` (own session, so it
    also serves the worker after its session closed); any other id is
    :class:`TeacherNotInProject`, whether it exists elsewhere or not."""
    with session_scope(settings.resolved_database_url) as db:
        model = db.get(Model, model_id)
        if model is None or model.project_id != project_id:
            raise TeacherNotInProject(
                f"Model {model_id!r} is not a model of this project.", model_id=model_id
            )
        prefix = model.artifact_prefix
    store = open_store(settings.resolved_storage_url)
    return TrainedModel.from_files(artifact_reader(store, prefix))


def set_default(
    *, db: Session, project: Project, model_id: str, actor: aliases.Actor | None = None
) -> Project:
    """Point ``production`` at ``model_id`` (the alias PUT, with this route's own error)."""
    model = db.get(Model, model_id)
    if model is None or model.project_id != project.id:
        raise InvalidInput(f"Model {model_id!r} does not belong to this project.", field="model_id")
    aliases.point(
        db=db, project=project, name=aliases.PRODUCTION, model_id=model.id,
        actor=actor or aliases.Actor("unknown"), action="default-model",
        reason="POST /default-model",
    )  # fmt: skip
    return project


def delete(
    *, db: Session, store: BlobStore, model: Model, actor: aliases.Actor | None = None
) -> None:
    """Delete the model; an alias pointing to it goes back to its previous model that
    still exists, or is cleared."""
    if model.method == backbones.METHOD:
        backbones.check_deletable(db=db, model_ids=[model.id], deleting_project=None)
    aliases.on_model_deleted(db=db, model=model, actor=actor or aliases.Actor("unknown"))
    prefix = model.artifact_prefix
    db.delete(model)
    db.commit()
    store.delete_prefix(prefix)
