"""What every method shares: validated params, data requirements, one ``fit`` call."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import OrderedDict
from pathlib import Path
from typing import Annotated, Any, ClassVar

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from app.errors import ClassTooSmall, InvalidParams, ProjectHasNoLabels
from app.transfer.artifacts import TrainedModel
from app.transfer.backbones import Backbone, load_backbone
from app.transfer.data import LabeledSet, Progress, Sample, TrainingData, no_progress, sub_progress
from app.transfer.evaluation import evaluate
from app.transfer.features import extract_features, graph_dir_in, prepare_backbone
from app.transfer.heads import Head
from app.transfer.preprocess import Preprocessing

#: A random seed: NumPy and torch take 0 <= seed < 2**32.
Seed = Annotated[int, Field(ge=0, le=2**32 - 1, description="Random seed.")]
#: The longest list or grid a param may hold: a job's cost stays bounded.
MAX_GRID = 32


class MethodParams(BaseModel):
    """Base of every method's params: unknown keys are an error, not silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Method(ABC):
    name: ClassVar[str]
    summary: ClassVar[str]
    Params: ClassVar[type[MethodParams]] = MethodParams
    #: Realistic ``params`` of a job (the OpenAPI example; the test-suite validates it).
    example_params: ClassVar[dict[str, Any]] = {}
    min_classes: ClassVar[int] = 2
    min_per_class: ClassVar[int] = 2
    #: Whether every job of this method trains through a backbone on images (epochs of
    #: forward and backward passes: the work a GPU speeds up); see :meth:`trains_backbone`.
    backbone_training: ClassVar[bool] = False

    def parse_params(self, raw: dict[str, Any] | None) -> MethodParams:
        try:
            return self.Params.model_validate(raw or {})
        except ValidationError as exc:
            errors = [
                {"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors()
            ]
            raise InvalidParams(
                f"Invalid params for method {self.name!r}: {exc.error_count()} error(s).",
                errors=errors,
            ) from None

    def check_data(self, data: TrainingData) -> None:
        """Refuse up front data this method cannot learn from. Runs at job creation (on
        the project's samples, without reading any bytes) and again when the job runs."""
        class_counts = data.class_counts()
        if len(class_counts) < self.min_classes:
            raise ProjectHasNoLabels(
                f"Method {self.name!r} needs labeled images of at least {self.min_classes} "
                f"classes; the project has {len(class_counts)}.",
                class_counts=dict(class_counts),
            )
        small = {c: n for c, n in class_counts.items() if n < self.min_per_class}
        if small:
            raise ClassTooSmall(
                f"Every class needs at least {self.min_per_class} training images; "
                f"too few: {small}.",
                class_counts=dict(class_counts),
            )

    def check(self, data: TrainingData, params: MethodParams) -> None:
        """Everything checkable before training, at job creation: :meth:`check_data`, and
        what ``params`` refer to (methods whose params name models or backbones)."""
        self.check_data(data)

    def trains_backbone(self, params: MethodParams) -> bool:
        """Whether a job with ``params`` trains through a backbone on images rather than on
        frozen, cached features: such jobs go to the ``gpu`` queue where GPU workers
        consume it (``DOVECOTE_GPU_QUEUE``). :attr:`backbone_training`, unless the params
        decide (domain adaptation's DANN blocks, ``auto``'s candidates)."""
        return self.backbone_training

    def model_backbone(self, data: TrainingData, params: MethodParams) -> str:
        """The backbone the trained model will stand on (the job records it)."""
        return data.backbone

    def labeled_set(self, data: TrainingData) -> LabeledSet:
        """Check the data meets this method's requirements; return its labeled arrays."""
        self.check_data(data)
        return data.labeled_set()

    @abstractmethod
    def fit(
        self,
        data: TrainingData,
        params: MethodParams | None = None,
        progress: Progress = no_progress,
    ) -> TrainedModel:
        """Train on ``data`` and return the model with its metrics."""

    def trained(
        self,
        backbone: Backbone,
        *,
        classes: list[str],
        head: Head,
        metrics: dict[str, Any],
        params: MethodParams | dict[str, Any],
        backbone_state: dict[str, torch.Tensor] | None = None,
        backbone_delta: bool = False,
        preprocessing: Preprocessing | None = None,
    ) -> TrainedModel:
        """The model this method trained: ``head`` on ``backbone`` (finetuned when
        ``backbone_state`` is given: the whole network's, or with ``backbone_delta`` only
        what differs from ``backbone``'s weights), preprocessed as the backbone's unless
        overridden."""
        return TrainedModel(
            method=self.name,
            backbone=backbone.name,
            backbone_digest=backbone.weights_digest,
            preprocessing=preprocessing or backbone.preprocessing,
            classes=classes,
            head=head.eval(),
            metrics=metrics,
            params=params if isinstance(params, dict) else params.model_dump(),
            backbone_state=backbone_state,
            backbone_delta=backbone_delta,
        )


_SHARED: OrderedDict[tuple[str, Path | None, bool], Backbone] = OrderedDict()
_SHARED_MAX = 2


def shared_backbone(
    name: str,
    weights_dir: Path | None,
    allow_hub: bool,
    progress: Progress = no_progress,
    graph_dir: Path | None = None,
) -> Backbone:
    """A frozen backbone shared by every frozen-feature job in this process (the last two
    used). Loading one reports its two slow steps as stages, so a first job is not silent.
    ``graph_dir``: where its exported inference graph is cached; its session keeps its
    buffers between batches (see ``prepare_backbone``: jobs embed one batch at a time)."""
    key = (name, weights_dir, allow_hub)
    if key in _SHARED:
        _SHARED.move_to_end(key)
        return _SHARED[key]
    progress(0.0, f"loading backbone {name}: reading its weights")
    backbone = load_backbone(name, weights_dir=weights_dir, allow_hub=allow_hub)
    progress(0.5, f"loading backbone {name}: preparing its inference graph")
    _SHARED[key] = backbone = prepare_backbone(backbone, graph_dir, keep_memory=True)
    while len(_SHARED) > _SHARED_MAX:
        _SHARED.popitem(last=False)
    progress(1.0, f"loading backbone {name}: ready")
    return backbone


def frozen_features(
    data: TrainingData, samples: list[Sample], progress: Progress = no_progress
) -> tuple[Backbone, np.ndarray]:
    """The shared frozen backbone of ``data`` and the features of ``samples`` (cached).
    Loading the backbone, when this process has not yet, takes the first quarter."""
    loading = (data.backbone, data.weights_dir, data.allow_hub) not in _SHARED
    backbone = shared_backbone(
        data.backbone, data.weights_dir, data.allow_hub, sub_progress(progress, 0.0, 0.25),
        graph_dir=graph_dir_in(data.feature_cache_dir),
    )  # fmt: skip
    if loading:
        progress = sub_progress(progress, 0.25, 1.0)
    progress(0.0, "extracting features")
    X = extract_features(
        samples,
        backbone=backbone,
        load_bytes=data.load_bytes,
        max_pixels=data.max_pixels,
        batch_size=data.batch_size,
        cache_dir=data.feature_cache_dir,
        progress=progress,
    )
    return backbone, X


class FeatureMethod(Method):
    """A classifier head on frozen features: features once, then the head's own fit.

    Subclasses implement :meth:`fit_head`; evaluation runs that same function fold by fold,
    so the measured head is exactly the kind of head that is served.
    """

    @abstractmethod
    def fit_head(self, X: np.ndarray, y: np.ndarray, n_classes: int, params: Any) -> Head:
        """Fit a head on features ``X (N, D)`` and int labels ``y (N,)``."""

    def fit(
        self,
        data: TrainingData,
        params: MethodParams | None = None,
        progress: Progress = no_progress,
    ) -> TrainedModel:
        params = params if params is not None else self.Params()
        labeled = self.labeled_set(data)
        classes, samples, y, is_test = labeled.classes, labeled.samples, labeled.y, labeled.is_test
        backbone, X = frozen_features(data, samples, sub_progress(progress, 0.0, 0.8))

        def fit_predict(X_tr: np.ndarray, y_tr: np.ndarray, X_ev: np.ndarray) -> np.ndarray:
            head = self.fit_head(X_tr, y_tr, len(classes), params).eval()
            with torch.inference_mode():
                return head(torch.from_numpy(X_ev)).numpy()

        progress(0.8, "validating")
        metrics = evaluate(fit_predict, X, y, is_test, classes, seed=data.seed)
        progress(0.95, "fitting final model")
        head = self.fit_head(X[~is_test], y[~is_test], len(classes), params).eval()
        progress(1.0, "done")
        return self.trained(backbone, classes=classes, head=head, metrics=metrics, params=params)
