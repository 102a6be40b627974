"""``linear_probe``: frozen pretrained features + multinomial logistic regression.

The "try first" method (Kornblith et al., 2019, "Do Better ImageNet Models Transfer
Better?"). The fit (centred features on one scale, L2-regularised softmax regression with ``C``
chosen by stratified k-fold CV, solved in the features' row space) is
:func:`app.transfer.logistic.fit_logistic_head`, shared with the methods that start from or
build on a probe.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar

import numpy as np
from pydantic import Field

from app.transfer.heads import Head
from app.transfer.logistic import DEFAULT_CS, fit_logistic_head
from app.transfer.methods import register_method
from app.transfer.methods.base import MAX_GRID, FeatureMethod, MethodParams


class LinearProbeParams(MethodParams):
    Cs: list[Annotated[float, Field(gt=0, le=1e6)]] = Field(
        default_factory=lambda: list(DEFAULT_CS),
        min_length=1,
        max_length=MAX_GRID,
        description="Candidate inverse regularisation strengths, chosen by inner CV.",
    )
    max_iter: int = Field(300, ge=10, le=10_000)


@register_method
class LinearProbe(FeatureMethod):
    name = "linear_probe"
    summary = "Frozen pretrained features + logistic regression (the default: try first)."
    Params = LinearProbeParams
    example_params: ClassVar[dict[str, Any]] = {"max_iter": 300}

    def fit_head(
        self, X: np.ndarray, y: np.ndarray, n_classes: int, params: LinearProbeParams
    ) -> Head:  # type: ignore[override]
        return fit_logistic_head(X, y, n_classes, Cs=params.Cs, max_iter=params.max_iter)
