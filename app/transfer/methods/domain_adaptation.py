"""``domain_adaptation``: labeled ``source`` images, unlabeled ``target`` images.

Rows: labeled source images (``split`` other than ``test``) train; target images outside
the ``test`` split are the unlabeled target (their labels, if any, are not read); labeled
target images in the ``test`` split only *report* the true target accuracy — they are
never trained on, adapted to, or used to select anything.

Every candidate — ``source_only`` always, then ``coral``, ``dann``, ``self_training`` and,
on a backbone with BatchNorm, ``adabn``, ``adabn_coral`` and ``adabn_self_training`` (all
of them with ``algorithm: auto``, else the one named), each over its hyperparameter grid
(the AdaBN combinations over their inner algorithm's) — is scored by reverse validation
on a stratified source holdout (:mod:`app.transfer.domain.reverse_validation`). The best
configuration of each algorithm is kept; ``auto`` selects among those by ``selection``
(:mod:`app.transfer.domain.selection`), by default CORAL unless another algorithm beats it
beyond noise on both label-free signals: its agreement with the ensemble of all of them on
the target, and its reverse-validation score (among such algorithms, the best score; within
noise of it, the smallest domain gap after adaptation:
:func:`~app.transfer.domain.reverse_validation.choose`). The selection and the
``source_only`` baseline are refit on all source images and measured on the target test
split when there is one (``validation: test-split``), else on the source holdout
(``validation: source-holdout``, with a warning: without target labels no one can say
how well the target is served). The proxy A-distance between source and target features
is measured before adaptation and, after, in the representation the selected classifier
was trained in.
"""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import Field
from torch import nn

from app.errors import ClassTooSmall, InvalidParams, SourceHasNoLabels, TargetHasNoImages
from app.transfer.artifacts import TrainedModel
from app.transfer.backbones import Backbone, load_backbone, require_trainable
from app.transfer.data import Progress, Sample, TrainingData, no_progress, sub_progress
from app.transfer.domain import ALGORITHMS, ON_ADABN, Adapted, DomainStatistics, Pool, Task
from app.transfer.domain.adabn import statistics_state
from app.transfer.domain.base import accuracy, source_only
from app.transfer.domain.gap import proxy_a_distance
from app.transfer.domain.reverse_validation import ReverseValidation, reverse_validate, tied
from app.transfer.domain.selection import CHOOSERS, Evidence, agreement
from app.transfer.evaluation import classification_metrics, stratified_holdout
from app.transfer.features import extract_features
from app.transfer.methods import register_method
from app.transfer.methods.base import MAX_GRID, Method, MethodParams, Seed, shared_backbone
from app.transfer.preprocess import load_for_model

#: A gap at least this large (proxy A-distance, of 2) ...
LARGE_GAP = 1.0
#: ... with source accuracy below this is a warning: the source task itself is hard.
LOW_SOURCE_ACCURACY = 0.7


