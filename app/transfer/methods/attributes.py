"""Classes without images, learned through the classes that have some.

``zero_shot_dap`` — direct attribute prediction (Lampert et al. 2009): every class carries
an attribute vector :math:`a^c \\in [0, 1]^M` (``attributes``, e.g. ``{"stripes": 1,
"long_neck": 0}``); per-attribute logistic classifiers are trained on the images of the
classes that have some (targets :math:`a^{y_i}`), and every class, seen or not, is scored
from its attribute vector (:class:`~app.transfer.heads.AttributeHead`).

``zero_shot_generalized`` — one model over all classes, seen and unseen: a bilinear
compatibility :math:`s_c(x) = \\hat f(x)^\\top M e_c` between the image's ConSE vector
:math:`\\hat f(x)` (see :mod:`app.transfer.methods.zero_shot`) and the class-name vector
:math:`e_c`, with :math:`M = I + \\Delta` learned on the seen classes' images by

.. math:: \\min_\\Delta \\; \\frac1N \\sum_i -\\log \\mathrm{softmax}_{c \\in S}
          \\big(s_c(x_i) / \\tau\\big)_{y_i} + \\beta \\lVert \\Delta \\rVert_F^2

(:math:`S` the seen classes; :math:`\\beta \\to \\infty` gives plain ConSE back). Then
:math:`u_c = M e_c` for every class, served by :class:`~app.transfer.heads.ConSEHead`.

Both are measured by the usual protocol over all classes (``test`` split, else k-fold over
the seen classes' images); when the measured images include unseen classes, metrics add
``seen_accuracy``, ``unseen_accuracy`` (mean per-class recall) and their harmonic mean.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable
from typing import Any, ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field

from app.errors import ClassAttributesInvalid
from app.transfer.artifacts import TrainedModel
from app.transfer.backbones import Backbone
from app.transfer.data import Progress, TrainingData, no_progress, sub_progress
from app.transfer.evaluation import evaluate
from app.transfer.heads import AttributeHead, ConSEHead, Head
from app.transfer.methods import register_method
from app.transfer.methods.base import Method, MethodParams, frozen_features
from app.transfer.methods.zero_shot import (
    ClassSet,
    ZeroShotParams,
    check_classes,
    class_codes,
    conse_head,
    require_imagenet_classifier,
)
from app.transfer.text import resolve_text_encoder, sentence_encoder


def _lbfgs(params: list[torch.Tensor], loss_fn: Callable[[], torch.Tensor], steps: int) -> None:
    opt = torch.optim.LBFGS(params, max_iter=steps, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = loss_fn()
        loss.backward()
        return loss

    opt.step(closure)


def seen_unseen(metrics: dict[str, Any], seen: set[str]) -> None:
    """Add generalized zero-shot figures (Xian et al. 2018) when unseen classes were measured:
    mean per-class recall over seen and unseen classes, and their harmonic mean."""
    recall = {c: v["recall"] for c, v in metrics["per_class"].items() if v["support"] > 0}
    unseen = [r for c, r in recall.items() if c not in seen]
    if not unseen:
        return
    s = float(np.mean([r for c, r in recall.items() if c in seen] or [0.0]))
    u = float(np.mean(unseen))
    metrics.update(
        seen_accuracy=s, unseen_accuracy=u, harmonic_mean=2 * s * u / (s + u) if s + u else 0.0
    )


class SeenClassesMethod(Method):
    """Learns from the classes with images; predicts over every declared class.

    Subclasses implement :meth:`fit_head` (run fold by fold and once more on all training
    images) and may prepare inputs it shares across folds in :meth:`head_inputs`."""

    min_classes = 1  # classes with images; the others are predicted from their names

    def check_data(self, data: TrainingData) -> None:
        check_classes(data)
        super().check_data(data)

    @abstractmethod
    def fit_head(self, X: np.ndarray, y: np.ndarray, p: Any, context: Any) -> Head:
        """A head over all classes from features ``X (N, D)`` of seen-class labels ``y``."""

    def head_inputs(self, data: TrainingData, cs: ClassSet, backbone: Backbone, p: Any) -> Any:
        """What :meth:`fit_head` needs beyond the images (computed once)."""
        return None

    def fit(
        self,
        data: TrainingData,
        params: MethodParams | None = None,
        progress: Progress = no_progress,
    ) -> TrainedModel:
        p = params if params is not None else self.Params()
        self.check_data(data)
        cs = ClassSet.of(data)
        backbone, X = frozen_features(data, cs.samples, sub_progress(progress, 0.0, 0.7))
        progress(0.7, "preparing classes")
        context = self.head_inputs(data, cs, backbone, p)

        def fit_predict(X_tr: np.ndarray, y_tr: np.ndarray, X_ev: np.ndarray) -> np.ndarray:
            head = self.fit_head(X_tr, y_tr, p, context).eval()
            with torch.inference_mode():
                return head(torch.from_numpy(X_ev)).numpy()

        progress(0.8, "validating")
        metrics = evaluate(fit_predict, X, cs.y, cs.is_test, cs.classes, seed=data.seed)
        seen_unseen(metrics, set(data.class_counts()))
        progress(0.95, "fitting final model")
        train = ~cs.is_test
        head = self.fit_head(X[train], cs.y[train], p, context).eval()
        progress(1.0, "done")
        return self.trained(backbone, classes=cs.classes, head=head, metrics=metrics, params=p)


class DAPParams(MethodParams):
    l2: float = Field(1e-2, gt=0, le=100, description="L2 penalty of the attribute classifiers.")
    temperature: float = Field(1.0, gt=0, le=100, description="Softmax temperature of scores.")
    max_iter: int = Field(200, ge=10, le=5000)


def attribute_matrix(cs: ClassSet) -> tuple[list[str], np.ndarray]:
    """Attribute names and ``A (C, M)``; every class must give every attribute in [0, 1]."""
    names = sorted({a for c in cs.infos for a in c.attributes})
    missing = {c.name: sorted(set(names) - set(c.attributes)) for c in cs.infos}
    missing = {k: v for k, v in missing.items() if v}
    if not names or missing:
        raise ClassAttributesInvalid(
            "Every class needs an `attributes` vector over the same attribute names"
            + (f"; missing: {missing}." if names else "; no class has any."),
            missing=missing,
        )
    A = np.array([[c.attributes[a] for a in names] for c in cs.infos], dtype=np.float32)
    if not ((A >= 0) & (A <= 1)).all():
        raise ClassAttributesInvalid("Attribute values must lie in [0, 1] (1: has it).")
    return names, A


@register_method
class ZeroShotDAP(SeenClassesMethod):
    name = "zero_shot_dap"
    summary = "Attribute classifiers trained on classes with images score every class (DAP)."
    Params = DAPParams
    example_params: ClassVar[dict[str, Any]] = {"l2": 0.01, "temperature": 1.0}
    min_classes = 2  # attribute classifiers need two seen classes to contrast

    def check_data(self, data: TrainingData) -> None:
        super().check_data(data)
        attribute_matrix(ClassSet.of(data))

    def head_inputs(self, data: TrainingData, cs: ClassSet, backbone: Backbone, p: Any) -> Any:
        return attribute_matrix(cs)[1]

    def fit_head(self, X: np.ndarray, y: np.ndarray, p: Any, context: Any) -> Head:
        params, A = p, context
        mu, sigma = X.mean(axis=0), X.std(axis=0) + 1e-6
        Z = torch.from_numpy((X - mu) / sigma)
        targets = torch.from_numpy(A[y])
        W = torch.zeros(A.shape[1], X.shape[1], requires_grad=True)
        b = torch.zeros(A.shape[1], requires_grad=True)
        _lbfgs(
            [W, b],
            lambda: (
                F.binary_cross_entropy_with_logits(Z @ W.T + b, targets)
                + params.l2 * W.square().sum() / len(Z)
            ),
            params.max_iter,
        )
        seen = np.unique(y)
        weight = W.detach() / torch.from_numpy(sigma)
        bias = b.detach() - weight @ torch.from_numpy(mu)
        prior = torch.from_numpy(A[seen].mean(axis=0))
        return AttributeHead(weight, bias, torch.from_numpy(A), prior, params.temperature)


class GeneralizedParams(ZeroShotParams):
    # plain ConSE's defaults, as measured for this method (zero_shot's moved with WordNet)
    imagenet_text: Literal["lemmas", "definitions"] = Field(
        "lemmas", description="ImageNet class text: its lemmas, or first lemma + WordNet gloss."
    )
    top_t: int = Field(10, ge=1, le=1000, description="ImageNet classes combined (ConSE's T).")
    imagenet_temperature: float = Field(
        1.0, gt=0, le=10, description="ConSE's ImageNet logits are divided by this."
    )
    calibration: float = Field(
        0.0,
        ge=0,
        le=10,
        description="ConSE subtracts this times each class's mean cosine "
        "with the ImageNet class texts.",
    )
    beta: float = Field(1.0, gt=0, le=1e4, description="Pull of M towards the identity (ConSE).")
    max_iter: int = Field(100, ge=10, le=5000)


@register_method
class ZeroShotGeneralized(SeenClassesMethod):
    name = "zero_shot_generalized"
    summary = "One model over classes with and without images (bilinear name compatibility)."
    Params = GeneralizedParams
    example_params: ClassVar[dict[str, Any]] = {"beta": 1.0, "templates": ["a photo of a {}."]}

    def check_data(self, data: TrainingData) -> None:
        super().check_data(data)
        resolve_text_encoder(weights_dir=data.weights_dir, allow_hub=data.allow_hub)

    def check(self, data: TrainingData, params: MethodParams) -> None:
        super().check(data, params)
        require_imagenet_classifier(data.backbone)

    def head_inputs(self, data: TrainingData, cs: ClassSet, backbone: Backbone, p: Any) -> Any:
        """Plain ConSE over all classes: its ImageNet part and class-name vectors are reused."""
        location = resolve_text_encoder(weights_dir=data.weights_dir, allow_hub=data.allow_hub)
        codes = class_codes(cs.infos, p, sentence_encoder(location))
        return conse_head(backbone, codes, p, location, data.text_cache_dirs)

    def fit_head(self, X: np.ndarray, y: np.ndarray, p: Any, context: Any) -> Head:
        params, base = p, context
        with torch.no_grad():  # not inference_mode: f takes part in the autograd graph below
            f = base.embed(torch.from_numpy(X))
        seen = np.unique(y)
        codes = base.codes  # (C, E): the class-name vectors e_c
        E = codes[torch.from_numpy(seen)]  # type: ignore[index]
        target = torch.from_numpy(np.searchsorted(seen, y))
        delta = torch.zeros(codes.shape[1], codes.shape[1], requires_grad=True)  # type: ignore[union-attr]
        tau = params.temperature
        _lbfgs(
            [delta],
            lambda: (
                F.cross_entropy((f @ delta + f) @ E.T / tau, target)
                + params.beta * delta.square().sum()
            ),
            params.max_iter,
        )
        learned = codes + codes @ delta.detach().T  # u_c = (I + Δ) e_c
        return ConSEHead(
            base.imagenet_weight, base.imagenet_bias, base.source, learned,  # type: ignore[arg-type]
            base.top_t, base.temperature, None, 0.0, base.calibration, base.imagenet_temperature,
        )  # fmt: skip
