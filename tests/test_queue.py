"""The Celery configuration: the embedded SQL broker's polling interval, Redis untouched."""

from __future__ import annotations

from pathlib import Path

from app.config import Settings
from app.queue import TRAIN_QUEUE, TRAIN_TASK, SQLTransport, enqueue_training, make_celery


def test_sql_broker_polls_at_the_configured_interval_and_delivers(tmp_path: Path) -> None:
    url = f"sqla+sqlite:///{tmp_path / 'broker.sqlite'}"
    enqueue_training(url, "job-1", 0.05)
    celery = make_celery(url, 0.05)
    with celery.connection_for_read() as conn:
        assert isinstance(conn.transport, SQLTransport)
        assert conn.transport.polling_interval == 0.05
        queue = conn.SimpleQueue(TRAIN_QUEUE)
        message = queue.get(timeout=5)
        assert message.headers["task"] == TRAIN_TASK
        assert message.headers["argsrepr"] == "['job-1']"
        message.ack()
        queue.close()


def test_redis_broker_keeps_its_options() -> None:
    celery = make_celery("redis://127.0.0.1:6379/0", 0.05)
    assert celery.conf.broker_transport_options == {"visibility_timeout": 3600}
    assert celery.conf.broker_url == "redis://127.0.0.1:6379/0"
    assert not celery.conf.broker_transport


def test_poll_interval_defaults_below_kombus_second(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)  # type: ignore[call-arg]
    assert settings.broker_poll_seconds <= 0.1
    celery = make_celery(settings.resolved_broker_url, settings.broker_poll_seconds)
    assert celery.conf.broker_transport_options == {"polling_interval": 0.1}
