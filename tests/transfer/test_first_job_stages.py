"""No silent stretches: the slow first-time steps report their stages and progress."""

from __future__ import annotations

from app.transfer.methods import base
from app.transfer.text import _imagenet_cache, imagenet_embeddings, resolve_text_encoder


class Recorder:
    def __init__(self) -> None:
        self.seen: list[tuple[float, str]] = []

    def __call__(self, fraction: float, stage: str, record: object = None) -> None:
        self.seen.append((fraction, stage))


def test_loading_a_backbone_reports_its_steps_once() -> None:
    base._SHARED.clear()
    first, again = Recorder(), Recorder()
    backbone = base.shared_backbone("efficientnet_lite0", None, False, first)
    assert [s for _, s in first.seen] == [
        "loading backbone efficientnet_lite0: reading its weights",
        "loading backbone efficientnet_lite0: preparing its inference graph",
        "loading backbone efficientnet_lite0: ready",
    ]
    assert [f for f, _ in first.seen] == [0.0, 0.5, 1.0]
    assert base.shared_backbone("efficientnet_lite0", None, False, again) is backbone
    assert again.seen == []  # shared: nothing to load, nothing to report


def test_embedding_imagenet_class_names_reports_progress() -> None:
    location = resolve_text_encoder(weights_dir=None, allow_hub=False)
    _imagenet_cache.clear()
    progress = Recorder()
    vectors = imagenet_embeddings(location, ("{}",), False, None, progress)
    assert vectors.shape[0] == 1000
    assert progress.seen[0] == (0.0, "loading the text encoder")
    fractions = [f for f, s in progress.seen if s.startswith("embedding ImageNet")]
    assert len(fractions) == 20 and fractions == sorted(fractions) and fractions[-1] == 1.0