class DomainAdaptationParams(MethodParams):
    algorithm: Literal[
        "auto",
        "source_only",
        "coral",
        "dann",
        "self_training",
        "adabn",
        "adabn_coral",
        "adabn_self_training",
    ] = Field(
        "auto",
        description="The algorithm, or `auto`: the best by reverse validation "
        "(named in `metrics.selected`). `source_only` is always computed beside it.",
    )
    selection: Literal[
        "ensemble_agreement",
        "reverse_validation",
        "reverse_validation_agreement",
        "agreement_reverse_validation",
        "agreement_median_reverse_validation",
        "coral_unless_dominated",
        "soft_neighborhood_density",
        "entropy",
    ] = Field(
        "coral_unless_dominated",
        description="How `auto` chooses without target labels "
        "(app/transfer/domain/selection.py). Default: CORAL, unless another candidate beats "
        "it by more than one binomial standard error both in agreement with the candidates' "
        "mean on the target (EnsV's) and in reverse-validation score (then the best score "
        "among those; ties within noise to the smaller domain gap). "
        "`agreement_median_reverse_validation`: reverse validation among the candidates "
        "agreeing at least as much as the median one (the earlier default); "
        "`reverse_validation`: reverse validation alone; "
        "`ensemble_agreement`: EnsV, the candidate agreeing most with the mean; "
        "`reverse_validation_agreement`, `agreement_reverse_validation`: one score among the "
        "other's ties; `soft_neighborhood_density` (SND); `entropy`.",
    )
    C: float = Field(
        0.1, gt=0, le=1e4, description="Inverse L2 strength of every linear classifier."
    )
    coral_regularization: list[Annotated[float, Field(ge=0, le=1e4)]] = Field(
        default_factory=lambda: [0.1, 1.0], min_length=1, max_length=MAX_GRID,
        description="CORAL: covariance ridge r (times the mean variance); grid for selection.",
    )  # fmt: skip
    dann_tradeoff: list[Annotated[float, Field(ge=0, le=100)]] = Field(
        default_factory=lambda: [0.1, 1.0], min_length=1, max_length=MAX_GRID,
        description="DANN: the adversarial weight λ (its schedule's end value); grid.",
    )  # fmt: skip
    dann_epochs: list[Annotated[int, Field(ge=1, le=1000)]] = Field(
        default_factory=lambda: [40], min_length=1, max_length=MAX_GRID,
        description="DANN: passes over the larger domain; grid.",
    )  # fmt: skip
    dann_finetune_blocks: int = Field(
        0, ge=0, le=20,
        description="DANN: 0 (default) trains a bottleneck on frozen features; n > 0 also "
        "finetunes the backbone's last n blocks on the images (slow on CPU).",
    )  # fmt: skip
    dann_hidden: int = Field(256, ge=8, le=4096, description="DANN: bottleneck width.")
    dann_lr: float = Field(1e-3, gt=0, le=1)
    dann_batch_size: int = Field(32, ge=2, le=1024, description="Images per domain per step.")
    self_training_selection: Literal["class_balanced", "threshold"] = Field(
        "class_balanced",
        description="Self-training: which target images get pseudo-labels each round: each "
        "class's most confident share (CBST), or all above a confidence threshold.",
    )
    self_training_share: list[Annotated[float, Field(gt=0, le=1)]] = Field(
        default_factory=lambda: [0.15, 0.3], min_length=1, max_length=MAX_GRID,
        description="Self-training, class_balanced: share of the target pseudo-labeled by "
        "the last round (growing linearly over the rounds); grid.",
    )  # fmt: skip
    self_training_threshold: list[Annotated[float, Field(gt=0, le=1)]] = Field(
        default_factory=lambda: [0.7, 0.9], min_length=1, max_length=MAX_GRID,
        description="Self-training, threshold: confidence a pseudo-label needs; grid.",
    )  # fmt: skip
    self_training_rounds: int = Field(3, ge=1, le=20)
    source_holdout_fraction: float = Field(
        0.2, gt=0, lt=0.6, description="Source images held out to score reverse validation."
    )
    seed: Seed = 0

    def grid(self, algorithm: str) -> list[dict[str, Any]]:
        """The configurations of ``algorithm`` that reverse validation chooses among (an
        AdaBN combination: its inner algorithm's)."""
        algorithm = ON_ADABN.get(algorithm, algorithm)
        common: dict[str, Any] = {"C": self.C}
        axes: dict[str, list[Any]] = {
            "source_only": {},
            "coral": {"regularization": self.coral_regularization},
            "dann": {"tradeoff": self.dann_tradeoff, "epochs": self.dann_epochs},
            "self_training": {"threshold": self.self_training_threshold}
            if self.self_training_selection == "threshold"
            else {"share": self.self_training_share},
        }[algorithm]
        fixed: dict[str, Any] = {
            "dann": {
                "finetune_blocks": self.dann_finetune_blocks, "hidden": self.dann_hidden,
                "lr": self.dann_lr, "batch_size": self.dann_batch_size,
                "backbone_lr_mult": 0.1, "weight_decay": 1e-3,
            },
            "self_training": {
                "rounds": self.self_training_rounds, "selection": self.self_training_selection,
            },
        }.get(algorithm, {})  # fmt: skip
        return [
            {**common, **fixed, **dict(zip(axes, values, strict=True))}
            for values in itertools.product(*axes.values())
        ]

    def algorithms(self) -> list[str]:
        chosen = list(ALGORITHMS) if self.algorithm == "auto" else [self.algorithm]
        return ["source_only", *(a for a in chosen if a != "source_only")]


