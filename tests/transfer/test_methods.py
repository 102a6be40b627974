"""Methods on real images (scikit-learn digits), from a notebook-style entry point."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import app.transfer.features as features
from app.errors import ClassTooSmall, InvalidParams, ProjectHasNoLabels
from app.transfer import Predictor, TrainedModel, TrainingData, get_method
from app.transfer.data import Sample
from tests.factories import content_key, digit_images

CLASSES = [0, 1, 2, 3]


def digits_data(per_class: int, test_per_class: int = 0, **kwargs: object) -> TrainingData:
    train = digit_images(per_class, CLASSES)
    test = digit_images(test_per_class, CLASSES, offset=per_class) if test_per_class else []
    blobs = {}
    samples = []
    for items, split in ((train, "auto"), (test, "test")):
        for label, png in items:
            key = content_key(png)
            blobs[key] = png
            samples.append(Sample(key=key, label=label, split=split))
    return TrainingData(samples=samples, load_bytes=lambda s: blobs[s.key], **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("method", "params"),
    [("linear_probe", {}), ("knn", {}), ("knn", {"mode": "prototype"})],
)
def test_method_beats_chance_on_held_out_digits(method: str, params: dict) -> None:
    impl = get_method(method)
    model = impl.fit(digits_data(10, test_per_class=5), impl.parse_params(params))
    m = model.metrics
    assert m["validation"] == "test-split"
    assert m["n_train"] == 40 and m["n_validation"] == 20
    assert m["accuracy"] >= 0.6, m["accuracy"]  # chance is 0.25
    assert m["baseline"]["accuracy"] == pytest.approx(0.25)
    assert model.classes == ["0", "1", "2", "3"]


def test_without_test_split_metrics_come_from_kfold() -> None:
    model = get_method("linear_probe").fit(digits_data(6))
    assert model.metrics["validation"] == "k-fold"
    assert model.metrics["folds"] == 5
    assert model.metrics["n_validation"] == 24


def test_artifact_round_trip_serves_identical_probabilities() -> None:
    model = get_method("linear_probe").fit(digits_data(6))
    files = model.to_files()
    assert set(files) == {"model.json", "head.safetensors"}  # no pickle, no backbone copy
    loaded = TrainedModel.from_files(files.__getitem__)
    x = torch.randn(3, 1280)
    with torch.inference_mode():
        assert torch.equal(model.head(x), loaded.head(x))
    assert loaded.preprocessing == model.preprocessing and loaded.metrics == model.metrics


def test_predictor_shares_one_backbone_across_models() -> None:
    data = digits_data(6)
    a = get_method("linear_probe").fit(data)
    b = get_method("knn").fit(data)
    predictor = Predictor(max_backbones=2, max_heads=8)
    image = digit_images(1, [2], offset=30)[0][1]
    pa = predictor.predict("a", a.to_files().__getitem__, [image])[0]
    pb = predictor.predict("b", b.to_files().__getitem__, [image])[0]
    assert len(predictor.backbones) == 1 and len(predictor.models) == 2
    assert pa.label == "2" and pb.label == "2"
    assert sum(s for _, s in pa.scores) == pytest.approx(1.0, abs=1e-5)


def test_predictor_runs_images_in_chunks_of_batch_size(monkeypatch: pytest.MonkeyPatch) -> None:
    """Forward passes of at most ``batch_size`` images (memory flat in their number), and
    the same answers as one pass."""
    import app.transfer.predictor as predictor_module

    model = get_method("linear_probe").fit(digits_data(6))
    read = model.to_files().__getitem__
    images = [png for _, png in digit_images(2, CLASSES, offset=30)][:7]
    whole = Predictor(batch_size=64).predict("m", read, images)
    passes: list[int] = []
    original = predictor_module.embed_tensors

    def counting(backbone, batch):  # type: ignore[no-untyped-def]
        passes.append(len(batch))
        return original(backbone, batch)

    monkeypatch.setattr(predictor_module, "embed_tensors", counting)
    chunked = Predictor(batch_size=3).predict("m", read, images)
    assert passes == [3, 3, 1]
    assert [p.label for p in chunked] == [p.label for p in whole]
    for a, b in zip(chunked, whole, strict=True):
        assert a.score == pytest.approx(b.score, rel=1e-4)


def test_feature_cache_computes_only_new_images(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    embedded: list[int] = []
    original = features.embed_tensors

    def counting(backbone, batch):  # type: ignore[no-untyped-def]
        embedded.append(len(batch))
        return original(backbone, batch)

    monkeypatch.setattr(features, "embed_tensors", counting)
    get_method("knn").fit(digits_data(3, feature_cache_dir=tmp_path))
    assert sum(embedded) == 12
    embedded.clear()
    get_method("knn").fit(digits_data(4, feature_cache_dir=tmp_path))  # one more per class
    assert sum(embedded) == 4


def test_cached_and_fresh_features_agree(tmp_path: Path) -> None:
    data = digits_data(3, feature_cache_dir=tmp_path)
    first = get_method("linear_probe").fit(data)
    second = get_method("linear_probe").fit(data)  # all from the cache
    assert first.metrics == second.metrics
    assert np.allclose(
        first.head.tensors()["linear.weight"], second.head.tensors()["linear.weight"]
    )


def test_data_requirements_are_typed_errors() -> None:
    impl = get_method("linear_probe")

    def data(labels: list[str]) -> TrainingData:
        samples = [Sample(key=str(i), label=label) for i, label in enumerate(labels)]
        return TrainingData(samples=samples, load_bytes=lambda s: b"")

    with pytest.raises(ProjectHasNoLabels):
        impl.check_data(data(["pigeon"] * 5))
    with pytest.raises(ClassTooSmall):
        impl.check_data(data(["pigeon"] * 5 + ["crow"]))
    with pytest.raises(InvalidParams):
        impl.parse_params({"Cs": []})
    with pytest.raises(InvalidParams):
        get_method("knn").parse_params({"neighbours": 3})
