"""The ``auto`` promotion rule on hand-made rows: stale production, negative transfer,
baselines (no training needed)."""

from __future__ import annotations

from typing import Any

import pytest

from app.config import Settings
from app.db.models import Image
from app.db.session import session_scope
from app.services import aliases
from tests.factories import model_row, project_row

GOOD = {"accuracy": 0.9, "baseline": {"name": "majority_class", "accuracy": 0.4}}


@pytest.mark.parametrize(
    ("metrics", "promoted", "words"),
    [
        (GOOD, True, "beats its baseline majority_class (0.900 > 0.400)"),
        ({**GOOD, "negative_transfer": True}, False, "flagged negative_transfer"),
        ({"accuracy": 0.4, "baseline": {"name": "probe", "accuracy": 0.4}}, False, "does not beat"),
        ({"accuracy": 0.5}, True, "no baseline to beat"),
    ],
)
def test_auto_promotes_over_a_stale_production_only_a_sound_model(
    settings: Settings, metrics: dict[str, Any], promoted: bool, words: str
) -> None:
    with session_scope(settings.resolved_database_url) as db:
        project = project_row(db, ["a", "a", "b", "b", "c"])
        job, old = model_row(db, project, ["a", "b"], 4, GOOD)
        assert aliases.promote_trained(db=db, job=job, model=old)["promoted"] is True
        job, new = model_row(db, project, ["a", "b", "c"], 5, metrics)
        outcome = aliases.promote_trained(db=db, job=job, model=new)
        assert outcome["promoted"] is promoted, outcome
        assert "production v1 " in outcome["reason"] and "new classes ['c']" in outcome["reason"]
        assert words in outcome["reason"], outcome
        assert job.promotion == new.promotion == outcome
        assert project.default_model_id == (new.id if promoted else old.id)


def test_auto_leaves_an_up_to_date_production_and_unknown_counts_alone(
    settings: Settings,
) -> None:
    with session_scope(settings.resolved_database_url) as db:
        project = project_row(db, ["a", "a", "b", "b"])
        job, old = model_row(db, project, ["a", "b"], 4, GOOD)
        aliases.promote_trained(db=db, job=job, model=old)
        job, new = model_row(db, project, ["a", "b"], 4, GOOD)
        assert aliases.promote_trained(db=db, job=job, model=new)["promoted"] is False
        old.labeled_images = None  # a model from before counts were recorded: not stale by count
        db.add(Image(project_id=project.id, filename="x.png", label="a", format="png", width=1,
                     height=1, size_bytes=1, sha256="f" * 64))  # fmt: skip
        job, newer = model_row(db, project, ["a", "b"], 5, GOOD)
        assert aliases.promote_trained(db=db, job=job, model=newer)["promoted"] is False
        old.labeled_images = 4
        job, newest = model_row(db, project, ["a", "b"], 5, GOOD)
        outcome = aliases.promote_trained(db=db, job=job, model=newest)
        assert outcome["promoted"] is True and "now holds 5" in outcome["reason"], outcome
        assert (newest.version, project.last_model_version) == (4, 4)