@dataclass
class Problem:
    """A job's rows: the adaptation ``task`` and the labeled target ``test`` rows."""

    classes: list[str]
    task: Task
    test: np.ndarray
    y_test: np.ndarray


@dataclass
class _Best:
    """An algorithm's configuration with the best reverse-validation score."""

    config: dict[str, Any]
    rv: ReverseValidation
    report: dict[str, Any]


def problem(data: TrainingData, backbone: Backbone, progress: Progress) -> Problem:
    """Features of the labeled source, the unlabeled target and the labeled target test."""
    classes = sorted(data.class_counts(domain="source"))
    groups: tuple[list[Sample], list[Sample], list[Sample]] = ([], [], [])
    for s in data.samples:
        if s.domain == "source" and s.split != "test" and s.label in classes:
            groups[0].append(s)
        elif s.domain == "target" and s.split != "test":
            groups[1].append(s)
        elif s.domain == "target" and s.label in classes:
            groups[2].append(s)
    samples = [s for group in groups for s in group]
    feats = extract_features(
        samples, backbone=backbone, load_bytes=data.load_bytes, max_pixels=data.max_pixels,
        batch_size=data.batch_size, cache_dir=data.feature_cache_dir, progress=progress,
    )  # fmt: skip

    def images(rows: np.ndarray) -> torch.Tensor:
        return torch.stack(
            [load_for_model(data.load_bytes(samples[r]), backbone.preprocessing,
                            max_pixels=data.max_pixels) for r in rows.tolist()]
        )  # fmt: skip

    def load_network() -> nn.Module:
        return load_backbone(
            data.backbone, weights_dir=data.weights_dir, allow_hub=data.allow_hub
        ).model

    ns, nt = len(groups[0]), len(groups[1])

    def labels(group: list[Sample]) -> np.ndarray:
        return np.array([classes.index(s.label) for s in group], dtype=np.int64)  # type: ignore[arg-type]

    adabn = None
    if DomainStatistics.applies_to(backbone):  # source rows by the source's statistics,
        adabn = DomainStatistics(  # target and target test rows by the unlabeled target's
            backbone, samples, data.load_bytes,
            [(np.arange(ns), np.arange(ns)), (np.arange(ns, ns + nt), np.arange(ns, len(samples)))],
            served=1, max_pixels=data.max_pixels, batch_size=data.batch_size,
            cache_dir=data.feature_cache_dir,
        )  # fmt: skip
    task = Task(
        Pool(feats, images, load_network, adabn), source=np.arange(ns), y=labels(groups[0]),
        target=np.arange(ns, ns + nt), n_classes=len(classes),
    )  # fmt: skip
    return Problem(classes, task, np.arange(ns + nt, len(samples)), labels(groups[2]))


def public_config(config: dict[str, Any]) -> dict[str, Any]:
    """A configuration as reported: what was searched or set for this algorithm."""
    return {k: v for k, v in config.items() if k not in ("backbone_lr_mult", "weight_decay")}


