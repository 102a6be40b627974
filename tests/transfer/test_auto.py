from __future__ import annotations

import numpy as np
import pytest
import torch

from app.errors import BackboneUnavailable, InvalidParams, ProjectHasNoLabels, UnknownMethod
from app.transfer import TrainingData, get_method
from app.transfer.backbones import file_digest, load_backbone, resolve_weights
from app.transfer.data import ClassInfo, Sample
from app.transfer.features import extract_features
from tests.factories import content_key, digit_images
from tests.transfer.test_methods import digits_data

AUTO = get_method("auto")


def test_auto_scores_every_candidate_on_one_holdout_and_keeps_the_best() -> None:
    data = digits_data(8, test_per_class=3)
    params = AUTO.parse_params({"params": {"finetune": {"epochs": 1, "n": 1}}})
    model = AUTO.fit(data, params)
    m = model.metrics
    candidates = m["candidates"]
    # by default the frozen-feature ones are scored on mobilenetv2_100 too
    on_mobilenet = {"linear_probe@mobilenetv2_100", "knn@mobilenetv2_100"}
    assert set(candidates) == {"linear_probe", "knn", "finetune", "zero_shot", *on_mobilenet}
    non_test = 8 * 4
    for name, c in candidates.items():
        assert c["validation"] == "selection-holdout", name
        assert c["n_validation"] == 8  # the same 25% holdout for every candidate ...
        assert c["n_train"] + c["n_validation"] <= non_test  # ... and never the test split
    best = max(candidates, key=lambda k: (candidates[k]["accuracy"], candidates[k]["macro_f1"]))
    assert m["selected"] == best
    assert _score(candidates[best]) >= _score(candidates["linear_probe"])
    assert model.method == "auto"
    # the refit winner is measured on the real test split
    assert m["validation"] == "test-split" and m["n_validation"] == 12


def test_auto_validates_candidates_up_front() -> None:
    with pytest.raises(UnknownMethod):
        AUTO.parse_params({"candidates": ["linear_probe", "magic"]})
    with pytest.raises(InvalidParams):
        AUTO.parse_params({"candidates": ["auto"]})
    with pytest.raises(InvalidParams):
        AUTO.parse_params({"params": {"finetune": {"epochs": 0}}})


def test_auto_without_images_is_the_zero_shot_model() -> None:
    data = TrainingData(
        samples=[], load_bytes=lambda s: b"", classes=[ClassInfo("cat"), ClassInfo("rocket")]
    )
    AUTO.check_data(data)  # accepted at job creation: the names are enough
    model = AUTO.fit(data)
    m = model.metrics
    assert m["selected"] == "zero_shot" and m["validation"] == "none"
    assert m["candidates"]["linear_probe"]["error"]["code"] == "project_has_no_labels"
    assert model.method == "auto" and model.classes == ["cat", "rocket"]
    with pytest.raises(ProjectHasNoLabels):
        AUTO.fit(data, AUTO.parse_params({"candidates": ["linear_probe", "knn"]}))


def _score(candidate: dict) -> tuple[float, float]:
    """A candidate's selection score, as ``auto`` ranks them."""
    return candidate["accuracy"], candidate["macro_f1"]


def _digits(classes: list[int], per_class: int = 8, test_per_class: int = 0) -> TrainingData:
    """``per_class`` digits of each class, then ``test_per_class`` others in the test split."""
    items = [(label, png, "auto") for label, png in digit_images(per_class, classes)] + [
        (label, png, "test") for label, png in digit_images(test_per_class, classes, per_class)
    ]
    blobs = {content_key(png): png for _, png, _ in items}
    samples = [
        Sample(key=content_key(png), label=label, split=split) for label, png, split in items
    ]
    return TrainingData(samples=samples, load_bytes=lambda s: blobs[s.key])


def test_auto_never_returns_a_candidate_below_the_probe_it_was_not_asked_for() -> None:
    """Digits 0, 1 and 7 with kNN as the only candidate: on the selection holdout kNN
    scores below the linear probe, so the probe (scored as the floor) is the model."""
    params = AUTO.parse_params({"candidates": ["knn"], "backbones": []})
    m = AUTO.fit(_digits([0, 1, 7]), params).metrics
    assert set(m["candidates"]) == {"knn", "linear_probe"}  # `[]`: the job's backbone alone
    knn, probe = m["candidates"]["knn"], m["candidates"]["linear_probe"]
    assert _score(knn) < _score(probe)  # the situation is real: the only candidate is worse
    assert probe["reference"] is True and "reference" not in knn
    assert knn["n_validation"] == probe["n_validation"] == 6  # the same holdout
    assert m["selected"] == "linear_probe"


