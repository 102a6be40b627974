"""Domain adaptation on a real shift: MNIST digits (labeled source) -> the 8x8 UCI digits of
scikit-learn (unlabeled target, other writers, scanner and resolution), 10 classes."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load as load_tensors

from app.errors import ClassTooSmall, SourceHasNoLabels, TargetHasNoImages
from app.transfer import Predictor, TrainedModel, TrainingData, get_method
from app.transfer.backbones import load_backbone
from app.transfer.data import Sample, no_progress
from app.transfer.domain import ALGORITHMS, ON_ADABN
from app.transfer.domain.adabn import estimate_statistics
from app.transfer.domain.base import accuracy, fit_linear
from app.transfer.domain.coral import coral_transform
from app.transfer.domain.dann import GradientReverse, grl_schedule
from app.transfer.domain.gap import proxy_a_distance
from app.transfer.domain.reverse_validation import choose, reverse_validate, tied
from app.transfer.domain.self_training import pseudo_labels
from app.transfer.evaluation import stratified_holdout
from app.transfer.methods.domain_adaptation import problem
from app.transfer.preprocess import load_for_model
from bench.domain_adaptation import PAIRS, build, training_data
from tests.factories import digit_domain_pair, digit_images

DA = get_method("domain_adaptation")
#: One configuration each for DANN and self-training, two for CORAL: keeps the test short.
PARAMS = {"dann_tradeoff": [0.1], "self_training_share": [0.3]}


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> TrainingData:
    return digit_domain_pair(30, 30, 20, feature_cache_dir=tmp_path_factory.mktemp("features"))


@pytest.fixture(scope="module")
def adapted(pair: TrainingData) -> TrainedModel:
    return DA.fit(pair, DA.parse_params(PARAMS))


def table(m: dict) -> str:
    rows = [f"{'candidate':<14}{'reverse-val':>12}{'target acc':>12}{'gap after':>11}"]
    for name, c in m["candidates"].items():
        rows.append(
            f"{name:<14}{c['reverse_validation']:>12.3f}{c['target_accuracy']:>12.3f}"
            f"{c['domain_gap_after']:>11.2f}"
        )
    gap = m["domain_gap"]
    rows.append(
        f"selected {m['selected']} {m['selected_config']}: target accuracy {m['accuracy']:.3f} "
        f"vs source-only {m['source_only']['accuracy']:.3f} "
        f"(margin {m['accuracy'] - m['source_only']['accuracy']:+.3f}); "
        f"proxy A-distance {gap['before']:.2f} -> {gap['after']:.2f}"
    )
    return "\n".join(rows)


def chosen_by(m: dict, selection: str) -> str:
    """What ``selection`` picks, recomputed from the evidence a model reports."""
    scores, n_holdout = (
        m["reverse_validation"]["by_algorithm"],
        m["reverse_validation"]["n_source_holdout"],
    )
    gaps = {a: c["domain_gap_after"] for a, c in m["candidates"].items()}
    if selection == "reverse_validation":
        return choose(scores, gaps, n_holdout)
    assert selection == "coral_unless_dominated"
    agreed = {a: c["ensemble_agreement"] for a, c in m["candidates"].items()}
    a_c, s_c, n_target = agreed["coral"], scores["coral"], m["n_target_unlabeled"]
    better = {
        a: s for a, s in scores.items()
        if agreed[a] > a_c + math.sqrt(a_c * (1 - a_c) / n_target)
        and s > s_c + math.sqrt(s_c * (1 - s_c) / n_holdout)
    }  # fmt: skip
    return choose(better, gaps, n_holdout) if better else "coral"


def test_adaptation_beats_source_only_on_mnist_to_uci_digits(
    adapted: TrainedModel, capsys: pytest.CaptureFixture[str]
) -> None:
    m = adapted.metrics
    with capsys.disabled():
        print("\n" + table(m))
    assert m["validation"] == "test-split" and m["n_validation"] == 200 and m["n_train"] == 300
    assert m["n_target_unlabeled"] == 300
    assert set(m["candidates"]) == {"source_only", "coral", "dann", "self_training", *ON_ADABN}
    assert m["baseline"] == m["source_only"] and m["source_only"]["name"] == "source_only"
    # CORAL or DANN beats source-only on the target test labels, by a clear margin ...
    best_aligned = max(m["candidates"][a]["target_accuracy"] for a in ("coral", "dann"))
    assert best_aligned >= m["candidates"]["source_only"]["target_accuracy"] + 0.05
    # ... so does AdaBN, alone (its statistics close most of the domain gap) and combined ...
    adabn = m["candidates"]["adabn"]
    assert adabn["target_accuracy"] >= m["candidates"]["source_only"]["target_accuracy"] + 0.05
    assert adabn["domain_gap_after"] <= m["domain_gap"]["before"] - 1.0
    # ... and the default chooser, which never saw a target label, picked a winner over it:
    # CORAL, unless a candidate beats it beyond noise in both agreement with the ensemble
    # and reverse-validation score.
    rv = m["reverse_validation"]
    by_rv, n_holdout = rv["by_algorithm"], rv["n_source_holdout"]
    assert rv["tied"] == tied(by_rv, n_holdout)
    assert m["selected"] == chosen_by(m, "coral_unless_dominated")
    assert m["selected"] not in {"source_only", "self_training"}
    assert all(0.0 <= c["ensemble_agreement"] <= 1.0 for c in m["candidates"].values())
    assert m["accuracy"] >= m["source_only"]["accuracy"] + 0.05
    assert m["negative_transfer"] is False
    # A real gap, measured before and after.
    assert m["domain_gap"]["before"] >= 1.5
    assert 0.0 <= m["domain_gap"]["after"] <= 2.0
    assert all(0.0 <= s <= 1.0 for s in by_rv.values())
    assert len(m["candidates"]["coral"]["configs"]) == 2


def test_target_test_labels_never_train_or_select(
    pair: TrainingData, adapted: TrainedModel
) -> None:
    test = [i for i, s in enumerate(pair.samples) if s.split == "test"]
    labels = np.random.default_rng(1).permutation([pair.samples[i].label for i in test])
    samples = list(pair.samples)
    for i, label in zip(test, labels, strict=True):
        samples[i] = dataclasses.replace(samples[i], label=str(label))
    shuffled = DA.fit(dataclasses.replace(pair, samples=samples), DA.parse_params(PARAMS))
    a, b = adapted.metrics, shuffled.metrics
    assert b["selected"] == a["selected"] and b["selected_config"] == a["selected_config"]
    assert b["reverse_validation"] == a["reverse_validation"]
    assert b["domain_gap"] == a["domain_gap"]
    for name, t in adapted.head.tensors().items():
        assert torch.equal(t, shuffled.head.tensors()[name]), name
    assert b["accuracy"] != a["accuracy"]  # only the report moved


def test_the_old_reverse_validation_chooser_stays_a_param(
    pair: TrainingData, adapted: TrainedModel
) -> None:
    """``selection: reverse_validation`` chooses by the score (ties to the smaller gap) over
    the same candidates and evidence as the default."""
    m = DA.fit(pair, DA.parse_params({**PARAMS, "selection": "reverse_validation"})).metrics
    assert m["reverse_validation"] == adapted.metrics["reverse_validation"] | {
        "selected": m["reverse_validation"]["by_algorithm"][m["selected"]]
    }
    assert m["selected"] == chosen_by(m, "reverse_validation")
    assert m["candidates"] == adapted.metrics["candidates"]


def test_served_artifact_predicts_target_images(adapted: TrainedModel) -> None:
    files = adapted.to_files()
    adabn = adapted.metrics["selected"] in ON_ADABN  # serves the target's BatchNorm statistics
    assert set(files) == {"model.json", "head.safetensors"} | (
        {"backbone.safetensors"} if adabn else set()
    )
    loaded = TrainedModel.from_files(files.__getitem__)
    assert loaded.metrics == adapted.metrics and loaded.classes == [str(c) for c in range(10)]
    test = digit_images(20, offset=30, smooth=True)  # the pair's target test images
    preds = Predictor().predict("da", files.__getitem__, [png for _, png in test], top_k=3)
    assert len(preds) == 200 and all(len(p.scores) == 3 for p in preds)
    served = np.mean([p.label == label for p, (label, _) in zip(preds, test, strict=True)])
    assert served == pytest.approx(adapted.metrics["accuracy"], abs=0.011)


def test_adabn_artifact_holds_only_its_statistics_and_serves_the_reported_accuracy(
    pair: TrainingData,
) -> None:
    """An AdaBN model stores its BatchNorm statistics and head, not the pretrained network;
    served from those files it reproduces the reported target accuracy, and an artifact
    holding the whole network (as AdaBN models were stored before) predicts the same."""
    model = DA.fit(pair, DA.parse_params({"algorithm": "adabn"}))
    m = model.metrics
    assert m["selected"] == "adabn" and model.backbone_delta
    files = model.to_files()
    manifest = json.loads(files["model.json"])
    assert manifest["finetuned_backbone"] and manifest["backbone_delta"]
    state = load_tensors(files["backbone.safetensors"])
    assert state and all(".running_" in k or k.endswith(".num_batches_tracked") for k in state)
    assert len(files["backbone.safetensors"]) < 300_000  # the network is ~19 MB
    test = digit_images(20, offset=30, smooth=True)  # the pair's target test images
    pngs = [png for _, png in test]
    preds = Predictor().predict("adabn", files.__getitem__, pngs, top_k=1)
    served = np.mean([p.label == label for p, (label, _) in zip(preds, test, strict=True)])
    assert served == pytest.approx(m["accuracy"], abs=0.011)
    assert m["accuracy"] > m["source_only"]["accuracy"]  # the statistics are what serve

    network = load_backbone("efficientnet_lite0").model
    network.reset_classifier(0)
    network.load_state_dict(state, strict=False)  # an old artifact: every tensor, no flag
    old = dataclasses.replace(model, backbone_state=network.state_dict(), backbone_delta=False)
    old_files = old.to_files()
    assert len(old_files["backbone.safetensors"]) > 50 * len(files["backbone.safetensors"])
    assert not json.loads(old_files["model.json"])["backbone_delta"]
    old_preds = Predictor().predict("old", old_files.__getitem__, pngs, top_k=1)
    assert [p.label for p in old_preds] == [p.label for p in preds]
    for a, b in zip(old_preds, preds, strict=True):
        assert a.score == pytest.approx(b.score, abs=1e-4)

    other = dict(files, **{"model.json": files["model.json"].replace(
        model.backbone_digest.encode(), b"0" * len(model.backbone_digest)
    )})  # fmt: skip
    with pytest.raises(RuntimeError, match="weights changed"):  # statistics need their weights
        Predictor().predict("moved", other.__getitem__, pngs[:1])


def test_reverse_validation_ties_go_to_the_candidate_with_the_smaller_domain_gap(
    tmp_path: Path,
) -> None:
    """Inverted textures (the bench's pair, seed 0): three easy classes, so on the 12
    held-out source images every candidate's reverse model scores 1.0. The best score alone
    kept the first listed, source-only; the tie goes to the candidate whose source and target
    features lie closest after adaptation, and it reads the target test images better."""
    pair = build(PAIRS["textures-inverted"], 20, 20, 15, seed=0)
    data, _ = training_data(pair, tmp_path)
    pb = problem(data, load_backbone("efficientnet_lite0"), no_progress)
    task, params = pb.task, DA.parse_params({})
    s_train, s_hold = stratified_holdout(task.source, task.y, 0.2, 0)
    forward = dataclasses.replace(task, source=s_train, y=task.y[s_train])
    scores, gaps, target = {}, {}, {}
    for name in ("source_only", "coral", "self_training"):
        rv = reverse_validate(
            ALGORITHMS[name], forward, s_hold, task.y[s_hold], params.grid(name)[0], 0
        )
        scores[name], target[name] = rv.score, accuracy(rv.forward, task.pool, pb.test, pb.y_test)
        gaps[name] = proxy_a_distance(*rv.forward.aligned(), seed=0)
    print(f"\nscores {scores}\ngaps {gaps}\ntarget accuracy {target}")
    assert len(s_hold) == 12 and tied(scores, len(s_hold)) == list(scores)  # a real tie
    assert max(scores, key=scores.__getitem__) == "source_only"  # the best score alone
    chosen = choose(scores, gaps, len(s_hold))
    assert gaps[chosen] == min(gaps.values()) < gaps["source_only"]
    assert target[chosen] > target["source_only"]


def test_scores_within_one_standard_error_tie() -> None:
    """40 held-out images, best 0.9: one standard error is sqrt(0.9 * 0.1 / 40) = 0.047."""
    scores = {"a": 0.9, "b": 0.86, "c": 0.85, "d": 0.7}
    assert tied(scores, 40) == ["a", "b"]
    assert tied(scores, 40, k=0.0) == ["a"]
    assert choose(scores, {"a": 1.5, "b": 0.4, "c": 0.1, "d": 0.0}, 40) == "b"
    assert choose(scores, {"a": 0.2, "b": 0.2, "c": 0.0, "d": 0.0}, 40) == "a"  # then score
    assert choose({"a": 1.0, "b": 1.0}, {"a": 0.3, "b": 0.3}, 12) == "a"  # then by order


def test_adabn_moves_batchnorm_statistics_to_the_target_moments() -> None:
    """Inverted UCI digits (light background): after the pass, the first BatchNorm layer's
    running mean and variance are the per-channel moments of its input on those images,
    far from ImageNet's; no weight moved."""
    backbone = load_backbone("efficientnet_lite0")
    network = backbone.model
    x = torch.stack([
        load_for_model(png, backbone.preprocessing, max_pixels=10**6)
        for _, png in digit_images(2, smooth=True)
    ])  # fmt: skip
    x = 1.0 - x  # inverted: white paper, dark ink
    weights = {k: v.clone() for k, v in network.named_parameters()}
    bn = network.bn1
    before = bn.running_mean.clone(), bn.running_var.clone()
    with torch.no_grad():
        stem = network.conv_stem(x)  # the first BatchNorm's input
    estimate_statistics(network, [x])
    mean, var = stem.mean(dim=(0, 2, 3)), stem.var(dim=(0, 2, 3), unbiased=True)
    assert torch.allclose(bn.running_mean, mean, atol=1e-4, rtol=1e-4)
    assert torch.allclose(bn.running_var, var, atol=1e-4, rtol=1e-3)
    assert (bn.running_mean - before[0]).abs().max() > 0.1
    assert not network.training and not bn.training and bn.momentum == 0.1
    assert all(torch.equal(v, weights[k]) for k, v in network.named_parameters())


def test_dann_can_finetune_the_last_block_and_serves_it() -> None:
    data = digit_domain_pair(4, 4, 0)
    data = dataclasses.replace(
        data, samples=[s for s in data.samples if s.label in (None, "0", "1")]
    )
    params = DA.parse_params({
        "algorithm": "dann", "dann_finetune_blocks": 1, "dann_epochs": [1],
        "dann_tradeoff": [1.0], "dann_batch_size": 4, "source_holdout_fraction": 0.25,
    })  # fmt: skip
    model = DA.fit(data, params)
    m = model.metrics
    assert m["selected"] == "dann" and m["selected_config"]["finetune_blocks"] == 1
    assert m["validation"] == "source-holdout"
    assert "no_target_test_labels" in {w["code"] for w in m["warnings"]}
    assert model.backbone_state is not None and model.head.head_type == "mlp"
    files = model.to_files()
    assert "backbone.safetensors" in files
    predictor = Predictor()
    pred = predictor.predict("dann", files.__getitem__, [digit_images(1, [1], offset=50)[0][1]])
    assert pred[0].label in {"0", "1"}
    assert ("efficientnet_lite0", "finetuned:dann") in predictor.backbones._data


def test_data_requirements_are_typed_errors() -> None:
    def data(*samples: tuple[str | None, str, str]) -> TrainingData:
        return TrainingData(
            samples=[
                Sample(key=str(i), label=label, domain=domain, split=split)
                for i, (label, domain, split) in enumerate(samples)
            ],
            load_bytes=lambda s: b"",
        )

    target = [(None, "target", "auto")] * 2
    with pytest.raises(SourceHasNoLabels):  # labeled target images are not a source
        DA.check_data(data(*[("a", "target", "auto"), ("b", "target", "auto")] * 2, *target))
    with pytest.raises(ClassTooSmall):
        DA.check_data(data(("a", "source", "auto"), *[("b", "source", "auto")] * 2, *target))
    source = [("a", "source", "auto"), ("b", "source", "auto")] * 2
    with pytest.raises(TargetHasNoImages):  # target test images do not count
        DA.check_data(data(*source, ("a", "target", "test"), ("b", "target", "test")))
    DA.check_data(data(*source, *target))


def test_gradient_reversal_and_lambda_schedule() -> None:
    x = torch.ones(3, requires_grad=True)
    (GradientReverse.apply(x, 0.5) * torch.tensor([1.0, 2.0, 3.0])).sum().backward()
    assert torch.equal(x.grad, torch.tensor([-0.5, -1.0, -1.5]))  # type: ignore[arg-type]
    values = [grl_schedule(p) for p in np.linspace(0, 1, 11)]
    assert values[0] == 0.0 and values[-1] == pytest.approx(1.0, abs=1e-4)
    assert values == sorted(values)


def test_proxy_a_distance_separates_near_from_far() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(200, 20)), rng.normal(size=(200, 20))
    assert proxy_a_distance(a, b) < 0.5
    assert proxy_a_distance(a, b + 3.0) == 2.0


