"""Model versions, aliases, promotion and rollback.

An alias is a named pointer to one of a project's models. ``production`` is the one the
project's ``/predict`` serves; it is stored as :attr:`Project.default_model_id`, so
``POST .../default-model`` moves it. Other aliases (``staging``, ...) are rows of
:class:`ModelAlias`. Every move is an :class:`AliasEvent` (who, from, to, when, why); the
events replayed in order give the stack that rollback and model deletion go back through.
"""

from __future__ import annotations

import hmac
import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.config import Settings
from app.db.base import utcnow
from app.db.models import AliasEvent, ApiKey, Image, Job, Model, ModelAlias, Project, Tenant
from app.errors import (
    AliasNotFound,
    InvalidAliasName,
    InvalidInput,
    ModelNotInProject,
    NothingToRollBack,
    ProjectHasNoModel,
)
from app.services import quotas
from app.services.tenants import hash_key

PRODUCTION = "production"
NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"
_NAME = re.compile(NAME_PATTERN)
PROMOTE_POLICIES = ("auto", "always", "never")


@dataclass(frozen=True)
class Actor:
    """Who moved an alias: an API key of a tenant, or the system (a job, a deletion)."""

    label: str
    tenant_id: str | None = None
    api_key_id: str | None = None


def actor_of(*, db: Session, tenant: Tenant, key: str | None, admin_key: str | None) -> Actor:
    """The caller behind ``key``, already authenticated as ``tenant``."""
    if key and admin_key and hmac.compare_digest(key.encode(), admin_key.encode()):
        return Actor(f"admin key (DOVECOTE_API_KEY) of tenant {tenant.name}", tenant.id)
    row = db.scalar(select(ApiKey).where(ApiKey.key_hash == hash_key(key or "")))
    if row is None:
        return Actor(f"tenant {tenant.name}", tenant.id)
    return Actor(f"API key {row.prefix}… ({row.id}) of tenant {tenant.name}", tenant.id, row.id)


def check_name(name: str) -> str:
    if not _NAME.match(name):
        raise InvalidAliasName(
            f"Alias {name!r} is not a valid name: 1 to 64 lowercase letters, digits, '-' or "
            "'_', starting with a letter or digit (e.g. 'production', 'staging').",
            field="name",
        )
    return name


def version_label(model: Model | None) -> str:
    return f"v{model.version}" if model is not None else "nothing"


# --- versions ---------------------------------------------------------------------------


def next_version(*, db: Session, project_id: str) -> int:
    """The project's next model version (1, 2, ...; never reused after a deletion). The
    update locks the project row until commit, so concurrent workers never share one."""
    db.execute(
        update(Project)
        .where(Project.id == project_id)
        .values(last_model_version=Project.last_model_version + 1)
    )
    return int(db.scalar(select(Project.last_model_version).where(Project.id == project_id)))


# --- reading ----------------------------------------------------------------------------


def pointer(*, db: Session, project: Project, name: str) -> str | None:
    """The model id alias ``name`` points to, or None."""
    if name == PRODUCTION:
        return project.default_model_id
    row = db.get(ModelAlias, (project.id, name))
    return row.model_id if row is not None else None


def get(*, db: Session, project: Project, name: str) -> Model | None:
    """The model of alias ``name``; None for an empty ``production``; other aliases that
    do not exist are :class:`AliasNotFound`."""
    check_name(name)
    model_id = pointer(db=db, project=project, name=name)
    if model_id is None and name != PRODUCTION:
        names = ", ".join(sorted(n for n, _ in list_(db=db, project=project)))
        raise AliasNotFound(
            f"Project {project.id} has no alias {name!r} (its aliases: {names}). Set it with "
            f'PUT /v1/projects/{project.id}/aliases/{name} {{"model_id": "..."}}.',
            resource="alias",
            alias=name,
        )
    return db.get(Model, model_id) if model_id else None


def list_(*, db: Session, project: Project) -> list[tuple[str, Model | None]]:
    """Every alias with its model: ``production`` first (even when empty), then by name."""
    rows = db.scalars(
        select(ModelAlias).where(ModelAlias.project_id == project.id).order_by(ModelAlias.name)
    )
    out: list[tuple[str, Model | None]] = [
        (PRODUCTION, db.get(Model, project.default_model_id) if project.default_model_id else None)
    ]
    out += [(row.name, db.get(Model, row.model_id)) for row in rows]
    return out