@register_method
class DomainAdaptation(Method):
    name = "domain_adaptation"
    summary = (
        "Labeled source + unlabeled target images: CORAL, DANN, self-training, AdaBN and "
        "its combinations, chosen by reverse validation."
    )
    Params = DomainAdaptationParams
    example_params: ClassVar[dict[str, Any]] = {"algorithm": "coral"}

    def trains_backbone(self, params: MethodParams) -> bool:
        """DANN with ``dann_finetune_blocks`` trains backbone blocks; the rest is frozen."""
        assert isinstance(params, DomainAdaptationParams)
        return bool(params.dann_finetune_blocks) and params.algorithm in ("auto", "dann")

    def check(self, data: TrainingData, params: MethodParams) -> None:
        self.check_data(data)
        if self.trains_backbone(params):
            require_trainable(data.backbone)
        if params.algorithm in ON_ADABN:  # a network whose statistics can be re-estimated
            require_trainable(data.backbone)

    def check_data(self, data: TrainingData) -> None:
        counts = data.class_counts(domain="source")
        if len(counts) < self.min_classes:
            raise SourceHasNoLabels(
                f"Domain adaptation needs labeled images (domain=source) of at least "
                f"{self.min_classes} classes; the project has {len(counts)}.",
                class_counts=dict(counts),
            )
        small = {c: n for c, n in counts.items() if n < self.min_per_class}
        if small:
            raise ClassTooSmall(
                f"Every source class needs at least {self.min_per_class} images; too few: {small}.",
                class_counts=dict(counts),
            )
        n_target = sum(s.domain == "target" and s.split != "test" for s in data.samples)
        if n_target < 2:
            raise TargetHasNoImages(
                "Domain adaptation needs at least 2 target images (domain=target, split "
                f"auto or train; labels are not used) to adapt to; the project has {n_target}."
            )

    def fit(
        self,
        data: TrainingData,
        params: MethodParams | None = None,
        progress: Progress = no_progress,
    ) -> TrainedModel:
        p = params if isinstance(params, DomainAdaptationParams) else DomainAdaptationParams()
        self.check(data, p)
        progress(0.0, "loading backbone")
        backbone = shared_backbone(data.backbone, data.weights_dir, data.allow_hub)
        pb = problem(data, backbone, sub_progress(progress, 0.0, 0.3))
        task = pb.task
        algorithms = p.algorithms()
        if task.pool.adabn is None:  # a backbone without BatchNorm: AdaBN changes nothing
            if p.algorithm in ON_ADABN:
                raise InvalidParams(
                    f"Backbone {data.backbone!r} has no BatchNorm layers: {p.algorithm} "
                    "cannot re-estimate their statistics. Choose another algorithm or backbone."
                )
            algorithms = [a for a in algorithms if a not in ON_ADABN]
        elif any(a in ON_ADABN for a in algorithms):
            stage = "AdaBN: BatchNorm statistics of each domain"
            progress(0.3, stage)
            task.pool.adabn.features(lambda: progress(0.3, stage))
        sel = _select(pb, p, algorithms, progress)
        scores = {a: b.rv.score for a, b in sel.best.items()}
        gaps_after = {a: c["domain_gap_after"] for a, c in sel.candidates.items()}
        target_probs = {a: b.rv.target_probs for a, b in sel.best.items()}
        for a, agreed in agreement(target_probs).items():
            sel.candidates[a]["ensemble_agreement"] = agreed
        evidence = Evidence(scores, gaps_after, len(sel.holdout), target_probs)
        selected = CHOOSERS[p.selection](evidence) if p.algorithm == "auto" else p.algorithm

        def tick() -> None:
            progress(0.9, f"fitting {selected}")

        tick()
        final = ALGORITHMS[selected](task, sel.best[selected].config, p.seed, tick)
        if len(pb.test):
            baseline = (
                final if selected == "source_only"
                else source_only(task, sel.best["source_only"].config, p.seed, tick)
            )  # fmt: skip
            protocol, rows, truth, n_train = "test-split", pb.test, pb.y_test, len(task.source)
            pick = final
        else:  # the forward models of reverse validation: trained without the holdout
            protocol, rows, truth = "source-holdout", sel.holdout, task.y[sel.holdout]
            n_train = len(task.source) - (0 if sel.no_holdout else len(sel.holdout))
            pick, baseline = sel.best[selected].rv.forward, sel.best["source_only"].rv.forward
        progress(0.95, "measuring")
        split = {"validation": protocol, "n_train": n_train, "n_validation": len(rows),
                 "n_target_unlabeled": len(task.target)}  # fmt: skip

        def measured(model: Adapted) -> dict[str, Any]:
            preds = model.predict(task.pool, rows).argmax(axis=1)
            return {**classification_metrics(truth, preds, pb.classes), **split}

        metrics = measured(pick)
        baseline_metrics = {"name": "source_only", **measured(baseline)}
        gap = {
            "measure": "proxy_a_distance",
            "before": proxy_a_distance(task.source_feats, task.target_feats, seed=p.seed),
            "after": proxy_a_distance(*final.aligned(), seed=p.seed),
        }
        source_accuracy = sel.best[selected].rv.source_accuracy
        metrics.update(
            selected=selected,
            selected_config=public_config(sel.best[selected].config),
            source_only=baseline_metrics,
            baseline=baseline_metrics,
            domain_gap=gap,
            source_accuracy=source_accuracy,
            reverse_validation={
                "selected": sel.best[selected].rv.score,
                "by_algorithm": scores,
                "tied": tied(scores, len(sel.holdout)),
                "n_source_holdout": 0 if sel.no_holdout else len(sel.holdout),
            },
            candidates=sel.candidates,
            warnings=_warnings(gap, source_accuracy, protocol, sel.no_holdout),
        )
        if protocol == "test-split":
            metrics["negative_transfer"] = metrics["accuracy"] < baseline_metrics["accuracy"]
        progress(1.0, "done")
        adabn = selected in ON_ADABN  # the pretrained network but its BatchNorm statistics
        if final.network is None:
            state = None
        elif adabn:
            state = statistics_state(final.network)
        else:
            state = {
                k: v.detach().cpu().clone().contiguous()
                for k, v in final.network.state_dict().items()
            }
        return self.trained(
            backbone,
            classes=pb.classes,
            head=final.head,
            metrics=metrics,
            params=p,
            backbone_state=state,
            backbone_delta=adabn,
        )


