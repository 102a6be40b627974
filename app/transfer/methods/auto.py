"""``auto``: try the applicable methods on one honest protocol and keep the best.

Selection: a stratified holdout is carved from the training images (never from the
``test`` split). Every candidate is trained on the rest and scored on that same holdout,
by accuracy, then macro-F1. The winner is refit on all training images by its own
``fit``, so its reported metrics follow the usual protocol (the ``test`` split when there
is one); ``candidates`` lists every candidate's selection scores, failures included.

The backbone is chosen too: the frozen-feature candidates (heads on cached features:
``linear_probe``, ``knn``) are also scored on each backbone of ``backbones`` (registered
backbones whose weights are on the machine; ``"available"``: all of them; by default
:data:`SUGGESTED`), each one more feature extraction per image, cached like the job's own. Those candidates are
reported as ``"<method>@<backbone>"``; the model stands on the winner's backbone
(``selected_backbone``, and the artifact's backbone, which prediction uses).

The linear probe on the job's backbone is the floor: it is always scored (added when
``candidates`` omit it, marked ``reference`` in the report), and it wins ties (other ties
go to the candidate listed first, the job's backbone before the others), so ``auto`` never
returns a model whose selection score — accuracy, then macro-F1 — is below that probe's
on the same holdout.

``zero_shot`` is a candidate like the others: it never trains, so on the same holdout it
is compared honestly with the few-shot methods, and ``auto`` switches to them as soon as
the images beat the names. A project with too few labeled images for a holdout (none at
all, say) gets the ``zero_shot`` model directly, when it is a candidate.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Annotated, Any, ClassVar, Literal

import numpy as np
from pydantic import Field

from app.errors import (
    BackboneUnavailable,
    ClassTooSmall,
    DovecoteError,
    InvalidParams,
    JobCancelled,
    ProjectHasNoLabels,
)
from app.transfer.artifacts import TrainedModel
from app.transfer.backbones import list_backbones, resolve_weights
from app.transfer.data import Progress, TrainingData, no_progress, sub_progress
from app.transfer.evaluation import stratified_holdout
from app.transfer.methods import get_method, register_method
from app.transfer.methods.base import MAX_GRID, FeatureMethod, Method, MethodParams, Seed

#: Always scored, and preferred on ties: no selected candidate scores below it.
FLOOR = "linear_probe"
#: Scored beside the job's backbone when ``backbones`` is omitted: on the transfer suite
#: (bench/README.md, ``bench.backbone_suite``) ``auto`` with it gains +0.007 (5 shots) and
#: +0.004 (20 shots) over the job's backbone alone, all on digits, below it on no data set,
#: for one more extraction at 0.6x efficientnet_lite0's cost (+0.040 and +0.014 before the
#: probe's global scale); ``available`` (four backbones): -0.004 and +0.006.
SUGGESTED = ("mobilenetv2_100",)


class AutoParams(MethodParams):
    candidates: list[str] = Field(
        default_factory=lambda: ["linear_probe", "knn", "finetune", "zero_shot"],
        min_length=1,
        max_length=MAX_GRID,
        description="Methods to try, each with its default params unless given below. "
        "`linear_probe` is always scored as the floor (and wins ties), even when not listed.",
    )
    params: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        max_length=MAX_GRID,
        description="Per-candidate params, e.g. {'finetune': {'epochs': 5}}.",
    )
    backbones: Annotated[list[str], Field(max_length=MAX_GRID)] | Literal["available"] | None = (
        Field(
            None,
            description="Other registered backbones (`GET /v1/backbones`) on which the "
            "frozen-feature candidates (`linear_probe`, `knn`) are scored too, each one more "
            "feature extraction per image; `available`: every registered backbone whose "
            f"weights are on this machine; `[]`: the job's alone; omitted: {list(SUGGESTED)} "
            "where its weights are on this machine. The job's backbone is always scored "
            "first, and its linear probe wins ties.",
        )
    )
    finetune_budget_minutes: float = Field(10.0, gt=0, le=24 * 60)
    selection_fraction: float = Field(0.25, gt=0, lt=0.6)
    seed: Seed = 0


@register_method
class Auto(Method):
    name = "auto"
    summary = "Try linear probe, kNN, finetuning and zero-shot on one holdout; keep the best."
    Params = AutoParams
    example_params: ClassVar[dict[str, Any]] = {
        "candidates": ["linear_probe", "knn", "finetune"],
        "finetune_budget_minutes": 5,
    }
    min_per_class = 3  # one for the selection holdout, two to train on

    def parse_params(self, raw: dict[str, Any] | None) -> MethodParams:
        parsed: AutoParams = super().parse_params(raw)  # type: ignore[assignment]
        for name in parsed.candidates:  # unknown candidates or bad params: 422 up front
            if name == self.name:
                raise InvalidParams("`auto` cannot be one of its own candidates.")
            get_method(name).parse_params(self._candidate_raw(parsed, name))
        if isinstance(parsed.backbones, list):
            registered = {spec.name for spec in list_backbones()}
            unknown = [b for b in parsed.backbones if b not in registered]
            if unknown:
                raise InvalidParams(
                    f"Unknown backbones {unknown} in `backbones`: name registered backbones "
                    f"({sorted(registered)}) or give 'available'."
                )
        return parsed

    def check(self, data: TrainingData, params: MethodParams) -> None:
        """The data, and the weights of every backbone named in ``backbones``."""
        super().check(data, params)
        assert isinstance(params, AutoParams)
        self.scored_backbones(data, params)

    @staticmethod
    def scored_backbones(data: TrainingData, p: AutoParams) -> list[str]:
        """The backbones to score frozen-feature candidates on, the job's first. A named
        one without weights on this machine raises; ``available`` and the default
        (:data:`SUGGESTED`) skip those (and any that only the hub has)."""
        if p.backbones is None or p.backbones == "available":
            names = []
            for name in SUGGESTED if p.backbones is None else [b.name for b in list_backbones()]:
                try:
                    resolve_weights(name, weights_dir=data.weights_dir)
                except BackboneUnavailable:
                    continue
                names.append(name)
        else:
            for name in p.backbones:
                resolve_weights(name, weights_dir=data.weights_dir, allow_hub=data.allow_hub)
            names = p.backbones
        return list(dict.fromkeys([data.backbone, *names]))

    def trains_backbone(self, params: MethodParams) -> bool:
        """When one of its candidates does (``finetune``, among the defaults)."""
        assert isinstance(params, AutoParams)
        return any(
            get_method(name).trains_backbone(
                get_method(name).parse_params(self._candidate_raw(params, name))
            )
            for name in params.candidates
        )

    def check_data(self, data: TrainingData) -> None:
        """Enough images for a holdout, or else enough classes for ``zero_shot``."""
        try:
            super().check_data(data)
        except (ProjectHasNoLabels, ClassTooSmall):
            get_method("zero_shot").check_data(data)

    @staticmethod
    def _candidate_raw(p: AutoParams, name: str) -> dict[str, Any]:
        raw = dict(p.params.get(name, {}))
        if name == "finetune":
            raw.setdefault("max_minutes", p.finetune_budget_minutes)
        return raw

    def fit(
        self,
        data: TrainingData,
        params: MethodParams | None = None,
        progress: Progress = no_progress,
    ) -> TrainedModel:
        p: AutoParams = params if isinstance(params, AutoParams) else AutoParams()
        try:
            Method.check_data(self, data)  # images enough for a holdout?
        except (ProjectHasNoLabels, ClassTooSmall) as exc:
            if "zero_shot" not in p.candidates:
                raise
            return self._names_only(data, p, exc, progress)
        labeled = data.labeled_set()
        pool = np.flatnonzero(~labeled.is_test)
        _, held = stratified_holdout(pool, labeled.y, p.selection_fraction, p.seed)
        held_keys = {labeled.samples[i].key for i in held.tolist()}
        # Candidates see the selection holdout as their "test" split and the real test split not at all.
        selection = dataclasses.replace(
            data,
            samples=[
                dataclasses.replace(s, split="test" if s.key in held_keys else "train")
                for s in data.samples
                if s.split != "test"
            ],
        )
        names = p.candidates if FLOOR in p.candidates else [FLOOR, *p.candidates]
        runs = [(name, data.backbone) for name in names] + [
            (name, backbone)
            for backbone in self.scored_backbones(data, p)[1:]
            for name in names
            if isinstance(get_method(name), FeatureMethod)
        ]
        n = len(runs) + 1
        report: dict[str, dict[str, Any]] = {}
        for k, (name, backbone) in enumerate(runs):
            key = name if backbone == data.backbone else f"{name}@{backbone}"
            impl = get_method(name)
            started = time.monotonic()
            try:
                trained = impl.fit(
                    dataclasses.replace(selection, backbone=backbone),
                    impl.parse_params(self._candidate_raw(p, name)),
                    sub_progress(progress, k / n, (k + 1) / n, f"{key}: ", records=False),
                )
            except JobCancelled:
                raise
            except DovecoteError as exc:
                report[key] = {"method": name, "backbone": backbone, "error": exc.problem()}
                continue
            m = trained.metrics
            report[key] = {
                "method": name,
                "backbone": backbone,
                "accuracy": m["accuracy"],
                "macro_f1": m["macro_f1"],
                "validation": "selection-holdout",
                "n_train": m["n_train"],
                "n_validation": m["n_validation"],
                "seconds": round(time.monotonic() - started, 2),
            }
            if name not in p.candidates:
                report[key]["reference"] = True
        scored = {k: v for k, v in report.items() if "accuracy" in v}
        if not scored:
            raise DovecoteError("No candidate method could be trained.", candidates=report)
        best = max(scored, key=lambda k: (scored[k]["accuracy"], scored[k]["macro_f1"], k == FLOOR))
        impl = get_method(scored[best]["method"])
        final = impl.fit(
            dataclasses.replace(data, backbone=scored[best]["backbone"]),
            impl.parse_params(self._candidate_raw(p, scored[best]["method"])),
            sub_progress(progress, len(runs) / n, 1.0, f"{best} (final): "),
        )
        return self._selected(final, p, best, report)

    def _selected(
        self, final: TrainedModel, p: AutoParams, best: str, report: dict[str, Any]
    ) -> TrainedModel:
        final.metrics["selected"] = best
        final.metrics["selected_backbone"] = final.backbone
        final.metrics["candidates"] = report
        final.params = {"auto": p.model_dump(), "selected": best, best: final.params}
        return dataclasses.replace(final, method=self.name)

    def _names_only(
        self, data: TrainingData, p: AutoParams, exc: DovecoteError, progress: Progress
    ) -> TrainedModel:
        """Too few images to compare anything on: the zero-shot model, said so."""
        impl = get_method("zero_shot")
        final = impl.fit(
            data,
            impl.parse_params(self._candidate_raw(p, "zero_shot")),
            sub_progress(progress, 0.0, 1.0, "zero_shot: "),
        )
        report = {n: {"error": exc.problem()} for n in p.candidates if n != "zero_shot"}
        report["zero_shot"] = {"validation": final.metrics["validation"], "only_candidate": True}
        return self._selected(final, p, "zero_shot", report)