def names_by_model(*, db: Session, project_id: str) -> dict[str, list[str]]:
    """The aliases pointing at each model of the project, by model id."""
    out: dict[str, list[str]] = {}
    production = db.scalar(select(Project.default_model_id).where(Project.id == project_id))
    if production:
        out[production] = [PRODUCTION]
    for name, model_id in db.execute(
        select(ModelAlias.name, ModelAlias.model_id)
        .where(ModelAlias.project_id == project_id)
        .order_by(ModelAlias.name)
    ):
        out.setdefault(model_id, []).append(name)
    return out


def resolve_for_predict(*, db: Session, project: Project, name: str | None) -> Model:
    """The model ``/predict`` on the project serves: alias ``name`` (default production).
    An empty alias is :class:`ProjectHasNoModel`, saying truthfully how to set one."""
    name = name or PRODUCTION
    model = get(db=db, project=project, name=name)
    if model is not None:
        return model
    versions = list(
        db.execute(
            select(Model.id, Model.version)
            .where(Model.project_id == project.id)
            .order_by(Model.version.desc())
        )
    )
    if not versions:
        raise ProjectHasNoModel(
            f"Project {project.id} has no trained model yet; train one first (POST "
            f"/v1/projects/{project.id}/jobs): its first model becomes `production`."
        )
    listed = ", ".join(f"v{v} ({mid})" for mid, v in versions[:10])
    more = f" and {len(versions) - 10} more" if len(versions) > 10 else ""
    raise ProjectHasNoModel(
        f"Project {project.id} has {len(versions)} model(s) ({listed}{more}) but its alias "
        f"`production` points to none. Choose one: PUT /v1/projects/{project.id}/aliases/"
        f'production {{"model_id": "{versions[0][0]}"}} (or POST .../default-model), or '
        f"predict with one: POST /v1/models/{{model_id}}/predict.",
        models=[mid for mid, _ in versions],
    )


def history(
    *, db: Session, project: Project, name: str, limit: int, cursor: str | None
) -> tuple[list[AliasEvent], str | None]:
    """The alias's moves, oldest first, paginated (the cursor is the last event's id)."""
    check_name(name)
    if not 1 <= limit <= 500:
        raise InvalidInput("limit must be between 1 and 500.", field="limit")
    stmt = select(AliasEvent).where(AliasEvent.project_id == project.id, AliasEvent.alias == name)
    if cursor:
        if not cursor.isdigit():
            raise InvalidInput(f"Not a cursor of this list: {cursor!r}.", field="cursor")
        stmt = stmt.where(AliasEvent.id > int(cursor))
    rows = list(db.scalars(stmt.order_by(AliasEvent.id).limit(limit + 1)))
    if len(rows) > limit:
        return rows[:limit], str(rows[limit - 1].id)
    return rows, None


# --- moving -----------------------------------------------------------------------------


def _model_of(db: Session, project: Project, model_id: str) -> Model:
    model = db.get(Model, model_id)
    if model is None or model.project_id != project.id:
        raise ModelNotInProject(
            f"Model {model_id!r} is not a model of project {project.id} (GET "
            f"/v1/projects/{project.id}/models lists them).",
            field="model_id",
            model_id=model_id,
        )
    return model


def _move(
    db: Session,
    project: Project,
    name: str,
    to: Model | None,
    *,
    actor: Actor,
    action: str,
    reason: str = "",
    before: Model | None = None,
) -> bool:
    """Point alias ``name`` at ``to`` (None: clear it) and record the event; no commit.
    ``before`` is the model it pointed to when that row is already gone from the session.
    Returns whether anything changed."""
    from_id = pointer(db=db, project=project, name=name)
    to_id = to.id if to is not None else None
    if from_id == to_id:
        return False
    if before is None and from_id is not None:
        before = db.get(Model, from_id)
    if name == PRODUCTION:
        project.default_model_id = to_id
    else:
        row = db.get(ModelAlias, (project.id, name))
        if to_id is None:
            if row is not None:
                db.delete(row)
        elif row is None:
            db.add(ModelAlias(project_id=project.id, name=name, model_id=to_id))
        else:
            row.model_id, row.updated_at = to_id, utcnow()
    db.add(
        AliasEvent(
            project_id=project.id,
            alias=name,
            from_model_id=from_id,
            from_version=before.version if before is not None else None,
            to_model_id=to_id,
            to_version=to.version if to is not None else None,
            action=action,
            reason=reason,
            tenant_id=actor.tenant_id,
            api_key_id=actor.api_key_id,
            actor=actor.label,
        )
    )
    return True


