"""Self-training: pseudo-label confident target images and refit, a few rounds.

Start from the source classifier :math:`f_0`; round :math:`k = 1..K` pseudo-labels some
target images with :math:`\\hat y = \\arg\\max_c f_{k-1}(x)_c` and fits :math:`f_k` on the
source plus them (Lee, 2013, "Pseudo-Label"). Which images:

- ``class_balanced`` (default; CBST, Zou et al., 2018): each class keeps its
  :math:`n_k = \\lfloor s \\tfrac{k}{K} \\tfrac{N}{C} \\rfloor` most confident images among
  the :math:`N` target images predicted as it (a per-class confidence threshold), the share
  growing to :math:`s` in the last round. A source classifier that calls most target images
  one class (a domain shift's usual failure) cannot then swallow the pseudo-labels.
- ``threshold``: every image with :math:`\\max_c f_{k-1}(x)_c \\ge \\tau`; stops early when
  that set no longer changes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from app.transfer.domain.base import Adapted, Task, fit_linear


def pseudo_labels(probs: np.ndarray, config: dict[str, Any], round_: int) -> np.ndarray:
    """Pseudo-labels of round ``round_`` (1-based) for target ``probs (N, C)``; -1: none."""
    predicted = probs.argmax(axis=1)
    labels = np.full(len(probs), -1)
    if config["selection"] == "threshold":
        keep = probs.max(axis=1) >= config["threshold"]
        labels[keep] = predicted[keep]
        return labels
    n_classes = probs.shape[1]
    per_class = max(1, int(config["share"] * round_ / config["rounds"] * len(probs) / n_classes))
    for c in range(n_classes):
        rows = np.flatnonzero(predicted == c)
        labels[rows[np.argsort(-probs[rows, c], kind="stable")[:per_class]]] = c
    return labels


def self_training(
    task: Task, config: dict[str, Any], seed: int, tick: Callable[[], None]
) -> Adapted:
    Xs, Xt, n_classes = task.source_feats, task.target_feats, task.n_classes
    head = fit_linear(Xs, task.y, n_classes, config["C"])
    previous: np.ndarray | None = None
    for round_ in range(1, config["rounds"] + 1):
        tick()
        with torch.inference_mode():
            labels = pseudo_labels(head(torch.from_numpy(Xt)).numpy(), config, round_)
        if previous is not None and np.array_equal(previous, labels):
            break
        previous = labels
        keep = labels >= 0
        head = fit_linear(
            np.concatenate([Xs, Xt[keep]]), np.concatenate([task.y, labels[keep]]), n_classes,
            config["C"],
        )  # fmt: skip
    return Adapted(head, lambda: (Xs, Xt))
