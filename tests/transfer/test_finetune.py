"""Finetuning on small real images: learns, keeps frozen blocks frozen, cancels, serves."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from app.errors import InvalidParams, JobCancelled
from app.transfer import Predictor, TrainedModel, get_method
from app.transfer.backbones import load_backbone
from app.transfer.finetune_parts import trainable_parameters
from app.transfer.methods.base import frozen_features
from app.transfer.methods.finetune import FinetuneParams, choose_candidate
from app.transfer.methods.linear_probe import LinearProbe, LinearProbeParams
from app.transfer.training import interpolate_states
from tests.factories import digit_images
from tests.transfer.test_methods import digits_data

FT = get_method("finetune")


def test_finetune_beats_chance_and_reports_the_probe_beside_it() -> None:
    params = FT.parse_params({"trainable": "last_n_blocks", "n": 1, "epochs": 3})
    model = FT.fit(digits_data(10, test_per_class=5), params)
    m = model.metrics
    assert m["validation"] == "test-split" and m["n_validation"] == 20
    assert m["accuracy"] >= 0.6, m["accuracy"]  # chance is 0.25
    assert m["baseline"]["name"] == "linear_probe" and m["baseline"]["validation"] == "test-split"
    assert m["negative_transfer"] == (m["accuracy"] < m["baseline"]["accuracy"])
    # epoch 0 is the starting point (the probe head on the frozen backbone), measured only
    assert [r["epoch"] for r in m["history"]] == list(range(len(m["history"])))
    assert set(m["history"][0]) == {"epoch", "val_accuracy", "val_loss"}
    assert {"train_loss", "val_accuracy", "seconds", "eta_seconds"} <= set(m["history"][1])
    assert m["selected"] in ("probe", "finetuned")
    assert m["wise_alpha"] in [0.0, *FinetuneParams().wise_alphas]
    # the default "none of the above" threshold, chosen on the measured images like evaluate()'s
    assert 0 < m["reject_below"] <= 1
    files = model.to_files()
    images = [png for _, png in digit_images(2, [0, 1], offset=40)]
    preds = Predictor().predict("ft", files.__getitem__, images, reject_below="default")
    assert [p.label is None for p in preds] == [p.score < m["reject_below"] for p in preds]


def test_without_test_split_it_measures_on_an_untouched_holdout() -> None:
    model = FT.fit(digits_data(6), FT.parse_params({"trainable": "head", "epochs": 1}))
    m = model.metrics
    assert m["validation"] == "holdout"
    assert m["n_validation"] == 5 and m["n_train"] + m["n_validation"] < 24  # val carved too


@pytest.mark.parametrize("trainable", ["head", ["blocks.2"], "last_n_blocks"])
def test_frozen_blocks_are_bit_identical_after_training(trainable: object) -> None:
    network = load_backbone("efficientnet_lite0").model
    reference = {k: v.clone() for k, v in network.state_dict().items()}
    params = {"trainable": trainable, "n": 2, "epochs": 1, "probe_candidate": False}
    model = FT.fit(digits_data(4), FT.parse_params(params))
    assert model.backbone_state is not None and model.metrics["selected"] == "finetuned"

    def module_of(key: str) -> str:
        return key.rsplit(".", 1)[0]

    moving_modules = {module_of(n) for n in trainable_parameters(network, trainable, 2)}  # type: ignore[arg-type]
    changed = {k for k, v in model.backbone_state.items() if not torch.equal(v, reference[k])}
    # Weights and BatchNorm statistics change only in modules that train.
    assert {module_of(k) for k in changed} <= moving_modules
    if trainable == "head":
        assert changed == set()
    else:
        assert changed
        assert len({module_of(k) for k in reference}) > len(moving_modules)  # some stayed frozen


def test_bn_eval_keeps_every_batchnorm_statistic_while_the_blocks_train() -> None:
    network = load_backbone("efficientnet_lite0").model
    reference = {k: v.clone() for k, v in network.state_dict().items()}
    params = {"trainable": "last_n_blocks", "n": 2, "epochs": 1, "probe_candidate": False,
              "bn_eval": True}  # fmt: skip
    state = FT.fit(digits_data(4), FT.parse_params(params)).backbone_state
    assert state is not None
    stats = [k for k in state if k.endswith(("running_mean", "running_var"))]
    moving = [k for k in trainable_parameters(network, "last_n_blocks", 2) if k in state]
    assert stats and moving
    assert all(torch.equal(state[k], reference[k]) for k in stats)
    assert any(not torch.equal(state[k], reference[k]) for k in moving)


def test_intermediate_block_names_are_validated() -> None:
    with pytest.raises(InvalidParams, match="Unknown block"):
        FT.fit(digits_data(3), FT.parse_params({"trainable": ["blocks.99"], "epochs": 1}))


def test_cancel_takes_effect_within_one_batch() -> None:
    calls: list[str] = []

    def progress(fraction: float, stage: str, record: object = None) -> None:
        calls.append(stage)
        if stage.startswith("epoch"):
            raise JobCancelled("cancelled by the test")

    with pytest.raises(JobCancelled):
        FT.fit(digits_data(4), FT.parse_params({"epochs": 5}), progress)
    assert sum(s.startswith("epoch") for s in calls) == 1


def test_finetuned_artifact_serves_through_the_shared_predictor() -> None:
    params = {"trainable": "last_n_blocks", "n": 1, "epochs": 2, "probe_candidate": False}
    model = FT.fit(digits_data(6), FT.parse_params(params))
    files = model.to_files()
    assert "backbone.safetensors" in files
    loaded = TrainedModel.from_files(files.__getitem__)
    assert (
        loaded.backbone_state is not None
        and loaded.backbone_state.keys() == model.backbone_state.keys()
    )  # type: ignore[union-attr]
    predictor = Predictor()
    image = digit_images(1, [1], offset=40)[0][1]
    pred = predictor.predict("ft", files.__getitem__, [image], top_k=4)[0]
    assert pred.label in model.classes and len(pred.scores) == 4
    # the finetuned network, not the frozen one, answers
    assert ("efficientnet_lite0", "finetuned:ft") in predictor.backbones._data


def test_when_every_epoch_is_worse_the_model_is_exactly_the_probe() -> None:
    data = digits_data(10, test_per_class=5)
    # A destructive learning rate: every epoch lands below the starting point.
    params = {"trainable": "last_n_blocks", "n": 1, "epochs": 2, "patience": 2, "lr": 1.0,
              "backbone_lr_mult": 10.0}  # fmt: skip
    model = FT.fit(data, FT.parse_params(params))
    m = model.metrics
    start, *epochs = m["history"]
    assert start["epoch"] == 0 and epochs
    assert all(e["val_accuracy"] < start["val_accuracy"] for e in epochs), m["history"]
    assert m["best_epoch"] == 0 and m["selected"] == "probe"
    assert m["selected_epoch"] == 0 and m["wise_alpha"] == 0.0
    (only,) = m["selection"]["candidates"]  # no finetuned epoch to mix with
    assert only["alpha"] == 0.0 and only["val_accuracy"] == start["val_accuracy"]
    # The model is the probe on all training images, on the untouched shared backbone.
    assert model.backbone_state is None
    assert m["accuracy"] == m["baseline"]["accuracy"] and not m["negative_transfer"]
    labeled = data.labeled_set()
    _, X = frozen_features(data, labeled.samples)
    train = ~labeled.is_test
    probe = LinearProbe().fit_head(X[train], labeled.y[train], 4, LinearProbeParams())
    assert torch.equal(model.head.linear.weight, probe.linear.weight)  # type: ignore[union-attr]
    assert torch.equal(model.head.linear.bias, probe.linear.bias)  # type: ignore[union-attr]


def test_wise_interpolation_is_exact_at_the_ends_and_linear_between() -> None:
    start = {"w": torch.zeros(3), "n": torch.tensor(0)}
    end = {"w": torch.tensor([1.0, 2.0, 4.0]), "n": torch.tensor(7)}
    assert torch.equal(interpolate_states(start, end, 0.0)["w"], start["w"])
    assert torch.equal(interpolate_states(start, end, 1.0)["w"], end["w"])
    half = interpolate_states(start, end, 0.25)
    assert torch.allclose(half["w"], torch.tensor([0.25, 0.5, 1.0]))
    assert half["n"].item() == 7  # counters are not mixed


def _probs(pred: list[int], confidence: float, n_classes: int = 2) -> np.ndarray:
    out = np.full((len(pred), n_classes), (1 - confidence) / (n_classes - 1))
    out[np.arange(len(pred)), pred] = confidence
    return out


def test_the_choice_needs_a_clear_paired_gain_over_the_probe() -> None:
    y = np.array([0, 1] * 5)
    probe = _probs([0, 1] * 4 + [1, 0], 0.6)  # 8 of 10
    one_more = _probs([0, 1] * 4 + [0, 0], 0.9)  # 9 of 10: one win, no loss (z = 1)
    two_more = _probs([0, 1] * 5, 0.7)  # 10 of 10: two wins (z = 1.41)
    alpha, report = choose_candidate(y, {0.0: probe, 0.5: one_more}, min_gain_z=1.0)
    assert alpha == 0.0 and report["gain_over_probe"]["z"] == 1.0
    assert choose_candidate(y, {0.0: probe, 0.5: one_more}, min_gain_z=0.0)[0] == 0.5
    alpha, report = choose_candidate(y, {0.0: probe, 0.5: two_more}, min_gain_z=1.0)
    assert alpha == 0.5 and report["gain_over_probe"]["wins"] == 2
    assert [c["alpha"] for c in report["candidates"]] == [0.0, 0.5]
    # Same accuracy: the lower cross-entropy, then the smaller mixing.
    sharper = _probs([0, 1] * 5, 0.95)
    assert choose_candidate(y, {0.0: probe, 0.5: two_more, 1.0: sharper}, 1.0)[0] == 1.0
    assert choose_candidate(y, {0.0: probe, 0.75: two_more, 1.0: two_more}, 1.0)[0] == 0.75
    # Without the probe as a candidate the best finetuned mixing is taken as it is.
    assert choose_candidate(y, {0.5: one_more, 1.0: probe}, None)[0] == 0.5


def test_mixings_are_validated() -> None:
    with pytest.raises(InvalidParams):
        FT.parse_params({"wise_alphas": [0.0, 0.5]})
    assert FT.parse_params({"wise_alphas": [1, 0.5, 0.5]}).wise_alphas == [0.5, 1.0]  # type: ignore[attr-defined]
