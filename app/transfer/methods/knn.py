"""``knn``: nearest neighbours or class prototypes on frozen, L2-normalised features.

For tiny data. ``mode="knn"`` keeps every training feature and votes (see
:class:`~app.transfer.heads.KNNHead`); ``mode="prototype"`` keeps one mean per class
(Snell et al., 2017, Prototypical Networks) and scores
:math:`p = \\mathrm{softmax}(\\cos(x, \\mu_c) / T)`.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field

from app.transfer.heads import Head, KNNHead, LinearHead
from app.transfer.methods import register_method
from app.transfer.methods.base import FeatureMethod, MethodParams


class KNNParams(MethodParams):
    mode: Literal["knn", "prototype"] = "knn"
    k: int = Field(5, ge=1, le=100, description="Neighbours that vote (mode knn).")
    temperature: float = Field(0.07, gt=0, le=10, description="Softmax temperature T.")


@register_method
class KNN(FeatureMethod):
    name = "knn"
    summary = "Cosine nearest-neighbour / class-prototype classifier on pretrained features."
    Params = KNNParams
    example_params: ClassVar[dict[str, Any]] = {"mode": "prototype"}

    def fit_head(self, X: np.ndarray, y: np.ndarray, n_classes: int, params: KNNParams) -> Head:  # type: ignore[override]
        feats = F.normalize(torch.from_numpy(X), dim=-1)
        labels = torch.from_numpy(y).long()
        if params.mode == "knn":
            return KNNHead(feats, labels, n_classes, params.k, params.temperature)
        prototypes = torch.stack([feats[labels == c].mean(dim=0) for c in range(n_classes)])
        weight = F.normalize(prototypes, dim=-1) / params.temperature
        return LinearHead(weight, torch.zeros(n_classes), normalize=True)
