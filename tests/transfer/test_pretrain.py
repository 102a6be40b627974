"""``pretrain``: rotation prediction learns a backbone that beats random initialisation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import save_file
from sklearn.datasets import load_digits

from app.errors import TooFewImages
from app.transfer.artifacts import TrainedModel
from app.transfer.backbones import learned_spec, set_learned_lookup
from app.transfer.data import TrainingData
from app.transfer.methods import get_method
from app.transfer.methods.pretrain import PretrainParams
from bench.pretrain_rotation import compare


def test_rotation_pretraining_beats_random_initialisation_on_digits() -> None:
    """Measured: probe 0.685 vs 0.617 (mean of seeds 0-3), every seed better."""
    runs = [compare(unlabeled=300, labeled_per_class=5, epochs=2, seed=s) for s in range(4)]
    gains = [r["pretrained"] - r["random"] for r in runs]
    assert all(r["rotation_accuracy"] > 0.6 for r in runs)  # chance: 0.25
    assert np.mean(gains) > 0.03 and sum(g > 0 for g in gains) >= 3, runs


def _digits(n: int, labeled: bool) -> TrainingData:
    d = load_digits()
    images = [np.kron((d.images[i] * 255 / 16).astype(np.uint8), np.ones((4, 4), np.uint8))
              for i in range(n)]  # fmt: skip
    labels = [str(d.target[i]) if labeled else None for i in range(n)]
    return TrainingData.from_arrays(images, labels)


def test_the_learned_backbone_serves_other_methods(tmp_path: Path) -> None:
    trained = get_method("pretrain").fit(_digits(24, labeled=False), PretrainParams(epochs=1))
    files = trained.to_files()
    again = TrainedModel.from_files(files.__getitem__)
    assert again.backbone_state is not None and again.classes == trained.classes
    assert trained.metrics["n_images"] == 24 and 0 <= trained.metrics["rotation_accuracy"] <= 1
    path = tmp_path / "b.safetensors"
    save_file(again.backbone_state, str(path))
    spec = learned_spec(
        "learned-test", architecture=trained.params["architecture"], weights_file=path,
        preprocessing=again.preprocessing, description="test",
    )  # fmt: skip
    set_learned_lookup(lambda name: spec if name == spec.name else None)
    try:
        data = _digits(40, labeled=True)
        data.backbone = spec.name
        probe = get_method("linear_probe").fit(data)
    finally:
        set_learned_lookup(lambda name: None)
    assert probe.backbone == spec.name and probe.preprocessing == again.preprocessing
    assert probe.backbone_digest != ""


def test_pretrain_needs_a_few_images_but_no_labels() -> None:
    with pytest.raises(TooFewImages):
        get_method("pretrain").check_data(_digits(3, labeled=False))
    get_method("pretrain").check_data(_digits(8, labeled=False))
