"""What every adaptation algorithm shares: the rows it sees, what it returns, a linear fit.

An algorithm is a function ``(task, config, seed, tick) -> Adapted``; ``tick()`` is called
between steps (it raises when the job is cancelled). Reverse validation calls the same
function with the roles swapped (pseudo-labeled target as source), so algorithms never
know which domain is which.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from app.transfer.heads import Head, LinearHead
from app.transfer.logistic import fit_logistic_head

if TYPE_CHECKING:
    from app.transfer.domain.adabn import DomainStatistics

#: A class missing from a training set gets this bias: its probability is ~e^-30.
_ABSENT_BIAS = -30.0


@dataclass(frozen=True)
class Pool:
    """Every image of a job, by row: frozen features ``(N, D)``; for the algorithms that
    finetune the backbone, ``images(rows)`` (preprocessed ``(n, 3, H, W)``) and
    ``load_network()`` (a fresh pretrained timm network); for AdaBN, ``adabn`` (each row's
    features with its own domain's BatchNorm statistics; None: the backbone has none)."""

    feats: np.ndarray
    images: Callable[[np.ndarray], torch.Tensor] | None = None
    load_network: Callable[[], nn.Module] | None = None
    adabn: DomainStatistics | None = None


@dataclass
class Adapted:
    """A classifier adapted to one target.

    ``head`` reads ``feats`` (features of every pool row, computed beforehand: AdaBN's)
    when there are, else the frozen features, or the features of ``network`` (a finetuned
    backbone) when there is one; ``network`` is what the model serves. ``aligned()``
    returns the source and target rows it was fit on, in the representation its
    classifier was trained in (what the domain gap is measured on after adaptation).
    """

    head: Head
    aligned: Callable[[], tuple[np.ndarray, np.ndarray]]
    network: nn.Module | None = None
    feats: np.ndarray | None = None

    @torch.inference_mode()
    def features(self, pool: Pool, rows: np.ndarray, batch_size: int = 32) -> np.ndarray:
        if self.feats is not None:
            return self.feats[rows]
        if self.network is None:
            return pool.feats[rows]
        assert pool.images is not None
        self.network.eval()
        device = next(self.network.parameters()).device
        out = [
            self.network.forward_head(  # type: ignore[operator]
                self.network.forward_features(pool.images(rows[i : i + batch_size]).to(device)),  # type: ignore[operator]
                pre_logits=True,
            )
            .float()
            .cpu()
            for i in range(0, len(rows), batch_size)
        ]
        return torch.cat(out).numpy() if out else np.zeros((0, pool.feats.shape[1]), np.float32)

    @torch.inference_mode()
    def predict(self, pool: Pool, rows: np.ndarray) -> np.ndarray:
        """Class probabilities ``(len(rows), C)``."""
        return self.head(torch.from_numpy(self.features(pool, rows))).numpy()


@dataclass(frozen=True)
class Task:
    """Adapt from the labeled ``source`` rows (int labels ``y``) to the unlabeled ``target``
    rows of ``pool``, over ``n_classes`` classes."""

    pool: Pool
    source: np.ndarray
    y: np.ndarray
    target: np.ndarray
    n_classes: int

    @property
    def source_feats(self) -> np.ndarray:
        return self.pool.feats[self.source]

    @property
    def target_feats(self) -> np.ndarray:
        return self.pool.feats[self.target]


Algorithm = Callable[[Task, dict[str, Any], int, Callable[[], None]], Adapted]


def accuracy(model: Adapted, pool: Pool, rows: np.ndarray, y: np.ndarray) -> float:
    return float((model.predict(pool, rows).argmax(axis=1) == y).mean())


def fit_linear(X: np.ndarray, y: np.ndarray, n_classes: int, C: float) -> LinearHead:
    """The linear probe's softmax regression with inverse regularisation ``C`` on
    per-feature standardised features (the scale this package's ``C`` and algorithms were
    measured on), for any label set: classes absent from ``y`` (pseudo-labels may miss
    some) are never predicted."""
    present = np.unique(y)
    weight = np.zeros((n_classes, X.shape[1]), np.float32)
    bias = np.full(n_classes, _ABSENT_BIAS, np.float32)
    if len(present) == 1:
        bias[present[0]] = 0.0
    else:
        remap = np.searchsorted(present, y)
        head = fit_logistic_head(X, remap, len(present), Cs=[C], scaling="per_feature")
        weight[present] = head.linear.weight.detach().numpy()
        bias[present] = head.linear.bias.detach().numpy()
    return LinearHead(torch.from_numpy(weight), torch.from_numpy(bias))


def source_only(task: Task, config: dict[str, Any], seed: int, tick: Callable[[], None]) -> Adapted:
    """The baseline: the linear probe on the source, applied to the target unchanged."""
    head = fit_linear(task.source_feats, task.y, task.n_classes, config["C"])
    return Adapted(head, lambda: (task.source_feats, task.target_feats))
