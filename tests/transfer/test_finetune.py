"""Finetuning on small real images: learns, keeps frozen blocks frozen, cancels, serves."""

from __future__ import annotations

import pytest
import torch

from app.errors import InvalidParams, JobCancelled
from app.transfer import Predictor, TrainedModel, get_method
from app.transfer.backbones import load_backbone
from app.transfer.finetune_parts import trainable_parameters
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
    assert [r["epoch"] for r in m["history"]] == list(range(1, len(m["history"]) + 1))
    assert {"train_loss", "val_accuracy", "seconds", "eta_seconds"} <= set(m["history"][0])
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
    model = FT.fit(digits_data(4), FT.parse_params({"trainable": trainable, "n": 2, "epochs": 1}))
    assert model.backbone_state is not None

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
    model = FT.fit(
        digits_data(6), FT.parse_params({"trainable": "last_n_blocks", "n": 1, "epochs": 2})
    )
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
