"""Prewarm and honest readiness: ``/readyz`` waits for the default backbone (and, under
``dovecote serve``, the worker); the exported inference graph is cached on disk and reused."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from sqlalchemy import event
from sqlalchemy.engine.interfaces import CacheStats

from app.api.main import create_app, knock_predict_routes
from app.db.session import get_engine, get_sessionmaker, session_scope
from app.services import predict as predict_service
from app.services import tenants
from app.transfer import features
from app.transfer.backbones import DEFAULT_BACKBONE, Backbone, load_backbone
from app.transfer.features import embed_tensors, graph_dir_in, prepare_backbone
from app.transfer.methods import base
from app.transfer.predictor import Predictor
from app.transfer.preprocess import load_for_model
from tests.conftest import fresh_postgres_redis, make_settings, migrate
from tests.factories import model_row, project_row


def _wait_ready(client: TestClient, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while client.get("/readyz").status_code != 200:
        assert time.monotonic() < deadline, client.get("/readyz").json()
        time.sleep(0.05)


def test_readyz_waits_for_the_prewarm_and_the_worker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = make_settings(tmp_path, prewarm=True)
    migrate(settings)
    release = threading.Event()
    monkeypatch.setattr(predict_service, "prewarm", lambda *, settings: release.wait(30))
    worker_up = [False]
    with TestClient(create_app(settings, worker_ready=lambda: worker_up[0])) as client:
        r = client.get("/readyz")
        assert r.status_code == 503 and "default backbone" in r.json()["detail"]
        assert client.get("/healthz").status_code == 200
        release.set()
        deadline = time.monotonic() + 10
        while "backbone" in client.get("/readyz").json().get("detail", ""):
            assert time.monotonic() < deadline
            time.sleep(0.02)
        r = client.get("/readyz")
        assert r.status_code == 503 and "worker" in r.json()["detail"]
        worker_up[0] = True
        assert client.get("/readyz").json() == {"status": "ok"}


def test_a_failed_prewarm_does_not_hold_readiness_forever(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = make_settings(tmp_path, prewarm=True)
    migrate(settings)

    def broken(*, settings: object) -> None:
        raise RuntimeError("no weights")

    monkeypatch.setattr(predict_service, "prewarm", broken)
    with TestClient(create_app(settings)) as client:
        _wait_ready(client, timeout=10)


def test_prewarm_loads_the_default_backbone_and_caches_its_graph(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, prewarm=True)
    migrate(settings)
    with TestClient(create_app(settings)) as client:
        _wait_ready(client)
    predictor = predict_service.get_predictor(settings)
    assert len(predictor.backbones) == 1
    graphs = list(graph_dir_in(settings.feature_cache_dir).glob("*.onnx"))  # type: ignore[union-attr]
    assert len(graphs) == 1 and graphs[0].name.startswith(DEFAULT_BACKBONE)
    [backbone] = predictor.backbones._data.values()
    assert backbone.model in features._compiled


def test_the_cached_graph_is_reused_and_keyed_by_the_weights(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    graph_dir = tmp_path / "onnx"
    Predictor(graph_dir=graph_dir).prewarm(DEFAULT_BACKBONE)
    [graph] = graph_dir.glob("*.onnx")
    written = graph.stat().st_mtime_ns

    def no_export(*args: object, **kwargs: object) -> bytes:
        raise AssertionError("exported again")

    monkeypatch.setattr(features, "to_onnx", no_export)
    backbone = Predictor(graph_dir=graph_dir).prewarm(DEFAULT_BACKBONE)  # another process
    assert backbone.model in features._compiled
    assert graph.stat().st_mtime_ns == written

    # Other weights (a finetuned copy) have another key: never the base's graph.
    other = load_backbone(DEFAULT_BACKBONE)
    with torch.no_grad():
        next(other.model.parameters()).add_(0.01)
    monkeypatch.undo()
    prepare_backbone(other, graph_dir)
    assert len(list(graph_dir.glob("*.onnx"))) == 2


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_a_first_predict_finds_its_statements_compiled_and_the_warm_up_writes_nothing(
    database: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every statement of the first predict after ``/readyz`` is a hit in the engine's
    compiled cache (the prewarm ran it first), and the prewarm only read."""
    with contextlib.ExitStack() as stack:
        overrides = {}
        if database == "postgresql":
            overrides["database_url"] = stack.enter_context(fresh_postgres_redis())["database_url"]
        settings = make_settings(tmp_path, prewarm=True, **overrides)
        migrate(settings)
        url = settings.resolved_database_url
        with session_scope(url) as db:
            project = project_row(db, ["cat"])
            _, model = model_row(db, project, ["cat", "dog"], labeled=1, metrics={})
            model_id = model.id
        with session_scope(url) as db:
            key = tenants.create_key(db=db, tenant_name="t")
        get_sessionmaker.cache_clear()  # a new engine, its compiled cache empty
        get_engine.cache_clear()
        executed: list[tuple[str, CacheStats]] = []

        def record(conn: object, cursor: object, statement: str, *args: Any) -> None:
            executed.append((statement, args[-2].cache_hit))  # (params, context, executemany)

        event.listen(get_engine(url), "after_cursor_execute", record)
        monkeypatch.setattr(predict_service, "prewarm", lambda *, settings: None)
        app = create_app(settings)
        with TestClient(app) as client:
            _wait_ready(client)
            warm_up = [statement for statement, _ in executed]
            executed.clear()
            r = client.post(
                f"/v1/models/{model_id}/predict",
                files=[("files", ("a.png", b"not an image", "image/png"))],
                headers={"Authorization": f"Bearer {key}"},
            )
        # Read up to the image (its model has no artifact; the route's reads come first).
        assert r.status_code == 422 and "image" in r.json()["code"], r.text
        assert all(s.lstrip().upper().startswith("SELECT") for s in warm_up), warm_up
        assert len(executed) >= 3, executed  # the key, the model, its project
        assert [s for s, hit in executed if hit is not CacheStats.CACHE_HIT] == [], executed
        assert knock_predict_routes(app) == [401, 401]  # it knocks on routes that exist


