"""Backbones a tenant learned: every ``pretrain`` model is a backbone named by its id.

Only the tenant owning the model may name it (:func:`check_usable`, at job creation);
loading is tenant-blind, like the feature cache: :func:`install` lets the transfer
library resolve such a name to the model's backbone tensors, copied once from the blob
store to ``<data_dir>/learned_backbones/<id>.safetensors``, and its preprocessing.
"""

from __future__ import annotations

import json
import os
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.config import Settings
from app.db.models import JOB_TERMINAL, Job, Model, Project
from app.db.session import session_scope
from app.errors import BackboneInUse, BackboneUnavailable
from app.storage import open_store
from app.transfer.artifacts import BACKBONE_FILE, MODEL_JSON
from app.transfer.backbones import BackboneSpec, learned_spec, list_backbones, set_learned_lookup
from app.transfer.preprocess import Preprocessing

METHOD = "pretrain"


def check_usable(*, db: Session, tenant_id: str, name: str) -> None:
    """Registry backbones are everyone's; a learned one only its tenant's."""
    if name in {spec.name for spec in list_backbones()}:
        return
    model = db.get(Model, name)
    project = db.get(Project, model.project_id) if model is not None else None
    if model is None or model.method != METHOD or project is None or project.tenant_id != tenant_id:
        raise BackboneUnavailable(f"Unknown backbone {name!r}.", backbone=name)


def check_deletable(*, db: Session, model_ids: list[str], deleting_project: str | None) -> None:
    """Refuse to delete learned backbones (``pretrain`` model ids) that models or unfinished
    jobs outside ``deleting_project`` still stand on: they would lose their weights."""
    if not model_ids:
        return
    models = select(Model.id).where(Model.backbone.in_(model_ids))
    jobs = select(Job.id).where(Job.backbone.in_(model_ids), Job.status.not_in(JOB_TERMINAL))
    if deleting_project is not None:  # its own models and jobs go with it
        models = models.where(Model.project_id != deleting_project)
        jobs = jobs.where(Job.project_id != deleting_project)
    dependents = sorted(db.scalars(models)) + sorted(db.scalars(jobs))
    if dependents:
        raise BackboneInUse(
            f"Learned backbone(s) {model_ids} are used by {len(dependents)} model(s) or "
            "job(s); delete those first.",
            dependents=dependents,
        )


def list_for_tenant(*, db: Session, tenant_id: str) -> list[Model]:
    return list(
        db.scalars(
            select(Model)
            .join(Project, Project.id == Model.project_id)
            .where(Project.tenant_id == tenant_id, Model.method == METHOD)
            .order_by(Model.created_at)
        )
    )


def _spec(settings: Settings, name: str) -> BackboneSpec | None:
    if not name.startswith("mdl_"):
        return None
    with session_scope(settings.resolved_database_url) as db:
        model = db.get(Model, name)
        if model is None or model.method != METHOD:
            return None
        prefix = model.artifact_prefix
    store = open_store(settings.resolved_storage_url)
    manifest = json.loads(store.get(f"{prefix}/{MODEL_JSON}"))
    path = settings.data_dir / "learned_backbones" / f"{name}.safetensors"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(f".{os.getpid()}.part")
        partial.write_bytes(store.get(f"{prefix}/{BACKBONE_FILE}"))
        partial.replace(path)
    return learned_spec(
        name,
        architecture=manifest["params"]["architecture"],
        weights_file=path,
        preprocessing=Preprocessing.from_dict(manifest["preprocessing"]),
        description=description(manifest["params"]["architecture"], manifest["metrics"]),
    )


def description(architecture: str, metrics: dict[str, Any]) -> str:
    return (
        f"{architecture} learned by rotation prediction from {metrics.get('n_images')} "
        f"project images (rotation accuracy {metrics.get('rotation_accuracy', 0):.2f})."
    )


def install(settings: Settings) -> None:
    """Let the transfer library load learned backbones of this deployment."""
    set_learned_lookup(lambda name: _spec(settings, name))
