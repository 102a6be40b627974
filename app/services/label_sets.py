"""Label sets: named labels over a project's images besides their ``label``.

A value is a string (a single-label set, e.g. ``{"is_pigeon": "yes"}``) or a list of
strings (a multi-label set of tags, e.g. ``{"tags": ["bird", "railing"]}``); a set keeps
the kind it was first given. ``null`` removes an image from a set.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import distinct, func, select
from sqlalchemy.orm import Session

from app import strict_json
from app.db.models import Image, ImageLabel, LabelSet, Project
from app.errors import DovecoteError, InvalidLabels, NotFound
from app.services.projects import clean_label

#: set name -> (multi_label, labels); labels ``None`` removes the image from the set
Labels = dict[str, tuple[bool, tuple[str, ...] | None]]
MAX_SETS = 50
MAX_TAGS = 100


def _clean(raw: Any, what: str) -> str:
    if not isinstance(raw, str):
        raise InvalidLabels(f"{what} must be a string, not {raw!r}.", field="labels")
    try:
        return clean_label(raw)
    except DovecoteError as exc:
        raise InvalidLabels(f"{what}: {exc.detail}", field="labels") from None


def parse(raw: str | Mapping[str, Any] | None) -> Labels:
    """Validate ``labels`` (a JSON object, or its text from a multipart form)."""
    if raw is None:
        return {}
    if isinstance(raw, str):
        try:
            raw = strict_json.loads(raw)
        except strict_json.UnsafeJson as exc:
            raise InvalidLabels(f"`labels`: {exc}", field="labels") from None
        except json.JSONDecodeError as exc:
            raise InvalidLabels(f"`labels` is not valid JSON: {exc}.", field="labels") from None
    if not isinstance(raw, Mapping) or len(raw) > MAX_SETS:
        raise InvalidLabels(
            f'`labels` must be a JSON object of at most {MAX_SETS} label sets, e.g. {{"is_pigeon":'
            ' "yes", "tags": ["bird"]}.',
            field="labels",
        )
    out: Labels = {}
    for name, value in raw.items():
        set_name = _clean(name, "A label set name")
        if set_name == "label":
            raise InvalidLabels(
                "`label` is the images' own label, not a label set.", field="labels"
            )
        if value is None:
            out[set_name] = (False, None)
        elif isinstance(value, list) and len(value) <= MAX_TAGS:
            tags = [_clean(v, f"A label of {set_name!r}") for v in value]
            out[set_name] = (True, tuple(sorted(set(tags))))
        else:
            out[set_name] = (False, (_clean(value, f"The label of {set_name!r}"),))
    return out


def project_sets(*, db: Session, project: Project) -> dict[str, LabelSet]:
    rows = db.scalars(select(LabelSet).where(LabelSet.project_id == project.id))
    return {row.name: row for row in rows}


def summaries(*, db: Session, project: Project) -> list[tuple[LabelSet, dict[str, int], int]]:
    """Each set of ``project`` by name, with its labels' image counts and its image count."""
    sets = sorted(project_sets(db=db, project=project).values(), key=lambda s: s.name)
    counts = db.execute(
        select(ImageLabel.label_set_id, ImageLabel.label, func.count())
        .where(ImageLabel.label_set_id.in_([s.id for s in sets]))
        .group_by(ImageLabel.label_set_id, ImageLabel.label)
    )
    rows = db.execute(
        select(ImageLabel.label_set_id, func.count(distinct(ImageLabel.image_id)))
        .where(ImageLabel.label_set_id.in_([s.id for s in sets]))
        .group_by(ImageLabel.label_set_id)
    )
    images = {set_id: n for set_id, n in rows}
    labels: dict[int, dict[str, int]] = {s.id: {} for s in sets}
    for set_id, label, n in counts:
        labels[set_id][label] = n
    return [(s, dict(sorted(labels[s.id].items())), images.get(s.id, 0)) for s in sets]


def delete(*, db: Session, project: Project, name: str) -> None:
    """Delete set ``name`` and every image's value in it; the images themselves stay."""
    row = project_sets(db=db, project=project).get(name)
    if row is None:
        raise NotFound(f"Label set {name!r} not found in this project.")
    db.execute(ImageLabel.__table__.delete().where(ImageLabel.label_set_id == row.id))
    db.delete(row)
    db.commit()


def apply(*, db: Session, project: Project, images: Iterable[Image], labels: Labels) -> None:
    """Set ``labels`` on ``images`` (replacing their values in the sets named), creating
    sets on first use; a value of the other kind than its set's is refused."""
    if not labels:
        return
    sets = project_sets(db=db, project=project)
    for name, (multi, values) in labels.items():
        row = sets.get(name)
        if row is not None and values is not None and row.multi_label != multi:
            kind = "a list of labels" if row.multi_label else "one label (a string)"
            raise InvalidLabels(f"Label set {name!r} takes {kind}.", field="labels")
        if row is None and values is not None:
            row = sets[name] = LabelSet(project_id=project.id, name=name, multi_label=multi)
            db.add(row)
    for image in images:
        for name, (_, values) in labels.items():
            row = sets.get(name)
            if row is None:
                continue
            image.extra_labels = [r for r in image.extra_labels if r.label_set is not row]
            image.extra_labels.extend(ImageLabel(label_set=row, label=v) for v in values or ())
