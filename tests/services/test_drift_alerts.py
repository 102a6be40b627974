"""`model.drift` is sent once per model and window, even when computations race: the
`drift_alerts` row (inserted or ignored on its key) and the event's deliveries commit
together, on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from app.config import Settings
from app.db.base import utcnow
from app.db.models import DriftAlert, Model, Webhook, WebhookDelivery
from app.db.session import session_scope
from app.services import monitoring
from tests.conftest import make_settings, migrate
from tests.factories import model_row, project_row

RACERS = 8


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.integration)])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    urls = request.getfixturevalue("postgres_redis") if request.param == "postgres" else {}
    settings = make_settings(tmp_path, **urls)
    migrate(settings)
    return settings


def _model(url: str) -> str:
    """A project, a model and a webhook for model.drift; the model's id."""
    with session_scope(url) as db:
        project = project_row(db, [])
        _, model = model_row(db, project, ["a"], 0, {})
        db.add(Webhook(tenant_id=project.tenant_id, project_id=project.id,
                       url="http://127.0.0.1:9/", events=["model.drift"], secret="s"))  # fmt: skip
        return model.id


def _race(url: str, model_id: str, windows: list[dict]) -> list[int]:
    """``RACERS`` threads, each with its own session, alerting on ``windows`` at once."""
    barrier = threading.Barrier(RACERS)
    sent: list[int] = []  # per racer: how many windows it alerted on
    errors: list[BaseException] = []
    now = utcnow()

    def racer() -> None:
        try:
            with session_scope(url) as db:
                model = db.get(Model, model_id)
                assert model is not None
                barrier.wait()
                sent.append(monitoring.alert(db=db, model=model, window="day", windows=windows,
                                             now=now, threshold=0.05, pixel_threshold=0.12))  # fmt: skip
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=racer) for _ in range(RACERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    assert len(sent) == RACERS
    return sent


def test_racing_computations_send_each_window_once(database: Settings) -> None:
    url = database.resolved_database_url
    model_id = _model(url)
    day = monitoring.window_start(utcnow(), "day")
    windows = [
        {"start": day - timedelta(days=d), "end": day - timedelta(days=d - 1), "drift": flagged,
         "drift_score": score, "drift_score_pixels": 0.01, "predictions": 30, "images": 30,
         "rejection_rate": 0.0}
        for d, flagged, score in ((2, False, 0.01), (1, True, 0.3), (0, True, 0.2))
    ]  # fmt: skip
    # The first round sends both flagged windows once, later rounds nothing.
    assert [sum(_race(url, model_id, windows)) for _ in range(3)] == [2, 0, 0]
    with session_scope(url) as db:
        alerts = db.execute(select(DriftAlert.window_start, DriftAlert.drift_score)).all()
        deliveries = db.scalar(select(func.count()).select_from(WebhookDelivery))
    assert sorted(score for _, score in alerts) == [0.2, 0.3]
    assert deliveries == 2