def test_coral_matches_target_mean_and_covariance() -> None:
    rng = np.random.default_rng(0)
    Xs = rng.normal(size=(300, 6)) @ rng.normal(size=(6, 6))
    Xt = rng.normal(size=(400, 6)) @ rng.normal(size=(6, 6)) + 2.0
    Z = coral_transform(Xs, Xt, 1e-9)
    assert np.allclose(Z.mean(axis=0), Xt.mean(axis=0), atol=1e-4)
    assert np.allclose(np.cov(Z, rowvar=False), np.cov(Xt, rowvar=False), atol=1e-3)


def test_linear_fit_never_predicts_a_class_it_did_not_see() -> None:
    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal(size=(20, 5)), rng.normal(size=(20, 5)) + 4])
    head = fit_linear(X.astype(np.float32), np.repeat([0, 2], 20), 4, C=1.0)
    with torch.inference_mode():
        preds = head(torch.from_numpy(rng.normal(size=(50, 5)).astype(np.float32) * 5)).argmax(1)
    assert set(preds.tolist()) <= {0, 2}
    single = fit_linear(X.astype(np.float32), np.full(40, 3), 4, C=1.0)
    assert single(torch.zeros(1, 5)).argmax().item() == 3


def test_class_balanced_pseudo_labels_keep_each_class_share() -> None:
    """80 of 100 target rows predicted class 0 (a shifted source classifier's usual bias):
    the threshold rule hands class 0 nearly every pseudo-label, CBST caps each class at
    share x round/rounds x N/C of its most confident rows."""
    rng = np.random.default_rng(0)
    predicted = np.r_[np.zeros(80, int), np.ones(15, int), np.full(5, 2)]
    probs = np.full((100, 3), 0.05)
    probs[np.arange(100), predicted] = rng.uniform(0.6, 0.9, 100)
    config = {"selection": "class_balanced", "share": 0.6, "rounds": 2}
    first, last = pseudo_labels(probs, config, 1), pseudo_labels(probs, config, 2)
    assert np.bincount(first[first >= 0], minlength=3).tolist() == [10, 10, 5]  # 0.3*100/3
    assert np.bincount(last[last >= 0], minlength=3).tolist() == [20, 15, 5]  # 0.6*100/3
    zeros = np.flatnonzero(predicted == 0)
    kept = np.flatnonzero(first == 0)
    assert probs[kept, 0].min() >= np.sort(probs[zeros, 0])[-10]  # its 10 most confident
    assert (last[last >= 0] == predicted[last >= 0]).all()
    by_threshold = pseudo_labels(probs, {"selection": "threshold", "threshold": 0.7}, 1)
    assert by_threshold.tolist() == np.where(probs.max(1) >= 0.7, predicted, -1).tolist()
