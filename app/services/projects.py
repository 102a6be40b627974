"""Projects and their classes."""

from __future__ import annotations

import unicodedata
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.db.models import Image, Model, Project, ProjectClass
from app.errors import InvalidLabel, NotFound, SimilarClassExists
from app.services import backbones
from app.services.pagination import paginate
from app.storage import BlobStore

MAX_LABEL_LENGTH = 100


def clean_label(raw: str) -> str:
    """A class name: trimmed, 1..100 characters, no control characters or slashes."""
    label = unicodedata.normalize("NFC", raw).strip()
    if not label or len(label) > MAX_LABEL_LENGTH:
        raise InvalidLabel(f"A label must be 1 to {MAX_LABEL_LENGTH} characters: {raw!r}.")
    if (
        any(unicodedata.category(ch).startswith("C") for ch in label)
        or "/" in label
        or "\\" in label
    ):
        raise InvalidLabel(f"A label may not contain control characters or slashes: {raw!r}.")
    return label


def class_names_by_key(project: Project) -> dict[str, str]:
    """The project's class names by :func:`_label_key`, for :func:`refuse_similar`."""
    return {_label_key(c.name): c.name for c in project.classes}


def _label_key(name: str) -> str:
    return "".join(name.split()).casefold()


def refuse_similar(known: dict[str, str], label: str) -> None:
    """Refuse ``label`` when it equals a class in ``known`` but for case or spaces ("Pigeon",
    "wood pigeon" beside "pigeon", "woodpigeon"): two classes would split one kind of
    image. Otherwise record it in ``known``."""
    other = known.setdefault(_label_key(label), label)
    if other != label:
        raise SimilarClassExists(
            f"Label {label!r} differs from the class {other!r} only by case or spaces; use "
            f"{other!r}, or rename that class first.",
            label=label,
            similar_to=other,
        )


def get(*, db: Session, tenant_id: str, project_id: str) -> Project:
    project = db.get(Project, project_id)
    if project is None or project.tenant_id != tenant_id:
        raise NotFound(f"No project {project_id!r}.", resource="project")
    return project


def ensure_classes(*, db: Session, project: Project, names: set[str]) -> None:
    known = {c.name for c in project.classes}
    for name in sorted(names - known):
        project.classes.append(ProjectClass(name=name, description="", attributes={}))


def _apply_classes(project: Project, classes: list[Any]) -> None:
    by_name = {c.name: c for c in project.classes}
    known = class_names_by_key(project)
    for spec in classes:
        name = clean_label(spec["name"])
        refuse_similar(known, name)
        row = by_name.get(name)
        if row is None:
            row = ProjectClass(name=name, description="", attributes={})
            project.classes.append(row)
            by_name[name] = row
        if spec.get("description") is not None:
            row.description = spec["description"]
        if spec.get("attributes") is not None:
            row.attributes = dict(spec["attributes"])
        if spec.get("negative") is not None:
            row.negative = bool(spec["negative"])


def create(
    *,
    db: Session,
    tenant_id: str,
    name: str,
    description: str = "",
    classes: list[Any] = (),  # type: ignore[assignment]
    store_predictions: bool = False,
    prediction_retention_days: int = 30,
) -> Project:
    """``store_predictions``: keep each predict's images and answers (see
    :mod:`app.services.predictions`) for ``prediction_retention_days``."""
    project = Project(
        tenant_id=tenant_id, name=name, description=description,
        store_predictions=store_predictions, prediction_retention_days=prediction_retention_days,
    )  # fmt: skip
    _apply_classes(project, list(classes))
    db.add(project)
    db.commit()
    return project


def update(*, db: Session, project: Project, changes: dict[str, Any]) -> Project:
    if "name" in changes:
        project.name = changes["name"]
    if "description" in changes:
        project.description = changes["description"]
    if changes.get("classes") is not None:
        _apply_classes(project, changes["classes"])
    for key in ("store_predictions", "prediction_retention_days"):
        if changes.get(key) is not None:
            setattr(project, key, changes[key])
    db.commit()
    return project


def list_(
    *, db: Session, tenant_id: str, limit: int, cursor: str | None
) -> tuple[list[Project], str | None]:
    stmt = select(Project).where(Project.tenant_id == tenant_id)
    return paginate(db, stmt, Project.id, limit=limit, cursor=cursor)


def delete(*, db: Session, store: BlobStore, project: Project) -> None:
    """Rows first (one transaction), then blobs: nothing ever points at a missing blob."""
    project_id = project.id
    learned = db.scalars(
        select(Model.id).where(Model.project_id == project_id, Model.method == backbones.METHOD)
    )
    backbones.check_deletable(db=db, model_ids=list(learned), deleting_project=project_id)
    db.delete(project)
    db.commit()
    store.delete_prefix(f"images/{project_id}")
    store.delete_prefix(f"models/{project_id}")  # every model artifact of the project
    store.delete_prefix(f"audits/{project_id}/")
    store.delete_prefix(f"batch-predictions/{project_id}")  # inputs and results


def class_image_counts(*, db: Session, project_id: str) -> dict[str, int]:
    rows = db.execute(
        select(Image.label, func.count())
        .where(Image.project_id == project_id, Image.label.is_not(None))
        .group_by(Image.label)
    )
    return {label: n for label, n in rows}


def image_count(*, db: Session, project_id: str) -> int:
    return (
        db.scalar(select(func.count()).select_from(Image).where(Image.project_id == project_id))
        or 0
    )