def point(
    *,
    db: Session,
    project: Project,
    name: str,
    model_id: str,
    actor: Actor,
    action: str = "put",
    reason: str = "",
    settings: Settings | None = None,
) -> Model:
    """Point alias ``name`` at model ``model_id`` of the project (a no-op when it already
    does). A new alias is held to ``settings``' ``DOVECOTE_MAX_ALIASES_PER_PROJECT`` (None:
    no limit, for the moves the service itself makes)."""
    check_name(name)
    model = _model_of(db, project, model_id)
    if (
        settings is not None
        and name != PRODUCTION
        and pointer(db=db, project=project, name=name) is None  # a new alias
    ):
        quotas.check_new_alias(db=db, settings=settings, project_id=project.id)
    _move(db, project, name, model, actor=actor, action=action, reason=reason)
    try:
        db.commit()
    except IntegrityError:  # the alias was created concurrently: move it over that one
        db.rollback()
        model = _model_of(db, project, model_id)
        _move(db, project, name, model, actor=actor, action=action, reason=reason)
        db.commit()
    return model


def clear(*, db: Session, project: Project, name: str, actor: Actor) -> None:
    """Remove alias ``name`` (``production``: leave it empty). Its history stays."""
    if get(db=db, project=project, name=name) is None:
        return
    _move(db, project, name, None, actor=actor, action="delete", reason="deleted by request")
    db.commit()


def _stack(db: Session, project: Project, name: str) -> list[str]:
    """The models alias ``name`` went through, replayed from its events, most recent last:
    a move pushes, a rollback or the deletion of the current model pops. A DELETE of the
    alias leaves the stack as it is, so a rollback undoes it."""
    stack: list[str] = []
    for e in db.scalars(
        select(AliasEvent)
        .where(AliasEvent.project_id == project.id, AliasEvent.alias == name)
        .order_by(AliasEvent.id)
    ):
        if e.action in ("rollback", "model-deleted") and stack and stack[-1] == e.from_model_id:
            stack.pop()
        if e.to_model_id is not None and (not stack or stack[-1] != e.to_model_id):
            stack.append(e.to_model_id)
    current = pointer(db=db, project=project, name=name)
    if current is not None and (not stack or stack[-1] != current):
        stack.append(current)  # set before history was recorded (older databases)
    return stack


def _previous(db: Session, project: Project, name: str, leaving: str | None) -> Model | None:
    """The most recent model before ``leaving`` in the alias's stack that still exists."""
    stack = _stack(db, project, name)
    for model_id in reversed(stack):
        if model_id == leaving:
            continue
        model = db.get(Model, model_id)
        if model is not None and model.project_id == project.id:
            return model
    return None


def rollback(*, db: Session, project: Project, name: str, actor: Actor) -> Model:
    """Point alias ``name`` back at the model it pointed to before (that still exists);
    after a DELETE of the alias, at the model it pointed to then."""
    check_name(name)
    current_id = pointer(db=db, project=project, name=name)
    current = db.get(Model, current_id) if current_id else None
    target = _previous(db, project, name, current.id if current else None)
    if target is None:
        raise NothingToRollBack(
            f"Alias {name!r} of project {project.id} has no earlier model that still exists "
            f"to go back to (it points to {version_label(current)}). See GET "
            f"/v1/projects/{project.id}/aliases/{name}/history; set it with PUT "
            f"/v1/projects/{project.id}/aliases/{name}.",
            alias=name,
        )
    _move(
        db, project, name, target, actor=actor, action="rollback",
        reason=f"rolled back from {version_label(current)} to v{target.version}",
    )  # fmt: skip
    db.commit()
    return target


def on_model_deleted(*, db: Session, model: Model, actor: Actor) -> None:
    """Before ``model`` is deleted: every alias pointing to it moves to the previous model
    it pointed to that still exists, or is cleared. No commit (the deletion's)."""
    project = db.get(Project, model.project_id)
    if project is None:
        return
    for name, current in list_(db=db, project=project):
        if current is None or current.id != model.id:
            continue
        target = _previous(db, project, name, model.id)
        reason = f"v{model.version} ({model.id}) was deleted; " + (
            f"back to v{target.version}, the previous model of this alias"
            if target is not None
            else "no earlier model of this alias is left, so it is empty"
        )
        _move(db, project, name, target, actor=actor, action="model-deleted", reason=reason)


# --- promotion --------------------------------------------------------------------------


