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
not, and :math:`l` the reverse, :math:`z = (w - l)/\\sqrt{w + l} > ` ``min_gain_z`` (1.5 by
default: with 10 selection images, two lucky images are not enough; at 1 the transfer suite's
one finetuned pick at 5 shots lost 0.035 to its probe). Otherwise the model *is*
the linear probe — the baseline below, fitted on all training images (:math:`T \\cup S`),
on the untouched shared backbone (no backbone tensors are stored) — and its metrics say so:
``selected: "probe"``, ``selected_epoch: 0``, ``wise_alpha: 0``; ``selection`` lists every
candidate's selection accuracy and loss and the sign test. ``probe_candidate=False`` and
``wise_alphas=[1]`` give plain early-stopped finetuning.

With ``selection="k-fold"`` the same choices are made on all training images instead of
one carve: :math:`k` = ``folds`` stratified folds, each trained from the probe of its own
training part (early-stopped on its held-out fold) and predicting its held-out images at
every epoch. The stop epoch :math:`e^*` is the best on the pooled out-of-fold predictions
(epochs every fold reached; 0, the start, among them), then each fold's WiSE-FT mixings of
its start and its epoch :math:`e^*` are pooled the same way and face the probe's pooled
predictions in the sign test above (:math:`N` images instead of a fifth of them). A
finetuned choice is then trained once more on every training image from the probe of all
of them, for :math:`e^*` epochs of the same schedule, and mixed at the chosen
:math:`\\alpha`. Cost: up to :math:`k + 1` runs (they share ``max_minutes``), and each
fold's moving weights of every epoch are held in memory until the choice. The job's
history shows every run's epochs as they end, each tagged with its ``fold`` (1 to
:math:`k`, then ``"final"``); the model's ``history`` is the final run's.

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
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import Field, field_validator

from app.transfer.artifacts import TrainedModel
from app.transfer.backbones import Backbone, load_backbone, require_trainable
from app.transfer.data import Progress, TrainingData, no_progress, sub_progress
from app.transfer.evaluation import (
    classification_metrics,
    reject_threshold,
    stratified_folds,
    stratified_holdout,
)
from app.transfer.heads import LinearHead
from app.transfer.logistic import fit_logistic_head
from app.transfer.methods import register_method
from app.transfer.methods.base import MAX_GRID, Method, MethodParams, frozen_features
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
        1.5,
        ge=0,
        le=10,
        description="A finetuned candidate replaces the probe only when its paired sign-test "
        "z over the probe on the selection images exceeds this (0: any strict gain).",
    )

    selection: Literal["holdout", "k-fold"] = Field(
        "holdout",
        description="How the stop epoch and the WiSE-FT mixing are chosen: on one stratified "
        "holdout of `holdout_fraction` (the model is the run trained without it), or on "
        "`folds` stratified folds of the training images with pooled out-of-fold predictions "
        "(then the model is trained on all of them with the chosen settings: folds + 1 "
        "runs, sharing `max_minutes`).",
    )
    folds: int = Field(3, ge=2, le=10, description="Folds of `selection: k-fold`.")

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


