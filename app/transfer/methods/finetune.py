"""``finetune``: train all or some blocks of the pretrained network, starting from the probe.

Linear-probe-then-finetune (Kumar et al., 2022, "Fine-Tuning can Distort Pretrained
Features"): the classifier starts from the linear-probe solution, so early gradients do
not wreck the features, and the backbone moves with a smaller learning rate
(``lr * backbone_lr_mult``) than the head. ``trainable`` picks what moves: ``head``,
``last_n_blocks`` (with ``n``), ``all``, or block names (``stem``, ``blocks.3`` ...) —
intermediate blocks alone ("flex-tuning") suit a changed input style such as photo ->
line drawing. Frozen blocks stay bit-identical, BatchNorm statistics included (their
BatchNorm layers stay in eval mode while the rest trains).

Loss: cross-entropy :math:`-\\log \\mathrm{softmax}(f_\\theta(x))_y` with AdamW and a cosine
schedule; mixed precision (bf16) on CUDA. The training images are split (stratified,
``holdout_fraction``) into a training part :math:`T` and selection images :math:`S`.

Never below its starting point. The start :math:`\\theta_0` is the pretrained backbone with
the linear probe fitted on :math:`T` as its head; it is measured on :math:`S` as epoch 0,
and an epoch must beat it there (accuracy, then cross-entropy) to be kept; early stopping
keeps the best epoch :math:`\\theta_1` (patience ``patience``). Then WiSE-FT (Wortsman et
al., 2022, "Robust fine-tuning of zero-shot models") mixes the two in weight space,

.. math:: \\theta(\\alpha) = (1-\\alpha)\\,\\theta_0 + \\alpha\\,\\theta_1,
   \\qquad \\alpha \\in \\{0\\} \\cup \\texttt{wise\\_alphas},

every floating tensor (head, moving blocks, their BatchNorm statistics; frozen blocks are
equal in both). The best :math:`\\alpha > 0` on :math:`S` (accuracy, then cross-entropy,
ties to the smaller :math:`\\alpha`) replaces the probe (:math:`\\alpha = 0`) only when it
wins a paired sign test on :math:`S`: with :math:`w` images it gets right and the probe
not, and :math:`l` the reverse, :math:`z = (w - l)/\\sqrt{w + l} > ` ``min_gain_z`` (1 by
default: with 10 selection images, one lucky image is not enough). Otherwise the model *is*
the linear probe — the baseline below, fitted on all training images (:math:`T \\cup S`),
on the untouched shared backbone (no backbone tensors are stored) — and its metrics say so:
``selected: "probe"``, ``selected_epoch: 0``, ``wise_alpha: 0``; ``selection`` lists every
candidate's selection accuracy and loss and the sign test. ``probe_candidate=False`` and
``wise_alphas=[1]`` give plain early-stopped finetuning.

Honesty: the model is measured on the ``test`` split, or else on a stratified holdout that
neither training nor selection sees (``validation="holdout"``). Its ``baseline`` is
the linear probe trained and measured on exactly the same split, and ``negative_transfer``
says whether finetuning did worse than that probe. The default "none of the above"
threshold ``reject_below`` is chosen on those same measured images by
:func:`~app.transfer.evaluation.reject_threshold`, as for every other method.
"""

from __future__ import annotations

import copy
import math
from typing import Any, ClassVar

import numpy as np
import torch
from pydantic import Field, field_validator

from app.transfer.artifacts import TrainedModel
from app.transfer.backbones import Backbone, load_backbone, require_trainable
from app.transfer.data import Progress, TrainingData, no_progress
from app.transfer.evaluation import classification_metrics, reject_threshold, stratified_holdout
from app.transfer.methods import register_method
from app.transfer.methods.base import MAX_GRID, Method, MethodParams, frozen_features
from app.transfer.methods.linear_probe import LinearProbe, LinearProbeParams
from app.transfer.preprocess import decode_image, eval_transform
from app.transfer.training import (
    ImageDataset,
    TrainingParams,
    device_for_training,
    interpolate_states,
    predict,
    run_epochs,
    split_classifier,
    train_transform,
)


