"""Multi-task learning on real digits: the digit, its parity and multi-label shape tags."""

from __future__ import annotations

import pytest
import torch

from app.errors import LabelSetTooSmall, ProjectHasNoLabelSets, UnknownLabelSet
from app.transfer import Predictor, TrainedModel, TrainingData, get_method
from app.transfer.data import Sample
from tests.factories import digit_images

MULTITASK = get_method("multitask")
LOOPS = {"0", "6", "8", "9"}


def digit_labels(digit: str) -> dict[str, tuple[str, ...]]:
    """``parity`` (one label) and ``shape`` tags: closed loops, and small (< 5) or large."""
    tags = ("loop",) if digit in LOOPS else ()
    tags += ("large",) if int(digit) >= 5 else ("small",)
    return {"parity": ("even" if int(digit) % 2 == 0 else "odd",), "shape": tags}


def multitask_digits(per_class: int, test_per_class: int) -> TrainingData:
    blobs, samples = {}, []
    for split, items in (
        ("auto", digit_images(per_class)),
        ("test", digit_images(test_per_class, offset=per_class)),
    ):
        for label, png in items:
            key = f"{split}-{len(samples)}"
            blobs[key] = png
            samples.append(Sample(key=key, label=label, split=split, labels=digit_labels(label)))
    return TrainingData(
        samples=samples,
        load_bytes=lambda s: blobs[s.key],
        label_sets={"parity": False, "shape": True},
    )


def test_one_shared_model_learns_every_task_and_is_compared_with_single_models() -> None:
    model = MULTITASK.fit(multitask_digits(8, 6))
    m = model.metrics
    assert m["validation"] == "test-split" and m["n_train"] == 80 and m["n_validation"] == 60
    assert set(m["tasks"]) == {"label", "parity", "shape"}
    for name, t in m["tasks"].items():
        key = "micro_f1" if t["multi_label"] else "accuracy"
        print(
            f"\n{name:7s} {key} multitask {t[key]:.3f} | single-task linear probe "
            f"{t['baseline'][key]:.3f} | negative transfer {t['negative_transfer']}"
        )
        assert t["negative_transfer"] == (t[key] < t["baseline"][key])
        assert t["baseline"]["name"] == "single_task_linear_probe"
    # 80 training images: the shared layer is measured honestly against tuned linear probes
    assert m["accuracy"] == m["tasks"]["label"]["accuracy"] >= 0.4  # chance 0.1
    assert m["baseline"]["accuracy"] == m["tasks"]["label"]["baseline"]["accuracy"]
    assert m["tasks"]["parity"]["accuracy"] >= 0.65  # chance 0.5
    shape = m["tasks"]["shape"]
    assert shape["classes"] == ["large", "loop", "small"] and shape["micro_f1"] >= 0.6
    assert set(shape["per_tag"]["loop"]) == {"precision", "recall", "f1", "support"}
    assert shape["per_tag"]["loop"]["support"] == 24  # 0, 6, 8, 9: 6 test images each

    loaded = TrainedModel.from_files(model.to_files().__getitem__)
    x = torch.randn(4, 1280)
    for (spec, p), (spec2, q) in zip(
        model.head.extra_tasks(x), loaded.head.extra_tasks(x), strict=True
    ):
        assert spec == spec2 and torch.allclose(p, q)
    # The served model is the validated one (test split, same seed): one /predict call
    # answers every task, and scoring its answers reproduces the validation metrics.
    test = digit_images(6, offset=8)
    preds = Predictor().predict(
        "m", model.to_files().__getitem__, [png for _, png in test], top_k=2
    )
    truth = [digit_labels(label) for label, _ in test]
    for task, key in (("label", "accuracy"), ("parity", "accuracy")):
        got = [p.label if task == "label" else p.tasks[task].label for p in preds]
        want = [label for label, _ in test] if task == "label" else [t[task][0] for t in truth]
        hits = sum(g == w for g, w in zip(got, want, strict=True))
        assert hits / len(test) == pytest.approx(m["tasks"][task][key], abs=0.02)
    exact = sum(set(p.tasks["shape"].labels or ()) == set(t["shape"]) for p, t in zip(preds, truth, strict=True))  # fmt: skip
    assert exact / len(test) == pytest.approx(shape["exact_match"], abs=0.02)
    assert all(len(p.tasks["shape"].scores) == 2 for p in preds)


def test_label_sets_are_checked_before_training() -> None:
    data = multitask_digits(3, 0)
    with pytest.raises(UnknownLabelSet):
        MULTITASK.check(data, MULTITASK.parse_params({"tasks": ["colour"]}))
    data.label_sets = {}
    with pytest.raises(ProjectHasNoLabelSets):
        MULTITASK.check(data, MULTITASK.parse_params({}))
    data.label_sets = {"parity": False}
    data.samples = [
        Sample(key=s.key, label=s.label, labels={"parity": ("even",)}) for s in data.samples
    ]
    with pytest.raises(LabelSetTooSmall):
        MULTITASK.check(data, MULTITASK.parse_params({}))