def test_auto_gives_a_tie_to_the_probe() -> None:
    """Digits 0 and 1: kNN, listed first, and the probe are both perfect on the holdout;
    the tie goes to the probe."""
    params = AUTO.parse_params({"candidates": ["knn", "linear_probe"], "backbones": []})
    m = AUTO.fit(_digits([0, 1]), params).metrics
    knn, probe = m["candidates"]["knn"], m["candidates"]["linear_probe"]
    assert _score(knn) == _score(probe)  # a real tie on the same holdout
    assert "reference" not in probe  # it was asked for
    assert m["selected"] == "linear_probe"


def test_auto_chooses_the_backbone_and_the_model_stands_on_it() -> None:
    """Digits, linear probe and kNN on efficientnet_lite0 (the job's) and on
    mobilenetv2_100: all four scored on one holdout, the model refit on the winner's
    backbone, and that network's features are what its head was trained on."""
    data = digits_data(8, test_per_class=3)
    params = AUTO.parse_params(
        {"candidates": ["linear_probe", "knn"], "backbones": ["mobilenetv2_100"]}
    )
    model = AUTO.fit(data, params)
    m, c = model.metrics, model.metrics["candidates"]
    assert set(c) == {"linear_probe", "knn", "linear_probe@mobilenetv2_100", "knn@mobilenetv2_100"}
    assert {v["n_validation"] for v in c.values()} == {8}  # one holdout for all
    assert c["knn@mobilenetv2_100"]["backbone"] == "mobilenetv2_100"
    assert c["knn@mobilenetv2_100"]["method"] == "knn"
    best = max(c, key=lambda k: (*_score(c[k]), k == "linear_probe"))  # first max: listed first
    assert m["selected"] == best and _score(c[best]) >= _score(c["linear_probe"])
    assert model.backbone == m["selected_backbone"] == c[best]["backbone"]
    assert model.backbone_digest == file_digest(resolve_weights(model.backbone).location)
    assert m["validation"] == "test-split" and m["n_validation"] == 12


def test_auto_moves_to_another_backbone_only_when_it_scores_higher() -> None:
    """Digits 3, 5, 8 and 9 with 6 images each (and 5 test images): on the selection
    holdout the probe on mobilenetv2_100 beats the probe on efficientnet_lite0, so the
    model is that probe on mobilenetv2_100, and serving it (features of that network, its
    head) reproduces the accuracy reported on the test split."""
    data = _digits([3, 5, 8, 9], per_class=6, test_per_class=5)
    params = AUTO.parse_params({"candidates": ["linear_probe"], "backbones": ["mobilenetv2_100"]})
    model = AUTO.fit(data, params)
    m, c = model.metrics, model.metrics["candidates"]
    assert _score(c["linear_probe@mobilenetv2_100"]) > _score(c["linear_probe"])  # real
    assert m["selected"] == "linear_probe@mobilenetv2_100"
    assert model.backbone == "mobilenetv2_100" and model.method == "auto"
    test = [s for s in data.samples if s.split == "test"]
    backbone = load_backbone("mobilenetv2_100")
    X = extract_features(test, backbone=backbone, load_bytes=data.load_bytes, max_pixels=10**8)
    with torch.inference_mode():
        predicted = model.head(torch.from_numpy(X)).argmax(1).numpy()
    served = np.mean([model.classes[p] == s.label for p, s in zip(predicted, test, strict=True)])
    assert served == pytest.approx(m["accuracy"])


def test_auto_backbones_are_checked_up_front() -> None:
    with pytest.raises(InvalidParams):
        AUTO.parse_params({"backbones": ["resnet_from_nowhere"]})
    with pytest.raises(InvalidParams):
        AUTO.parse_params({"backbones": "every"})
    data = digits_data(4)
    with pytest.raises(BackboneUnavailable):  # registered, but its weights need the hub
        AUTO.check(data, AUTO.parse_params({"backbones": ["convnext_tiny"]}))
    available = AUTO.scored_backbones(data, AUTO.parse_params({"backbones": "available"}))
    assert available[0] == "efficientnet_lite0"  # the job's first
    assert {"efficientnet_lite1", "mobilenetv2_100"} <= set(available)
    assert "convnext_tiny" not in available
