"""Finetune's k-fold selection and the L2-SP penalty, on real digit images."""

from __future__ import annotations

import numpy as np
import torch

from app.transfer import get_method
from app.transfer.backbones import load_backbone
from app.transfer.data import Progress, no_progress
from app.transfer.finetune_parts import trainable_parameters
from app.transfer.methods.base import frozen_features
from app.transfer.methods.finetune import SelectionRun, pooled_epoch
from app.transfer.methods.linear_probe import LinearProbe, LinearProbeParams
from app.transfer.preprocess import decode_image
from app.transfer.training import ImageDataset, TrainingParams, run_epochs, train_transform
from tests.factories import digit_images
from tests.transfer.test_methods import digits_data

FT = get_method("finetune")


def recorder(records: list[dict]) -> Progress:
    """A :class:`Progress` that keeps the history records a job would."""

    def progress(fraction: float, stage: str, record: dict | None = None) -> None:
        if record is not None:
            records.append(record)

    return progress


def test_kfold_selection_keeps_the_probe_when_no_candidate_is_clearly_better() -> None:
    data = digits_data(6, test_per_class=3)
    # The head alone at a negligible learning rate: every epoch predicts what the probe does.
    params = {"selection": "k-fold", "folds": 3, "trainable": "head", "epochs": 2, "lr": 1e-7}
    records: list[dict] = []
    model = FT.fit(data, FT.parse_params(params), progress=recorder(records))
    m = model.metrics
    sel = m["selection"]
    assert sel["protocol"] == "k-fold" and sel["folds"] == 3
    assert [(r["fold"], r["epoch"]) for r in records] == [
        (f, e) for f in (1, 2, 3) for e in (0, 1, 2)
    ]
    assert sel["n"] == 24  # every training image is predicted once, out of fold
    assert sel["epochs"][0]["epoch"] == 0  # the start is a candidate epoch
    assert m["selected"] == "probe" and m["wise_alpha"] == 0.0 and m["selected_epoch"] == 0
    if "gain_over_probe" in sel:
        assert sel["gain_over_probe"]["z"] <= sel["gain_over_probe"]["min_z"] == 1.5
    # The model is the probe on all training images, on the untouched shared backbone.
    assert model.backbone_state is None and m["history"] == []
    assert m["n_train"] == 24 and m["accuracy"] == m["baseline"]["accuracy"]
    labeled = data.labeled_set()
    _, X = frozen_features(data, labeled.samples)
    train = ~labeled.is_test
    probe = LinearProbe().fit_head(X[train], labeled.y[train], 4, LinearProbeParams())
    assert torch.equal(model.head.linear.weight, probe.linear.weight)  # type: ignore[union-attr]


def test_kfold_selection_retrains_on_every_image_up_to_the_chosen_epoch() -> None:
    data = digits_data(6, test_per_class=3)
    params = {"selection": "k-fold", "trainable": "last_n_blocks", "n": 1, "epochs": 3,
              "patience": 3, "probe_candidate": False, "wise_alphas": [0.5, 1.0]}  # fmt: skip
    records: list[dict] = []
    model = FT.fit(data, FT.parse_params(params), progress=recorder(records))
    m = model.metrics
    sel = m["selection"]
    assert sel["protocol"] == "k-fold" and [e["epoch"] for e in sel["epochs"]] == [1, 2, 3]
    chosen = max(sel["epochs"], key=lambda e: (e["val_accuracy"], -e["val_loss"]))
    assert sel["epoch"] == chosen["epoch"] == m["best_epoch"] == m["selected_epoch"]
    assert [c["alpha"] for c in sel["candidates"]] == [0.5, 1.0]
    assert m["selected"] == "finetuned" and m["wise_alpha"] in (0.5, 1.0)
    # The final model trained on all 24 images for exactly the chosen number of epochs.
    assert m["n_train"] == 24 and [r["epoch"] for r in m["history"]] == list(
        range(1, m["best_epoch"] + 1)
    )
    assert model.backbone_state is not None
    # The job's history: each fold's epochs as they ended, then the final run's; none of
    # them with the run's own time estimate, which is not the job's.
    folds = [(f, e) for f in (1, 2, 3) for e in (1, 2, 3)]
    final = [("final", e) for e in range(1, m["best_epoch"] + 1)]
    assert [(r["fold"], r["epoch"]) for r in records] == folds + final
    assert all("val_accuracy" in r for r in records[:9]) and "val_accuracy" not in records[-1]
    assert not any("eta_seconds" in r for r in records)


def _moved(l2sp: dict[str, float] | None) -> float:
    """Squared distance of the moving backbone weights from their pretrained values after
    three epochs on digits (seeded: same classifier start, same batches)."""
    model = load_backbone("efficientnet_lite0").model
    torch.manual_seed(0)
    model.reset_classifier(4)  # type: ignore[operator]
    start = {k: v.clone() for k, v in model.state_dict().items()}
    p = TrainingParams(trainable="last_n_blocks", n=1, epochs=3, lr=1e-2, augment=False,
                       l2sp=l2sp)  # type: ignore[arg-type]  # fmt: skip
    items = digit_images(4, [0, 1, 2, 3])
    images = [decode_image(png, max_pixels=10**6) for _, png in items]
    y = np.array([int(label) for label, _ in items])
    cfg = load_backbone("efficientnet_lite0").preprocessing
    loader = torch.utils.data.DataLoader(
        ImageDataset(images, y, train_transform(cfg, False)), batch_size=8, shuffle=True,
        generator=torch.Generator().manual_seed(0),
    )  # fmt: skip
    run_epochs(model, loader, None, y[:0], p, torch.device("cpu"), no_progress)
    names = trainable_parameters(model, "last_n_blocks", 1) - {
        "classifier.weight",
        "classifier.bias",
    }
    state = model.state_dict()
    return float(sum(((state[k] - start[k]) ** 2).sum() for k in names))


def test_l2sp_pulls_the_backbone_toward_its_pretrained_weights() -> None:
    free, pulled = _moved(None), _moved({"alpha": 10.0, "beta": 0.01})
    assert free > 0
    assert pulled < free, (pulled, free)


def test_the_stop_epoch_is_chosen_on_pooled_out_of_fold_predictions() -> None:
    right, wrong = np.array([[0.9, 0.1]]), np.array([[0.2, 0.8]])
    sure = np.array([[0.99, 0.01]])
    y = np.array([0, 0])  # one held-out image per fold
    a = SelectionRun(start={}, probs={0: wrong, 1: right, 2: sure, 3: sure})
    b = SelectionRun(start={}, probs={0: right, 1: wrong, 2: right})  # stopped after epoch 2
    epoch, rows = pooled_epoch(y, [a, b], with_start=True)
    # Epoch 3 is not a candidate (fold b never ran it); 2 gets both right.
    assert [r["epoch"] for r in rows] == [0, 1, 2] and epoch == 2
    assert [r["val_accuracy"] for r in rows] == [0.5, 0.5, 1.0]
    # Equal pooled scores: the earlier epoch; without the start, epoch 0 is no candidate.
    c = SelectionRun(start={}, probs={0: right, 1: right, 2: right})
    assert pooled_epoch(y[:1], [c], with_start=True)[0] == 0
    assert pooled_epoch(y[:1], [c], with_start=False)[0] == 1