def test_the_worker_prewarm_runs_a_full_extraction_batch_on_the_jobs_backbone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import worker.celery_app as worker_app

    settings = make_settings(tmp_path, prewarm=True, feature_batch_size=5)
    monkeypatch.setattr(worker_app, "settings", settings)
    monkeypatch.setattr(worker_app, "ready_file", tmp_path / "worker.ready")
    base._SHARED.clear()
    shapes: list[tuple[int, ...]] = []

    def spy(backbone: Backbone, batch: torch.Tensor) -> np.ndarray:
        shapes.append(tuple(batch.shape))
        return embed_tensors(backbone, batch)

    monkeypatch.setattr(features, "embed_tensors", spy)
    worker_app._prewarm_and_report()
    assert (tmp_path / "worker.ready").read_text() == str(os.getpid())
    # The backbone a job's extraction gets, its ONNX session run at the job's batch shape.
    backbone = base.shared_backbone(
        DEFAULT_BACKBONE, settings.weights_dir, settings.allow_hub,
        graph_dir=graph_dir_in(settings.feature_cache_dir),
    )  # fmt: skip
    compiled = features._compiled[backbone.model]
    assert shapes == [(5, *compiled.input_shape)]


def test_only_the_workers_shared_backbones_keep_their_buffers(tmp_path: Path) -> None:
    """Jobs embed one batch at a time: their sessions keep an arena; the API's predicts
    run concurrently, so its sessions give every batch's buffers back."""
    base._SHARED.clear()
    shared = base.shared_backbone(DEFAULT_BACKBONE, None, False)
    served = Predictor().prewarm(DEFAULT_BACKBONE)
    options = [features._compiled[b.model].session.get_session_options() for b in (shared, served)]
    assert [o.enable_cpu_mem_arena for o in options] == [True, False]


def test_the_warm_up_decodes_a_jpeg_through_the_backbones_preprocessing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A first predict decodes and resizes a photo: the warm-up runs that path too (a JPEG
    through the backbone's own preprocessing) before the forward pass, not a zero tensor."""
    backbone = load_backbone(DEFAULT_BACKBONE)
    decoded: list[tuple[bytes, Any]] = []
    batches: list[torch.Tensor] = []

    def spy_load(data: bytes, cfg: Any, *, max_pixels: int) -> torch.Tensor:
        decoded.append((data, cfg))
        return load_for_model(data, cfg, max_pixels=max_pixels)

    def spy_embed(b: Backbone, batch: torch.Tensor) -> np.ndarray:
        batches.append(batch)
        return np.zeros((len(batch), 1), np.float32)

    monkeypatch.setattr(features, "load_for_model", spy_load)
    monkeypatch.setattr(features, "embed_tensors", spy_embed)
    features.warm_up(backbone, 3)
    [(data, cfg)] = decoded
    assert data[:3] == b"\xff\xd8\xff" and cfg == backbone.preprocessing  # a JPEG, its transform
    [batch] = batches
    assert batch.shape == (3, *backbone.preprocessing.input_size)
    assert float(batch.std()) > 0.1  # a decoded photo-like image, not a blank tensor