class FinetuneParams(TrainingParams, MethodParams):
    probe_candidate: bool = Field(
        True,
        description="The linear probe (the starting point) is a candidate of the selection: "
        "it is the model unless a finetuned candidate beats it on the selection images.",
    )
    wise_alphas: list[float] = Field(
        default_factory=lambda: [0.25, 0.5, 0.75, 1.0],
        min_length=1,
        max_length=MAX_GRID,
        description="WiSE-FT mixings tried, (1-a)*start + a*finetuned (1 = the finetuned "
        "weights alone); the probe is a = 0.",
    )
    min_gain_z: float = Field(
        1.0,
        ge=0,
        le=10,
        description="A finetuned candidate replaces the probe only when its paired sign-test "
        "z over the probe on the selection images exceeds this (0: any strict gain).",
    )

    @field_validator("wise_alphas")
    @classmethod
    def _alphas_in_unit_interval(cls, v: list[float]) -> list[float]:
        if any(not 0 < a <= 1 for a in v):
            raise ValueError("every mixing must be in (0, 1]; the probe (0) is `probe_candidate`")
        return sorted(set(v))


def paired_gain(y: np.ndarray, base: np.ndarray, other: np.ndarray) -> dict[str, float]:
    """Sign test of ``other``'s predictions over ``base``'s on the same images: ``wins``
    (other right, base wrong), ``losses`` (the reverse) and
    :math:`z = (w - l) / \\sqrt{w + l}` (0 when they never disagree)."""
    wins = int(((other == y) & (base != y)).sum())
    losses = int(((other != y) & (base == y)).sum())
    z = (wins - losses) / math.sqrt(wins + losses) if wins + losses else 0.0
    return {"wins": wins, "losses": losses, "z": round(z, 4)}


def choose_candidate(
    y: np.ndarray,
    candidates: dict[float, np.ndarray],
    min_gain_z: float | None,
) -> tuple[float, dict[str, Any]]:
    """Pick a mixing ``alpha`` from ``candidates`` (alpha -> selection probabilities (N, C)).

    The best finetuned candidate (``alpha > 0``) is the one of highest accuracy, then lowest
    cross-entropy, ties going to the smaller alpha. When ``candidates`` holds the probe
    (``alpha`` 0) and ``min_gain_z`` is given, that candidate must beat the probe by a
    paired sign-test ``z > min_gain_z``; otherwise the probe (0) is chosen. Returns the
    alpha and a report of every candidate.
    """
    rows = []
    for alpha, probs in sorted(candidates.items()):
        loss = float(-np.log(np.clip(probs[np.arange(len(y)), y], 1e-12, None)).mean())
        acc = float((probs.argmax(1) == y).mean())
        rows.append({"alpha": alpha, "val_accuracy": acc, "val_loss": round(loss, 5)})
    report: dict[str, Any] = {"n": len(y), "candidates": rows}
    finetuned = [r for r in rows if r["alpha"] > 0]
    if not finetuned:
        return 0.0, report
    best = finetuned[0]
    for r in finetuned[1:]:
        if (r["val_accuracy"], -r["val_loss"]) > (best["val_accuracy"], -best["val_loss"]):
            best = r
    if 0.0 in candidates and min_gain_z is not None:
        gain = paired_gain(y, candidates[0.0].argmax(1), candidates[best["alpha"]].argmax(1))
        report["gain_over_probe"] = {"alpha": best["alpha"], **gain, "min_z": min_gain_z}
        if not gain["z"] > min_gain_z:
            return 0.0, report
    return float(best["alpha"]), report