def scores(y: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    """Accuracy and mean cross-entropy :math:`-\\log p_y` of ``probs`` (N, C) on ``y``."""
    loss = float(-np.log(np.clip(probs[np.arange(len(y)), y], 1e-12, None)).mean())
    return {"val_accuracy": float((probs.argmax(1) == y).mean()), "val_loss": round(loss, 5)}


@dataclass
class SelectionRun:
    """One fold's training: its start weights, the probabilities of every validation pass
    by epoch (0: the start) and the moving tensors after each epoch."""

    start: dict[str, torch.Tensor]
    probs: dict[int, np.ndarray] = field(default_factory=dict)
    states: dict[int, dict[str, torch.Tensor]] = field(default_factory=dict)


def pooled_epoch(
    y: np.ndarray, runs: list[SelectionRun], with_start: bool
) -> tuple[int, list[dict[str, float]]]:
    """The stop epoch on the folds' pooled out-of-fold probabilities (``y``: the folds'
    labels in order): highest accuracy, then lowest cross-entropy, ties to the earlier
    epoch, among the epochs every fold ran (0, the start, only ``with_start``). Returns it
    and every epoch's pooled scores."""
    last = min(max(r.probs) for r in runs)
    rows = [
        {"epoch": e, **scores(y, np.concatenate([r.probs[e] for r in runs]))}
        for e in range(0 if with_start else 1, last + 1)
    ]
    best = max(rows, key=lambda r: (r["val_accuracy"], -r["val_loss"]))
    return int(best["epoch"]), rows


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
    rows = [{"alpha": alpha, **scores(y, probs)} for alpha, probs in sorted(candidates.items())]
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
        if p.selection == "k-fold":
            splits = stratified_folds(pool, y, p.folds, p.seed + 1)
        else:
            train_idx, val_idx = stratified_holdout(pool, y, p.holdout_fraction, p.seed + 1)
            splits = [(train_idx, val_idx)] if len(val_idx) else []
        probe_candidate = p.probe_candidate and p.linear_probe_init and bool(splits)

        # The baseline: the linear probe on the same split (all of ``pool``). Each selection
        # run starts from the probe of its own training part, so that its selection images
        # judge the start and the finetuned candidates alike, none of them having seen those.
        progress(0.0, "linear probe baseline")
        _, feats = frozen_features(data, samples)

        def probe_of(idx: np.ndarray) -> LinearHead:
            return fit_logistic_head(feats[idx], y[idx], len(classes))

        probe = probe_of(pool)
        with torch.inference_mode():
            probe_probs = probe(torch.from_numpy(feats[eval_idx])).softmax(-1).numpy()

        device = device_for_training()
        backbone: Backbone = load_backbone(
            data.backbone, weights_dir=data.weights_dir, allow_hub=data.allow_hub
        )
        model = backbone.model
        model.reset_classifier(len(classes))  # type: ignore[operator]
        model.to(device, memory_format=torch.channels_last)  # type: ignore[call-overload]
        pretrained = copy.deepcopy(model.state_dict())

        def start_from(head: LinearHead) -> dict[str, torch.Tensor]:
            """Pretrained weights with ``head`` (LP-FT) or the random classifier; returns them."""
            model.load_state_dict(pretrained)
            if p.linear_probe_init:
                with torch.no_grad():
                    model.get_classifier().weight.copy_(head.linear.weight)  # type: ignore[operator]
                    model.get_classifier().bias.copy_(head.linear.bias)  # type: ignore[operator]
            return copy.deepcopy(model.state_dict())

        cfg = backbone.preprocessing
        pil = {i: decode_image(data.load_bytes(samples[i]), max_pixels=data.max_pixels, draft_size=cfg.side * 2)
               for i in np.concatenate([pool, eval_idx]).tolist()}  # fmt: skip

        def loader(idx: np.ndarray, train: bool = False) -> Any:
            transform = train_transform(cfg, p.augment) if train else eval_transform(cfg)
            ds = ImageDataset([pil[i] for i in idx.tolist()], y[idx], transform)
            g = torch.Generator().manual_seed(p.seed)
            return torch.utils.data.DataLoader(
                ds, batch_size=p.batch_size, shuffle=train, generator=g
            )

        def mixings(start: dict[str, torch.Tensor], end: dict[str, torch.Tensor],
                    alphas: list[float], idx: np.ndarray) -> dict[float, np.ndarray]:  # fmt: skip
            """Probabilities on ``idx`` of each WiSE-FT mixing of ``start`` and ``end``."""
            out = {}
            for a in alphas:
                model.load_state_dict(interpolate_states(start, end, a))
                out[a], _ = predict(model, loader(idx), device)
            return out

        # WiSE-FT mixings of the start and the chosen epoch; a random start is none to mix with.
        alphas = p.wise_alphas if p.linear_probe_init else [1.0]
        if p.selection == "k-fold" and splits:
            k = len(splits)
            share = p.model_copy(update={"max_minutes": p.max_minutes / (k + 1)})
            runs = []
            for f, (tr, va) in enumerate(splits):
                fold = sub_progress(
                    progress, f / (k + 1), (f + 1) / (k + 1), f"fold {f + 1}/{k}: ",
                    tag={"fold": f + 1},
                )  # fmt: skip
                start = start_from(probe_of(tr))
                train, val = loader(tr, train=True), loader(va)
                runs.append(
                    self._selection_run(
                        model, start, train, val, y[va], share, device, probe_candidate, fold
                    )
                )
            progress(k / (k + 1), "choosing between the probe and the finetuned weights")
            y_sel = np.concatenate([y[va] for _, va in splits])
            best_epoch, epochs = pooled_epoch(y_sel, runs, probe_candidate)
            candidates = (
                {0.0: np.concatenate([r.probs[0] for r in runs])} if probe_candidate else {}
            )
            if best_epoch:
                pooled = [
                    mixings(r.start, r.start | r.states[best_epoch], alphas, va)
                    for r, (_, va) in zip(runs, splits, strict=True)
                ]
                candidates |= {a: np.concatenate([m[a] for m in pooled]) for a in alphas}
            alpha, selection = choose_candidate(
                y_sel, candidates, p.min_gain_z if probe_candidate else None
            )
            selection.update(protocol="k-fold", folds=k, epochs=epochs, epoch=best_epoch)
            history: list[dict[str, Any]] = []
            train_idx = pool
            if alpha:  # the chosen settings, trained on every selection image
                start = start_from(probe)
                history, _ = run_epochs(
                    model, loader(pool, train=True), None, y[:0], share, device,
                    sub_progress(progress, k / (k + 1), 1.0, "final: ", tag={"fold": "final"}),
                    stop_after=best_epoch,
                )  # fmt: skip
                model.load_state_dict(interpolate_states(start, model.state_dict(), alpha))
        else:
            train_idx, val_idx = splits[0] if splits else (pool, pool[:0])
            start = start_from(probe_of(train_idx) if splits else probe)
            val_loader = loader(val_idx) if splits else None
            history, best_epoch = run_epochs(
                model, loader(train_idx, train=True), val_loader, y[val_idx], p, device,
                progress, evaluate_start=probe_candidate,
            )  # fmt: skip
            alpha, selection = 1.0, None
            if splits:  # the probe (alpha 0) and the mixings with the best epoch
                progress(0.95, "choosing between the probe and the finetuned weights")
                best = copy.deepcopy(model.state_dict())
                tried = ([0.0] if probe_candidate else []) + (alphas if best_epoch else [])
                alpha, selection = choose_candidate(
                    y[val_idx], mixings(start, best, tried, val_idx),
                    p.min_gain_z if probe_candidate else None,
                )  # fmt: skip
                selection["protocol"] = "holdout"
                model.load_state_dict(interpolate_states(start, best, alpha))
        is_probe = alpha == 0

        progress(0.96, "evaluating")
        if is_probe:  # the model is the baseline probe itself, on the frozen backbone
            eval_probs = probe_probs
        else:
            eval_probs, _ = predict(model, loader(eval_idx), device)
        names = classes
        metrics = classification_metrics(y[eval_idx], eval_probs.argmax(1), names)
        baseline = classification_metrics(y[eval_idx], probe_probs.argmax(1), names)
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

    @staticmethod
    def _selection_run(
        model: torch.nn.Module,
        start: dict[str, torch.Tensor],
        train_loader: Any,
        val_loader: Any,
        y_val: np.ndarray,
        p: FinetuneParams,
        device: torch.device,
        evaluate_start: bool,
        progress: Progress,
    ) -> SelectionRun:
        """One fold: train from ``start`` (already loaded) under ``p``'s early stopping,
        keeping every validation pass's probabilities and the moving tensors of each epoch."""
        run = SelectionRun(start=start)

        def keep(epoch: int, probs: np.ndarray) -> None:
            run.probs[epoch] = probs
            if epoch:
                moving = {n for n, q in model.named_parameters() if q.requires_grad}
                run.states[epoch] = {
                    k: v.detach().clone()
                    for k, v in model.state_dict().items()
                    if k in moving
                    or not v.is_floating_point()
                    or k.endswith(("running_mean", "running_var"))
                }

        run_epochs(model, train_loader, val_loader, y_val, p, device, progress,
                   evaluate_start=evaluate_start, on_eval=keep)  # fmt: skip
        return run