def project_now(*, db: Session, project_id: str) -> tuple[set[str], int]:
    """The classes of the project's labeled images (its declared classes when none is
    labeled) and how many labeled images it holds."""
    counts = dict(
        db.execute(
            select(Image.label, func.count())
            .where(Image.project_id == project_id, Image.label.is_not(None))
            .group_by(Image.label)
        ).all()
    )
    classes = set(counts)
    if not classes:
        project = db.get(Project, project_id)
        classes = {c.name for c in project.classes} if project is not None else set()
    return classes, sum(counts.values())


def _stale(db: Session, current: Model) -> str | None:
    """Why ``current`` is stale against its project now, or None when it is not."""
    classes, labeled = project_now(db=db, project_id=current.project_id)
    if set(current.classes) != classes:
        added, gone = sorted(classes - set(current.classes)), sorted(set(current.classes) - classes)
        parts = [f"new classes {added}" if added else "", f"classes gone {gone}" if gone else ""]
        return f"trained on other classes than the project has now ({', '.join(p for p in parts if p)})"
    if current.labeled_images is not None and current.labeled_images < labeled:
        return (
            f"trained on {current.labeled_images} labeled images, the project now holds {labeled}"
        )
    return None


def _flaw(model: Model) -> str | None:
    """Why ``model`` should not replace a stale production model, or None."""
    metrics = model.metrics or {}
    if metrics.get("negative_transfer"):
        return "is flagged negative_transfer (it scored below its baseline)"
    baseline = metrics.get("baseline") or {}
    mine, theirs = metrics.get("accuracy"), baseline.get("accuracy")
    if isinstance(mine, int | float) and isinstance(theirs, int | float) and mine <= theirs:
        return (
            f"does not beat its baseline {baseline.get('name', '')} (accuracy "
            f"{mine:.3f} <= {theirs:.3f})"
        )
    return None


def _beats(model: Model) -> str:
    metrics = model.metrics or {}
    baseline = metrics.get("baseline") or {}
    mine, theirs = metrics.get("accuracy"), baseline.get("accuracy")
    if isinstance(mine, int | float) and isinstance(theirs, int | float):
        return f"beats its baseline {baseline.get('name', '')} ({mine:.3f} > {theirs:.3f})"
    return "has no baseline to beat and is not flagged negative_transfer"


def promote_trained(*, db: Session, job: Job, model: Model) -> dict[str, Any]:
    """Apply the job's ``promote`` policy to its new ``model``; record the outcome on both.

    ``always`` moves ``production``; ``never`` leaves it; ``auto`` moves it when the
    project has none, or when the current one is stale (trained on another class set than
    the project has now, or on fewer labeled images than it holds now) and the new model
    is not flagged ``negative_transfer`` and beats its own baseline. No commit."""
    project = db.get(Project, model.project_id)
    assert project is not None
    policy = job.promote or "auto"
    current = db.get(Model, project.default_model_id) if project.default_model_id else None
    new = f"v{model.version}"
    if current is not None and current.id == model.id:
        promoted, reason = True, f"{new} is already production"
    elif policy == "never":
        promoted = False
        reason = "promote: never" + (
            f"; production stays v{current.version}"
            if current is not None
            else f"; production stays empty (PUT /v1/projects/{project.id}/aliases/production)"
        )
    elif policy == "always":
        promoted, reason = True, "promote: always"
    elif current is None:
        promoted, reason = True, "the project had no production model"
    elif (stale := _stale(db, current)) is None:
        promoted = False
        reason = (
            f"production v{current.version} is up to date (same classes and labeled images "
            f"as the project now); promote: always, or PUT /v1/projects/{project.id}/aliases/"
            "production, moves it"
        )
    elif (flaw := _flaw(model)) is not None:
        promoted, reason = (
            False,
            f"production v{current.version} is stale ({stale}), but {new} {flaw}",
        )
    else:
        promoted = True
        reason = f"production v{current.version} was stale ({stale}) and {new} {_beats(model)}"
    outcome: dict[str, Any] = {
        "promoted": promoted,
        "policy": policy,
        "reason": reason,
        "alias": PRODUCTION,
        "previous_model_id": current.id if current is not None else None,
        "previous_version": current.version if current is not None else None,
    }
    if promoted:
        actor = Actor(f"job {job.id} (promote: {policy})", project.tenant_id)
        _move(db, project, PRODUCTION, model, actor=actor, action="promotion", reason=reason)
    job.promotion = dict(outcome)
    model.promotion = dict(outcome)
    return outcome
