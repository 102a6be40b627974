"""ImageNet's class-text embeddings are prepared once per installation, not per data dir."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from app.transfer import text
from app.transfer.data import TrainingData
from tests.conftest import make_settings


def test_a_second_data_dir_reads_the_installations_embeddings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []

    def fake_embed(encoder, texts, templates, progress, stage):  # type: ignore[no-untyped-def]
        calls.append(len(texts))
        return np.random.default_rng(0).standard_normal((len(texts), 8)).astype(np.float32)

    monkeypatch.setattr(text, "sentence_encoder", lambda location: object())
    monkeypatch.setattr(text, "embed_prompted", fake_embed)
    shared = tmp_path / "installation"
    first = text.imagenet_embeddings("enc", ("{}",), False, [shared, tmp_path / "data-a"])
    assert calls == [1000]
    assert len(list((shared / "text").glob("*.npy"))) == 1
    assert not (tmp_path / "data-a" / "text").exists()

    text._imagenet_cache.clear()  # another process
    second = text.imagenet_embeddings("enc", ("{}",), False, [shared, tmp_path / "data-b"])
    assert calls == [1000]  # not embedded again
    np.testing.assert_array_equal(first, second)


def test_an_unwritable_installation_cache_falls_back_to_the_data_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(text, "sentence_encoder", lambda location: object())
    monkeypatch.setattr(text, "embed_prompted", lambda *a: np.ones((1000, 4), dtype=np.float32))
    blocked = tmp_path / "blocked"
    blocked.write_text("a file, not a folder")
    text._imagenet_cache.clear()
    text.imagenet_embeddings("enc2", ("{}",), False, [blocked, tmp_path / "data"])
    assert len(list((tmp_path / "data" / "text").glob("*.npy"))) == 1
    text._imagenet_cache.clear()


def test_jobs_look_in_the_installation_cache_first(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    data = TrainingData(
        samples=[], load_bytes=bytes, feature_cache_dir=settings.feature_cache_dir,
        shared_cache_dir=settings.shared_cache_dir,
    )  # fmt: skip
    assert data.text_cache_dirs == [settings.shared_cache_dir, settings.feature_cache_dir]
