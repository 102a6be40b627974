from __future__ import annotations

import pytest

from app.errors import InvalidParams, ProjectHasNoLabels, UnknownMethod
from app.transfer import TrainingData, get_method
from app.transfer.data import ClassInfo, Sample
from tests.factories import content_key, digit_images
from tests.transfer.test_methods import digits_data

AUTO = get_method("auto")


def test_auto_scores_every_candidate_on_one_holdout_and_keeps_the_best() -> None:
    data = digits_data(8, test_per_class=3)
    params = AUTO.parse_params({"params": {"finetune": {"epochs": 1, "n": 1}}})
    model = AUTO.fit(data, params)
    m = model.metrics
    candidates = m["candidates"]
    assert set(candidates) == {"linear_probe", "knn", "finetune", "zero_shot"}
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


def _digits(classes: list[int], per_class: int = 8) -> TrainingData:
    items = digit_images(per_class, classes)
    blobs = {content_key(png): png for _, png in items}
    samples = [Sample(key=content_key(png), label=label) for label, png in items]
    return TrainingData(samples=samples, load_bytes=lambda s: blobs[s.key])


def test_auto_never_returns_a_candidate_below_the_probe_it_was_not_asked_for() -> None:
    """Digits 0, 1 and 7 with kNN as the only candidate: on the selection holdout kNN
    scores below the linear probe, so the probe (scored as the floor) is the model."""
    m = AUTO.fit(_digits([0, 1, 7]), AUTO.parse_params({"candidates": ["knn"]})).metrics
    knn, probe = m["candidates"]["knn"], m["candidates"]["linear_probe"]
    assert _score(knn) < _score(probe)  # the situation is real: the only candidate is worse
    assert probe["reference"] is True and "reference" not in knn
    assert knn["n_validation"] == probe["n_validation"] == 6  # the same holdout
    assert m["selected"] == "linear_probe"


def test_auto_gives_a_tie_to_the_probe() -> None:
    """Digits 0 and 1: kNN, listed first, and the probe are both perfect on the holdout;
    the tie goes to the probe."""
    params = AUTO.parse_params({"candidates": ["knn", "linear_probe"]})
    m = AUTO.fit(_digits([0, 1]), params).metrics
    knn, probe = m["candidates"]["knn"], m["candidates"]["linear_probe"]
    assert _score(knn) == _score(probe)  # a real tie on the same holdout
    assert "reference" not in probe  # it was asked for
    assert m["selected"] == "linear_probe"