@dataclass
class _Selection:
    best: dict[str, _Best]  # algorithm -> its best configuration
    candidates: dict[str, dict[str, Any]]  # the report: every configuration's scores
    holdout: np.ndarray  # the source rows reverse validation scored on
    no_holdout: bool  # too few source images: scored on the training rows


def _select(
    pb: Problem, p: DomainAdaptationParams, algorithms: list[str], progress: Progress
) -> _Selection:
    """Reverse-validate every configuration of ``algorithms`` on one source holdout."""
    task = pb.task
    s_train, s_hold = stratified_holdout(task.source, task.y, p.source_holdout_fraction, p.seed)
    no_holdout = not len(s_hold)
    if no_holdout:
        s_train, s_hold = task.source, task.source
    forward_task = dataclasses.replace(task, source=s_train, y=task.y[s_train])
    runs = [(a, c) for a in algorithms for c in p.grid(a)]
    best: dict[str, _Best] = {}
    candidates: dict[str, dict[str, Any]] = {a: {"configs": []} for a in algorithms}
    for k, (algorithm, config) in enumerate(runs):
        stage, fraction = f"reverse validation: {algorithm}", 0.3 + 0.6 * k / len(runs)
        progress(fraction, stage)
        rv = reverse_validate(
            ALGORITHMS[algorithm], forward_task, s_hold, task.y[s_hold], config, p.seed,
            tick=lambda f=fraction, s=stage: progress(f, s),
        )  # fmt: skip
        report: dict[str, Any] = {
            "config": public_config(config),
            "reverse_validation": rv.score,
            "source_accuracy": rv.source_accuracy,
        }
        if len(pb.test):  # reported beside the score, never used to choose
            report["target_accuracy"] = accuracy(rv.forward, task.pool, pb.test, pb.y_test)
        candidates[algorithm]["configs"].append(report)
        if algorithm not in best or rv.score > best[algorithm].rv.score:
            best[algorithm] = _Best(config, rv, report)
    for algorithm, b in best.items():
        gap_after = proxy_a_distance(*b.rv.forward.aligned(), seed=p.seed)
        candidates[algorithm].update(b.report, domain_gap_after=gap_after)
    return _Selection(best, candidates, s_hold, no_holdout)


def _warnings(
    gap: dict[str, Any], source_accuracy: float, protocol: str, no_holdout: bool
) -> list[dict[str, str]]:
    out = []
    if gap["after"] >= LARGE_GAP and source_accuracy < LOW_SOURCE_ACCURACY:
        out.append({
            "code": "large_gap_low_source_accuracy",
            "detail": f"Source and target stay far apart (proxy A-distance {gap['after']:.2f} of 2) "
            f"and the model reaches only {source_accuracy:.0%} on held-out source images: expect "
            "poor target accuracy. Label some target images, or use closer source images.",
        })  # fmt: skip
    if protocol == "source-holdout":
        out.append({
            "code": "no_target_test_labels",
            "detail": "No labeled target images with split=test: accuracy is measured on "
            "held-out source images, not on the target. Upload a few labeled target images "
            "with split=test to see the true target accuracy.",
        })  # fmt: skip
    if no_holdout:
        out.append({
            "code": "no_source_holdout",
            "detail": "Too few source images to hold some out: reverse validation scored on "
            "its own training images and cannot be trusted.",
        })  # fmt: skip
    return out