@register_method
class Finetune(Method):
    name = "finetune"
    summary = "Train all or some blocks from pretrained weights (linear-probe-then-finetune)."
    Params = FinetuneParams
    backbone_training = True
    example_params: ClassVar[dict[str, Any]] = {
        "trainable": "last_n_blocks",
        "n": 2,
        "epochs": 10,
        "lr": 0.001,
    }

    def check_data(self, data: TrainingData) -> None:
        super().check_data(data)
        require_trainable(data.backbone)

    def fit(
        self,
        data: TrainingData,
        params: MethodParams | None = None,
        progress: Progress = no_progress,
    ) -> TrainedModel:
        p: FinetuneParams = params if isinstance(params, FinetuneParams) else FinetuneParams()
        labeled = self.labeled_set(data)
        classes, samples, y, is_test = labeled.classes, labeled.samples, labeled.y, labeled.is_test
        if is_test.any():
            protocol, eval_idx, pool = (
                "test-split",
                np.flatnonzero(is_test),
                np.flatnonzero(~is_test),
            )
        else:
            protocol = "holdout"
            pool, eval_idx = stratified_holdout(
                np.flatnonzero(~is_test), y, p.holdout_fraction, p.seed
            )
        train_idx, val_idx = stratified_holdout(pool, y, p.holdout_fraction, p.seed + 1)
        select = len(val_idx) > 0
        probe_candidate = p.probe_candidate and p.linear_probe_init and select

        # The baseline: the linear probe on the same split (all of ``pool``). The starting
        # head is the probe of the training part alone, so that the selection images judge
        # the start and the finetuned candidates alike, none of them having seen those.
        progress(0.0, "linear probe baseline")
        _, feats = frozen_features(data, samples)
        probe = LinearProbe().fit_head(feats[pool], y[pool], len(classes), LinearProbeParams())
        start_head = (
            LinearProbe().fit_head(
                feats[train_idx], y[train_idx], len(classes), LinearProbeParams()
            )
            if select
            else probe
        )
        with torch.inference_mode():
            probe_probs = probe(torch.from_numpy(feats[eval_idx])).softmax(-1).numpy()
        probe_pred = probe_probs.argmax(1)

        device = device_for_training()
        backbone: Backbone = load_backbone(
            data.backbone, weights_dir=data.weights_dir, allow_hub=data.allow_hub
        )
        model = backbone.model
        model.reset_classifier(len(classes))  # type: ignore[operator]
        if p.linear_probe_init:
            with torch.no_grad():
                model.get_classifier().weight.copy_(start_head.linear.weight)  # type: ignore[operator]
                model.get_classifier().bias.copy_(start_head.linear.bias)  # type: ignore[operator]
        model.to(device, memory_format=torch.channels_last)  # type: ignore[call-overload]
        start_state = copy.deepcopy(model.state_dict())

        cfg = backbone.preprocessing
        pil = {i: decode_image(data.load_bytes(samples[i]), max_pixels=data.max_pixels, draft_size=cfg.side * 2)
               for i in np.concatenate([train_idx, val_idx, eval_idx]).tolist()}  # fmt: skip

        def loader(idx: np.ndarray, transform: Any, shuffle: bool) -> Any:
            ds = ImageDataset([pil[i] for i in idx.tolist()], y[idx], transform)
            g = torch.Generator().manual_seed(p.seed)
            return torch.utils.data.DataLoader(
                ds, batch_size=p.batch_size, shuffle=shuffle, generator=g
            )

        train_loader = loader(train_idx, train_transform(cfg, p.augment), shuffle=True)
        val_loader = loader(val_idx, eval_transform(cfg), shuffle=False) if select else None
        history, best_epoch = run_epochs(
            model, train_loader, val_loader, y[val_idx], p, device, progress,
            evaluate_start=probe_candidate,
        )  # fmt: skip

        # WiSE-FT: mixings of the start and the best epoch, the probe (alpha 0) among them.
        alpha, selection = 1.0, None
        if select:
            progress(0.95, "choosing between the probe and the finetuned weights")
            best_state = copy.deepcopy(model.state_dict())
            alphas = ([0.0] if probe_candidate else []) + (p.wise_alphas if best_epoch else [])
            if not p.linear_probe_init:  # a random start is no point to mix with
                alphas = [1.0]
            candidates = {}
            for a in alphas:
                model.load_state_dict(interpolate_states(start_state, best_state, a))
                candidates[a], _ = predict(model, val_loader, device)
            alpha, selection = choose_candidate(
                y[val_idx], candidates, p.min_gain_z if probe_candidate else None
            )
            model.load_state_dict(interpolate_states(start_state, best_state, alpha))
        is_probe = alpha == 0

        progress(0.96, "evaluating")
        if is_probe:  # the model is the baseline probe itself, on the frozen backbone
            eval_probs = probe_probs
        else:
            eval_probs, _ = predict(
                model, loader(eval_idx, eval_transform(cfg), shuffle=False), device
            )
        names = classes
        metrics = classification_metrics(y[eval_idx], eval_probs.argmax(1), names)
        baseline = classification_metrics(y[eval_idx], probe_pred, names)
        split_info = {
            "validation": protocol,
            "n_train": len(train_idx),
            "n_validation": len(eval_idx),
        }
        metrics.update(split_info)
        metrics["reject_below"] = reject_threshold(eval_probs, y[eval_idx])
        metrics["baseline"] = {"name": "linear_probe", **baseline, **split_info}
        metrics["negative_transfer"] = metrics["accuracy"] < baseline["accuracy"]
        metrics["history"] = history
        metrics["best_epoch"] = best_epoch
        metrics["selected"] = "probe" if is_probe else "finetuned"
        metrics["selected_epoch"] = 0 if is_probe else best_epoch
        metrics["wise_alpha"] = alpha
        metrics["selection"] = selection
        metrics["device"] = device.type

        progress(1.0, "done")
        if is_probe:
            return self.trained(
                backbone, classes=classes, head=probe, metrics=metrics, params=p,
                preprocessing=cfg,
            )  # fmt: skip
        state, head = split_classifier(model)
        return self.trained(
            backbone,
            classes=classes,
            head=head,
            metrics=metrics,
            params=p,
            backbone_state=state,
            preprocessing=cfg,
        )
